//! A segment file cut short (outside the WAL) a few bytes into a batch: recovery ends the
//! log before that batch, and the log must still append past the cut, seal the segment
//! and roll to the next one (there was once no room left for the seal record), and open
//! again with everything it holds.
#![expect(clippy::unwrap_used, reason = "test")]

use futures_lite::future::block_on;
use quasar_wal::record::{self, Decoded, RecordKind, SEGMENT_HEADER_RECORD_LEN};
use quasar_wal::{Batch, GroupId, LogIndex, MemDisk, SegmentId, Term, Wal, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes: 8 << 10,
        prepared_segments: 1,
        ..WalConfig::default()
    }
}

fn append(wal: &mut Wal<MemDisk>, index: u64) {
    let payload = [index as u8; 100];
    let mut batch = Batch::with_capacity(1);
    batch.entries(GroupId(1), LogIndex(index), [(Term(1), &payload[..])]);
    wal.append(&batch).unwrap();
    block_on(wal.sync()).unwrap();
}

/// Offsets of the `SyncMark` records (batch starts) of one segment.
fn batch_starts(bytes: &[u8], id: SegmentId) -> Vec<usize> {
    let seed = record::segment_seed(id.0);
    let mut starts = Vec::new();
    let mut at = SEGMENT_HEADER_RECORD_LEN;
    while let Decoded::Record(r) = record::decode(bytes, at, seed) {
        if r.kind == RecordKind::SyncMark {
            starts.push(at);
        }
        at = r.next;
    }
    starts
}

#[test]
fn a_segment_cut_inside_a_batch_still_appends_and_rolls() {
    for into_batch in [1, 8, 20, 31, 39] {
        let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
        for i in 1..=10 {
            append(&mut wal, i);
        }
        let mut disk = wal.into_disk();
        let seg = SegmentId(1);
        let starts = batch_starts(disk.durable_bytes(seg).unwrap(), seg);
        assert_eq!(starts.len(), 10);
        // Cut a few bytes into the last batch: entries 1..=9 survive.
        disk.truncate_segment(seg, starts[9] + into_batch);
        let mut wal = Wal::open(disk, config()).unwrap();
        let group = GroupId(1);
        assert_eq!(wal.last_index(group), LogIndex(9), "cut {into_batch}");
        // Enough appends to fill the segment and roll to the next one.
        for i in 10..=100 {
            append(&mut wal, i);
        }
        let mut wal = Wal::open(wal.into_disk(), config()).unwrap();
        assert_eq!(wal.last_index(group), LogIndex(100), "cut {into_batch}");
        assert!(
            wal.disk().segment_ids().len() >= 2,
            "the log rolled past the cut segment"
        );
        append(&mut wal, 101);
    }
}
