//! Replica moves: changes of a range's membership, driven by admin requests
//! (`MoveReplica`, `AddReplica`, `RemoveReplica`), and the removal of a replica that left
//! its group.
//!
//! ```text
//!  leader:  checks (led here, epoch, nothing in flight, not joint, the nodes' roles)
//!           -> snapshot and compact the leader's log, so the newcomer is caught up by a
//!              snapshot (the log never reaches back to the range's birth)
//!           -> propose "learner T" -> applied -> wait until T's log is within
//!              LAG_TOLERANCE entries of the commit (replicating, not probing)
//!           -> propose voters - F + T: a joint configuration, which the Raft core leaves
//!              on its own once committed (a removed leader steps down then)
//!           -> the final configuration applied here -> answer ReplicasChanged
//!  T:       messages for a group it does not hold -> adopted after two election
//!           timeouts as an empty replica (`adopt_orphans`) -> installs the snapshot
//!  F:       applies a configuration without itself (the leader that commits the change
//!           tells the removed members, see the Raft core's `commit_to`) -> the replica,
//!           its snapshot file and its log go; first its vote floor (the last entry it
//!           held, `*.floor`) is made durable, which every later replica of the group here
//!           starts with (`Restored::vote_floor`: no vote for a log behind it). The group
//!           is marked removed (`*.gone`), so a restart does not re-create it, and it is
//!           adopted again only by a leader that keeps writing to it (it was added back),
//!           with the old replica's term and vote. A replica never deletes itself on a
//!           guess (silence): a voter that lost its state could break a quorum.
//! ```
//!
//! Every applied membership entry bumps the range's epoch, so a plan made before it is
//! refused; the descriptor's replica roles mirror the group's configuration
//! (`Joining`/`Leaving` while it is joint): [`conf_of`] and [`replicas_of`] convert.

use super::ranges::LAG_TOLERANCE;
use super::*;
use crate::raft::{ConfChange, ProgressState};

/// The configuration a descriptor describes.
pub(crate) fn conf_of(d: &RangeDescriptor) -> ConfState {
    use msg::ReplicaRole::{Joining, Learner, Leaving, Voter};
    let pick = |keep: &dyn Fn(msg::ReplicaRole) -> bool| -> Vec<NodeId> {
        let mut v: Vec<NodeId> = d
            .replicas
            .iter()
            .filter(|x| keep(x.role))
            .map(|x| NodeId(x.node.0))
            .collect();
        v.sort_unstable();
        v
    };
    let joint = d
        .replicas
        .iter()
        .any(|x| matches!(x.role, Joining | Leaving));
    ConfState {
        voters: pick(&|r| matches!(r, Voter | Joining)),
        voters_outgoing: if joint {
            pick(&|r| matches!(r, Voter | Leaving))
        } else {
            Vec::new()
        },
        learners: pick(&|r| r == Learner),
    }
}

/// The replicas of a configuration, in node order.
pub(crate) fn replicas_of(conf: &ConfState) -> Vec<msg::ReplicaDescriptor> {
    conf.members()
        .into_iter()
        .map(|n| {
            let incoming = conf.voters.binary_search(&n).is_ok();
            let outgoing = conf.voters_outgoing.binary_search(&n).is_ok();
            let role = if conf.is_learner(n) {
                msg::ReplicaRole::Learner
            } else if !conf.is_joint() || (incoming && outgoing) {
                msg::ReplicaRole::Voter
            } else if incoming {
                msg::ReplicaRole::Joining
            } else {
                msg::ReplicaRole::Leaving
            };
            msg::ReplicaDescriptor {
                node: msg::NodeId(n.0),
                role,
            }
        })
        .collect()
}

/// Where a replica change stands.
#[derive(Debug, Clone)]
pub(super) enum ReplicaStage {
    /// The entry adding the learner, to apply.
    Learner { index: LogIndex },
    /// The learner catching up.
    CatchUp,
    /// The voter change proposed: waiting for `target` to be in force here.
    Voters { target: ConfState },
}

impl<D: Disk, S: SnapshotStore> Store<D, S> {
    /// Starts a change of range `g`'s replicas (led here): `add` joins as a voter (through
    /// a learner), `remove` leaves. Returns what to wait for.
    pub(super) fn start_replica_change(
        &mut self,
        g: msg::GroupId,
        expected_epoch: msg::RangeEpoch,
        add: Option<NodeId>,
        remove: Option<NodeId>,
    ) -> Result<AdminWait, RequestError> {
        let (d, conf, busy) = {
            let r = &self.groups[&g];
            let d = r.range.descriptor().clone();
            let conf = conf_of(&d);
            // A frozen right neighbour allows only changes towards its own replicas.
            let busy = conf.is_joint()
                || r.range.frozen_at().is_some()
                || Self::change_in_flight(r)
                || self.moves_away_from_merge(&d, add, remove);
            (d, conf, busy)
        };
        if d.epoch != expected_epoch {
            return Err(RequestError::RangeMoved { descriptor: d });
        }
        if busy {
            return Err(RequestError::ChangeInProgress { range: d.id });
        }
        let refuse = |reason: String| Err(RequestError::Refused { reason });
        if add.is_none() && remove.is_none() {
            return refuse("the change names no node".into());
        }
        if add.is_some() && add == remove {
            return refuse(format!(
                "node {} cannot both gain and lose a replica of range {}",
                add.map_or(0, |n| n.0),
                d.id
            ));
        }
        if let Some(f) = remove {
            if !conf.contains(f) {
                return refuse(format!("node {f} holds no replica of range {}", d.id));
            }
            if add.is_none() && conf.is_voter(f) && conf.voters.len() <= 1 {
                return refuse(format!(
                    "node {f} holds the only voter of range {}: add a replica first",
                    d.id
                ));
            }
        }
        if let Some(t) = add {
            if conf.is_voter(t) {
                return refuse(format!("node {t} already holds a voter of range {}", d.id));
            }
            if !conf.is_learner(t) {
                // The newcomer must be caught up by a snapshot: the log may not reach back
                // to the range's birth (an empty replica would replay it onto nothing).
                let saved = self.save_now(g).map_err(|e| {
                    warn!(group = g.0, error = %e, "snapshot for a new replica failed");
                    RequestError::Refused {
                        reason: format!(
                            "range {} could not write the snapshot for node {t}: {e}",
                            d.id
                        ),
                    }
                })?;
                let compacted = self
                    .groups
                    .get(&g)
                    .is_some_and(|r| r.raft.first_index() > LogIndex(1));
                if !saved || !compacted {
                    // Entries handed to the state machine but not applied yet, or not yet
                    // durable: a moment later the snapshot can be taken.
                    return Err(RequestError::Unavailable {
                        reason: msg::UnavailableReason::CatchingUp,
                    });
                }
                let mut target = conf.clone();
                target.learners.push(t);
                target.learners.sort_unstable();
                let index = self.propose_conf(g, &target)?;
                info!(
                    range = d.id.0,
                    node = t.0,
                    index = index.0,
                    "learner proposed"
                );
                return Ok(AdminWait::Replicas {
                    group: g,
                    add,
                    remove,
                    stage: ReplicaStage::Learner { index },
                });
            }
            return Ok(AdminWait::Replicas {
                group: g,
                add,
                remove,
                stage: ReplicaStage::CatchUp,
            });
        }
        let target = Self::final_conf(&conf, None, remove);
        self.propose_conf(g, &target)?;
        Ok(AdminWait::Replicas {
            group: g,
            add,
            remove,
            stage: ReplicaStage::Voters { target },
        })
    }

    /// `conf` with `add` a voter (no longer a learner) and `remove` gone.
    fn final_conf(conf: &ConfState, add: Option<NodeId>, remove: Option<NodeId>) -> ConfState {
        let mut voters: Vec<NodeId> = conf
            .voters
            .iter()
            .copied()
            .filter(|&v| Some(v) != remove)
            .collect();
        voters.extend(add);
        let mut target = ConfState::with_voters(voters);
        target.learners = conf
            .learners
            .iter()
            .copied()
            .filter(|&l| Some(l) != add && Some(l) != remove)
            .collect();
        target
    }

    fn propose_conf(
        &mut self,
        g: msg::GroupId,
        target: &ConfState,
    ) -> Result<LogIndex, RequestError> {
        let Some(r) = self.groups.get_mut(&g) else {
            return Err(RequestError::Refused {
                reason: format!("group {} is gone", g.0),
            });
        };
        if r.raft.is_quiesced() {
            r.raft.wake();
        }
        r.last_activity = self.ticks;
        let id = r.range.descriptor().id;
        let in_flight = Self::change_in_flight(r);
        r.raft.propose_conf_change(target).map_err(|e| match e {
            // A real change in the log, or only a new leader's guard until an entry of its
            // term commits (then retrying in a moment succeeds).
            raft::ProposeError::ConfChangePending { .. } if in_flight => {
                RequestError::ChangeInProgress { range: id }
            }
            raft::ProposeError::ConfChangePending { .. }
            | raft::ProposeError::ProposalDropped { .. } => RequestError::Unavailable {
                reason: msg::UnavailableReason::NoLeader,
            },
            raft::ProposeError::NotLeader { .. } => RequestError::NotLeader {
                range: id,
                leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
            },
            e => RequestError::Refused {
                reason: format!("range {id}: membership change refused: {e}"),
            },
        })
    }

    /// Moves the replica change waiting at `pending_admin[i]` along; `Some` answers it.
    pub(super) fn advance_replica_change(
        &mut self,
        i: usize,
    ) -> Option<Result<AdminReply, RequestError>> {
        let AdminWait::Replicas {
            group,
            add,
            remove,
            stage,
        } = self.pending_admin[i].wait.clone()
        else {
            return None;
        };
        let now = self.ticks;
        let Some(r) = self.groups.get(&group) else {
            return Some(Err(RequestError::Refused {
                reason: "the range left this node during the change: list the ranges and \
                         retry"
                    .into(),
            }));
        };
        let d = r.range.descriptor().clone();
        let conf = conf_of(&d);
        let not_leader = || {
            Some(Err(RequestError::NotLeader {
                range: d.id,
                leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
            }))
        };
        if !matches!(stage, ReplicaStage::Voters { .. })
            && (self.moves_away_from_merge(&d, add, remove) || r.range.frozen_at().is_some())
        {
            // The right neighbour was frozen for a merge into this range after the change
            // started (its freeze reached this node late), or this range itself was: a
            // frozen range's replicas must not change before its merge (every replica of
            // the left range absorbs it from its own copy). The merge goes first; a learner
            // already added stays (both ranges had it when the merge was checked).
            return Some(Err(RequestError::ChangeInProgress { range: d.id }));
        }
        match stage {
            ReplicaStage::Learner { index } => {
                if r.range.applied_index() < index.0 {
                    return if r.raft.role() == Role::Leader {
                        None
                    } else {
                        not_leader()
                    };
                }
                let t = add?;
                if !conf.is_learner(t) {
                    return Some(Err(RequestError::Refused {
                        reason: format!(
                            "the learner on node {t} was not added (leadership changed): \
                             list the range and retry"
                        ),
                    }));
                }
                let p = &mut self.pending_admin[i];
                p.wait = AdminWait::Replicas {
                    group,
                    add,
                    remove,
                    stage: ReplicaStage::CatchUp,
                };
                p.at_tick = now;
                None
            }
            ReplicaStage::CatchUp => {
                if r.raft.role() != Role::Leader {
                    return not_leader();
                }
                // A freeze (or another change) in the log and not yet applied: the voter
                // change waits to see it, so that it never lands after a freeze.
                if Self::change_in_flight(r) {
                    return None;
                }
                let t = add?;
                let caught_up = r.raft.progress(t).is_some_and(|p| {
                    p.state == ProgressState::Replicate
                        && p.matched.0 + LAG_TOLERANCE >= r.raft.commit().0
                });
                if !caught_up {
                    return None;
                }
                let target = Self::final_conf(&conf, add, remove);
                match self.propose_conf(group, &target) {
                    Ok(index) => {
                        info!(
                            range = d.id.0,
                            add = t.0,
                            remove = remove.map_or(0, |n| n.0),
                            index = index.0,
                            "voter change proposed"
                        );
                        let p = &mut self.pending_admin[i];
                        p.wait = AdminWait::Replicas {
                            group,
                            add,
                            remove,
                            stage: ReplicaStage::Voters { target },
                        };
                        p.at_tick = now;
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }
            ReplicaStage::Voters { target } => {
                (conf == target).then_some(Ok(AdminReply::ReplicasChanged { descriptor: d }))
            }
        }
    }

    /// The timeout answer of a replica change at `stage`.
    pub(super) fn replica_change_timeout(
        stage: &ReplicaStage,
        add: Option<NodeId>,
    ) -> RequestError {
        match stage {
            ReplicaStage::CatchUp => RequestError::Refused {
                reason: format!(
                    "the replica on node {} did not catch up in time; it stays a learner: \
                     retry the move to finish it, or remove it",
                    add.map_or(0, |n| n.0)
                ),
            },
            _ => RequestError::Ambiguous {
                reason: AmbiguousReason::Timeout,
            },
        }
    }

    /// Applies a membership entry to `g`'s range: the descriptor's replicas follow the
    /// configuration and its epoch moves on.
    pub(super) fn apply_conf_change(
        &mut self,
        g: msg::GroupId,
        e: &raft::Entry,
    ) -> Result<(), StoreError> {
        let me = self.cfg.node;
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        let change = ConfChange::decode(&e.data).map_err(|err| StoreError::Raft {
            group: g.0,
            reason: format!(
                "membership entry {} does not decode ({err}): the log is damaged",
                e.index.0
            ),
        })?;
        let mut d = r.range.descriptor().clone();
        let next = change
            .apply(&conf_of(&d))
            .map_err(|reason| StoreError::Raft {
                group: g.0,
                reason: format!(
                    "membership entry {} does not apply to range {} ({reason})",
                    e.index.0, d.id
                ),
            })?;
        d.replicas = replicas_of(&next);
        d.epoch = msg::RangeEpoch(d.epoch.0 + 1);
        r.range.set_descriptor(d.clone());
        r.range.skip_to(e.index.0);
        info!(
            range = d.id.0,
            group = g.0,
            index = e.index.0,
            epoch = d.epoch.0,
            replicas = ?d.replicas,
            "membership applied"
        );
        self.dir
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(&d);
        for n in next.members() {
            if n != me && !self.peers.contains(&n) {
                self.peers.push(n);
                self.peers.sort_unstable();
            }
        }
        let incoming = next.voters.contains(&me) || next.is_learner(me);
        if !incoming && !self.leaving.contains(&g) {
            self.leaving.push(g);
        }
        Ok(())
    }

    /// Removes the replicas that left their group: those whose applied configuration no
    /// longer has them (committed, so no quorum needs them any more). Run every turn; cheap
    /// while no replica is leaving.
    pub(super) fn collect_removed(&mut self) -> Result<(), StoreError> {
        if self.leaving.is_empty() {
            return Ok(());
        }
        let me = msg::NodeId(self.cfg.node.0);
        let mut gone = Vec::new();
        self.leaving.retain(|g| {
            let Some(r) = self.groups.get(g) else {
                return false;
            };
            // Committed entries wait to be applied: one may add this node back (a leader
            // replicates to a member it re-added only once that entry committed, so the
            // replica holds it with its commit). Deleting the copy then would drop entries
            // it acknowledged, and the leader (whose match index never goes back) would
            // probe the new copy past its end forever (found by the simulator).
            if r.raft.commit().0 > r.range.applied_index() {
                return true;
            }
            match r.range.descriptor().replica(me).map(|x| x.role) {
                None => {
                    gone.push(*g);
                    false
                }
                // Still an outgoing voter: the joint configuration may need its vote.
                Some(msg::ReplicaRole::Leaving) => true,
                // Added back (or still joining): stays.
                Some(_) => false,
            }
        });
        for g in gone {
            self.remove_replica(g)?;
        }
        Ok(())
    }

    /// A campaign for `g` from `from`: when this replica's applied configuration (committed,
    /// not joint) no longer has `from`, it is told it was removed, and its vote request is
    /// not stepped (it could only disturb). Returns whether it was told.
    pub(super) fn tell_removed(&mut self, g: msg::GroupId, from: NodeId) -> bool {
        let Some(r) = self.groups.get(&g) else {
            return false;
        };
        if r.awaiting_snapshot {
            return false;
        }
        let conf = conf_of(r.range.descriptor());
        if conf.is_joint() || conf.contains(from) || conf.voters.is_empty() {
            return false;
        }
        let applied = r.range.applied_index();
        let term = msg::Term(r.raft.term().0);
        self.batch_for(from).messages.push(msg::RaftMessage {
            group: g,
            term,
            body: msg::RaftBody::Removed {
                applied: msg::LogIndex(applied),
            },
        });
        debug!(group = g.0, to = from.0, applied, "told a removed replica");
        true
    }

    /// Answers a replica that campaigns in `g`, which this node destroyed: `g` was merged
    /// away (or a newer local range superseded it), so it exists nowhere any more. Without
    /// this, a replica that missed both its removal and the merge (partitioned or down
    /// meanwhile) would campaign forever: no member holds `g` to tell it `Removed`.
    pub(super) fn tell_destroyed(&mut self, g: msg::GroupId, from: NodeId) {
        let (survivor, index) = self
            .merged_into
            .get(&g)
            .copied()
            .unwrap_or((msg::GroupId(0), LogIndex(0)));
        self.batch_for(from).messages.push(msg::RaftMessage {
            group: g,
            term: msg::Term(0),
            body: msg::RaftBody::Destroyed {
                survivor,
                index: msg::LogIndex(index.0),
            },
        });
        debug!(
            group = g.0,
            to = from.0,
            "told a replica its group was destroyed"
        );
    }

    /// A member says `g` was destroyed (merged away). This replica's copy is needed by
    /// nobody, except by a local range that may still receive or replay the merge that
    /// absorbs `g` (one that ends where `g` starts, or one that starts before it with
    /// entries left to apply): the merge needs `g`'s data here (destroying it first would
    /// make the merge skip it and lose its keys). So the copy goes only when there is no
    /// such range; otherwise the merge takes it, or a later campaign asks again.
    pub(super) fn on_destroyed(
        &mut self,
        g: msg::GroupId,
        from: NodeId,
        merge: Option<(msg::GroupId, LogIndex)>,
    ) {
        let Some(r) = self.groups.get(&g) else {
            return;
        };
        if r.awaiting_snapshot || r.raft.role() == Role::Leader {
            return;
        }
        if let Some((survivor, index)) = merge {
            // The survivor's replica here has not applied the merge yet (it may not even
            // know of it: its leader's entries are still on their way): it will absorb
            // this copy then.
            if self
                .groups
                .get(&survivor)
                .is_some_and(|s| s.awaiting_snapshot || s.range.applied_index() < index.0)
            {
                return;
            }
        }
        let start = r.range.descriptor().start.clone();
        let neighbour = self
            .groups
            .values()
            .any(|l| l.group != g && l.range.descriptor().end == start);
        if neighbour || self.left_neighbour_may_absorb(g) {
            return;
        }
        info!(
            group = g.0,
            from = from.0,
            "told by a member that this range was merged away: destroyed"
        );
        self.destroy_replica(g);
    }

    /// A member of `g` says the group's configuration, applied at `applied` there, no longer
    /// has this replica. That configuration is committed, so no quorum will ever need this
    /// replica again, unless it was added back later: then its log holds the entries that
    /// added it back (it campaigns only once it committed them), beyond `applied`. So a
    /// replica whose log ends at or before `applied` (it missed its removal, whatever it
    /// believes its role is) goes.
    pub(super) fn on_removed(&mut self, g: msg::GroupId, from: NodeId, applied: LogIndex) {
        let Some(r) = self.groups.get(&g) else {
            return;
        };
        if r.awaiting_snapshot || r.raft.last_id().index > applied || r.raft.role() == Role::Leader
        {
            return;
        }
        info!(
            group = g.0,
            from = from.0,
            applied = applied.0,
            "told by a member that this replica was removed"
        );
        if let Err(e) = self.remove_replica(g) {
            warn!(group = g.0, error = %e, "removed replica not deleted");
        }
    }

    /// Deletes this node's replica of `g`, which left the group: durably marked removed
    /// first, then its snapshot file and log go. The directory keeps the range, without
    /// this replica.
    fn remove_replica(&mut self, g: msg::GroupId) -> Result<(), StoreError> {
        let Some(r) = self.drop_replica(g) else {
            return Ok(());
        };
        // The floor is durable before the log goes: a replica added back later never votes
        // (or campaigns) behind the log this one held.
        let floor = r
            .raft
            .last_id()
            .max(self.floors.get(&g).copied().unwrap_or_default());
        self.snaps
            .save_floor(g, floor)
            .map_err(|e| StoreError::Snapshot {
                group: g.0,
                location: self.snaps.location(g),
                reason: format!("cannot record the vote floor: {e}"),
            })?;
        self.floors.insert(g, floor);
        answer_lost(&mut self.responses, r.proposals.into_iter());
        let mut d = r.range.descriptor().clone();
        let me = self.cfg.node;
        let conf = conf_of(&d);
        d.replicas = replicas_of(&Self::final_conf(&conf, None, Some(me)));
        self.dir
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(&d);
        let snap_err = |snaps: &S, e: std::io::Error| StoreError::Snapshot {
            group: g.0,
            location: snaps.location(g),
            reason: e.to_string(),
        };
        self.snaps
            .mark_removed(g)
            .map_err(|e| snap_err(&self.snaps, e))?;
        self.snaps.remove(g).map_err(|e| snap_err(&self.snaps, e))?;
        let lsn = self.compact_all(g)?;
        // With nothing to drop (an adopted replica still empty), `lsn` is the WAL's end,
        // perhaps a lazy record that no turn would sync on an idle node: adopting the group
        // again waits for it (found by the simulator: a learner added back never adopted).
        self.sync_wanted |= lsn > self.wal.durable_lsn();
        self.removed.insert(g, (self.ticks, lsn));
        info!(
            range = d.id.0,
            group = g.0,
            "replica removed from its group: its files are deleted"
        );
        Ok(())
    }

    /// What a replica adopted for `g` starts from: no log, but the term and vote of an
    /// earlier replica of `g` here (its votes still bind this node: the WAL keeps the hard
    /// state when the log is dropped) and its vote floor.
    pub(super) fn joining(&self, g: msg::GroupId) -> raft::Restored {
        let mut restored = raft::Restored::joining();
        if let Some(hs) = self.wal.hard_state(quasar_wal::GroupId(g.0)) {
            restored.hard_state = raft::HardState {
                term: Term(hs.term.0),
                vote: (hs.vote != 0).then_some(NodeId(hs.vote)),
                commit: LogIndex(0),
            };
        }
        restored.vote_floor = self.floors.get(&g).copied().unwrap_or_default();
        restored
    }

    /// Whether an orphan message `m` for `g`, which arrived at tick `at`, may adopt it:
    /// not a group merged away here, and a group this node left only on a leader's write
    /// (append, heartbeat, snapshot) that arrived two election timeouts after the removal
    /// (answers and writes still in flight at the removal are stale; a leader that added
    /// this node back keeps writing).
    pub(super) fn may_adopt(&mut self, g: msg::GroupId, m: &Message, at: u64) -> bool {
        if self.destroyed.contains(&g) {
            return false;
        }
        let Some(&(removed_at, dropped_at)) = self.removed.get(&g) else {
            return true;
        };
        if self.wal.durable_lsn() < dropped_at {
            return false;
        }
        let ttl = 2 * u64::from(self.cfg.election_ticks);
        let from_leader = matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        );
        if !from_leader || at <= removed_at + ttl {
            return false;
        }
        if let Err(e) = self.snaps.unmark_removed(g) {
            warn!(group = g.0, error = %e, "cannot clear the removal mark");
            return false;
        }
        info!(
            group = g.0,
            from = m.from.0,
            "a group this node left is adding it back"
        );
        self.removed.remove(&g);
        true
    }
}
