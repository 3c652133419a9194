//! `quasar-bench wal` and `quasar-bench wal-recover` (issue #2): group-commit throughput
//! and latency of one shard's WAL, the plain write+fdatasync loop it is compared with, and
//! the reopen time of a log holding about a GiB.

use std::cell::{Cell, RefCell};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use quasar_wal::{Batch, GroupId, LogIndex, SharedWal, SyncMethod, Term, Wal, WalConfig};
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};

/// Group-commit throughput of one shard's WAL.
#[derive(Args, Debug, Clone, Serialize)]
pub struct WalArgs {
    /// Directory for the log (a fresh subdirectory is created and removed).
    #[arg(long)]
    pub dir: PathBuf,
    /// Raft groups sharing the log.
    #[arg(long, default_value_t = 10_000)]
    pub groups: u64,
    /// Entries per batch, spread round-robin over the groups.
    #[arg(long, default_value_t = 64)]
    pub entries_per_batch: usize,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Concurrent producers on the one executor; each awaits its batch until durable.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Run only the plain pwrite+fdatasync loop (same bytes per sync) instead of the WAL.
    #[arg(long)]
    pub baseline: bool,
    /// After the WAL run, run the baseline in the same process and report both.
    #[arg(long)]
    pub with_baseline: bool,
    #[arg(long, default_value_t = 64)]
    pub segment_mib: usize,
    /// How the WAL issues fdatasync: `uring` (glommio, the default) or `blocking`
    /// (a direct syscall on the executor thread, for comparison).
    #[arg(long, default_value = "uring")]
    pub sync: String,
    #[arg(long)]
    pub json: bool,
}

/// Reopen time of a WAL holding about `--gib` GiB.
#[derive(Args, Debug, Clone, Serialize)]
pub struct WalRecoverArgs {
    /// Directory for the log (a fresh subdirectory is created and removed).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    pub groups: u64,
    /// How much log to write before reopening.
    #[arg(long, default_value_t = 1.0)]
    pub gib: f64,
    #[arg(long, default_value_t = 64)]
    pub entries_per_batch: usize,
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Reopens to time (all with a warm page cache); `reopen_secs` is the first.
    #[arg(long, default_value_t = 3)]
    pub reopens: usize,
    #[arg(long)]
    pub json: bool,
}

fn fresh_dir(parent: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// An unbound executor. It never spins before parking (glommio spins only when pinned, and
/// a pinned executor shares its core with the io_uring worker that runs its fdatasync, which
/// a spin then starves: measured here, batch p50 grew to the spin time).
fn executor() -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .preempt_timer(Duration::from_millis(2))
}

/// Bytes one batch of the benchmark takes in the log (its records and its sync mark).
fn batch_bytes(entries: usize, payload_bytes: usize) -> usize {
    let payload = vec![0u8; payload_bytes];
    let mut b = Batch::with_capacity(entries);
    for g in 0..entries as u64 {
        b.entries(GroupId(g), LogIndex(1), [(Term(1), payload.as_slice())]);
    }
    b.len_bytes() + quasar_wal::record::SYNC_MARK_RECORD_LEN
}

/// What one WAL run measured (and, with `--with-baseline`, the interleaved plain loop).
struct WalRun {
    entries: u64,
    syncs: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// Time in `append` alone (building the batch, encoding, the index, the write).
    append_latency: Histogram<u64>,
    /// The plain pwrite loop and the same loop writing through a mapping.
    baseline: Option<(BaselineRun, BaselineRun)>,
}

fn run_wal(args: &WalArgs, dir: &Path) -> anyhow::Result<WalRun> {
    let args2 = args.clone();
    let dir = dir.to_path_buf();
    let handle = executor()
        .spawn(move || async move { wal_loop(args2, dir).await })
        .map_err(|e| anyhow::anyhow!("executor start: {e}"))?;
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e}"))?
}

/// State shared by the producer tasks.
struct Producers {
    wal: SharedWal,
    payload: Vec<u8>,
    next_group: Cell<u64>,
    next_index: RefCell<Vec<u64>>,
    latency: RefCell<Histogram<u64>>,
    append_latency: RefCell<Histogram<u64>>,
    entries: Cell<u64>,
    groups: u64,
    entries_per_batch: usize,
}

async fn producer(p: Rc<Producers>, deadline: Instant) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let lsn = {
            let mut batch = Batch::with_capacity(p.entries_per_batch);
            let mut idx = p.next_index.borrow_mut();
            for _ in 0..p.entries_per_batch {
                let g = p.next_group.get();
                p.next_group.set((g + 1) % p.groups);
                let i = idx[g as usize];
                idx[g as usize] = i + 1;
                batch.entries(GroupId(g), LogIndex(i), [(Term(1), p.payload.as_slice())]);
            }
            p.wal.append(&batch)?
        };
        let appended_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        p.append_latency
            .borrow_mut()
            .saturating_record(appended_us.max(1));
        p.wal.sync_to(lsn).await?;
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        p.latency.borrow_mut().saturating_record(us.max(1));
        p.entries.set(p.entries.get() + p.entries_per_batch as u64);
    }
    Ok(())
}

async fn wal_loop(args: WalArgs, dir: PathBuf) -> anyhow::Result<WalRun> {
    let sync_method = match args.sync.as_str() {
        "uring" => SyncMethod::Uring,
        "blocking" => SyncMethod::Blocking,
        other => anyhow::bail!("--sync {other}: expected uring or blocking"),
    };
    let config = WalConfig {
        segment_size_bytes: args.segment_mib << 20,
        sync_method,
        ..WalConfig::default()
    };
    let mut wal = Wal::open_dir(dir.join("wal"), config)?;
    wal.prepare_segments()?;
    crate::rpc::watchdog_tick();
    let start_lsn = wal.appended_lsn();
    let p = Rc::new(Producers {
        wal: SharedWal::new(wal),
        payload: (0..args.payload_bytes).map(|i| i as u8).collect(),
        next_group: Cell::new(0),
        next_index: RefCell::new(vec![1u64; args.groups as usize]),
        latency: RefCell::new(latency_histogram()),
        append_latency: RefCell::new(latency_histogram()),
        entries: Cell::new(0),
        groups: args.groups,
        entries_per_batch: args.entries_per_batch,
    });
    // With a baseline, alternate one-second slices of each so both see the same machine.
    let total = Duration::from_secs(args.duration_secs);
    let slices = if args.with_baseline {
        args.duration_secs.max(1)
    } else {
        1
    };
    let slice = total / u32::try_from(slices).unwrap_or(1);
    let mut baseline = match args.with_baseline {
        true => Some((
            Baseline::create(&dir)?,
            BaselineRun::new(),
            MmapBaseline::create(&dir)?,
            BaselineRun::new(),
        )),
        false => None,
    };
    let mut elapsed = Duration::ZERO;
    for _ in 0..slices {
        let start = Instant::now();
        let deadline = start + slice;
        let tasks: Vec<_> = (0..args.writers)
            .map(|_| glommio::spawn_local(producer(p.clone(), deadline)))
            .collect();
        for t in tasks {
            t.await?;
        }
        elapsed += start.elapsed();
        if let Some((file, run, mmap, mmap_run)) = &mut baseline {
            let wal = p.wal.wal().borrow();
            let bytes = lsn_bytes(start_lsn, wal.appended_lsn(), args.segment_mib);
            let per_sync = usize::try_from(bytes / wal.syncs_completed().max(1)).unwrap_or(4096);
            file.run(per_sync, slice / 2, run)?;
            mmap.run(per_sync, slice / 2, mmap_run)?;
        }
    }
    let (syncs, end_lsn) = {
        let wal = p.wal.wal().borrow();
        (wal.syncs_completed(), wal.appended_lsn())
    };
    let latency = p.latency.borrow().clone();
    let append_latency = p.append_latency.borrow().clone();
    Ok(WalRun {
        entries: p.entries.get(),
        syncs,
        bytes: lsn_bytes(start_lsn, end_lsn, args.segment_mib),
        elapsed,
        latency,
        append_latency,
        baseline: baseline.map(|(_, run, _, mmap_run)| (run, mmap_run)),
    })
}

/// Log bytes between two positions (segments of `segment_mib` MiB).
fn lsn_bytes(from: quasar_wal::Lsn, to: quasar_wal::Lsn, segment_mib: usize) -> u64 {
    let segs = to.segment().0 - from.segment().0;
    ((segs * segment_mib as u64) << 20) + to.offset() as u64 - from.offset() as u64
}

/// What the plain loop measured.
struct BaselineRun {
    syncs: u64,
    bytes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl BaselineRun {
    fn new() -> BaselineRun {
        BaselineRun {
            syncs: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            latency: latency_histogram(),
        }
    }

    /// The loop both baselines share: for `duration`, write `bytes_per_sync` bytes at the
    /// next offset of a `BASELINE_FILE_BYTES` file with `write_and_sync` (wrapping to 0 at
    /// the end), timing each write + sync.
    fn measure(
        &mut self,
        bytes_per_sync: usize,
        duration: Duration,
        offset: &mut usize,
        mut write_and_sync: impl FnMut(&[u8], usize) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        let buf: Vec<u8> = (0..bytes_per_sync).map(|i| i as u8).collect();
        let start = Instant::now();
        while start.elapsed() < duration {
            let t0 = Instant::now();
            if *offset + buf.len() > BASELINE_FILE_BYTES {
                *offset = 0;
            }
            write_and_sync(&buf, *offset)?;
            *offset += buf.len();
            self.syncs += 1;
            self.bytes += buf.len() as u64;
            let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(us.max(1));
        }
        self.elapsed += start.elapsed();
        Ok(())
    }
}

/// The plain loop: `pwrite` of the same bytes per sync at increasing offsets of a
/// preallocated, zero-written file, then `fdatasync` (a direct syscall), back to back.
struct Baseline {
    file: std::fs::File,
    path: PathBuf,
    offset: usize,
}

const BASELINE_FILE_BYTES: usize = 256 << 20;

impl Baseline {
    fn create(dir: &Path) -> anyhow::Result<Baseline> {
        let path = dir.join("baseline.dat");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..BASELINE_FILE_BYTES / zeros.len() {
            file.write_all_at(&zeros, (i * zeros.len()) as u64)?;
        }
        file.sync_all()?;
        Ok(Baseline {
            file,
            path,
            offset: 0,
        })
    }

    fn run(
        &mut self,
        bytes_per_sync: usize,
        duration: Duration,
        out: &mut BaselineRun,
    ) -> anyhow::Result<()> {
        let file = &self.file;
        out.measure(bytes_per_sync, duration, &mut self.offset, |buf, offset| {
            file.write_all_at(buf, offset as u64)?;
            // `sync_data` is fdatasync(2).
            file.sync_data()
        })
    }
}

/// The plain loop again, but copying into a writable `MAP_SHARED` mapping of a
/// preallocated file instead of `pwrite`: the cost of mmap writeback, which is why the WAL
/// writes with `pwrite` and maps its segments read-only.
struct MmapBaseline {
    file: std::fs::File,
    map: memmap2::MmapMut,
    offset: usize,
}

impl MmapBaseline {
    fn create(dir: &Path) -> anyhow::Result<MmapBaseline> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("mmap-baseline.dat"))?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..BASELINE_FILE_BYTES / zeros.len() {
            file.write_all_at(&zeros, (i * zeros.len()) as u64)?;
        }
        file.sync_all()?;
        // SAFETY: the file was just created in the bench's own fresh directory and stays
        // open (in `self`) for the mapping's lifetime; nothing else truncates it.
        #[expect(unsafe_code, reason = "mapping a file is unsafe by nature (memmap2)")]
        let map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&file)? };
        Ok(MmapBaseline {
            file,
            map,
            offset: 0,
        })
    }

    fn run(
        &mut self,
        bytes_per_sync: usize,
        duration: Duration,
        out: &mut BaselineRun,
    ) -> anyhow::Result<()> {
        let (file, map) = (&self.file, &mut self.map);
        out.measure(bytes_per_sync, duration, &mut self.offset, |buf, offset| {
            map[offset..offset + buf.len()].copy_from_slice(buf);
            file.sync_data()
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        // NOTE: best effort; the whole bench directory is removed afterwards anyway.
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn run(args: WalArgs) -> anyhow::Result<()> {
    let dir = fresh_dir(&args.dir, "quasar-bench-wal")?;
    let per_sync = args.writers * batch_bytes(args.entries_per_batch, args.payload_bytes);
    let duration = Duration::from_secs(args.duration_secs);
    let mut report = Report::new("wal", &args);
    let result = (|| -> anyhow::Result<()> {
        if args.baseline {
            let mut b = BaselineRun::new();
            Baseline::create(&dir)?.run(per_sync, duration, &mut b)?;
            let secs = b.elapsed.as_secs_f64();
            report
                .figure("mode", "baseline pwrite+fdatasync")
                .figure("bytes_per_sync", per_sync)
                .figure("syncs_per_sec", b.syncs as f64 / secs)
                .figure("mb_per_sec", b.bytes as f64 / secs / 1e6)
                .percentiles("", &Percentiles::from_histogram(&b.latency));
            return Ok(());
        }
        let w = run_wal(&args, &dir)?;
        let secs = w.elapsed.as_secs_f64();
        let syncs_per_sec = w.syncs as f64 / secs;
        let latency = Percentiles::from_histogram(&w.latency);
        if !args.json {
            report.figure("batch_latency", latency.human());
        }
        report
            .figure("mode", "wal")
            .figure("entries_per_sec", w.entries as f64 / secs)
            .figure(
                "mb_per_sec",
                w.entries as f64 * args.payload_bytes as f64 / secs / 1e6,
            )
            .figure("log_mb_per_sec", w.bytes as f64 / secs / 1e6)
            .figure("syncs_per_sec", syncs_per_sec)
            .figure("bytes_per_sync", w.bytes / w.syncs.max(1))
            .percentiles("", &latency);
        let append = Percentiles::from_histogram(&w.append_latency);
        report
            .figure("append_p50_us", append.p50_us)
            .figure("append_p99_us", append.p99_us);
        if let Some((b, m)) = &w.baseline {
            let base = b.syncs as f64 / b.elapsed.as_secs_f64();
            let p = Percentiles::from_histogram(&b.latency);
            let mp = Percentiles::from_histogram(&m.latency);
            report
                .figure(
                    "mmap_baseline_syncs_per_sec",
                    m.syncs as f64 / m.elapsed.as_secs_f64(),
                )
                .figure("mmap_baseline_p50_us", mp.p50_us)
                .figure("mmap_baseline_p99_us", mp.p99_us);
            report
                .figure("baseline_syncs_per_sec", base)
                .figure("baseline_bytes_per_sync", b.bytes / b.syncs.max(1))
                .figure("baseline_p50_us", p.p50_us)
                .figure("baseline_p99_us", p.p99_us)
                .figure("syncs_ratio_vs_baseline", syncs_per_sec / base);
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&dir)?;
    result?;
    report.print(args.json);
    Ok(())
}

pub fn run_recover(args: WalRecoverArgs) -> anyhow::Result<()> {
    let dir = fresh_dir(&args.dir, "quasar-bench-wal-recover")?;
    let result = recover_in(&args, &dir);
    std::fs::remove_dir_all(&dir)?;
    let report = result?;
    report.print(args.json);
    Ok(())
}

fn recover_in(args: &WalRecoverArgs, dir: &Path) -> anyhow::Result<Report> {
    let target_bytes = (args.gib * f64::from(1u32 << 30)) as u64;
    let (groups, e, p) = (args.groups, args.entries_per_batch, args.payload_bytes);
    let write_dir = dir.to_path_buf();
    let write_start = Instant::now();
    let written = executor()
        .spawn(move || async move {
            let mut wal = Wal::open_dir(&write_dir, WalConfig::default())?;
            wal.prepare_segments()?;
            let payload: Vec<u8> = (0..p).map(|i| i as u8).collect();
            let mut next = vec![1u64; groups as usize];
            let mut g = 0u64;
            let mut entries = 0u64;
            let mut bytes = 0u64;
            let mut batches = 0u64;
            while bytes < target_bytes {
                let mut batch = Batch::with_capacity(e);
                for _ in 0..e {
                    batch.entries(
                        GroupId(g),
                        LogIndex(next[g as usize]),
                        [(Term(1), payload.as_slice())],
                    );
                    next[g as usize] += 1;
                    g = (g + 1) % groups;
                }
                bytes += (batch.len_bytes() + quasar_wal::record::SYNC_MARK_RECORD_LEN) as u64;
                entries += e as u64;
                wal.append(&batch)?;
                batches += 1;
                if batches % 256 == 0 {
                    wal.sync().await?;
                }
            }
            wal.close().await?;
            anyhow::Ok((entries, bytes))
        })
        .map_err(|e| anyhow::anyhow!("executor start: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e}"))??;
    let write_secs = write_start.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let mut recovered_entries = 0u64;
    let mut records = 0u64;
    let mut segments = 0usize;
    for _ in 0..args.reopens.max(1) {
        let t0 = Instant::now();
        let wal = Wal::open_dir(dir, WalConfig::default())?;
        times.push(t0.elapsed().as_secs_f64());
        records = wal.recovery_report().records;
        segments = wal.recovery_report().segments_scanned;
        recovered_entries = wal
            .group_ids()
            .map(|g| wal.last_index(g).0 + 1 - wal.first_index(g).0)
            .sum();
        drop(wal);
    }
    anyhow::ensure!(
        recovered_entries == written.0,
        "recovered {recovered_entries} of {} entries",
        written.0
    );
    let mut report = Report::new("wal-recover", args);
    report
        .figure("reopen_secs", times[0])
        .figure("reopen_secs_all", &times)
        .figure("log_bytes", written.1)
        .figure("entries", recovered_entries)
        .figure("records", records)
        .figure("segments", segments)
        .figure("write_secs", write_secs)
        .figure("scan_gb_per_sec", written.1 as f64 / times[0] / 1e9);
    Ok(report)
}
