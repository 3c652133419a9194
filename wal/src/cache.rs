//! A bounded cache of where the most recent entries of every group lie in the mapping, so
//! that reading the tail of a log is a slice of mapped memory: no record is decoded, no
//! segment file is read, and appending copies no payload a second time (the cache holds
//! locations, never copies).
//!
//! Each group keeps a contiguous suffix of its log in a [`GroupCache`], which lives in the
//! group's index entry (`GroupLog`): appending a record of a group touches one table entry
//! for both. One [`CacheBudget`], counted in payload bytes plus a fixed overhead per entry,
//! covers all groups, and the oldest insertions are evicted first. Eviction is a window,
//! not a queue: the budget counts the bytes ever inserted, each entry remembers the count
//! when it came in, and an entry is live while fewer than `budget` bytes came in after its
//! start. Nothing is done per evicted entry on the hot path (no queue of insertions, no
//! lookup of the group an old entry belongs to); a group drops its evicted entries when it
//! next appends, and `trim` drops them for all groups once per segment (`Wal::roll`).
//!
//! The cached suffix is always part of the group's live log: every operation on a
//! `GroupLog` (append, truncate, compact, snapshot) applies to its cache in the same call,
//! so a cached location never points into a deleted segment.

use std::collections::VecDeque;

use crate::segment::SegmentId;
use crate::{LogIndex, Term};

/// Where an entry's payload lies: `len` bytes at `offset` of `segment`'s mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: SegmentId,
    pub offset: u32,
    pub len: u32,
}

/// Per-entry bookkeeping counted against the budget besides the payload.
const ENTRY_OVERHEAD_BYTES: u64 = 32;

fn cost(location: &Location) -> u64 {
    u64::from(location.len) + ENTRY_OVERHEAD_BYTES
}

/// The budget every group's cache draws on: the window of the most recently inserted
/// `budget_bytes`.
#[derive(Debug)]
pub struct CacheBudget {
    /// Cost of every entry ever inserted.
    inserted: u64,
    budget_bytes: u64,
}

impl CacheBudget {
    /// A budget of `budget_bytes` (0 disables the cache).
    pub fn new(budget_bytes: usize) -> CacheBudget {
        CacheBudget {
            inserted: 0,
            budget_bytes: budget_bytes as u64,
        }
    }

    /// Whether an entry inserted when `inserted` was `start` is still within the window.
    fn live(&self, start: u64) -> bool {
        self.inserted - start <= self.budget_bytes
    }
}

/// One cached entry.
#[derive(Debug, Clone, Copy)]
struct Cached {
    term: Term,
    location: Location,
    /// `CacheBudget::inserted` just before this entry came in (its age).
    start: u64,
}

/// One group's cached suffix. Invariant: `entries` are indices `first..` in order, and their
/// `start`s increase (so evicted entries are always at the front).
#[derive(Debug, Clone, Default)]
pub struct GroupCache {
    /// Index of `entries[0]`.
    first: LogIndex,
    entries: VecDeque<Cached>,
}

impl GroupCache {
    /// Caches entry `index`, dropping cached entries at `index` and after, and any this
    /// group has that the budget's window has moved past.
    pub fn insert(
        &mut self,
        budget: &mut CacheBudget,
        index: LogIndex,
        term: Term,
        location: Location,
    ) {
        if budget.budget_bytes == 0 {
            return;
        }
        if index.0 != self.next().0 || self.entries.is_empty() {
            if !self.entries.is_empty() && index.0 > self.first.0 && index.0 < self.next().0 {
                self.truncate(index);
            } else {
                // Not contiguous with what is cached: start over at `index`.
                self.entries.clear();
                self.first = index;
            }
        }
        let start = budget.inserted;
        budget.inserted += cost(&location);
        self.entries.push_back(Cached {
            term,
            location,
            start,
        });
        self.drop_evicted(budget);
    }

    /// The index after the last cached entry.
    fn next(&self) -> LogIndex {
        LogIndex(self.first.0 + self.entries.len() as u64)
    }

    /// The cached entry `index`, if it is cached and within the budget's window.
    pub fn get(&self, budget: &CacheBudget, index: LogIndex) -> Option<(Term, Location)> {
        let i = usize::try_from(index.0.checked_sub(self.first.0)?).ok()?;
        let c = self.entries.get(i)?;
        budget.live(c.start).then_some((c.term, c.location))
    }

    /// Drops cached entries at `from` and after.
    pub fn truncate(&mut self, from: LogIndex) {
        let keep = from.0.saturating_sub(self.first.0);
        if keep < self.entries.len() as u64 {
            self.entries.truncate(keep as usize);
        }
    }

    /// Drops cached entries below `below`.
    pub fn compact(&mut self, below: LogIndex) {
        while !self.entries.is_empty() && self.first.0 < below.0 {
            self.entries.pop_front();
            self.first = LogIndex(self.first.0 + 1);
        }
    }

    /// Drops everything cached.
    pub fn clear(&mut self) {
        self.entries = VecDeque::new();
    }

    /// Drops the entries the budget's window has moved past.
    fn drop_evicted(&mut self, budget: &CacheBudget) {
        while let Some(c) = self.entries.front() {
            if budget.live(c.start) {
                break;
            }
            self.entries.pop_front();
            self.first = LogIndex(self.first.0 + 1);
        }
    }

    /// Drops evicted entries and frees the room of a cache left empty (an idle group holds
    /// no memory for it).
    pub fn trim(&mut self, budget: &CacheBudget) {
        self.drop_evicted(budget);
        if self.entries.is_empty() {
            self.clear();
        }
    }

    /// The segments the cached entries lie in (for invariant checks).
    pub fn segments(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.entries.iter().map(|c| c.location.segment)
    }

    /// Checks that the cache is a suffix of the live log `(base, last]` with ages in order.
    pub fn check_invariants(&self, budget: &CacheBudget, base: LogIndex, last: LogIndex) {
        if self.entries.is_empty() {
            return;
        }
        assert!(
            self.first.0 > base.0 && self.next().0 <= last.0 + 1,
            "cached entries {}..{} outside the live log ({base}, {last}]",
            self.first,
            self.next()
        );
        let mut prev = None;
        for c in &self.entries {
            assert!(c.start < budget.inserted, "cached entry from the future");
            if let Some(p) = prev {
                assert!(p < c.start, "cached entries out of insertion order");
            }
            prev = Some(c.start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u32, len: u32) -> Location {
        Location {
            segment: SegmentId(1),
            offset,
            len,
        }
    }

    const fn entries(n: u64, len: u64) -> usize {
        (n * (len + ENTRY_OVERHEAD_BYTES)) as usize
    }

    #[test]
    fn keeps_a_contiguous_suffix_within_budget() {
        let mut b = CacheBudget::new(entries(3, 8));
        let mut c = GroupCache::default();
        for i in 1..=5 {
            c.insert(&mut b, LogIndex(i), Term(1), at(i as u32 * 64, 8));
        }
        assert!(c.get(&b, LogIndex(2)).is_none());
        assert_eq!(c.get(&b, LogIndex(5)).unwrap().1, at(320, 8));
        assert_eq!(c.get(&b, LogIndex(3)).unwrap().0, Term(1));
        c.check_invariants(&b, LogIndex(0), LogIndex(5));
        c.insert(&mut b, LogIndex(4), Term(2), at(1000, 1));
        assert!(c.get(&b, LogIndex(5)).is_none());
        assert_eq!(c.get(&b, LogIndex(4)).unwrap(), (Term(2), at(1000, 1)));
        c.compact(LogIndex(4));
        assert!(c.get(&b, LogIndex(3)).is_none());
        assert_eq!(c.get(&b, LogIndex(4)).unwrap().0, Term(2));
        c.check_invariants(&b, LogIndex(3), LogIndex(4));
        c.clear();
        assert!(c.get(&b, LogIndex(4)).is_none());
    }

    #[test]
    fn eviction_is_oldest_first_across_groups() {
        let mut b = CacheBudget::new(entries(2, 1));
        let mut groups = [
            GroupCache::default(),
            GroupCache::default(),
            GroupCache::default(),
        ];
        for (i, g) in groups.iter_mut().enumerate() {
            g.insert(&mut b, LogIndex(1), Term(1), at(8 * i as u32, 1));
        }
        assert!(groups[0].get(&b, LogIndex(1)).is_none());
        assert!(groups[1].get(&b, LogIndex(1)).is_some());
        assert!(groups[2].get(&b, LogIndex(1)).is_some());
        // The evicted entry is still held until its group appends again or is trimmed.
        assert_eq!(groups[0].segments().count(), 1);
        groups[0].trim(&b);
        assert_eq!(groups[0].segments().count(), 0);
        assert_eq!(
            groups[0].entries.capacity(),
            0,
            "an emptied cache keeps its room"
        );
        groups[2].insert(&mut b, LogIndex(2), Term(1), at(24, 1));
        assert!(groups[1].get(&b, LogIndex(1)).is_none());
        assert!(groups[2].get(&b, LogIndex(1)).is_some());
        assert!(groups[2].get(&b, LogIndex(2)).is_some());
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let mut b = CacheBudget::new(entries(1, 8));
        let mut c = GroupCache::default();
        c.insert(&mut b, LogIndex(1), Term(1), at(0, 8));
        c.insert(&mut b, LogIndex(2), Term(1), at(64, 9));
        assert!(c.get(&b, LogIndex(1)).is_none());
        assert!(c.get(&b, LogIndex(2)).is_none());
        assert_eq!(c.segments().count(), 0);
    }

    #[test]
    fn a_gap_or_a_rewrite_from_the_first_entry_starts_over() {
        let mut b = CacheBudget::new(entries(10, 8));
        let mut c = GroupCache::default();
        for i in 1..=3 {
            c.insert(&mut b, LogIndex(i), Term(1), at(i as u32 * 64, 8));
        }
        c.insert(&mut b, LogIndex(1), Term(2), at(4096, 8));
        assert_eq!(c.get(&b, LogIndex(1)).unwrap(), (Term(2), at(4096, 8)));
        assert!(c.get(&b, LogIndex(2)).is_none());
        c.insert(&mut b, LogIndex(7), Term(2), at(8192, 8));
        assert!(c.get(&b, LogIndex(1)).is_none());
        assert_eq!(c.get(&b, LogIndex(7)).unwrap().1, at(8192, 8));
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let mut b = CacheBudget::new(0);
        let mut c = GroupCache::default();
        c.insert(&mut b, LogIndex(1), Term(1), at(0, 8));
        assert!(c.get(&b, LogIndex(1)).is_none());
    }
}
