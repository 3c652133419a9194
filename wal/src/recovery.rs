//! Recovery: turns the bytes of every segment into verdicts, with no I/O (so it can be
//! fuzzed). `scan` walks the segments in order, verifies every CRC, hands each valid
//! record to a visitor (the index replays it) and decides where the log ends.
//!
//! `verify` reaches the same verdicts with the segments checked in parallel (each one's
//! records are checked on its own; the table below is then applied to the results in
//! order), and `replay_accepted` then hands the records `scan` would have visited, in the
//! same order, to any number of replay threads.
//!
//! Mapped pages reach the disk in any order, so a valid record after a bad one does not
//! prove corruption: it may be a later, never-synced batch whose pages were written back
//! early. Every batch therefore opens with a `SyncMark` record holding `synced_lsn`, the
//! position already durable when the batch was written, and the batch's end offset (a
//! batch is replayed whole or not at all, so a torn batch never leaves half its
//! records), and a segment is sealed (seal record, then sync) before a later one is
//! reported durable. The decision table, applied
//! at the first position X (segment S, offset O) that does not hold a valid record:
//!
//! | # | where | bytes at X | verdict |
//! |---|---|---|---|
//! | 1 | any segment | CRC verifies | accept, move on |
//! | 2 | any segment | a valid `Seal` | segment complete: continue with the next one |
//! | 3 | any segment | bad, zero or missing; a valid `SyncMark` later (in S after X or in any later segment) with `synced_lsn > X` | `Corruption { segment: S, offset: O }`: X was durable once |
//! | 4 | any segment | bad, zero or missing; no later `synced_lsn` past X | end of the log (torn tail): truncate at X, discard later segments |
//! | 5 | last segment | sealed | the next append opens a new segment |
//!
//! Row 3 covers STYLE's "sealed segment, bad before the seal": a segment's seal is synced
//! before any later sync completes, so once a later batch records a `synced_lsn` past it,
//! its whole content was durable. Row 4 applies wherever X is, including byte 0 of a
//! segment (a damaged header): the log ends before that segment. Except a file shorter
//! than a segment header (empty, say) at X: segment files are created whole, so that one
//! was cut after it was written, and its header at least was durable: row 3.
//!
//! Known limit (as in STYLE): a synced last batch that rots with nothing written after it
//! looks exactly like a torn tail (row 4). A clean close writes a final `SyncMark` and
//! syncs it, which shrinks this window to the close record itself.

use crate::record::{
    self, Decoded, RecordKind, RecordView, SEGMENT_HEADER_RECORD_LEN, SYNC_MARK_RECORD_LEN,
};
use crate::segment::{Lsn, SegmentId};

/// Where appends continue after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// In `segment` at `offset`. Bytes from `offset` on must be zeroed if `dirty`.
    Open {
        segment: SegmentId,
        offset: usize,
        dirty: bool,
    },
    /// A new segment with this id (the last one was sealed, or unusable from byte 0).
    NewSegment { id: SegmentId },
}

/// Why recovery stopped before the end of the bytes (row 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: SegmentId,
    pub offset: usize,
    pub reason: String,
}

/// The result of a successful scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub end: End,
    /// Set when the log ended at bad bytes (not at clean zeros).
    pub torn: Option<TornTail>,
    /// Segments after the end segment that hold any byte past their header: their
    /// content was never durable and must be discarded.
    pub discard: Vec<SegmentId>,
    /// Valid records accepted.
    pub records: u64,
    /// The highest `synced_lsn` seen in an accepted record.
    pub synced_lsn: Lsn,
}

/// Row 3: bytes that were durable do not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub segment: SegmentId,
    pub offset: usize,
    pub reason: String,
    /// The later `synced_lsn` proving the bytes were durable.
    pub proof: Lsn,
}

/// Checks the segment header record at offset 0; returns where records start.
fn check_header(id: SegmentId, bytes: &[u8], seed: u32) -> Result<usize, String> {
    if bytes.is_empty() {
        return Err("the segment file is empty (0 bytes)".into());
    }
    match record::decode(bytes, 0, seed) {
        Decoded::Record(r) if r.kind == RecordKind::SegmentHeader => {
            let magic = record::fixed_field(r.body, 0);
            let sid = record::fixed_field(r.body, 1);
            let len = record::fixed_field(r.body, 2);
            if magic != record::SEGMENT_MAGIC || sid != id.0 {
                Err("segment header names another segment".into())
            } else if len < bytes.len() as u64 {
                Err(format!(
                    "segment is {} bytes, its header says {len}",
                    bytes.len()
                ))
            } else {
                // NOTE: a file cut short keeps its records up to the cut; the scan stops
                // at the partial record there and rows 3/4 decide.
                Ok(r.next)
            }
        }
        Decoded::Record(r) => Err(format!(
            "first record is {:?}, not a segment header",
            r.kind
        )),
        Decoded::Zero => Err("segment header is zero".into()),
        Decoded::Bad(b) => Err(format!("bad segment header: {b}")),
    }
}

/// Whether every byte is zero (memcmp-speed).
pub fn is_zero(bytes: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// The highest valid `synced_lsn` at 8-aligned offsets from `from` on.
fn max_mark_after(id: SegmentId, bytes: &[u8], from: usize) -> Option<Lsn> {
    if is_zero(bytes.get(from..).unwrap_or(&[])) {
        return None; // the common case: a clean end, zeros up to the end of the segment
    }
    let seed = record::segment_seed(id.0);
    let mut best = None;
    let mut at = record::pad8(from);
    while at + SYNC_MARK_RECORD_LEN <= bytes.len() {
        // Cheap filter before the CRC: kind byte and length of a mark.
        if bytes[at + 8] == RecordKind::SyncMark as u8
            && bytes[at + 4..at + 8] == 16u32.to_le_bytes()
        {
            if let Decoded::Record(r) = record::decode(bytes, at, seed) {
                let lsn = Lsn(record::fixed_field(r.body, 0));
                best = best.max(Some(lsn));
            }
        }
        at += 8;
    }
    best
}

/// Decodes the records of the batch opened by `mark` into `out`; returns where the batch
/// ends, or why it is not whole.
fn read_batch<'a>(
    bytes: &'a [u8],
    mark: &RecordView<'a>,
    seed: u32,
    out: &mut Vec<RecordView<'a>>,
) -> Result<usize, String> {
    out.clear();
    let end = usize::try_from(record::fixed_field(mark.body, 1)).unwrap_or(usize::MAX);
    if end < mark.next || end > bytes.len() || end % 8 != 0 {
        return Err(format!("batch end {end} is out of bounds"));
    }
    let mut at = mark.next;
    while at < end {
        match record::decode(&bytes[..end], at, seed) {
            Decoded::Record(r) => match r.kind {
                RecordKind::SegmentHeader | RecordKind::SyncMark | RecordKind::Seal => {
                    return Err(format!("{:?} record inside a batch", r.kind));
                }
                _ => {
                    out.push(r);
                    at = r.next;
                }
            },
            Decoded::Zero => return Err("zero bytes inside a batch".into()),
            Decoded::Bad(b) => return Err(format!("{b} inside the batch")),
        }
    }
    Ok(end)
}

/// How the records of one segment end, on its own (a record's validity depends only on its
/// segment's bytes and seed).
#[derive(Debug)]
struct SegmentScan {
    /// `None`: sealed. Otherwise the first offset holding no accepted record, and why
    /// (`None` for clean zeros).
    stop: Option<(usize, Option<String>)>,
    /// Accepted records (the header excluded, the seal included).
    records: u64,
    synced_lsn: Lsn,
}

/// Walks one segment, verifying every record, and feeds each accepted one to `visit`.
fn scan_segment<'a>(
    id: SegmentId,
    bytes: &'a [u8],
    batch: &mut Vec<RecordView<'a>>,
    visit: &mut impl FnMut(SegmentId, &RecordView<'a>),
) -> SegmentScan {
    let seed = record::segment_seed(id.0);
    let mut records = 0u64;
    let mut synced_lsn = Lsn::ZERO;
    let stop = match check_header(id, bytes, seed) {
        Err(reason) => Some((0, Some(reason))),
        Ok(mut at) => loop {
            match record::decode(bytes, at, seed) {
                Decoded::Record(r) if r.kind == RecordKind::Seal => {
                    records += 1;
                    visit(id, &r);
                    break None;
                }
                Decoded::Record(r) if r.kind == RecordKind::SyncMark => {
                    // A batch is accepted whole or not at all.
                    match read_batch(bytes, &r, seed, batch) {
                        Ok(end) => {
                            synced_lsn = synced_lsn.max(Lsn(record::fixed_field(r.body, 0)));
                            records += 1 + batch.len() as u64;
                            visit(id, &r);
                            for rec in batch.iter() {
                                visit(id, rec);
                            }
                            at = end;
                        }
                        Err(reason) => break Some((at, Some(reason))),
                    }
                }
                Decoded::Record(r) => {
                    break Some((at, Some(format!("{:?} record outside a batch", r.kind))));
                }
                Decoded::Zero => break Some((at, None)),
                Decoded::Bad(b) => break Some((at, Some(b.to_string()))),
            }
        },
    };
    SegmentScan {
        stop,
        records,
        synced_lsn,
    }
}

/// Scans `segments` (sorted, contiguous ids) and feeds every accepted record to `visit`.
pub fn scan<'a>(
    segments: &[(SegmentId, &'a [u8])],
    mut visit: impl FnMut(SegmentId, &RecordView<'a>),
) -> Result<ScanOutcome, Corruption> {
    let mut batch: Vec<RecordView<'a>> = Vec::new();
    decide(segments, |i| {
        let (id, bytes) = segments[i];
        scan_segment(id, bytes, &mut batch, &mut visit)
    })
}

/// What `scan` decides, without visiting: every segment is verified on its own, `threads`
/// at a time (segment files are independent until the decision, which then reads their
/// results in order exactly as `scan` does). Replay the accepted records afterwards with
/// `replay_accepted`, which needs no checksum since this verified them.
pub fn verify(segments: &[(SegmentId, &[u8])], threads: usize) -> Result<ScanOutcome, Corruption> {
    let threads = threads.clamp(1, segments.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut batch = Vec::new();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(id, bytes)) = segments.get(i) else {
                return done;
            };
            done.push((i, scan_segment(id, bytes, &mut batch, &mut |_, _| {})));
        }
    };
    let mut results: Vec<Option<SegmentScan>> = (0..segments.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        for (i, r) in all {
            results[i] = Some(r);
        }
    });
    decide(segments, |i| {
        results[i].take().unwrap_or(SegmentScan {
            stop: Some((0, Some("segment was not scanned".into()))),
            records: 0,
            synced_lsn: Lsn::ZERO,
        })
    })
}

/// Feeds `visit` the records that `verify` accepted, in log order, without checking them
/// again (the bytes must be those `verify` read). The same records, in the same order, as
/// `scan` visits.
pub fn replay_accepted<'a>(
    segments: &[(SegmentId, &'a [u8])],
    end: &End,
    mut visit: impl FnMut(SegmentId, &RecordView<'a>),
) {
    for &(id, bytes) in segments {
        let limit = match *end {
            End::Open {
                segment, offset, ..
            } if segment == id => offset,
            End::Open { segment, .. } if id > segment => return,
            End::NewSegment { id: new } if id >= new => return,
            _ => usize::MAX, // sealed: up to its seal
        };
        // `verify` accepted every record before `limit` in these same bytes: one that does
        // not parse now is a bug, never a reason to skip records silently.
        let parse = |at: usize| {
            record::decode_verified(bytes, at).unwrap_or_else(|| {
                panic!("segment {id}: the record at {at} that verify accepted does not parse")
            })
        };
        let mut at = parse(0).next;
        while at < limit {
            let r = parse(at);
            visit(id, &r);
            if r.kind == RecordKind::Seal {
                break;
            }
            at = r.next;
        }
    }
}

/// The decision over the per-segment results (`result(i)` scans segment `i`, asked for in
/// order up to the first segment that is not sealed).
fn decide(
    segments: &[(SegmentId, &[u8])],
    mut result: impl FnMut(usize) -> SegmentScan,
) -> Result<ScanOutcome, Corruption> {
    let mut records = 0u64;
    let mut synced_lsn = Lsn::ZERO;
    for (i, &(id, bytes)) in segments.iter().enumerate() {
        let seg = result(i);
        records += seg.records;
        synced_lsn = synced_lsn.max(seg.synced_lsn);
        let Some((stop, reason)) = seg.stop else {
            // Row 2: sealed; row 5 if it is the last one.
            if i + 1 == segments.len() {
                return Ok(ScanOutcome {
                    end: End::NewSegment { id: id.next() },
                    torn: None,
                    discard: Vec::new(),
                    records,
                    synced_lsn,
                });
            }
            continue;
        };
        // Segment files are created whole (written, synced, then renamed into place) and
        // the log only reaches one at byte 0 when it is the first or follows a sealed one,
        // so a file shorter than its header was cut after it was created: the proof its
        // records held is gone with them, and ending the log before it would silently
        // drop durable records (votes included). Its header was durable: row 3.
        if stop == 0 && bytes.len() < SEGMENT_HEADER_RECORD_LEN {
            return Err(Corruption {
                segment: id,
                offset: 0,
                reason: reason.unwrap_or_else(|| "the segment file is cut short".into()),
                proof: Lsn::new(id, SEGMENT_HEADER_RECORD_LEN),
            });
        }
        // Rows 3 and 4: is there proof that bytes at `stop` were durable?
        let x = Lsn::new(id, stop);
        // Later segments: a pristine one (valid header, zeros after it) holds no mark and
        // is kept; any other is searched for marks, then discarded.
        let mut discard = Vec::new();
        let mut later_proof = None;
        for &(sid, b) in &segments[i + 1..] {
            let pristine = match check_header(sid, b, record::segment_seed(sid.0)) {
                Ok(start) => is_zero(&b[start..]),
                Err(_) => false,
            };
            if !pristine {
                discard.push(sid);
                later_proof = later_proof.max(max_mark_after(sid, b, 0));
            }
        }
        let proof = max_mark_after(id, bytes, stop + 8).max(later_proof);
        if let Some(proof) = proof.filter(|&p| p > x) {
            return Err(Corruption {
                segment: id,
                offset: stop,
                reason: reason.unwrap_or_else(|| "zero bytes where a record was durable".into()),
                proof,
            });
        }
        let torn = reason.map(|reason| TornTail {
            segment: id,
            offset: stop,
            reason,
        });
        let end = if stop == 0 {
            End::NewSegment { id }
        } else {
            let dirty = !is_zero(&bytes[stop..]);
            End::Open {
                segment: id,
                offset: stop,
                dirty,
            }
        };
        return Ok(ScanOutcome {
            end,
            torn,
            discard,
            records,
            synced_lsn,
        });
    }
    Ok(ScanOutcome {
        end: End::NewSegment { id: SegmentId(1) },
        torn: None,
        discard: Vec::new(),
        records,
        synced_lsn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::put_fixed;
    use crate::GroupId;

    fn segment(id: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        put_fixed(
            &mut b,
            0,
            RecordKind::SegmentHeader,
            GroupId(0),
            &[record::SEGMENT_MAGIC, id, len as u64],
            record::segment_seed(id),
        );
        b
    }

    /// An empty batch: just its mark.
    fn mark(b: &mut [u8], id: u64, at: usize, synced: Lsn) -> usize {
        let end = (at + SYNC_MARK_RECORD_LEN) as u64;
        put_fixed(
            b,
            at,
            RecordKind::SyncMark,
            GroupId(0),
            &[synced.0, end],
            record::segment_seed(id),
        )
    }

    #[test]
    fn clean_end_at_zero_bytes() {
        let mut s = segment(1, 4096);
        let end = mark(&mut s, 1, SEGMENT_HEADER_RECORD_LEN, Lsn::ZERO);
        let out = scan(&[(SegmentId(1), &s)], |_, _| {}).unwrap();
        assert_eq!(
            out.end,
            End::Open {
                segment: SegmentId(1),
                offset: end,
                dirty: false
            }
        );
        assert_eq!(out.torn, None);
        assert_eq!(out.records, 1, "the header is checked, not counted");
    }

    #[test]
    fn a_batch_is_accepted_whole_or_not_at_all() {
        let mut s = segment(1, 4096);
        let a = SEGMENT_HEADER_RECORD_LEN;
        let seed = record::segment_seed(1);
        let hs = a + SYNC_MARK_RECORD_LEN;
        let end = hs + 2 * record::record_len(24);
        put_fixed(
            &mut s,
            a,
            RecordKind::SyncMark,
            GroupId(0),
            &[0, end as u64],
            seed,
        );
        let second = put_fixed(
            &mut s,
            hs,
            RecordKind::HardState,
            GroupId(1),
            &[1, 1, 1],
            seed,
        );
        put_fixed(
            &mut s,
            second,
            RecordKind::HardState,
            GroupId(2),
            &[1, 1, 1],
            seed,
        );
        s[second + 30] ^= 4;
        let mut seen = 0;
        let out = scan(&[(SegmentId(1), &s)], |_, _| seen += 1).unwrap();
        assert_eq!(seen, 0, "no record of a torn batch is replayed");
        assert_eq!(out.torn.unwrap().offset, a);
    }

    #[test]
    fn row4_bad_bytes_without_later_proof_are_a_torn_tail() {
        let mut s = segment(1, 4096);
        let a = mark(&mut s, 1, SEGMENT_HEADER_RECORD_LEN, Lsn::ZERO);
        let b = mark(&mut s, 1, a, Lsn::ZERO);
        // A later batch whose mark claims only `a` durable.
        mark(&mut s, 1, b, Lsn::new(SegmentId(1), a));
        s[a + 30] ^= 1;
        let out = scan(&[(SegmentId(1), &s)], |_, _| {}).unwrap();
        assert_eq!(
            out.end,
            End::Open {
                segment: SegmentId(1),
                offset: a,
                dirty: true
            }
        );
        assert!(out.torn.unwrap().reason.contains("checksum"));
    }

    #[test]
    fn row3_bad_bytes_before_a_later_synced_mark_are_corruption() {
        let mut s = segment(1, 4096);
        let a = mark(&mut s, 1, SEGMENT_HEADER_RECORD_LEN, Lsn::ZERO);
        let b = mark(&mut s, 1, a, Lsn::ZERO);
        mark(&mut s, 1, b, Lsn::new(SegmentId(1), b));
        s[a + 30] ^= 1;
        let err = scan(&[(SegmentId(1), &s)], |_, _| {}).unwrap_err();
        assert_eq!((err.segment, err.offset), (SegmentId(1), a));
    }

    #[test]
    fn row5_sealed_last_segment_opens_the_next() {
        let mut s = segment(3, 4096);
        put_fixed(
            &mut s,
            SEGMENT_HEADER_RECORD_LEN,
            RecordKind::Seal,
            GroupId(0),
            &[0],
            record::segment_seed(3),
        );
        let out = scan(&[(SegmentId(3), &s)], |_, _| {}).unwrap();
        assert_eq!(out.end, End::NewSegment { id: SegmentId(4) });
    }

    #[test]
    fn empty_file_after_a_sealed_segment_is_corruption() {
        let mut s = segment(3, 4096);
        put_fixed(
            &mut s,
            SEGMENT_HEADER_RECORD_LEN,
            RecordKind::Seal,
            GroupId(0),
            &[0],
            record::segment_seed(3),
        );
        // Segment 4 was created whole before 3 was sealed: it was emptied afterwards.
        let err = scan(&[(SegmentId(3), &s), (SegmentId(4), &[])], |_, _| {}).unwrap_err();
        assert_eq!((err.segment, err.offset), (SegmentId(4), 0));
        assert!(err.reason.contains("empty"), "{}", err.reason);
    }
}
