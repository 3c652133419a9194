//! `quasar-bench ranges` (issue #6): split and merge latency under a light write load, and
//! the key-space pre-split of `quasar-bench kv --ranges N`.
//!
//! `ranges`: `--keys K` keys (`PREFIX000000000042`) are loaded into one range first (batched
//! puts: one transaction of `--batch` puts per request, `--concurrency` threads). Then each
//! of `--rounds R` rounds splits that range at its middle key and merges it back, while a
//! writer keeps `--write-rate` puts/s going over the same keys (open loop). A split or merge
//! is measured from the request to "both ranges serving": the admin reply received, then one
//! successful write to each side. The merge includes moving the right range's leadership to
//! the left range's leader when they differ (`AdminClient::merge`), counted separately.
//! Reports p50/p99/max of split and merge latency and the writer's errors, human or one JSON
//! line (`--json`).
//!
//! Needs range split and merge on the server (issue #6).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use quasar_rpc::client::{AdminClient, AdminError, BlockingClient, ClientConfig};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{
    NodeId, Operation, RangeDescriptor, RangeId, RangeInfo, SessionId, Txn, TxnOp,
};
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};
use crate::target::TargetArgs;
use crate::workload::key_name;

/// Split and merge latency under load.
#[derive(Args, Debug, Clone, Serialize)]
pub struct RangesArgs {
    /// Where the load goes (`--endpoints` or `--spawn N`).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Keys loaded into the range before the rounds.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Split-then-merge rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: u64,
    /// Background writes per second during the rounds (0: none).
    #[arg(long, default_value_t = 200.0)]
    pub write_rate: f64,
    /// Put before every key name. Must not start with byte 0x00 (the meta range).
    #[arg(long, default_value = "rng", value_name = "PREFIX")]
    pub key_prefix: String,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Threads loading the keys.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Puts per load request (one transaction).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Bound on one request attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

fn validate(args: &RangesArgs) -> anyhow::Result<()> {
    if args.key_prefix.is_empty() || args.key_prefix.starts_with('\0') {
        bail!("--key-prefix must be non-empty and not start with byte 0x00 (the meta range)");
    }
    if args.keys < 2 {
        bail!("--keys must be at least 2 (the range is split at its middle key)");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !(args.write_rate.is_finite() && args.write_rate >= 0.0) {
        bail!(
            "--write-rate {} must be 0 or a positive number",
            args.write_rate
        );
    }
    if args.concurrency == 0 || args.batch == 0 {
        bail!("--concurrency and --batch must be at least 1");
    }
    if args.request_timeout_ms == 0 {
        bail!("--request-timeout-ms must be at least 1");
    }
    Ok(())
}

/// A client configuration with a session of its own.
fn client_config(base: &ClientConfig, request_timeout: Duration) -> ClientConfig {
    let mut cfg = base.clone();
    cfg.session = SessionId(fastrand::u64(1..));
    cfg.request_timeout = request_timeout;
    cfg
}

/// Attempts at one pre-split key whose range a lagging node described, and at one
/// leadership move.
const PRESPLIT_TRIES: u64 = 8;

/// Splits the key space of `keys` bench keys under `prefix` into `n` ranges at evenly
/// spaced keys (a key where a range already starts is left as it is), then spreads their
/// leaders round-robin over the nodes. Returns the ranges' ids in key order.
pub fn presplit(
    config: &ClientConfig,
    prefix: &str,
    keys: u64,
    n: u64,
) -> anyhow::Result<Vec<RangeId>> {
    let mut admin = AdminClient::new(config.clone());
    let first = key_name(prefix, 0);
    let mut ids = vec![
        admin
            .describe_key(&first)
            .context("cannot find the range of the first bench key")?
            .descriptor
            .id,
    ];
    for i in 1..n {
        let key = key_name(prefix, i * keys / n);
        // The node asked may lag behind the splits just made (a stale epoch is refused with
        // `Changed`, nothing done): look again, a few times.
        let mut tries = 0;
        let right = loop {
            tries += 1;
            let info = admin
                .describe_key_fresh(&key)
                .with_context(|| format!("cannot find the range of {}", key.escape_ascii()))?;
            if info.descriptor.start == key {
                break info.descriptor;
            }
            match admin.split_seen(info, &key) {
                Ok((_, right)) => break right,
                Err(AdminError::Changed { .. }) if tries < PRESPLIT_TRIES => {
                    std::thread::sleep(Duration::from_millis(20 * tries));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("split at {} failed", key.escape_ascii()))
                }
            }
        };
        ids.push(right.id);
    }
    let nodes: Vec<NodeId> = config.nodes.iter().map(|n| n.0).collect();
    for (j, id) in ids.iter().enumerate() {
        let Some(to) = nodes.get(j % nodes.len().max(1)) else {
            break;
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let info = admin.describe(*id)?;
            let info = admin.fresh(info);
            if !info.descriptor.voters().any(|v| v == *to) {
                break;
            }
            match admin.transfer_seen(info, *to) {
                Ok(_) => break,
                // A target still catching up with the splits just made: it may yet.
                Err(e @ (AdminError::Refused(_) | AdminError::Changed { .. }))
                    if tries < PRESPLIT_TRIES =>
                {
                    eprintln!("moving range {id}'s leadership to node {to}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(100 * tries));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("moving range {id}'s leadership to node {to} failed")
                    })
                }
            }
        }
    }
    Ok(ids)
}

/// Loads keys `0..keys` with batched puts from `concurrency` threads.
fn load(config: &ClientConfig, args: &RangesArgs, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let began = Instant::now();
    eprintln!(
        "loading {} keys of {} bytes ({} per request)",
        args.keys, args.value_bytes, args.batch
    );
    let batch = args.batch as u64;
    let batches = args.keys.div_ceil(batch);
    let threads = (args.concurrency as u64).min(batches).max(1);
    let timeout = Duration::from_millis(args.request_timeout_ms);
    crate::target::on_threads(threads, "load", |t| {
        let mut client = BlockingClient::new(client_config(config, timeout));
        let mut value = vec![0u8; args.value_bytes];
        fastrand::fill(&mut value);
        let mut b = t;
        while b < batches {
            if interrupted.load(Ordering::Relaxed) {
                bail!("interrupted during the load");
            }
            let puts = (b * batch..((b + 1) * batch).min(args.keys))
                .map(|i| TxnOp::Put {
                    key: key_name(&args.key_prefix, i),
                    value: value.clone(),
                })
                .collect();
            client
                .execute(Operation::Txn(Txn {
                    compares: Vec::new(),
                    success: puts,
                    failure: Vec::new(),
                }))
                .map_err(|e| anyhow::anyhow!("load of batch {b} failed: {e}"))?;
            b += threads;
        }
        Ok(())
    })?;
    eprintln!("loaded in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

/// What the background writer counted.
#[derive(Default)]
struct Writes {
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// The first message of each kind of error.
    examples: BTreeMap<String, String>,
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Failed(re) => format!("{re:?}")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect(),
        ClientError::Ambiguous { .. } => "Ambiguous".into(),
        ClientError::Unavailable { .. } => "Unavailable".into(),
        other => format!("{other:?}")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect(),
    }
}

/// Puts at `rate`/s on random keys until `stop` (open loop: a slow put delays the next
/// ones, which then go out at once).
fn writer(mut client: BlockingClient, args: &RangesArgs, stop: &AtomicBool, out: &Mutex<Writes>) {
    if args.write_rate <= 0.0 {
        return;
    }
    let mut value = vec![0u8; args.value_bytes];
    fastrand::fill(&mut value);
    let start = Instant::now();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let intended = start + Duration::from_secs_f64(k as f64 / args.write_rate);
        k += 1;
        while let Some(wait) = intended.checked_duration_since(Instant::now()) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
        let key = key_name(&args.key_prefix, fastrand::u64(0..args.keys));
        let result = client.put(&key, &value);
        let Ok(mut w) = out.lock() else { return };
        match result {
            Ok(_) => w.ok += 1,
            Err(e) => {
                let kind = error_kind(&e);
                *w.errors.entry(kind.clone()).or_default() += 1;
                w.examples.entry(kind).or_insert_with(|| e.to_string());
            }
        }
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// One write to each side: both ranges serve.
fn probe(client: &mut BlockingClient, left: &[u8], right: &[u8]) -> anyhow::Result<()> {
    for key in [left, right] {
        client
            .put(key, b"probe")
            .with_context(|| format!("write to {} failed", key.escape_ascii()))?;
    }
    Ok(())
}

/// What the rounds measured.
struct Rounds {
    split: Histogram<u64>,
    merge: Histogram<u64>,
    transfers: u64,
    done: u64,
}

fn rounds(
    config: &ClientConfig,
    args: &RangesArgs,
    interrupted: &AtomicBool,
    m: &mut Rounds,
) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let mut admin = AdminClient::new(client_config(config, timeout));
    let mut probe_client = BlockingClient::new(client_config(config, timeout));
    let first = key_name(&args.key_prefix, 0);
    let mid = key_name(&args.key_prefix, args.keys / 2);
    // The range as the last merge answered it: nodes' views (DescribeRange) may lag behind
    // a merge just made, its reply does not.
    let mut known: Option<RangeDescriptor> = None;
    for round in 1..=args.rounds {
        if interrupted.load(Ordering::Relaxed) {
            eprintln!("interrupted: reporting the rounds done");
            break;
        }
        let seen = admin.describe_key(&first)?;
        let seen = admin.fresh(seen);
        let info = match known.take() {
            Some(d) if d.epoch > seen.descriptor.epoch => RangeInfo {
                descriptor: d,
                ..seen
            },
            _ => seen,
        };
        let id = info.descriptor.id;
        let leader = info.leader;
        let began = Instant::now();
        let (left, _) = admin
            .split_seen(info, &mid)
            .with_context(|| format!("round {round}: split of range {id} failed"))?;
        probe(&mut probe_client, &first, &mid)
            .with_context(|| format!("round {round}: after the split"))?;
        let split = began.elapsed();
        record(&mut m.split, split);

        let began = Instant::now();
        let merged = admin
            .merge_seen(RangeInfo {
                descriptor: left,
                leader,
                commit: None,
            })
            .with_context(|| format!("round {round}: merge of range {id} failed"))?;
        known = Some(merged.merged.clone());
        probe(&mut probe_client, &first, &mid)
            .with_context(|| format!("round {round}: after the merge"))?;
        let merge = began.elapsed();
        record(&mut m.merge, merge);
        if merged.transferred.is_some() {
            m.transfers += 1;
        }
        m.done = round;
        eprintln!(
            "[round {round:>3}] split {}us  merge {}us{}",
            split.as_micros(),
            merge.as_micros(),
            if merged.transferred.is_some() {
                " (leadership moved first)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub fn run(args: RangesArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let interrupted = crate::target::interrupt_flag()?;
    let mut target = crate::target::resolve(&args.target)?;
    eprintln!("target: {}", target.describe());
    let config = target.config.clone();
    let first = key_name(&args.key_prefix, 0);
    let last = key_name(&args.key_prefix, args.keys - 1);
    let range = AdminClient::new(config.clone())
        .describe_key(&first)
        .context("cannot find the range of the first key")?;
    if !range.descriptor.contains(&last) {
        bail!(
            "the keys {}..={} span several ranges (range {} ends at {}): pick another \
             --key-prefix, merge them first, or use --spawn",
            first.escape_ascii(),
            last.escape_ascii(),
            range.descriptor.id,
            range.descriptor.end.escape_ascii()
        );
    }
    load(&config, &args, &interrupted)?;

    let stop = AtomicBool::new(false);
    let writes = Mutex::new(Writes::default());
    let mut m = Rounds {
        split: latency_histogram(),
        merge: latency_histogram(),
        transfers: 0,
        done: 0,
    };
    let timeout = Duration::from_millis(args.request_timeout_ms);
    let began = Instant::now();
    let result = std::thread::scope(|s| {
        let w = BlockingClient::new(client_config(&config, timeout));
        let (stop, writes, args_ref) = (&stop, &writes, &args);
        s.spawn(move || writer(w, args_ref, stop, writes));
        let r = rounds(&config, &args, &interrupted, &mut m);
        stop.store(true, Ordering::Relaxed);
        r
    });
    let secs = began.elapsed().as_secs_f64();
    if let Some(mut cluster) = target.cluster.take() {
        cluster.stop(Duration::from_secs(10));
    }
    result?;

    let writes = writes.into_inner().unwrap_or_default();
    let errors: u64 = writes.errors.values().sum();
    let (split, merge) = (
        Percentiles::from_histogram(&m.split),
        Percentiles::from_histogram(&m.merge),
    );
    let mut report = Report::new("ranges", &args);
    report
        .figure("nodes", config.nodes.len())
        .figure("shards", config.shards_per_node)
        .figure("rounds_done", m.done)
        .figure("merge_leader_transfers", m.transfers)
        .figure("writes", writes.ok)
        .figure("write_errors", errors)
        .figure("write_errors_by_kind", &writes.errors)
        .figure("write_error_examples", &writes.examples)
        .figure("measured_secs", (secs * 10.0).round() / 10.0)
        .percentiles("split_", &split)
        .percentiles("merge_", &merge);
    report.print(args.json);
    if !args.json {
        println!("split      {}", split.human());
        println!("merge      {}", merge.human());
        println!(
            "writes     {} ok, {errors} errors during {:.1} s",
            writes.ok, secs
        );
        for (kind, n) in &writes.errors {
            let example = writes.examples.get(kind).map_or("", String::as_str);
            println!("  {kind:<20} {n}  (first: {example})");
        }
    }
    Ok(())
}
