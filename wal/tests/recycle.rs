//! Segment files retired by GC are kept as spares (`<id>.wal.spare`, at most
//! `MAX_SPARES`) and filled again for later segments, on real files: the reused file is
//! the same file (inode and birth time), zero-filled behind its new header, and the log
//! reopens whole with the spares beside it.
#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::in_executor;
use quasar_wal::disk::MAX_SPARES;
use quasar_wal::record::SEGMENT_HEADER_RECORD_LEN;
use quasar_wal::{Batch, GroupId, LogIndex, SegmentId, Term, Wal, WalConfig};

const SEGMENT: usize = 64 << 10;
const GROUP: GroupId = GroupId(1);
/// Entries each batch keeps behind the compaction point.
const KEEP: u64 = 8;

fn config(segment: usize) -> WalConfig {
    WalConfig {
        segment_size_bytes: segment,
        prepared_segments: 1,
        ..WalConfig::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    (0..1000).map(|i| (index as usize * 7 + i) as u8).collect()
}

/// A file's identity: inode and birth time (an inode number alone may be handed out again
/// after an unlink).
type Identity = (u64, Option<SystemTime>);

fn identity(path: &Path) -> Identity {
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.created().ok())
}

/// The directory's segment files and spares, by name.
fn listing(dir: &Path) -> (BTreeMap<SegmentId, PathBuf>, Vec<PathBuf>) {
    let mut segments = BTreeMap::new();
    let mut spares = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(id) = SegmentId::from_file_name(&name) {
            segments.insert(id, path);
        } else if name.ends_with(".wal.spare") {
            spares.push(path);
        }
    }
    (segments, spares)
}

/// Waits (bounded) until `ok` holds for the directory's listing.
fn wait_for(
    dir: &Path,
    what: &str,
    ok: impl Fn(&BTreeMap<SegmentId, PathBuf>, &[PathBuf]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (segments, spares) = listing(dir);
        if ok(&segments, &spares) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {segments:?} {spares:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Appends entries `from..to` of `GROUP`, each batch compacting all but the last `KEEP`,
/// syncing and collecting garbage after each.
async fn write(wal: &mut Wal<quasar_wal::MmapDisk>, from: u64, to: u64) {
    for index in from..to {
        let p = payload(index);
        let mut batch = Batch::with_capacity(1);
        batch.entries(GROUP, LogIndex(index), [(Term(1), p.as_slice())]);
        if index > KEEP {
            batch.compact(GROUP, LogIndex(index - KEEP));
        }
        wal.append(&batch).unwrap();
        wal.sync().await.unwrap();
        wal.collect_garbage().unwrap();
    }
}

#[test]
fn a_retired_segment_file_is_filled_again_for_a_later_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    let last = in_executor(move || async move {
        let mut wal = Wal::open_dir(&d, config(SEGMENT)).unwrap();
        wal.prepare_segments().unwrap();
        // Many rolls: GC retires the old segments, the preparer fills them again. Every
        // segment file's identity is noted when it is first seen.
        let mut seen: BTreeMap<SegmentId, Identity> = BTreeMap::new();
        let mut next = 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        let reused = loop {
            write(&mut wal, next, next + 10).await;
            next += 10;
            let (segments, spares) = listing(&d);
            assert!(spares.len() <= MAX_SPARES, "{spares:?}");
            for (id, path) in &segments {
                seen.entry(*id).or_insert_with(|| identity(path));
            }
            let mut by_file: BTreeMap<Identity, Vec<SegmentId>> = BTreeMap::new();
            for (id, file) in &seen {
                by_file.entry(*file).or_default().push(*id);
            }
            if let Some(ids) = by_file.into_values().find(|ids| ids.len() > 1) {
                break ids;
            }
            assert!(
                Instant::now() < deadline,
                "no segment file was reused: {seen:?}"
            );
        };
        assert!(reused[0] < reused[1], "{reused:?}");
        // A prepared segment ahead of the log is all zeros behind its header, whatever
        // the file held before.
        wal.prepare_segments().unwrap();
        let (segments, _) = listing(&d);
        let ahead = segments.keys().max().copied().unwrap();
        let bytes = std::fs::read(&segments[&ahead]).unwrap();
        assert_eq!(bytes.len(), SEGMENT);
        assert!(
            bytes[SEGMENT_HEADER_RECORD_LEN..].iter().all(|&b| b == 0),
            "prepared segment {ahead} is not zero-filled"
        );
        wal.close().await.unwrap();
        next - 1
    });
    let (_, spares) = listing(&dir);
    assert!(spares.len() <= MAX_SPARES, "{spares:?}");
    // The log reopens whole: spares are not segments, no torn tail, the kept entries read.
    let wal = Wal::open_dir(&dir, config(SEGMENT)).unwrap();
    assert!(wal.recovery_report().torn_tail.is_none());
    assert_eq!(wal.last_index(GROUP), LogIndex(last));
    let mut out = Vec::new();
    wal.entries(
        GROUP,
        LogIndex(last - KEEP + 1)..LogIndex(last + 1),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len() as u64, KEEP);
    for e in &out {
        assert_eq!(e.payload, payload(e.index.0));
    }
}

#[test]
fn spares_beyond_the_limit_or_of_another_size_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let d = dir.clone();
    in_executor(move || async move {
        let mut wal = Wal::open_dir(&d, config(SEGMENT)).unwrap();
        write(&mut wal, 1, 10).await;
        wal.close().await.unwrap();
    });
    // Left by an earlier run with larger segments: one more than the limit.
    for i in 0..=MAX_SPARES as u64 {
        let path = dir.join(format!("{:016x}.wal.spare", 0xabc0 + i));
        std::fs::write(path, vec![0xA5u8; SEGMENT * 2]).unwrap();
    }
    let d = dir.clone();
    in_executor(move || async move {
        let mut wal = Wal::open_dir(&d, config(SEGMENT)).unwrap();
        let (_, spares) = listing(&d);
        assert_eq!(spares.len(), MAX_SPARES, "open keeps at most MAX_SPARES");
        // Each roll asks for a segment: the preparer takes a spare, finds its size wrong,
        // deletes it and creates the segment anew.
        write(&mut wal, 10, 400).await;
        wal.prepare_segments().unwrap();
        wait_for(&d, "the odd spares deleted", |_, spares| {
            spares
                .iter()
                .all(|p| std::fs::metadata(p).unwrap().len() == SEGMENT as u64)
        });
        let (segments, _) = listing(&d);
        for path in segments.values() {
            assert_eq!(
                std::fs::metadata(path).unwrap().len(),
                SEGMENT as u64,
                "{path:?}"
            );
        }
        wal.close().await.unwrap();
    });
    let wal = Wal::open_dir(&dir, config(SEGMENT)).unwrap();
    assert!(wal.recovery_report().torn_tail.is_none());
    assert_eq!(wal.last_index(GROUP), LogIndex(399));
}
