//! A running 3-node cluster against bad input on a shard port (the attacked port is the
//! user range leader's, on its group's shard). Each case checks that the node keeps serving
//! afterwards (`assert_serves`: `/health` 200, a handshake accepted, an admin `Status`, a
//! client write read back):
//!
//! - garbage, a truncated frame, a header announcing an oversized body, a handshake from
//!   another cluster: each closes that one connection (after a `Refused` reply for the
//!   handshake);
//! - slowloris: 50 connections that never finish a handshake (silent, a handshake trickled a
//!   byte per 100 ms, a header then a body trickled) are each closed within the handshake
//!   timeout (`ConnConfig::io_timeout`, 5 s) while a client keeps writing and reading;
//! - a connection flood (2000 at once: idle, garbage, a header announcing the largest
//!   handshake or the largest frame, half a handshake, accepted and idle, accepted after a
//!   header announcing the largest request): the node's anonymous RSS grows by less than
//!   256 MiB (about 90 MiB: 16 KiB per pending handshake, 256 KiB per accepted connection),
//!   it serves meanwhile and after they close;
//! - keys, values and requests over their limits through the real client: a definite error
//!   naming the limit, nothing written, the client still usable;
//! - a flood of requests for a range that does not exist: an `UnknownRange` answer each, no
//!   crash.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, CLUSTER_NAME, USER_RANGE};
use quasar_rpc::client::BlockingClient;
use quasar_rpc::error::ClientError;
use quasar_rpc::frame::{
    decode_body, encode_frame, FrameHeader, FrameKind, HEADER_LEN, PROTOCOL_VERSION,
};
use quasar_rpc::message::{
    AdminOp, AdminReply, ClientRequest, ClientResponse, ClusterId, GroupId, Handshake,
    HandshakeRefusal, HandshakeReply, LimitKind, NodeId, Operation, Origin, RangeEpoch, RangeId,
    ReadConsistency, RequestError, RequestId, Route, Sequence, SessionId, ShardId, SizeLimits, Txn,
    TxnOp,
};
use quasar_rpc::transport::{shard_for_group, MAX_HANDSHAKE_BYTES};
use quasar_shard::range::RangeLimits;
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

/// Reads one frame from `stream` within `timeout`: its kind code and its body (refusing a
/// body over `max_body` bytes).
fn read_frame(
    stream: &mut TcpStream,
    timeout: Duration,
    max_body: u32,
) -> Result<(u16, AlignedVec<16>), String> {
    let deadline = Instant::now() + timeout;
    let mut read_exact = |buf: &mut [u8]| -> Result<(), String> {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(format!("connection closed after {filled} bytes of a frame")),
                Ok(n) => filled += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(format!("no whole frame within {timeout:?}"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading a frame: {e}")),
            }
        }
        Ok(())
    };
    let mut header = [0u8; HEADER_LEN];
    read_exact(&mut header)?;
    let header = FrameHeader::parse(&header).map_err(|e| e.to_string())?;
    if header.body_len > max_body {
        return Err(format!("a frame of {} bytes", header.body_len));
    }
    let mut body = vec![0u8; header.body_len as usize];
    read_exact(&mut body)?;
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(&body);
    Ok((header.kind_code, aligned))
}

/// Reads one frame from `stream` within `timeout` and decodes it as a handshake reply.
fn read_handshake_reply(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<HandshakeReply, String> {
    let (kind, body) = read_frame(stream, timeout, 1 << 16)?;
    if kind != FrameKind::HandshakeReply.code() {
        return Err(format!("frame kind {kind} is not a handshake reply"));
    }
    decode_body::<HandshakeReply>(&body).map_err(|e| e.to_string())
}

/// A frame header announcing `body_len` bytes of `kind` (with a body checksum of 0).
fn frame_header(kind: FrameKind, body_len: u32) -> [u8; HEADER_LEN] {
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
    let header = frame_header;

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

/// Whether the server closed `stream` (set non-blocking), without waiting: a read returns 0
/// or a reset. Bytes the server sent are added to `received`.
fn poll_closed(stream: &mut TcpStream, received: &mut usize) -> bool {
    let mut buf = [0u8; 512];
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => *received += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                return false
            }
            Err(e) => panic!("polling a slow connection: unexpected read error {e}"),
        }
    }
    false
}

/// How many slowloris connections, and how often each one sends a byte.
const SLOWLORIS_CONNS: usize = 50;
const SLOWLORIS_TICK: Duration = Duration::from_millis(100);

/// What a slowloris connection sends, one byte per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// Nothing at all.
    Silent,
    /// A correct handshake, all but its last byte.
    Handshake,
    /// A header announcing a 4 KiB handshake, then its body short of the last byte.
    Body,
}

struct Slowpoke {
    kind: Slow,
    stream: TcpStream,
    bytes: Vec<u8>,
    sent: usize,
    received: usize,
    opened: Instant,
    closed_after: Option<Duration>,
}

#[test]
fn slowloris_connections_are_closed_within_the_handshake_timeout() {
    let (cluster, target) = start();
    // The node keeps the transport's default: an accepted connection has `io_timeout` to
    // deliver its whole handshake.
    let timeout = quasar_rpc::conn::ConnConfig::default().io_timeout;
    let hello = frame_of(&handshake(ClusterId::from_name(CLUSTER_NAME), target.shard));
    let mut body = frame_header(FrameKind::Handshake, 4096).to_vec();
    body.resize(HEADER_LEN + 4095, 0);
    let scripts = [
        (Slow::Silent, Vec::new()),
        (Slow::Handshake, hello[..hello.len() - 1].to_vec()),
        (Slow::Body, body),
    ];
    let give_up = timeout + Duration::from_secs(5);

    let addr = target.addr;
    let attack = std::thread::spawn(move || {
        let mut conns: Vec<Slowpoke> = (0..SLOWLORIS_CONNS)
            .map(|i| {
                let (kind, bytes) = scripts[i % scripts.len()].clone();
                let stream = connect(addr);
                stream.set_nonblocking(true).expect("non-blocking");
                Slowpoke {
                    kind,
                    stream,
                    bytes,
                    sent: 0,
                    received: 0,
                    opened: Instant::now(),
                    closed_after: None,
                }
            })
            .collect();
        let started = Instant::now();
        while started.elapsed() < give_up && conns.iter().any(|c| c.closed_after.is_none()) {
            for c in conns.iter_mut().filter(|c| c.closed_after.is_none()) {
                if poll_closed(&mut c.stream, &mut c.received) {
                    c.closed_after = Some(c.opened.elapsed());
                    continue;
                }
                if c.sent < c.bytes.len() {
                    match c.stream.write(&c.bytes[c.sent..c.sent + 1]) {
                        Ok(n) => c.sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        // Reset or broken pipe: the node closed it.
                        Err(_) => c.closed_after = Some(c.opened.elapsed()),
                    }
                }
            }
            std::thread::sleep(SLOWLORIS_TICK);
        }
        conns
            .into_iter()
            .map(|c| (c.kind, c.sent, c.received, c.closed_after))
            .collect::<Vec<_>>()
    });

    // Meanwhile a normal client writes and reads, one request at a time.
    let mut client = cluster.client();
    let mut writes = 0usize;
    let started = Instant::now();
    while !attack.is_finished() && started.elapsed() < give_up + Duration::from_secs(5) {
        let key = format!("slowloris-{writes}").into_bytes();
        if let Err(e) = client.put(&key, b"written during the attack") {
            panic!("write {writes} during the slowloris failed: {e}");
        }
        match client.get(&key) {
            Ok(Some(got)) => assert_eq!(got.value, b"written during the attack"),
            other => panic!("reading back write {writes} during the slowloris: {other:?}"),
        }
        writes += 1;
        if writes == 10 {
            assert_serves(&cluster, &target, "during the slowloris");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let results = attack.join().expect("the slowloris thread finished");
    assert!(
        writes >= 20,
        "only {writes} writes during the slowloris ({:?})",
        started.elapsed()
    );

    let earliest = timeout.saturating_sub(Duration::from_millis(500));
    let latest = timeout + Duration::from_secs(3);
    for (i, (kind, sent, received, closed)) in results.into_iter().enumerate() {
        let closed = closed.unwrap_or_else(|| {
            panic!("slow connection {i} ({kind:?}, {sent} bytes sent) still open after {give_up:?}")
        });
        assert!(
            closed >= earliest && closed <= latest,
            "slow connection {i} ({kind:?}, {sent} bytes sent) closed after {closed:?}; the \
             handshake timeout is {timeout:?}"
        );
        assert_eq!(
            received, 0,
            "slow connection {i} ({kind:?}) got an answer to an unfinished handshake"
        );
    }
    assert_serves(&cluster, &target, "after the slowloris");
}

/// How many connections the flood opens (fewer if `RLIMIT_NOFILE` cannot make room).
const FLOOD_CONNS: usize = 2000;
/// The most the attacked node's anonymous RSS may grow while the flood holds its connections.
const FLOOD_RSS_GROWTH: u64 = 256 << 20;

/// The anonymous resident memory of process `pid` (heap and stacks: what connections cost),
/// from `RssAnon` in `/proc/PID/status`. `VmRSS` also counts file pages (the node's mapped
/// files fault in over its first seconds, hundreds of MiB), too noisy to bound.
fn rss_anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon in /proc/{pid}/status"));
    kib << 10
}

#[test]
fn connection_flood_keeps_memory_bounded() {
    // Room for the flood here and in the nodes, which inherit this process's limit.
    let nofile = rlimit::increase_nofile_limit(FLOOD_CONNS as u64 + 1024).unwrap_or(1024);
    let count = FLOOD_CONNS.min(nofile.saturating_sub(512) as usize);
    assert!(
        count >= 256,
        "RLIMIT_NOFILE of {nofile} leaves room for only {count} connections"
    );
    let (mut cluster, target) = start();
    let pid = cluster
        .node(target.node)
        .pid()
        .expect("the attacked node runs");
    let rss_before = rss_anon_bytes(pid);
    let hello = frame_of(&handshake(ClusterId::from_name(CLUSTER_NAME), target.shard));
    let garbage = b"GET / HTTP/1.1\r\nHost: quasar\r\n\r\n";
    // Headers announcing the largest handshake a listener reads, and the largest frame.
    let announce = |kind: FrameKind, body_len: u32| {
        let mut bytes = frame_header(kind, body_len).to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        bytes
    };
    let largest_handshake = announce(
        FrameKind::Handshake,
        u32::try_from(MAX_HANDSHAKE_BYTES).expect("a frame length"),
    );
    let largest_frame = announce(FrameKind::Handshake, SizeLimits::DEFAULT_MAX_FRAME_BYTES);
    let largest_request = announce(
        FrameKind::ClientRequest,
        SizeLimits::DEFAULT_MAX_FRAME_BYTES,
    );

    let started = Instant::now();
    let mut conns = Vec::with_capacity(count);
    let mut failed = Vec::new();
    let mut accepted = 0usize;
    let mut rss_peak = rss_before;
    for i in 0..count {
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
        let mut stream = match TcpStream::connect_timeout(&target.addr, Duration::from_secs(2)) {
            Ok(stream) => stream,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(2))))
            .expect("socket timeouts");
        // NOTE: a write error means the node closed that connection already: fine.
        match i % 8 {
            // Idle: connected, nothing sent.
            0..=2 => {}
            3 | 4 => {
                let _ = stream.write_all(garbage);
            }
            5 if i % 16 == 5 => {
                let _ = stream.write_all(&largest_handshake);
            }
            5 => {
                let _ = stream.write_all(&largest_frame);
            }
            6 => {
                let _ = stream.write_all(&hello[..hello.len() / 2]);
            }
            // Accepted, then idle (half of them after a header announcing the largest
            // request).
            _ => {
                stream.write_all(&hello).expect("send a handshake");
                match read_handshake_reply(&mut stream, Duration::from_secs(5)) {
                    Ok(HandshakeReply::Accepted { .. }) => accepted += 1,
                    other => panic!("handshake {i} of the flood: {other:?}"),
                }
                if i % 16 == 15 {
                    let _ = stream.write_all(&largest_request);
                }
            }
        }
        conns.push(stream);
        if i % 100 == 99 {
            rss_peak = rss_peak.max(rss_anon_bytes(pid));
        }
    }
    let opened = conns.len();
    let took = started.elapsed();
    assert!(
        opened >= count * 9 / 10,
        "only {opened} of {count} connections opened in {took:?}: {:?}",
        &failed[..failed.len().min(5)]
    );

    // The node holds them (but the garbage ones) until the handshake timeout.
    assert_serves(&cluster, &target, "during the flood");
    rss_peak = rss_peak.max(rss_anon_bytes(pid));
    eprintln!(
        "flood: {opened} connections ({accepted} accepted) in {took:?}; node RssAnon {} MiB \
         before, {} MiB at the peak",
        rss_before >> 20,
        rss_peak >> 20
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < FLOOD_RSS_GROWTH,
        "the node's RssAnon grew from {} MiB to {} MiB with {opened} connections open",
        rss_before >> 20,
        rss_peak >> 20
    );

    drop(conns);
    assert_serves(&cluster, &target, "after the flood");
    assert!(
        cluster.node_mut(target.node).is_running(),
        "the attacked node exited"
    );
}

/// Asserts that `result` failed with an error whose text names `limit`; returns the error.
fn expect_limit_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    limit: u32,
    what: &str,
) -> ClientError {
    let err = match result {
        Ok(reply) => panic!("{what} was accepted: {reply:?}"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains(&limit.to_string()),
        "{what}: the error does not name the limit {limit}: {err}"
    );
    err
}

#[test]
fn oversize_keys_values_and_requests_are_refused_naming_the_limit() {
    let (cluster, target) = start();
    let mut client = cluster.client();
    let sizes = RangeLimits::default();
    let max_key = sizes.sizes.max_key_bytes;
    let max_value = sizes.sizes.max_value_bytes;
    let max_request = sizes.max_request_bytes;
    let max_frame = SizeLimits::DEFAULT_MAX_FRAME_BYTES;
    let mut usable = 0;
    let mut still_usable = |client: &mut BlockingClient, after: &str| {
        usable += 1;
        let key = format!("usable-{usable}").into_bytes();
        if let Err(e) = client.put(&key, b"still usable") {
            panic!("the client failed a normal write after {after}: {e}");
        }
        match client.get(&key) {
            Ok(Some(got)) => assert_eq!(got.value, b"still usable", "after {after}"),
            other => panic!("after {after}: reading back a normal write: {other:?}"),
        }
    };
    let sized = |prefix: &str, len: u32| {
        let mut v = prefix.as_bytes().to_vec();
        v.resize(len as usize, b'x');
        v
    };

    // At the limits: accepted.
    client
        .put(&sized("atlimit-key-", max_key), b"v")
        .expect("a key at the limit");
    client
        .put(b"atlimit-value", &sized("", max_value))
        .expect("a value at the limit");

    // A key one byte over.
    let long_key = sized("oversize-key-", max_key + 1);
    let err = expect_limit_error(client.put(&long_key, b"v"), max_key, "a long key");
    assert!(
        matches!(
            err,
            ClientError::Failed(RequestError::TooLarge {
                what: LimitKind::Key,
                ..
            })
        ),
        "{err:?}"
    );
    expect_limit_error(client.get(&long_key), max_key, "reading a long key");
    still_usable(&mut client, "a long key");

    // A value one byte over.
    let err = expect_limit_error(
        client.put(b"oversize-value", &sized("", max_value + 1)),
        max_value,
        "a long value",
    );
    assert!(
        matches!(
            err,
            ClientError::Failed(RequestError::TooLarge {
                what: LimitKind::Value,
                ..
            })
        ),
        "{err:?}"
    );
    still_usable(&mut client, "a long value");

    // A transaction of values each within the limit, over the request (log entry) limit.
    let puts = |prefix: &str, n: u32| Txn {
        compares: Vec::new(),
        success: (0..n)
            .map(|i| TxnOp::Put {
                key: format!("{prefix}-{i}").into_bytes(),
                value: sized("", max_value - 1024),
            })
            .collect(),
        failure: Vec::new(),
    };
    let over_request = max_request / (max_value - 1024) + 1;
    let err = expect_limit_error(
        client.execute(Operation::Txn(puts("oversize-txn", over_request))),
        max_request,
        "a transaction over the request limit",
    );
    assert!(
        matches!(
            err,
            ClientError::Failed(RequestError::TooLarge {
                what: LimitKind::Frame,
                ..
            })
        ),
        "{err:?}"
    );
    still_usable(&mut client, "a transaction over the request limit");

    // A transaction over the frame limit: refused by the client before sending.
    let over_frame = max_frame / (max_value - 1024) + 1;
    let err = expect_limit_error(
        client.execute(Operation::Txn(puts("oversize-frame", over_frame))),
        max_frame,
        "a transaction over the frame limit",
    );
    assert!(matches!(err, ClientError::Encode(_)), "{err:?}");
    still_usable(&mut client, "a transaction over the frame limit");

    // Nothing of the refused requests was written.
    match client.scan(b"oversize", b"oversizf", 100, 64 << 20) {
        Ok(page) => assert!(
            page.entries.is_empty(),
            "refused writes were applied: {:?}",
            page.entries
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key[..kv.key.len().min(20)]).into_owned())
                .collect::<Vec<_>>()
        ),
        Err(e) => panic!("scanning for refused writes: {e}"),
    }
    assert_serves(&cluster, &target, "after oversize requests");
}

/// How many requests for an unknown range the flood sends, in batches written at once.
const UNKNOWN_BATCHES: u64 = 20;
const UNKNOWN_BATCH: u64 = 100;

fn unknown_range_request(id: u64) -> ClientRequest {
    let key = format!("unknown-{id}").into_bytes();
    ClientRequest {
        request_id: RequestId(id),
        session: SessionId(0x5eed_7000),
        sequence: Sequence(id),
        consistency: ReadConsistency::Linearizable,
        route: Some(Route {
            range: RangeId(0xdead_0000 + id % 7),
            epoch: RangeEpoch(1 + id % 3),
        }),
        op: match id % 3 {
            0 => Operation::Get { key },
            1 => Operation::Put {
                key,
                value: b"never".to_vec(),
            },
            _ => Operation::Delete { key },
        },
    }
}

#[test]
fn a_flood_of_requests_for_an_unknown_range_gets_errors() {
    let (mut cluster, target) = start();

    // Pipelined batches on one connection; every request gets an `UnknownRange` answer.
    let mut stream = accepted_connection(&target);
    let mut answered = std::collections::BTreeSet::new();
    for batch in 0..UNKNOWN_BATCHES {
        let mut out = AlignedVec::new();
        let ids = batch * UNKNOWN_BATCH + 1..(batch + 1) * UNKNOWN_BATCH + 1;
        for id in ids.clone() {
            encode_frame(&unknown_range_request(id), &mut out).expect("encode a request");
        }
        stream.write_all(&out).expect("send a batch");
        for _ in ids {
            let (kind, body) = read_frame(&mut stream, Duration::from_secs(5), 1 << 20)
                .unwrap_or_else(|e| panic!("batch {batch}: {e}"));
            assert_eq!(kind, FrameKind::ClientResponse.code(), "batch {batch}");
            let response = decode_body::<ClientResponse>(&body).expect("decode a response");
            match response.result {
                Err(RequestError::UnknownRange { range }) if range.0 >= 0xdead_0000 => {}
                other => panic!(
                    "request {} for an unknown range got {other:?}",
                    response.request_id.0
                ),
            }
            assert!(
                answered.insert(response.request_id.0),
                "request {} answered twice",
                response.request_id.0
            );
        }
    }
    assert_eq!(answered.len() as u64, UNKNOWN_BATCHES * UNKNOWN_BATCH);
    drop(stream);

    // The same flood without reading the answers, then the connection closes.
    let mut stream = accepted_connection(&target);
    let mut out = AlignedVec::new();
    for id in 1..=UNKNOWN_BATCHES * UNKNOWN_BATCH {
        encode_frame(&unknown_range_request(id), &mut out).expect("encode a request");
    }
    // NOTE: the node may close first if its answers pile up: fine, what matters is below.
    let _ = stream.write_all(&out);
    drop(stream);

    assert_serves(&cluster, &target, "after requests for an unknown range");
    for id in 1..=3 {
        assert!(
            cluster.node_mut(id).is_running(),
            "node {id} exited after requests for an unknown range"
        );
    }
}
