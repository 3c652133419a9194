//! The client's range cache: key → the range descriptor believed to cover it, plus the
//! leader last seen for each range. It is only a hint: a server that disagrees answers
//! `RangeMoved`/`KeyNotInRange` with the current descriptor, which replaces the cached ones
//! it overlaps, or `NotLeader` with a leader hint.

use std::collections::{BTreeMap, HashMap};

use crate::message::{NodeId, RangeDescriptor, RangeId};

/// Cached descriptors by start key. Invariant: the cached spans never overlap.
#[derive(Debug, Default, Clone)]
pub struct RangeCache {
    by_start: BTreeMap<Vec<u8>, RangeDescriptor>,
    leaders: HashMap<RangeId, NodeId>,
}

impl RangeCache {
    pub fn new() -> RangeCache {
        RangeCache::default()
    }

    /// The cached range covering `key`, if any.
    pub fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        let bound = (std::ops::Bound::Unbounded, std::ops::Bound::Included(key));
        let (_, desc) = self.by_start.range::<[u8], _>(bound).next_back()?;
        desc.contains(key).then_some(desc)
    }

    /// Inserts `desc`, evicting every cached range it overlaps (they are older or newer views
    /// of a split or merge; the server's answer wins). A descriptor older than a cached one
    /// for the same range id (lower epoch) is ignored.
    pub fn insert(&mut self, desc: RangeDescriptor) {
        if let Some(cached) = self.by_start.values().find(|d| d.id == desc.id) {
            if cached.epoch > desc.epoch {
                return;
            }
        }
        let overlapping: Vec<Vec<u8>> = self
            .by_start
            .values()
            .filter(|d| overlaps(d, &desc) || d.id == desc.id)
            .map(|d| d.start.clone())
            .collect();
        for start in overlapping {
            if let Some(old) = self.by_start.remove(&start) {
                if old.id != desc.id || old.replicas != desc.replicas {
                    self.leaders.remove(&old.id);
                }
            }
        }
        self.by_start.insert(desc.start.clone(), desc);
        self.check_invariants();
    }

    /// Forgets a range (the server no longer knows it).
    pub fn invalidate(&mut self, range: RangeId) {
        self.by_start.retain(|_, d| d.id != range);
        self.leaders.remove(&range);
    }

    /// The leader last reported for `range`.
    pub fn leader(&self, range: RangeId) -> Option<NodeId> {
        self.leaders.get(&range).copied()
    }

    /// Records a leader hint (from `NotLeader`); `None` forgets the leader.
    pub fn set_leader(&mut self, range: RangeId, leader: Option<NodeId>) {
        match leader {
            Some(node) => self.leaders.insert(range, node),
            None => self.leaders.remove(&range),
        };
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    fn check_invariants(&self) {
        if cfg!(debug_assertions) {
            let mut prev: Option<&RangeDescriptor> = None;
            for d in self.by_start.values() {
                if let Some(p) = prev {
                    assert!(
                        !p.end.is_empty() && p.end <= d.start,
                        "cached ranges {} and {} overlap",
                        p.id,
                        d.id
                    );
                }
                prev = Some(d);
            }
        }
    }
}

fn overlaps(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let a_before_b = !a.end.is_empty() && a.end <= b.start;
    let b_before_a = !b.end.is_empty() && b.end <= a.start;
    !a_before_b && !b_before_a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{GroupId, RangeEpoch, ReplicaDescriptor, ReplicaRole};

    fn desc(id: u64, start: &[u8], end: &[u8], epoch: u64) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            group: GroupId(id),
            start: start.to_vec(),
            end: end.to_vec(),
            replicas: vec![ReplicaDescriptor {
                node: NodeId(1),
                role: ReplicaRole::Voter,
            }],
            epoch: RangeEpoch(epoch),
        }
    }

    #[test]
    fn lookup_finds_the_covering_range_only() {
        let mut c = RangeCache::new();
        c.insert(desc(1, b"", b"m", 1));
        c.insert(desc(2, b"p", b"", 1));
        assert_eq!(c.lookup(b"a").map(|d| d.id), Some(RangeId(1)));
        assert_eq!(c.lookup(b"").map(|d| d.id), Some(RangeId(1)));
        assert_eq!(c.lookup(b"n"), None, "gap between m and p");
        assert_eq!(c.lookup(b"zzz").map(|d| d.id), Some(RangeId(2)));
    }

    #[test]
    fn a_split_replaces_the_old_range_and_its_leader() {
        let mut c = RangeCache::new();
        c.insert(desc(1, b"", b"", 1));
        c.set_leader(RangeId(1), Some(NodeId(3)));
        // Range 1 split at "k": the left keeps id 1 with a new epoch, the right is range 2.
        c.insert(desc(2, b"k", b"", 2));
        assert_eq!(
            c.len(),
            1,
            "the old unsplit range overlapped and was evicted"
        );
        assert_eq!(c.leader(RangeId(1)), None);
        c.insert(desc(1, b"", b"k", 2));
        assert_eq!(c.lookup(b"a").map(|d| d.id), Some(RangeId(1)));
        assert_eq!(c.lookup(b"x").map(|d| d.id), Some(RangeId(2)));
        // A stale view of range 1 (older epoch) does not undo the split.
        c.insert(desc(1, b"", b"", 1));
        assert_eq!(c.lookup(b"x").map(|d| d.id), Some(RangeId(2)));
        c.invalidate(RangeId(2));
        assert_eq!(c.lookup(b"x"), None);
    }
}
