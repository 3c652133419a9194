//! `quasar-bench merge FILES...`: reads interval HdrHistogram logs written by
//! `quasar-bench kv --hdr-log` (one per client machine or process), ADDS their histograms
//! (percentiles are never averaged) and prints the same summary as `kv`.
//!
//! Untagged histograms hold the latencies of successful requests, those tagged `errors` the
//! latencies of failed ones. Interval timestamps are seconds since the epoch (or since the
//! log's `BaseTime` when it has one), so logs of concurrent clients line up: the measured span
//! is from the earliest interval start to the latest interval end over every file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::kv::{Totals, ERRORS_TAG, KIND_TAG_PREFIX};
use crate::plot::{self, IntervalPoint};
use crate::report::{latency_histogram, Percentiles, Report};

/// Merge interval HdrHistogram logs (from `kv --hdr-log`) and print one summary.
#[derive(Args, Debug, Clone, Serialize)]
pub struct MergeArgs {
    /// The logs to add together.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Render the merged intervals (per whole second) to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// One interval histogram of a log, at its absolute time.
pub struct Interval {
    pub start: Duration,
    pub duration: Duration,
    /// The tag, if any (`errors`, `op.read`, ...).
    pub tag: Option<String>,
    pub histogram: Histogram<u64>,
}

/// Reads every interval of one log.
pub fn read_log(path: &std::path::Path) -> anyhow::Result<Vec<Interval>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut base = Duration::ZERO;
    let mut out = Vec::new();
    let mut deserializer = Deserializer::new();
    for (n, entry) in IntervalLogIterator::new(&text).enumerate() {
        let entry = entry.map_err(|e| {
            anyhow::anyhow!(
                "{}: entry {} is not an interval log line ({e:?}): is it a `kv --hdr-log` file?",
                path.display(),
                n + 1
            )
        })?;
        match entry {
            LogEntry::BaseTime(t) => base = t,
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(h) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(h.encoded_histogram())
                    .with_context(|| {
                        format!("{}: interval {} is not base64", path.display(), n + 1)
                    })?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut bytes.as_slice())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}: interval {} does not decode ({e:?})",
                            path.display(),
                            n + 1
                        )
                    })?;
                out.push(Interval {
                    start: base + h.start_timestamp(),
                    duration: h.duration(),
                    tag: h.tag().map(|t| t.as_str().to_owned()),
                    histogram,
                });
            }
        }
    }
    Ok(out)
}

/// Adds `from` into `into`, growing `into` if needed.
fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) -> anyhow::Result<()> {
    into.add(from)
        .map_err(|e| anyhow::anyhow!("cannot add histograms: {e:?}"))
}

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let mut totals = Totals::new();
    totals.ok.auto(true);
    totals.failed.auto(true);
    let mut first: Option<Duration> = None;
    let mut last: Option<Duration> = None;
    // Per whole second (relative to the first interval): successes, failures.
    let mut seconds: BTreeMap<u64, (Histogram<u64>, u64)> = BTreeMap::new();
    let mut intervals_read = 0usize;
    let mut all = Vec::new();
    for path in &args.files {
        let intervals = read_log(path)?;
        intervals_read += intervals.len();
        for iv in &intervals {
            first = Some(first.map_or(iv.start, |f| f.min(iv.start)));
            let end = iv.start + iv.duration;
            last = Some(last.map_or(end, |l| l.max(end)));
        }
        all.push(intervals);
    }
    if intervals_read == 0 {
        bail!("the logs hold no interval histogram: were they written by `kv --hdr-log`?");
    }
    let origin = first.unwrap_or_default();
    for iv in all.iter().flatten() {
        let errors = iv.tag.as_deref() == Some(ERRORS_TAG);
        match iv.tag.as_deref() {
            None => add(&mut totals.ok, &iv.histogram)?,
            Some(ERRORS_TAG) => add(&mut totals.failed, &iv.histogram)?,
            Some(tag) => {
                if let Some(kind) = tag.strip_prefix(KIND_TAG_PREFIX) {
                    let h = totals.by_kind.entry(kind.to_owned()).or_insert_with(|| {
                        let mut h = latency_histogram();
                        h.auto(true);
                        h
                    });
                    add(h, &iv.histogram)?;
                }
                // Other tags are not ours: left out.
                continue;
            }
        }
        let second = iv.start.saturating_sub(origin).as_secs();
        let entry = seconds.entry(second).or_insert_with(|| {
            let mut h = latency_histogram();
            h.auto(true);
            (h, 0)
        });
        if errors {
            entry.1 += iv.histogram.len();
        } else {
            add(&mut entry.0, &iv.histogram)?;
        }
    }
    if !totals.failed.is_empty() {
        totals
            .errors
            .insert("all (kinds are not logged)".into(), totals.failed.len());
    }
    totals.secs = last
        .unwrap_or_default()
        .saturating_sub(origin)
        .as_secs_f64();
    let mut report = Report::new("merge", &args);
    report
        .figure("files", args.files.len())
        .figure("intervals", intervals_read);
    totals.fill(&mut report);
    report.print(args.json);
    if !args.json {
        println!("{}", totals.human());
    }
    if let Some(path) = &args.plot {
        let points: Vec<IntervalPoint> = seconds
            .iter()
            .map(|(s, (h, errors))| {
                let p = Percentiles::from_histogram(h);
                IntervalPoint {
                    t_secs: (*s + 1) as f64,
                    ops: h.len(),
                    errors: *errors,
                    p50_us: p.p50_us,
                    p99_us: p.p99_us,
                    max_us: p.max_us,
                }
            })
            .collect();
        plot::render(path, &points, "quasar-bench merge")?;
    }
    Ok(())
}
