//! Where a shard keeps the latest snapshot of each of its groups, and the snapshot file's
//! format: the Raft metadata (last included entry, membership) and the range's own
//! checksummed snapshot bytes (`RangeState::encode_snapshot`), with a CRC32C over the whole.
//!
//! ```text
//!  0      4     6      8          12        16 ...                        len-4
//!  | QSNF | ver | 0    | meta len | 0       | rkyv SnapshotFileMeta | range bytes | crc32c |
//! ```
//!
//! `SnapshotStore::save` replaces a group's snapshot atomically (write to a temporary file,
//! fsync, rename, fsync the directory); the store writes it before the WAL record that
//! compacts the log below it, so a durable compaction always has its snapshot.
//!
//! `SnapshotStore::save_in_background` does the same off the shard's thread: a file of a
//! large range (tens of megabytes) takes a write and an fsync of hundreds of milliseconds,
//! longer than an election timeout, and a shard thread held that long stops heartbeating
//! every group it leads. `DirSnapshots` hands such files to one writer thread per store, in
//! order; the store learns of each from `finished_saves` (polled every turn) and
//! only then compacts the log. Every other change to the directory waits for the writes
//! started before it, so all changes land in the order they were asked for.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use quasar_rpc::message::GroupId;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::raft::{ConfState, LogId, LogIndex, NodeId, SnapshotMeta, Term};

const MAGIC: [u8; 4] = *b"QSNF";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 16;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct SnapshotFileMeta {
    group: u64,
    index: u64,
    term: u64,
    voters: Vec<u64>,
    voters_outgoing: Vec<u64>,
    learners: Vec<u64>,
}

/// A decoded snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub group: GroupId,
    pub meta: SnapshotMeta,
    /// The range's snapshot (`RangeState::decode_snapshot` checks it again).
    pub range_bytes: Vec<u8>,
}

/// Why snapshot file bytes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file is {len} bytes, too short for its header and checksum")]
    Truncated { len: usize },
    #[error("not a Quasar snapshot file (bad magic or version)")]
    BadHeader,
    #[error("snapshot file checksum mismatch (expected {expected:#010x}, got {actual:#010x})")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot file metadata does not decode: {reason}")]
    Invalid { reason: String },
}

impl SnapshotFile {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        SnapshotFile::encode_with(self.group, &self.meta, self.range_bytes.len(), |out| {
            out.extend_from_slice(&self.range_bytes);
            crc32c::crc32c(&self.range_bytes)
        })
    }

    /// The bytes of `group`'s snapshot file, its range part appended in place by `range`
    /// (which returns the CRC32C of what it appended; `RangeState::encode_snapshot_into`),
    /// so a large range is serialized once, straight into the file's buffer, and read once
    /// for its checksums. `range_hint` sizes the buffer.
    pub fn encode_with(
        group: GroupId,
        meta: &SnapshotMeta,
        range_hint: usize,
        range: impl FnOnce(&mut Vec<u8>) -> u32,
    ) -> Vec<u8> {
        let (mut out, prefix_crc) = SnapshotFile::begin(group, meta, range_hint);
        let range_at = out.len();
        let range_crc = range(&mut out);
        SnapshotFile::finish(&mut out, prefix_crc, range_at, range_crc);
        out
    }

    /// The start of `group`'s snapshot file (header and metadata) in a buffer with room for
    /// `range_hint` more bytes, and its CRC32C: the range's bytes are appended next (at
    /// once or a slice at a time), then [`SnapshotFile::finish`] closes the file.
    pub fn begin(group: GroupId, meta: &SnapshotMeta, range_hint: usize) -> (Vec<u8>, u32) {
        let ids = |v: &[NodeId]| v.iter().map(|n| n.0).collect();
        let file_meta = SnapshotFileMeta {
            group: group.0,
            index: meta.last.index.0,
            term: meta.last.term.0,
            voters: ids(&meta.conf_state.voters),
            voters_outgoing: ids(&meta.conf_state.voters_outgoing),
            learners: ids(&meta.conf_state.learners),
        };
        let meta_bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&file_meta)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + meta_bytes.len() + range_hint + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&meta_bytes);
        let prefix_crc = crc32c::crc32c(&out);
        (out, prefix_crc)
    }

    /// Closes a file begun with [`SnapshotFile::begin`] (CRC32C `prefix_crc`) whose range
    /// bytes, from `range_at` to the end, have the CRC32C `range_crc`.
    pub fn finish(out: &mut Vec<u8>, prefix_crc: u32, range_at: usize, range_crc: u32) {
        let crc = crc32c::crc32c_combine(prefix_crc, range_crc, out.len() - range_at);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks file bytes.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, SnapshotFileError> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(SnapshotFileError::Truncated { len: bytes.len() });
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let actual = crc32c::crc32c(body);
        if expected != actual {
            return Err(SnapshotFileError::Checksum { expected, actual });
        }
        if body[0..4] != MAGIC || u16::from_le_bytes([body[4], body[5]]) != VERSION {
            return Err(SnapshotFileError::BadHeader);
        }
        let meta_len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let rest = &body[HEADER_LEN..];
        if meta_len > rest.len() {
            return Err(SnapshotFileError::Truncated { len: bytes.len() });
        }
        let mut aligned = AlignedVec::<16>::with_capacity(meta_len);
        aligned.extend_from_slice(&rest[..meta_len]);
        let meta =
            rkyv::from_bytes::<SnapshotFileMeta, rkyv::rancor::Error>(&aligned).map_err(|e| {
                SnapshotFileError::Invalid {
                    reason: e.to_string(),
                }
            })?;
        let ids = |v: &[u64]| v.iter().map(|n| NodeId(*n)).collect();
        Ok(SnapshotFile {
            group: GroupId(meta.group),
            meta: SnapshotMeta {
                last: LogId::new(Term(meta.term), LogIndex(meta.index)),
                conf_state: ConfState {
                    voters: ids(&meta.voters),
                    voters_outgoing: ids(&meta.voters_outgoing),
                    learners: ids(&meta.learners),
                },
            },
            range_bytes: rest[meta_len..].to_vec(),
        })
    }
}

/// A background save that finished (see [`SnapshotStore::save_in_background`]).
#[derive(Debug)]
pub struct FinishedSave {
    /// The caller's ticket for the save.
    pub ticket: u64,
    pub group: GroupId,
    /// `Ok` once the file is durable under its final name.
    pub result: io::Result<()>,
}

/// Keeps the latest snapshot file of each group.
pub trait SnapshotStore {
    /// Replaces `group`'s snapshot with `file`, durably and atomically (after every save
    /// started before it).
    fn save(&mut self, group: GroupId, file: &[u8]) -> io::Result<()>;
    /// Starts replacing `group`'s snapshot with `file` as [`SnapshotStore::save`] does, but
    /// without waiting for it: [`SnapshotStore::finished_saves`] reports it, with `ticket`.
    /// Until then `load` may return the previous file (never a partial one). Saves land in
    /// the order they were started, and every later change waits for them.
    fn save_in_background(&mut self, ticket: u64, group: GroupId, file: Vec<u8>);
    /// The background saves that finished since the last call, in the order they were
    /// started; with `wait`, first waits until every one started has finished.
    fn finished_saves(&mut self, wait: bool) -> Vec<FinishedSave>;
    /// The bytes of `group`'s latest snapshot, if any.
    fn load(&self, group: GroupId) -> io::Result<Option<Vec<u8>>>;
    /// Where `group`'s snapshot lives, for messages.
    fn location(&self, group: GroupId) -> String;
    /// Every group with a snapshot, in group order.
    fn groups(&self) -> io::Result<Vec<GroupId>>;
    /// Deletes `group`'s snapshot (its range was merged away), durably.
    fn remove(&mut self, group: GroupId) -> io::Result<()>;
    /// Records, durably, that `group` was destroyed here: it is never created again.
    fn bury(&mut self, group: GroupId) -> io::Result<()>;
    /// Every group buried here.
    fn buried(&self) -> io::Result<Vec<GroupId>>;
    /// Records, durably, that this node's replica of `group` was removed from the group's
    /// membership: it is not re-created at start, but may be added back later.
    fn mark_removed(&mut self, group: GroupId) -> io::Result<()>;
    /// Forgets the mark of [`SnapshotStore::mark_removed`] (the replica was added back).
    fn unmark_removed(&mut self, group: GroupId) -> io::Result<()>;
    /// Every group marked removed here.
    fn removed(&self) -> io::Result<Vec<GroupId>>;
    /// Records, durably, the vote floor of this node's replicas of `group` (see
    /// [`crate::raft::Restored::vote_floor`]): the last entry of a replica removed with
    /// its log. It outlives the removal mark: a replica added back keeps it.
    fn save_floor(&mut self, group: GroupId, floor: LogId) -> io::Result<()>;
    /// Every vote floor recorded here, in group order; a damaged record is an error that
    /// names its file.
    fn floors(&self) -> io::Result<Vec<(GroupId, LogId)>>;
}

/// A vote floor's file: term and index (little-endian `u64`s), then the CRC32C of both.
const FLOOR_FILE_LEN: usize = 20;

fn encode_floor(floor: LogId) -> [u8; FLOOR_FILE_LEN] {
    let mut out = [0u8; FLOOR_FILE_LEN];
    out[..8].copy_from_slice(&floor.term.0.to_le_bytes());
    out[8..16].copy_from_slice(&floor.index.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_floor(bytes: &[u8]) -> Result<LogId, String> {
    let Ok(bytes) = <&[u8; FLOOR_FILE_LEN]>::try_from(bytes) else {
        return Err(format!(
            "{} bytes, a vote floor takes {FLOOR_FILE_LEN}",
            bytes.len()
        ));
    };
    let (words, crc) = bytes.split_at(16);
    let (term, index) = words.split_at(8);
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(words);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(LogId::new(Term(word(term)), LogIndex(word(index))))
}

/// Snapshot files in a directory: `{group:016x}.snap`.
#[derive(Debug)]
pub struct DirSnapshots {
    dir: PathBuf,
    /// The writer thread of background saves, started by the first one.
    writer: Option<Writer>,
    /// Saves finished but not yet reported.
    finished: Vec<FinishedSave>,
}

/// The thread writing background saves, one after the other.
#[derive(Debug)]
struct Writer {
    jobs: Option<mpsc::Sender<(u64, GroupId, Vec<u8>)>>,
    done: mpsc::Receiver<FinishedSave>,
    /// Saves sent and not yet received back, in order.
    in_flight: std::collections::VecDeque<(u64, GroupId)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DirSnapshots {
    /// Waits for the background saves: a store closing cleanly leaves no file half-written.
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            w.jobs = None;
            if let Some(t) = w.thread.take() {
                // NOTE: a writer that panicked has nothing left to wait for.
                let _ = t.join();
            }
        }
    }
}

/// Where `group`'s snapshot file lives in `dir`.
fn snap_path(dir: &Path, group: GroupId) -> PathBuf {
    dir.join(format!("{:016x}.snap", group.0))
}

/// Writes `file` as `path` atomically and durably: a temporary file written and synced,
/// renamed over `path`, the directory synced.
fn write_atomically(dir: &Path, path: &Path, file: &[u8]) -> io::Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = path.with_extension(format!("{ext}.tmp"));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(file)?;
        f.sync_data()
    });
    if let Err(e) = written {
        // A partial file (ENOSPC ...) must not keep the space it took.
        // NOTE: best effort; the previous snapshot file is untouched either way.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    quasar_wal::crash_point!("snapshot-before-rename");
    fs::rename(&tmp, path)?;
    quasar_wal::crash_point!("snapshot-after-rename");
    fs::File::open(dir)?.sync_all()
}

impl DirSnapshots {
    /// Uses (and creates) `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<DirSnapshots> {
        fs::create_dir_all(dir.as_ref())?;
        Ok(DirSnapshots {
            dir: dir.as_ref().to_path_buf(),
            writer: None,
            finished: Vec::new(),
        })
    }

    /// Collects finished background saves; with `wait`, until none is in flight.
    fn collect(&mut self, wait: bool) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        while !w.in_flight.is_empty() {
            let next = if wait {
                w.done.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
            } else {
                w.done.try_recv()
            };
            match next {
                Ok(done) => {
                    w.in_flight.pop_front();
                    self.finished.push(done);
                }
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // The writer thread is gone (it panicked): what it had not reported
                    // failed, and the next save starts a new one.
                    for (ticket, group) in w.in_flight.drain(..) {
                        self.finished.push(FinishedSave {
                            ticket,
                            group,
                            result: Err(io::Error::other("the snapshot writer thread stopped")),
                        });
                    }
                    self.writer = None;
                    return;
                }
            }
        }
    }

    /// Waits for the background saves before another change to the directory.
    fn settle(&mut self) {
        self.collect(true);
    }

    fn path(&self, group: GroupId) -> PathBuf {
        snap_path(&self.dir, group)
    }

    /// Groups with a file named `{group:016x}{suffix}`, in group order.
    fn list(&self, suffix: &str) -> io::Result<Vec<GroupId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(suffix)) else {
                continue;
            };
            if let Ok(g) = u64::from_str_radix(hex, 16) {
                out.push(GroupId(g));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl SnapshotStore for DirSnapshots {
    fn save(&mut self, group: GroupId, file: &[u8]) -> io::Result<()> {
        self.settle();
        write_atomically(&self.dir, &self.path(group), file)
    }

    fn save_in_background(&mut self, ticket: u64, group: GroupId, file: Vec<u8>) {
        if self.writer.is_none() {
            let (jobs, rx) = mpsc::channel::<(u64, GroupId, Vec<u8>)>();
            let (tx, done) = mpsc::channel();
            let dir = self.dir.clone();
            let thread = std::thread::Builder::new()
                .name("quasar-snapshots".into())
                .spawn(move || {
                    for (ticket, group, file) in rx.iter() {
                        let result = write_atomically(&dir, &snap_path(&dir, group), &file);
                        drop(file);
                        if tx
                            .send(FinishedSave {
                                ticket,
                                group,
                                result,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            match thread {
                Ok(t) => {
                    self.writer = Some(Writer {
                        jobs: Some(jobs),
                        done,
                        in_flight: Default::default(),
                        thread: Some(t),
                    })
                }
                Err(e) => {
                    // No thread to be had: the save fails like a write would, and the store
                    // retries later.
                    self.finished.push(FinishedSave {
                        ticket,
                        group,
                        result: Err(e),
                    });
                    return;
                }
            }
        }
        let sent = self.writer.as_mut().and_then(|w| {
            let jobs = w.jobs.as_ref()?;
            jobs.send((ticket, group, file)).ok()?;
            w.in_flight.push_back((ticket, group));
            Some(())
        });
        if sent.is_none() {
            self.finished.push(FinishedSave {
                ticket,
                group,
                result: Err(io::Error::other("the snapshot writer thread stopped")),
            });
        }
    }

    fn finished_saves(&mut self, wait: bool) -> Vec<FinishedSave> {
        self.collect(wait);
        std::mem::take(&mut self.finished)
    }

    fn load(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(group)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn location(&self, group: GroupId) -> String {
        self.path(group).display().to_string()
    }

    fn groups(&self) -> io::Result<Vec<GroupId>> {
        self.list(".snap")
    }

    fn bury(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        let path = self.dir.join(format!("{:016x}.dead", group.0));
        fs::File::create(&path)?.sync_all()?;
        fs::File::open(&self.dir)?.sync_all()
    }

    fn buried(&self) -> io::Result<Vec<GroupId>> {
        self.list(".dead")
    }

    fn mark_removed(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        let path = self.dir.join(format!("{:016x}.gone", group.0));
        fs::File::create(&path)?.sync_all()?;
        quasar_wal::crash_point!("replica-gone-mark");
        fs::File::open(&self.dir)?.sync_all()
    }

    fn unmark_removed(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        match fs::remove_file(self.dir.join(format!("{:016x}.gone", group.0))) {
            Ok(()) => fs::File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn removed(&self) -> io::Result<Vec<GroupId>> {
        self.list(".gone")
    }

    fn save_floor(&mut self, group: GroupId, floor: LogId) -> io::Result<()> {
        self.settle();
        let path = self.dir.join(format!("{:016x}.floor", group.0));
        write_atomically(&self.dir, &path, &encode_floor(floor))
    }

    fn floors(&self) -> io::Result<Vec<(GroupId, LogId)>> {
        let mut out = Vec::new();
        for g in self.list(".floor")? {
            let path = self.dir.join(format!("{:016x}.floor", g.0));
            let floor = decode_floor(&fs::read(&path)?).map_err(|reason| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("vote floor {} is damaged: {reason}", path.display()),
                )
            })?;
            out.push((g, floor));
        }
        Ok(out)
    }

    fn remove(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        match fs::remove_file(self.path(group)) {
            Ok(()) => fs::File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Snapshots in memory, for the simulator (they survive simulated crashes: `save` is
/// durable at once).
#[derive(Debug, Default, Clone)]
pub struct MemSnapshots {
    files: HashMap<u64, Vec<u8>>,
    buried: std::collections::BTreeSet<u64>,
    removed: std::collections::BTreeSet<u64>,
    floors: std::collections::BTreeMap<u64, LogId>,
    /// Background saves not landed yet: (ticket, group, file, polls left).
    pending: std::collections::VecDeque<(u64, GroupId, Vec<u8>, u32)>,
    /// Landed background saves not reported yet: (ticket, group).
    finished: Vec<(u64, GroupId)>,
    /// How many `finished_saves` calls a background save takes to land (the simulator
    /// widens the window in which a save is under way).
    pub save_polls: u32,
}

impl MemSnapshots {
    /// Lands the oldest background save.
    fn land(&mut self) {
        if let Some((ticket, group, file, _)) = self.pending.pop_front() {
            self.files.insert(group.0, file);
            self.finished.push((ticket, group));
        }
    }

    /// Lands every background save now (before a change that must come after them).
    fn settle(&mut self) {
        while !self.pending.is_empty() {
            self.land();
        }
    }

    /// A crash: background saves not landed yet never happen.
    pub fn crash(&mut self) {
        self.pending.clear();
        self.finished.clear();
    }
}

impl SnapshotStore for MemSnapshots {
    fn save(&mut self, group: GroupId, file: &[u8]) -> io::Result<()> {
        self.settle();
        self.files.insert(group.0, file.to_vec());
        Ok(())
    }

    fn save_in_background(&mut self, ticket: u64, group: GroupId, file: Vec<u8>) {
        self.pending
            .push_back((ticket, group, file, self.save_polls));
    }

    fn finished_saves(&mut self, wait: bool) -> Vec<FinishedSave> {
        if wait {
            self.settle();
        } else {
            for p in self.pending.iter_mut() {
                p.3 = p.3.saturating_sub(1);
            }
            // In order: a save lands only after those started before it.
            while self.pending.front().is_some_and(|p| p.3 == 0) {
                self.land();
            }
        }
        self.finished
            .drain(..)
            .map(|(ticket, group)| FinishedSave {
                ticket,
                group,
                result: Ok(()),
            })
            .collect()
    }

    fn load(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.get(&group.0).cloned())
    }

    fn location(&self, group: GroupId) -> String {
        format!("memory snapshot of group {}", group.0)
    }

    fn groups(&self) -> io::Result<Vec<GroupId>> {
        let mut out: Vec<GroupId> = self.files.keys().map(|g| GroupId(*g)).collect();
        out.sort_unstable();
        Ok(out)
    }

    fn remove(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        self.files.remove(&group.0);
        Ok(())
    }

    fn bury(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        self.buried.insert(group.0);
        Ok(())
    }

    fn buried(&self) -> io::Result<Vec<GroupId>> {
        Ok(self.buried.iter().map(|g| GroupId(*g)).collect())
    }

    fn mark_removed(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        self.removed.insert(group.0);
        Ok(())
    }

    fn unmark_removed(&mut self, group: GroupId) -> io::Result<()> {
        self.settle();
        self.removed.remove(&group.0);
        Ok(())
    }

    fn removed(&self) -> io::Result<Vec<GroupId>> {
        Ok(self.removed.iter().map(|g| GroupId(*g)).collect())
    }

    fn save_floor(&mut self, group: GroupId, floor: LogId) -> io::Result<()> {
        self.settle();
        self.floors.insert(group.0, floor);
        Ok(())
    }

    fn floors(&self) -> io::Result<Vec<(GroupId, LogId)>> {
        Ok(self.floors.iter().map(|(g, f)| (GroupId(*g), *f)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        SnapshotFile {
            group: GroupId(7),
            meta: SnapshotMeta {
                last: LogId::new(Term(3), LogIndex(120)),
                conf_state: ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            },
            range_bytes: b"range snapshot bytes".to_vec(),
        }
    }

    #[test]
    fn a_file_round_trips_and_damage_is_refused() {
        let file = sample();
        let bytes = file.encode();
        assert_eq!(SnapshotFile::decode(&bytes), Ok(file));
        for at in [0, 5, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(SnapshotFile::decode(&bad).is_err(), "flip at {at} accepted");
        }
        assert!(matches!(
            SnapshotFile::decode(&bytes[..10]),
            Err(SnapshotFileError::Truncated { .. })
        ));
    }

    /// A range serialized in place into the file's buffer makes the same file (and the
    /// same checksum, combined rather than recomputed) as one encoded on its own first.
    #[test]
    fn a_range_encoded_in_place_makes_the_same_file() {
        let file = sample();
        let in_place = SnapshotFile::encode_with(file.group, &file.meta, 0, |out| {
            out.extend_from_slice(b"range ");
            out.extend_from_slice(b"snapshot bytes");
            crc32c::crc32c(b"range snapshot bytes")
        });
        assert_eq!(in_place, file.encode());
        assert_eq!(SnapshotFile::decode(&in_place), Ok(file));
    }

    #[test]
    fn dir_snapshots_replace_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = DirSnapshots::open(dir.path().join("snap")).expect("open");
        assert_eq!(store.load(GroupId(7)).expect("load"), None);
        store.save(GroupId(7), b"one").expect("save");
        store.save(GroupId(7), b"two").expect("save");
        assert_eq!(store.load(GroupId(7)).expect("load"), Some(b"two".to_vec()));
    }

    /// Background saves land in the order they were started, are reported once each, and
    /// every other change waits for them: a removal after a save removes the saved file.
    fn background_saves_keep_their_order(store: &mut dyn SnapshotStore) {
        store.save_in_background(1, GroupId(7), b"one".to_vec());
        store.save_in_background(2, GroupId(7), b"two".to_vec());
        store.save_in_background(3, GroupId(8), b"eight".to_vec());
        let done = store.finished_saves(true);
        let tickets: Vec<(u64, u64)> = done.iter().map(|d| (d.ticket, d.group.0)).collect();
        assert_eq!(tickets, vec![(1, 7), (2, 7), (3, 8)]);
        assert!(done.iter().all(|d| d.result.is_ok()));
        assert!(store.finished_saves(true).is_empty());
        assert_eq!(store.load(GroupId(7)).expect("load"), Some(b"two".to_vec()));
        store.save_in_background(4, GroupId(8), b"later".to_vec());
        store.remove(GroupId(8)).expect("remove");
        assert_eq!(store.load(GroupId(8)).expect("load"), None);
        let done = store.finished_saves(false);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].ticket, 4);
    }

    #[test]
    fn dir_snapshots_save_in_the_background_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = DirSnapshots::open(dir.path().join("snap")).expect("open");
        background_saves_keep_their_order(&mut store);
        // Closing waits for a save under way.
        store.save_in_background(5, GroupId(9), b"nine".to_vec());
        drop(store);
        let store = DirSnapshots::open(dir.path().join("snap")).expect("reopen");
        assert_eq!(
            store.load(GroupId(9)).expect("load"),
            Some(b"nine".to_vec())
        );
    }

    #[test]
    fn vote_floors_outlive_a_reopen_and_a_damaged_one_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap");
        let mut store = DirSnapshots::open(&path).expect("open");
        store
            .save_floor(GroupId(3), LogId::new(Term(4), LogIndex(75)))
            .expect("save");
        store
            .save_floor(GroupId(3), LogId::new(Term(5), LogIndex(80)))
            .expect("save again");
        store
            .save(GroupId(3), b"three")
            .expect("a snapshot beside it");
        drop(store);
        let mut store = DirSnapshots::open(&path).expect("reopen");
        assert_eq!(
            store.floors().expect("floors"),
            vec![(GroupId(3), LogId::new(Term(5), LogIndex(80)))]
        );
        // Neither the snapshot nor a removal mark touches it.
        store.mark_removed(GroupId(3)).expect("mark");
        store.unmark_removed(GroupId(3)).expect("unmark");
        assert_eq!(store.floors().expect("floors").len(), 1);
        assert_eq!(
            store.load(GroupId(3)).expect("load"),
            Some(b"three".to_vec())
        );
        let file = path.join(format!("{:016x}.floor", 3));
        let mut bytes = fs::read(&file).expect("read");
        bytes[9] ^= 0x01;
        fs::write(&file, &bytes).expect("damage");
        let err = store.floors().expect_err("a damaged floor is refused");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "the error does not name {}: {err}",
            file.display()
        );
        fs::write(&file, &bytes[..12]).expect("cut");
        assert!(store.floors().is_err(), "a cut floor file was accepted");
    }

    #[test]
    fn memory_snapshots_save_in_the_background_in_order() {
        let mut store = MemSnapshots {
            save_polls: 2,
            ..MemSnapshots::default()
        };
        background_saves_keep_their_order(&mut store);
        store.save_in_background(5, GroupId(9), b"nine".to_vec());
        assert!(store.finished_saves(false).is_empty());
        assert_eq!(store.load(GroupId(9)).expect("load"), None);
        assert_eq!(store.finished_saves(false).len(), 1);
        store.save_in_background(6, GroupId(10), b"ten".to_vec());
        store.crash();
        assert!(store.finished_saves(true).is_empty());
        assert_eq!(store.load(GroupId(10)).expect("load"), None);
    }
}
