//! Range operations of the store: splits (manual and automatic), merges and leadership
//! transfers. Every change is a [`RangeCommand`] in a range's log (see `command.rs`); this
//! file proposes them for admin requests and the split policy, applies them, and answers
//! the admin requests once the change took effect.
//!
//! ```text
//!  split:  SplitRange -> checks -> propose Split in the range's log -> applied: both
//!          ranges exist on every replica -> the new range elects (its first leader is the
//!          old range's leader, which campaigns at once) -> answer Split{left, right}
//!  merge:  MergeRanges(left) -> checks (adjacent, same replicas, both led here, nothing in
//!          flight, none lagging, merged size under the split threshold) -> propose Freeze
//!          in right's log -> applied at F -> wait until every replica holds F -> propose
//!          Merge in left's log -> applied: left absorbs right, right's group is gone
//!          -> answer Merged
//! ```
//!
//! Durability without copying: a split's new range lives only in its parent's log (the
//! split entry) until it writes its first snapshot, so the parent takes no snapshot (and
//! compacts nothing) until then. A merged-away range keeps its snapshot file and log until
//! the survivor's next snapshot covers the merge; a restart in between replays the merge
//! from the survivor's log against the merged-away range's own files.
//!
//! A range frozen for a merge whose leader changed finishes later: the node that leads it
//! moves its leadership to the left neighbour's leader, which proposes the merge. The merge
//! is proposed only while both ranges are on the same replicas: a left range whose
//! replicas changed meanwhile (its leader started a move before it applied the freeze,
//! which another node committed) is moved back to the frozen range's replicas first
//! (`align_for_merge`), and moves away from them stop while the right range is frozen.

use super::*;

/// A replica more than this many entries behind its leader counts as lagging (a merge is
/// refused until it catches up).
pub(super) const LAG_TOLERANCE: u64 = 1000;

/// Ticks between two looks for frozen ranges whose merge must be finished.
const FROZEN_CHECK_TICKS: u64 = 32;

/// What applying a range command did.
pub(super) enum Applied {
    Split {
        left: RangeDescriptor,
        right: RangeDescriptor,
    },
    Frozen {
        at: LogIndex,
    },
    Merged {
        merged: RangeDescriptor,
    },
}

impl<D: Disk, S: SnapshotStore> Store<D, S> {
    /// Handles an admin request that changes a range this shard holds (split, merge,
    /// leadership transfer). The answer comes out of [`Store::take_admin_responses`] once
    /// the change took effect (or was refused).
    pub fn on_admin_request(
        &mut self,
        token: ConnToken,
        request_id: RequestId,
        op: &ArchivedAdminOp,
    ) {
        match self.start_admin(token, request_id, op) {
            Ok(Some(wait)) => self.pending_admin.push(PendingAdmin {
                token,
                request_id,
                at_tick: self.ticks,
                wait,
            }),
            Ok(None) => {}
            Err(e) => self.admin_responses.push((
                token,
                AdminResponse {
                    request_id,
                    result: Err(e),
                },
            )),
        }
    }

    /// Answers to admin requests gathered since the last call.
    pub fn take_admin_responses(&mut self) -> std::vec::Drain<'_, (ConnToken, AdminResponse)> {
        self.admin_responses.drain(..)
    }

    /// Whether the range `id` has a replica on this shard.
    pub fn holds_range(&self, id: RangeId) -> bool {
        self.group_of(id).is_some()
    }

    fn group_of(&self, id: RangeId) -> Option<msg::GroupId> {
        self.groups.group_of_range(id)
    }

    /// The local replica of range `id`, which must lead it.
    fn led_here(&self, id: RangeId) -> Result<msg::GroupId, RequestError> {
        let g = self
            .group_of(id)
            .ok_or(RequestError::UnknownRange { range: id })?;
        let r = &self.groups[&g];
        if r.raft.role() != Role::Leader {
            return Err(RequestError::NotLeader {
                range: id,
                leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
            });
        }
        Ok(g)
    }

    fn start_admin(
        &mut self,
        token: ConnToken,
        request_id: RequestId,
        op: &ArchivedAdminOp,
    ) -> Result<Option<AdminWait>, RequestError> {
        match op {
            ArchivedAdminOp::SplitRange {
                range,
                split_key,
                expected_epoch,
            } => {
                let g = self.led_here(range.get())?;
                let d = self.groups[&g].range.descriptor().clone();
                if d.epoch != expected_epoch.get() {
                    return Err(RequestError::RangeMoved { descriptor: d });
                }
                let (index, term) = self.propose_split(g, split_key.as_slice())?;
                Ok(Some(AdminWait::Split {
                    group: g,
                    index,
                    term,
                }))
            }
            ArchivedAdminOp::MergeRanges {
                left,
                expected_epoch,
            } => {
                let lg = self.led_here(left.get())?;
                let d = self.groups[&lg].range.descriptor().clone();
                if d.epoch != expected_epoch.get() {
                    return Err(RequestError::RangeMoved { descriptor: d });
                }
                let rg = self.merge_checks(lg)?;
                let r = self
                    .groups
                    .get_mut(&rg)
                    .ok_or(RequestError::UnknownRange { range: left.get() })?;
                let right_epoch = r.range.descriptor().epoch.0;
                let index = r
                    .raft
                    .propose(
                        RangeCommand::Freeze {
                            expected_epoch: right_epoch,
                        }
                        .encode(),
                    )
                    .map_err(|e| RequestError::Refused {
                        reason: format!("cannot propose the freeze: {e}"),
                    })?;
                r.last_activity = self.ticks;
                Ok(Some(AdminWait::Freeze {
                    left: lg,
                    right: rg,
                    index,
                    term: r.raft.term(),
                }))
            }
            ArchivedAdminOp::TransferLeader { range, to } => {
                let g = self.led_here(range.get())?;
                let to = NodeId(to.get().0);
                let r = self
                    .groups
                    .get_mut(&g)
                    .ok_or(RequestError::UnknownRange { range: range.get() })?;
                if to == self.cfg.node {
                    self.admin_responses.push((
                        token,
                        AdminResponse {
                            request_id,
                            result: Ok(AdminReply::LeaderTransferred {
                                range: range.get(),
                                group: g,
                                leader: msg::NodeId(to.0),
                            }),
                        },
                    ));
                    return Ok(None);
                }
                if r.raft.is_quiesced() {
                    r.raft.wake();
                }
                r.last_activity = self.ticks;
                r.raft
                    .transfer_leader(to)
                    .map_err(|e| RequestError::Refused {
                        reason: format!("leadership of range {} cannot move: {e}", range.get()),
                    })?;
                Ok(Some(AdminWait::Transfer { group: g, to }))
            }
            ArchivedAdminOp::MoveReplica {
                range,
                from,
                to,
                expected_epoch,
            } => {
                let g = self.led_here(range.get())?;
                self.start_replica_change(
                    g,
                    expected_epoch.get(),
                    Some(NodeId(to.get().0)),
                    Some(NodeId(from.get().0)),
                )
                .map(Some)
            }
            ArchivedAdminOp::AddReplica {
                range,
                node,
                role,
                expected_epoch,
            } => {
                if *role != msg::ReplicaRole::Voter {
                    return Err(RequestError::Refused {
                        reason: "replicas are added as voters (through a learner)".into(),
                    });
                }
                let g = self.led_here(range.get())?;
                self.start_replica_change(g, expected_epoch.get(), Some(NodeId(node.get().0)), None)
                    .map(Some)
            }
            ArchivedAdminOp::RemoveReplica {
                range,
                node,
                expected_epoch,
            } => {
                let g = self.led_here(range.get())?;
                self.start_replica_change(g, expected_epoch.get(), None, Some(NodeId(node.get().0)))
                    .map(Some)
            }
            _ => Err(RequestError::InvalidRequest {
                reason: InvalidReason::Unsupported,
            }),
        }
    }

    /// Whether a range command or membership change is in the log of `r` but not applied.
    pub(super) fn change_in_flight(r: &Replica) -> bool {
        let last = r.raft.last_id().index.0;
        (r.range.applied_index() + 1..=last).any(|i| {
            r.raft.entry(LogIndex(i)).is_some_and(|e| {
                e.kind == EntryKind::ConfChange || e.data.first() == Some(&PAYLOAD_RANGE_COMMAND)
            })
        })
    }

    /// The ids named by splits in the logs that are not applied yet (at open: a split this
    /// node proposed just before a crash may commit after the restart, and its id must not
    /// be handed out meanwhile).
    pub(super) fn ids_in_unapplied_splits(&self) -> u64 {
        let mut max = 0;
        for r in self.groups.values() {
            let last = r.raft.last_id().index.0;
            for i in r.range.applied_index() + 1..=last {
                let Some(e) = r.raft.entry(LogIndex(i)) else {
                    continue;
                };
                if e.data.first() != Some(&PAYLOAD_RANGE_COMMAND) {
                    continue;
                }
                if let Ok(RangeCommand::Split {
                    right_id,
                    right_group,
                    ..
                }) = RangeCommand::decode(&e.data)
                {
                    max = max.max(right_id).max(right_group);
                }
            }
        }
        max
    }

    /// A fresh range and group id: unique in the cluster (the low 10 bits are this node's
    /// id, the rest above every id this store has seen, split entries not yet applied and
    /// ranges merged away included) and living on this shard.
    fn allocate_id(&mut self) -> Option<u64> {
        let node = self.cfg.node.0 & 0x3ff;
        let start = (self.last_allocated >> 10) + 1;
        for k in start..start + 1_000_000 {
            let c = (k << 10) | node;
            if quasar_rpc::transport::shard_for_group(msg::GroupId(c), self.cfg.shards)
                == self.cfg.shard
                && !self.groups.contains_key(&msg::GroupId(c))
            {
                self.last_allocated = c;
                return Some(c);
            }
        }
        None
    }

    /// Proposes a split of `g` at `key` (leader only); returns the entry's index and term.
    fn propose_split(
        &mut self,
        g: msg::GroupId,
        key: &[u8],
    ) -> Result<(LogIndex, Term), RequestError> {
        let (d, frozen, in_flight) = {
            let r = &self.groups[&g];
            (
                r.range.descriptor().clone(),
                r.range.frozen_at().is_some(),
                Self::change_in_flight(r),
            )
        };
        if d.id == RangeId(1) {
            return Err(RequestError::Refused {
                reason: "the meta range (range 1) does not split".into(),
            });
        }
        if key <= d.start.as_slice() || (!d.end.is_empty() && key >= d.end.as_slice()) {
            return Err(RequestError::InvalidRequest {
                reason: InvalidReason::BadSplitKey,
            });
        }
        if frozen || in_flight || self.frozen_into(&d) || membership::conf_of(&d).is_joint() {
            return Err(RequestError::ChangeInProgress { range: d.id });
        }
        let id = self.allocate_id().ok_or_else(|| RequestError::Refused {
            reason: "no free range id on this shard".into(),
        })?;
        let r = self
            .groups
            .get_mut(&g)
            .ok_or(RequestError::UnknownRange { range: d.id })?;
        let index = r
            .raft
            .propose(
                RangeCommand::Split {
                    expected_epoch: d.epoch.0,
                    key: key.to_vec(),
                    right_id: id,
                    right_group: id,
                }
                .encode(),
            )
            .map_err(|_| RequestError::NotLeader {
                range: d.id,
                leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
            })?;
        r.last_activity = self.ticks;
        if r.raft.is_quiesced() {
            r.raft.wake();
        }
        info!(
            range = d.id.0,
            right = id,
            index = index.0,
            "split proposed"
        );
        Ok((index, r.raft.term()))
    }

    /// Whether a local range right after `d` is frozen for a merge into it.
    pub(super) fn frozen_into(&self, d: &RangeDescriptor) -> bool {
        self.frozen_right(d).is_some()
    }

    /// The descriptor of the local range right after `d` that is frozen for a merge into it.
    pub(super) fn frozen_right(&self, d: &RangeDescriptor) -> Option<&RangeDescriptor> {
        if d.end.is_empty() {
            return None;
        }
        self.groups
            .values()
            .find(|r| r.range.frozen_at().is_some() && r.range.descriptor().start == d.end)
            .map(|r| r.range.descriptor())
    }

    /// Whether a replica change of `d` (`add` joining as a voter, `remove` leaving) takes
    /// `d`'s replicas away from those of a frozen right neighbour waiting to merge into it.
    /// The merge needs both on the same replicas (a replica of `d` without one of the
    /// neighbour could not absorb it), and the neighbour's cannot change while it is frozen.
    pub(super) fn moves_away_from_merge(
        &self,
        d: &RangeDescriptor,
        add: Option<NodeId>,
        remove: Option<NodeId>,
    ) -> bool {
        let Some(rd) = self.frozen_right(d) else {
            return false;
        };
        let rc = membership::conf_of(rd);
        add.is_some_and(|t| !rc.is_voter(t)) || remove.is_some_and(|f| rc.contains(f))
    }

    /// The local replica right after `left`, if any.
    fn right_neighbour(&self, left: &RangeDescriptor) -> Option<msg::GroupId> {
        if left.end.is_empty() {
            return None;
        }
        self.groups
            .values()
            .find(|r| r.range.descriptor().start == left.end)
            .map(|r| r.group)
    }

    /// The pre-checks of a merge of `lg` with its right neighbour; returns the neighbour.
    fn merge_checks(&self, lg: msg::GroupId) -> Result<msg::GroupId, RequestError> {
        let l = &self.groups[&lg];
        let ld = l.range.descriptor();
        if ld.id == RangeId(1) {
            return Err(RequestError::Refused {
                reason: "the meta range (range 1) does not merge".into(),
            });
        }
        if ld.end.is_empty() {
            return Err(RequestError::Refused {
                reason: format!(
                    "range {} is the last range: there is nothing after it to merge",
                    ld.id
                ),
            });
        }
        let rg = self
            .right_neighbour(ld)
            .ok_or_else(|| RequestError::Refused {
                reason: format!(
                    "the range after range {} (from {:?}) has no replica on this node: the \
                     ranges are not on the same replicas",
                    ld.id,
                    ld.end.escape_ascii().to_string()
                ),
            })?;
        let r = &self.groups[&rg];
        let rd = r.range.descriptor();
        if !same_replicas(ld, rd) {
            return Err(RequestError::Refused {
                reason: format!(
                    "ranges {} and {} are on different replicas: move replicas until they match",
                    ld.id, rd.id
                ),
            });
        }
        if r.raft.role() != Role::Leader {
            return Err(RequestError::Refused {
                reason: format!(
                    "range {} is led by node {}, not by node {} which leads range {}: transfer \
                     its leadership to node {} first",
                    rd.id,
                    r.raft.leader().map_or("?".to_string(), |n| n.0.to_string()),
                    self.cfg.node.0,
                    ld.id,
                    self.cfg.node.0
                ),
            });
        }
        for (x, d) in [(l, ld), (r, rd)] {
            if x.range.frozen_at().is_some()
                || Self::change_in_flight(x)
                || self.frozen_into(d)
                || membership::conf_of(d).is_joint()
            {
                return Err(RequestError::ChangeInProgress { range: d.id });
            }
        }
        let bytes = l.range.size_bytes() + r.range.size_bytes();
        if self.cfg.split_after_bytes > 0 && bytes > self.cfg.split_after_bytes {
            return Err(RequestError::Refused {
                reason: format!(
                    "the merged range would hold {bytes} bytes, over the split threshold of {} \
                     bytes: it would split again",
                    self.cfg.split_after_bytes
                ),
            });
        }
        let keys = (l.range.len() + r.range.len()) as u64;
        if self.cfg.split_after_keys > 0 && keys > self.cfg.split_after_keys {
            return Err(RequestError::Refused {
                reason: format!(
                    "the merged range would hold {keys} keys, over the split threshold of {} \
                     keys: it would split again",
                    self.cfg.split_after_keys
                ),
            });
        }
        for (x, d) in [(l, ld), (r, rd)] {
            let last = x.raft.last_id().index;
            for p in x.raft.conf_state().members() {
                if p == self.cfg.node {
                    continue;
                }
                let Some(pr) = x.raft.progress(p) else {
                    continue;
                };
                let matched = pr.matched;
                // A new leader does not know where its followers are until they answer
                // (matched 0, probing): that is not lagging.
                let lagging = matches!(pr.state, raft::ProgressState::Snapshot { .. })
                    || (pr.state == raft::ProgressState::Replicate
                        && matched.0 + LAG_TOLERANCE < last.0);
                if lagging {
                    return Err(RequestError::Refused {
                        reason: format!(
                            "the replica of range {} on node {} lags (it holds entry {} of {}): \
                             retry once it caught up",
                            d.id, p.0, matched.0, last.0
                        ),
                    });
                }
            }
        }
        Ok(rg)
    }

    /// Proposes the merge of frozen `rg` into `lg` once every replica of `rg` holds the
    /// freeze; `None` while some do not yet.
    fn propose_merge(
        &mut self,
        lg: msg::GroupId,
        rg: msg::GroupId,
        freeze_index: LogIndex,
    ) -> Option<Result<(LogIndex, Term), RequestError>> {
        let r = self.groups.get(&rg)?;
        let caught_up = r.raft.conf_state().members().into_iter().all(|p| {
            p == self.cfg.node
                || r.raft
                    .progress(p)
                    .is_some_and(|pr| pr.matched >= freeze_index)
        });
        if !caught_up {
            return None;
        }
        let rd = r.range.descriptor().clone();
        if !same_replicas(self.groups.get(&lg)?.range.descriptor(), &rd) {
            // The left range's replicas changed after the freeze (its leader had not yet
            // applied it): `align_for_merge` brings them back first.
            return None;
        }
        let l = self.groups.get_mut(&lg)?;
        if l.raft.role() != Role::Leader {
            return Some(Err(RequestError::NotLeader {
                range: l.range.descriptor().id,
                leader_hint: l.raft.leader().map(|n| msg::NodeId(n.0)),
            }));
        }
        if Self::change_in_flight(l) {
            return None;
        }
        let cmd = RangeCommand::Merge {
            expected_epoch: l.range.descriptor().epoch.0,
            right_id: rd.id.0,
            right_group: rd.group.0,
            right_start: rd.start.clone(),
            right_epoch: rd.epoch.0,
            freeze_index: freeze_index.0,
        };
        l.last_activity = self.ticks;
        if l.raft.is_quiesced() {
            l.raft.wake();
        }
        Some(
            l.raft
                .propose(cmd.encode())
                .map(|index| (index, l.raft.term()))
                .map_err(|e| RequestError::Refused {
                    reason: format!("cannot propose the merge: {e}"),
                }),
        )
    }

    /// Applies the committed entries of the local ranges (other than `lg`) that hold `key`,
    /// until group `rg` exists: one of them may be the range `rg` split from, or its
    /// ancestor. Entries applied here are skipped when their turn comes.
    fn replay_births(
        &mut self,
        lg: msg::GroupId,
        key: &[u8],
        rg: msg::GroupId,
    ) -> Result<(), StoreError> {
        // Each round applies one range's log to its commit: at most one per local range.
        for _ in 0..self.groups.len() {
            if self.groups.contains_key(&rg) {
                return Ok(());
            }
            let holder = self.groups.values().find(|x| {
                let d = x.range.descriptor();
                x.group != lg
                    && d.start.as_slice() <= key
                    && (d.end.is_empty() || key < d.end.as_slice())
                    && x.range.applied_index() < x.raft.commit().0
            });
            let Some((x, commit)) = holder.map(|x| (x.group, x.raft.commit())) else {
                return Ok(());
            };
            if self.apply_ahead(x, commit, |_| true)? <= commit {
                // Its entries are not all here: nothing more to do now.
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies `g`'s log entries from its applied index on, up to `last`, ahead of their
    /// turn (each is skipped when its turn comes), while `more` holds for the replica and
    /// the entries are here; returns the first index not applied.
    fn apply_ahead(
        &mut self,
        g: msg::GroupId,
        last: LogIndex,
        more: impl Fn(&Replica) -> bool,
    ) -> Result<LogIndex, StoreError> {
        let Some(r) = self.groups.get(&g) else {
            return Ok(LogIndex(0));
        };
        let mut next = LogIndex(r.range.applied_index() + 1);
        while next <= last {
            let Some(entry) = self
                .groups
                .get(&g)
                .filter(|r| more(r))
                .and_then(|r| r.raft.entry(next).cloned())
            else {
                break;
            };
            self.apply_entry(g, &entry)?;
            next = next.next();
        }
        Ok(next)
    }

    /// Applies the range command entry `e` of group `g`.
    pub(super) fn apply_range_command(
        &mut self,
        g: msg::GroupId,
        e: &raft::Entry,
    ) -> Result<(), StoreError> {
        let cmd = RangeCommand::decode(&e.data).map_err(|reason| StoreError::Raft {
            group: g.0,
            reason: format!(
                "range command at {} does not decode ({reason}): the log is damaged",
                e.index.0
            ),
        })?;
        let result = match cmd {
            RangeCommand::Split {
                expected_epoch,
                key,
                right_id,
                right_group,
            } => self.apply_split(g, e, expected_epoch, key, right_id, right_group)?,
            RangeCommand::Freeze { expected_epoch } => {
                let Some(r) = self.groups.get_mut(&g) else {
                    return Ok(());
                };
                let d = r.range.descriptor().clone();
                if d.epoch.0 != expected_epoch {
                    r.range.skip_to(e.index.0);
                    Err(RequestError::RangeMoved { descriptor: d })
                } else if r.range.frozen_at().is_some() {
                    r.range.skip_to(e.index.0);
                    Err(RequestError::ChangeInProgress { range: d.id })
                } else {
                    r.range.freeze(e.index.0);
                    info!(
                        range = d.id.0,
                        index = e.index.0,
                        "range frozen for a merge"
                    );
                    Ok(Applied::Frozen { at: e.index })
                }
            }
            RangeCommand::Merge {
                expected_epoch,
                right_id,
                right_group,
                right_start,
                right_epoch,
                freeze_index,
            } => self.apply_merge(
                g,
                e,
                expected_epoch,
                (RangeId(right_id), msg::GroupId(right_group), right_start),
                right_epoch,
                LogIndex(freeze_index),
            )?,
        };
        self.resolve_admin(g, e, result);
        Ok(())
    }

    fn apply_split(
        &mut self,
        g: msg::GroupId,
        e: &raft::Entry,
        expected_epoch: u64,
        key: Vec<u8>,
        right_id: u64,
        right_group: u64,
    ) -> Result<Result<Applied, RequestError>, StoreError> {
        // An id a split named is never allocated again here, even once its range is gone.
        self.last_allocated = self.last_allocated.max(right_id).max(right_group);
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(Err(RequestError::UnknownRange { range: RangeId(0) }));
        };
        let d = r.range.descriptor().clone();
        let refusal = if d.epoch.0 != expected_epoch {
            Some(RequestError::RangeMoved {
                descriptor: d.clone(),
            })
        } else if r.range.frozen_at().is_some() {
            Some(RequestError::ChangeInProgress { range: d.id })
        } else if key <= d.start || (!d.end.is_empty() && key >= d.end) {
            Some(RequestError::InvalidRequest {
                reason: InvalidReason::BadSplitKey,
            })
        } else {
            None
        };
        if let Some(err) = refusal {
            r.range.skip_to(e.index.0);
            return Ok(Err(err));
        }
        let epoch = msg::RangeEpoch(d.epoch.0 + 1);
        let left = RangeDescriptor {
            end: key.clone(),
            epoch,
            ..d.clone()
        };
        let right = RangeDescriptor {
            id: RangeId(right_id),
            group: msg::GroupId(right_group),
            start: key,
            end: d.end.clone(),
            replicas: d.replicas.clone(),
            epoch,
        };
        let leads = r.raft.role() == Role::Leader;
        let Some(child) = self.groups.update_range(g, |r| {
            r.range.split_off(e.index.0, left.clone(), right.clone())
        }) else {
            return Ok(Err(RequestError::UnknownRange { range: d.id }));
        };
        self.metrics.splits += 1;
        // Replaying an old split whose right range is long gone here (buried once a
        // survivor's file covered its merge, or this node's replica of it removed since):
        // only the left range changes.
        let gone = self.destroyed.contains(&right.group) || self.removed.contains_key(&right.group);
        // A newer local range holding the right range's first key, the right range not
        // buried: the merge that absorbed it is not covered by a file yet, so a log replayed
        // here (this very one, or a neighbour's) may still absorb it and needs its state.
        // It comes back out of the directory's sight, kept until no neighbour can absorb it
        // (`sweep_kept_superseded`). (Found by the simulator: a parent's log held a split,
        // the merge back and a second split at the same key whose range had its own file; on
        // restart the first split's range was taken for merged away and the merge then had
        // nothing to absorb, so the node stopped at every start.)
        let superseded = !gone && self.groups.holds_newer(&right.start, right.epoch, g);
        {
            let mut dir = self.dir.write().unwrap_or_else(|e| e.into_inner());
            dir.upsert(&left);
            if !gone && !superseded {
                dir.upsert(&right);
            }
        }
        if gone {
            info!(
                range = d.id.0,
                right = right_id,
                "split replayed; its right range was merged away or left this node since"
            );
            return Ok(Ok(Applied::Split { left, right }));
        }
        info!(
            range = d.id.0,
            right = right_id,
            index = e.index.0,
            keys_moved = child.len(),
            "split applied"
        );
        if self.groups.get(&right.group).is_some_and(|c| {
            c.awaiting_snapshot && c.staged.is_none() && c.raft.snapshot().last.index == LogIndex(0)
        }) {
            // Adopted before this split applied here, and nothing received since: the split's
            // own state is better. (One that already took its leader's snapshot, which starts
            // past the split, stays: found by the simulator, a replica replaced in the turn
            // its core restored a snapshot, whose acknowledgement then claimed entries the
            // new replica lacked, and the leader waited for it forever.)
            self.groups.remove(&right.group);
        }
        if self.groups.contains_key(&right.group) {
            // Adopted and already holding its leader's newer snapshot (above); never replace
            // a live replica.
            info!(
                group = right_group,
                "split names a group that exists here; kept as is"
            );
            return Ok(Ok(Applied::Split { left, right }));
        }
        // The new group starts where the split entry is: its log begins after it (term 0,
        // so no vote guard delays its first election), holding the right half of the data.
        let mut conf = ConfState::with_voters(right.voters().map(|n| NodeId(n.0)));
        conf.learners = right
            .replicas
            .iter()
            .filter(|x| x.role == msg::ReplicaRole::Learner)
            .map(|x| NodeId(x.node.0))
            .collect();
        let meta = SnapshotMeta {
            last: LogId {
                term: Term(0),
                index: e.index,
            },
            conf_state: conf,
        };
        quasar_wal::crash_point!("split-apply");
        self.create_replica(right.group, None, Some((meta, child)))?;
        let now = self.ticks;
        self.groups.update_pins(right.group, |c| {
            c.parent = Some(g);
            c.last_activity = now;
        });
        if superseded {
            info!(
                range = d.id.0,
                right = right_id,
                "split replayed; its right range, merged away since, is kept for the merge's replay"
            );
            if !self.kept_superseded.contains(&right.group) {
                self.kept_superseded.push(right.group);
            }
            return Ok(Ok(Applied::Split { left, right }));
        }
        self.forced_snapshots.push((
            right.group,
            self.ticks + self.cfg.forced_snapshot_delay_ticks,
        ));
        if leads {
            self.campaign(right.group);
        }
        let stale = self.superseded_by(&right);
        self.destroy_superseded(right.group, stale);
        let orphans: Vec<Message> = {
            let mut kept = Vec::new();
            let mut mine = Vec::new();
            for (og, m, t) in self.orphans.drain(..) {
                if og == right.group {
                    mine.push(m);
                } else {
                    kept.push((og, m, t));
                }
            }
            self.orphans = kept;
            mine
        };
        for m in orphans {
            self.step(right.group, m);
        }
        Ok(Ok(Applied::Split { left, right }))
    }

    fn apply_merge(
        &mut self,
        lg: msg::GroupId,
        e: &raft::Entry,
        expected_epoch: u64,
        (right_id, rg, right_start): (RangeId, msg::GroupId, Vec<u8>),
        right_epoch: u64,
        freeze_index: LogIndex,
    ) -> Result<Result<Applied, RequestError>, StoreError> {
        let Some(l) = self.groups.get_mut(&lg) else {
            return Ok(Err(RequestError::UnknownRange { range: right_id }));
        };
        let ld = l.range.descriptor().clone();
        if ld.epoch.0 != expected_epoch {
            l.range.skip_to(e.index.0);
            return Ok(Err(RequestError::RangeMoved { descriptor: ld }));
        }
        if l.range.frozen_at().is_some() {
            // A frozen range changes no more: it is itself being absorbed.
            l.range.skip_to(e.index.0);
            return Ok(Err(RequestError::ChangeInProgress { range: ld.id }));
        }
        if ld.end != right_start {
            l.range.skip_to(e.index.0);
            return Ok(Err(RequestError::Refused {
                reason: format!("range {right_id} is no longer right after range {}", ld.id),
            }));
        }
        if !self.groups.contains_key(&rg) && self.destroyed.contains(&rg) {
            // Absorbed by another merge that this log's later state covers: this entry
            // was refused everywhere (its range moved on before it applied).
            warn!(
                range = ld.id.0,
                absorbed = right_id.0,
                index = e.index.0,
                "merge of a range buried here skipped"
            );
            if let Some(l) = self.groups.get_mut(&lg) {
                l.range.skip_to(e.index.0);
            }
            return Ok(Err(RequestError::Refused {
                reason: format!("range {right_id} was merged elsewhere"),
            }));
        }
        // After a restart the right range may not exist yet: it is re-created when the log of
        // the range it split from replays, which may not have happened in this turn (the
        // left range replays from a newer file). Those logs are applied first.
        if !self.groups.contains_key(&rg) {
            self.replay_births(lg, &right_start, rg)?;
        }
        // Every replica of the left range holds the right one (same replicas, checked when
        // proposed); bring this one to the freeze from its own log.
        if !self.groups.contains_key(&rg) {
            return Err(StoreError::Raft {
                group: lg.0,
                reason: format!(
                    "merge entry {} absorbs range {right_id} (group {}), which has no replica \
                     here: this replica cannot apply it and stops",
                    e.index.0, rg.0
                ),
            });
        }
        let next = self.apply_ahead(rg, freeze_index, |_| true)?;
        if next <= freeze_index {
            return Err(StoreError::Raft {
                group: rg.0,
                reason: format!(
                    "merge into range {} needs entry {} of this range up to its freeze at {}, \
                     which this replica does not hold",
                    ld.id, next.0, freeze_index.0
                ),
            });
        }
        // A frozen range changes no more data, but a replica change that started before the
        // freeze may complete after it (its epoch moves on), and the merge was proposed
        // against the epoch its proposer saw: a replica replaying the merge brings the right
        // range there too. (Found by the simulator: a node that had applied the merge
        // refused it when replaying after a crash, the right range being only at its
        // freeze, and its state diverged.)
        let commit = self
            .groups
            .get(&rg)
            .map_or(LogIndex(0), |r| r.raft.commit());
        self.apply_ahead(rg, commit, |r| r.range.descriptor().epoch.0 < right_epoch)?;
        let Some(r) = self.groups.get(&rg) else {
            return Ok(Err(RequestError::UnknownRange { range: right_id }));
        };
        let rd = r.range.descriptor().clone();
        if r.range.frozen_at() != Some(freeze_index.0)
            || rd.epoch.0 != right_epoch
            || rd.start != ld.end
        {
            if let Some(l) = self.groups.get_mut(&lg) {
                l.range.skip_to(e.index.0);
            }
            return Ok(Err(RequestError::Refused {
                reason: format!(
                    "range {} is not frozen at {} with epoch {right_epoch} right after range {}",
                    rd.id, freeze_index.0, ld.id
                ),
            }));
        }
        let Some(right) = self.drop_replica(rg) else {
            return Ok(Err(RequestError::UnknownRange { range: right_id }));
        };
        // The absorbed range's log goes with its files once this range's next file covers
        // the merge: what depended on that log (split children of it without a file, ranges
        // that absorbed such a child) depends on this range now, whose file waits for them.
        // (Found by the simulator: a child of the absorbed range lost its birth when the
        // survivor's file freed the absorbed range's log, and the merge that later took the
        // child could not replay after a crash.)
        let pinning: Vec<msg::GroupId> = if self.groups.pinned(rg) {
            self.groups
                .in_order()
                .filter(|c| c.pins_log_of(rg))
                .map(|c| c.group)
                .collect()
        } else {
            Vec::new()
        };
        for g in pinning {
            self.groups.update_pins(g, |c| {
                if c.parent == Some(rg) {
                    c.parent = Some(lg);
                }
                if c.absorbed_parents.contains(&rg) {
                    c.absorbed_parents.retain(|p| *p != rg);
                    if c.group != lg && !c.absorbed_parents.contains(&lg) {
                        c.absorbed_parents.push(lg);
                    }
                }
            });
        }
        self.destroyed.insert(rg);
        self.merged_into.insert(rg, (lg, e.index));
        let merged = RangeDescriptor {
            end: rd.end.clone(),
            epoch: msg::RangeEpoch(ld.epoch.0.max(rd.epoch.0) + 1),
            ..ld.clone()
        };
        // Writes after the freeze were refused by the frozen range: never applied.
        for p in right.proposals {
            self.responses.push((
                p.token,
                ClientResponse {
                    request_id: p.request_id,
                    result: Err(RequestError::RangeMoved {
                        descriptor: merged.clone(),
                    }),
                },
            ));
        }
        let keys = right.range.len();
        quasar_wal::crash_point!("merge-apply");
        let right_parents: Vec<msg::GroupId> = right
            .parent
            .into_iter()
            .chain(right.absorbed_parents)
            .collect();
        let absorbed_range = right.range;
        self.groups.update_range(lg, |l| {
            l.range.absorb(e.index.0, absorbed_range, merged.clone())
        });
        if let Some(l) = self.groups.get_mut(&lg) {
            l.absorbed.push(rg);
            // What the absorbed range still depended on, this range depends on now: the
            // files of ranges it absorbed, and its parent's log (or theirs) when it had no
            // file yet. (Found by the simulator: a parent took a snapshot past its child's
            // birth once the child was absorbed by another range whose file did not cover
            // the merge yet; after a crash that merge could not replay.)
            l.absorbed.extend(right.absorbed);
            // A file under way holds the state before the merge: it must not free the
            // absorbed range's files when it lands.
            l.saving = None;
        }
        self.groups.update_pins(lg, |l| {
            for p in right_parents {
                if p != lg && !l.absorbed_parents.contains(&p) {
                    l.absorbed_parents.push(p);
                }
            }
        });
        self.forced_snapshots
            .push((lg, self.ticks + self.cfg.forced_snapshot_delay_ticks));
        {
            let mut dir = self.dir.write().unwrap_or_else(|e| e.into_inner());
            dir.remove(rd.id);
            dir.upsert(&merged);
        }
        self.metrics.merges += 1;
        info!(
            range = ld.id.0,
            absorbed = rd.id.0,
            index = e.index.0,
            keys,
            "merge applied"
        );
        Ok(Ok(Applied::Merged { merged }))
    }

    /// Moves the admin requests waiting for entry `e` of `g` along.
    fn resolve_admin(
        &mut self,
        g: msg::GroupId,
        e: &raft::Entry,
        result: Result<Applied, RequestError>,
    ) {
        let mut result = Some(result);
        let mut i = 0;
        while i < self.pending_admin.len() {
            let p = &mut self.pending_admin[i];
            let (index, term) = match p.wait {
                AdminWait::Split { group, index, term } if group == g => (index, term),
                AdminWait::Freeze {
                    right, index, term, ..
                } if right == g => (index, term),
                AdminWait::Merge { left, index, term } if left == g => (index, term),
                _ => {
                    i += 1;
                    continue;
                }
            };
            if index != e.index {
                i += 1;
                continue;
            }
            let answer = if term != e.term {
                Some(Err(RequestError::Ambiguous {
                    reason: AmbiguousReason::LeadershipLost,
                }))
            } else {
                match (result.take(), &p.wait) {
                    (Some(Ok(Applied::Split { left, right })), _) => {
                        p.wait = AdminWait::SplitServing { left, right };
                        None
                    }
                    (Some(Ok(Applied::Frozen { at })), AdminWait::Freeze { left, right, .. }) => {
                        p.wait = AdminWait::Frozen {
                            left: *left,
                            right: *right,
                            freeze_index: at,
                        };
                        None
                    }
                    (Some(Ok(Applied::Merged { merged })), _) => {
                        Some(Ok(AdminReply::Merged { merged }))
                    }
                    (Some(Err(err)), _) => Some(Err(err)),
                    _ => Some(Err(RequestError::Refused {
                        reason: "the change applied in an unexpected way".into(),
                    })),
                }
            };
            match answer {
                Some(result) => self.answer_admin(i, result),
                None => i += 1,
            }
        }
    }

    /// Answers waiting admin request `i` (removed from the list; the last one takes its place).
    fn answer_admin(&mut self, i: usize, result: Result<AdminReply, RequestError>) {
        let p = self.pending_admin.swap_remove(i);
        if p.token == INTERNAL_TOKEN {
            debug!(result = ?result, "internal change finished");
            return;
        }
        self.admin_responses.push((
            p.token,
            AdminResponse {
                request_id: p.request_id,
                result,
            },
        ));
    }

    /// Moves waiting admin requests along (new leaders, caught-up replicas, timeouts).
    pub(super) fn check_admin(&mut self) {
        let now = self.ticks;
        let deadline = self.cfg.request_timeout_ticks;
        let mut i = 0;
        while i < self.pending_admin.len() {
            let at_tick = self.pending_admin[i].at_tick;
            let outcome: Option<Result<AdminReply, RequestError>> =
                match &self.pending_admin[i].wait {
                    AdminWait::SplitServing { left, right } => {
                        let serving = self
                            .groups
                            .get(&right.group)
                            .is_none_or(|r| r.raft.leader().is_some());
                        serving.then(|| {
                            Ok(AdminReply::Split {
                                left: left.clone(),
                                right: right.clone(),
                            })
                        })
                    }
                    AdminWait::Frozen {
                        left,
                        right,
                        freeze_index,
                    } => {
                        let (left, right, freeze_index) = (*left, *right, *freeze_index);
                        match self.propose_merge(left, right, freeze_index) {
                            None => None,
                            Some(Ok((index, term))) => {
                                self.pending_admin[i].wait = AdminWait::Merge { left, index, term };
                                None
                            }
                            Some(Err(e)) => Some(Err(e)),
                        }
                    }
                    AdminWait::Transfer { group, to } => self.groups.get(group).and_then(|r| {
                        (r.raft.leader() == Some(*to)).then(|| {
                            Ok(AdminReply::LeaderTransferred {
                                range: r.range.descriptor().id,
                                group: *group,
                                leader: msg::NodeId(to.0),
                            })
                        })
                    }),
                    AdminWait::Replicas { .. } => self.advance_replica_change(i),
                    AdminWait::Split { .. }
                    | AdminWait::Freeze { .. }
                    | AdminWait::Merge { .. } => None,
                };
            let outcome = outcome.or_else(|| {
                (now.saturating_sub(at_tick) > deadline).then(|| {
                    Err(match self.pending_admin[i].wait {
                        AdminWait::Transfer { .. } => RequestError::Refused {
                            reason: "the leadership transfer did not complete in time (the \
                                     target lags or is down): check the range and retry"
                                .into(),
                        },
                        AdminWait::Frozen { .. } => RequestError::Refused {
                            reason: "a replica did not catch up with the freeze in time; the \
                                     frozen range finishes its merge once it does"
                                .into(),
                        },
                        AdminWait::Replicas { ref stage, add, .. } => {
                            Self::replica_change_timeout(stage, add)
                        }
                        _ => RequestError::Ambiguous {
                            reason: AmbiguousReason::Timeout,
                        },
                    })
                })
            });
            match outcome {
                Some(result) => self.answer_admin(i, result),
                None => i += 1,
            }
        }
    }

    /// Finishes merges whose requester went away (leadership changed after the freeze): a
    /// frozen range led here moves its leadership to its left neighbour's leader, and a
    /// node that leads both proposes the merge.
    pub(super) fn finish_frozen(&mut self) {
        if self.ticks % FROZEN_CHECK_TICKS != 0 {
            return;
        }
        // A frozen range never sleeps (see `is_asleep_able`).
        let mut frozen: Vec<(msg::GroupId, LogIndex)> = self
            .groups
            .awake_values()
            .filter(|r| r.raft.role() == Role::Leader)
            .filter_map(|r| r.range.frozen_at().map(|f| (r.group, LogIndex(f))))
            .collect();
        frozen.sort_unstable_by_key(|(g, _)| *g);
        for (rg, f) in frozen {
            if self.pending_admin.iter().any(|p| {
                matches!(p.wait, AdminWait::Frozen { right, .. } | AdminWait::Freeze { right, .. } if right == rg)
            }) {
                continue;
            }
            let start = self.groups[&rg].range.descriptor().start.clone();
            let Some(lg) = self
                .groups
                .values()
                .find(|l| l.range.descriptor().end == start)
                .map(|l| l.group)
            else {
                continue;
            };
            let l = &self.groups[&lg];
            if l.raft.role() == Role::Leader {
                match self.propose_merge(lg, rg, f) {
                    Some(Ok((index, _))) => info!(
                        left = lg.0,
                        right = rg.0,
                        index = index.0,
                        "merge of a frozen range resumed"
                    ),
                    Some(Err(_)) => {}
                    None => self.align_for_merge(lg, rg),
                }
            } else if let Some(leader) = l.raft.leader() {
                if let Some(r) = self.groups.get_mut(&rg) {
                    if r.raft.conf_state().is_voter(leader) {
                        let _ = r.raft.transfer_leader(leader);
                    }
                }
            }
        }
    }

    /// Starts a replica change of `lg` (led here) towards the replicas of its frozen right
    /// neighbour `rg` when they differ: a change of `lg` that started before this node
    /// applied the freeze (the freeze was committed by another leader) added or removed a
    /// replica since. One step at a time, through the same stages as an operator's move.
    fn align_for_merge(&mut self, lg: msg::GroupId, rg: msg::GroupId) {
        let (Some(l), Some(r)) = (self.groups.get(&lg), self.groups.get(&rg)) else {
            return;
        };
        let (ld, rd) = (l.range.descriptor(), r.range.descriptor());
        let (lc, rc) = (membership::conf_of(ld), membership::conf_of(rd));
        if same_replicas(ld, rd)
            || lc.is_joint()
            || Self::change_in_flight(l)
            || self
                .pending_admin
                .iter()
                .any(|p| matches!(p.wait, AdminWait::Replicas { group, .. } if group == lg))
        {
            return;
        }
        let remove = lc.members().into_iter().find(|&n| !rc.contains(n));
        let add = rc.voters.iter().copied().find(|&n| !lc.is_voter(n));
        if add.is_none() && remove.is_none() {
            // Only a learner of the frozen range missing here, or roles that differ: no
            // move produces those; an operator resolves it.
            warn!(
                left = ld.id.0,
                right = rd.id.0,
                "a frozen range waits for its left neighbour's replicas, which no move aligns"
            );
            return;
        }
        let (id, epoch) = (ld.id, ld.epoch);
        match self.start_replica_change(lg, epoch, add, remove) {
            Ok(wait) => {
                info!(
                    range = id.0,
                    add = add.map_or(0, |n| n.0),
                    remove = remove.map_or(0, |n| n.0),
                    "replicas realigned with a frozen neighbour before its merge"
                );
                self.pending_admin.push(PendingAdmin {
                    token: INTERNAL_TOKEN,
                    request_id: RequestId(0),
                    at_tick: self.ticks,
                    wait,
                });
            }
            Err(e) => debug!(range = id.0, error = ?e, "replica realignment not started yet"),
        }
    }

    /// Starts the snapshots that splits and merges made due (a split child's first file,
    /// which frees its parent's log; a survivor's, which frees the absorbed range's files),
    /// and keeps each due until its file is durable.
    ///
    /// A due group whose log another range pins (a child of its own without a file) waits
    /// off the list, in `forced_waiting`, until the table reports its last pin gone
    /// (`Groups::take_unpinned`): then it starts in the same turn. A chain of splits (each
    /// child split again) so writes its files one per turn from the last child back,
    /// without a pass over the waiting ones. (Before, every call looked at every due group
    /// and every group, and with many groups it ran only once per thousand of them in
    /// ticks: 10,000 chained children wrote 10 files a second.)
    pub(super) fn write_forced_snapshots(&mut self) -> Result<(), StoreError> {
        let now = self.ticks;
        for g in self.groups.take_unpinned() {
            if self.forced_waiting.remove(&g) {
                self.forced_snapshots.push((g, now));
            }
        }
        if !self.forced_snapshots.iter().any(|(_, due)| *due <= now) {
            return Ok(());
        }
        let mut due: Vec<msg::GroupId> = self
            .forced_snapshots
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(g, _)| *g)
            .collect();
        self.forced_snapshots.retain(|(_, t)| *t > now);
        due.sort_unstable();
        due.dedup();
        for g in due {
            let needed = self
                .groups
                .get(&g)
                .is_some_and(|r| r.parent.is_some() || !r.absorbed.is_empty());
            if !needed {
                continue;
            }
            if self.groups.pinned(g) {
                self.forced_waiting.insert(g);
                continue;
            }
            self.start_unpinned(g)?;
            // Looked at again until the file is durable.
            self.forced_snapshots.push((g, now + 1));
        }
        Ok(())
    }

    /// Starts writing `g`'s snapshot file in the background; `false` when it cannot yet
    /// (entries handed but not applied, a split child of its own without a file, snapshots
    /// deferred after a failed write). `true` also when one is under way already.
    pub(super) fn start_forced(&mut self, g: msg::GroupId) -> Result<bool, StoreError> {
        if self.has_unsaved_child(g) {
            return Ok(false);
        }
        self.start_unpinned(g)
    }

    /// `start_forced` for a group whose log no other range needs.
    fn start_unpinned(&mut self, g: msg::GroupId) -> Result<bool, StoreError> {
        let Some(r) = self.groups.get(&g) else {
            return Ok(true);
        };
        if r.saving.is_some() {
            return Ok(true);
        }
        if self.snapshot_deferred() {
            // A snapshot file could not be written lately (a full disk): retried later.
            return Ok(false);
        }
        let applied = LogIndex(r.range.applied_index());
        if applied == r.raft.snapshot().last.index {
            // Nothing applied since the split: the file holds the state at the split.
            let meta = r.raft.snapshot().clone();
            self.start_save(g, meta);
            Ok(true)
        } else if applied <= r.raft.applied() {
            self.take_snapshot(g, applied)?;
            Ok(self.groups.get(&g).is_none_or(|r| r.saving.is_some()))
        } else {
            Ok(false)
        }
    }

    /// Writes `g`'s snapshot file now, waiting for it (and for every background save under
    /// way): `false` when it cannot yet (see `start_forced`).
    pub(super) fn save_now(&mut self, g: msg::GroupId) -> Result<bool, StoreError> {
        self.advance_encoding(g, usize::MAX);
        self.collect_saves(true)?;
        if !self.start_forced(g)? {
            return Ok(false);
        }
        self.advance_encoding(g, usize::MAX);
        self.collect_saves(true)?;
        Ok(true)
    }

    /// Before `g` installs a snapshot from its leader (which may start past a split this
    /// replica applied), its split children without a file write one: the parent's log will
    /// no longer hold their birth.
    pub(super) fn save_children(&mut self, g: msg::GroupId) -> Result<(), StoreError> {
        if !self.groups.pinned(g) {
            return Ok(());
        }
        // Children alive, and ranges that absorbed a child before it had a file.
        let children: Vec<msg::GroupId> = self
            .groups
            .values()
            .filter(|c| c.pins_log_of(g))
            .map(|c| c.group)
            .collect();
        for c in children {
            // A child installing a snapshot from its leader in this same turn: its file is
            // that snapshot (`stage_install` writes it; `process` stages it again later,
            // which rewrites the same file). Its range is still the old one until `finish`,
            // and no file of that one could be written.
            let installing = self
                .in_flight
                .iter()
                .find(|(x, _)| *x == c)
                .and_then(|(_, rd)| rd.snapshot.clone());
            if let Some(meta) = installing {
                self.stage_install(c, &meta)?;
            }
            // A child's own split children first: its file frees their birth too.
            self.save_children(c)?;
            let pinned = |s: &Self| s.groups.get(&c).is_some_and(|r| r.pins_log_of(g));
            if !pinned(self) {
                continue;
            }
            if !self.save_now(c)? || pinned(self) {
                return Err(StoreError::Snapshot {
                    group: c.0,
                    location: self.snaps.location(c),
                    reason: "a split child cannot write its first snapshot before its parent \
                             installs one"
                        .into(),
                });
            }
        }
        Ok(())
    }

    /// A snapshot file of `g` is durable: a split child no longer needs its parent's log,
    /// and ranges `g` absorbed lose their files.
    pub(super) fn snapshot_written(&mut self, g: msg::GroupId) -> Result<(), StoreError> {
        self.groups.update_pins(g, |r| {
            r.parent = None;
            r.absorbed_parents.clear();
        });
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        let absorbed = std::mem::take(&mut r.absorbed);
        for a in absorbed {
            self.destroy_files(a)?;
        }
        Ok(())
    }

    /// Whether `g` must keep its log: a split child of it has no snapshot file yet (alive,
    /// or absorbed by a range whose file does not cover the merge yet).
    pub(super) fn has_unsaved_child(&self, g: msg::GroupId) -> bool {
        self.groups.pinned(g)
    }

    /// The split policy, for a leader after its turn: split in the middle once the range
    /// is over a size or load threshold.
    pub(super) fn maybe_split(&mut self, g: msg::GroupId) {
        let now = self.ticks;
        let cfg = &self.cfg;
        let Some(r) = self.groups.get_mut(&g) else {
            return;
        };
        if now.saturating_sub(r.window_start) >= LOAD_WINDOW_TICKS {
            let ms = now.saturating_sub(r.window_start) * cfg.tick_ms.max(1);
            r.writes_per_sec = r.window_writes * 1000 / ms.max(1);
            r.window_writes = 0;
            r.window_start = now;
        }
        if r.raft.role() != Role::Leader || r.range.descriptor().id == RangeId(1) {
            return;
        }
        let due = (cfg.split_after_bytes > 0 && r.range.size_bytes() > cfg.split_after_bytes)
            || (cfg.split_after_keys > 0 && r.range.len() as u64 > cfg.split_after_keys)
            || (cfg.split_after_writes_per_sec > 0
                && r.writes_per_sec > cfg.split_after_writes_per_sec
                && r.range.len() >= 2);
        // Looked at no more than once per load window while due.
        if !due || now < r.split_checked + LOAD_WINDOW_TICKS / 4 {
            return;
        }
        r.split_checked = now;
        if r.range.frozen_at().is_some() || Self::change_in_flight(r) {
            return;
        }
        let Some(key) = r.range.middle_key() else {
            return;
        };
        let (bytes, keys, rate) = (r.range.size_bytes(), r.range.len(), r.writes_per_sec);
        match self.propose_split(g, &key) {
            Ok((index, _)) => {
                info!(
                    group = g.0,
                    bytes,
                    keys,
                    writes_per_sec = rate,
                    index = index.0,
                    "automatic split proposed"
                )
            }
            Err(e) => debug!(group = g.0, error = %e, "automatic split not proposed"),
        }
    }

    /// Messages for an unknown group that waited two election timeouts: this node will not
    /// learn of the group by applying a split (it installed the parent's snapshot from past
    /// the split), so it adopts the group as an empty replica that waits for the group's
    /// leader to send a snapshot. Groups destroyed here are never adopted.
    pub(super) fn adopt_orphans(&mut self) {
        let now = self.ticks;
        let ttl = 2 * u64::from(self.cfg.election_ticks);
        if !self
            .orphans
            .iter()
            .any(|(_, _, at)| now.saturating_sub(*at) > ttl)
        {
            return;
        }
        let (old, young): (Vec<_>, Vec<_>) = self
            .orphans
            .drain(..)
            .partition(|(_, _, at)| now.saturating_sub(*at) > ttl);
        self.orphans = young;
        for (g, m, at) in old {
            if quasar_rpc::transport::shard_for_group(g, self.cfg.shards) != self.cfg.shard {
                continue;
            }
            if !self.groups.contains_key(&g) && !self.may_adopt(g, &m, at) {
                continue;
            }
            if !self.groups.contains_key(&g) {
                let placeholder = RangeDescriptor {
                    id: RangeId(0),
                    group: g,
                    start: Vec::new(),
                    end: Vec::new(),
                    replicas: Vec::new(),
                    epoch: msg::RangeEpoch(0),
                };
                let raft = match RaftNode::new(
                    &self.cfg.raft(g),
                    self.joining(g),
                    self.seed ^ quasar_rpc::transport::splitmix64(g.0),
                ) {
                    Ok(raft) => raft,
                    Err(e) => {
                        warn!(group = g.0, error = %e, "cannot adopt group");
                        continue;
                    }
                };
                info!(
                    group = g.0,
                    from = m.from.0,
                    term = m.term.0,
                    "adopting a range this node missed the split of"
                );
                let mut r = Replica::new(
                    g,
                    raft,
                    RangeState::new(placeholder, self.cfg.limits),
                    LogIndex(0),
                    now,
                );
                r.awaiting_snapshot = true;
                self.groups.insert(r);
            }
            self.step(g, m);
        }
    }

    /// After a snapshot installed: the directory learns the range's shape, and local ranges
    /// that a merge this replica skipped absorbed are destroyed (see `superseded`).
    pub(super) fn after_install(
        &mut self,
        g: msg::GroupId,
        installed: &RangeDescriptor,
        was_awaiting: bool,
    ) {
        self.dir
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(installed);
        if was_awaiting {
            for n in installed.replicas.iter().map(|x| NodeId(x.node.0)) {
                if n != self.cfg.node && !self.peers.contains(&n) {
                    self.peers.push(n);
                    self.peers.sort_unstable();
                }
            }
        }
        let stale = self.superseded_by(installed);
        self.destroy_superseded(g, stale);
    }

    /// Destroys local ranges that a newer range `by` superseded.
    pub(super) fn destroy_superseded(&mut self, by: msg::GroupId, stale: Vec<msg::GroupId>) {
        let g = by;
        for s in stale {
            if self.left_neighbour_may_absorb(s) {
                if !self.kept_superseded.contains(&s) {
                    self.kept_superseded.push(s);
                }
                continue;
            }
            info!(
                group = s.0,
                into = g.0,
                "range merged away while this replica lagged: destroyed"
            );
            self.destroy_replica(s);
        }
    }

    /// Destroys the local replica of a range merged away: pending requests are answered
    /// lost, the range is buried and its files go (a failure to delete them is logged; the
    /// burial keeps it from coming back).
    pub(super) fn destroy_replica(&mut self, g: msg::GroupId) {
        if let Some(r) = self.drop_replica(g) {
            answer_lost(&mut self.responses, r.proposals.into_iter());
        }
        // `destroy_files` buries it first (`destroyed`), then deletes.
        if let Err(e) = self.destroy_files(g) {
            warn!(group = g.0, error = %e, "files of a destroyed range not removed");
        }
    }
}

/// Whether two ranges have the same replicas in the same roles.
fn same_replicas(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let mut x = a.replicas.clone();
    let mut y = b.replicas.clone();
    x.sort_by_key(|r| r.node);
    y.sort_by_key(|r| r.node);
    x == y
}
