//! Transport scenarios on loopback (127.0.0.1, ephemeral ports), two transports on one
//! glommio executor: handshake, wrong cluster refused, a bad frame closes only its own
//! connection, reconnection after the peer restarts, and the bounded queue dropping Raft
//! batches when the peer stops reading. Every wait has a timeout.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use quasar_rpc::conn::{Conn, ConnConfig, Delivery, InFrame, Pushed, RecvBuffer};
use quasar_rpc::frame::{decode_body, encode_frame, FrameError, FrameKind};
use quasar_rpc::message::{
    ClusterId, Entry, EntryKind, GroupId, Handshake, HandshakeReply, LogId, LogIndex, NodeId,
    Origin, RaftBatch, RaftBody, RaftMessage, ShardId, Term,
};
use quasar_rpc::transport::{Destination, FrameHandler, PeerInfo, Transport, TransportConfig};
use rkyv::util::AlignedVec;

fn run<T: 'static>(test: impl Future<Output = T> + 'static) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .preempt_timer(Duration::from_millis(2))
        .make()
        .expect("executor")
        .run(async move {
            glommio::timer::timeout(Duration::from_secs(30), async { Ok(test.await) })
                .await
                .expect("test timed out")
        })
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct Recorder {
    batches: RefCell<Vec<(PeerInfo, RaftBatch)>>,
}

impl FrameHandler for Recorder {
    fn on_frame(
        &self,
        peer: &PeerInfo,
        frame: InFrame<'_>,
        _conn: &Rc<Conn>,
    ) -> Result<(), FrameError> {
        if frame.kind != FrameKind::RaftBatch {
            return Err(FrameError::KindMismatch {
                expected: FrameKind::RaftBatch,
                got: frame.kind,
            });
        }
        let batch = decode_body::<RaftBatch>(frame.body)?;
        self.batches.borrow_mut().push((peer.clone(), batch));
        Ok(())
    }
}

fn config(cluster: u64, node: u64) -> TransportConfig {
    let mut c = TransportConfig::new(ClusterId(cluster), NodeId(node), ShardId(0));
    c.conn.io_timeout = Duration::from_secs(2);
    c.backoff_min = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(50);
    c
}

fn node(cluster: u64, id: u64) -> (Rc<Transport>, Rc<Recorder>) {
    let rec = Rc::new(Recorder::default());
    let t = Transport::new(config(cluster, id), rec.clone());
    (t, rec)
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("loopback address")
}

fn batch(from: u64, to: u64, group: u64, payload_bytes: usize) -> RaftBatch {
    RaftBatch {
        from: NodeId(from),
        to: NodeId(to),
        to_shard: ShardId(0),
        messages: vec![RaftMessage {
            group: GroupId(group),
            term: Term(3),
            body: RaftBody::Append(quasar_rpc::message::Append {
                prev: LogId {
                    term: Term(3),
                    index: LogIndex(9),
                },
                entries: vec![Entry {
                    term: Term(3),
                    kind: EntryKind::Normal,
                    payload: vec![0xab; payload_bytes],
                }],
                commit: LogIndex(9),
            }),
        }],
        heartbeats: vec![],
        heartbeat_responses: vec![],
        commits: vec![],
    }
}

const B: Destination = Destination {
    node: NodeId(2),
    shard: ShardId(0),
};

#[test]
fn handshake_then_raft_batches_flow_with_the_senders_identity() {
    run(async {
        let (a, _) = node(7, 1);
        let (b, b_rec) = node(7, 2);
        let b_addr = b.listen(loopback()).unwrap();
        a.add_peer(B, b_addr);
        wait_until("handshake", || a.is_connected(B)).await;
        for g in 0..3 {
            assert_eq!(a.send_raft(B, &batch(1, 2, g, 16)).unwrap(), Pushed::Queued);
        }
        a.flush();
        wait_until("three batches", || b_rec.batches.borrow().len() == 3).await;
        let got = b_rec.batches.borrow();
        for (g, (peer, bat)) in got.iter().enumerate() {
            assert_eq!(
                peer.origin,
                Origin::Node {
                    node: NodeId(1),
                    shard: ShardId(0)
                }
            );
            assert_eq!(*bat, batch(1, 2, g as u64, 16), "order and content kept");
        }
        assert_eq!(b.stats().accepted, 1);
        a.stop();
        b.stop();
    });
}

/// Regression: the dialer's read of a link the peer never writes to timed out after
/// `idle_timeout` and closed it, so every Raft link was redialed every 30 s in a node and
/// the batches of that moment were lost (a leadership transfer among thousands failed now
/// and then).
#[test]
fn a_link_the_peer_never_writes_to_stays_open_past_the_idle_timeout() {
    run(async {
        let mut ca = config(7, 1);
        ca.conn.idle_timeout = Duration::from_millis(100);
        let a = Transport::new(ca, Rc::new(Recorder::default()));
        let mut cb = config(7, 2);
        cb.conn.idle_timeout = Duration::from_millis(100);
        let b_rec = Rc::new(Recorder::default());
        let b = Transport::new(cb, b_rec.clone());
        let b_addr = b.listen(loopback()).unwrap();
        a.add_peer(B, b_addr);
        wait_until("handshake", || a.is_connected(B)).await;
        // Six idle timeouts of the dialer, with a batch every 40 ms (B's read is never idle).
        for g in 0..15 {
            assert_eq!(a.send_raft(B, &batch(1, 2, g, 16)).unwrap(), Pushed::Queued);
            a.flush();
            glommio::timer::sleep(Duration::from_millis(40)).await;
        }
        wait_until("every batch", || b_rec.batches.borrow().len() == 15).await;
        assert_eq!(a.stats().connects, 1, "the link was never redialed");
        assert_eq!(b.stats().accepted, 1);
        a.stop();
        b.stop();
    });
}

#[test]
fn a_peer_from_another_cluster_is_refused_on_both_sides() {
    run(async {
        let (a, _) = node(7, 1);
        let (b, b_rec) = node(8, 2);
        let b_addr = b.listen(loopback()).unwrap();
        a.add_peer(B, b_addr);
        wait_until("refusals", || {
            a.stats().handshakes_refused_out >= 2 && b.stats().handshakes_refused_in >= 2
        })
        .await;
        assert!(!a.is_connected(B));
        assert_eq!(a.send_raft(B, &batch(1, 2, 1, 8)).unwrap(), Pushed::Dropped);
        assert!(b_rec.batches.borrow().is_empty());
        a.stop();
        b.stop();
    });
}

#[test]
fn a_bad_frame_closes_only_its_connection() {
    run(async {
        let (a, _) = node(7, 1);
        let (b, b_rec) = node(7, 2);
        let b_addr = b.listen(loopback()).unwrap();
        a.add_peer(B, b_addr);
        wait_until("handshake", || a.is_connected(B)).await;

        // A third party handshakes correctly, then sends garbage.
        let mut raw = TcpStream::connect(b_addr).await.unwrap();
        let mut out = AlignedVec::new();
        let hello = Handshake::from_node(ClusterId(7), NodeId(3), ShardId(0), ShardId(0));
        encode_frame(&hello, &mut out).unwrap();
        raw.write_all(&out).await.unwrap();
        let mut reply = [0u8; 512];
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = raw.read(&mut reply).await.unwrap();
        assert!(n > 0, "handshake reply");
        raw.write_all(&[0x5a; 64]).await.unwrap();
        let mut rest = [0u8; 64];
        let closed = raw.read(&mut rest).await;
        assert!(
            matches!(closed, Ok(0)) || closed.is_err(),
            "the bad connection is closed: {closed:?}"
        );
        wait_until("bad frame counted", || b.stats().frames_closed_bad == 1).await;

        // The good connection is untouched.
        assert!(a.is_connected(B));
        a.send_raft(B, &batch(1, 2, 5, 8)).unwrap();
        a.flush();
        wait_until("batch after the bad frame", || {
            b_rec.batches.borrow().len() == 1
        })
        .await;
        assert_eq!(a.stats().connects, 1, "no reconnect was needed");
        a.stop();
        b.stop();
    });
}

#[test]
fn the_sender_reconnects_after_the_peer_restarts() {
    run(async {
        let (a, _) = node(7, 1);
        let (b1, b1_rec) = node(7, 2);
        let b_addr = b1.listen(loopback()).unwrap();
        a.add_peer(B, b_addr);
        wait_until("handshake", || a.is_connected(B)).await;
        a.send_raft(B, &batch(1, 2, 1, 8)).unwrap();
        a.flush();
        wait_until("first batch", || b1_rec.batches.borrow().len() == 1).await;

        b1.stop();
        wait_until("disconnect noticed", || !a.is_connected(B)).await;
        // Let the old accept loop notice `stop` and drop its listener.
        glommio::timer::sleep(Duration::from_millis(400)).await;
        let (b2, b2_rec) = node(7, 2);
        assert_eq!(b2.listen(b_addr).unwrap(), b_addr);
        wait_until("reconnect", || a.is_connected(B)).await;
        assert_eq!(a.stats().connects, 2);
        a.send_raft(B, &batch(1, 2, 2, 8)).unwrap();
        a.flush();
        wait_until("batch after restart", || b2_rec.batches.borrow().len() == 1).await;
        assert_eq!(b2_rec.batches.borrow()[0].1, batch(1, 2, 2, 8));
        a.stop();
        b2.stop();
    });
}

#[test]
fn raft_batches_are_dropped_not_buffered_when_the_peer_stops_reading() {
    run(async {
        // A peer that completes the handshake and then never reads.
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Rc<RefCell<Option<Rc<Conn>>>> = Rc::default();
        let held2 = held.clone();
        glommio::spawn_local(async move {
            let stream = listener.accept().await.unwrap();
            let conn = Conn::new(stream, ConnConfig::default()).unwrap();
            let mut buf = RecvBuffer::new(conn.config());
            let hello = conn
                .read_frame(&mut buf, |f| decode_body::<Handshake>(f.body).unwrap())
                .await
                .unwrap();
            assert_eq!(hello.cluster, ClusterId(7));
            let reply = HandshakeReply::Accepted {
                cluster: ClusterId(7),
                node: NodeId(2),
                shard: ShardId(0),
                protocol_version: hello.protocol_version,
            };
            conn.push(Delivery::Reliable, &reply).unwrap();
            conn.flush().await.unwrap();
            *held2.borrow_mut() = Some(conn);
        })
        .detach();

        let mut cfg = config(7, 1);
        cfg.conn.queue_limit_bytes = 256 << 10;
        let a = Transport::new(cfg, Rc::new(Recorder::default()));
        a.add_peer(B, addr);
        wait_until("handshake", || a.is_connected(B)).await;
        let big = batch(1, 2, 1, 64 << 10);
        let mut sent = 0;
        while a.stats().raft_dropped == 0 {
            assert!(sent < 4000, "no batch dropped after {sent} batches");
            a.send_raft(B, &big).unwrap();
            a.flush();
            sent += 1;
            glommio::yield_if_needed().await;
            glommio::executor().yield_task_queue_now().await;
        }
        let conn = a
            .peer_conn(B)
            .expect("still connected: dropping is not closing");
        assert!(
            conn.queued_bytes() <= (256 << 10) + (65 << 10),
            "queue bounded: {} bytes",
            conn.queued_bytes()
        );
        assert!(conn.stats().frames_dropped >= 1);
        assert!(held.borrow().is_some());
        a.stop();
    });
}

#[test]
fn a_peer_too_slow_for_reliable_frames_is_closed_not_buffered_forever() {
    run(async {
        let listener = TcpListener::bind(loopback()).unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = Conn::connect(
            addr,
            ConnConfig {
                queue_limit_bytes: 16 << 10,
                hard_limit_bytes: 64 << 10,
                ..ConnConfig::default()
            },
        )
        .await
        .unwrap();
        let _server_side = listener.accept().await.unwrap();
        let big = batch(1, 2, 1, 16 << 10);
        // Nothing is flushed: the queue only grows, as with a peer that does not read.
        let mut refused = None;
        for i in 0..16 {
            match conn.push(Delivery::Reliable, &big) {
                Ok(Pushed::Queued) => {}
                Ok(Pushed::Dropped) => panic!("a reliable frame was dropped at push {i}"),
                Err(e) => {
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        let refused = refused.expect("the hard limit closes the connection");
        assert!(refused.contains("reads too slowly"), "{refused}");
        assert!(conn.is_closed());
        assert_eq!(conn.stats().frames_dropped, 0);
    });
}
