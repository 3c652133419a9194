//! `quasar-bench kv` (issue #7): the cluster load generator.
//!
//! Target: `--endpoints HOST:PORT,...` (shard-0 addresses of running nodes; node ids and the
//! shard count are discovered with `AdminOp::ListMembers`/`Status`), or `--spawn N` (an
//! N-node `LocalCluster` of the `quasar` binary in a temporary directory, stopped after the
//! run).
//!
//! Load: closed loop (`--concurrency C` workers, each one request at a time) or open loop
//! (`--rate OPS`: requests scheduled at fixed intervals over `--concurrency` workers, each
//! owning every C-th slot of the schedule). In the open loop the latency is measured from the
//! *intended* send time, so a stall shows as latency of every request it delayed (no
//! coordinated omission).
//!
//! Clients (`--client`): `async` (default) runs the workers as tasks on `--client-threads`
//! glommio executors, `--workers-per-session` of them sharing one `AsyncClient` (a session
//! and one connection per node shard), so that what the workers of a session send in one
//! turn leaves in one `send` and is read by the node in one `recv`, as from an application
//! server that multiplexes its users; `blocking` gives every worker a `BlockingClient` on a
//! thread of its own (a connection each, one request per syscall).
//!
//! Ranges: `--ranges N` (default 1: the range as it is) splits the bench's key space into N
//! ranges at evenly spaced bench keys before the preload, then spreads their leaders
//! round-robin over the nodes with TransferLeader (`ranges::presplit`; needs range split on
//! the server, issue #6). `ranges` is in the JSON configuration.
//!
//! Output: a summary (throughput, errors by kind, p50/p90/p99/p99.9/max of successful
//! requests), or one JSON line (`--json`); an interval HdrHistogram log (`--hdr-log`, merged
//! across clients by `quasar-bench merge`); an SVG plot (`--plot`). A progress line goes to
//! stderr once a second.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use quasar_rpc::client::{AsyncClient, BlockingClient, ClientConfig};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{
    Expected, KeyVersion, Operation, ReadConsistency, Reply, ScanRequest, SessionId,
};
use quasar_shard::range::OUTCOMES_PER_SESSION;
use serde::Serialize;

use crate::cpu::{CpuProbe, CpuUse};
use crate::plot::{self, IntervalPoint};
use crate::report::{latency_histogram, Percentiles, Report};
use crate::target::TargetArgs;
use crate::workload::{key_name, Distribution, KeySpace, OpKind, Workload};

/// How reads are served.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Linearizable at the leader; the node serves under its lease when valid, else by ReadIndex.
    Lease,
    /// Linearizable at the leader (same request as `lease`: the node picks lease or ReadIndex).
    Readindex,
    /// A follower after a ReadIndex round to the leader.
    Follower,
    /// Any replica whose data is at most 1 s old.
    Stale,
}

impl ReadMode {
    fn consistency(self) -> ReadConsistency {
        match self {
            ReadMode::Lease | ReadMode::Readindex => ReadConsistency::Linearizable,
            ReadMode::Follower => ReadConsistency::Follower,
            ReadMode::Stale => ReadConsistency::Stale {
                max_staleness_ms: 1000,
            },
        }
    }
}

/// Which client library drives the load.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// `AsyncClient` on glommio executors (`--client-threads`): the workers of a session
    /// share its connections, so the requests of one turn leave in one send and their
    /// answers come back in one read, as from an application server with many users.
    Async,
    /// One `BlockingClient` per worker on its own thread: one connection, one request per
    /// `write` and one reply per `read` per worker.
    Blocking,
}

/// Load a cluster with key-value requests and report throughput and latency.
#[derive(Args, Debug, Clone, Serialize)]
pub struct KvArgs {
    /// Where the load goes (`--endpoints` or `--spawn N`).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Operation mix.
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// Fraction of reads in the `mixed` workload (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// How reads are served. `lease` and `readindex` both send linearizable reads: the node
    /// serves them under its leader lease when the lease is valid, by ReadIndex otherwise.
    #[arg(long, value_enum, default_value = "lease")]
    pub read_mode: ReadMode,
    /// Key choice (default: uniform for write/read/mixed, latest for ycsb-d, zipfian for
    /// the other YCSB presets).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Put before every key name (`PREFIX000000000042`): clients on several machines with
    /// different prefixes load disjoint keys. Must not start with byte 0x00 (the reserved
    /// meta range).
    #[arg(long, default_value = "user", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Keys in the key space (written by the preload).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// Split the key space into N ranges at evenly spaced keys before the run, their
    /// leaders spread round-robin over the nodes (1: leave the ranges as they are).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ranges: u64,
    /// Most keys one scan returns (ycsb-e picks 1 to this many).
    #[arg(long, default_value_t = 10)]
    pub scan_length: u32,
    /// Closed loop: clients, each with one request in flight. Open loop: worker threads
    /// sharing the schedule.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The client library: `async` (pipelined sessions on `--client-threads` executors) or
    /// `blocking` (a thread and a connection per worker).
    #[arg(long, value_enum, default_value = "async")]
    pub client: ClientKind,
    /// `--client async`: workers sharing one session (and its connection to each node
    /// shard). At most 64, the writes a range remembers per session for exactly-once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub workers_per_session: usize,
    /// `--client async`: executor threads the workers are spread over.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub client_threads: usize,
    /// Open loop: requests per second in total, scheduled at fixed intervals; latency counts
    /// from the intended send time. Without it: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of load before the measurement (not recorded).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Write every key once before the run (default: on for workloads that read).
    #[arg(long, action = clap::ArgAction::Set)]
    pub preload: Option<bool>,
    /// Bound on one request attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Write an interval HdrHistogram log (one histogram per second, V2 deflate) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Render latency percentiles and throughput over time to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// The tag of the interval histograms holding the latencies of failed requests.
pub const ERRORS_TAG: &str = "errors";
/// The tag prefix of the interval histograms of one operation kind (`op.read`, ...): the
/// successful requests of that kind, also counted in the untagged histogram.
pub const KIND_TAG_PREFIX: &str = "op.";

/// What one worker recorded since the last collection.
struct Slot {
    ok: Histogram<u64>,
    failed: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    /// Latencies of successful requests per operation kind.
    by_kind: BTreeMap<&'static str, Histogram<u64>>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            ok: latency_histogram(),
            failed: latency_histogram(),
            errors: BTreeMap::new(),
            by_kind: BTreeMap::new(),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    slots: Vec<Mutex<Slot>>,
    keys: KeySpace,
    /// Open loop: slots of the schedule that started late by more than a millisecond.
    late: AtomicU64,
}

/// The whole run's figures (also what `merge` computes from logs).
pub struct Totals {
    pub ok: Histogram<u64>,
    pub failed: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Latencies of successful requests per operation kind (`read`, `update`, ...).
    pub by_kind: BTreeMap<String, Histogram<u64>>,
    pub secs: f64,
}

impl Totals {
    pub fn new() -> Totals {
        Totals {
            ok: latency_histogram(),
            failed: latency_histogram(),
            errors: BTreeMap::new(),
            by_kind: BTreeMap::new(),
            secs: 0.0,
        }
    }

    /// Adds the figures every summary holds to `report`.
    pub fn fill(&self, report: &mut Report) {
        let p = Percentiles::from_histogram(&self.ok);
        let secs = self.secs.max(1e-9);
        report
            .figure("ops", self.ok.len())
            .figure("ops_per_sec", round1(self.ok.len() as f64 / secs))
            .figure("errors", self.failed.len())
            .figure("errors_by_kind", &self.errors)
            .figure("measured_secs", round1(self.secs))
            .percentiles("", &p);
        if !self.by_kind.is_empty() {
            let ops: BTreeMap<&str, u64> = self
                .by_kind
                .iter()
                .map(|(k, h)| (k.as_str(), h.len()))
                .collect();
            report.figure("ops_by_kind", ops);
            let by_kind: BTreeMap<&str, Percentiles> = self
                .by_kind
                .iter()
                .map(|(k, h)| (k.as_str(), Percentiles::from_histogram(h)))
                .collect();
            report.figure("latency_by_kind", by_kind);
        }
    }

    /// The human lines after the report.
    pub fn human(&self) -> String {
        let p = Percentiles::from_histogram(&self.ok);
        let secs = self.secs.max(1e-9);
        let mut out = format!(
            "throughput {:.1} ops/s ({} ok in {:.1} s)\nlatency    {}\nerrors     {}",
            self.ok.len() as f64 / secs,
            self.ok.len(),
            self.secs,
            p.human(),
            self.failed.len()
        );
        for (kind, n) in &self.errors {
            out.push_str(&format!("\n  {kind:<20} {n}"));
        }
        if self.by_kind.len() > 1 {
            for (kind, h) in &self.by_kind {
                let p = Percentiles::from_histogram(h);
                out.push_str(&format!("\n{kind:<10} {}", p.human()));
            }
        }
        out
    }
}

impl Default for Totals {
    fn default() -> Self {
        Totals::new()
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn validate(args: &KvArgs) -> anyhow::Result<()> {
    if args.key_prefix.is_empty() || args.key_prefix.starts_with('\0') {
        bail!("--key-prefix must be non-empty and not start with byte 0x00 (the meta range)");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!(
            "--read-ratio {} is out of range: pass a fraction from 0 to 1",
            args.read_ratio
        );
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate {rate} must be a positive number of requests per second");
        }
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    if args.ranges == 0 || args.ranges > args.keys {
        bail!(
            "--ranges {} must be from 1 to --keys ({})",
            args.ranges,
            args.keys
        );
    }
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    if args.scan_length == 0 {
        bail!("--scan-length must be at least 1");
    }
    if args.request_timeout_ms == 0 {
        bail!("--request-timeout-ms must be at least 1");
    }
    if args.workers_per_session == 0 || args.workers_per_session > OUTCOMES_PER_SESSION {
        bail!(
            "--workers-per-session {} must be from 1 to {OUTCOMES_PER_SESSION} (the writes a \
             range remembers per session: more in flight could make a retried write ambiguous)",
            args.workers_per_session
        );
    }
    if args.client_threads == 0 || args.client_threads > 256 {
        bail!(
            "--client-threads {} must be from 1 to 256",
            args.client_threads
        );
    }
    Ok(())
}

/// One clear word per kind of failure.
fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Failed(re) => {
            let debug = format!("{re:?}");
            debug
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect()
        }
        ClientError::Ambiguous { .. } => "Ambiguous".into(),
        ClientError::Unavailable { .. } => "Unavailable".into(),
        ClientError::Encode(_) => "Encode".into(),
        ClientError::Protocol { .. } => "Protocol".into(),
        ClientError::NoNodes => "NoNodes".into(),
    }
}

/// What one operation of the workload sends.
enum Step {
    /// One request; its reply is checked against the operation.
    One(Operation),
    /// Read the key, then compare-and-set it at the version read.
    ReadModifyWrite(Vec<u8>),
}

/// Draws the operations of one worker.
struct Ops {
    rng: fastrand::Rng,
    value: Vec<u8>,
    scan_length: u32,
    prefix: String,
}

impl Ops {
    fn new(args: &KvArgs) -> Ops {
        let mut value = vec![0u8; args.value_bytes];
        fastrand::fill(&mut value);
        Ops {
            rng: fastrand::Rng::new(),
            value,
            scan_length: args.scan_length,
            prefix: args.key_prefix.clone(),
        }
    }

    fn step(&mut self, kind: OpKind, keys: &KeySpace) -> Step {
        let key = match kind {
            OpKind::Insert => key_name(&self.prefix, keys.insert()),
            _ => key_name(&self.prefix, keys.choose(&mut self.rng)),
        };
        Step::One(match kind {
            OpKind::Read => Operation::Get { key },
            OpKind::Update | OpKind::Insert => Operation::Put {
                key,
                value: self.value.clone(),
            },
            OpKind::Scan => Operation::Scan(ScanRequest {
                start: key,
                end: Vec::new(),
                max_count: self.rng.u32(1..=self.scan_length),
                max_bytes: 1 << 20,
            }),
            OpKind::ReadModifyWrite => return Step::ReadModifyWrite(key),
        })
    }

    /// The compare-and-set of a read-modify-write, given the read's reply.
    fn set_at_read_version(&self, key: Vec<u8>, read: Reply) -> Result<Operation, ClientError> {
        let version = match read {
            Reply::Get(v) => v.map_or(KeyVersion::ABSENT, |v| v.version),
            other => return Err(unexpected("get", &other)),
        };
        Ok(Operation::CompareAndSet {
            key,
            expected: Expected::Version(version),
            value: self.value.clone(),
        })
    }
}

fn unexpected(what: &str, reply: &Reply) -> ClientError {
    ClientError::Protocol {
        reason: format!("{what} answered {reply:?}"),
    }
}

/// Checks that `reply` is what an operation of `kind` gets when it succeeds.
fn expect_reply(kind: OpKind, reply: &Reply) -> Result<(), ClientError> {
    let ok = match kind {
        OpKind::Read => matches!(reply, Reply::Get(_)),
        OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite => {
            matches!(reply, Reply::Written { .. })
        }
        OpKind::Scan => matches!(reply, Reply::Scan(_)),
    };
    if ok {
        Ok(())
    } else {
        Err(unexpected(kind.name(), reply))
    }
}

/// A worker of `--client blocking`: a client of its own on its own thread.
struct Worker {
    client: BlockingClient,
    ops: Ops,
}

impl Worker {
    fn run_op(&mut self, kind: OpKind, keys: &KeySpace) -> Result<(), ClientError> {
        let op = match self.ops.step(kind, keys) {
            Step::One(op) => op,
            Step::ReadModifyWrite(key) => {
                let read = self.client.execute(Operation::Get { key: key.clone() })?;
                self.ops.set_at_read_version(key, read)?
            }
        };
        expect_reply(kind, &self.client.execute(op)?)
    }
}

/// A worker of `--client async`: a task sharing its session's client with other workers.
struct AsyncWorker {
    client: AsyncClient,
    ops: Ops,
}

impl AsyncWorker {
    async fn run_op(&mut self, kind: OpKind, keys: &KeySpace) -> Result<(), ClientError> {
        let op = match self.ops.step(kind, keys) {
            Step::One(op) => op,
            Step::ReadModifyWrite(key) => {
                let read = self
                    .client
                    .execute(Operation::Get { key: key.clone() })
                    .await?;
                self.ops.set_at_read_version(key, read)?
            }
        };
        expect_reply(kind, &self.client.execute(op).await?)
    }
}

fn record(slot: &Mutex<Slot>, kind: OpKind, latency: Duration, result: Result<(), ClientError>) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let Ok(mut s) = slot.lock() else { return };
    match result {
        Ok(()) => {
            s.ok.saturating_record(us);
            s.by_kind
                .entry(kind.name())
                .or_insert_with(latency_histogram)
                .saturating_record(us);
        }
        Err(e) => {
            s.failed.saturating_record(us);
            *s.errors.entry(error_kind(&e)).or_default() += 1;
        }
    }
}

/// Open loop: slot `k` of worker `index` is slot `k * workers + index` of the schedule.
fn due(start: Instant, rate: f64, workers: usize, index: usize, k: u64) -> Instant {
    start + Duration::from_secs_f64((k as f64 * workers as f64 + index as f64) / rate)
}

/// Open loop: how long a worker still waits for a slot due at `intended` (at most 50 ms at
/// a time, so that it sees `stop`), or `None` to go now; a start over a millisecond late is
/// counted.
fn wait_for(shared: &Shared, intended: Instant) -> Option<Duration> {
    let now = Instant::now();
    if now >= intended || shared.stop.load(Ordering::Relaxed) {
        if now > intended + Duration::from_millis(1) {
            shared.late.fetch_add(1, Ordering::Relaxed);
        }
        return None;
    }
    Some((intended - now).min(Duration::from_millis(50)))
}

/// When a worker sends its next request: at once in the closed loop, at the worker's next
/// slot of the schedule in the open loop.
struct Pacer {
    index: usize,
    /// The worker's next slot.
    k: u64,
    start: Instant,
}

enum Pace {
    /// Send now; latency counts from this instant.
    Go(Instant),
    /// Sleep this long, then ask again.
    Wait(Duration),
    Stop,
}

impl Pacer {
    fn new(index: usize, start: Instant) -> Pacer {
        Pacer { index, k: 0, start }
    }

    fn next(&mut self, shared: &Shared, args: &KvArgs) -> Pace {
        if shared.stop.load(Ordering::Relaxed) {
            return Pace::Stop;
        }
        let Some(rate) = args.rate else {
            return Pace::Go(Instant::now());
        };
        let intended = due(self.start, rate, args.concurrency, self.index, self.k);
        match wait_for(shared, intended) {
            Some(wait) => Pace::Wait(wait),
            None if shared.stop.load(Ordering::Relaxed) => Pace::Stop,
            None => {
                self.k += 1;
                Pace::Go(intended)
            }
        }
    }
}

fn worker_loop(
    index: usize,
    mut worker: Worker,
    shared: Arc<Shared>,
    args: Arc<KvArgs>,
    start: Instant,
) {
    let mut pacer = Pacer::new(index, start);
    loop {
        let began = match pacer.next(&shared, &args) {
            Pace::Go(at) => at,
            Pace::Wait(wait) => {
                std::thread::sleep(wait);
                continue;
            }
            Pace::Stop => break,
        };
        let kind = args.workload.next_op(&mut worker.ops.rng, args.read_ratio);
        let result = worker.run_op(kind, &shared.keys);
        record(&shared.slots[index], kind, began.elapsed(), result);
    }
}

async fn async_worker_loop(
    index: usize,
    mut worker: AsyncWorker,
    shared: Arc<Shared>,
    args: Arc<KvArgs>,
    start: Instant,
) {
    let mut pacer = Pacer::new(index, start);
    loop {
        let began = match pacer.next(&shared, &args) {
            Pace::Go(at) => at,
            Pace::Wait(wait) => {
                glommio::timer::sleep(wait).await;
                continue;
            }
            Pace::Stop => break,
        };
        let kind = args.workload.next_op(&mut worker.ops.rng, args.read_ratio);
        let result = worker.run_op(kind, &shared.keys).await;
        record(&shared.slots[index], kind, began.elapsed(), result);
    }
}

/// Starts the workers of `--client blocking`: a thread and a client each.
fn start_blocking(
    base: &ClientConfig,
    shared: &Arc<Shared>,
    args: &Arc<KvArgs>,
    start: Instant,
) -> anyhow::Result<Vec<std::thread::JoinHandle<anyhow::Result<()>>>> {
    let mut handles = Vec::new();
    for i in 0..args.concurrency {
        let worker = Worker {
            client: BlockingClient::new(client_config(base, args)),
            ops: Ops::new(args),
        };
        let (shared, args) = (Arc::clone(shared), Arc::clone(args));
        handles.push(
            std::thread::Builder::new()
                .name(format!("kv-{i}"))
                .spawn(move || {
                    worker_loop(i, worker, shared, args, start);
                    Ok(())
                })
                .context("cannot start a worker thread")?,
        );
    }
    Ok(handles)
}

/// Starts the workers of `--client async`: `--client-threads` executors, worker `i` on
/// executor `i % threads`, each executor's workers grouped `--workers-per-session` to a
/// client (one session, one connection per node shard).
fn start_async(
    base: &ClientConfig,
    shared: &Arc<Shared>,
    args: &Arc<KvArgs>,
    start: Instant,
) -> anyhow::Result<Vec<std::thread::JoinHandle<anyhow::Result<()>>>> {
    let threads = args.client_threads.min(args.concurrency);
    quasar_node::memlock::ensure(threads).context("--client-threads")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (shared, args, base) = (Arc::clone(shared), Arc::clone(args), base.clone());
        let ready = ready_tx.clone();
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("kv-{t}"))
            .io_memory(512 << 10)
            .preempt_timer(Duration::from_millis(2));
        let run = move || -> anyhow::Result<()> {
            let executor = match builder.make() {
                Ok(e) => {
                    let _ = ready.send(Ok(()));
                    e
                }
                Err(e) => {
                    let _ = ready.send(Err(anyhow::anyhow!(
                        "cannot start client executor {t}: {e}"
                    )));
                    return Ok(());
                }
            };
            executor.run(async move {
                let mine: Vec<usize> = (t..args.concurrency).step_by(threads).collect();
                let mut tasks = Vec::with_capacity(mine.len());
                for session in mine.chunks(args.workers_per_session) {
                    let client = AsyncClient::new(client_config(&base, &args));
                    for &i in session {
                        let worker = AsyncWorker {
                            client: client.clone(),
                            ops: Ops::new(&args),
                        };
                        let run = async_worker_loop(
                            i,
                            worker,
                            Arc::clone(&shared),
                            Arc::clone(&args),
                            start,
                        );
                        tasks.push(glommio::spawn_local(run));
                    }
                }
                for task in tasks {
                    task.await;
                }
            });
            Ok(())
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("kv-{t}"))
                .spawn(run)
                .context("cannot start a client thread")?,
        );
    }
    drop(ready_tx);
    for _ in 0..threads {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Relaxed);
                bail!("a client executor did not start within 10 s");
            }
        }
    }
    Ok(handles)
}

/// `base` (the target's configuration: nodes, shards, TLS, token) with this run's settings.
fn client_config(base: &ClientConfig, args: &KvArgs) -> ClientConfig {
    let mut cfg = base.clone();
    // Every client needs a session of its own (exactly-once is per session).
    cfg.session = SessionId(fastrand::u64(1..));
    cfg.consistency = args.read_mode.consistency();
    cfg.request_timeout = Duration::from_millis(args.request_timeout_ms);
    cfg
}

/// Writes keys `0..keys` from `concurrency` threads.
fn preload(base: &ClientConfig, args: &KvArgs, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let began = Instant::now();
    eprintln!(
        "preloading {} keys of {} bytes",
        args.keys, args.value_bytes
    );
    let threads = args.concurrency.min(64) as u64;
    crate::target::on_threads(threads, "preload", |t| {
        let mut client = BlockingClient::new(client_config(base, args));
        let mut value = vec![0u8; args.value_bytes];
        fastrand::fill(&mut value);
        let mut i = t;
        while i < args.keys {
            if interrupted.load(Ordering::Relaxed) {
                bail!("interrupted during the preload");
            }
            client
                .put(&key_name(&args.key_prefix, i), &value)
                .map_err(|e| anyhow::anyhow!("preload of key {i} failed: {e}"))?;
            i += threads;
        }
        Ok(())
    })?;
    eprintln!("preloaded in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

/// Takes what every worker recorded since the last call.
fn collect(shared: &Shared) -> (Histogram<u64>, Histogram<u64>, Slot) {
    let mut ok = latency_histogram();
    let mut failed = latency_histogram();
    let mut sum = Slot::new();
    for slot in &shared.slots {
        let s = match slot.lock() {
            Ok(mut s) => std::mem::replace(&mut *s, Slot::new()),
            Err(_) => continue,
        };
        // Same bounds on both sides: adding cannot fail.
        let _ = ok.add(&s.ok);
        let _ = failed.add(&s.failed);
        for (k, v) in s.errors {
            *sum.errors.entry(k).or_default() += v;
        }
        for (k, h) in s.by_kind {
            let _ = sum
                .by_kind
                .entry(k)
                .or_insert_with(latency_histogram)
                .add(&h);
        }
    }
    (ok, failed, sum)
}

pub fn run(args: KvArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let interrupted = crate::target::interrupt_flag()?;
    // The spawned cluster (if any) and its directory live until the end of the run.
    let mut target = crate::target::resolve(&args.target)?;
    eprintln!("target: {}", target.describe());
    let base = target.config.clone();
    let nodes = target.config.nodes.clone();
    let shards = target.config.shards_per_node;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted before the run began");
    }
    if args.ranges > 1 {
        let began = Instant::now();
        let ids = crate::ranges::presplit(&target.config, &args.key_prefix, args.keys, args.ranges)
            .context("--ranges: cannot pre-split the key space")?;
        eprintln!(
            "split the key space into {} ranges ({}) in {:.1} s",
            ids.len(),
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            began.elapsed().as_secs_f64()
        );
    }
    if args.preload.unwrap_or(args.workload.reads()) {
        preload(&target.config, &args, &interrupted)?;
    }
    let distribution = args
        .distribution
        .unwrap_or(args.workload.default_distribution());
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        slots: (0..args.concurrency)
            .map(|_| Mutex::new(Slot::new()))
            .collect(),
        keys: KeySpace::new(distribution, args.keys),
        late: AtomicU64::new(0),
    });
    let args = Arc::new(args);

    // The interval log: histograms stamped with seconds since the epoch, so logs of
    // clients on several machines line up when merged.
    let mut log_file = match &args.hdr_log {
        Some(p) => Some(BufWriter::new(File::create(p).with_context(|| {
            format!("--hdr-log {}: cannot create the file", p.display())
        })?)),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let mut log = match log_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment(
                    "quasar-bench kv: untagged = successful requests (us), tag errors = failed \
                     requests (us), tag op.KIND = successful requests of one kind (us)",
                )
                .with_start_time(SystemTime::now())
                .begin_log_with(f, &mut serializer)
                .map_err(|e| anyhow::anyhow!("--hdr-log: cannot write the header: {e}"))?,
        ),
        None => None,
    };

    let start = Instant::now() + Duration::from_millis(50);
    let start_wall = SystemTime::now() + Duration::from_millis(50);
    let handles = match args.client {
        ClientKind::Async => start_async(&base, &shared, &args, start)?,
        ClientKind::Blocking => start_blocking(&base, &shared, &args, start)?,
    };

    let total_secs = args.warmup_secs + args.duration_secs;
    let mut probe = CpuProbe::new(&base);
    let mut cpu_start = (args.warmup_secs == 0).then(|| probe.sample());
    let mut totals = Totals::new();
    let mut points = Vec::new();
    let mut log_error = None;
    for second in 1..=total_secs {
        let tick = start + Duration::from_secs(second);
        while let Some(wait) = tick.checked_duration_since(Instant::now()) {
            if interrupted.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
        if interrupted.load(Ordering::Relaxed) {
            eprintln!("interrupted: stopping and reporting what was measured");
            break;
        }
        let (ok, failed, sum) = collect(&shared);
        let warm = second <= args.warmup_secs;
        let p = Percentiles::from_histogram(&ok);
        eprintln!(
            "[{second:>4}s]{} {:>8} ops/s  errors {:>5}  p50 {}us  p99 {}us  max {}us",
            if warm { " warmup " } else { " " },
            ok.len(),
            failed.len(),
            p.p50_us,
            p.p99_us,
            p.max_us
        );
        if warm {
            if second == args.warmup_secs {
                cpu_start = Some(probe.sample());
            }
            continue;
        }
        let interval_start = start_wall + Duration::from_secs(second - 1);
        let since_epoch = interval_start
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if let Some(log) = log.as_mut() {
            let written = log
                .write_histogram(&ok, since_epoch, Duration::from_secs(1), None)
                .and_then(|()| {
                    log.write_histogram(
                        &failed,
                        since_epoch,
                        Duration::from_secs(1),
                        Tag::new(ERRORS_TAG),
                    )
                });
            let mut written = written.map_err(|e| e.to_string());
            for (kind, h) in &sum.by_kind {
                if written.is_err() {
                    break;
                }
                let tag = format!("{KIND_TAG_PREFIX}{kind}");
                written = log
                    .write_histogram(h, since_epoch, Duration::from_secs(1), Tag::new(&tag))
                    .map_err(|e| e.to_string());
            }
            if let Err(e) = written {
                log_error.get_or_insert_with(|| format!("--hdr-log: cannot write: {e}"));
            }
        }
        points.push(IntervalPoint {
            t_secs: (second - args.warmup_secs) as f64,
            ops: ok.len(),
            errors: failed.len(),
            p50_us: p.p50_us,
            p99_us: p.p99_us,
            max_us: p.max_us,
        });
        let _ = totals.ok.add(&ok);
        let _ = totals.failed.add(&failed);
        for (k, v) in sum.errors {
            *totals.errors.entry(k).or_default() += v;
        }
        for (k, h) in &sum.by_kind {
            let _ = totals
                .by_kind
                .entry((*k).to_owned())
                .or_insert_with(latency_histogram)
                .add(h);
        }
        totals.secs += 1.0;
    }
    let cpu = cpu_start.map(|a| CpuUse::between(&a, &probe.sample(), totals.secs));
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        // A worker waits at most one request timeout times the retries; do not hang on it
        // beyond that: the process exits anyway.
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("a client thread failed: {e:#}"),
            Err(_) => eprintln!("a client thread panicked"),
        }
    }
    drop(log);
    if let Some(mut f) = log_file {
        f.flush().context("--hdr-log: cannot flush the file")?;
    }
    if let Some(e) = log_error {
        bail!(e);
    }
    if let Some(mut cluster) = target.cluster.take() {
        cluster.stop(Duration::from_secs(10));
    }

    let mut report = Report::new("kv", &*args);
    report
        .figure(
            "mode",
            if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
        )
        .figure("nodes", nodes.len())
        .figure("shards", shards)
        .figure("distribution", distribution)
        .figure("inserted", shared.keys.inserted());
    totals.fill(&mut report);
    if let Some(cpu) = &cpu {
        cpu.fill(&mut report, totals.ok.len());
    }
    if let Some(rate) = args.rate {
        report.figure("target_ops_per_sec", rate);
        report.figure("late_starts", shared.late.load(Ordering::Relaxed));
    }
    report.print(args.json);
    if !args.json {
        println!("{}", totals.human());
        if let Some(cpu) = &cpu {
            println!("{}", cpu.human(totals.ok.len()));
        }
        if let Some(rate) = args.rate {
            let achieved = totals.ok.len() as f64 / totals.secs.max(1e-9);
            if achieved < 0.9 * rate {
                println!(
                    "note: {achieved:.0} of {rate:.0} ops/s: the workers fell behind the \
                     schedule (latency includes the wait); raise --concurrency"
                );
            }
        }
    }
    if let Some(path) = &args.plot {
        plot::render(path, &points, "quasar-bench kv")?;
    }
    Ok(())
}
