//! The replicas of one store, and which of them are awake.
//!
//! A quiesced group with nothing in flight costs nothing until something happens to it: the
//! store's loops (`tick`, `process`, `has_work`, snapshot pumping, request expiry) visit only
//! the awake groups. Any mutable access (`get_mut`) wakes a group, so whatever can give a
//! group work (a message, a request, an applied command, a snapshot) puts it back on the
//! list without each call site having to say so; only `Store::tick` puts groups to sleep
//! (`retain_awake`), after checking that they are quiesced and idle. The store keeps the one
//! condition that no access covers, a quiesced follower's leader falling silent, by waking
//! the followers of a peer node when that node's silence starts.
//!
//! Among the awake groups, a turn (`Store::process`) visits only the *pending* ones: those
//! accessed mutably since the turn before (`get_mut`), and those that `tick` or a pass over
//! the awake groups left with work (`Replica::has_turn_work`). With thousands of groups
//! awake under a spread load, a turn costs what its groups did, not what the shard holds.
//! The list is a superset of the groups with work, never less (`check`); `settle_pending`
//! drops the rest.
//!
//! A replica's status can change only while it is awake, so the statuses a shard publishes
//! are brought up to date from the groups awake since the last time (`take_touched`), not
//! rebuilt from every group.
//!
//! The table also counts, for each group, the replicas that pin its log
//! (`Replica::pinned_logs`: split children without a file of their own, ranges that absorbed
//! one): whether a group may write a snapshot file is a lookup, not a pass over every group,
//! and a group whose last pin goes is reported (`take_unpinned`), so a split child waiting
//! for its own children's files starts the moment the last of them lands. The pins change
//! only through `insert`, `remove` and `update_pins`; `check` recounts them.
//!
//! Two more indexes spare the store passes over every group on each split and admin
//! request: the group of each range id (`group_of_range`), and the groups by their range's
//! first key (`starting_in`, `holds_newer`). A range keeps its id and first key for life,
//! except a replica adopted before it knew its range (id 0, not indexed) when its first
//! snapshot installs; that, and a split or merge moving its end, go through
//! `update_range`. The table counts the neighbours by first key that overlap
//! (`crossings`): while none do, the ranges are disjoint and the one range that may hold a
//! key is the last to start at or before it. `check` verifies all of it.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Bound, Index};

use quasar_rpc::message::{self as msg, RangeDescriptor};

use super::Replica;

pub(super) struct Groups {
    /// Boxed: a replica is about 2 KiB, and a table of them inline would hold a quarter to
    /// a half of its slots empty (and twice that while it grows), which at 100,000 groups
    /// is hundreds of MiB.
    map: HashMap<msg::GroupId, Box<Replica>, quasar_wal::GroupHasher>,
    /// Every group, sorted (a deterministic order for whole-store scans).
    order: BTreeSet<msg::GroupId>,
    /// The groups whose `Replica::awake` is set, each once; sorted when `sorted`.
    awake: Vec<msg::GroupId>,
    sorted: bool,
    /// Groups that went to sleep or away since the last `take_touched` (with repeats);
    /// `all_touched` instead once that list would outgrow the map (nobody takes it).
    touched: Vec<msg::GroupId>,
    all_touched: bool,
    /// The groups whose `Replica::pending` is set, each once; sorted when `pending_sorted`.
    pending: Vec<msg::GroupId>,
    pending_sorted: bool,
    /// For each group whose log some replica pins, how many do (none: no entry).
    pins: HashMap<msg::GroupId, u32, quasar_wal::GroupHasher>,
    /// Groups whose last pin went since the last `take_unpinned` (with repeats).
    unpinned: Vec<msg::GroupId>,
    /// The group of each range id (not id 0: replicas that do not know their range yet).
    by_range: HashMap<msg::RangeId, msg::GroupId>,
    /// Every group that knows its range (id not 0), by its range's first key.
    by_start: BTreeSet<(Vec<u8>, msg::GroupId)>,
    /// Neighbours in `by_start` whose ranges overlap (the first ends after the second
    /// starts): none while the local ranges are disjoint.
    crossings: usize,
    /// Times a sleeping group was woken (put back on the awake list by an access).
    woken: u64,
}

impl Groups {
    pub(super) fn new() -> Groups {
        Groups {
            map: HashMap::default(),
            order: BTreeSet::new(),
            awake: Vec::new(),
            sorted: true,
            touched: Vec::new(),
            all_touched: false,
            pending: Vec::new(),
            pending_sorted: true,
            pins: HashMap::default(),
            unpinned: Vec::new(),
            by_range: HashMap::new(),
            by_start: BTreeSet::new(),
            crossings: 0,
            woken: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn contains_key(&self, g: &msg::GroupId) -> bool {
        self.map.contains_key(g)
    }

    pub(super) fn get(&self, g: &msg::GroupId) -> Option<&Replica> {
        self.map.get(g).map(|r| &**r)
    }

    /// The replica of `g`, woken and pending: whatever the caller changes, the store's
    /// loops and its next turn see it.
    pub(super) fn get_mut(&mut self, g: &msg::GroupId) -> Option<&mut Replica> {
        let r = self.map.get_mut(g)?;
        if !r.awake {
            r.awake = true;
            self.woken += 1;
            if self.awake.last().is_some_and(|last| last > g) {
                self.sorted = false;
            }
            self.awake.push(*g);
        }
        mark_pending(&mut self.pending, &mut self.pending_sorted, r);
        Some(r)
    }

    /// Every replica, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Replica> {
        self.map.values().map(|r| &**r)
    }

    /// The group after `g` in group order, wrapping round to the first.
    pub(super) fn next_after(&self, g: msg::GroupId) -> Option<msg::GroupId> {
        use std::ops::Bound;
        self.order
            .range((Bound::Excluded(g), Bound::Unbounded))
            .next()
            .or_else(|| self.order.iter().next())
            .copied()
    }

    /// Every replica, in group order.
    pub(super) fn in_order(&self) -> impl Iterator<Item = &Replica> {
        self.order
            .iter()
            .filter_map(|g| self.map.get(g).map(|r| &**r))
    }

    /// Adds a replica (awake). An existing replica of the same group is replaced.
    pub(super) fn insert(&mut self, mut r: Replica) {
        let g = r.group;
        self.remove(&g);
        r.awake = false;
        r.pending = false;
        add_pins(&mut self.pins, &r);
        self.index_range(&r);
        self.map.insert(g, Box::new(r));
        self.order.insert(g);
        self.get_mut(&g);
    }

    pub(super) fn remove(&mut self, g: &msg::GroupId) -> Option<Replica> {
        let r = *self.map.remove(g)?;
        self.order.remove(g);
        remove_pins(&mut self.pins, &mut self.unpinned, &r);
        self.unindex_range(&r);
        note_touched(&mut self.touched, &mut self.all_touched, self.map.len(), *g);
        if r.awake {
            self.awake.retain(|x| x != g);
        }
        if r.pending {
            self.pending.retain(|x| x != g);
        }
        Some(r)
    }

    /// Whether some replica pins `g`'s log (`Replica::pins_log_of`): `g` must keep it.
    pub(super) fn pinned(&self, g: msg::GroupId) -> bool {
        self.pins.contains_key(&g)
    }

    /// Changes what `g`'s replica pins (its `parent` and `absorbed_parents`: nothing else
    /// may change them) and wakes it; `false` when there is no such replica.
    pub(super) fn update_pins(&mut self, g: msg::GroupId, f: impl FnOnce(&mut Replica)) -> bool {
        if self.get_mut(&g).is_none() {
            return false;
        }
        let Some(r) = self.map.get_mut(&g) else {
            return false;
        };
        remove_pins(&mut self.pins, &mut self.unpinned, r);
        f(r);
        add_pins(&mut self.pins, r);
        true
    }

    /// The groups whose log no replica pins any more since the last call (some may be
    /// pinned again, or gone, by now).
    pub(super) fn take_unpinned(&mut self) -> Vec<msg::GroupId> {
        std::mem::take(&mut self.unpinned)
    }

    /// The local group of range `id`.
    pub(super) fn group_of_range(&self, id: msg::RangeId) -> Option<msg::GroupId> {
        if id.0 == 0 {
            return None;
        }
        self.by_range.get(&id).copied()
    }

    /// The replicas whose range starts in `[from, to)` (`to` empty: no end), by first key.
    pub(super) fn starting_in<'a>(
        &'a self,
        from: &[u8],
        to: &'a [u8],
    ) -> impl Iterator<Item = &'a Replica> + 'a {
        self.by_start
            .range((
                Bound::Included((from.to_vec(), msg::GroupId(0))),
                Bound::Unbounded,
            ))
            .take_while(move |(start, _)| to.is_empty() || start.as_slice() < to)
            .filter_map(|(_, g)| self.map.get(g).map(|r| &**r))
    }

    /// Whether a range other than `except`'s with an epoch newer than `epoch` holds `key`
    /// (awaiting replicas hold nothing).
    pub(super) fn holds_newer(
        &self,
        key: &[u8],
        epoch: msg::RangeEpoch,
        except: msg::GroupId,
    ) -> bool {
        let newer = |r: &Replica| {
            let d = r.range.descriptor();
            r.group != except && d.id.0 != 0 && d.epoch > epoch && d.contains(key)
        };
        if self.crossings > 0 {
            return self.map.values().any(|r| newer(r));
        }
        self.by_start
            .range((
                Bound::Unbounded,
                Bound::Included((key.to_vec(), msg::GroupId(u64::MAX))),
            ))
            .next_back()
            .and_then(|(_, g)| self.map.get(g))
            .is_some_and(|r| newer(r))
    }

    /// Changes `g`'s range through `f` (a split or a merge moves its end, an installed
    /// snapshot replaces it), keeping the indexes; `None` when there is no such replica.
    pub(super) fn update_range<T>(
        &mut self,
        g: msg::GroupId,
        f: impl FnOnce(&mut Replica) -> T,
    ) -> Option<T> {
        self.get_mut(&g)?;
        let mut r = self.map.remove(&g)?;
        self.unindex_range(&r);
        let out = f(&mut r);
        self.index_range(&r);
        self.map.insert(g, r);
        Some(out)
    }

    /// Indexes `r` (not in `map` while this runs).
    fn index_range(&mut self, r: &Replica) {
        let d = r.range.descriptor();
        if d.id.0 == 0 {
            return;
        }
        self.by_range.insert(d.id, r.group);
        let key = (d.start.clone(), r.group);
        let (apart, around) = self.crossings_around(&key, d);
        self.crossings = self.crossings + around - apart;
        self.by_start.insert(key);
    }

    /// Takes `r` (not in `map` while this runs) out of the indexes.
    fn unindex_range(&mut self, r: &Replica) {
        let d = r.range.descriptor();
        if d.id.0 == 0 {
            return;
        }
        if self.by_range.get(&d.id) == Some(&r.group) {
            self.by_range.remove(&d.id);
        }
        let key = (d.start.clone(), r.group);
        if !self.by_start.remove(&key) {
            return;
        }
        let (apart, around) = self.crossings_around(&key, d);
        self.crossings = self.crossings + apart - around;
    }

    /// The overlapping neighbours among the ranges just before and just after `key` (of
    /// range `d`, not in `by_start`): without `d` (0 or 1), and with it between them (0 to 2).
    fn crossings_around(
        &self,
        key: &(Vec<u8>, msg::GroupId),
        d: &RangeDescriptor,
    ) -> (usize, usize) {
        let (pred, succ) = self.neighbours(key);
        (
            usize::from(crosses(pred, succ)),
            usize::from(crosses(pred, Some(d))) + usize::from(crosses(Some(d), succ)),
        )
    }

    /// The ranges just before and just after `key` in first-key order (`key` itself not
    /// counted).
    fn neighbours(
        &self,
        key: &(Vec<u8>, msg::GroupId),
    ) -> (Option<&RangeDescriptor>, Option<&RangeDescriptor>) {
        let desc = |e: Option<&(Vec<u8>, msg::GroupId)>| {
            e.and_then(|(_, g)| self.map.get(g))
                .map(|r| r.range.descriptor())
        };
        let pred = self
            .by_start
            .range((Bound::Unbounded, Bound::Excluded(key)))
            .next_back();
        let succ = self
            .by_start
            .range((Bound::Excluded(key), Bound::Unbounded))
            .next();
        (desc(pred), desc(succ))
    }

    /// Whether `g` lost its last pin since the last `take_unpinned`.
    pub(super) fn was_unpinned(&self, g: msg::GroupId) -> bool {
        self.unpinned.contains(&g)
    }

    /// Real time passed without ticks: every awake group's lease clock moves on. No timer
    /// group gets work (and none is woken).
    pub(super) fn clock_skipped(&mut self, ticks: u64) {
        // Only the awake groups: a sleeping group's core is quiesced, its clock stands still
        // (it serves nothing from a lease, and waking resets its timers), so nothing it
        // counts spans the sleep. A pass over every group here cost 100,000 visits each
        // time a loop of a busy shard fell two ticks behind.
        let map = &mut self.map;
        for g in &self.awake {
            if let Some(r) = map.get_mut(g) {
                r.raft.clock_skipped(ticks);
            }
        }
    }

    /// The awake groups, in order.
    pub(super) fn awake(&mut self) -> &[msg::GroupId] {
        if !self.sorted {
            self.awake.sort_unstable();
            self.sorted = true;
        }
        &self.awake
    }

    pub(super) fn awake_len(&self) -> usize {
        self.awake.len()
    }

    /// Times a sleeping group was woken since the table was made.
    pub(super) fn woken(&self) -> u64 {
        self.woken
    }

    /// The awake replicas, in no particular order.
    pub(super) fn awake_values(&self) -> impl Iterator<Item = &Replica> {
        self.awake
            .iter()
            .filter_map(|g| self.map.get(g).map(|r| &**r))
    }

    /// Calls `f` on every awake replica, in group order; those for which it returns false
    /// go to sleep. `f` cannot wake other groups.
    /// Those left with work for a turn become pending.
    pub(super) fn retain_awake(&mut self, mut f: impl FnMut(&mut Replica) -> bool) {
        self.awake();
        let (map, touched, all) = (&mut self.map, &mut self.touched, &mut self.all_touched);
        let (pending, pending_sorted) = (&mut self.pending, &mut self.pending_sorted);
        let len = map.len();
        self.awake.retain(|g| {
            let Some(r) = map.get_mut(g) else {
                return false;
            };
            r.awake = f(r);
            if !r.awake {
                note_touched(touched, all, len, *g);
            }
            if r.has_turn_work() {
                mark_pending(pending, pending_sorted, r);
            }
            r.awake
        });
    }

    /// Calls `f` on every awake replica, in group order (none goes to sleep); those left
    /// with work for a turn become pending.
    pub(super) fn for_each_awake(&mut self, mut f: impl FnMut(&mut Replica)) {
        self.awake();
        for g in &self.awake {
            if let Some(r) = self.map.get_mut(g) {
                f(r);
                if r.has_turn_work() {
                    mark_pending(&mut self.pending, &mut self.pending_sorted, r);
                }
            }
        }
    }

    /// Calls `f` on every pending replica, in group order (a turn's pass: the list stays
    /// as it is until `settle_pending`).
    pub(super) fn for_each_pending(&mut self, mut f: impl FnMut(&mut Replica)) {
        if !self.pending_sorted {
            self.pending.sort_unstable();
            self.pending_sorted = true;
        }
        for g in &self.pending {
            if let Some(r) = self.map.get_mut(g) {
                f(r);
            }
        }
    }

    /// The pending replicas, in no particular order.
    pub(super) fn pending_values(&self) -> impl Iterator<Item = &Replica> {
        self.pending
            .iter()
            .filter_map(|g| self.map.get(g).map(|r| &**r))
    }

    /// Keeps on the pending list only the groups that have work for a turn.
    pub(super) fn settle_pending(&mut self) {
        let map = &mut self.map;
        self.pending.retain(|g| {
            let Some(r) = map.get_mut(g) else {
                return false;
            };
            r.pending = r.has_turn_work();
            r.pending
        });
    }

    /// The groups whose status may have changed since the last call, in order: those awake
    /// now, and those that went to sleep or away meanwhile (every group at the first call).
    pub(super) fn take_touched(&mut self) -> Vec<msg::GroupId> {
        if std::mem::take(&mut self.all_touched) {
            self.touched.clear();
            return self.order.iter().copied().collect();
        }
        let mut out = std::mem::take(&mut self.touched);
        out.extend_from_slice(&self.awake);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Checks the bookkeeping: the order and the awake and pending lists match the map and
    /// the flags, and every group with work for a turn is pending.
    pub(super) fn check(&self) {
        let mut on_list = BTreeSet::new();
        for g in &self.pending {
            assert!(
                on_list.insert(*g),
                "group {} twice on the pending list",
                g.0
            );
            assert!(
                self.map.get(g).is_some_and(|r| r.pending),
                "group {} on the pending list but not pending",
                g.0
            );
        }
        for (g, r) in &self.map {
            assert_eq!(
                r.pending,
                on_list.contains(g),
                "group {}: pending flag and list disagree",
                g.0
            );
            assert!(
                r.pending || !r.has_turn_work(),
                "group {} has work for a turn but is not pending",
                g.0
            );
        }
        if self.pending_sorted {
            assert!(
                self.pending.windows(2).all(|w| w[0] < w[1]),
                "pending list not sorted"
            );
        }
        assert_eq!(self.order.len(), self.map.len(), "group order out of step");
        let mut seen = BTreeSet::new();
        for g in &self.awake {
            assert!(seen.insert(*g), "group {} twice on the awake list", g.0);
            let r = self.map.get(g);
            assert!(
                r.is_some_and(|r| r.awake),
                "group {} on the awake list but not awake",
                g.0
            );
        }
        for (g, r) in &self.map {
            assert!(self.order.contains(g), "group {} not in the order", g.0);
            assert_eq!(
                r.awake,
                seen.contains(g),
                "group {}: awake flag and list disagree",
                g.0
            );
        }
        if self.sorted {
            assert!(
                self.awake.windows(2).all(|w| w[0] < w[1]),
                "awake list not sorted"
            );
        }
        let mut ids = 0;
        for (g, r) in &self.map {
            let d = r.range.descriptor();
            if d.id.0 != 0 {
                ids += 1;
                assert_eq!(
                    self.by_range.get(&d.id),
                    Some(g),
                    "range {} not indexed to its group {}",
                    d.id.0,
                    g.0
                );
                assert!(
                    self.by_start.contains(&(d.start.clone(), *g)),
                    "group {} not indexed by its first key",
                    g.0
                );
            }
        }
        assert_eq!(ids, self.by_range.len(), "range ids indexed twice or stale");
        assert_eq!(
            ids,
            self.by_start.len(),
            "first keys indexed twice or stale"
        );
        let ordered: Vec<&RangeDescriptor> = self
            .by_start
            .iter()
            .filter_map(|(_, g)| self.map.get(g))
            .map(|r| r.range.descriptor())
            .collect();
        let crossings = ordered
            .windows(2)
            .filter(|w| crosses(Some(w[0]), Some(w[1])))
            .count();
        assert_eq!(
            crossings, self.crossings,
            "overlapping neighbours miscounted"
        );
        let mut pins: HashMap<msg::GroupId, u32> = HashMap::new();
        for r in self.map.values() {
            for p in r.pinned_logs() {
                *pins.entry(p).or_default() += 1;
            }
        }
        assert_eq!(
            pins.len(),
            self.pins.len(),
            "pinned logs counted for other groups than pinned"
        );
        for (g, n) in &pins {
            assert_eq!(
                self.pins.get(g),
                Some(n),
                "group {}: pins of its log miscounted",
                g.0
            );
        }
    }
}

/// Whether `a`, which starts before `b` (or at its start), overlaps it.
fn crosses(a: Option<&RangeDescriptor>, b: Option<&RangeDescriptor>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    a.end.is_empty() || a.end > b.start
}

fn add_pins(pins: &mut HashMap<msg::GroupId, u32, quasar_wal::GroupHasher>, r: &Replica) {
    for p in r.pinned_logs() {
        *pins.entry(p).or_default() += 1;
    }
}

fn remove_pins(
    pins: &mut HashMap<msg::GroupId, u32, quasar_wal::GroupHasher>,
    unpinned: &mut Vec<msg::GroupId>,
    r: &Replica,
) {
    for p in r.pinned_logs() {
        let Some(n) = pins.get_mut(&p) else {
            debug_assert!(false, "group {} pinned but not counted", p.0);
            continue;
        };
        *n -= 1;
        if *n == 0 {
            pins.remove(&p);
            unpinned.push(p);
        }
    }
}

fn note_touched(touched: &mut Vec<msg::GroupId>, all: &mut bool, len: usize, g: msg::GroupId) {
    if *all {
        return;
    }
    if touched.len() > len + 64 {
        *all = true;
        touched.clear();
    } else {
        touched.push(g);
    }
}

impl Index<&msg::GroupId> for Groups {
    type Output = Replica;

    fn index(&self, g: &msg::GroupId) -> &Replica {
        &self.map[g]
    }
}

fn mark_pending(pending: &mut Vec<msg::GroupId>, sorted: &mut bool, r: &mut Replica) {
    if !r.pending {
        r.pending = true;
        if pending.last().is_some_and(|last| *last > r.group) {
            *sorted = false;
        }
        pending.push(r.group);
    }
}

#[cfg(test)]
mod tests {
    use quasar_rpc::message::{GroupId, RangeEpoch, RangeId};

    use super::*;
    use crate::raft::{NodeId, Restored};
    use crate::range::{RangeLimits, RangeState};

    fn replica(d: RangeDescriptor) -> Replica {
        let cfg = super::super::StoreConfig::new(NodeId(1), msg::ShardId(0), 1).raft(d.group);
        let raft = crate::raft::RaftNode::new(
            &cfg,
            Restored::new_group(crate::raft::ConfState::with_voters([NodeId(1)])),
            d.group.0,
        )
        .expect("raft");
        Replica::new(
            d.group,
            raft,
            RangeState::new(d, RangeLimits::default()),
            crate::raft::LogIndex(0),
            0,
        )
    }

    /// The indexes agree with a pass over every replica through inserts, removals and
    /// ranges that move their ends, disjoint and overlapping alike.
    #[test]
    fn the_range_indexes_agree_with_looking_at_every_replica() {
        let mut seed = 0x5eed_u64;
        let mut next = |n: u64| {
            seed = quasar_rpc::transport::splitmix64(seed);
            seed % n
        };
        let key = |k: u64| if k == 0 { Vec::new() } else { vec![k as u8] };
        let mut groups = Groups::new();
        let mut disjoint = 0;
        for step in 0..3000 {
            let g = GroupId(1 + next(16));
            match next(4) {
                0 => {
                    groups.remove(&g);
                }
                op => {
                    // Mostly a tiling (group g holds [3g, 3g + 3)), whose ranges are
                    // disjoint, and now and then a range anywhere.
                    let (start, end) = if next(8) != 0 {
                        (3 * g.0, key(3 * g.0 + 3))
                    } else {
                        let start = next(48);
                        let end = if next(5) == 0 {
                            Vec::new()
                        } else {
                            key(start + 1 + next(6))
                        };
                        (start, end)
                    };
                    let d = RangeDescriptor {
                        // Now and then a replica that does not know its range yet.
                        id: RangeId(if next(10) == 0 { 0 } else { g.0 }),
                        group: g,
                        start: key(start),
                        end,
                        replicas: Vec::new(),
                        epoch: RangeEpoch(next(6)),
                    };
                    if op == 1 && groups.contains_key(&g) {
                        groups.update_range(g, |r| r.range.set_descriptor(d));
                    } else {
                        groups.insert(replica(d));
                    }
                }
            }
            groups.check();
            if groups.crossings == 0 {
                disjoint += 1;
            }
            for k in 0..52u64 {
                for epoch in 0..6 {
                    let except = GroupId(next(18));
                    let expected = groups.values().any(|r| {
                        let d = r.range.descriptor();
                        r.group != except && d.id.0 != 0 && d.epoch.0 > epoch && d.contains(&key(k))
                    });
                    assert_eq!(
                        groups.holds_newer(&key(k), RangeEpoch(epoch), except),
                        expected,
                        "step {step}, key {k}, epoch {epoch}"
                    );
                }
            }
            for r in groups.values() {
                let d = r.range.descriptor();
                if d.id.0 != 0 {
                    assert_eq!(groups.group_of_range(d.id), Some(r.group));
                }
            }
        }
        // Both ways of answering were taken.
        assert!((300..2700).contains(&disjoint), "{disjoint} steps disjoint");
    }
}
