//! `quasar-bench rpc` (issue #4): the transport between two glommio executors (two threads)
//! over loopback TCP.
//!
//! - `stream`: Raft append frames (64 entries x 128 B by default) through `Transport` (encode
//!   with rkyv, CRC32C, decode, bytecheck in place on the receiver): MB/s and frames/s
//!   measured at the receiver.
//! - `stream-small`: many small Raft messages (append responses) batched per frame: msgs/s.
//! - `pingpong`: round trips of a small Raft frame (one heartbeat out, one heartbeat
//!   response back) through `Conn` and the codec, the server answering from its transport
//!   handler; then, in the same invocation and with identical executor settings,
//!   `bare-pingpong` with the same byte counts; rounds alternate and the p50 ratio is printed.
//! - `bare-pingpong`: plain glommio `TcpStream` write/read of the same sizes.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use quasar_rpc::conn::{AlignedVec, Conn, Delivery, InFrame, RecvBuffer};
use quasar_rpc::frame::{access_body, encode_frame, FrameError};
use quasar_rpc::message::{
    Append, AppendResponse, ClusterId, Entry, EntryKind, GroupId, Handshake, Heartbeat,
    HeartbeatResponse, LogId, LogIndex, NodeId, RaftBatch, RaftBody, RaftMessage, ShardId, Term,
};
use quasar_rpc::transport::{
    handshake, Destination, FrameHandler, PeerInfo, Transport, TransportConfig,
};
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Stream,
    StreamSmall,
    Pingpong,
    BarePingpong,
}

/// Frame streaming and ping-pong over loopback TCP.
#[derive(Args, Debug, Clone, Serialize)]
pub struct RpcArgs {
    #[arg(long, value_enum, default_value = "stream")]
    pub mode: Mode,
    /// Seconds of measurement (per round in ping-pong modes).
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Entries per append frame (stream).
    #[arg(long, default_value_t = 64)]
    pub entries: usize,
    /// Payload bytes per entry (stream).
    #[arg(long, default_value_t = 128)]
    pub entry_bytes: usize,
    /// Small Raft messages per frame (stream-small).
    #[arg(long, default_value_t = 1024)]
    pub msgs_per_frame: usize,
    /// Frames queued per event-loop turn before one flush (stream modes).
    #[arg(long, default_value_t = 16)]
    pub frames_per_turn: usize,
    /// Alternating rounds of ours/bare (ping-pong modes).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// `spin_before_park` of both executors, in microseconds (0: park at once).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Pin the two executors to CPUs 0 and 1 instead of letting them float.
    #[arg(long)]
    pub pin: bool,
}

const CLUSTER: ClusterId = ClusterId(0x0b_e7c4);
const SERVER: Destination = Destination {
    node: NodeId(2),
    shard: ShardId(0),
};

fn executor(args: &RpcArgs, cpu: usize, name: &str) -> LocalExecutorBuilder {
    let placement = if args.pin {
        Placement::Fixed(cpu)
    } else {
        Placement::Unbound
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(512 << 10)
        .preempt_timer(Duration::from_millis(2))
        .spin_before_park(Duration::from_micros(args.spin_us))
}

fn transport_config(node: u64) -> TransportConfig {
    let mut c = TransportConfig::new(CLUSTER, NodeId(node), ShardId(0));
    c.conn.recv_buf_bytes = 1 << 20;
    c.conn.queue_limit_bytes = 32 << 20;
    c
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn run(args: RpcArgs) -> anyhow::Result<()> {
    let mut report = Report::new("rpc", &args);
    match args.mode {
        Mode::Stream | Mode::StreamSmall => stream(&args, &mut report)?,
        Mode::Pingpong | Mode::BarePingpong => pingpong(&args, &mut report)?,
    }
    report.print(args.json);
    Ok(())
}

// ---------------------------------------------------------------- streaming

#[derive(Debug, Default, Clone, Copy)]
struct Received {
    frames: u64,
    frame_bytes: u64,
    messages: u64,
    entry_bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

struct Counter {
    got: Cell<Received>,
}

impl FrameHandler for Counter {
    fn on_frame(&self, _: &PeerInfo, frame: InFrame<'_>, _: &Rc<Conn>) -> Result<(), FrameError> {
        // Validated by bytecheck and read in place, as the shard runtime does.
        let batch = access_body::<RaftBatch>(frame.body)?;
        let mut entry_bytes = 0;
        for m in batch.messages.iter() {
            if let quasar_rpc::message::ArchivedRaftBody::Append(a) = &m.body {
                entry_bytes += a
                    .entries
                    .iter()
                    .map(|e| e.payload.len() as u64)
                    .sum::<u64>();
            }
        }
        let now = Instant::now();
        let mut g = self.got.get();
        g.frames += 1;
        g.frame_bytes += (frame.body.len() + quasar_rpc::frame::HEADER_LEN) as u64;
        g.messages += batch.message_count() as u64;
        g.entry_bytes += entry_bytes;
        g.first.get_or_insert(now);
        g.last = Some(now);
        self.got.set(g);
        Ok(())
    }
}

fn stream_batch(args: &RpcArgs) -> RaftBatch {
    let mut batch = RaftBatch {
        from: NodeId(1),
        to: SERVER.node,
        to_shard: SERVER.shard,
        ..RaftBatch::default()
    };
    if args.mode == Mode::Stream {
        batch.messages.push(RaftMessage {
            group: GroupId(1),
            term: Term(5),
            body: RaftBody::Append(Append {
                prev: LogId {
                    term: Term(5),
                    index: LogIndex(1000),
                },
                entries: (0..args.entries)
                    .map(|i| Entry {
                        term: Term(5),
                        kind: EntryKind::Normal,
                        payload: vec![i as u8; args.entry_bytes],
                    })
                    .collect(),
                commit: LogIndex(990),
            }),
        });
    } else {
        batch.messages = (0..args.msgs_per_frame as u64)
            .map(|g| RaftMessage {
                group: GroupId(g),
                term: Term(5),
                body: RaftBody::AppendResponse(AppendResponse::Accepted {
                    last_index: LogIndex(1000 + g),
                }),
            })
            .collect();
    }
    batch
}

fn stream(args: &RpcArgs, report: &mut Report) -> anyhow::Result<()> {
    // Frames the sender queued, published once it has finished (u64::MAX: still sending).
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let (addr_tx, addr_rx) = mpsc::channel();
    let expected_rx = expected.clone();
    let receiver = executor(args, 0, "rpc-recv")
        .spawn(move || async move {
            let counter = Rc::new(Counter {
                got: Cell::new(Received::default()),
            });
            let t = Transport::new(transport_config(2), counter.clone());
            let addr = t.listen(loopback());
            // NOTE: the sender side reports a failed send as a closed channel.
            let _ = addr_tx.send(addr.map_err(|e| e.to_string()));
            // Until every queued frame arrived (or 30 s after the sender finished).
            let mut give_up = None;
            loop {
                let want = expected_rx.load(Ordering::Acquire);
                if want != u64::MAX {
                    if counter.got.get().frames >= want {
                        break;
                    }
                    let limit = *give_up.get_or_insert(Instant::now() + Duration::from_secs(30));
                    if Instant::now() > limit {
                        break;
                    }
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            t.stop();
            counter.got.get()
        })
        .map_err(glommio_error)?;
    let addr = addr_rx
        .recv()?
        .map_err(|e| anyhow::anyhow!("receiver: {e}"))?;
    let batch = stream_batch(args);
    let duration = Duration::from_secs(args.duration_secs);
    let per_turn = args.frames_per_turn.max(1);
    let sender = executor(args, 1, "rpc-send")
        .spawn(move || async move {
            let t = Transport::new(
                transport_config(1),
                Rc::new(Counter {
                    got: Cell::default(),
                }),
            );
            t.add_peer(SERVER, addr);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_connected(SERVER) {
                if Instant::now() > deadline {
                    return Err("no connection to the receiver within 5 s".to_string());
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let conn = t.peer_conn(SERVER).ok_or("connection lost")?;
            let (mut sent, mut dropped) = (0u64, 0u64);
            let end = Instant::now() + duration;
            while Instant::now() < end {
                for _ in 0..per_turn {
                    match t.send_raft(SERVER, &batch).map_err(|e| e.to_string())? {
                        quasar_rpc::conn::Pushed::Queued => sent += 1,
                        quasar_rpc::conn::Pushed::Dropped => dropped += 1,
                    }
                }
                // One write per turn, from this task; waits while the socket is full.
                conn.flush().await.map_err(|e| e.to_string())?;
            }
            t.stop();
            Ok((sent, dropped))
        })
        .map_err(glommio_error)?;
    let sent = sender.join();
    let queued = match &sent {
        Ok(Ok((queued, _))) => *queued,
        _ => 0,
    };
    expected.store(queued, Ordering::Release);
    let got = receiver.join().map_err(glommio_error)?;
    let (sent, dropped) = sent
        .map_err(glommio_error)?
        .map_err(|e| anyhow::anyhow!("sender: {e}"))?;
    let secs = match (got.first, got.last) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => anyhow::bail!("the receiver got fewer than two frames"),
    };
    report
        .figure("frames_sent", sent)
        .figure("frames_dropped_by_sender", dropped)
        .figure("frames_received", got.frames)
        .figure("seconds", round(secs, 3))
        .figure("frame_bytes", got.frame_bytes / got.frames.max(1))
        .figure("frames_per_sec", round(got.frames as f64 / secs, 0))
        .figure("mb_per_sec", round(got.frame_bytes as f64 / secs / 1e6, 1))
        .figure("msgs_per_sec", round(got.messages as f64 / secs, 0));
    if args.mode == Mode::Stream {
        report.figure(
            "entry_payload_mb_per_sec",
            round(got.entry_bytes as f64 / secs / 1e6, 1),
        );
    }
    Ok(())
}

fn glommio_error(e: glommio::GlommioError<()>) -> anyhow::Error {
    anyhow::anyhow!("executor: {e}")
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---------------------------------------------------------------- ping-pong

fn ping_batch() -> RaftBatch {
    RaftBatch {
        from: NodeId(1),
        to: SERVER.node,
        to_shard: SERVER.shard,
        heartbeats: vec![Heartbeat {
            group: GroupId(7),
            term: Term(5),
            commit: LogIndex(1000),
            seq: 1,
            tick: 1,
        }],
        ..RaftBatch::default()
    }
}

fn pong_batch() -> RaftBatch {
    RaftBatch {
        from: SERVER.node,
        to: NodeId(1),
        to_shard: ShardId(0),
        heartbeat_responses: vec![HeartbeatResponse {
            group: GroupId(7),
            term: Term(5),
            seq: 1,
            tick: 1,
        }],
        ..RaftBatch::default()
    }
}

fn frame_len(batch: &RaftBatch) -> anyhow::Result<usize> {
    let mut out = AlignedVec::new();
    encode_frame(batch, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out.len())
}

/// Answers every ping frame with a pong from the receive loop (flushed by that same task).
struct Ponger {
    pong: RaftBatch,
}

impl FrameHandler for Ponger {
    fn on_frame(
        &self,
        _: &PeerInfo,
        frame: InFrame<'_>,
        conn: &Rc<Conn>,
    ) -> Result<(), FrameError> {
        let ping = access_body::<RaftBatch>(frame.body)?;
        if ping.heartbeats.len() != 1 {
            return Err(FrameError::InvalidArchive {
                kind: quasar_rpc::frame::FrameKind::RaftBatch,
                reason: "ping without its heartbeat".into(),
            });
        }
        conn.push(Delivery::Reliable, &self.pong)
            .map_err(|e| FrameError::InvalidArchive {
                kind: quasar_rpc::frame::FrameKind::RaftBatch,
                reason: e.to_string(),
            })?;
        Ok(())
    }
}

/// One timed round: returns the histogram (us) and the sum of round trips in ns.
type Round = (Histogram<u64>, u128);

fn pingpong(args: &RpcArgs, report: &mut Report) -> anyhow::Result<()> {
    let ping_len = frame_len(&ping_batch())?;
    let pong_len = frame_len(&pong_batch())?;
    let duration = Duration::from_secs(args.duration_secs);
    let with_ours = args.mode == Mode::Pingpong;
    let mut ours = latency_histogram();
    let mut bare = latency_histogram();
    let (mut ours_ns, mut bare_ns) = (0u128, 0u128);
    let mut rounds = Vec::new();
    for round_no in 0..args.rounds.max(1) {
        let mut line = serde_json::Map::new();
        if with_ours {
            let (h, ns) = ours_round(args, duration)?;
            line.insert("ours_p50_us".into(), h.value_at_quantile(0.5).into());
            ours.add(&h)?;
            ours_ns += ns;
        }
        let (h, ns) = bare_round(args, duration, ping_len, pong_len)?;
        line.insert("bare_p50_us".into(), h.value_at_quantile(0.5).into());
        bare.add(&h)?;
        bare_ns += ns;
        line.insert("round".into(), round_no.into());
        rounds.push(serde_json::Value::Object(line));
    }
    report
        .figure("ping_frame_bytes", ping_len)
        .figure("pong_frame_bytes", pong_len)
        .figure("rounds", rounds);
    let bare_p = Percentiles::from_histogram(&bare);
    let bare_mean_ns = bare_ns as f64 / bare.len().max(1) as f64;
    report
        .percentiles("bare_", &bare_p)
        .figure("bare_mean_ns", round(bare_mean_ns, 0))
        .figure(
            "bare_round_trips_per_sec",
            round(
                bare.len() as f64 / (duration.as_secs_f64() * args.rounds.max(1) as f64),
                0,
            ),
        );
    if with_ours {
        let p = Percentiles::from_histogram(&ours);
        let mean_ns = ours_ns as f64 / ours.len().max(1) as f64;
        report
            .figure("latency", p.human())
            .percentiles("", &p)
            .figure("mean_ns", round(mean_ns, 0))
            .figure(
                "p50_ratio_to_bare",
                round(p.p50_us as f64 / bare_p.p50_us.max(1) as f64, 3),
            )
            .figure(
                "mean_ratio_to_bare",
                round(mean_ns / bare_mean_ns.max(1.0), 3),
            );
    }
    Ok(())
}

fn ours_round(args: &RpcArgs, duration: Duration) -> anyhow::Result<Round> {
    let done = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let done_rx = done.clone();
    let server = executor(args, 0, "pong")
        .spawn(move || async move {
            let t = Transport::new(transport_config(2), Rc::new(Ponger { pong: pong_batch() }));
            // NOTE: a failed send shows up as a closed channel on the client side.
            let _ = addr_tx.send(t.listen(loopback()).map_err(|e| e.to_string()));
            while !done_rx.load(Ordering::Acquire) {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            t.stop();
        })
        .map_err(glommio_error)?;
    let addr = addr_rx
        .recv()?
        .map_err(|e| anyhow::anyhow!("server: {e}"))?;
    let client = executor(args, 1, "ping")
        .spawn(move || async move {
            let config = transport_config(1);
            let conn = Conn::connect(addr, config.conn.clone())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = RecvBuffer::new(&config.conn);
            let hello = Handshake::from_node(CLUSTER, NodeId(1), ShardId(0), SERVER.shard);
            handshake(&conn, &mut buf, &hello, |_| Ok(()))
                .await
                .map_err(|e| e.to_string())?;
            let ping = ping_batch();
            let mut hist = latency_histogram();
            let mut total_ns = 0u128;
            let warmup_end = Instant::now() + Duration::from_millis(300);
            let end = warmup_end + duration;
            loop {
                let start = Instant::now();
                // At least one measured round trip, even when a loaded machine stalled
                // the warm-up past the end.
                if start >= end && !hist.is_empty() {
                    break;
                }
                conn.push(Delivery::Reliable, &ping)
                    .map_err(|e| e.to_string())?;
                conn.flush().await.map_err(|e| e.to_string())?;
                let ok = conn
                    .read_frame(&mut buf, |f| {
                        access_body::<RaftBatch>(f.body)
                            .map(|b| b.heartbeat_responses.len() == 1)
                            .unwrap_or(false)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                if !ok {
                    return Err("bad pong".to_string());
                }
                let rtt = start.elapsed();
                if start >= warmup_end {
                    total_ns += rtt.as_nanos();
                    // NOTE: values beyond the histogram's 60 s bound cannot occur here.
                    let _ = hist.record((rtt.as_nanos() as u64).div_ceil(1000));
                }
            }
            conn.close();
            Ok((hist, total_ns))
        })
        .map_err(glommio_error)?;
    let result = client.join();
    done.store(true, Ordering::Release);
    server.join().map_err(glommio_error)?;
    result
        .map_err(glommio_error)?
        .map_err(|e| anyhow::anyhow!("client: {e}"))
}

/// A timer that fires every 50 ms on this executor for as long as it runs, as a shard has:
/// a completion that failed to wake the parked executor (once an fdatasync's left the WAL
/// bench asleep in `io_uring_enter` for 15 minutes; once the bare ping-pong waited out its
/// socket's 10 s timeout and failed CI with `bare client: Operation timed out`) then costs
/// at most one tick.
pub(crate) fn watchdog_tick() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    })
    .detach();
}

fn bare_round(
    args: &RpcArgs,
    duration: Duration,
    ping_len: usize,
    pong_len: usize,
) -> anyhow::Result<Round> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = executor(args, 0, "bare-pong")
        .spawn(move || async move {
            watchdog_tick();
            let listener = TcpListener::bind(loopback()).map_err(|e| e.to_string())?;
            // NOTE: a failed send shows up as a closed channel on the client side.
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
            let mut s = listener.accept().await.map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut inb = vec![0u8; ping_len];
            let out = vec![7u8; pong_len];
            loop {
                if s.read_exact(&mut inb).await.is_err() {
                    return Ok::<(), String>(());
                }
                s.write_all(&out).await.map_err(|e| e.to_string())?;
            }
        })
        .map_err(glommio_error)?;
    let addr = addr_rx
        .recv()?
        .map_err(|e| anyhow::anyhow!("bare server: {e}"))?;
    let client = executor(args, 1, "bare-ping")
        .spawn(move || async move {
            watchdog_tick();
            let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let out = vec![9u8; ping_len];
            let mut inb = vec![0u8; pong_len];
            let mut hist = latency_histogram();
            let mut total_ns = 0u128;
            let warmup_end = Instant::now() + Duration::from_millis(300);
            let end = warmup_end + duration;
            loop {
                let start = Instant::now();
                // At least one measured round trip, even when a loaded machine stalled
                // the warm-up past the end.
                if start >= end && !hist.is_empty() {
                    break;
                }
                s.write_all(&out).await.map_err(|e| e.to_string())?;
                s.read_exact(&mut inb).await.map_err(|e| e.to_string())?;
                let rtt = start.elapsed();
                if start >= warmup_end {
                    total_ns += rtt.as_nanos();
                    // NOTE: values beyond the histogram's 60 s bound cannot occur here.
                    let _ = hist.record((rtt.as_nanos() as u64).div_ceil(1000));
                }
            }
            Ok::<Round, String>((hist, total_ns))
        })
        .map_err(glommio_error)?;
    let result = client.join();
    server
        .join()
        .map_err(glommio_error)?
        .map_err(|e| anyhow::anyhow!("bare server: {e}"))?;
    result
        .map_err(glommio_error)?
        .map_err(|e| anyhow::anyhow!("bare client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mode at smoke size, so none can rot; figures are checked for presence, never
    /// for speed.
    #[test]
    fn every_mode_runs_at_smoke_size() {
        for mode in [Mode::Stream, Mode::StreamSmall, Mode::Pingpong] {
            let args = RpcArgs {
                mode,
                duration_secs: 1,
                json: true,
                entries: 8,
                entry_bytes: 64,
                msgs_per_frame: 64,
                frames_per_turn: 4,
                rounds: 1,
                spin_us: 0,
                pin: false,
            };
            let mut report = Report::new("rpc", &args);
            match mode {
                Mode::Stream | Mode::StreamSmall => stream(&args, &mut report).unwrap(),
                Mode::Pingpong | Mode::BarePingpong => pingpong(&args, &mut report).unwrap(),
            }
            let figure = |name: &str| report.figures.get(name).and_then(|v| v.as_f64());
            if mode == Mode::Pingpong {
                assert!(figure("samples").is_some_and(|s| s > 0.0), "{mode:?}");
                assert!(figure("bare_samples").is_some_and(|s| s > 0.0), "{mode:?}");
                assert!(figure("p50_ratio_to_bare").is_some(), "{mode:?}");
            } else {
                assert!(
                    figure("frames_received").is_some_and(|f| f >= 2.0),
                    "{mode:?}"
                );
                assert_eq!(figure("frames_received"), figure("frames_sent"), "{mode:?}");
            }
        }
    }
}
