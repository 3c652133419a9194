//! Recovery on damaged real segment files: each kind of damage gets its verdict from the
//! decision table in `recovery.rs` and a message naming the file and offset.
#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use common::in_executor;
use quasar_wal::{
    Batch, GroupId, HardState, LogIndex, Lsn, SegmentId, Term, Wal, WalConfig, WalError,
};

const GROUPS: u64 = 3;
const BATCHES: u64 = 600;

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes: 64 << 10,
        prepared_segments: 1,
        ..WalConfig::default()
    }
}

fn payload(batch: u64) -> Vec<u8> {
    (0..200).map(|i| (batch as usize * 13 + i) as u8).collect()
}

/// What a written log looks like: the segment holding the last batch, and the positions
/// of the last data batch and of the close record.
#[derive(Debug, Clone, Copy)]
struct Written {
    last_segment: SegmentId,
    last_batch_start: Lsn,
    close_start: Lsn,
}

/// Writes `BATCHES` batches (one entry of one group and its hard state each), syncing every
/// ten, and closes the log cleanly.
fn write_log(dir: PathBuf) -> Written {
    let dir2 = dir.clone();
    in_executor(move || async move {
        let mut wal = Wal::open_dir(&dir2, config()).expect("open");
        wal.prepare_segments().expect("prepare");
        for b in 0..BATCHES {
            let group = GroupId(b % GROUPS);
            let index = LogIndex(b / GROUPS + 1);
            let p = payload(b);
            let mut batch = Batch::with_capacity(1);
            batch.entries(group, index, [(Term(1), p.as_slice())]);
            batch.hard_state(
                group,
                HardState {
                    term: Term(1),
                    vote: 1,
                    commit: index,
                },
            );
            wal.append(&batch).expect("append");
            if b % 10 == 9 {
                wal.sync().await.expect("sync");
            }
        }
        wal.close().await.expect("close");
    });
    let wal = Wal::open_dir(&dir, config()).expect("clean reopen");
    assert!(wal.recovery_report().torn_tail.is_none());
    drop(wal);
    written_positions(&dir)
}

/// Finds the close record (last batch, empty) and the data batch before it by walking
/// the newest data segment with the public record decoder.
fn written_positions(dir: &Path) -> Written {
    use quasar_wal::record::{self, Decoded, RecordKind};
    let mut ids: Vec<SegmentId> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| SegmentId::from_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    ids.sort();
    let mut marks: Vec<Lsn> = Vec::new();
    for id in ids {
        let bytes = std::fs::read(dir.join(id.file_name())).unwrap();
        let seed = record::segment_seed(id.0);
        let mut at = record::SEGMENT_HEADER_RECORD_LEN;
        while let Decoded::Record(r) = record::decode(&bytes, at, seed) {
            if r.kind == RecordKind::SyncMark {
                marks.push(Lsn::new(id, at));
            }
            at = r.next;
        }
    }
    let close_start = *marks.last().unwrap();
    let last_batch_start = marks[marks.len() - 2];
    assert_eq!(
        last_batch_start.segment(),
        close_start.segment(),
        "test needs both in one segment"
    );
    Written {
        last_segment: close_start.segment(),
        last_batch_start,
        close_start,
    }
}

fn segment_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(id.file_name())
}

fn flip_bit(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Checks every recovered entry against what was written; returns how many there are.
fn check_contents(wal: &Wal) -> u64 {
    let mut total = 0;
    for g in 0..GROUPS {
        let group = GroupId(g);
        let last = wal.last_index(group);
        let mut out = Vec::new();
        wal.entries(group, LogIndex(1)..LogIndex(last.0 + 1), &mut out)
            .unwrap();
        for e in &out {
            let b = (e.index.0 - 1) * GROUPS + g;
            assert_eq!(e.payload, payload(b), "group {g} index {}", e.index);
        }
        total += out.len() as u64;
    }
    total
}

/// Opens the log with one recovery thread, after checking that the parallel recovery
/// (on a copy: opening repairs a torn tail in place) reaches the same verdict.
fn open(dir: &Path) -> Result<Wal, WalError> {
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let verdict = |r: &Result<Wal, WalError>| match r {
        Ok(wal) => {
            let report = wal.recovery_report();
            let torn = report.torn_tail.as_ref().map(|t| (t.1, t.2.clone()));
            format!("ok {} {} {torn:?}", report.records, check_contents(wal))
        }
        // The messages name the directory, which differs: compare from the file name on.
        Err(e) => e
            .to_string()
            .replace(&copy.path().display().to_string(), "DIR"),
    };
    let parallel = Wal::open_dir(
        copy.path(),
        WalConfig {
            recovery_threads: 2,
            ..config()
        },
    );
    let parallel = verdict(&parallel);
    let one = Wal::open_dir(
        dir,
        WalConfig {
            recovery_threads: 1,
            ..config()
        },
    );
    assert_eq!(
        parallel,
        verdict(&one).replace(&dir.display().to_string(), "DIR"),
        "parallel and one-thread recovery disagree"
    );
    one
}

#[test]
fn intact_log_reopens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_log(dir.path().to_path_buf());
    assert!(
        w.last_segment.0 >= 3,
        "the log spans several segments: {w:?}"
    );
    let wal = open(dir.path()).unwrap();
    assert_eq!(check_contents(&wal), BATCHES);
    assert_eq!(
        wal.hard_state(GroupId(1)).unwrap().commit,
        LogIndex(BATCHES / GROUPS)
    );
}

#[test]
fn truncated_tail_is_cut_at_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_log(dir.path().to_path_buf());
    let path = segment_path(dir.path(), w.last_segment);
    let cut = w.close_start.offset() - 20;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let wal = open(dir.path()).unwrap();
    let (location, offset, reason) = wal.recovery_report().torn_tail.clone().expect("torn tail");
    assert!(
        location.ends_with(&w.last_segment.file_name()),
        "{location}"
    );
    assert_eq!(offset, w.last_batch_start.offset(), "{reason}");
    assert_eq!(
        check_contents(&wal),
        BATCHES - 1,
        "only the cut batch is lost"
    );
    // The log continues after the cut and reopens again.
    drop(wal);
    let wal = open(dir.path()).unwrap();
    assert_eq!(check_contents(&wal), BATCHES - 1);
}

#[test]
fn bit_flip_in_the_tail_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_log(dir.path().to_path_buf());
    flip_bit(
        &segment_path(dir.path(), w.last_segment),
        w.close_start.offset() + 30,
    );
    let wal = open(dir.path()).unwrap();
    let (_, offset, reason) = wal.recovery_report().torn_tail.clone().expect("torn tail");
    assert_eq!(offset, w.close_start.offset());
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(
        check_contents(&wal),
        BATCHES,
        "the close record held no data"
    );
}

#[test]
fn bit_flip_in_a_batch_covered_by_a_later_sync_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_log(dir.path().to_path_buf());
    let path = segment_path(dir.path(), w.last_segment);
    flip_bit(&path, w.last_batch_start.offset() + 100);
    let Err(err) = open(dir.path()) else {
        panic!("damage accepted")
    };
    let WalError::Corruption {
        ref location,
        offset,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(location, &path.display().to_string());
    assert_eq!(offset, w.last_batch_start.offset());
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn bit_flip_in_the_middle_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path().to_path_buf());
    let path = segment_path(dir.path(), SegmentId(1));
    flip_bit(&path, 20_000);
    let Err(err) = open(dir.path()) else {
        panic!("damage accepted")
    };
    let WalError::Corruption {
        ref location,
        offset,
        ref reason,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(location, &path.display().to_string());
    assert!(offset <= 20_000 && offset > 19_000, "offset {offset}");
    assert!(reason.contains("checksum"), "{reason}");
    let msg = err.to_string();
    assert!(msg.contains("offset") && msg.contains("restore"), "{msg}");
}

#[test]
fn missing_segment_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path().to_path_buf());
    let path = segment_path(dir.path(), SegmentId(2));
    std::fs::remove_file(&path).unwrap();
    let Err(err) = open(dir.path()) else {
        panic!("missing segment accepted")
    };
    assert!(matches!(err, WalError::MissingSegment { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn zero_length_segment_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path().to_path_buf());
    let path = segment_path(dir.path(), SegmentId(2));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let Err(err) = open(dir.path()) else {
        panic!("empty segment accepted")
    };
    let WalError::Corruption {
        ref location,
        offset,
        ref reason,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(location, &path.display().to_string());
    assert_eq!(offset, 0);
    assert!(reason.contains("empty (0 bytes)"), "{reason}");
}

#[test]
fn zero_length_newest_segment_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let w = write_log(dir.path().to_path_buf());
    // The prepared segment after the last data segment holds no data.
    let path = segment_path(dir.path(), w.last_segment.next());
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let wal = open(dir.path()).unwrap();
    assert_eq!(check_contents(&wal), BATCHES);
    assert_eq!(
        wal.recovery_report().discarded_segments,
        vec![path.display().to_string()]
    );
    drop(wal);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        config().segment_size_bytes as u64
    );
}

/// Kilobytes of this process's resident pages in mappings of files under `dir`
/// (`/proc/self/smaps`).
fn resident_kib_mapped_from(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let dir = dir.display().to_string();
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            ours = line
                .split_whitespace()
                .nth(5)
                .is_some_and(|p| p.starts_with(&dir));
        } else if ours && first == "Rss:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap();
        }
    }
    kib
}

#[test]
fn a_reopened_log_keeps_no_segment_pages_mapped_until_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path().to_path_buf());
    let wal = Wal::open_dir(dir.path(), config()).unwrap();
    // Recovery scanned every segment through populated mappings, then let them go.
    assert_eq!(resident_kib_mapped_from(dir.path()), 0);
    assert_eq!(check_contents(&wal), BATCHES);
    // Reading the log back faults its pages in again: the measure sees the mappings.
    assert!(resident_kib_mapped_from(dir.path()) > 0);
}
