//! The storage seam under the WAL: `trait Disk` (list, prepare, map, sync, remove),
//! `MmapDisk` (real files, memmap2 mappings, fdatasync through glommio's io_uring) and
//! `MemDisk` (feature `testing`: written and durable bytes kept apart, crash and fault
//! injection). The WAL never touches a file except through this trait.
#![expect(
    unsafe_code,
    reason = "memory-mapping segment files (memmap2) is unsafe by nature"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use memmap2::{Mmap, MmapOptions};

use crate::segment::SegmentId;

/// A sync in progress; resolves once the bytes written before it began are durable.
pub type SyncFuture = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// What the WAL needs from storage. Segments are fixed-size byte arrays, mapped for
/// reading; writes go through `write` (one per batch) and become durable only through
/// `sync`.
pub trait Disk {
    /// The segments present, sorted by id, with their length in bytes.
    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>>;
    /// Maps an existing segment; returns its length.
    fn open(&mut self, id: SegmentId) -> io::Result<usize>;
    /// Starts creating a segment of `len_bytes` zero bytes that begins with `header`; the
    /// creation (file, contents and directory entry) is durable before `wait_prepared`
    /// returns. May work in the background.
    fn prepare(&mut self, id: SegmentId, len_bytes: usize, header: Vec<u8>) -> io::Result<()>;
    /// Waits until a prepared segment is created and mapped.
    fn wait_prepared(&mut self, id: SegmentId) -> io::Result<()>;
    /// Whether a segment asked for with `prepare` is ready, without waiting: `Ok(true)`
    /// created and mapped, `Ok(false)` still being prepared, `Err` its preparation failed
    /// (reported once; `prepare` it again to retry) or it was never asked for.
    fn poll_prepared(&mut self, id: SegmentId) -> io::Result<bool>;
    /// The bytes of a mapped segment. Panics if `id` is not mapped (a WAL bug).
    fn bytes(&self, id: SegmentId) -> &[u8];
    /// Writes `bytes` at `offset` of segment `id` (within its length); `bytes` reads them
    /// back at once, `sync` makes them durable.
    fn write(&mut self, id: SegmentId, offset: usize, bytes: &[u8]) -> io::Result<()>;
    /// Starts making everything written to `id` so far durable.
    fn sync(&mut self, id: SegmentId) -> SyncFuture;
    /// Makes everything written to `id` durable, blocking (recovery only).
    fn sync_blocking(&mut self, id: SegmentId) -> io::Result<()>;
    /// Grows an open segment that was cut short back to `len_bytes` (zeros after its
    /// bytes), durably, and maps it again (recovery only).
    fn extend(&mut self, id: SegmentId, len_bytes: usize) -> io::Result<()>;
    /// Deletes a segment durably (directory synced): recovery's discards, which must be
    /// gone before the log grows again.
    fn remove(&mut self, id: SegmentId) -> io::Result<()>;
    /// Deletes a segment no group needs any more (GC). Unlike `remove` it may return
    /// before the deletion is durable, or done: a dead segment found again after a crash
    /// is harmless. `MmapDisk` hands it to its background thread, which keeps up to
    /// [`MAX_SPARES`] such files for reuse (see `preparer`).
    fn retire(&mut self, id: SegmentId) -> io::Result<()> {
        self.remove(id)
    }
    /// Where a segment lives, for messages (a path for real files).
    fn location(&self, id: SegmentId) -> String;
    /// The segment's bytes will not be read in bulk again (recovery has scanned them): let
    /// go of the pages this process holds for them. Reading still works (page by page).
    fn release_pages(&mut self, _id: SegmentId) -> io::Result<()> {
        Ok(())
    }
}

/// How `MmapDisk` issues `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// Through glommio's io_uring: the executor keeps running other tasks meanwhile.
    #[default]
    Uring,
    /// A direct `fdatasync(2)` on the executor thread, which stalls every task of the
    /// core until it returns. Only for measuring, or a core with nothing else to do.
    Blocking,
}

/// A mapped segment file.
struct Mapped {
    /// `None` for an empty file (nothing to map).
    map: Option<Mmap>,
    file: Rc<File>,
    path: PathBuf,
    /// The glommio handle used for `fdatasync` through io_uring, opened on first sync.
    uring: Rc<std::cell::RefCell<Option<Rc<glommio::io::BufferedFile>>>>,
}

struct PrepareJob {
    id: SegmentId,
    len_bytes: usize,
    header: Vec<u8>,
}

/// Work for the background thread, in the order the WAL asked for it.
enum Job {
    Prepare(PrepareJob),
    /// A segment file GC gave up (see `Disk::retire`).
    Retire(PathBuf),
}

type Prepared = (SegmentId, io::Result<(File, Mmap)>);

/// Zeros are written this many bytes at a time when a segment is prepared, each chunk
/// fdatasynced before the next: the preparation never queues tens of megabytes in front of
/// the WAL's own fdatasync on the same disk.
const PREPARE_CHUNK: usize = 1 << 20;
/// The pause after each chunk while nobody waits for the segment (see `PrepareShared`).
const PREPARE_PAUSE: Duration = Duration::from_millis(2);
/// Removed segment files kept for reuse (named `<id>.wal.spare`); more are unlinked.
pub const MAX_SPARES: usize = 2;
/// The longest a preparation waits for a spare file to reuse before it creates a new one.
const SPARE_PATIENCE_MAX: Duration = Duration::from_secs(3);
/// How often a waiting preparation looks for a spare.
const SPARE_POLL: Duration = Duration::from_millis(20);

/// What the shard thread and the preparer thread share.
#[derive(Default)]
struct PrepareShared {
    /// Removed segment files ready to be reused, oldest first.
    spares: Mutex<Vec<PathBuf>>,
    /// Set while the WAL blocks in `wait_prepared`: the preparer neither pauses nor waits
    /// for a spare.
    hurry: AtomicBool,
}

impl PrepareShared {
    fn take_spare(&self) -> Option<PathBuf> {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        (!spares.is_empty()).then(|| spares.remove(0))
    }

    fn hurried(&self) -> bool {
        self.hurry.load(Ordering::Relaxed)
    }
}

/// The preparer thread: one job at a time, in order.
///
/// A job first looks for a spare (a removed segment file): reusing one writes over blocks
/// the file system already allocated, so nothing is allocated, trimmed or journaled, and
/// the WAL's concurrent fdatasyncs see only the chunked zero writes. On this VM's ext4
/// (mounted with `discard`), preparing a new 64 MiB file in one go stalled a concurrent
/// fdatasync for 28–32 ms, and unlinking one for 12–18 ms. Without a spare, a job that is
/// not urgent waits a while for one (GC usually frees a segment soon after a roll): a
/// quarter of the time since the previous job, at most [`SPARE_PATIENCE_MAX`], cut short
/// when the WAL starts waiting. Then it creates a new file.
fn preparer(
    dir: &Path,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Prepared>,
    shared: &PrepareShared,
) {
    let mut queued: VecDeque<PrepareJob> = VecDeque::new();
    let mut last_job: Option<Instant> = None;
    loop {
        let job = match queued.pop_front() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(Job::Prepare(job)) => job,
                Ok(Job::Retire(path)) => {
                    retire_file(dir, &path, shared);
                    continue;
                }
                Err(_) => return,
            },
        };
        let now = Instant::now();
        let patience = last_job
            .map_or(Duration::ZERO, |t| (now - t) / 4)
            .min(SPARE_PATIENCE_MAX);
        last_job = Some(now);
        let mut spare = shared.take_spare();
        while spare.is_none() && now.elapsed() < patience && !shared.hurried() {
            match jobs.recv_timeout(SPARE_POLL) {
                Ok(Job::Prepare(job)) => queued.push_back(job),
                Ok(Job::Retire(path)) => retire_file(dir, &path, shared),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The log is gone: nobody will use the segment.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            spare = shared.take_spare();
        }
        let result = match spare {
            Some(spare) => reuse_segment(dir, &spare, &job, shared).or_else(|e| {
                tracing::warn!(spare = %spare.display(), error = %e, "cannot reuse a WAL segment file; creating a new one");
                // NOTE: best effort; `list` forgets spares beyond `MAX_SPARES` at the next open.
                let _ = std::fs::remove_file(&spare);
                create_segment(dir, &job, shared)
            }),
            None => create_segment(dir, &job, shared),
        };
        shared.hurry.store(false, Ordering::Relaxed);
        if done.send((job.id, result)).is_err() {
            return;
        }
    }
}

/// Keeps a retired segment file as a spare (renamed `<id>.wal.spare`) or, with
/// `MAX_SPARES` kept already, unlinks it; then syncs the directory. A failure costs only
/// disk space (the file's bytes are dead): it is logged, not reported.
fn retire_file(dir: &Path, path: &Path, shared: &PrepareShared) {
    let keep = shared
        .spares
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len()
        < MAX_SPARES;
    let spare = path.with_extension("wal.spare");
    crate::crash_point!("wal-segment-retire");
    let result = if keep {
        std::fs::rename(path, &spare)
    } else {
        std::fs::remove_file(path)
    };
    let result = match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
    .and_then(|()| sync_dir(dir));
    match result {
        Ok(()) if keep => shared
            .spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(spare),
        Ok(()) => {}
        Err(e) => {
            tracing::error!(segment = %path.display(), error = %e, "cannot delete a dead WAL segment file");
        }
    }
}

/// Real segment files in one directory. Segments are prepared by a background thread
/// (zero-filled in fdatasynced chunks, renamed into place, directory fsynced, mapped), so
/// the append path never creates a file, and every page it writes (with `pwrite`) is
/// allocated on disk and in the page cache. The same thread retires the segments GC gives
/// up, keeping up to [`MAX_SPARES`] of them as spares to prepare later segments in (see
/// `preparer`).
///
/// Mappings are read-only and not populated, except an existing segment's while recovery
/// scans it (`open` maps it with `MAP_POPULATE`, `release_pages` maps it again without):
/// a running node reads its log back only now and then (a rewrite, a restart of a group),
/// so its page tables need not hold every segment's pages. With three 64 MiB segments
/// populated, a node's resident size carried 192 MiB of them at any number of ranges.
pub struct MmapDisk {
    dir: PathBuf,
    segments: BTreeMap<SegmentId, Mapped>,
    shared: Arc<PrepareShared>,
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Prepared>,
    pending: BTreeSet<SegmentId>,
    failed: HashMap<SegmentId, io::Error>,
    thread: Option<JoinHandle<()>>,
    sync_method: SyncMethod,
}

impl MmapDisk {
    /// Opens (creating if needed) a WAL directory.
    pub fn open_dir(dir: impl AsRef<Path>) -> io::Result<MmapDisk> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Prepared>();
        let thread_dir = dir.clone();
        let shared = Arc::new(PrepareShared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || preparer(&thread_dir, job_rx, done_tx, &thread_shared))?;
        Ok(MmapDisk {
            dir,
            segments: BTreeMap::new(),
            shared,
            jobs: Some(jobs),
            done,
            pending: BTreeSet::new(),
            failed: HashMap::new(),
            thread: Some(thread),
            sync_method: SyncMethod::Uring,
        })
    }

    /// Chooses how syncs are issued (default: io_uring).
    pub fn set_sync_method(&mut self, method: SyncMethod) {
        self.sync_method = method;
    }

    fn path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    fn insert(&mut self, id: SegmentId, file: File, map: Option<Mmap>) {
        let path = self.path(id);
        self.segments.insert(
            id,
            Mapped {
                map,
                file: Rc::new(file),
                path,
                uring: Rc::new(std::cell::RefCell::new(None)),
            },
        );
    }

    fn absorb(&mut self, (id, result): Prepared) {
        self.pending.remove(&id);
        match result {
            Ok((file, map)) => self.insert(id, file, Some(map)),
            Err(e) => {
                self.failed.insert(id, e);
            }
        }
    }

    fn mapped(&self, id: SegmentId) -> &Mapped {
        match self.segments.get(&id) {
            Some(m) => m,
            None => panic!("segment {id} is not mapped"),
        }
    }
}

impl Drop for MmapDisk {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            // NOTE: a panic in the preparer thread has already been reported; nothing to add.
            let _ = t.join();
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a segment; on failure (e.g. ENOSPC) removes the partial temporary file, so a
/// failed preparation leaves nothing behind to fill the disk further.
fn create_segment(
    dir: &Path,
    job: &PrepareJob,
    shared: &PrepareShared,
) -> io::Result<(File, Mmap)> {
    let tmp = dir.join(format!("{}.tmp", job.id.file_name()));
    let result = write_segment(dir, &tmp, job, shared);
    if result.is_err() {
        // NOTE: best effort; `list` removes leftover `.wal.tmp` files at the next open.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_segment(
    dir: &Path,
    tmp: &Path,
    job: &PrepareJob,
    shared: &PrepareShared,
) -> io::Result<(File, Mmap)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    fill_segment(&file, job, shared)?;
    install(dir, tmp, job, file)
}

/// Prepares segment `job.id` in a spare file: zero-filled again with the new header,
/// then renamed into place. Until the rename it is still a spare (a crash meanwhile
/// leaves a spare, never a half-written segment).
fn reuse_segment(
    dir: &Path,
    spare: &Path,
    job: &PrepareJob,
    shared: &PrepareShared,
) -> io::Result<(File, Mmap)> {
    let file = OpenOptions::new().read(true).write(true).open(spare)?;
    let len = file.metadata()?.len();
    if len != job.len_bytes as u64 {
        return Err(io::Error::other(format!(
            "it holds {len} bytes, segments now hold {}",
            job.len_bytes
        )));
    }
    fill_segment(&file, job, shared)?;
    install(dir, spare, job, file)
}

/// Writes the header and zeros over the whole segment, `PREPARE_CHUNK` at a time, each
/// chunk fdatasynced and (unless the WAL waits) followed by `PREPARE_PAUSE`; then syncs
/// the file whole. Real zeros, not fallocate: the blocks are written and allocated now,
/// so a later fdatasync of the WAL flushes data only and never converts unwritten extents
/// (a journal commit).
fn fill_segment(file: &File, job: &PrepareJob, shared: &PrepareShared) -> io::Result<()> {
    let zeros = vec![0u8; PREPARE_CHUNK];
    file.write_all_at(&job.header, 0)?;
    let mut at = job.header.len();
    while at < job.len_bytes {
        let n = (job.len_bytes - at).min(PREPARE_CHUNK);
        file.write_all_at(&zeros[..n], at as u64)?;
        at += n;
        if at < job.len_bytes {
            file.sync_data()?;
            if !shared.hurried() {
                std::thread::sleep(PREPARE_PAUSE);
            }
        }
    }
    file.sync_all()
}

/// Renames a filled segment file into place, syncs the directory and maps it.
fn install(dir: &Path, from: &Path, job: &PrepareJob, file: File) -> io::Result<(File, Mmap)> {
    crate::crash_point!("wal-segment-before-rename");
    std::fs::rename(from, dir.join(job.id.file_name()))?;
    crate::crash_point!("wal-segment-after-rename");
    sync_dir(dir)?;
    // SAFETY: the file is ours (the WAL directory is owned by one WAL) and stays open for
    // the mapping's lifetime; nobody truncates it while mapped. The mapping is read-only:
    // the WAL writes with `pwrite` on the same file, which the shared page cache makes
    // visible through the mapping at once. Not populated: see `MmapDisk`.
    let map = unsafe { MmapOptions::new().map(&file)? };
    Ok((file, map))
}

impl Disk for MmapDisk {
    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".wal.tmp") {
                // An interrupted preparation: never renamed into place, holds no data.
                std::fs::remove_file(entry.path())?;
                continue;
            }
            if name.ends_with(".wal.spare") {
                // A removed segment kept for reuse: its bytes are dead.
                let mut spares = self.shared.spares.lock().unwrap_or_else(|e| e.into_inner());
                let path = entry.path();
                if !spares.contains(&path) {
                    if spares.len() < MAX_SPARES {
                        spares.push(path);
                    } else {
                        std::fs::remove_file(path)?;
                    }
                }
                continue;
            }
            if let Some(id) = SegmentId::from_file_name(name) {
                out.push((id, entry.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn open(&mut self, id: SegmentId) -> io::Result<usize> {
        let path = self.path(id);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        let map = if len == 0 {
            None
        } else {
            // SAFETY: as in `create_segment`: our file, open for the mapping's lifetime.
            // MAP_POPULATE: recovery reads every page at once; one populate call is far
            // cheaper than a fault per page.
            Some(unsafe { MmapOptions::new().populate().map(&file)? })
        };
        self.insert(id, file, map);
        Ok(len)
    }

    fn prepare(&mut self, id: SegmentId, len_bytes: usize, header: Vec<u8>) -> io::Result<()> {
        if self.segments.contains_key(&id) || self.pending.contains(&id) {
            return Ok(());
        }
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("preparer stopped"))?;
        jobs.send(Job::Prepare(PrepareJob {
            id,
            len_bytes,
            header,
        }))
        .map_err(|_| io::Error::other("segment preparer thread exited"))?;
        self.pending.insert(id);
        Ok(())
    }

    fn wait_prepared(&mut self, id: SegmentId) -> io::Result<()> {
        while let Ok(done) = self.done.try_recv() {
            self.absorb(done);
        }
        while !self.segments.contains_key(&id) {
            if let Some(e) = self.failed.remove(&id) {
                return Err(e);
            }
            if !self.pending.contains(&id) {
                return Err(io::Error::other(format!("segment {id} was never prepared")));
            }
            self.shared.hurry.store(true, Ordering::Relaxed);
            let done = self
                .done
                .recv()
                .map_err(|_| io::Error::other("segment preparer thread exited"))?;
            self.absorb(done);
        }
        Ok(())
    }

    fn poll_prepared(&mut self, id: SegmentId) -> io::Result<bool> {
        while let Ok(done) = self.done.try_recv() {
            self.absorb(done);
        }
        if self.segments.contains_key(&id) {
            return Ok(true);
        }
        if let Some(e) = self.failed.remove(&id) {
            return Err(e);
        }
        if self.pending.contains(&id) {
            return Ok(false);
        }
        Err(io::Error::other(format!("segment {id} was never prepared")))
    }

    fn bytes(&self, id: SegmentId) -> &[u8] {
        self.mapped(id).map.as_deref().unwrap_or(&[])
    }

    fn write(&mut self, id: SegmentId, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let m = self.mapped(id);
        if offset + bytes.len() > m.map.as_ref().map_or(0, |m| m.len()) {
            return Err(io::Error::other(format!(
                "write of {} bytes at {offset} past the end of segment {id}",
                bytes.len()
            )));
        }
        m.file.write_all_at(bytes, offset as u64)
    }

    fn sync(&mut self, id: SegmentId) -> SyncFuture {
        let m = self.mapped(id);
        if self.sync_method == SyncMethod::Blocking {
            let file = m.file.clone();
            return Box::pin(async move { file.sync_data() });
        }
        let slot = m.uring.clone();
        let path = m.path.clone();
        Box::pin(async move {
            let cached = slot.borrow().clone();
            let file = match cached {
                Some(f) => f,
                None => {
                    let f = Rc::new(glommio::io::BufferedFile::open(&path).await?);
                    *slot.borrow_mut() = Some(f.clone());
                    f
                }
            };
            // fdatasync on any descriptor of the inode flushes the pages `write` dirtied.
            file.fdatasync().await?;
            Ok(())
        })
    }

    fn sync_blocking(&mut self, id: SegmentId) -> io::Result<()> {
        self.mapped(id).file.sync_data()
    }

    fn extend(&mut self, id: SegmentId, len_bytes: usize) -> io::Result<()> {
        let m = self
            .segments
            .get_mut(&id)
            .ok_or_else(|| io::Error::other(format!("segment {id} is not open")))?;
        // Unmapped while the file changes length; mapped again at the new length.
        m.map = None;
        m.file.set_len(len_bytes as u64)?;
        m.file.sync_all()?;
        // SAFETY: as in `create_segment`: our file, open for the mapping's lifetime.
        m.map = Some(unsafe { MmapOptions::new().populate().map(&*m.file)? });
        Ok(())
    }

    fn release_pages(&mut self, id: SegmentId) -> io::Result<()> {
        let m = self
            .segments
            .get_mut(&id)
            .ok_or_else(|| io::Error::other(format!("segment {id} is not open")))?;
        if m.map.is_some() {
            // Unmapping drops the page table entries `MAP_POPULATE` filled in (the page
            // cache keeps the pages); the new mapping faults pages in as they are read.
            m.map = None;
            // SAFETY: as in `create_segment`: our file, open for the mapping's lifetime.
            m.map = Some(unsafe { MmapOptions::new().map(&*m.file)? });
        }
        Ok(())
    }

    fn remove(&mut self, id: SegmentId) -> io::Result<()> {
        self.segments.remove(&id);
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&self.dir)
    }

    fn retire(&mut self, id: SegmentId) -> io::Result<()> {
        self.segments.remove(&id);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("preparer stopped"))?;
        jobs.send(Job::Retire(self.path(id)))
            .map_err(|_| io::Error::other("segment preparer thread exited"))
    }

    fn location(&self, id: SegmentId) -> String {
        self.path(id).display().to_string()
    }
}

#[cfg(feature = "testing")]
pub use mem::{Crash, MemDisk};

#[cfg(feature = "testing")]
mod mem {
    use super::*;

    /// How a simulated crash treats the bytes written but not yet synced.
    #[derive(Debug, Clone, Copy)]
    pub enum Crash {
        /// Nothing unsynced survives.
        DropUnsynced,
        /// Every 512-byte sector that changed since the last sync survives or not, chosen
        /// by a seeded generator: mapped pages reach the disk in any order.
        RandomSectors { seed: u64 },
        /// Of each segment's unsynced changes, the first `keep_bytes` survive: a torn write.
        TearUnsynced { keep_bytes: usize },
    }

    #[derive(Debug, Clone)]
    struct MemSegment {
        written: Vec<u8>,
        durable: Vec<u8>,
    }

    /// An in-memory disk for crash tests and the cluster simulator. `written` is what the
    /// process sees through its mapping; `durable` is what survives a crash. A `sync`
    /// copies one into the other when it starts; a completed sync reports success.
    #[derive(Debug, Clone, Default)]
    pub struct MemDisk {
        segments: BTreeMap<SegmentId, MemSegment>,
        /// Operations left before every operation fails; `None`: never fail.
        fail_countdown: Option<u64>,
        /// While set, `prepare` fails with ENOSPC (a full disk) and creates nothing.
        full: bool,
        /// While set, every `write` fails with EIO and changes nothing.
        fail_writes: bool,
        syncs: u64,
    }

    impl MemDisk {
        pub fn new() -> MemDisk {
            MemDisk::default()
        }

        /// After `ops` more successful operations (list, open, prepare, sync, remove),
        /// every operation fails with an I/O error.
        pub fn fail_after(&mut self, ops: u64) {
            self.fail_countdown = Some(ops);
        }

        /// While `full`, every `prepare` fails with ENOSPC ("No space left on device") and
        /// creates nothing; everything else works (a full disk: written blocks stay
        /// writable, new files cannot be created).
        pub fn set_full(&mut self, full: bool) {
            self.full = full;
        }

        /// While set, every `write` fails with an I/O error and changes nothing (the
        /// countdown of `fail_after` does not count writes).
        pub fn set_fail_writes(&mut self, fail: bool) {
            self.fail_writes = fail;
        }

        /// How many syncs were started.
        pub fn sync_count(&self) -> u64 {
            self.syncs
        }

        fn tick(&mut self, what: &str) -> io::Result<()> {
            match &mut self.fail_countdown {
                Some(0) => Err(io::Error::other(format!("injected {what} failure"))),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }

        /// The disk as it is after a crash: durable bytes plus what `how` lets survive.
        /// Failure injection is cleared (a new process).
        pub fn crash(&self, how: Crash) -> MemDisk {
            let mut rng = match how {
                Crash::RandomSectors { seed } => seed | 1,
                _ => 1,
            };
            let mut segments = BTreeMap::new();
            for (&id, seg) in &self.segments {
                let mut after = seg.durable.clone();
                match how {
                    Crash::DropUnsynced => {}
                    Crash::RandomSectors { .. } => {
                        for (i, sector) in seg.written.chunks(512).enumerate() {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            if rng & 1 == 1 {
                                after[i * 512..i * 512 + sector.len()].copy_from_slice(sector);
                            }
                        }
                    }
                    Crash::TearUnsynced { keep_bytes } => {
                        if let Some(first) = seg
                            .written
                            .iter()
                            .zip(&seg.durable)
                            .position(|(a, b)| a != b)
                        {
                            let end = (first + keep_bytes).min(seg.written.len());
                            after[first..end].copy_from_slice(&seg.written[first..end]);
                        }
                    }
                }
                segments.insert(
                    id,
                    MemSegment {
                        written: after.clone(),
                        durable: after,
                    },
                );
            }
            MemDisk {
                segments,
                fail_countdown: None,
                full: false,
                fail_writes: false,
                syncs: 0,
            }
        }

        /// Flips one bit of what is on disk (both views).
        pub fn flip_bit(&mut self, id: SegmentId, offset: usize, bit: u8) {
            let seg = self
                .segments
                .get_mut(&id)
                .expect("flip_bit: no such segment");
            seg.written[offset] ^= 1 << (bit % 8);
            seg.durable[offset] ^= 1 << (bit % 8);
        }

        /// Cuts a segment to `len` bytes (both views).
        pub fn truncate_segment(&mut self, id: SegmentId, len: usize) {
            let seg = self
                .segments
                .get_mut(&id)
                .expect("truncate_segment: no such segment");
            seg.written.truncate(len);
            seg.durable.truncate(len);
        }

        /// Puts a segment with exactly these bytes on the disk (fuzzing, hand-made damage).
        pub fn put_segment(&mut self, id: SegmentId, bytes: Vec<u8>) {
            self.segments.insert(
                id,
                MemSegment {
                    written: bytes.clone(),
                    durable: bytes,
                },
            );
        }

        /// Deletes a segment without the WAL knowing.
        pub fn delete_segment(&mut self, id: SegmentId) {
            self.segments.remove(&id);
        }

        /// Ids of the segments present.
        pub fn segment_ids(&self) -> Vec<SegmentId> {
            self.segments.keys().copied().collect()
        }

        /// The durable bytes of a segment.
        pub fn durable_bytes(&self, id: SegmentId) -> Option<&[u8]> {
            self.segments.get(&id).map(|s| s.durable.as_slice())
        }
    }

    impl Disk for MemDisk {
        fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
            self.tick("list")?;
            Ok(self
                .segments
                .iter()
                .map(|(&id, s)| (id, s.durable.len() as u64))
                .collect())
        }

        fn open(&mut self, id: SegmentId) -> io::Result<usize> {
            self.tick("open")?;
            self.segments
                .get(&id)
                .map(|s| s.written.len())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("segment {id} not found"))
                })
        }

        fn prepare(&mut self, id: SegmentId, len_bytes: usize, header: Vec<u8>) -> io::Result<()> {
            self.tick("prepare")?;
            if self.full {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let mut bytes = vec![0u8; len_bytes];
            bytes[..header.len()].copy_from_slice(&header);
            self.segments.insert(
                id,
                MemSegment {
                    written: bytes.clone(),
                    durable: bytes,
                },
            );
            Ok(())
        }

        fn wait_prepared(&mut self, id: SegmentId) -> io::Result<()> {
            if self.segments.contains_key(&id) {
                Ok(())
            } else {
                Err(io::Error::other(format!("segment {id} was never prepared")))
            }
        }

        fn poll_prepared(&mut self, id: SegmentId) -> io::Result<bool> {
            self.wait_prepared(id).map(|()| true)
        }

        fn bytes(&self, id: SegmentId) -> &[u8] {
            match self.segments.get(&id) {
                Some(s) => &s.written,
                None => panic!("segment {id} is not mapped"),
            }
        }

        fn write(&mut self, id: SegmentId, offset: usize, bytes: &[u8]) -> io::Result<()> {
            if self.fail_writes {
                return Err(io::Error::other("injected write failure"));
            }
            let seg = self
                .segments
                .get_mut(&id)
                .ok_or_else(|| io::Error::other(format!("write to missing segment {id}")))?;
            let end = offset + bytes.len();
            let Some(dst) = seg.written.get_mut(offset..end) else {
                return Err(io::Error::other(format!(
                    "write of {} bytes at {offset} past the end of segment {id}",
                    bytes.len()
                )));
            };
            dst.copy_from_slice(bytes);
            Ok(())
        }

        fn sync(&mut self, id: SegmentId) -> SyncFuture {
            self.syncs += 1;
            let result = self.sync_blocking(id);
            Box::pin(std::future::ready(result))
        }

        fn sync_blocking(&mut self, id: SegmentId) -> io::Result<()> {
            self.tick("sync")?;
            let seg = self
                .segments
                .get_mut(&id)
                .ok_or_else(|| io::Error::other(format!("sync of missing segment {id}")))?;
            seg.durable.clone_from(&seg.written);
            Ok(())
        }

        fn extend(&mut self, id: SegmentId, len_bytes: usize) -> io::Result<()> {
            self.tick("extend")?;
            let seg = self
                .segments
                .get_mut(&id)
                .ok_or_else(|| io::Error::other(format!("extend of missing segment {id}")))?;
            seg.written.resize(len_bytes, 0);
            seg.durable.resize(len_bytes, 0);
            Ok(())
        }

        fn remove(&mut self, id: SegmentId) -> io::Result<()> {
            self.tick("remove")?;
            self.segments.remove(&id);
            Ok(())
        }

        fn location(&self, id: SegmentId) -> String {
            format!("mem:{id}")
        }
    }
}
