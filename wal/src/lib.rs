//! quasar-wal: the write-ahead log shared by every Raft group of one shard.
//!
//! One log per shard holds the entries, hard states, truncations, compactions and snapshot
//! marks of thousands of groups in preallocated segment files, mapped read-only. An append
//! encodes a batch's records and writes them with one `pwrite`, returning at once; one
//! `fdatasync` (through glommio's io_uring) makes everything appended so far durable:
//! group commit. Reads come from the mapping.
//!
//! # Tutorial
//!
//! ```
//! use quasar_wal::{Batch, GroupId, HardState, LogIndex, Term, Wal, WalConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let config = WalConfig { segment_size_bytes: 1 << 20, ..WalConfig::default() };
//! let mut wal = Wal::open_dir(dir.path(), config.clone())?;
//!
//! // One batch per event-loop turn, carrying records of many groups. Payloads are
//! // borrowed, encoded into a reused staging buffer and written with one pwrite.
//! let mut batch = Batch::with_capacity(4);
//! batch
//!     .entries(GroupId(7), LogIndex(1), [(Term(1), &b"put a=1"[..]), (Term(1), &b"put b=2"[..])])
//!     .hard_state(GroupId(7), HardState { term: Term(1), vote: 2, commit: LogIndex(1) });
//! let lsn = wal.append(&batch)?; // no waiting: the records are in the page cache
//!
//! // Make it durable. In a glommio executor: `wal.sync().await`, or the split
//! // `begin_sync` / `on_sync_done` pair; `SharedWal::sync_to(lsn)` serves many tasks.
//! # glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
//! #     .io_memory(256 << 10)
//! #     .make()?
//! #     .run(async { wal.sync().await })?;
//! assert!(wal.durable_lsn() >= lsn);
//!
//! // Reads come from the cache of recent entries, or from the mapping.
//! let mut out = Vec::new();
//! wal.entries(GroupId(7), LogIndex(1)..LogIndex(3), &mut out)?;
//! assert_eq!(out[1].payload, b"put b=2");
//! assert_eq!(wal.term(GroupId(7), LogIndex(2))?, Term(1));
//! drop(wal);
//!
//! // Reopening scans every segment, checks every CRC and rebuilds the index.
//! let wal = Wal::open_dir(dir.path(), config)?;
//! assert_eq!(wal.last_index(GroupId(7)), LogIndex(2));
//! assert_eq!(wal.hard_state(GroupId(7)).map(|h| h.commit), Some(LogIndex(1)));
//! # Ok(())
//! # }
//! ```
//!
//! # Write path (every fsync)
//!
//! 1. `prepare`: a background thread zero-fills a segment file, a megabyte at a time with
//!    an fdatasync and a short pause after each (none while the WAL waits for it), renames
//!    it to `N.wal`, fsyncs the directory and maps it read-only (not populated: the node
//!    rarely reads its log back, see `MmapDisk`). The file is a *spare* (a segment GC
//!    retired, see 4) when one is kept, else a new `N.wal.tmp`. Done ahead of need
//!    (`WalConfig::prepared_segments`).
//! 2. `append`: a `SyncMark` record (the position durable now), then the batch's records,
//!    are encoded into a reused staging buffer and written with one `pwrite`
//!    (`Disk::write`); the read-only mapping sees them at once (one page cache). If the
//!    batch does not fit, a `Seal` record ends the segment and the batch goes to the next
//!    prepared one. A failed write poisons the log like a failed sync. Why not stores
//!    into a writable mapping: at every fdatasync the kernel write-protects the mapped
//!    pages it cleans, and the next store into each page faults (`page_mkwrite`);
//!    measured on the 2-core VM, a store+fdatasync loop ran at 2.3k–6.1k syncs/s (by
//!    setup) against 12–15k for pwrite+fdatasync of the same bytes, and the WAL went from 3.8k to 5.8k
//!    syncs/s at one writer (500k to 680k entries/s at four) when it moved to `pwrite`.
//! 3. `begin_sync`: one `fdatasync` per segment written since the last sync (normally
//!    one), issued through glommio; `on_sync_done` moves `durable_lsn`. Up to
//!    `WalConfig::syncs_in_flight` syncs may run at once (the node runs 2: what a turn
//!    appends while a sync runs is synced at once, and the disk serves both); they are
//!    reported in the order they began, so `durable_lsn` never passes bytes of an older
//!    sync that is still running. A failed sync poisons the log: every later call returns
//!    `WalError::Poisoned`. (`SyncMethod::Blocking`
//!    issues a direct fdatasync on the executor thread instead; it exists for measurements.)
//! 4. `collect_garbage`: segments no group needs are retired once the records that
//!    released them are durable (`Disk::retire`: the background thread renames up to
//!    `disk::MAX_SPARES` of them to `<id>.wal.spare` for reuse and unlinks the rest, then
//!    fsyncs the directory; the shard thread does not wait); cold groups pinning the
//!    oldest segment are rewritten forward first. Reusing a file rewrites blocks the file
//!    system already holds: no allocation, no journal commit, no discard, which on the
//!    2-core VM's ext4 (mounted with `discard`) stalled the WAL's own fdatasyncs for 12–32
//!    ms at every segment turnover. A spare's old records never verify again: a record's
//!    CRC is seeded with the id of the segment it was written in, and a retired segment's
//!    id is below every id a spare is prepared for (new ids follow the active segment).
//!
//! # Recovery (every open)
//!
//! Logs of 64 MiB or more are recovered by several threads (`WalConfig::recovery_threads`):
//! every segment is verified on its own in parallel (CRC, batch framing: a record's
//! validity depends only on its segment), the decision table is applied to the results in
//! order, then each thread replays the accepted records of its share of the groups (by a
//! hash of the group id) without checking them again, and the shares are merged. Smaller
//! logs take one pass (`recovery::scan`). Both give the same index and verdict (checked by
//! the model test, the damaged-file tests and the `recovery` fuzz target). On the 2-core
//! VM a 1 GiB log of 10,000 groups reopens in 0.66–0.84 s instead of 1.28–1.44 s: the
//! one-pass scan spends about a third of its time in CRCs and half in index inserts (a
//! cache miss per record, one `Run` per record when a batch spreads over many groups).
//!
//! Group ids, indexes, terms and positions are newtypes: `GroupId`, `LogIndex`, `Term`,
//! `Lsn`. See `record` for the byte layout and `recovery` for the decision table.

pub mod cache;
pub mod crash;
pub mod disk;
pub mod gc;
pub mod index;
pub mod record;
pub mod recovery;
pub mod segment;
#[cfg(all(test, feature = "testing"))]
mod space_tests;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[cfg(feature = "testing")]
pub use disk::{Crash, MemDisk};
pub use disk::{Disk, MmapDisk, SyncFuture, SyncMethod};
pub use gc::GcReport;
pub use index::LogOpError;
pub use segment::{Lsn, SegmentId};

use cache::CacheBudget;
use index::{GroupLog, Run};
use record::{RecordKind, HEADER_LEN, SEGMENT_HEADER_RECORD_LEN, SYNC_MARK_RECORD_LEN};

/// A Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupId(pub u64);

/// A position in one group's Raft log (1-based; 0 means "before the first entry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// A Raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// An entry's identity: index and term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogId {
    pub index: LogIndex,
    pub term: Term,
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// What Raft must persist besides entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    /// The node voted for in `term` (0: none).
    pub vote: u64,
    pub commit: LogIndex,
}

/// An entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub payload: Vec<u8>,
}

/// A cheap hasher for `GroupId` keys (multiplicative; ids are not adversarial here).
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupIdHasher(u64);

impl Hasher for GroupIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

/// `BuildHasher` for maps keyed by `GroupId`.
pub type GroupHasher = BuildHasherDefault<GroupIdHasher>;

/// Tuning of a WAL.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size of every new segment file.
    pub segment_size_bytes: usize,
    /// How many empty segments are kept prepared ahead of the active one.
    pub prepared_segments: usize,
    /// Byte budget of the cache of recent entries (0 disables it).
    pub cache_bytes: usize,
    /// `collect_garbage` rewrites cold groups once more than this many segments precede
    /// the active one.
    pub max_old_segments: usize,
    /// Upper bound on the bytes one `collect_garbage` call rewrites.
    pub rewrite_budget_bytes: usize,
    /// How `open_dir` logs issue fdatasync (io_uring unless measuring).
    pub sync_method: SyncMethod,
    /// How many syncs may be in flight at once (at least 1). With 2, a sync may begin for
    /// what was appended while the previous one runs, instead of waiting for it: the disk
    /// works on both at once. Syncs complete in the order they began (`on_sync_done`).
    pub syncs_in_flight: usize,
    /// Threads that recover a log on open: 0 picks the machine's parallelism (at most 4)
    /// for logs of 64 MiB or more and one thread below; any other value is used as given.
    pub recovery_threads: usize,
}

impl Default for WalConfig {
    fn default() -> WalConfig {
        WalConfig {
            segment_size_bytes: 64 << 20,
            prepared_segments: 2,
            cache_bytes: 64 << 20,
            max_old_segments: 4,
            rewrite_budget_bytes: 16 << 20,
            sync_method: SyncMethod::Uring,
            syncs_in_flight: 1,
            recovery_threads: 0,
        }
    }
}

/// Errors of the WAL. `Corruption`, `MissingSegment` and `Poisoned` mean "stop": the
/// shard must not serve its groups from this log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error during {op} on {location}: {source}; check the disk and free space, then restart the shard")]
    Io {
        op: &'static str,
        location: String,
        source: io::Error,
    },
    #[error("WAL corruption in {location} at offset {offset}: {reason}; data that was durable is damaged (a later sync covers it up to {proof}); restore this node from a replica, do not delete the file by hand")]
    Corruption {
        location: String,
        offset: usize,
        reason: String,
        proof: Lsn,
    },
    #[error("WAL segment {location} is missing between existing segments; restore it or rebuild this node from a replica")]
    MissingSegment { location: String },
    #[error("WAL is poisoned after a failed sync ({reason}); nothing written since the last good sync can be trusted: restart the shard so it recovers from disk")]
    Poisoned { reason: String },
    #[error("invalid WAL operation for group {group}: {source}")]
    InvalidOperation { group: GroupId, source: LogOpError },
    #[error("batch of {len_bytes} bytes does not fit a segment (at most {max_bytes}); split it or raise segment_size_bytes")]
    BatchTooLarge { len_bytes: usize, max_bytes: usize },
    #[error("group {group}: index {index} is compacted (first index is {first})")]
    Compacted {
        group: GroupId,
        index: LogIndex,
        first: LogIndex,
    },
    #[error("group {group}: index {index} is past the last index {last}")]
    Unavailable {
        group: GroupId,
        index: LogIndex,
        last: LogIndex,
    },
    #[error("WAL segment {location} has an unusable size of {len_bytes} bytes; restore it from a replica")]
    BadSegmentSize { location: String, len_bytes: u64 },
}

impl WalError {
    /// Whether this is a segment that could not be prepared (a full disk ...): the append
    /// that met it changed nothing and may be retried once `Wal::check_prepared` succeeds;
    /// the log is not damaged.
    pub fn is_prepare_failure(&self) -> bool {
        matches!(self, WalError::Io { op: "prepare", .. })
    }
}

enum Op {
    Entries {
        group: GroupId,
        first: LogIndex,
        start: usize,
        count: usize,
    },
    HardState {
        group: GroupId,
        hs: HardState,
    },
    Truncate {
        group: GroupId,
        from: LogIndex,
    },
    Compact {
        group: GroupId,
        below: LogIndex,
    },
    Snapshot {
        group: GroupId,
        at: LogId,
    },
}

/// Records of many groups, appended together. Payloads are borrowed and copied by
/// `Wal::append` into its staging buffer, then written to the segment.
#[derive(Default)]
pub struct Batch<'a> {
    ops: Vec<Op>,
    entries: Vec<(Term, &'a [u8])>,
    len_bytes: usize,
}

impl<'a> Batch<'a> {
    /// A batch with room for `entries` entries.
    pub fn with_capacity(entries: usize) -> Batch<'a> {
        Batch {
            ops: Vec::with_capacity(entries.min(1024)),
            entries: Vec::with_capacity(entries),
            len_bytes: 0,
        }
    }

    /// Entries of `group` starting at `first`; an existing suffix from `first` on is
    /// replaced (a new leader overwrote it).
    pub fn entries(
        &mut self,
        group: GroupId,
        first: LogIndex,
        entries: impl IntoIterator<Item = (Term, &'a [u8])>,
    ) -> &mut Batch<'a> {
        let start = self.entries.len();
        let mut body = record::ENTRIES_PREFIX_LEN;
        for (term, payload) in entries {
            body += record::entry_len(payload.len());
            self.entries.push((term, payload));
        }
        let count = self.entries.len() - start;
        if count > 0 {
            self.len_bytes += record::record_len(body);
            self.ops.push(Op::Entries {
                group,
                first,
                start,
                count,
            });
        }
        self
    }

    pub fn hard_state(&mut self, group: GroupId, hs: HardState) -> &mut Batch<'a> {
        self.len_bytes += record::record_len(24);
        self.ops.push(Op::HardState { group, hs });
        self
    }

    /// Entries of `group` at `from` and after are gone.
    pub fn truncate_suffix(&mut self, group: GroupId, from: LogIndex) -> &mut Batch<'a> {
        self.len_bytes += record::record_len(8);
        self.ops.push(Op::Truncate { group, from });
        self
    }

    /// Entries of `group` below `below` are no longer needed.
    pub fn compact(&mut self, group: GroupId, below: LogIndex) -> &mut Batch<'a> {
        self.len_bytes += record::record_len(16);
        self.ops.push(Op::Compact { group, below });
        self
    }

    /// `group` installed a snapshot at (`index`, `term`): its log restarts after it.
    pub fn snapshot_mark(&mut self, group: GroupId, index: LogIndex, term: Term) -> &mut Batch<'a> {
        self.len_bytes += record::record_len(16);
        self.ops.push(Op::Snapshot {
            group,
            at: LogId { index, term },
        });
        self
    }

    /// Bytes the batch takes in a segment (without its `SyncMark`).
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
        self.entries.clear();
        self.len_bytes = 0;
    }
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments_scanned: usize,
    pub records: u64,
    /// The log ended at bad bytes here (row 4 of the decision table): `(location, offset,
    /// reason)`. The bytes from there on were never durable and were erased.
    pub torn_tail: Option<(String, usize, String)>,
    /// Segments discarded because nothing in them had been durable.
    pub discarded_segments: Vec<String>,
}

/// A sync in progress: await `run`, then hand the result to `Wal::on_sync_done`.
pub struct SyncJob {
    target: Lsn,
    syncs: Vec<SyncFuture>,
}

impl SyncJob {
    /// The position that is durable once this job succeeds.
    pub fn target(&self) -> Lsn {
        self.target
    }

    /// Runs the fdatasyncs (normally one; two right after a segment roll).
    pub async fn run(self) -> io::Result<()> {
        for sync in self.syncs {
            sync.await?;
        }
        Ok(())
    }
}

/// The write-ahead log of one shard.
pub struct Wal<D: Disk = MmapDisk> {
    disk: D,
    config: WalConfig,
    cursor: segment::Cursor,
    seed: u32,
    /// Segments holding log data, oldest first; the last one is `cursor.segment`.
    segments: VecDeque<SegmentId>,
    /// Segments written since the last `begin_sync`, in order.
    dirty: Vec<SegmentId>,
    appended: Lsn,
    durable: Lsn,
    /// The targets of the syncs begun and not yet done, oldest first (ascending).
    syncs_in_flight: VecDeque<Lsn>,
    syncs_completed: u64,
    poisoned: Option<String>,
    /// Why the next segments cannot be prepared (a full disk ...); `None`: they can.
    /// Nothing durable is at stake: appends that fit the segments already prepared go on,
    /// a roll that finds no prepared segment is refused whole, and `check_prepared`
    /// retries.
    space_shortage: Option<String>,
    groups: HashMap<GroupId, GroupLog, GroupHasher>,
    /// The budget of the groups' caches of recent entries (`GroupLog::cache`).
    cache: CacheBudget,
    /// A batch is encoded here, then written to its segment with one `Disk::write`
    /// (reused: no allocation per batch once it has grown).
    stage: Vec<u8>,
    /// Scratch map of `validate` (reused: no allocation per batch once it has grown).
    shadow: HashMap<GroupId, (LogIndex, LogIndex), GroupHasher>,
    /// Segments below `.1` may be deleted once `durable >= .0`.
    pending_gc: Option<(Lsn, SegmentId)>,
    /// The oldest segment any group needed at the last look (see `NeededAt`).
    needed: Option<NeededAt>,
    recovery: RecoveryReport,
}

/// The oldest segment any group needed (`gc::oldest_needed`, a look at every group), when
/// the log ended at `at` with `active` the active segment.
///
/// Every record goes to the active segment, so while it stays the same no group's oldest
/// segment can fall below `needed` (which is at most `active`): a value kept too long can
/// only be too low, which deletes less, never a segment still needed. It is kept while
/// nothing was appended (an idle log costs nothing), and otherwise looked at again every
/// `NEEDED_SKIPS` collections and whenever the active segment changes, so that a busy
/// shard with many thousands of groups does not look at all of them ten times a second.
#[derive(Clone, Copy, Debug)]
struct NeededAt {
    at: Lsn,
    active: SegmentId,
    needed: SegmentId,
    skips: u32,
}

/// Collections that may reuse `NeededAt` after appends (about 5 s at the runtime's 100 ms).
const NEEDED_SKIPS: u32 = 50;

impl NeededAt {
    fn stale(&self, appended: Lsn, active: SegmentId) -> bool {
        active != self.active || (appended != self.at && self.skips >= NEEDED_SKIPS)
    }

    fn skipped(self) -> NeededAt {
        NeededAt {
            skips: self.skips.saturating_add(1),
            ..self
        }
    }
}

impl Wal<MmapDisk> {
    /// Opens (creating if needed) the WAL in `dir`, recovering what is there.
    pub fn open_dir(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal<MmapDisk>, WalError> {
        let dir = dir.as_ref();
        let mut disk = MmapDisk::open_dir(dir).map_err(|source| WalError::Io {
            op: "open directory",
            location: dir.display().to_string(),
            source,
        })?;
        disk.set_sync_method(config.sync_method);
        Wal::open(disk, config)
    }
}

fn header_record(id: SegmentId, len_bytes: usize) -> Vec<u8> {
    let mut h = vec![0u8; SEGMENT_HEADER_RECORD_LEN];
    record::put_fixed(
        &mut h,
        0,
        RecordKind::SegmentHeader,
        GroupId(0),
        &[record::SEGMENT_MAGIC, id.0, len_bytes as u64],
        record::segment_seed(id.0),
    );
    h
}

/// No log index reaches this (2^62); records claiming one are ignored on replay.
const MAX_LOG_INDEX: u64 = 1 << 62;

/// Replays one accepted record into the index. Replay is lenient where a live operation
/// would be refused: records of a group that precede a rewrite of it (gc) may lack their
/// context once older segments are gone, and the rewrite that follows supersedes them.
fn replay(
    groups: &mut HashMap<GroupId, GroupLog, GroupHasher>,
    id: SegmentId,
    r: &record::RecordView<'_>,
) {
    let seg = id;
    // Indexes anywhere near u64::MAX cannot come from a real log; ignore such records
    // rather than overflow (the CRC verified, so only a bug or a crafted file has them).
    let fields_sane = match r.kind {
        RecordKind::Entries => record::entries_header(r.body).0 .0 < MAX_LOG_INDEX,
        RecordKind::TruncateSuffix | RecordKind::Compact | RecordKind::SnapshotMark => {
            record::fixed_field(r.body, 0) < MAX_LOG_INDEX
        }
        _ => true,
    };
    if !fields_sane {
        tracing::warn!(segment = %id, offset = r.offset, "WAL record with an impossible index ignored");
        return;
    }
    match r.kind {
        RecordKind::SegmentHeader | RecordKind::SyncMark | RecordKind::Seal => {}
        RecordKind::Entries => {
            let (first, count) = record::entries_header(r.body);
            let g = groups.entry(r.group).or_default();
            let run = Run {
                first,
                count,
                offset: r.offset as u32,
                segment: seg,
            };
            if g.append(run).is_err() {
                g.snapshot(
                    LogId {
                        index: LogIndex(first.0 - 1),
                        term: Term(0),
                    },
                    seg,
                );
                g.base_segment = None;
                let _ = g.append(run);
            }
        }
        RecordKind::HardState => {
            groups
                .entry(r.group)
                .or_default()
                .set_hard_state(record::hard_state_of(r.body), seg);
        }
        RecordKind::TruncateSuffix => {
            let from = LogIndex(record::fixed_field(r.body, 0));
            let g = groups.entry(r.group).or_default();
            // NOTE: refused only below the base, where nothing is left to truncate.
            let _ = g.truncate_from(from);
        }
        RecordKind::Compact => {
            let below = LogIndex(record::fixed_field(r.body, 0));
            let term = Term(record::fixed_field(r.body, 1));
            groups.entry(r.group).or_default().compact(below, term, seg);
        }
        RecordKind::SnapshotMark => {
            let at = LogId {
                index: LogIndex(record::fixed_field(r.body, 0)),
                term: Term(record::fixed_field(r.body, 1)),
            };
            groups.entry(r.group).or_default().snapshot(at, seg);
        }
    }
}

/// How many threads recover `bytes` of log (see `WalConfig::recovery_threads`).
fn recovery_threads(configured: usize, bytes: usize) -> usize {
    match configured {
        0 if bytes >= 64 << 20 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4),
        0 => 1,
        n => n,
    }
}

/// Which of `threads` replay threads owns `group` (a multiplicative hash, so groups with
/// patterned ids still spread).
fn replay_thread(group: GroupId, threads: usize) -> usize {
    ((group.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % threads as u64) as usize
}

/// Recovers the index from the segments' bytes. One thread: `recovery::scan` verifies
/// and replays in one pass. More: every segment is verified on its own in parallel
/// (`recovery::verify`), then each thread replays the accepted records of its share of
/// the groups (`recovery::replay_accepted`: a group's replay reads only its own records,
/// in log order, so the share is exact). Both give the same index and outcome.
fn recover(
    images: &[(SegmentId, &[u8])],
    threads: usize,
) -> (
    HashMap<GroupId, GroupLog, GroupHasher>,
    Result<recovery::ScanOutcome, recovery::Corruption>,
) {
    let mut groups: HashMap<GroupId, GroupLog, GroupHasher> = HashMap::default();
    if threads <= 1 {
        let outcome = recovery::scan(images, |id, r| replay(&mut groups, id, r));
        return (groups, outcome);
    }
    let outcome = match recovery::verify(images, threads) {
        Ok(o) => o,
        Err(c) => return (groups, Err(c)),
    };
    let end = &outcome.end;
    let share = |t: usize| {
        let mut mine: HashMap<GroupId, GroupLog, GroupHasher> = HashMap::default();
        recovery::replay_accepted(images, end, |id, r| {
            if replay_thread(r.group, threads) == t {
                replay(&mut mine, id, r);
            }
        });
        mine
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|t| s.spawn(move || share(t))).collect();
        groups = share(0);
        for h in helpers {
            groups.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
    });
    (groups, Ok(outcome))
}

impl<D: Disk> Wal<D> {
    /// Opens the WAL on `disk`: recovers what is there (see `recovery`), then prepares
    /// segments ahead.
    pub fn open(mut disk: D, config: WalConfig) -> Result<Wal<D>, WalError> {
        assert!(
            config.segment_size_bytes >= 4096 && config.segment_size_bytes < 1 << 32,
            "segment_size_bytes {} must be in [4 KiB, 4 GiB)",
            config.segment_size_bytes
        );
        let io_err = |op: &'static str, location: String| {
            move |source| WalError::Io {
                op,
                location,
                source,
            }
        };
        let listed = disk
            .list()
            .map_err(io_err("list", "the WAL directory".into()))?;
        for pair in listed.windows(2) {
            if pair[1].0 .0 != pair[0].0 .0 + 1 {
                return Err(WalError::MissingSegment {
                    location: disk.location(pair[0].0.next()),
                });
            }
        }
        for &(id, len) in &listed {
            if len >= 1 << 32 || id.0 >= 1 << 32 {
                return Err(WalError::BadSegmentSize {
                    location: disk.location(id),
                    len_bytes: len,
                });
            }
            disk.open(id).map_err(io_err("map", disk.location(id)))?;
        }
        let (groups, outcome) = {
            let images: Vec<(SegmentId, &[u8])> =
                listed.iter().map(|&(id, _)| (id, disk.bytes(id))).collect();
            let bytes: usize = images.iter().map(|(_, b)| b.len()).sum();
            recover(&images, recovery_threads(config.recovery_threads, bytes))
        };
        let outcome = outcome.map_err(|c| WalError::Corruption {
            location: disk.location(c.segment),
            offset: c.offset,
            reason: c.reason,
            proof: c.proof,
        })?;
        let mut report = RecoveryReport {
            segments_scanned: listed.len(),
            records: outcome.records,
            torn_tail: outcome
                .torn
                .as_ref()
                .map(|t| (disk.location(t.segment), t.offset, t.reason.clone())),
            discarded_segments: Vec::new(),
        };
        // Discard never-durable segments after the end, newest first (no gap on a crash).
        let (end_segment, new_segment) = match outcome.end {
            recovery::End::Open { segment, .. } => (segment, None),
            recovery::End::NewSegment { id } => (id, Some(id)),
        };
        let mut to_remove: Vec<SegmentId> = outcome.discard.clone();
        if let Some(id) = new_segment {
            if listed.iter().any(|&(l, _)| l == id) {
                to_remove.push(id);
            }
        }
        to_remove.sort_unstable();
        for &id in to_remove.iter().rev() {
            report.discarded_segments.push(disk.location(id));
            disk.remove(id)
                .map_err(io_err("remove", disk.location(id)))?;
        }
        if let Some(t) = &report.torn_tail {
            tracing::warn!(location = %t.0, offset = t.1, reason = %t.2, "WAL ended at a torn tail; truncated there");
        }
        let mut segments: VecDeque<SegmentId> = listed
            .iter()
            .map(|&(id, _)| id)
            .filter(|&id| id <= end_segment && !to_remove.contains(&id))
            .collect();
        let cursor = match outcome.end {
            recovery::End::Open {
                segment,
                offset,
                dirty,
            } => {
                // Segments are created at their full length, so a shorter file was cut
                // (outside the WAL): grow it back, so appends and the seal that ends it fit
                // again past the end of the log.
                let declared =
                    match record::decode(disk.bytes(segment), 0, record::segment_seed(segment.0)) {
                        record::Decoded::Record(h) => record::fixed_field(h.body, 2),
                        _ => 0,
                    };
                if (disk.bytes(segment).len() as u64) < declared {
                    let location = disk.location(segment);
                    if declared >= 1 << 32 {
                        return Err(WalError::BadSegmentSize {
                            location,
                            len_bytes: declared,
                        });
                    }
                    tracing::warn!(location = %location, len = disk.bytes(segment).len(), declared, "WAL segment was cut short; grown back to its length");
                    disk.extend(segment, declared as usize)
                        .map_err(io_err("extend", location))?;
                }
                let len = disk.bytes(segment).len();
                if dirty {
                    let zeros = vec![0u8; (len - offset).min(1 << 20)];
                    let mut at = offset;
                    while at < len {
                        let n = (len - at).min(zeros.len());
                        disk.write(segment, at, &zeros[..n])
                            .map_err(io_err("write", disk.location(segment)))?;
                        at += n;
                    }
                    disk.sync_blocking(segment)
                        .map_err(io_err("sync", disk.location(segment)))?;
                }
                segment::Cursor {
                    segment,
                    offset,
                    len_bytes: len,
                }
            }
            recovery::End::NewSegment { id } => {
                let len = config.segment_size_bytes;
                let have = listed.iter().any(|&(l, _)| l == id) && !to_remove.contains(&id);
                if !have {
                    disk.prepare(id, len, header_record(id, len))
                        .map_err(io_err("prepare", disk.location(id)))?;
                }
                disk.wait_prepared(id)
                    .map_err(io_err("prepare", disk.location(id)))?;
                segments.push_back(id);
                segment::Cursor {
                    segment: id,
                    offset: SEGMENT_HEADER_RECORD_LEN,
                    len_bytes: disk.bytes(id).len(),
                }
            }
        };
        if segments.back() != Some(&cursor.segment) {
            segments.push_back(cursor.segment);
        }
        // The scan is over: the pages it mapped need not stay in this process (a segment
        // prepared after the end of the log, kept for the next roll, included).
        for id in listed
            .iter()
            .map(|&(id, _)| id)
            .filter(|id| !to_remove.contains(id))
        {
            disk.release_pages(id)
                .map_err(io_err("map", disk.location(id)))?;
        }
        let position = cursor.lsn();
        let mut wal = Wal {
            disk,
            cache: CacheBudget::new(config.cache_bytes),
            config,
            seed: record::segment_seed(cursor.segment.0),
            cursor,
            segments,
            dirty: Vec::new(),
            appended: position,
            durable: position,
            syncs_in_flight: VecDeque::new(),
            syncs_completed: 0,
            poisoned: None,
            space_shortage: None,
            groups,
            stage: Vec::new(),
            shadow: HashMap::default(),
            pending_gc: None,
            needed: None,
            recovery: report,
        };
        wal.request_prepared();
        #[cfg(debug_assertions)]
        wal.check_invariants();
        Ok(wal)
    }

    fn io(&self, op: &'static str, id: SegmentId) -> impl FnOnce(io::Error) -> WalError {
        let location = self.disk.location(id);
        move |source| WalError::Io {
            op,
            location,
            source,
        }
    }

    /// Asks the disk to prepare the segments after the active one (non-blocking for
    /// `MmapDisk`). A request that fails at once is recorded as a space shortage.
    fn request_prepared(&mut self) {
        for k in 1..=self.config.prepared_segments.max(1) as u64 {
            let id = SegmentId(self.cursor.segment.0 + k);
            let len = self.config.segment_size_bytes;
            if let Err(e) = self.disk.prepare(id, len, header_record(id, len)) {
                self.note_shortage(id, &e);
            }
        }
    }

    /// Records that segment `id` cannot be prepared (logged once per shortage).
    fn note_shortage(&mut self, id: SegmentId, e: &io::Error) {
        if self.space_shortage.is_none() {
            let full = e.kind() == io::ErrorKind::StorageFull;
            let reason = format!(
                "cannot prepare WAL segment {}: {e}{}",
                self.disk.location(id),
                if full { " (the disk is full)" } else { "" }
            );
            tracing::error!(%reason, "WAL cannot get new segments: writes that need log space are refused until preparation succeeds; free space on the disk, it is retried");
            self.space_shortage = Some(reason);
        }
    }

    /// Why the log cannot get new segments now (the disk is full ...), or `None`. While
    /// set, a writer should refuse new work that needs log space: appends that fit the
    /// segments already prepared still succeed, one that needs a new segment is refused
    /// whole with `WalError::Io { op: "prepare", .. }`.
    pub fn space_shortage(&self) -> Option<&str> {
        self.space_shortage.as_deref()
    }

    /// Checks, without waiting, that the segments ahead are prepared, and asks again for
    /// those whose preparation failed. Call it now and then (its frequency is the retry
    /// rate after a failure); it clears `space_shortage` once every segment ahead is ready.
    pub fn check_prepared(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        // Idempotent for segments already prepared or in preparation; asks again for those
        // whose preparation failed (reported once by `poll_prepared`).
        let ready = self.poll_ahead() || {
            self.request_prepared();
            self.poll_ahead()
        };
        if ready {
            if let Some(reason) = self.space_shortage.take() {
                tracing::info!(was = %reason, "WAL segments prepared again: log space is available");
            }
        }
    }

    /// Whether every segment ahead is prepared (without waiting); records failures.
    fn poll_ahead(&mut self) -> bool {
        let mut ready = true;
        for k in 1..=self.config.prepared_segments.max(1) as u64 {
            let id = SegmentId(self.cursor.segment.0 + k);
            match self.disk.poll_prepared(id) {
                Ok(true) => {}
                Ok(false) => ready = false,
                Err(e) => {
                    self.note_shortage(id, &e);
                    ready = false;
                }
            }
        }
        ready
    }

    /// Waits until every segment requested ahead is created (call it off the hot path,
    /// e.g. right after `open`, so the first segment roll never waits).
    pub fn prepare_segments(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        for k in 1..=self.config.prepared_segments.max(1) as u64 {
            let id = SegmentId(self.cursor.segment.0 + k);
            self.disk
                .wait_prepared(id)
                .map_err(self.io("prepare", id))?;
        }
        Ok(())
    }

    /// What recovery found when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(reason) => Err(WalError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Everything appended so far ends before this position.
    pub fn appended_lsn(&self) -> Lsn {
        self.appended
    }

    /// Everything before this position is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// The position the syncs in flight make durable once they are all done (that of the
    /// newest one); `None` when none is in flight.
    pub fn in_flight_sync_target(&self) -> Option<Lsn> {
        self.syncs_in_flight.back().copied()
    }

    /// How many syncs are in flight (begun by `begin_sync`, not yet `on_sync_done`).
    pub fn syncs_in_flight(&self) -> usize {
        self.syncs_in_flight.len()
    }

    /// Syncs completed since open (one per `on_sync_done` success).
    pub fn syncs_completed(&self) -> u64 {
        self.syncs_completed
    }

    /// The largest `Batch::len_bytes` one `append` takes (a batch must fit one segment with
    /// its header and sync marks); a writer splits larger turns into several appends.
    pub fn max_batch_bytes(&self) -> usize {
        self.config
            .segment_size_bytes
            .saturating_sub(SEGMENT_HEADER_RECORD_LEN + 2 * SYNC_MARK_RECORD_LEN)
    }

    /// Bytes of the segments holding log data (each `segment_size_bytes` or more).
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|id| self.disk.bytes(*id).len() as u64)
            .sum()
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Checks a batch against the current logs without changing anything.
    fn validate(&mut self, batch: &Batch<'_>) -> Result<(), WalError> {
        let mut shadow = std::mem::take(&mut self.shadow);
        shadow.clear();
        let result = self.validate_with(batch, &mut shadow);
        self.shadow = shadow;
        result
    }

    /// `validate` with `shadow` (empty): (base, last) of each group as the batch leaves it.
    fn validate_with(
        &self,
        batch: &Batch<'_>,
        shadow: &mut HashMap<GroupId, (LogIndex, LogIndex), GroupHasher>,
    ) -> Result<(), WalError> {
        for op in &batch.ops {
            let group = match op {
                Op::Entries { group, .. }
                | Op::HardState { group, .. }
                | Op::Truncate { group, .. }
                | Op::Compact { group, .. }
                | Op::Snapshot { group, .. } => *group,
            };
            let (base, last) = *shadow.entry(group).or_insert_with(|| {
                self.groups
                    .get(&group)
                    .map_or((LogIndex(0), LogIndex(0)), |g| (g.base.index, g.last))
            });
            let invalid = |source| WalError::InvalidOperation { group, source };
            let next = match *op {
                Op::Entries { first, count, .. } => {
                    GroupLog::check_append(base, last, first).map_err(invalid)?;
                    (base, LogIndex(first.0 + count as u64 - 1))
                }
                Op::HardState { .. } => (base, last),
                Op::Truncate { from, .. } => {
                    if from.0 <= base.0 {
                        return Err(invalid(LogOpError::BelowBase { index: from, base }));
                    }
                    (base, LogIndex(last.0.min(from.0 - 1)))
                }
                Op::Compact { below, .. } => {
                    if below.0 > last.0 + 1 {
                        return Err(invalid(LogOpError::CompactPastLast { below, last }));
                    }
                    (LogIndex(base.0.max(below.0.saturating_sub(1))), last)
                }
                Op::Snapshot { at, .. } => (at.index, at.index),
            };
            shadow.insert(group, next);
        }
        Ok(())
    }

    /// Writes a batch to the active segment and returns the position a sync must reach for it
    /// to be durable. Never waits. An invalid batch is refused whole.
    pub fn append(&mut self, batch: &Batch<'_>) -> Result<Lsn, WalError> {
        self.check_poisoned()?;
        self.validate(batch)?;
        crate::crash_point!("wal-append");
        let need = SYNC_MARK_RECORD_LEN + batch.len_bytes;
        if need > self.cursor.room() {
            let max_bytes = self
                .config
                .segment_size_bytes
                .saturating_sub(SEGMENT_HEADER_RECORD_LEN + SYNC_MARK_RECORD_LEN);
            if need > max_bytes {
                return Err(WalError::BatchTooLarge {
                    len_bytes: need,
                    max_bytes,
                });
            }
            self.roll()?;
        }
        let seg = self.cursor.segment;
        if self.dirty.last() != Some(&seg) {
            self.dirty.push(seg);
        }
        let seed = self.seed;
        let base = self.cursor.offset;
        let durable = self.durable.0;
        let batch_end = (base + need) as u64;
        // Encoded into the stage at offsets relative to `base`, then written at once.
        let mut stage = std::mem::take(&mut self.stage);
        stage.clear();
        stage.resize(need, 0);
        let mut at = base
            + record::put_fixed(
                &mut stage,
                0,
                RecordKind::SyncMark,
                GroupId(0),
                &[durable, batch_end],
                seed,
            );
        // Written up to here (a segment offset).
        let mut flushed = base;
        let mut written = Ok(());
        for op in &batch.ops {
            if matches!(op, Op::Compact { .. }) && at > flushed && written.is_ok() {
                // A compaction records the term before it, which `term` may read back from
                // the mapping: entries of this batch must be there first (compactions are
                // rare: one extra write each).
                written = self
                    .disk
                    .write(seg, flushed, &stage[flushed - base..at - base]);
                flushed = at;
            }
            at = self.apply_op(batch, op, at, base, &mut stage);
        }
        debug_assert_eq!(at - base, need, "batch size estimate is wrong");
        if written.is_ok() {
            written = self.disk.write(seg, flushed, &stage[flushed - base..]);
        }
        self.stage = stage;
        if let Err(e) = written {
            // The index already holds the batch: nothing after this can be trusted.
            let reason = format!("write of a batch at {seg}+{base} failed: {e}");
            tracing::error!(%reason, "WAL poisoned");
            self.poisoned = Some(reason.clone());
            return Err(WalError::Poisoned { reason });
        }
        self.cursor.offset = at;
        self.appended = self.cursor.lsn();
        crate::crash_point!("wal-appended");
        Ok(self.appended)
    }

    /// Encodes one op for segment offset `at` into `stage` (which starts at segment offset
    /// `base`) and applies it to the index and cache; returns the offset after it.
    fn apply_op(
        &mut self,
        batch: &Batch<'_>,
        op: &Op,
        at: usize,
        base: usize,
        stage: &mut [u8],
    ) -> usize {
        let seg = self.cursor.segment;
        let seed = self.seed;
        let rel = at - base;
        match *op {
            Op::Entries {
                group,
                first,
                start,
                count,
            } => {
                let entries = &batch.entries[start..start + count];
                let run = Run {
                    first,
                    count: count as u32,
                    offset: at as u32,
                    segment: seg,
                };
                // One lookup for the index and the cache. `append` drops entries (cached
                // ones too) at `first` and after.
                let g = self.groups.entry(group).or_default();
                if let Err(e) = g.append(run) {
                    panic!("validated entries refused by the index of group {group}: {e}");
                }
                record::put_entries_prefix(stage, rel, first, count as u32);
                let mut p = rel + HEADER_LEN + record::ENTRIES_PREFIX_LEN;
                for (i, (term, payload)) in entries.iter().enumerate() {
                    let location = cache::Location {
                        segment: seg,
                        offset: (base + p + record::ENTRY_HEADER_LEN) as u32,
                        len: payload.len() as u32,
                    };
                    p = record::put_entry(stage, p, *term, payload);
                    g.cache.insert(
                        &mut self.cache,
                        LogIndex(first.0 + i as u64),
                        *term,
                        location,
                    );
                }
                base + record::seal_record(
                    stage,
                    rel,
                    RecordKind::Entries,
                    group,
                    p - rel - HEADER_LEN,
                    seed,
                )
            }
            Op::HardState { group, hs } => {
                let next = base
                    + record::put_fixed(
                        stage,
                        rel,
                        RecordKind::HardState,
                        group,
                        &[hs.term.0, hs.vote, hs.commit.0],
                        seed,
                    );
                self.groups
                    .entry(group)
                    .or_default()
                    .set_hard_state(hs, seg);
                next
            }
            Op::Truncate { group, from } => {
                let next = base
                    + record::put_fixed(
                        stage,
                        rel,
                        RecordKind::TruncateSuffix,
                        group,
                        &[from.0],
                        seed,
                    );
                if let Err(e) = self.groups.entry(group).or_default().truncate_from(from) {
                    panic!("validated truncation refused by the index of group {group}: {e}");
                }
                next
            }
            Op::Compact { group, below } => {
                let g = self.groups.entry(group).or_default();
                let (below, term) = if below.0 <= g.first().0 {
                    (g.first(), g.base.term)
                } else {
                    let prev = LogIndex(below.0 - 1);
                    match self.term(group, prev) {
                        Ok(t) => (below, t),
                        Err(e) => {
                            panic!("term of live entry {prev} of group {group} unreadable: {e}")
                        }
                    }
                };
                let next = base
                    + record::put_fixed(
                        stage,
                        rel,
                        RecordKind::Compact,
                        group,
                        &[below.0, term.0],
                        seed,
                    );
                self.groups
                    .entry(group)
                    .or_default()
                    .compact(below, term, seg);
                next
            }
            Op::Snapshot { group, at: id } => {
                let next = base
                    + record::put_fixed(
                        stage,
                        rel,
                        RecordKind::SnapshotMark,
                        group,
                        &[id.index.0, id.term.0],
                        seed,
                    );
                self.groups.entry(group).or_default().snapshot(id, seg);
                next
            }
        }
    }

    /// Seals the active segment and moves to the next prepared one. When there is none
    /// (its preparation failed: a full disk ...) nothing changes and the error is returned.
    fn roll(&mut self) -> Result<(), WalError> {
        let next = self.cursor.segment.next();
        if let Err(e) = self.disk.wait_prepared(next) {
            self.note_shortage(next, &e);
            return Err(self.io("prepare", next)(e));
        }
        let seg = self.cursor.segment;
        let end = self.cursor.lsn().0;
        let at = self.cursor.offset;
        let seed = self.seed;
        let mut seal = [0u8; record::SEAL_RECORD_LEN];
        record::put_fixed(&mut seal, 0, RecordKind::Seal, GroupId(0), &[end], seed);
        if let Err(e) = self.disk.write(seg, at, &seal) {
            let reason = format!("write of the seal of {seg} failed: {e}");
            tracing::error!(%reason, "WAL poisoned");
            self.poisoned = Some(reason.clone());
            return Err(WalError::Poisoned { reason });
        }
        if self.dirty.last() != Some(&seg) {
            self.dirty.push(seg);
        }
        tracing::info!(sealed = %seg, next = %next, "WAL segment rolled");
        self.cursor = segment::Cursor {
            segment: next,
            offset: SEGMENT_HEADER_RECORD_LEN,
            len_bytes: self.disk.bytes(next).len(),
        };
        self.seed = record::segment_seed(next.0);
        self.segments.push_back(next);
        self.request_prepared();
        // Once per segment, groups that stopped appending let go of evicted cache entries.
        for g in self.groups.values_mut() {
            g.cache.trim(&self.cache);
        }
        Ok(())
    }

    /// Starts a sync of everything appended so far. `None` when `syncs_in_flight` syncs
    /// are in flight already, or nothing appended waits for one. Await `SyncJob::run`,
    /// then call `on_sync_done`; with several in flight, in the order they began.
    ///
    /// A second sync in flight fdatasyncs the segments written since the first began. It
    /// may complete first, but it is reported after the first (`on_sync_done` takes them
    /// in order), so a position is never called durable before every sync that covers
    /// bytes below it completed.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob>, WalError> {
        self.check_poisoned()?;
        let covered = self.in_flight_sync_target().unwrap_or(self.durable);
        if self.syncs_in_flight.len() >= self.config.syncs_in_flight.max(1)
            || self.appended <= covered
        {
            return Ok(None);
        }
        let target = self.appended;
        let mut syncs = Vec::with_capacity(self.dirty.len());
        for seg in std::mem::take(&mut self.dirty) {
            syncs.push(self.disk.sync(seg));
        }
        self.syncs_in_flight.push_back(target);
        Ok(Some(SyncJob { target, syncs }))
    }

    /// Completes the oldest sync in flight (started by `begin_sync`) with the result of
    /// its `SyncJob::run`. A failure poisons the log; it is never retried (the kernel may
    /// have dropped the dirty pages it failed to write).
    pub fn on_sync_done(&mut self, target: Lsn, result: io::Result<()>) -> Result<Lsn, WalError> {
        assert_eq!(
            self.syncs_in_flight.front().copied(),
            Some(target),
            "on_sync_done for a sync that is not the oldest in flight"
        );
        self.syncs_in_flight.pop_front();
        if let Err(e) = result {
            let reason = format!("fdatasync up to {target} failed: {e}");
            tracing::error!(%reason, "WAL poisoned");
            self.poisoned = Some(reason);
            return Err(WalError::Poisoned {
                reason: self.poisoned.clone().unwrap_or_default(),
            });
        }
        self.check_poisoned()?;
        assert!(
            target >= self.durable,
            "durable position would go back from {} to {target}",
            self.durable
        );
        self.durable = target;
        self.syncs_completed += 1;
        Ok(target)
    }

    /// Makes everything appended so far durable (single owner; see `SharedWal` for many
    /// tasks sharing one log).
    pub async fn sync(&mut self) -> Result<Lsn, WalError> {
        if let Some(job) = self.begin_sync()? {
            let target = job.target();
            let result = job.run().await;
            self.on_sync_done(target, result)?;
        }
        self.check_poisoned()?;
        Ok(self.durable)
    }

    /// Syncs, appends a final `SyncMark` recording that everything is durable, syncs it
    /// too, and returns the disk. Recovery can then tell rot in the last batch from a
    /// torn write.
    pub async fn close(mut self) -> Result<D, WalError> {
        self.sync().await?;
        self.append(&Batch::default())?;
        self.sync().await?;
        Ok(self.disk)
    }

    /// The disk, as it is (no sync): what a crash leaves for `MemDisk` tests.
    pub fn into_disk(self) -> D {
        self.disk
    }

    /// The disk, for inspection.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The disk, e.g. to inject faults into a `MemDisk`.
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    /// Ids of the groups with anything in the log.
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// First live index of `group` (1 for an empty, never compacted log).
    pub fn first_index(&self, group: GroupId) -> LogIndex {
        self.groups.get(&group).map_or(LogIndex(1), GroupLog::first)
    }

    /// Last index of `group` (`first_index - 1` when empty).
    pub fn last_index(&self, group: GroupId) -> LogIndex {
        self.groups.get(&group).map_or(LogIndex(0), |g| g.last)
    }

    /// Gives back what `group`'s index holds beyond its needs, for a group going idle among
    /// thousands: the spare capacity of its runs, and its cache (its entries are read from
    /// the mapping instead until its next append caches them again).
    pub fn release_group_buffers(&mut self, group: GroupId) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.runs.shrink_to_fit();
            g.cache.clear();
        }
    }

    /// The latest hard state of `group`.
    pub fn hard_state(&self, group: GroupId) -> Option<HardState> {
        self.groups.get(&group).and_then(|g| g.hard_state)
    }

    /// The snapshot or compaction point of `group`: the entry just before the first one.
    pub fn base(&self, group: GroupId) -> LogId {
        self.groups.get(&group).map_or(LogId::default(), |g| g.base)
    }

    fn check_range(&self, group: GroupId, index: LogIndex) -> Result<&GroupLog, WalError> {
        self.check_poisoned()?;
        let g = self.groups.get(&group);
        let (first, last) = g.map_or((LogIndex(1), LogIndex(0)), |g| (g.first(), g.last));
        if index.0 < first.0 {
            return Err(WalError::Compacted {
                group,
                index,
                first,
            });
        }
        if index.0 > last.0 {
            return Err(WalError::Unavailable { group, index, last });
        }
        g.ok_or(WalError::Unavailable { group, index, last })
    }

    /// Reads the record of a run from the mapping, verifying its checksum.
    fn run_record(
        &self,
        group: GroupId,
        index: LogIndex,
    ) -> Result<(record::RecordView<'_>, LogIndex), WalError> {
        let g = self.check_range(group, index)?;
        let Some(run) = g.run_of(index) else {
            panic!("group {group}: live index {index} has no run");
        };
        let run_last = run.last();
        let bytes = self.disk.bytes(run.segment);
        match record::decode(
            bytes,
            run.offset as usize,
            record::segment_seed(run.segment.0),
        ) {
            record::Decoded::Record(r) if r.kind == RecordKind::Entries && r.group == group => {
                Ok((r, run_last))
            }
            other => Err(WalError::Corruption {
                location: self.disk.location(run.segment),
                offset: run.offset as usize,
                reason: format!("entries of group {group} do not read back: {other:?}"),
                proof: self.durable,
            }),
        }
    }

    /// The term of entry `index` of `group` (the base entry's term included).
    pub fn term(&self, group: GroupId, index: LogIndex) -> Result<Term, WalError> {
        if let Some(g) = self.groups.get(&group) {
            if index == g.base.index {
                self.check_poisoned()?;
                return Ok(g.base.term);
            }
        } else if index.0 == 0 {
            return Ok(Term(0));
        }
        let cached = self.groups.get(&group);
        if let Some((term, _)) = cached.and_then(|g| g.cache.get(&self.cache, index)) {
            self.check_range(group, index)?;
            return Ok(term);
        }
        let (r, _) = self.run_record(group, index)?;
        record::entries_iter(r.body)
            .find(|(i, _, _)| *i == index)
            .map(|(_, t, _)| t)
            .ok_or(WalError::Unavailable {
                group,
                index,
                last: self.last_index(group),
            })
    }

    /// Appends entries `range` of `group` to `out`: recent ones from the cache, older ones
    /// read back from the mapping.
    pub fn entries(
        &self,
        group: GroupId,
        range: Range<LogIndex>,
        out: &mut Vec<Entry>,
    ) -> Result<(), WalError> {
        if range.start.0 >= range.end.0 {
            return Ok(());
        }
        self.check_range(group, range.start)?;
        let cache = &self.check_range(group, LogIndex(range.end.0 - 1))?.cache;
        let mut index = range.start;
        while index.0 < range.end.0 {
            if let Some((term, at)) = cache.get(&self.cache, index) {
                let (start, len) = (at.offset as usize, at.len as usize);
                let payload = &self.disk.bytes(at.segment)[start..start + len];
                out.push(Entry {
                    index,
                    term,
                    payload: payload.to_vec(),
                });
                index = LogIndex(index.0 + 1);
                continue;
            }
            // NOTE: a record may hold entries past its run that a later record replaced.
            let (r, run_last) = self.run_record(group, index)?;
            for (i, term, payload) in record::entries_iter(r.body) {
                if i.0 >= index.0 && i.0 < range.end.0 && i.0 <= run_last.0 {
                    out.push(Entry {
                        index: i,
                        term,
                        payload: payload.to_vec(),
                    });
                    index = LogIndex(i.0 + 1);
                }
            }
        }
        Ok(())
    }

    /// Deletes segments no group needs (once that is durable) and rewrites cold groups
    /// that pin old segments. Call it now and then, e.g. after a sync.
    pub fn collect_garbage(&mut self) -> Result<GcReport, WalError> {
        self.check_poisoned()?;
        let mut report = GcReport::default();
        if let Some((lsn, below)) = self.pending_gc {
            if self.durable >= lsn {
                self.pending_gc = None;
                while let Some(&oldest) = self.segments.front() {
                    if oldest >= below || oldest >= self.cursor.segment {
                        break;
                    }
                    crate::crash_point!("wal-gc-before-remove");
                    self.disk
                        .retire(oldest)
                        .map_err(self.io("remove", oldest))?;
                    self.segments.pop_front();
                    tracing::info!(segment = %oldest, "WAL segment retired (kept as a spare or deleted)");
                    report.segments_removed.push(oldest);
                }
            }
        }
        // Rewriting needs log space: not while new segments cannot be prepared.
        if self.segments.len() > self.config.max_old_segments + 1 && self.space_shortage.is_none() {
            if let Some(&oldest) = self.segments.front() {
                self.rewrite_groups_pinning(oldest, &mut report)?;
                if report.groups_rewritten > 0 {
                    // What pinned the oldest segment moved on: look again now.
                    self.needed = None;
                }
            }
        }
        if self.pending_gc.is_none() {
            let needed = match self.needed {
                Some(n) if !n.stale(self.appended, self.cursor.segment) => {
                    self.needed = Some(n.skipped());
                    n.needed
                }
                _ => {
                    let needed = gc::oldest_needed(&self.groups, self.cursor.segment);
                    self.needed = Some(NeededAt {
                        at: self.appended,
                        active: self.cursor.segment,
                        needed,
                        skips: 0,
                    });
                    needed
                }
            };
            if self.segments.front().is_some_and(|&s| s < needed) {
                self.pending_gc = Some((self.appended, needed));
            }
        }
        Ok(report)
    }

    /// Rewrites the live records of the groups pinning `segment` at the log's head.
    fn rewrite_groups_pinning(
        &mut self,
        segment: SegmentId,
        report: &mut GcReport,
    ) -> Result<(), WalError> {
        crate::crash_point!("wal-rewrite");
        let budget = self.config.rewrite_budget_bytes;
        for group in gc::groups_pinning(&self.groups, segment) {
            let Some(g) = self.groups.get(&group) else {
                continue;
            };
            let (first, last, base, hs) = (g.first(), g.last, g.base, g.hard_state);
            let mut entries = Vec::new();
            if last.0 >= first.0 {
                self.entries(group, first..LogIndex(last.0 + 1), &mut entries)?;
            }
            let mut batch = Batch::with_capacity(entries.len());
            if base.index.0 > 0 {
                batch.snapshot_mark(group, base.index, base.term);
            }
            batch.entries(
                group,
                first,
                entries.iter().map(|e| (e.term, e.payload.as_slice())),
            );
            if let Some(hs) = hs {
                batch.hard_state(group, hs);
            }
            if batch.len_bytes() > self.max_batch_bytes() {
                // A rewrite is one batch (replayed whole or not at all) and a batch lives in
                // one segment: a group whose live log is larger keeps pinning the segment
                // until it compacts. GC is only an optimization.
                continue;
            }
            if report.bytes_rewritten + batch.len_bytes() > budget && report.groups_rewritten > 0 {
                break;
            }
            match self.append(&batch) {
                Ok(_) => {}
                // No room for it now (nothing was written): GC is only an optimization.
                Err(e) if e.is_prepare_failure() => break,
                Err(e) => return Err(e),
            }
            report.bytes_rewritten += batch.len_bytes();
            report.groups_rewritten += 1;
        }
        Ok(())
    }

    /// Checks the index, cache and positions (debug builds and tests).
    pub fn check_invariants(&self) {
        assert!(
            self.durable <= self.appended,
            "durable {} past appended {}",
            self.durable,
            self.appended
        );
        assert_eq!(
            self.segments.back(),
            Some(&self.cursor.segment),
            "active segment not last"
        );
        assert!(self.cursor.offset % 8 == 0 && self.cursor.offset <= self.cursor.len_bytes);
        for g in self.groups.values() {
            g.check_invariants();
            for r in &g.runs {
                assert!(
                    self.segments.contains(&r.segment),
                    "run {r:?} in a deleted segment"
                );
            }
            g.cache.check_invariants(&self.cache, g.base.index, g.last);
            for segment in g.cache.segments() {
                assert!(
                    self.segments.contains(&segment),
                    "cached entry in deleted segment {segment}"
                );
            }
        }
    }
}

/// Wakes the tasks waiting for a sync to finish.
#[derive(Default)]
struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

struct Notified {
    notify: Rc<Notify>,
    generation: u64,
}

impl Future for Notified {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.notify.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Lets every other ready task run once.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One WAL shared by many tasks of one executor, with group commit: `sync_to(lsn)` joins
/// the sync in flight or starts the next one, so one fdatasync covers every task's
/// appends made before it began.
///
/// Its tasks complete syncs as they end, so the log runs one sync at a time
/// (`WalConfig::syncs_in_flight` is taken as 1).
pub struct SharedWal<D: Disk = MmapDisk> {
    wal: Rc<RefCell<Wal<D>>>,
    notify: Rc<Notify>,
}

impl<D: Disk> Clone for SharedWal<D> {
    fn clone(&self) -> Self {
        SharedWal {
            wal: self.wal.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<D: Disk> SharedWal<D> {
    pub fn new(mut wal: Wal<D>) -> SharedWal<D> {
        wal.config.syncs_in_flight = 1;
        SharedWal {
            wal: Rc::new(RefCell::new(wal)),
            notify: Rc::new(Notify::default()),
        }
    }

    /// The log, for reads and other calls (never hold the borrow across an await).
    pub fn wal(&self) -> &RefCell<Wal<D>> {
        &self.wal
    }

    pub fn append(&self, batch: &Batch<'_>) -> Result<Lsn, WalError> {
        self.wal.borrow_mut().append(batch)
    }

    /// Waits until everything before `lsn` is durable.
    ///
    /// Before starting a new sync the task yields once, so that every other task already
    /// woken (e.g. by the previous sync) appends first and rides on the same fdatasync.
    /// Do not drop this future while it runs a sync: the log would wait for its completion
    /// forever.
    pub async fn sync_to(&self, lsn: Lsn) -> Result<Lsn, WalError> {
        let mut yielded = false;
        loop {
            if !yielded {
                let idle = {
                    let wal = self.wal.borrow();
                    wal.syncs_in_flight.is_empty() && wal.durable_lsn() < lsn
                };
                if idle {
                    yielded = true;
                    YieldNow(false).await;
                    continue;
                }
            }
            let job = {
                let mut wal = self.wal.borrow_mut();
                wal.check_poisoned()?;
                if wal.durable_lsn() >= lsn {
                    return Ok(wal.durable_lsn());
                }
                assert!(
                    lsn <= wal.appended_lsn(),
                    "sync_to({lsn}) past the appended position"
                );
                wal.begin_sync()?
            };
            match job {
                Some(job) => {
                    let target = job.target();
                    let result = job.run().await;
                    let done = self.wal.borrow_mut().on_sync_done(target, result);
                    self.notify.notify_all();
                    done?;
                }
                None => {
                    let generation = self.notify.generation.get();
                    Notified {
                        notify: self.notify.clone(),
                        generation,
                    }
                    .await;
                }
            }
        }
    }
}
