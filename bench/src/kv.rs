//! `quasar-bench kv` (issue #7): the cluster load generator.
//!
//! Target: `--endpoints HOST:PORT,...` (shard-0 addresses of running nodes; node ids and the
//! shard count are discovered with `AdminOp::ListMembers`/`Status`), or `--spawn N` (an
//! N-node `LocalCluster` of the `quasar` binary in a temporary directory, stopped after the
//! run).
//!
//! Load: closed loop (`--concurrency C` clients, each one request at a time) or open loop
//! (`--rate OPS`: requests scheduled at fixed intervals over `--concurrency` workers, each
//! worker owning a `BlockingClient` and every C-th slot of the schedule). In the open loop the
//! latency is measured from the *intended* send time, so a stall shows as latency of every
//! request it delayed (no coordinated omission).
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
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{Expected, KeyVersion, Operation, ReadConsistency, Reply, SessionId};
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

struct Worker {
    client: BlockingClient,
    rng: fastrand::Rng,
    value: Vec<u8>,
    scan_length: u32,
    prefix: String,
}

impl Worker {
    fn run_op(&mut self, kind: OpKind, keys: &KeySpace) -> Result<(), ClientError> {
        match kind {
            OpKind::Read => {
                let key = key_name(&self.prefix, keys.choose(&mut self.rng));
                self.client.get(&key).map(drop)
            }
            OpKind::Update => {
                let key = key_name(&self.prefix, keys.choose(&mut self.rng));
                self.client.put(&key, &self.value).map(drop)
            }
            OpKind::Insert => {
                let key = key_name(&self.prefix, keys.insert());
                self.client.put(&key, &self.value).map(drop)
            }
            OpKind::Scan => {
                let key = key_name(&self.prefix, keys.choose(&mut self.rng));
                let count = self.rng.u32(1..=self.scan_length);
                self.client.scan(&key, b"", count, 1 << 20).map(drop)
            }
            OpKind::ReadModifyWrite => {
                let key = key_name(&self.prefix, keys.choose(&mut self.rng));
                let version = self
                    .client
                    .get(&key)?
                    .map_or(KeyVersion::ABSENT, |v| v.version);
                match self.client.execute(Operation::CompareAndSet {
                    key,
                    expected: Expected::Version(version),
                    value: self.value.clone(),
                })? {
                    Reply::Written { .. } => Ok(()),
                    other => Err(ClientError::Protocol {
                        reason: format!("compare-and-set answered {other:?}"),
                    }),
                }
            }
        }
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

fn worker_loop(
    index: usize,
    mut worker: Worker,
    shared: Arc<Shared>,
    args: Arc<KvArgs>,
    start: Instant,
) {
    let slot = &shared.slots[index];
    let workers = args.concurrency as f64;
    let mut k: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let kind = args.workload.next_op(&mut worker.rng, args.read_ratio);
        let began = match args.rate {
            None => Instant::now(),
            Some(rate) => {
                // Slot k of this worker is slot k * workers + index of the whole schedule.
                let intended =
                    start + Duration::from_secs_f64((k as f64 * workers + index as f64) / rate);
                k += 1;
                loop {
                    let now = Instant::now();
                    if now >= intended || shared.stop.load(Ordering::Relaxed) {
                        if now > intended + Duration::from_millis(1) {
                            shared.late.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                    std::thread::sleep((intended - now).min(Duration::from_millis(50)));
                }
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                intended
            }
        };
        let result = worker.run_op(kind, &shared.keys);
        record(slot, kind, began.elapsed(), result);
    }
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
    let mut handles = Vec::new();
    for i in 0..args.concurrency {
        let mut value = vec![0u8; args.value_bytes];
        fastrand::fill(&mut value);
        let worker = Worker {
            client: BlockingClient::new(client_config(&base, &args)),
            rng: fastrand::Rng::new(),
            value,
            scan_length: args.scan_length,
            prefix: args.key_prefix.clone(),
        };
        let (shared, args) = (Arc::clone(&shared), Arc::clone(&args));
        handles.push(
            std::thread::Builder::new()
                .name(format!("kv-{i}"))
                .spawn(move || worker_loop(i, worker, shared, args, start))
                .context("cannot start a worker thread")?,
        );
    }

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
        let _ = h.join();
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
