//! The node's range directory: every range descriptor the node knows, shared by its shards.
//!
//! Every client request looks its range up here (by id when the client routed it, by key
//! on first contact), so lookups cost a hash probe or a B-tree descent whatever the number
//! of ranges, and a node opening with 100,000 replicas does not take their descriptors in
//! quadratic time.
//!
//! Ranges normally tile the key space without overlapping. `upsert` keeps an older
//! descriptor that overlaps a newer one out (by epoch) but keeps an overlapping descriptor
//! with a higher epoch, so overlaps can arise. While none exists (`disjoint`), a key's
//! range is the one with the greatest start at or below it, and only a new descriptor's
//! neighbours can overlap it. Once one exists, lookups and upserts scan in key order (as
//! a plain list would) until a sweep finds the directory disjoint again.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use quasar_rpc::message::{self as msg, RangeDescriptor, RangeId};
use smallvec::SmallVec;

use crate::raft::NodeId;

/// A place in key order: a range's start, then its id (two overlapping ranges may share a
/// start).
type Place = (Vec<u8>, RangeId);

/// The descriptors of every range, shared by the shards of one node.
#[derive(Debug, Clone)]
pub struct Directory {
    /// Every range by id.
    ranges: HashMap<RangeId, RangeDescriptor>,
    /// Every range's place in key order.
    order: BTreeSet<Place>,
    /// The ranges a group serves (one, unless an overlap is being resolved).
    groups: HashMap<msg::GroupId, SmallVec<[RangeId; 1]>>,
    /// No two ranges overlap.
    disjoint: bool,
}

impl Default for Directory {
    fn default() -> Directory {
        Directory {
            ranges: HashMap::new(),
            order: BTreeSet::new(),
            groups: HashMap::new(),
            disjoint: true,
        }
    }
}

fn overlaps(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    (b.end.is_empty() || a.start < b.end) && (a.end.is_empty() || b.start < a.end)
}

impl Directory {
    /// A directory of `ranges`, taken in order as by `upsert`.
    pub fn new(ranges: Vec<RangeDescriptor>) -> Directory {
        let mut dir = Directory::default();
        for d in &ranges {
            dir.upsert(d);
        }
        dir
    }

    /// The range that holds `key` (the first in key order, should two overlap).
    pub fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        if !self.disjoint {
            return self.ranges().find(|d| d.contains(key));
        }
        // The place with the greatest start at or below `key`.
        let upper = (key.to_vec(), RangeId(u64::MAX));
        let (_, id) = self
            .order
            .range::<Place, _>((Bound::Unbounded, Bound::Included(&upper)))
            .next_back()?;
        self.ranges.get(id).filter(|d| d.contains(key))
    }

    pub fn by_id(&self, id: RangeId) -> Option<&RangeDescriptor> {
        self.ranges.get(&id)
    }

    /// The range `group` serves (the first in key order, should it serve two).
    pub fn by_group(&self, group: msg::GroupId) -> Option<&RangeDescriptor> {
        self.groups
            .get(&group)?
            .iter()
            .filter_map(|id| self.ranges.get(id))
            .min_by(|a, b| (&a.start, a.id).cmp(&(&b.start, b.id)))
    }

    /// Every range, in key order.
    pub fn ranges(&self) -> impl Iterator<Item = &RangeDescriptor> {
        self.order.iter().filter_map(|(_, id)| self.ranges.get(id))
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Records `d` as the truth about its range: it replaces the range's older descriptor
    /// and every older range it overlaps (a split's parent, a merge's absorbed neighbour);
    /// an older descriptor of `d`'s range changes nothing.
    pub fn upsert(&mut self, d: &RangeDescriptor) {
        // Newer, or the same among disjoint ranges (a store's open records every local
        // range, most of them as the directory already holds them): nothing to change.
        if self
            .by_id(d.id)
            .is_some_and(|o| o.epoch > d.epoch || (self.disjoint && o == d))
        {
            return;
        }
        self.remove(d.id);
        let doomed: Vec<RangeId> = self
            .overlapping(d)
            .into_iter()
            .filter(|o| o.epoch < d.epoch)
            .map(|o| o.id)
            .collect();
        for id in doomed {
            self.remove(id);
        }
        if self.disjoint && !self.overlapping(d).is_empty() {
            self.disjoint = false;
        }
        self.order.insert((d.start.clone(), d.id));
        self.ranges.insert(d.id, d.clone());
        self.groups.entry(d.group).or_default().push(d.id);
    }

    /// Forgets range `id` (merged away).
    pub fn remove(&mut self, id: RangeId) {
        let Some(d) = self.ranges.remove(&id) else {
            return;
        };
        self.order.remove(&(d.start, id));
        if let Some(ids) = self.groups.get_mut(&d.group) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.groups.remove(&d.group);
            }
        }
        if !self.disjoint {
            self.disjoint = self.sweep_disjoint();
        }
    }

    /// The ranges that overlap `d`'s span.
    fn overlapping(&self, d: &RangeDescriptor) -> Vec<&RangeDescriptor> {
        if !self.disjoint {
            return self.ranges().filter(|o| overlaps(o, d)).collect();
        }
        // Disjoint: the range just below `d.start` may reach into it; the others that
        // overlap start inside `[d.start, d.end)`.
        let from = (d.start.clone(), RangeId(0));
        let below = self
            .order
            .range::<Place, _>((Bound::Unbounded, Bound::Excluded(&from)))
            .next_back();
        let inside = self
            .order
            .range::<Place, _>((Bound::Included(&from), Bound::Unbounded))
            .take_while(|(start, _)| d.end.is_empty() || *start < d.end);
        below
            .into_iter()
            .chain(inside)
            .filter_map(|(_, id)| self.ranges.get(id))
            .filter(|o| overlaps(o, d))
            .collect()
    }

    /// Whether no two ranges overlap (one pass in key order).
    fn sweep_disjoint(&self) -> bool {
        let mut reach: Option<&[u8]> = Some(&[]);
        for d in self.ranges() {
            match reach {
                None => return false,
                Some(r) if d.start.as_slice() < r => return false,
                Some(_) => {}
            }
            reach = if d.end.is_empty() {
                None
            } else {
                Some(d.end.as_slice())
            };
        }
        true
    }

    /// The largest range or group id known.
    pub fn max_id(&self) -> u64 {
        self.ranges
            .values()
            .map(|d| d.id.0.max(d.group.0))
            .max()
            .unwrap_or(0)
    }

    /// The ranges of a brand-new cluster of `members`: the meta range `[b"", META_END)` and
    /// the user key space `[META_END, unbounded)`, each replicated on every member.
    pub fn bootstrap(members: &[NodeId]) -> Directory {
        let replicas: Vec<msg::ReplicaDescriptor> = members
            .iter()
            .map(|n| msg::ReplicaDescriptor {
                node: msg::NodeId(n.0),
                role: msg::ReplicaRole::Voter,
            })
            .collect();
        Directory::new(vec![
            RangeDescriptor {
                id: RangeId(1),
                group: msg::GroupId(1),
                start: Vec::new(),
                end: super::META_END.to_vec(),
                replicas: replicas.clone(),
                epoch: msg::RangeEpoch(1),
            },
            RangeDescriptor {
                id: RangeId(2),
                group: msg::GroupId(2),
                start: super::META_END.to_vec(),
                end: Vec::new(),
                replicas,
                epoch: msg::RangeEpoch(1),
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The directory as a plain list sorted by (start, id), every operation a scan: the
    /// specification `Directory` must match.
    #[derive(Default)]
    struct Model {
        ranges: Vec<RangeDescriptor>,
    }

    impl Model {
        fn upsert(&mut self, d: &RangeDescriptor) {
            if self
                .ranges
                .iter()
                .any(|o| o.id == d.id && o.epoch > d.epoch)
            {
                return;
            }
            self.ranges
                .retain(|o| o.id != d.id && !(overlaps(o, d) && o.epoch < d.epoch));
            self.ranges.push(d.clone());
            self.ranges
                .sort_by(|a, b| (&a.start, a.id).cmp(&(&b.start, b.id)));
        }

        fn remove(&mut self, id: RangeId) {
            self.ranges.retain(|o| o.id != id);
        }

        fn lookup(&self, key: &[u8]) -> Option<&RangeDescriptor> {
            self.ranges.iter().find(|d| d.contains(key))
        }

        fn by_group(&self, group: msg::GroupId) -> Option<&RangeDescriptor> {
            self.ranges.iter().find(|d| d.group == group)
        }
    }

    fn range(id: u64, group: u64, start: &[u8], end: &[u8], epoch: u64) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            group: msg::GroupId(group),
            start: start.to_vec(),
            end: end.to_vec(),
            replicas: vec![msg::ReplicaDescriptor {
                node: msg::NodeId(1),
                role: msg::ReplicaRole::Voter,
            }],
            epoch: msg::RangeEpoch(epoch),
        }
    }

    #[test]
    fn a_split_and_a_merge_keep_every_key_routed() {
        let mut dir = Directory::bootstrap(&[NodeId(1)]);
        assert_eq!(dir.lookup(b"").map(|d| d.id), Some(RangeId(1)));
        assert_eq!(dir.lookup(b"k").map(|d| d.id), Some(RangeId(2)));
        // Split range 2 at "m": the left keeps the id, the right is new.
        dir.upsert(&range(2, 2, b"\x01", b"m", 2));
        dir.upsert(&range(3, 3, b"m", b"", 2));
        assert_eq!(dir.lookup(b"k").map(|d| d.id), Some(RangeId(2)));
        assert_eq!(dir.lookup(b"m").map(|d| d.id), Some(RangeId(3)));
        assert_eq!(dir.lookup(b"zz").map(|d| d.id), Some(RangeId(3)));
        assert_eq!(
            dir.by_group(msg::GroupId(3)).map(|d| d.id),
            Some(RangeId(3))
        );
        // A stale view of range 2 changes nothing.
        dir.upsert(&range(2, 2, b"\x01", b"", 1));
        assert_eq!(dir.lookup(b"zz").map(|d| d.id), Some(RangeId(3)));
        // Merge 3 into 2.
        dir.remove(RangeId(3));
        dir.upsert(&range(2, 2, b"\x01", b"", 3));
        assert_eq!(dir.lookup(b"zz").map(|d| d.id), Some(RangeId(2)));
        assert!(dir.by_id(RangeId(3)).is_none());
        assert!(dir.by_group(msg::GroupId(3)).is_none());
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.max_id(), 2);
    }

    #[test]
    fn an_overlap_is_routed_as_a_list_would_until_it_is_resolved() {
        let mut dir = Directory::default();
        dir.upsert(&range(5, 5, b"a", b"m", 7));
        // An older-epoch range over it stays next to it: both are known.
        dir.upsert(&range(6, 6, b"c", b"z", 3));
        assert!(!dir.disjoint);
        assert_eq!(dir.lookup(b"d").map(|d| d.id), Some(RangeId(5)));
        assert_eq!(dir.lookup(b"n").map(|d| d.id), Some(RangeId(6)));
        dir.remove(RangeId(5));
        assert!(dir.disjoint, "a sweep finds the directory disjoint again");
        assert_eq!(dir.lookup(b"d").map(|d| d.id), Some(RangeId(6)));
        assert_eq!(dir.lookup(b"a"), None);
    }

    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(b'a'..b'f', 0..3)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert {
            id: u64,
            group: u64,
            start: Vec<u8>,
            end: Vec<u8>,
            epoch: u64,
        },
        Remove(u64),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1..8u64, 1..6u64, arb_key(), arb_key(), 1..6u64).prop_filter_map(
                "a descriptor covers a non-empty span",
                |(id, group, a, b, epoch)| {
                    let (start, end) = if b.is_empty() || a < b { (a, b) } else { (b, a) };
                    (end.is_empty() || start < end).then_some(Op::Upsert {
                        id,
                        group,
                        start,
                        end,
                        epoch,
                    })
                }
            ),
            1 => (1..8u64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn the_directory_answers_as_a_sorted_list_does(
            ops in prop::collection::vec(arb_op(), 1..60),
            probes in prop::collection::vec(arb_key(), 8),
        ) {
            let mut dir = Directory::default();
            let mut model = Model::default();
            for op in &ops {
                match op {
                    Op::Upsert { id, group, start, end, epoch } => {
                        let d = range(*id, *group, start, end, *epoch);
                        dir.upsert(&d);
                        model.upsert(&d);
                    }
                    Op::Remove(id) => {
                        dir.remove(RangeId(*id));
                        model.remove(RangeId(*id));
                    }
                }
                let listed: Vec<&RangeDescriptor> = dir.ranges().collect();
                let expected: Vec<&RangeDescriptor> = model.ranges.iter().collect();
                prop_assert_eq!(listed, expected);
                prop_assert_eq!(dir.disjoint, dir.sweep_disjoint());
                for key in &probes {
                    prop_assert_eq!(dir.lookup(key), model.lookup(key), "key {:?}", key);
                }
                for id in 1..8 {
                    prop_assert_eq!(
                        dir.by_id(RangeId(id)),
                        model.ranges.iter().find(|d| d.id == RangeId(id))
                    );
                    prop_assert_eq!(
                        dir.by_group(msg::GroupId(id)),
                        model.by_group(msg::GroupId(id))
                    );
                }
            }
        }
    }
}
