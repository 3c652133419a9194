//! Group commit and poisoning on a `MemDisk`: nothing is durable before its sync
//! completes, one sync covers every task's appends, and a failed sync poisons the log for
//! good (never retried).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use futures_lite::future::block_on;
use quasar_wal::{
    Batch, Crash, GroupId, LogIndex, MemDisk, SharedWal, Term, Wal, WalConfig, WalError,
};

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes: 64 << 10,
        prepared_segments: 1,
        ..WalConfig::default()
    }
}

fn one_entry(group: u64, index: u64, payload: &[u8]) -> Batch<'_> {
    let mut b = Batch::with_capacity(1);
    b.entries(GroupId(group), LogIndex(index), [(Term(1), payload)]);
    b
}

#[test]
fn nothing_is_durable_before_its_sync_completes() {
    let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
    let start = wal.durable_lsn();
    let lsn = wal.append(&one_entry(1, 1, b"a")).unwrap();
    assert!(lsn > start);
    assert_eq!(wal.durable_lsn(), start);
    let job = wal.begin_sync().unwrap().expect("a sync is due");
    assert_eq!(job.target(), lsn);
    // A second append while the sync is in flight is not covered by it.
    let lsn2 = wal.append(&one_entry(1, 2, b"b")).unwrap();
    assert!(
        wal.begin_sync().unwrap().is_none(),
        "one sync in flight at a time"
    );
    assert_eq!(wal.durable_lsn(), start, "durable only after on_sync_done");
    let result = block_on(job.run());
    assert_eq!(wal.on_sync_done(lsn, result).unwrap(), lsn);
    assert!(wal.durable_lsn() >= lsn && wal.durable_lsn() < lsn2);
}

/// A log that runs up to two syncs at once.
fn two_syncs_in_flight() -> Wal<MemDisk> {
    let config = WalConfig {
        syncs_in_flight: 2,
        ..config()
    };
    Wal::open(MemDisk::new(), config).expect("the log opens")
}

#[test]
fn two_syncs_in_flight_complete_in_the_order_they_began() {
    let mut wal = two_syncs_in_flight();
    let start = wal.durable_lsn();
    let lsn1 = wal.append(&one_entry(1, 1, b"a")).unwrap();
    let first = wal.begin_sync().unwrap().expect("a sync is due");
    assert!(
        wal.begin_sync().unwrap().is_none(),
        "nothing appended since the first began"
    );
    let lsn2 = wal.append(&one_entry(2, 1, b"b")).unwrap();
    let second = wal.begin_sync().unwrap().expect("a second sync may begin");
    assert_eq!((first.target(), second.target()), (lsn1, lsn2));
    assert_eq!(wal.syncs_in_flight(), 2);
    assert_eq!(wal.in_flight_sync_target(), Some(lsn2));
    wal.append(&one_entry(1, 2, b"c")).unwrap();
    assert!(wal.begin_sync().unwrap().is_none(), "at most two in flight");
    // The second may finish first; it is reported after the first.
    let done2 = block_on(second.run());
    assert_eq!(wal.durable_lsn(), start);
    assert_eq!(wal.on_sync_done(lsn1, block_on(first.run())).unwrap(), lsn1);
    assert_eq!(wal.durable_lsn(), lsn1);
    assert_eq!(wal.on_sync_done(lsn2, done2).unwrap(), lsn2);
    assert_eq!((wal.durable_lsn(), wal.syncs_in_flight()), (lsn2, 0));
}

#[test]
fn a_failed_first_sync_poisons_the_second_in_flight() {
    let mut wal = two_syncs_in_flight();
    wal.append(&one_entry(1, 1, b"synced")).unwrap();
    block_on(wal.sync()).unwrap();
    let durable = wal.durable_lsn();
    wal.disk_mut().fail_after(0);
    let lsn1 = wal.append(&one_entry(1, 2, b"lost")).unwrap();
    let first = wal.begin_sync().unwrap().expect("a sync is due");
    let lsn2 = wal.append(&one_entry(1, 3, b"lost too")).unwrap();
    let second = wal.begin_sync().unwrap().expect("a second sync may begin");
    let (done1, done2) = (block_on(first.run()), block_on(second.run()));
    assert!(matches!(
        wal.on_sync_done(lsn1, done1),
        Err(WalError::Poisoned { .. })
    ));
    // Whatever the second reports, nothing after the failed sync becomes durable.
    assert!(matches!(
        wal.on_sync_done(lsn2, done2),
        Err(WalError::Poisoned { .. })
    ));
    assert_eq!(wal.durable_lsn(), durable);
}

#[test]
fn one_sync_covers_every_waiting_task() {
    let wal = SharedWal::new(Wal::open(MemDisk::new(), config()).unwrap());
    let lsns: Vec<_> = (1..=4)
        .map(|g| wal.append(&one_entry(g, 1, b"x")).unwrap())
        .collect();
    let mut waiters: Vec<_> = lsns.iter().map(|&l| Box::pin(wal.sync_to(l))).collect();
    // Each waiter yields once (letting the others append) before one of them syncs.
    let mut results = vec![None; waiters.len()];
    let mut cx = Context::from_waker(Waker::noop());
    for _round in 0..3 {
        for (w, r) in waiters.iter_mut().zip(&mut results) {
            if r.is_none() {
                if let Poll::Ready(out) = w.as_mut().poll(&mut cx) {
                    *r = Some(out.is_ok());
                }
            }
        }
    }
    assert_eq!(results, vec![Some(true); 4]);
    assert_eq!(
        wal.wal().borrow().disk().sync_count(),
        1,
        "one fdatasync for four appends"
    );
}

#[test]
fn a_failed_sync_poisons_the_log_and_is_never_retried() {
    let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
    wal.append(&one_entry(1, 1, b"synced")).unwrap();
    block_on(wal.sync()).unwrap();
    let syncs = wal.disk().sync_count();
    wal.disk_mut().fail_after(0);
    wal.append(&one_entry(1, 2, b"lost")).unwrap();
    let err = block_on(wal.sync()).unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("restart the shard"), "{err}");
    assert!(matches!(
        wal.append(&one_entry(1, 3, b"x")),
        Err(WalError::Poisoned { .. })
    ));
    assert!(matches!(wal.begin_sync(), Err(WalError::Poisoned { .. })));
    assert!(matches!(
        block_on(wal.sync()),
        Err(WalError::Poisoned { .. })
    ));
    let mut out = Vec::new();
    assert!(matches!(
        wal.entries(GroupId(1), LogIndex(1)..LogIndex(2), &mut out),
        Err(WalError::Poisoned { .. })
    ));
    assert_eq!(
        wal.disk().sync_count(),
        syncs + 1,
        "the failed sync was not retried"
    );
    // What survives is what the last good sync covered.
    let wal = Wal::open(wal.into_disk().crash(Crash::DropUnsynced), config()).unwrap();
    assert_eq!(wal.last_index(GroupId(1)), LogIndex(1));
}

#[test]
fn a_failed_write_poisons_the_log() {
    let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
    wal.append(&one_entry(1, 1, b"synced")).unwrap();
    block_on(wal.sync()).unwrap();
    wal.disk_mut().set_fail_writes(true);
    let err = wal.append(&one_entry(1, 2, b"lost")).unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("write of a batch"), "{err}");
    // Even once writes work again, nothing more is accepted or reported durable.
    wal.disk_mut().set_fail_writes(false);
    assert!(matches!(
        wal.append(&one_entry(1, 2, b"again")),
        Err(WalError::Poisoned { .. })
    ));
    assert!(matches!(
        block_on(wal.sync()),
        Err(WalError::Poisoned { .. })
    ));
    let wal = Wal::open(wal.into_disk().crash(Crash::DropUnsynced), config()).unwrap();
    assert_eq!(wal.last_index(GroupId(1)), LogIndex(1));
}

/// A compaction in the same batch as the entries it cuts records the term of the entry
/// before it, read back from the log (no cache here) before the batch is written whole.
#[test]
fn a_compaction_of_entries_in_its_own_batch_finds_their_term() {
    let config = WalConfig {
        cache_bytes: 0,
        ..config()
    };
    let mut wal = Wal::open(MemDisk::new(), config.clone()).unwrap();
    let mut b = Batch::with_capacity(2);
    b.entries(
        GroupId(1),
        LogIndex(1),
        [
            (Term(3), &b"a"[..]),
            (Term(4), &b"b"[..]),
            (Term(4), &b"c"[..]),
        ],
    );
    b.compact(GroupId(1), LogIndex(3));
    wal.append(&b).unwrap();
    block_on(wal.sync()).unwrap();
    assert_eq!(wal.first_index(GroupId(1)), LogIndex(3));
    assert_eq!(wal.term(GroupId(1), LogIndex(2)).unwrap(), Term(4));
    let wal = Wal::open(wal.into_disk().crash(Crash::DropUnsynced), config).unwrap();
    assert_eq!(wal.first_index(GroupId(1)), LogIndex(3));
    assert_eq!(wal.term(GroupId(1), LogIndex(2)).unwrap(), Term(4));
    let mut out = Vec::new();
    wal.entries(GroupId(1), LogIndex(3)..LogIndex(4), &mut out)
        .unwrap();
    assert_eq!(out[0].payload, b"c");
}

#[test]
fn every_waiting_task_sees_the_poison() {
    let mut inner = Wal::open(MemDisk::new(), config()).unwrap();
    inner.disk_mut().fail_after(0);
    let wal = SharedWal::new(inner);
    let a = wal.append(&one_entry(1, 1, b"a")).unwrap();
    let b = wal.append(&one_entry(2, 1, b"b")).unwrap();
    let mut fa = pin!(wal.sync_to(a));
    let mut fb = pin!(wal.sync_to(b));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        fa.as_mut().poll(&mut cx).is_pending(),
        "yields once before syncing"
    );
    assert!(
        fb.as_mut().poll(&mut cx).is_pending(),
        "yields once before syncing"
    );
    assert!(matches!(
        fa.as_mut().poll(&mut cx),
        Poll::Ready(Err(WalError::Poisoned { .. }))
    ));
    assert!(matches!(
        fb.as_mut().poll(&mut cx),
        Poll::Ready(Err(WalError::Poisoned { .. }))
    ));
}

#[test]
fn failing_segment_preparation_is_an_error_not_a_panic() {
    let mut wal = Wal::open(
        MemDisk::new(),
        WalConfig {
            segment_size_bytes: 4096,
            prepared_segments: 1,
            ..config()
        },
    )
    .unwrap();
    wal.disk_mut().fail_after(0);
    let payload = vec![1u8; 1000];
    let mut result = Ok(Default::default());
    for i in 1..=8 {
        result = wal.append(&one_entry(1, i, &payload));
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert!(matches!(err, WalError::Io { op: "prepare", .. }), "{err}");
}
