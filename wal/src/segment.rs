//! Segment identity and log positions: `SegmentId`, `Lsn`, file names, and the write
//! cursor of the active segment. No I/O (the bytes live behind `disk::Disk`).

use std::fmt;

/// A segment's sequence number; segment files are named `{id:016x}.wal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The file name of this segment.
    pub fn file_name(self) -> String {
        format!("{:016x}.wal", self.0)
    }

    /// Parses a segment file name (`{id:016x}.wal`).
    pub fn from_file_name(name: &str) -> Option<SegmentId> {
        let hex = name.strip_suffix(".wal")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(SegmentId)
    }

    pub fn next(self) -> SegmentId {
        SegmentId(self.0 + 1)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// A position in the log: segment id in the high 32 bits, byte offset in the low 32 bits.
/// Positions only grow; "durable up to `Lsn` x" means every byte before x is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn new(segment: SegmentId, offset: usize) -> Lsn {
        assert!(
            segment.0 < 1 << 32,
            "segment id {} exceeds the Lsn range",
            segment.0
        );
        assert!(offset < 1 << 32, "segment offset {offset} exceeds 4 GiB");
        Lsn((segment.0 << 32) | offset as u64)
    }

    pub fn segment(self) -> SegmentId {
        SegmentId(self.0 >> 32)
    }

    pub fn offset(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.segment(), self.offset())
    }
}

/// The segment being appended to.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub segment: SegmentId,
    /// Next write offset (8-aligned).
    pub offset: usize,
    /// Length of the segment file.
    pub len_bytes: usize,
}

impl Cursor {
    /// Bytes that still fit, keeping room for the seal record.
    pub fn room(&self) -> usize {
        self.len_bytes
            .saturating_sub(self.offset + crate::record::SEAL_RECORD_LEN)
    }

    pub fn lsn(&self) -> Lsn {
        Lsn::new(self.segment, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let id = SegmentId(0x2a);
        assert_eq!(id.file_name(), "000000000000002a.wal");
        assert_eq!(SegmentId::from_file_name(&id.file_name()), Some(id));
        assert_eq!(SegmentId::from_file_name("2a.wal"), None);
        assert_eq!(SegmentId::from_file_name("000000000000002a.wal.tmp"), None);
    }

    #[test]
    fn lsn_orders_by_segment_then_offset() {
        let a = Lsn::new(SegmentId(1), 4000);
        let b = Lsn::new(SegmentId(2), 8);
        assert!(a < b);
        assert_eq!(b.segment(), SegmentId(2));
        assert_eq!(b.offset(), 8);
    }
}
