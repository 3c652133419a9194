//! A fake Quasar cluster for CLI tests: a few "nodes", each a `TcpListener` on 127.0.0.1:0
//! with one shard, speaking the real rpc protocol (frames, handshake, client and admin
//! messages) over one shared in-memory `BTreeMap`. One node is the leader; the others
//! answer client requests with `NotLeader { leader_hint }`.
//!
//! Range operations work on a range table of their own (meta range 1 and user range 2 at
//! first, each with a leader, initially the cluster's leader): split, merge (refused unless
//! both ranges have the same leader, as the real server does) and leadership transfer, each
//! answered only by the range's leader (others say `NotLeader` with a hint) and checked
//! against the expected epoch. Every range-changing request is logged for the tests.
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

/// One range of the fake's range table and its leader.
#[derive(Clone)]
struct FakeRange {
    descriptor: RangeDescriptor,
    leader: NodeId,
}

struct Shared {
    cluster: ClusterId,
    members: Vec<Member>,
    leader: NodeId,
    store: Mutex<Store>,
    /// The range table in key order.
    table: Mutex<Vec<FakeRange>>,
    /// Range-changing requests received: "node N: OP ...".
    admin_log: Mutex<Vec<String>>,
    /// The answer to the next range-changing request, instead of acting on it.
    refuse_next: Mutex<Option<RequestError>>,
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
        let members: Vec<Member> = endpoints
            .iter()
            .enumerate()
            .map(|(i, a)| Member {
                node: NodeId(FIRST_NODE + i as u64),
                address: a.clone(),
                state: MemberState::Active,
            })
            .chain(extra)
            .collect();
        let leader = NodeId(FIRST_NODE + leader as u64);
        let replicas: Vec<ReplicaDescriptor> = members
            .iter()
            .map(|m| ReplicaDescriptor {
                node: m.node,
                role: ReplicaRole::Voter,
            })
            .collect();
        let table = [
            (1, b"".to_vec(), b"\x01".to_vec()),
            (2, b"\x01".to_vec(), Vec::new()),
        ]
        .into_iter()
        .map(|(id, start, end)| FakeRange {
            descriptor: RangeDescriptor {
                id: RangeId(id),
                group: GroupId(id),
                start,
                end,
                replicas: replicas.clone(),
                epoch: RangeEpoch(1),
            },
            leader,
        })
        .collect();
        let shared = Arc::new(Shared {
            cluster: ClusterId::from_name(name),
            members,
            leader,
            store: Mutex::new(Store::default()),
            table: Mutex::new(table),
            admin_log: Mutex::new(Vec::new()),
            refuse_next: Mutex::new(None),
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

/// One row of the fake's range table: (id, start, end, epoch, leader).
pub type RangeRow = (u64, Vec<u8>, Vec<u8>, u64, u64);

impl FakeCluster {
    /// Makes node `FIRST_NODE + node` the leader of range `range`.
    pub fn set_range_leader(&self, range: u64, node: usize) {
        let mut table = self.shared.table.lock().expect("table lock");
        for r in table.iter_mut() {
            if r.descriptor.id == RangeId(range) {
                r.leader = NodeId(FIRST_NODE + node as u64);
            }
        }
    }

    /// The range table.
    pub fn ranges(&self) -> Vec<RangeRow> {
        self.shared
            .table
            .lock()
            .expect("table lock")
            .iter()
            .map(|r| {
                let d = &r.descriptor;
                (
                    d.id.get(),
                    d.start.clone(),
                    d.end.clone(),
                    d.epoch.get(),
                    r.leader.get(),
                )
            })
            .collect()
    }

    /// Range-changing requests received so far, in order ("node N: OP ...").
    pub fn admin_log(&self) -> Vec<String> {
        self.shared.admin_log.lock().expect("log lock").clone()
    }

    /// The next range-changing request is answered `error` (and changes nothing).
    pub fn refuse_next(&self, error: RequestError) {
        *self.shared.refuse_next.lock().expect("refuse lock") = Some(error);
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
        silent_peer: false,
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
    let commit = shared.store.lock().expect("store lock").index;
    shared
        .table
        .lock()
        .expect("table lock")
        .iter()
        .map(|r| RangeInfo {
            descriptor: r.descriptor.clone(),
            leader: Some(r.leader),
            commit: Some(LogIndex(commit)),
        })
        .collect()
}

/// A range-changing op: the range it names and the epoch it expects.
fn change_of(op: &AdminOp) -> Option<(RangeId, Option<RangeEpoch>)> {
    match op {
        AdminOp::SplitRange {
            range,
            expected_epoch,
            ..
        } => Some((*range, Some(*expected_epoch))),
        AdminOp::MergeRanges {
            left,
            expected_epoch,
        } => Some((*left, Some(*expected_epoch))),
        AdminOp::TransferLeader { range, .. } => Some((*range, None)),
        _ => None,
    }
}

fn op_text(op: &AdminOp) -> String {
    match op {
        AdminOp::SplitRange {
            range,
            split_key,
            expected_epoch,
        } => format!(
            "SplitRange {range} at {} epoch {expected_epoch}",
            split_key.escape_ascii()
        ),
        AdminOp::MergeRanges {
            left,
            expected_epoch,
        } => format!("MergeRanges {left} epoch {expected_epoch}"),
        AdminOp::TransferLeader { range, to } => format!("TransferLeader {range} to {to}"),
        other => format!("{other:?}"),
    }
}

/// Carries out a range-changing op on the table, as the range's leader `node` would.
fn change(shared: &Shared, node: NodeId, op: AdminOp) -> Result<AdminReply, RequestError> {
    shared
        .admin_log
        .lock()
        .expect("log lock")
        .push(format!("node {node}: {}", op_text(&op)));
    let Some((range, expected)) = change_of(&op) else {
        return Err(RequestError::InvalidRequest {
            reason: InvalidReason::Unsupported,
        });
    };
    let mut table = shared.table.lock().expect("table lock");
    let Some(i) = table.iter().position(|r| r.descriptor.id == range) else {
        return Err(RequestError::UnknownRange { range });
    };
    if table[i].leader != node {
        return Err(RequestError::NotLeader {
            range,
            leader_hint: Some(table[i].leader),
        });
    }
    if let Some(refusal) = shared.refuse_next.lock().expect("refuse lock").take() {
        return Err(refusal);
    }
    if expected.is_some_and(|e| e != table[i].descriptor.epoch) {
        return Err(RequestError::RangeMoved {
            descriptor: table[i].descriptor.clone(),
        });
    }
    match op {
        AdminOp::SplitRange { split_key, .. } => {
            let left = &table[i].descriptor;
            if split_key <= left.start || !left.contains(&split_key) {
                return Err(RequestError::InvalidRequest {
                    reason: InvalidReason::BadSplitKey,
                });
            }
            let id = table
                .iter()
                .map(|r| r.descriptor.id.get())
                .max()
                .unwrap_or(0)
                + 1;
            let epoch = RangeEpoch(left.epoch.get() + 1);
            let right = FakeRange {
                descriptor: RangeDescriptor {
                    id: RangeId(id),
                    group: GroupId(id),
                    start: split_key.clone(),
                    end: left.end.clone(),
                    replicas: left.replicas.clone(),
                    epoch,
                },
                leader: node,
            };
            table[i].descriptor.end = split_key;
            table[i].descriptor.epoch = epoch;
            let reply = AdminReply::Split {
                left: table[i].descriptor.clone(),
                right: right.descriptor.clone(),
            };
            table.insert(i + 1, right);
            Ok(reply)
        }
        AdminOp::MergeRanges { .. } => {
            let end = table[i].descriptor.end.clone();
            let Some(j) = table
                .iter()
                .position(|r| !end.is_empty() && r.descriptor.start == end)
            else {
                return Err(RequestError::InvalidRequest {
                    reason: InvalidReason::NotMergeable,
                });
            };
            if table[j].leader != node {
                return Err(RequestError::Refused {
                    reason: format!(
                        "range {} is led by node {}, not {node}: move its leadership here first",
                        table[j].descriptor.id, table[j].leader
                    ),
                });
            }
            let right = table.remove(j);
            let merged = &mut table[i].descriptor;
            merged.end = right.descriptor.end;
            merged.epoch = RangeEpoch(merged.epoch.get().max(right.descriptor.epoch.get()) + 1);
            Ok(AdminReply::Merged {
                merged: merged.clone(),
            })
        }
        AdminOp::TransferLeader { to, .. } => {
            if table[i].descriptor.replica(to).is_none() {
                return Err(RequestError::InvalidRequest {
                    reason: InvalidReason::BadReplicaChange,
                });
            }
            table[i].leader = to;
            Ok(AdminReply::LeaderTransferred {
                range,
                group: table[i].descriptor.group,
                leader: to,
            })
        }
        _ => Err(RequestError::InvalidRequest {
            reason: InvalidReason::Unsupported,
        }),
    }
}

fn admin(shared: &Shared, node: NodeId, op: AdminOp) -> Result<AdminReply, RequestError> {
    match op {
        AdminOp::ListMembers => Ok(AdminReply::Members(shared.members.clone())),
        AdminOp::Status => Ok(AdminReply::Status(NodeStatus {
            cluster: shared.cluster,
            node,
            uptime_secs: 3725,
            cpu_user_micros: 2_000_000,
            cpu_system_micros: 500_000,
            shards: vec![ShardStatus {
                shard: ShardId(0),
                groups: 2,
                leaders: if node == shared.leader { 2 } else { 0 },
                wal_bytes: 4096,
                cpu_micros: 2_100_000,
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
        op @ (AdminOp::SplitRange { .. }
        | AdminOp::MergeRanges { .. }
        | AdminOp::TransferLeader { .. }) => change(shared, node, op),
        _ => Err(RequestError::InvalidRequest {
            reason: InvalidReason::Unsupported,
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
