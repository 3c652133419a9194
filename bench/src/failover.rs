//! `quasar-bench failover`: how long clients cannot write when the leader of the user range
//! (range 2) is killed with SIGKILL.
//!
//! A steady, low write load (`--rate` puts/s over `--writers` threads, one `BlockingClient`
//! each, which follows leader hints and retries) runs against a `--spawn`ed cluster. Every
//! `--interval-secs` the leader of range 2 is killed with `kill -9`, restarted after
//! `--down-secs` and waited for until ready. Per kill:
//!
//! - time to new leader: from the kill until `/status` of a live node names another node as
//!   leader of range 2 (polled every 15 ms);
//! - unavailability: from the kill until the first successful write that *started* after it
//!   completed (client-observed; at most one write interval late).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use quasar_rpc::client::BlockingClient;
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};
use crate::target::{self, TargetArgs};

/// The user key space's range.
const USER_RANGE: u64 = 2;
/// How often the leader is polled after a kill.
const LEADER_POLL: Duration = Duration::from_millis(15);
/// Bound on waiting for a new leader after a kill.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a restarted node becoming ready.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Leader kills.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// Seconds of steady load before each kill (and after the last one).
    #[arg(long, default_value_t = 3.0)]
    pub interval_secs: f64,
    /// Seconds the killed node stays down before it is restarted.
    #[arg(long, default_value_t = 2.0)]
    pub down_secs: f64,
    /// Writes per second, all writers together.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Writer threads.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// One JSON line instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// One write as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Write {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// What one kill cost.
#[derive(Debug, Clone, Serialize)]
struct Kill {
    killed: u64,
    new_leader: Option<u64>,
    time_to_leader_ms: Option<f64>,
    unavailable_ms: Option<f64>,
    restart_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn secs(s: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{flag} must be >= 0, not {s}"))
}

pub fn run(args: FailoverArgs) -> anyhow::Result<()> {
    if args.target.spawn.is_none() {
        bail!(
            "failover kills and restarts nodes, which only works on nodes this program started: \
             use --spawn 3 (not --endpoints)"
        );
    }
    if args.target.spawn.is_some_and(|n| n < 3) {
        bail!("failover needs at least 3 nodes (--spawn 3) so that a majority survives a kill");
    }
    if args.rate == 0 || args.writers == 0 {
        bail!("--rate and --writers must be at least 1");
    }
    let interval = secs(args.interval_secs, "--interval-secs")?;
    let down = secs(args.down_secs, "--down-secs")?;
    let target = target::resolve(&args.target)?;
    if !args.json {
        eprintln!("failover: target {}", target.describe());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Write>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(args.writers as f64 / f64::from(args.rate));
    let clients: Vec<BlockingClient> = (0..args.writers).map(|_| target.client()).collect();
    let mut cluster = target.cluster.context("failover needs a spawned cluster")?;
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut client)| {
            let (stop, log, errors) = (stop.clone(), log.clone(), errors.clone());
            let value = vec![b'v'; args.value_size];
            std::thread::spawn(move || {
                let mut next = Instant::now() + period.mul_f64(w as f64 / 4.0);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    // No catching up after a stall: the next write is one period away.
                    next = next.max(Instant::now() - period) + period;
                    let key = format!("failover/w{w:02}/{:06}", seq % 1000).into_bytes();
                    seq += 1;
                    let start = Instant::now();
                    let result = client.put(&key, &value);
                    let end = Instant::now();
                    if let Err(e) = &result {
                        if let Ok(mut errs) = errors.lock() {
                            if errs.len() < 10 {
                                errs.push(e.to_string());
                            }
                        }
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(Write {
                            start,
                            end,
                            ok: result.is_ok(),
                        });
                    }
                }
            })
        })
        .collect();

    let mut kills = Vec::new();
    let mut kill_times = Vec::new();
    let mut failure = None;
    for _ in 0..args.kills {
        std::thread::sleep(interval);
        let Some(leader) = wait_leader(&mut cluster, None) else {
            failure = Some("range 2 has no leader".to_string());
            break;
        };
        let killed_at = Instant::now();
        cluster.kill9(leader)?;
        let new_leader = wait_leader(&mut cluster, Some(leader));
        let time_to_leader = new_leader.map(|_| killed_at.elapsed());
        let restart_at = killed_at + down;
        let now = Instant::now();
        if restart_at > now {
            std::thread::sleep(restart_at - now);
        }
        let restart_start = Instant::now();
        if let Err(e) = cluster.restart(leader, RESTART_TIMEOUT) {
            failure = Some(format!("restarting node {leader}: {e:#}"));
        }
        kill_times.push(killed_at);
        kills.push(Kill {
            killed: leader,
            new_leader,
            time_to_leader_ms: time_to_leader.map(ms),
            unavailable_ms: None,
            restart_ms: ms(restart_start.elapsed()),
        });
        if failure.is_some() {
            break;
        }
    }
    std::thread::sleep(interval);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    cluster.stop(Duration::from_secs(10));

    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    for (kill, at) in kills.iter_mut().zip(&kill_times) {
        kill.unavailable_ms = log
            .iter()
            .filter(|w| w.ok && w.start >= *at)
            .map(|w| ms(w.end - *at))
            .reduce(f64::min);
    }
    let mut unavailable = latency_histogram();
    let mut to_leader = latency_histogram();
    let mut write_latency = latency_histogram();
    for k in &kills {
        if let Some(u) = k.unavailable_ms {
            let _ = unavailable.record(((u * 1e3) as u64).clamp(1, 60_000_000));
        }
        if let Some(t) = k.time_to_leader_ms {
            let _ = to_leader.record(((t * 1e3) as u64).clamp(1, 60_000_000));
        }
    }
    for w in log.iter().filter(|w| w.ok) {
        let us = (w.end - w.start).as_micros() as u64;
        let _ = write_latency.record(us.clamp(1, 60_000_000));
    }
    let writes_ok = log.iter().filter(|w| w.ok).count();
    let writes_failed = log.len() - writes_ok;

    let mut report = Report::new("failover", &args);
    let unavailable = Percentiles::from_histogram(&unavailable);
    let to_leader = Percentiles::from_histogram(&to_leader);
    let write_latency = Percentiles::from_histogram(&write_latency);
    if args.json {
        report
            .figure("kills", &kills)
            .percentiles("unavailable_", &unavailable)
            .percentiles("time_to_leader_", &to_leader)
            .percentiles("write_", &write_latency);
    } else {
        for (i, k) in kills.iter().enumerate() {
            report.figure(
                &format!("kill {:03}", i + 1),
                format!(
                    "node {} killed; new leader {} after {}; writes back after {}; restart took {:.0} ms",
                    k.killed,
                    k.new_leader.map_or("none".into(), |n| format!("node {n}")),
                    k.time_to_leader_ms
                        .map_or("(timeout)".into(), |t| format!("{t:.0} ms")),
                    k.unavailable_ms
                        .map_or("(never)".into(), |t| format!("{t:.0} ms")),
                    k.restart_ms
                ),
            );
        }
        report
            .figure("unavailable", human_ms(&unavailable))
            .figure("time to new leader", human_ms(&to_leader))
            .figure("write latency", write_latency.human());
    }
    report
        .figure("writes_ok", writes_ok)
        .figure("writes_failed", writes_failed)
        .figure(
            "errors",
            errors.lock().map(|e| e.clone()).unwrap_or_default(),
        );
    report.print(args.json);
    if let Some(f) = failure {
        bail!("failover stopped early: {f}");
    }
    Ok(())
}

/// `p50 .. p99 .. max` in milliseconds.
fn human_ms(p: &Percentiles) -> String {
    format!(
        "p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} kills)",
        p.p50_us as f64 / 1e3,
        p.p99_us as f64 / 1e3,
        p.max_us as f64 / 1e3,
        p.samples
    )
}

/// Polls until range 2 has a leader other than `not` (bounded by `LEADER_TIMEOUT`).
fn wait_leader(
    cluster: &mut quasar_node::local_cluster::LocalCluster,
    not: Option<u64>,
) -> Option<u64> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match cluster.leader_of(USER_RANGE) {
            Some(l) if Some(l) != not => return Some(l),
            _ => {}
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(LEADER_POLL);
    }
}
