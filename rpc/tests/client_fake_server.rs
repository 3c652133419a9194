//! Client library scenarios against small fake servers (std threads on 127.0.0.1, ephemeral
//! ports) that speak the real frames: answers matched by request id out of order, NotLeader
//! hints followed, RangeMoved/KeyNotInRange updating the range cache, retries keeping the
//! session sequence, and a lost answer to a write reported as Ambiguous.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use quasar_rpc::client::{AsyncClient, BlockingClient, ClientConfig};
use quasar_rpc::conn::{ConnConfig, RecvBuffer};
use quasar_rpc::error::ClientError;
use quasar_rpc::frame::{decode_body, encode_frame, WireMessage};
use quasar_rpc::message::{
    ClientRequest, ClientResponse, ClusterId, GroupId, Handshake, HandshakeReply, KeyVersion,
    NodeId, RangeDescriptor, RangeEpoch, RangeId, ReplicaDescriptor, ReplicaRole, Reply,
    RequestError, RequestId, Route, UnavailableReason, VersionedValue,
};
use rkyv::util::AlignedVec;

const CLUSTER: ClusterId = ClusterId(11);

struct FakeConn {
    stream: TcpStream,
    buf: RecvBuffer,
    seen: Arc<Mutex<Vec<ClientRequest>>>,
}

impl FakeConn {
    fn read<M: WireMessage>(&mut self) -> Option<M> {
        loop {
            match self.buf.next_frame().expect("client sent a bad frame") {
                Some(f) => {
                    assert_eq!(f.kind, M::KIND);
                    return Some(decode_body::<M>(f.body).expect("valid body"));
                }
                None => {
                    let n = self.stream.read(self.buf.spare_mut()).ok()?;
                    if n == 0 {
                        return None;
                    }
                    self.buf.filled(n);
                }
            }
        }
    }

    fn write<M: WireMessage>(&mut self, msg: &M) {
        let mut out = AlignedVec::new();
        encode_frame(msg, &mut out).expect("encode");
        // NOTE: the client may have given up on this connection already.
        let _ = self.stream.write_all(&out);
    }

    /// The next request (recorded), or None once the client hangs up.
    fn recv(&mut self) -> Option<ClientRequest> {
        let req = self.read::<ClientRequest>()?;
        self.seen.lock().expect("lock").push(req.clone());
        Some(req)
    }

    fn reply(&mut self, id: RequestId, result: Result<Reply, RequestError>) {
        self.write(&ClientResponse {
            request_id: id,
            result,
        });
    }
}

type Script = Arc<dyn Fn(&mut FakeConn) + Send + Sync>;

struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ClientRequest>>>,
    connections: Arc<AtomicUsize>,
}

impl FakeServer {
    fn start(script: impl Fn(&mut FakeConn) + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<ClientRequest>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let (seen2, conns2) = (seen.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                conns2.fetch_add(1, Ordering::SeqCst);
                let (script, seen) = (script.clone(), seen2.clone());
                std::thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("timeout");
                    let mut conn = FakeConn {
                        stream,
                        buf: RecvBuffer::new(&ConnConfig::default()),
                        seen,
                    };
                    let Some(hello) = conn.read::<Handshake>() else {
                        return;
                    };
                    assert_eq!(hello.cluster, CLUSTER);
                    conn.write(&HandshakeReply::Accepted {
                        cluster: CLUSTER,
                        node: NodeId(0),
                        shard: hello.target_shard,
                        protocol_version: hello.protocol_version,
                    });
                    script(&mut conn);
                });
            }
        });
        FakeServer {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<ClientRequest> {
        self.seen.lock().expect("lock").clone()
    }
}

fn config(nodes: &[(u64, &FakeServer)]) -> ClientConfig {
    let nodes = nodes.iter().map(|(id, s)| (NodeId(*id), s.addr)).collect();
    let mut c = ClientConfig::new(CLUSTER, nodes, 1);
    c.request_timeout = Duration::from_secs(5);
    c.backoff_min = Duration::from_millis(1);
    c.backoff_max = Duration::from_millis(5);
    c
}

fn range(id: u64, epoch: u64, voters: &[u64]) -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(id),
        group: GroupId(100 + id),
        start: Vec::new(),
        end: Vec::new(),
        replicas: voters
            .iter()
            .map(|n| ReplicaDescriptor {
                node: NodeId(*n),
                role: ReplicaRole::Voter,
            })
            .collect(),
        epoch: RangeEpoch(epoch),
    }
}

fn written(version: u64) -> Result<Reply, RequestError> {
    Ok(Reply::Written {
        version: KeyVersion(version),
    })
}

fn serve_forever(
    answer: impl Fn(&ClientRequest) -> Result<Reply, RequestError> + Send + Sync,
) -> impl Fn(&mut FakeConn) + Send + Sync {
    move |conn: &mut FakeConn| {
        while let Some(req) = conn.recv() {
            let result = answer(&req);
            conn.reply(req.request_id, result);
        }
    }
}

/// An executor for an `AsyncClient`.
fn executor() -> glommio::LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_millis(2))
        .make()
        .expect("executor")
}

#[test]
fn async_client_matches_answers_sent_out_of_order() {
    let server = FakeServer::start(|conn| {
        let reqs: Vec<ClientRequest> = (0..3).map_while(|_| conn.recv()).collect();
        for req in reqs.iter().rev() {
            let quasar_rpc::message::Operation::Get { key } = &req.op else {
                panic!("expected gets")
            };
            let value = VersionedValue {
                value: key.clone(),
                version: KeyVersion(req.request_id.0),
            };
            conn.reply(req.request_id, Ok(Reply::Get(Some(value))));
        }
        while conn.recv().is_some() {}
    });
    let cfg = config(&[(1, &server)]);
    let results = executor().run(async move {
        let client = AsyncClient::new(cfg);
        let tasks: Vec<_> = [b"a", b"b", b"c"]
            .into_iter()
            .map(|key| {
                let client = client.clone();
                glommio::spawn_local(async move { client.get(key).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            let got = glommio::timer::timeout(Duration::from_secs(10), async { Ok(t.await) })
                .await
                .expect("answer in time");
            out.push(got);
        }
        out
    });
    for (key, got) in [b"a", b"b", b"c"].into_iter().zip(results) {
        let got = got.expect("get").expect("value");
        assert_eq!(got.value, key.to_vec(), "answer matched to its own request");
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one pipelined connection"
    );
    let ids: Vec<u64> = server.seen().iter().map(|r| r.request_id.0).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
}

#[test]
fn blocking_client_follows_the_not_leader_hint_and_remembers_it() {
    let n1 = FakeServer::start(serve_forever(|_| {
        Err(RequestError::NotLeader {
            range: RangeId(5),
            leader_hint: Some(NodeId(2)),
        })
    }));
    let n2 = FakeServer::start(serve_forever(|_| written(42)));
    let mut client = BlockingClient::new(config(&[(1, &n1), (2, &n2)]));
    client.cache_mut().insert(range(5, 1, &[1, 2]));
    assert_eq!(client.put(b"k", b"v").expect("put"), KeyVersion(42));
    assert_eq!(n1.seen().len(), 1, "first attempt went to the first voter");
    assert_eq!(n2.seen().len(), 1, "then to the hinted leader");
    assert_eq!(client.cache().leader(RangeId(5)), Some(NodeId(2)));
    client.put(b"k2", b"v").expect("second put");
    assert_eq!(n1.seen().len(), 1, "the leader hint is remembered");
    assert_eq!(n2.seen().len(), 2);
}

#[test]
fn range_moved_and_key_not_in_range_update_the_cache() {
    // The seed node knows only that range 5 (epoch 3) lives on node 2.
    let n1 = FakeServer::start(serve_forever(|_| {
        Err(RequestError::KeyNotInRange {
            descriptor: range(5, 3, &[2]),
        })
    }));
    // Node 2 has seen a change of range 5 (epoch 4) that the client does not know yet.
    let n2 = FakeServer::start(serve_forever(|req| match req.route {
        Some(Route {
            epoch: RangeEpoch(4),
            ..
        }) => written(7),
        _ => Err(RequestError::RangeMoved {
            descriptor: range(5, 4, &[2]),
        }),
    }));
    let mut client = BlockingClient::new(config(&[(1, &n1), (2, &n2)]));
    assert!(client.cache().is_empty());
    assert_eq!(client.put(b"key", b"v").expect("put"), KeyVersion(7));
    assert_eq!(n1.seen()[0].route, None, "no route known at first");
    let routes: Vec<Option<Route>> = n2.seen().iter().map(|r| r.route).collect();
    let route = |epoch| {
        Some(Route {
            range: RangeId(5),
            epoch: RangeEpoch(epoch),
        })
    };
    assert_eq!(routes, vec![route(3), route(4)]);
    let cached = client.cache().lookup(b"key").expect("cached").clone();
    assert_eq!((cached.id, cached.epoch), (RangeId(5), RangeEpoch(4)));
}

#[test]
fn a_retried_write_keeps_its_session_sequence() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let n1 = FakeServer::start(serve_forever(move |_| {
        if calls2.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(RequestError::Unavailable {
                reason: UnavailableReason::NoLeader,
            })
        } else {
            written(9)
        }
    }));
    let mut client = BlockingClient::new(config(&[(1, &n1)]));
    client.cache_mut().insert(range(5, 1, &[1]));
    assert_eq!(client.put(b"k", b"v").expect("put"), KeyVersion(9));
    client.put(b"k", b"w").expect("second put");
    let seen = n1.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].session, client.session());
    assert_eq!(seen[0].session, seen[1].session);
    assert_eq!(
        seen[0].sequence, seen[1].sequence,
        "a retry reuses the sequence"
    );
    assert_ne!(seen[0].request_id, seen[1].request_id);
    assert!(
        seen[2].sequence > seen[1].sequence,
        "a new write takes a new sequence"
    );
}

#[test]
fn a_write_without_answer_is_ambiguous_and_a_read_is_not() {
    let n1 = FakeServer::start(|conn| while conn.recv().is_some() {});
    let mut cfg = config(&[(1, &n1)]);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.max_attempts = 2;
    let mut client = BlockingClient::new(cfg);
    client.cache_mut().insert(range(5, 1, &[1]));
    match client.put(b"k", b"v") {
        Err(ClientError::Ambiguous { attempts: 2, .. }) => {}
        other => panic!("expected Ambiguous after 2 attempts, got {other:?}"),
    }
    let seen = n1.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].sequence, seen[1].sequence);
    match client.get(b"k") {
        Err(ClientError::Unavailable { attempts: 2, .. }) => {}
        other => panic!("a read without answer is not ambiguous: {other:?}"),
    }
}

#[test]
fn async_client_times_out_a_request_without_answer_and_keeps_the_connection() {
    // Answers every request but the first: the first times out (the connection's watch
    // task ends it), the next ones on the same connection are answered.
    let server = FakeServer::start(|conn| {
        let _ = conn.recv();
        while let Some(req) = conn.recv() {
            conn.reply(req.request_id, Ok(Reply::Get(None)));
        }
    });
    let mut cfg = config(&[(1, &server)]);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.max_attempts = 1;
    let (first, took, second) = executor().run(async move {
        let client = AsyncClient::new(cfg);
        let began = Instant::now();
        let first = glommio::timer::timeout(Duration::from_secs(10), async {
            Ok(client.get(b"k").await)
        })
        .await
        .expect("the timeout ends the request, not the test's bound");
        let took = began.elapsed();
        let second = glommio::timer::timeout(Duration::from_secs(10), async {
            Ok(client.get(b"k").await)
        })
        .await
        .expect("answer in time");
        (first, took, second)
    });
    match first {
        Err(ClientError::Unavailable { attempts: 1, .. }) => {}
        other => panic!("expected Unavailable after one timed-out attempt, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(200),
        "ended before its timeout: {took:?}"
    );
    assert_eq!(second.expect("second get"), None);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn admin_requests_follow_the_leader_hint() {
    use quasar_rpc::message::{AdminOp, AdminReply, AdminRequest, AdminResponse, ShardId};
    let admin = |answer: Result<AdminReply, RequestError>| {
        move |conn: &mut FakeConn| {
            while let Some(req) = conn.read::<AdminRequest>() {
                assert_eq!(req.op, AdminOp::ListMembers);
                conn.write(&AdminResponse {
                    request_id: req.request_id,
                    result: answer.clone(),
                });
            }
        }
    };
    let n1 = FakeServer::start(admin(Err(RequestError::NotLeader {
        range: RangeId(0),
        leader_hint: Some(NodeId(2)),
    })));
    let n2 = FakeServer::start(admin(Ok(AdminReply::Members(Vec::new()))));
    let mut client = BlockingClient::new(config(&[(1, &n1), (2, &n2)]));
    let reply = client
        .admin(NodeId(1), ShardId(0), AdminOp::ListMembers)
        .expect("admin");
    assert_eq!(reply, AdminReply::Members(Vec::new()));
    assert_eq!(n1.connections.load(Ordering::SeqCst), 1);
    assert_eq!(n2.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_write_whose_outcome_the_server_forgot_is_ambiguous() {
    // The session's outcome for this sequence was evicted: the write may have applied.
    let n1 = FakeServer::start(serve_forever(|req| {
        Err(RequestError::SessionExpired {
            session: req.session,
            sequence: req.sequence,
        })
    }));
    let mut client = BlockingClient::new(config(&[(1, &n1)]));
    client.cache_mut().insert(range(5, 1, &[1]));
    match client.put(b"k", b"v") {
        Err(ClientError::Ambiguous { attempts: 1, last }) => {
            assert!(last.contains("session"), "{last}");
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    // A read changes nothing: it is a plain failure.
    assert!(matches!(
        client.get(b"k"),
        Err(ClientError::Failed(RequestError::SessionExpired { .. }))
    ));
}
