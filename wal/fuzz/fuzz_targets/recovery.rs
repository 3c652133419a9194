//! WAL recovery on damaged logs. The input is read as a little program: records to write
//! (with valid checksums, so recovery gets past the CRC), then damage to do (bit flips,
//! cuts, zeroed ranges, dropped segments). The log is opened on a `MemDisk`; opening may
//! fail with an error, but must not panic, and every group it recovers must read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quasar_wal::record::{self, RecordKind, SEGMENT_HEADER_RECORD_LEN};
use quasar_wal::{GroupId, LogIndex, MemDisk, SegmentId, Wal, WalConfig};

const SEGMENT_LEN: usize = 4096;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn small(&mut self) -> Option<u64> {
        self.byte().map(|b| u64::from(b % 16))
    }
}

fn new_segment(id: u64) -> Vec<u8> {
    let mut s = vec![0u8; SEGMENT_LEN];
    record::put_fixed(
        &mut s,
        0,
        RecordKind::SegmentHeader,
        GroupId(0),
        &[record::SEGMENT_MAGIC, id, SEGMENT_LEN as u64],
        record::segment_seed(id),
    );
    s
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut segments = vec![new_segment(1)];
    let mut at = SEGMENT_HEADER_RECORD_LEN;
    let mut synced = 0u64;
    // Batches: a sync mark followed by a few records.
    while let Some(op) = input.byte() {
        if op == 0xff {
            break; // damage follows
        }
        let id = segments.len() as u64;
        let seed = record::segment_seed(id);
        let records = usize::from(op % 4) + 1;
        let need = 40 + records * 96;
        if at + need + 32 > SEGMENT_LEN {
            let seg = segments.last_mut().expect("one segment");
            record::put_fixed(seg, at, RecordKind::Seal, GroupId(0), &[0], seed);
            segments.push(new_segment(id + 1));
            at = SEGMENT_HEADER_RECORD_LEN;
            continue;
        }
        let id = segments.len() as u64;
        let seed = record::segment_seed(id);
        let seg = segments.last_mut().expect("one segment");
        let mark_at = at;
        at += 40;
        for _ in 0..records {
            let group = GroupId(input.small().unwrap_or(0));
            let a = input.small().unwrap_or(1);
            let b = input.small().unwrap_or(1);
            at = match input.byte().unwrap_or(0) % 5 {
                0 => {
                    record::put_entries_prefix(seg, at, LogIndex(a.max(1)), 2);
                    let p = at + record::HEADER_LEN + record::ENTRIES_PREFIX_LEN;
                    let p = record::put_entry(seg, p, quasar_wal::Term(b), &[a as u8; 5]);
                    let p = record::put_entry(seg, p, quasar_wal::Term(b), &[b as u8; 9]);
                    record::seal_record(
                        seg,
                        at,
                        RecordKind::Entries,
                        group,
                        p - at - record::HEADER_LEN,
                        seed,
                    )
                }
                1 => record::put_fixed(seg, at, RecordKind::HardState, group, &[a, b, a], seed),
                2 => record::put_fixed(seg, at, RecordKind::TruncateSuffix, group, &[a], seed),
                3 => record::put_fixed(seg, at, RecordKind::Compact, group, &[a, b], seed),
                _ => record::put_fixed(seg, at, RecordKind::SnapshotMark, group, &[a, b], seed),
            };
        }
        let mark = if input.byte().unwrap_or(0) % 2 == 0 {
            synced
        } else {
            0
        };
        record::put_fixed(
            seg,
            mark_at,
            RecordKind::SyncMark,
            GroupId(0),
            &[mark, at as u64],
            seed,
        );
        synced = quasar_wal::Lsn::new(SegmentId(id), at).0;
    }
    // Damage.
    while let (Some(kind), Some(s), Some(hi), Some(lo)) =
        (input.byte(), input.byte(), input.byte(), input.byte())
    {
        let n = segments.len().max(1);
        let Some(seg) = segments.get_mut(usize::from(s) % n) else {
            break;
        };
        let pos = (usize::from(hi) << 8 | usize::from(lo)) % SEGMENT_LEN;
        let len = seg.len();
        match kind % 4 {
            0 => {
                if len > 0 {
                    seg[pos.min(len - 1)] ^= 1 << (lo % 8);
                }
            }
            1 => seg.truncate(pos),
            2 => seg[pos.min(len)..].iter_mut().take(64).for_each(|b| *b = 0),
            _ => seg.clear(),
        }
    }
    let mut disk = MemDisk::new();
    for (i, seg) in segments.into_iter().enumerate() {
        disk.put_segment(SegmentId(i as u64 + 1), seg);
    }
    let config = WalConfig {
        segment_size_bytes: SEGMENT_LEN,
        prepared_segments: 1,
        recovery_threads: 1,
        ..WalConfig::default()
    };
    // The parallel recovery must reach the one-pass scan's verdict and index.
    let parallel = Wal::open(
        disk.clone(),
        WalConfig {
            recovery_threads: 3,
            ..config.clone()
        },
    );
    let one = Wal::open(disk, config);
    match (&parallel, &one) {
        (Ok(p), Ok(o)) => {
            let index = |w: &Wal<MemDisk>| -> Vec<_> {
                let mut ids: Vec<GroupId> = w.group_ids().collect();
                ids.sort_unstable_by_key(|g| g.0);
                ids.into_iter()
                    .map(|g| (g, w.first_index(g), w.last_index(g), w.hard_state(g)))
                    .collect()
            };
            assert_eq!(index(p), index(o), "parallel recovery disagrees");
            assert_eq!(p.recovery_report().records, o.recovery_report().records);
        }
        (Err(p), Err(o)) => assert_eq!(p.to_string(), o.to_string()),
        _ => panic!("parallel recovery disagrees: {:?} vs {:?}", parallel.is_ok(), one.is_ok()),
    }
    if let Ok(wal) = one {
        wal.check_invariants();
        let groups: Vec<GroupId> = wal.group_ids().collect();
        for g in groups {
            let (first, last) = (wal.first_index(g), wal.last_index(g));
            let mut out = Vec::new();
            wal.entries(g, first..LogIndex(last.0 + 1), &mut out)
                .expect("recovered entries read back");
            assert_eq!(out.len() as u64, last.0 + 1 - first.0);
        }
    }
});
