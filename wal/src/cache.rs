//! A bounded cache of where the most recent entries of every group lie in the mapping, so
//! that reading the tail of a log is a slice of mapped memory: no record is decoded, no
//! segment file is read, and appending copies no payload a second time (the cache holds
//! locations, never copies). Each group keeps a contiguous suffix of its log; one budget,
//! counted in payload bytes, covers all groups and the oldest insertions are evicted first.

use std::collections::{HashMap, VecDeque};

use crate::segment::SegmentId;
use crate::{GroupHasher, GroupId, LogIndex, Term};

/// Where an entry's payload lies: `len` bytes at `offset` of `segment`'s mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: SegmentId,
    pub offset: u32,
    pub len: u32,
}

/// Per-entry bookkeeping counted against the budget besides the payload.
const ENTRY_OVERHEAD_BYTES: usize = 32;

#[derive(Debug, Default)]
struct GroupCache {
    /// Index of `entries[0]`.
    first: LogIndex,
    entries: VecDeque<(Term, Location)>,
}

/// The cache. Invariant: `bytes` is the sum of the cost of every cached entry.
#[derive(Debug)]
pub struct EntryCache {
    groups: HashMap<GroupId, GroupCache, GroupHasher>,
    /// Insertion order, for eviction; entries already gone are skipped.
    order: VecDeque<(GroupId, LogIndex)>,
    bytes: usize,
    budget_bytes: usize,
}

fn cost(location: &Location) -> usize {
    location.len as usize + ENTRY_OVERHEAD_BYTES
}

impl EntryCache {
    pub fn new(budget_bytes: usize) -> EntryCache {
        EntryCache {
            groups: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            budget_bytes,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Caches entry `index` of `group`, dropping cached entries at `index` and after.
    pub fn insert(&mut self, group: GroupId, index: LogIndex, term: Term, payload: Location) {
        if self.budget_bytes == 0 {
            return;
        }
        // One lookup: the common case appends right after the cached suffix.
        let g = self.groups.entry(group).or_default();
        let next = g.first.0 + g.entries.len() as u64;
        if index.0 != next || g.entries.is_empty() {
            if !g.entries.is_empty() && index.0 > g.first.0 && index.0 < next {
                // Overwrites a cached suffix: drop entries at `index` and after.
                while g.first.0 + g.entries.len() as u64 > index.0 {
                    if let Some((_, p)) = g.entries.pop_back() {
                        self.bytes -= cost(&p);
                    }
                }
            } else {
                // Not contiguous with what is cached: start over at `index`.
                self.bytes -= g.entries.iter().map(|(_, p)| cost(p)).sum::<usize>();
                g.entries.clear();
                g.first = index;
            }
        }
        g.entries.push_back((term, payload));
        self.bytes += cost(&payload);
        self.order.push_back((group, index));
        while self.bytes > self.budget_bytes {
            let Some((g_id, i)) = self.order.pop_front() else {
                break;
            };
            if let Some(g) = self.groups.get_mut(&g_id) {
                if g.first == i {
                    if let Some((_, p)) = g.entries.pop_front() {
                        self.bytes -= cost(&p);
                        g.first = LogIndex(i.0 + 1);
                    }
                    if g.entries.is_empty() {
                        self.groups.remove(&g_id);
                    }
                }
            }
        }
    }

    /// The cached entry `index` of `group`.
    pub fn get(&self, group: GroupId, index: LogIndex) -> Option<(Term, Location)> {
        let g = self.groups.get(&group)?;
        let i = index.0.checked_sub(g.first.0)?;
        g.entries.get(usize::try_from(i).ok()?).copied()
    }

    /// Every segment a cached entry lies in (for invariant checks).
    pub fn segments(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.groups
            .values()
            .flat_map(|g| g.entries.iter().map(|(_, l)| l.segment))
    }

    /// Drops cached entries at `from` and after.
    pub fn truncate(&mut self, group: GroupId, from: LogIndex) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        while !g.entries.is_empty() && g.first.0 + g.entries.len() as u64 > from.0 {
            if let Some((_, p)) = g.entries.pop_back() {
                self.bytes -= cost(&p);
            }
        }
    }

    /// Drops cached entries below `below`.
    pub fn compact(&mut self, group: GroupId, below: LogIndex) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        while !g.entries.is_empty() && g.first.0 < below.0 {
            if let Some((_, p)) = g.entries.pop_front() {
                self.bytes -= cost(&p);
            }
            g.first = LogIndex(g.first.0 + 1);
        }
    }

    /// Drops everything cached for `group`.
    pub fn clear(&mut self, group: GroupId) {
        if let Some(g) = self.groups.remove(&group) {
            self.bytes -= g.entries.iter().map(|(_, p)| cost(p)).sum::<usize>();
        }
    }

    pub fn check_invariants(&self) {
        let sum: usize = self
            .groups
            .values()
            .flat_map(|g| g.entries.iter())
            .map(|(_, p)| cost(p))
            .sum();
        assert_eq!(sum, self.bytes, "cache byte count drifted");
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

    #[test]
    fn keeps_a_contiguous_suffix_within_budget() {
        let mut c = EntryCache::new(3 * (8 + ENTRY_OVERHEAD_BYTES));
        for i in 1..=5 {
            c.insert(GroupId(1), LogIndex(i), Term(1), at(i as u32 * 64, 8));
        }
        assert!(c.get(GroupId(1), LogIndex(2)).is_none());
        assert_eq!(c.get(GroupId(1), LogIndex(5)).unwrap().1, at(320, 8));
        assert_eq!(c.get(GroupId(1), LogIndex(3)).unwrap().0, Term(1));
        c.insert(GroupId(1), LogIndex(4), Term(2), at(1000, 1));
        assert!(c.get(GroupId(1), LogIndex(5)).is_none());
        assert_eq!(
            c.get(GroupId(1), LogIndex(4)).unwrap(),
            (Term(2), at(1000, 1))
        );
        c.compact(GroupId(1), LogIndex(4));
        assert!(c.get(GroupId(1), LogIndex(3)).is_none());
        c.check_invariants();
        c.clear(GroupId(1));
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn eviction_is_oldest_first_across_groups() {
        let mut c = EntryCache::new(2 * (1 + ENTRY_OVERHEAD_BYTES));
        c.insert(GroupId(1), LogIndex(1), Term(1), at(0, 1));
        c.insert(GroupId(2), LogIndex(1), Term(1), at(8, 1));
        c.insert(GroupId(3), LogIndex(1), Term(1), at(16, 1));
        assert!(c.get(GroupId(1), LogIndex(1)).is_none());
        assert!(c.get(GroupId(2), LogIndex(1)).is_some());
        assert!(c.get(GroupId(3), LogIndex(1)).is_some());
        c.check_invariants();
    }
}
