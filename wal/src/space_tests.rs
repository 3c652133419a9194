//! A full disk while preparing segments: appends that need a new segment are refused whole
//! with a retryable error, nothing is poisoned, and appends resume once preparation works.

use super::*;
use crate::disk::MemDisk;

fn entry(index: u64, payload: &[u8]) -> Batch<'_> {
    let mut b = Batch::with_capacity(1);
    b.entries(GroupId(1), LogIndex(index), [(Term(1), payload)]);
    b
}

fn sync(wal: &mut Wal<MemDisk>) {
    if let Some(job) = wal.begin_sync().expect("begin_sync") {
        let target = job.target();
        let result = futures_lite::future::block_on(job.run());
        wal.on_sync_done(target, result).expect("sync");
    }
}

#[test]
fn failed_preparation_refuses_appends_without_poisoning_and_recovers() {
    let config = WalConfig {
        segment_size_bytes: 4096,
        prepared_segments: 1,
        ..WalConfig::default()
    };
    let mut wal = Wal::open(MemDisk::new(), config).expect("open");
    let payload = vec![7u8; 1000];
    wal.disk_mut().set_full(true);
    assert!(wal.space_shortage().is_none());
    let mut next = 1u64;
    // The segment prepared before the disk filled up is used; the one after it cannot be
    // prepared, so an append eventually needs a segment that is not there.
    let err = loop {
        assert!(next < 64, "appends never ran out of prepared segments");
        match wal.append(&entry(next, &payload)) {
            Ok(_) => next += 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_prepare_failure(), "{err}");
    assert!(!wal.is_poisoned());
    let reason = wal
        .space_shortage()
        .expect("a shortage is reported")
        .to_owned();
    assert!(reason.contains("disk is full"), "{reason}");
    let appended = wal.appended_lsn();
    assert_eq!(wal.last_index(GroupId(1)), LogIndex(next - 1));
    // The refused append changed nothing; what was appended still syncs and reads back.
    sync(&mut wal);
    assert_eq!(wal.durable_lsn(), appended);
    let mut out = Vec::new();
    wal.entries(GroupId(1), LogIndex(1)..LogIndex(next), &mut out)
        .expect("entries");
    assert_eq!(out.len() as u64, next - 1);
    // Still full: the retry fails again and the shortage stays.
    wal.check_prepared();
    assert!(wal.space_shortage().is_some());
    assert!(wal.append(&entry(next, &payload)).is_err());
    assert_eq!(wal.appended_lsn(), appended);
    // Space returns: the retry prepares the segment and appends work again.
    wal.disk_mut().set_full(false);
    wal.check_prepared();
    assert!(wal.space_shortage().is_none());
    for i in next..next + 8 {
        wal.append(&entry(i, &payload))
            .expect("append after space returned");
    }
    sync(&mut wal);
    wal.check_invariants();
    out.clear();
    wal.entries(GroupId(1), LogIndex(1)..LogIndex(next + 8), &mut out)
        .expect("entries");
    assert_eq!(out.len() as u64, next + 7);
    assert!(out.iter().all(|e| e.payload == payload));
    // And everything synced survives a crash.
    let disk = wal.into_disk().crash(Crash::DropUnsynced);
    let wal = Wal::open(
        disk,
        WalConfig {
            segment_size_bytes: 4096,
            prepared_segments: 1,
            ..WalConfig::default()
        },
    )
    .expect("reopen");
    assert_eq!(wal.last_index(GroupId(1)), LogIndex(next + 7));
}
