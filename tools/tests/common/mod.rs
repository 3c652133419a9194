//! A fake Quasar cluster for CLI tests: a few "nodes", each a `TcpListener` on 127.0.0.1:0
//! with one shard, speaking the real rpc protocol (frames, handshake, client and admin
//! messages) over one shared in-memory `BTreeMap`. One node is the leader; the others
//! answer client requests with `NotLeader { leader_hint }`.
//!
//! Every socket read is bounded (50 ms timeouts, polled against a stop flag); dropping the
//! `FakeCluster` stops and joins every thread.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quasar_rpc::conn::{AlignedVec, ConnConfig, RecvBuffer};
use quasar_rpc::frame::{decode_body, encode_frame, FrameKind, WireMessage};
use quasar_rpc::message::{
    AdminOp, AdminReply, AdminRequest, AdminResponse, ClientRequest, ClientResponse, ClusterId,
    Expected, GroupId, InvalidReason, KeyValue, KeyVersion, LocalIdentity, LogIndex, Member,
    MemberState, NodeId, NodeStatus, Operation, RangeDescriptor, RangeEpoch, RangeId, RangeInfo,
    RangeSelector, ReplicaDescriptor, ReplicaRole, Reply, RequestError, ScanPage, ShardId,
    ShardStatus, TxnBranch, TxnOp, TxnOpResult, TxnReply, VersionedValue,
};

/// The store: key -> (value, version), and the last "log index".
#[derive(Default)]
struct Store {
    data: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    index: u64,
}

struct Shared {
    cluster: ClusterId,
    members: Vec<Member>,
    leader: NodeId,
    store: Mutex<Store>,
    /// Client requests received, per node.
    hits: Mutex<HashMap<u64, u64>>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct FakeCluster {
    shared: Arc<Shared>,
    endpoints: Vec<String>,
    acceptors: Vec<JoinHandle<()>>,
}

/// Node ids of the fake: 7, 8, 9 ...
pub const FIRST_NODE: u64 = 7;

impl FakeCluster {
    /// `nodes` nodes in cluster `name`; node `FIRST_NODE + leader` leads every range.
    pub fn start(name: &str, nodes: usize, leader: usize) -> FakeCluster {
        FakeCluster::start_with(name, nodes, leader, Vec::new())
    }

    /// As `start`, and `extra` members listed by every node that serve nothing (a member
    /// that is down, at an address where nothing listens).
    pub fn start_with(name: &str, nodes: usize, leader: usize, extra: Vec<Member>) -> FakeCluster {
        let listeners: Vec<TcpListener> = (0..nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let endpoints: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr").to_string())
            .collect();
        let members = endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| Member {
                node: NodeId(FIRST_NODE + i as u64),
                address: a.clone(),
                state: MemberState::Active,
            })
            .chain(extra)
            .collect();
        let shared = Arc::new(Shared {
            cluster: ClusterId::from_name(name),
            members,
            leader: NodeId(FIRST_NODE + leader as u64),
            store: Mutex::new(Store::default()),
            hits: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let acceptors = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let shared = shared.clone();
                let node = NodeId(FIRST_NODE + i as u64);
                std::thread::spawn(move || accept_loop(&shared, node, &listener))
            })
            .collect();
        FakeCluster {
            shared,
            endpoints,
            acceptors,
        }
    }

    pub fn endpoint(&self, i: usize) -> &str {
        &self.endpoints[i]
    }

    /// Client requests node `node` received.
    pub fn hits(&self, node: u64) -> u64 {
        self.shared
            .hits
            .lock()
            .expect("hits lock")
            .get(&node)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, node: NodeId, listener: &TcpListener) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared2 = shared.clone();
                let t = std::thread::spawn(move || serve(&shared2, node, stream));
                shared.threads.lock().expect("threads lock").push(t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn send<M: WireMessage>(stream: &mut TcpStream, msg: &M) -> bool {
    let mut out = AlignedVec::new();
    encode_frame(msg, &mut out).expect("encode");
    stream.write_all(&out).is_ok()
}

fn serve(shared: &Shared, node: NodeId, mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = RecvBuffer::new(&ConnConfig {
        max_frame_len_bytes: 16 << 20,
        io_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        queue_limit_bytes: 8 << 20,
        hard_limit_bytes: 64 << 20,
        recv_buf_bytes: 64 << 10,
    });
    let local = LocalIdentity {
        cluster: shared.cluster,
        node,
        shard: ShardId(0),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        // Answer every whole frame held, then read more.
        loop {
            let frame = match buf.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return,
            };
            let ok = match frame.kind {
                FrameKind::Handshake => {
                    let Ok(hello) = decode_body(frame.body) else {
                        return;
                    };
                    let reply = quasar_rpc::message::Handshake::evaluate(&hello, &local);
                    let refused = matches!(reply, quasar_rpc::message::HandshakeReply::Refused(_));
                    send(&mut stream, &reply) && !refused
                }
                FrameKind::AdminRequest => {
                    let Ok(req) = decode_body::<AdminRequest>(frame.body) else {
                        return;
                    };
                    let result = admin(shared, node, req.op);
                    send(
                        &mut stream,
                        &AdminResponse {
                            request_id: req.request_id,
                            result,
                        },
                    )
                }
                FrameKind::ClientRequest => {
                    let Ok(req) = decode_body::<ClientRequest>(frame.body) else {
                        return;
                    };
                    *shared
                        .hits
                        .lock()
                        .expect("hits lock")
                        .entry(node.get())
                        .or_default() += 1;
                    let result = if node == shared.leader {
                        execute(&mut shared.store.lock().expect("store lock"), req.op)
                    } else {
                        Err(RequestError::NotLeader {
                            range: RangeId(2),
                            leader_hint: Some(shared.leader),
                        })
                    };
                    send(
                        &mut stream,
                        &ClientResponse {
                            request_id: req.request_id,
                            result,
                        },
                    )
                }
                _ => false,
            };
            if !ok {
                return;
            }
        }
        match stream.read(buf.spare_mut()) {
            Ok(0) => return,
            Ok(n) => buf.filled(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

fn ranges(shared: &Shared) -> Vec<RangeInfo> {
    let replicas: Vec<ReplicaDescriptor> = shared
        .members
        .iter()
        .map(|m| ReplicaDescriptor {
            node: m.node,
            role: ReplicaRole::Voter,
        })
        .collect();
    let commit = shared.store.lock().expect("store lock").index;
    [
        (1, b"".to_vec(), b"\x01".to_vec()),
        (2, b"\x01".to_vec(), Vec::new()),
    ]
    .into_iter()
    .map(|(id, start, end)| RangeInfo {
        descriptor: RangeDescriptor {
            id: RangeId(id),
            group: GroupId(id),
            start,
            end,
            replicas: replicas.clone(),
            epoch: RangeEpoch(1),
        },
        leader: Some(shared.leader),
        commit: Some(LogIndex(commit)),
    })
    .collect()
}

fn admin(shared: &Shared, node: NodeId, op: AdminOp) -> Result<AdminReply, RequestError> {
    match op {
        AdminOp::ListMembers => Ok(AdminReply::Members(shared.members.clone())),
        AdminOp::Status => Ok(AdminReply::Status(NodeStatus {
            cluster: shared.cluster,
            node,
            uptime_secs: 3725,
            shards: vec![ShardStatus {
                shard: ShardId(0),
                groups: 2,
                leaders: if node == shared.leader { 2 } else { 0 },
                wal_bytes: 4096,
            }],
        })),
        AdminOp::ListRanges { start_key, limit } => {
            let all: Vec<RangeInfo> = ranges(shared)
                .into_iter()
                .filter(|r| r.descriptor.end.is_empty() || r.descriptor.end > start_key)
                .collect();
            let n = (limit as usize).min(all.len());
            let resume_key = all.get(n).map(|r| r.descriptor.start.clone());
            Ok(AdminReply::Ranges {
                ranges: all.into_iter().take(n).collect(),
                resume_key,
            })
        }
        AdminOp::DescribeRange(selector) => ranges(shared)
            .into_iter()
            .find(|r| match &selector {
                RangeSelector::Id(id) => r.descriptor.id == *id,
                RangeSelector::Key(k) => r.descriptor.contains(k),
            })
            .map(AdminReply::Range)
            .ok_or(RequestError::UnknownRange { range: RangeId(0) }),
        _ => Err(RequestError::InvalidRequest {
            reason: InvalidReason::BadReplicaChange,
        }),
    }
}

fn reserved(key: &[u8]) -> Result<(), RequestError> {
    if key.first().is_none_or(|b| *b == 0) {
        return Err(RequestError::InvalidRequest {
            reason: InvalidReason::ReservedKey,
        });
    }
    Ok(())
}

fn current(store: &Store, key: &[u8]) -> Option<VersionedValue> {
    store.data.get(key).map(|(v, ver)| VersionedValue {
        value: v.clone(),
        version: KeyVersion(*ver),
    })
}

fn execute(store: &mut Store, op: Operation) -> Result<Reply, RequestError> {
    match op {
        Operation::Get { key } => Ok(Reply::Get(current(store, &key))),
        Operation::Put { key, value } => {
            reserved(&key)?;
            store.index += 1;
            let v = store.index;
            store.data.insert(key, (value, v));
            Ok(Reply::Written {
                version: KeyVersion(v),
            })
        }
        Operation::Delete { key } => {
            reserved(&key)?;
            store.index += 1;
            let found = store.data.remove(&key).is_some();
            Ok(Reply::Deleted {
                version: KeyVersion(store.index),
                found,
            })
        }
        Operation::CompareAndSet {
            key,
            expected,
            value,
        } => {
            reserved(&key)?;
            let cur = current(store, &key);
            let version = cur.as_ref().map_or(KeyVersion::ABSENT, |c| c.version);
            let holds = match &expected {
                Expected::Version(v) => *v == version,
                Expected::Value(x) => cur.as_ref().is_some_and(|c| &c.value == x),
            };
            if !holds {
                return Err(RequestError::ConditionFailed {
                    current_version: version,
                });
            }
            store.index += 1;
            let v = store.index;
            store.data.insert(key, (value, v));
            Ok(Reply::Written {
                version: KeyVersion(v),
            })
        }
        Operation::Increment { key, delta } => {
            reserved(&key)?;
            let before = match store.data.get(&key) {
                None => 0,
                Some((v, _)) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                    RequestError::InvalidRequest {
                        reason: InvalidReason::NotACounter,
                    }
                })?),
            };
            let value = before
                .checked_add(delta)
                .ok_or(RequestError::InvalidRequest {
                    reason: InvalidReason::CounterOverflow,
                })?;
            store.index += 1;
            let v = store.index;
            store.data.insert(key, (value.to_le_bytes().to_vec(), v));
            Ok(Reply::Incremented {
                value,
                version: KeyVersion(v),
            })
        }
        Operation::Scan(scan) => {
            if scan.max_count == 0 || scan.max_bytes == 0 {
                return Err(RequestError::InvalidRequest {
                    reason: InvalidReason::ZeroScanLimit,
                });
            }
            let mut entries = Vec::new();
            let mut resume_key = None;
            for (k, (v, ver)) in store.data.range(scan.start.clone()..) {
                if !scan.end.is_empty() && *k >= scan.end {
                    break;
                }
                if entries.len() == scan.max_count as usize {
                    resume_key = Some(k.clone());
                    break;
                }
                entries.push(KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    version: KeyVersion(*ver),
                });
            }
            Ok(Reply::Scan(ScanPage {
                entries,
                resume_key,
            }))
        }
        Operation::Txn(txn) => {
            let holds = txn.compares.iter().all(|c| {
                let cur = current(store, &c.key);
                c.holds(cur.as_ref().map(|v| (v.value.as_slice(), v.version)))
            });
            let (branch, ops) = if holds {
                (TxnBranch::Success, txn.success)
            } else {
                (TxnBranch::Failure, txn.failure)
            };
            let writes = ops.iter().any(|o| !matches!(o, TxnOp::Get { .. }));
            if writes {
                store.index += 1;
            }
            let version = if writes {
                KeyVersion(store.index)
            } else {
                KeyVersion::ABSENT
            };
            let mut results = Vec::new();
            for op in ops {
                results.push(match op {
                    TxnOp::Get { key } => TxnOpResult::Get(current(store, &key)),
                    TxnOp::Put { key, value } => {
                        store.data.insert(key, (value, version.get()));
                        TxnOpResult::Put
                    }
                    TxnOp::Delete { key } => TxnOpResult::Delete {
                        found: store.data.remove(&key).is_some(),
                    },
                    TxnOp::DeleteRange { .. } => TxnOpResult::DeleteRange { deleted_count: 0 },
                });
            }
            Ok(Reply::Txn(TxnReply {
                branch,
                version,
                results,
            }))
        }
        Operation::DeleteRange { .. } => Err(RequestError::InvalidRequest {
            reason: InvalidReason::EmptySpan,
        }),
    }
}

/// What one run of the CLI printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Asserts the error contract: exit 2 and exactly one `quasarctl: ` line on stderr.
    pub fn assert_one_line_error(&self) {
        assert_eq!(self.code, 2, "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        assert!(self.stderr.starts_with("quasarctl: "), "{self:?}");
    }
}

/// Runs `quasarctl` with `args` (no QUASAR_* variables from the environment, unless given
/// in `env`), bounded by 60 s.
pub fn quasarctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quasarctl"));
    cmd.args(args)
        .env_remove("QUASAR_ENDPOINTS")
        .env_remove("QUASAR_CLUSTER_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn quasarctl");
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for quasarctl") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quasarctl {args:?} ran over 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}
