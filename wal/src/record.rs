//! The byte format of one WAL record: encode and decode, no I/O.
//!
//! ```text
//! Record, little-endian, starting 8-byte aligned:
//!  0      4      8      9     10      12       16         24       24+len
//!  | crc  | len  | kind | ver | flags | (zero) | group_id | body   | zero pad to 8 |
//! ```
//! `crc` is CRC32C over bytes `[4, 24+len)`, seeded with the segment id, so that bytes of
//! another segment (a renamed or recycled file) never verify. A header of 24 zero bytes is
//! the end of the written data (segments are zero-filled when prepared).
//!
//! Bodies (all fields little-endian `u64`/`u32`, 8-byte aligned):
//!
//! ```text
//! SegmentHeader  magic u64 | segment_id u64 | len_bytes u64          (first record of a file)
//! SyncMark       synced_lsn u64 | batch_end u64  (opens every batch: what was durable then,
//!                                                  and the offset where this batch ends)
//! Seal           end_lsn u64                     (the segment ends here; the next one follows)
//! Entries        first_index u64 | count u32 | 0 u32 | count x entry
//!                entry = term u64 | len u32 | 0 u32 | payload[len] | zero pad to 8
//! HardState      term u64 | vote u64 | commit u64
//! TruncateSuffix from u64                          (entries >= from are gone)
//! Compact        below u64 | term_of_below_minus_1 u64   (entries < below are not needed)
//! SnapshotMark   index u64 | term u64              (the log restarts after a snapshot)
//! ```
//! The entry payload is stored exactly as given, so a follower copies it once from its
//! receive buffer into the mapping.

use crate::{GroupId, HardState, LogIndex, Term};

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 24;
/// Size of an entry's header inside an `Entries` body.
pub const ENTRY_HEADER_LEN: usize = 16;
/// Size of the fixed part of an `Entries` body.
pub const ENTRIES_PREFIX_LEN: usize = 16;
/// Record format version written by this code.
pub const VERSION: u8 = 1;
/// `SegmentHeader` magic: "QSRWAL01".
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"QSRWAL01");
/// Bytes of a `SyncMark` record (header + two u64).
pub const SYNC_MARK_RECORD_LEN: usize = HEADER_LEN + 16;
/// Bytes of a `Seal` record (header + one u64).
pub const SEAL_RECORD_LEN: usize = HEADER_LEN + 8;
/// Bytes of the `SegmentHeader` record.
pub const SEGMENT_HEADER_RECORD_LEN: usize = HEADER_LEN + 24;

const _: () = assert!(HEADER_LEN % 8 == 0);
const _: () = assert!(ENTRY_HEADER_LEN % 8 == 0);
const _: () = assert!(SYNC_MARK_RECORD_LEN == 40 && SEAL_RECORD_LEN == 32);

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    SegmentHeader = 1,
    SyncMark = 2,
    Seal = 3,
    Entries = 4,
    HardState = 5,
    TruncateSuffix = 6,
    Compact = 7,
    SnapshotMark = 8,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<RecordKind> {
        Some(match v {
            1 => RecordKind::SegmentHeader,
            2 => RecordKind::SyncMark,
            3 => RecordKind::Seal,
            4 => RecordKind::Entries,
            5 => RecordKind::HardState,
            6 => RecordKind::TruncateSuffix,
            7 => RecordKind::Compact,
            8 => RecordKind::SnapshotMark,
            _ => return None,
        })
    }

    /// The exact body length of the fixed-size kinds.
    fn fixed_body_len(self) -> Option<usize> {
        match self {
            RecordKind::SegmentHeader | RecordKind::HardState => Some(24),
            RecordKind::Seal | RecordKind::TruncateSuffix => Some(8),
            RecordKind::SyncMark | RecordKind::Compact | RecordKind::SnapshotMark => Some(16),
            RecordKind::Entries => None,
        }
    }
}

/// Rounds up to a multiple of 8.
pub const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Total bytes a record with a body of `body_len` bytes takes in a segment.
pub const fn record_len(body_len: usize) -> usize {
    HEADER_LEN + pad8(body_len)
}

/// Bytes one entry with a payload of `payload_len` bytes takes inside an `Entries` body.
pub const fn entry_len(payload_len: usize) -> usize {
    ENTRY_HEADER_LEN + pad8(payload_len)
}

/// The CRC seed of a segment: every record's checksum starts from it.
pub fn segment_seed(segment_id: u64) -> u32 {
    crc32c::crc32c(&segment_id.to_le_bytes())
}

/// Why bytes at an offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    /// Fewer than a header's bytes remain and they are not all zero.
    ShortHeader,
    /// The length runs past the end of the segment.
    LenPastEnd {
        len: u32,
    },
    UnknownKind {
        kind: u8,
    },
    UnsupportedVersion {
        version: u8,
    },
    /// Reserved header bytes or padding are not zero.
    NonZeroReserved,
    Checksum {
        expected: u32,
        actual: u32,
    },
    /// The checksum verifies but the body does not have the shape of its kind.
    Malformed {
        reason: &'static str,
    },
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::ShortHeader => write!(f, "partial record header"),
            BadRecord::LenPastEnd { len } => write!(f, "record length {len} runs past the end"),
            BadRecord::UnknownKind { kind } => write!(f, "unknown record kind {kind}"),
            BadRecord::UnsupportedVersion { version } => {
                write!(f, "unsupported record version {version}")
            }
            BadRecord::NonZeroReserved => write!(f, "reserved bytes are not zero"),
            BadRecord::Checksum { expected, actual } => {
                write!(
                    f,
                    "checksum mismatch (stored {expected:#010x}, computed {actual:#010x})"
                )
            }
            BadRecord::Malformed { reason } => write!(f, "malformed body: {reason}"),
        }
    }
}

/// One record decoded in place.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: usize,
    pub kind: RecordKind,
    pub group: GroupId,
    pub body: &'a [u8],
    /// Offset of the next record.
    pub next: usize,
}

/// The result of decoding at one offset.
#[derive(Debug, Clone)]
pub enum Decoded<'a> {
    Record(RecordView<'a>),
    /// A zero header: nothing was written here.
    Zero,
    Bad(BadRecord),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decodes the record at `offset` (8-aligned) of a segment whose CRC seed is `seed`.
pub fn decode(bytes: &[u8], offset: usize, seed: u32) -> Decoded<'_> {
    debug_assert!(offset % 8 == 0, "record offset {offset} not aligned");
    let rest = bytes.get(offset..).unwrap_or(&[]);
    if rest.len() < HEADER_LEN {
        return if rest.iter().all(|&b| b == 0) {
            Decoded::Zero
        } else {
            Decoded::Bad(BadRecord::ShortHeader)
        };
    }
    let header = &rest[..HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::Zero;
    }
    let crc = u32_at(header, 0);
    let len = u32_at(header, 4);
    let kind_byte = header[8];
    let version = header[9];
    let total = HEADER_LEN as u64 + pad8(len as usize) as u64;
    if total > rest.len() as u64 {
        return Decoded::Bad(BadRecord::LenPastEnd { len });
    }
    let Some(kind) = RecordKind::from_u8(kind_byte) else {
        return Decoded::Bad(BadRecord::UnknownKind { kind: kind_byte });
    };
    if version != VERSION {
        return Decoded::Bad(BadRecord::UnsupportedVersion { version });
    }
    let body_end = HEADER_LEN + len as usize;
    let actual = crc32c::crc32c_append(seed, &rest[4..body_end]);
    if actual != crc {
        return Decoded::Bad(BadRecord::Checksum {
            expected: crc,
            actual,
        });
    }
    if header[10..16].iter().any(|&b| b != 0)
        || rest[body_end..pad8(body_end)].iter().any(|&b| b != 0)
    {
        return Decoded::Bad(BadRecord::NonZeroReserved);
    }
    let body = &rest[HEADER_LEN..body_end];
    if let Some(fixed) = kind.fixed_body_len() {
        if body.len() != fixed {
            return Decoded::Bad(BadRecord::Malformed {
                reason: "wrong body length for kind",
            });
        }
    } else if let Err(reason) = validate_entries(body) {
        return Decoded::Bad(BadRecord::Malformed { reason });
    }
    Decoded::Record(RecordView {
        offset,
        kind,
        group: GroupId(u64_at(header, 16)),
        body,
        next: offset + pad8(body_end),
    })
}

/// Decodes the record at `offset` without verifying it: only for bytes that `decode`
/// accepted before (recovery verifies every segment first, then replays it with this).
/// `None` where the header does not even parse.
pub fn decode_verified(bytes: &[u8], offset: usize) -> Option<RecordView<'_>> {
    let rest = bytes.get(offset..)?;
    let header = rest.get(..HEADER_LEN)?;
    let len = u32_at(header, 4) as usize;
    let kind = RecordKind::from_u8(header[8])?;
    let body_end = HEADER_LEN + len;
    let body = rest.get(HEADER_LEN..body_end)?;
    Some(RecordView {
        offset,
        kind,
        group: GroupId(u64_at(header, 16)),
        body,
        next: offset + pad8(body_end),
    })
}

fn validate_entries(body: &[u8]) -> Result<(), &'static str> {
    if body.len() < ENTRIES_PREFIX_LEN {
        return Err("entries body shorter than its prefix");
    }
    let count = u32_at(body, 8) as usize;
    if count == 0 {
        return Err("entries record with no entry");
    }
    let first = u64_at(body, 0);
    if first == 0 || first.checked_add(count as u64).is_none() {
        return Err("entries record with an impossible first index");
    }
    let mut at = ENTRIES_PREFIX_LEN;
    for _ in 0..count {
        if body.len() - at < ENTRY_HEADER_LEN {
            return Err("entry header past the body");
        }
        let len = u32_at(body, at + 8) as usize;
        let next = at
            .checked_add(entry_len(len))
            .ok_or("entry length overflows")?;
        if next > pad8(body.len()) || at + ENTRY_HEADER_LEN + len > body.len() {
            return Err("entry payload past the body");
        }
        at = next;
    }
    if pad8(at) != pad8(body.len()) {
        return Err("bytes after the last entry");
    }
    Ok(())
}

/// Writes a record header plus `body_len` body bytes already placed at
/// `[at + HEADER_LEN, ..)` of `buf`: fills the header, zero padding and the checksum.
/// Returns the offset after the record.
pub fn seal_record(
    buf: &mut [u8],
    at: usize,
    kind: RecordKind,
    group: GroupId,
    body_len: usize,
    seed: u32,
) -> usize {
    assert!(at % 8 == 0, "record at unaligned offset {at}");
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    assert!(
        len != u32::MAX,
        "record body of {body_len} bytes is too large"
    );
    let end = at + HEADER_LEN + body_len;
    let padded = at + record_len(body_len);
    buf[end..padded].fill(0);
    let h = &mut buf[at..at + HEADER_LEN];
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8] = kind as u8;
    h[9] = VERSION;
    h[10..16].fill(0);
    h[16..24].copy_from_slice(&group.0.to_le_bytes());
    let crc = crc32c::crc32c_append(seed, &buf[at + 4..end]);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(
        matches!(decode(buf, at, seed), Decoded::Record(r) if r.kind == kind),
        "record just encoded at {at} does not decode"
    );
    padded
}

/// Encodes a record with a body of fixed `u64` fields at `at`; returns the next offset.
pub fn put_fixed(
    buf: &mut [u8],
    at: usize,
    kind: RecordKind,
    group: GroupId,
    fields: &[u64],
    seed: u32,
) -> usize {
    let mut p = at + HEADER_LEN;
    for f in fields {
        buf[p..p + 8].copy_from_slice(&f.to_le_bytes());
        p += 8;
    }
    seal_record(buf, at, kind, group, fields.len() * 8, seed)
}

/// Writes the prefix of an `Entries` body for a record starting at `at`.
pub fn put_entries_prefix(buf: &mut [u8], at: usize, first: LogIndex, count: u32) {
    let p = at + HEADER_LEN;
    buf[p..p + 8].copy_from_slice(&first.0.to_le_bytes());
    buf[p + 8..p + 12].copy_from_slice(&count.to_le_bytes());
    buf[p + 12..p + 16].fill(0);
}

/// Writes one entry at `p` (inside an `Entries` body); returns the offset after it.
pub fn put_entry(buf: &mut [u8], p: usize, term: Term, payload: &[u8]) -> usize {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(
        len != u32::MAX,
        "entry payload of {} bytes is too large",
        payload.len()
    );
    buf[p..p + 8].copy_from_slice(&term.0.to_le_bytes());
    buf[p + 8..p + 12].copy_from_slice(&len.to_le_bytes());
    buf[p + 12..p + 16].fill(0);
    let start = p + ENTRY_HEADER_LEN;
    buf[start..start + payload.len()].copy_from_slice(payload);
    let end = p + entry_len(payload.len());
    buf[start + payload.len()..end].fill(0);
    end
}

/// The fixed fields of a record body, read as `u64`s.
pub fn fixed_field(body: &[u8], i: usize) -> u64 {
    u64_at(body, i * 8)
}

/// The `HardState` of a `HardState` record body.
pub fn hard_state_of(body: &[u8]) -> HardState {
    HardState {
        term: Term(u64_at(body, 0)),
        vote: u64_at(body, 8),
        commit: LogIndex(u64_at(body, 16)),
    }
}

/// The first index and count of an (already validated) `Entries` body.
pub fn entries_header(body: &[u8]) -> (LogIndex, u32) {
    (LogIndex(u64_at(body, 0)), u32_at(body, 8))
}

/// Iterates over the entries of a validated `Entries` body: `(index, term, payload)`.
pub fn entries_iter(body: &[u8]) -> impl Iterator<Item = (LogIndex, Term, &[u8])> + '_ {
    let (first, count) = entries_header(body);
    let mut at = ENTRIES_PREFIX_LEN;
    (0..u64::from(count)).map(move |i| {
        let term = Term(u64_at(body, at));
        let len = u32_at(body, at + 8) as usize;
        let payload = &body[at + ENTRY_HEADER_LEN..at + ENTRY_HEADER_LEN + len];
        at += entry_len(len);
        (LogIndex(first.0 + i), term, payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_entries(
        seed: u32,
        group: GroupId,
        first: u64,
        entries: &[(u64, Vec<u8>)],
    ) -> Vec<u8> {
        let body: usize =
            ENTRIES_PREFIX_LEN + entries.iter().map(|e| entry_len(e.1.len())).sum::<usize>();
        let mut buf = vec![0u8; record_len(body) + 32];
        put_entries_prefix(&mut buf, 0, LogIndex(first), entries.len() as u32);
        let mut p = HEADER_LEN + ENTRIES_PREFIX_LEN;
        for (t, payload) in entries {
            p = put_entry(&mut buf, p, Term(*t), payload);
        }
        let end = seal_record(
            &mut buf,
            0,
            RecordKind::Entries,
            group,
            p - HEADER_LEN,
            seed,
        );
        assert_eq!(end, record_len(body));
        buf
    }

    #[test]
    fn zero_bytes_decode_as_zero_not_bad() {
        let buf = vec![0u8; 64];
        assert!(matches!(decode(&buf, 0, 7), Decoded::Zero));
        assert!(matches!(decode(&buf, 56, 7), Decoded::Zero));
        assert!(matches!(decode(&buf, 64, 7), Decoded::Zero));
    }

    #[test]
    fn fixed_record_round_trips_and_is_bound_to_its_segment() {
        let mut buf = vec![0u8; 64];
        let next = put_fixed(
            &mut buf,
            0,
            RecordKind::HardState,
            GroupId(9),
            &[3, 2, 1],
            segment_seed(5),
        );
        assert_eq!(next, 48);
        let Decoded::Record(r) = decode(&buf, 0, segment_seed(5)) else {
            panic!("no record")
        };
        assert_eq!(r.kind, RecordKind::HardState);
        assert_eq!(r.group, GroupId(9));
        assert_eq!(
            hard_state_of(r.body),
            HardState {
                term: Term(3),
                vote: 2,
                commit: LogIndex(1)
            }
        );
        // The same bytes in another segment do not verify.
        assert!(matches!(
            decode(&buf, 0, segment_seed(6)),
            Decoded::Bad(BadRecord::Checksum { .. })
        ));
    }

    #[test]
    fn length_past_the_end_is_bad() {
        let mut buf = vec![0u8; 64];
        put_fixed(&mut buf, 0, RecordKind::Seal, GroupId(0), &[1], 1);
        assert!(matches!(
            decode(&buf[..24], 0, 1),
            Decoded::Bad(BadRecord::LenPastEnd { len: 8 })
        ));
        assert!(matches!(
            decode(&buf[..20], 0, 1),
            Decoded::Bad(BadRecord::ShortHeader)
        ));
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            seed in any::<u32>(),
            group in any::<u64>(),
            first in 1u64..1_000_000,
            entries in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)), 1..8),
        ) {
            let buf = encode_entries(seed, GroupId(group), first, &entries);
            let Decoded::Record(r) = decode(&buf, 0, seed) else { panic!("no record") };
            prop_assert_eq!(r.group, GroupId(group));
            let got: Vec<_> = entries_iter(r.body).map(|(i, t, p)| (i.0, t.0, p.to_vec())).collect();
            let want: Vec<_> = entries.iter().enumerate().map(|(i, (t, p))| (first + i as u64, *t, p.clone())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..64),
            bit in any::<usize>(),
        ) {
            let mut buf = encode_entries(11, GroupId(3), 1, &[(2, payload)]);
            let len = buf.len() - 32;
            let bit = bit % (len * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!matches!(decode(&buf, 0, 11), Decoded::Record(_)));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..25) {
            let _ = decode(&bytes, at * 8, 0);
        }
    }
}
