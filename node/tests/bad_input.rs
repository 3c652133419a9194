//! A running 3-node cluster against bad bytes on a shard port: garbage, a truncated frame,
//! a header announcing an oversized body, a handshake from another cluster. Each closes that
//! one connection (after a `Refused` reply for the handshake); the node keeps serving: a
//! normal client still writes and reads, the attacked shard still answers admin requests
//! and handshakes, and `/health` stays 200.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, CLUSTER_NAME, USER_RANGE};
use quasar_rpc::frame::{
    decode_body, encode_frame, FrameHeader, FrameKind, HEADER_LEN, PROTOCOL_VERSION,
};
use quasar_rpc::message::{
    AdminOp, AdminReply, ClientRequest, ClusterId, GroupId, Handshake, HandshakeRefusal,
    HandshakeReply, NodeId, Operation, Origin, ReadConsistency, RequestId, Sequence, SessionId,
    ShardId,
};
use quasar_rpc::transport::shard_for_group;
use rkyv::util::AlignedVec;

/// How long the server has to close a connection it must refuse.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Well past any frame limit a node may have (the client's is 16 MiB); a multiple of 8.
const OVERSIZED_BODY: u32 = 64 << 20;

/// The attacked node and shard port: the leader of the user range, on the shard of its group
/// (the busiest port of the cluster).
struct Target {
    node: u64,
    shard: u32,
    addr: SocketAddr,
}

fn start() -> (Cluster, Target) {
    let cluster = Cluster::start(3, 2);
    let node = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let shard = shard_for_group(GroupId(USER_RANGE), cluster.shards).0;
    let addr = cluster.node(node).shard_addr(shard);
    // The cluster serves before the attack (so a failure below is the attack's doing).
    assert_serves(&cluster, &Target { node, shard, addr }, "before the attack");
    (cluster, Target { node, shard, addr })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    stream
}

fn frame_of<M: quasar_rpc::frame::WireMessage>(msg: &M) -> AlignedVec {
    let mut out = AlignedVec::new();
    encode_frame(msg, &mut out).expect("encode a frame");
    out
}

fn handshake(cluster: ClusterId, shard: u32) -> Handshake {
    Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster,
        origin: Origin::Client {
            session: SessionId(0x5eed_0000 + u64::from(shard)),
        },
        target_shard: ShardId(shard),
        token: None,
    }
}

/// Reads one frame from `stream` within `timeout` and decodes it as a handshake reply.
fn read_handshake_reply(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<HandshakeReply, String> {
    let deadline = Instant::now() + timeout;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), String> {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(format!("connection closed after {filled} bytes of a frame")),
                Ok(n) => filled += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(format!("no handshake reply within {timeout:?}"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the handshake reply: {e}")),
            }
        }
        Ok(())
    };
    let mut header = [0u8; HEADER_LEN];
    read_exact(&mut header)?;
    let header = FrameHeader::parse(&header).map_err(|e| e.to_string())?;
    if header.kind_code != FrameKind::HandshakeReply.code() {
        return Err(format!(
            "frame kind {} is not a handshake reply",
            header.kind_code
        ));
    }
    if header.body_len > 1 << 16 {
        return Err(format!("handshake reply of {} bytes", header.body_len));
    }
    let mut body = vec![0u8; header.body_len as usize];
    read_exact(&mut body)?;
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(&body);
    decode_body::<HandshakeReply>(&aligned).map_err(|e| e.to_string())
}

/// Opens a connection with a correct handshake and checks that it is accepted.
fn accepted_connection(target: &Target) -> TcpStream {
    let mut stream = connect(target.addr);
    stream
        .write_all(&frame_of(&handshake(
            ClusterId::from_name(CLUSTER_NAME),
            target.shard,
        )))
        .expect("send the handshake");
    match read_handshake_reply(&mut stream, Duration::from_secs(5)) {
        Ok(HandshakeReply::Accepted { node, shard, .. }) => {
            assert_eq!((node, shard), (NodeId(target.node), ShardId(target.shard)));
        }
        other => panic!(
            "a correct handshake to {} was not accepted: {other:?}",
            target.addr
        ),
    }
    stream
}

/// Waits (bounded) until the server closes `stream`: a read returns 0 or a reset. Bytes the
/// server sends before closing are skipped.
fn expect_closed(stream: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: unexpected read error {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the server kept the connection open for {CLOSE_TIMEOUT:?}"
        );
    }
}

/// Sends `bytes` (a write error means the server already closed: fine) and expects a close.
fn send_and_expect_closed(stream: &mut TcpStream, bytes: &[u8], what: &str) {
    // NOTE: an error here means the server closed first, which is what is checked next.
    let _ = stream.write_all(bytes);
    expect_closed(stream, what);
}

/// The node still serves: `/health` 200, a correct handshake on the attacked port is
/// accepted, the attacked shard answers an admin `Status`, and a client writes and reads.
fn assert_serves(cluster: &Cluster, target: &Target, when: &str) {
    let node = cluster.node(target.node);
    assert_eq!(
        node.health(),
        Ok(200),
        "{when}: /health of node {}",
        target.node
    );
    drop(accepted_connection(target));

    let mut client = cluster.client();
    match client.admin(NodeId(target.node), ShardId(target.shard), AdminOp::Status) {
        Ok(AdminReply::Status(status)) => {
            assert_eq!(status.node, NodeId(target.node), "{when}");
            assert_eq!(status.shards.len(), cluster.shards as usize, "{when}");
        }
        other => panic!(
            "{when}: admin Status on node {} shard {}: {other:?}",
            target.node, target.shard
        ),
    }

    let key = format!("probe-{}", when.replace(' ', "-")).into_bytes();
    let value = b"still serving".to_vec();
    let mut last = None;
    let wrote = wait_until(Duration::from_secs(10), || match client.put(&key, &value) {
        Ok(_) => true,
        Err(e) => {
            last = Some(e.to_string());
            false
        }
    });
    assert!(wrote, "{when}: a normal write failed: {last:?}");
    match client.get(&key) {
        Ok(Some(got)) => assert_eq!(got.value, value, "{when}"),
        other => panic!("{when}: reading back the probe key: {other:?}"),
    }
}

#[test]
fn garbage_bytes_close_the_connection() {
    let (cluster, target) = start();
    let mut garbage = b"GET / HTTP/1.1\r\nHost: quasar\r\n\r\n".to_vec();
    garbage.extend((0u32..256).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));

    // As the first bytes of a connection, instead of a handshake.
    let mut stream = connect(target.addr);
    send_and_expect_closed(&mut stream, &garbage, "garbage instead of a handshake");
    assert_serves(&cluster, &target, "after garbage before the handshake");

    // After an accepted handshake.
    let mut stream = accepted_connection(&target);
    send_and_expect_closed(&mut stream, &garbage, "garbage after the handshake");
    assert_serves(&cluster, &target, "after garbage after the handshake");
}

#[test]
fn truncated_frame_then_close() {
    let (cluster, target) = start();

    // Half a handshake, then the client's end closes: the server must close its end too.
    let hello = frame_of(&handshake(ClusterId::from_name(CLUSTER_NAME), target.shard));
    let mut stream = connect(target.addr);
    stream
        .write_all(&hello[..hello.len() / 2])
        .expect("send half a handshake");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    expect_closed(&mut stream, "half a handshake then EOF");
    assert_serves(&cluster, &target, "after half a handshake");

    // After an accepted handshake: a header and part of a request body, then EOF.
    let request = ClientRequest {
        request_id: RequestId(1),
        session: SessionId(0x5eed),
        sequence: Sequence(1),
        consistency: ReadConsistency::Linearizable,
        route: None,
        op: Operation::Put {
            key: b"truncated".to_vec(),
            value: vec![7u8; 4096],
        },
    };
    let frame = frame_of(&request);
    let mut stream = accepted_connection(&target);
    stream
        .write_all(&frame[..HEADER_LEN + 100])
        .expect("send a truncated frame");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    expect_closed(&mut stream, "a truncated request then EOF");

    // Half a header only, then EOF.
    let mut stream = accepted_connection(&target);
    stream
        .write_all(&frame[..HEADER_LEN / 2])
        .expect("send half a header");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    expect_closed(&mut stream, "half a header then EOF");
    assert_serves(&cluster, &target, "after truncated frames");

    // The truncated write was never applied.
    let mut client = cluster.client();
    match client.get(b"truncated") {
        Ok(None) => {}
        other => panic!("the key of a truncated request reads {other:?}"),
    }
}

#[test]
fn oversized_frame_header_closes_the_connection() {
    let (cluster, target) = start();
    let header = |kind: FrameKind, body_len: u32| {
        let mut bytes = [0u8; HEADER_LEN];
        FrameHeader {
            version: PROTOCOL_VERSION,
            kind_code: kind.code(),
            body_len,
            body_crc: 0,
            flags: 0,
        }
        .write(&mut bytes);
        bytes
    };

    // The first frame of a connection, a "handshake" of 64 MiB: refused from the header
    // alone, without waiting for (or allocating) the body.
    let mut stream = connect(target.addr);
    send_and_expect_closed(
        &mut stream,
        &header(FrameKind::Handshake, OVERSIZED_BODY),
        "an oversized handshake header",
    );
    assert_serves(&cluster, &target, "after an oversized handshake");

    // After an accepted handshake: requests of 64 MiB and of almost 4 GiB.
    for body_len in [OVERSIZED_BODY, u32::MAX - 7] {
        let mut stream = accepted_connection(&target);
        send_and_expect_closed(
            &mut stream,
            &header(FrameKind::ClientRequest, body_len),
            &format!("a request header announcing {body_len} bytes"),
        );
    }
    assert_serves(&cluster, &target, "after oversized requests");
}

#[test]
fn handshake_from_another_cluster_is_refused() {
    let (cluster, target) = start();
    let ours = ClusterId::from_name(CLUSTER_NAME);
    let theirs = ClusterId::from_name("not-quasar");

    let mut stream = connect(target.addr);
    stream
        .write_all(&frame_of(&handshake(theirs, target.shard)))
        .expect("send the handshake");
    match read_handshake_reply(&mut stream, Duration::from_secs(5)) {
        Ok(HandshakeReply::Refused(HandshakeRefusal::ClusterMismatch { expected, got })) => {
            assert_eq!((expected, got), (ours, theirs));
        }
        other => panic!("a handshake from cluster `not-quasar` got {other:?}"),
    }
    expect_closed(&mut stream, "after refusing the handshake");
    assert_serves(&cluster, &target, "after a foreign handshake");
}
