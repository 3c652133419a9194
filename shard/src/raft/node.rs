//! `RaftNode`: one replica of one Raft group as a deterministic value. Inputs are `tick`,
//! `step`, `propose`, `propose_conf_change`, `read_index`, `transfer_leader`, `quiesce`,
//! `wake`, `compact`, `report_snapshot`; output is a `Ready`, acknowledged by `advance`.
//! It owns no clock, socket, file, thread or global RNG (its RNG is seeded by the caller).

use super::confchange::ConfChange;
use super::config::Config;
use super::errors::{ConfigError, ProposeError, SnapshotError, StepError, TransferError};
use super::log::RaftLog;
use super::message::{AppendOutcome, Campaign, Message, MessageBody, VoteKind};
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_only::{PendingRead, ReadOnly};
use super::ready::{Advanced, Ready, Restored};
use super::types::{
    ConfState, Entry, EntryKind, HardState, LogId, LogIndex, NodeId, ReadRequestId, ReadState,
    Role, SnapshotMeta, Status, Term,
};
use bytes::Bytes;
use std::collections::VecDeque;
use tracing::{debug, info};

/// How a snapshot sent to a follower ended (reported by the runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received it; replication resumes after it.
    Finished,
    /// It was lost; the leader probes again (and sends a snapshot again if needed).
    Failed,
}

/// Where a message goes in the `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Send {
    Now,
    AfterSync,
}

/// One replica of one group. See the module docs and `RAFT_API.md`-style guide in `mod.rs`.
pub struct RaftNode {
    id: NodeId,
    cfg: Config,
    rng: fastrand::Rng,
    term: Term,
    /// Invariant: once `Some` in a term, it never changes within that term.
    vote: Option<NodeId>,
    /// See [`Restored::vote_floor`].
    vote_floor: LogId,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// The membership in force: the snapshot's, changed by every committed conf change.
    conf: ConfState,
    /// Committed conf changes above the snapshot: (index, membership after it).
    conf_history: VecDeque<(LogIndex, ConfState)>,
    /// Leader only: every member, this node included (its `matched` is its durable log).
    progress: Vec<(NodeId, Progress)>,
    /// Candidate / pre-candidate: answers so far.
    votes: Vec<(NodeId, bool)>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Monotonic count of ticks since this value was created (starts at 1: 0 = never).
    ticks: u64,
    /// After a restart, refuse votes until this tick: a lease granted before the crash may
    /// still be in force at the old leader.
    vote_guard_until_tick: u64,
    /// Leader: index of the last conf change proposed (at most one uncommitted at a time).
    pending_conf_index: LogIndex,
    /// Leader: transfer target and ticks since it started.
    transfer: Option<(NodeId, u32)>,
    read_only: ReadOnly,
    heartbeat_seq: u64,
    quiesced: bool,
    /// Leader: a `TimeoutNow` went out this term. Its target may win a forced election
    /// that ignores follower leases, so this leader's lease is void for the rest of the term.
    timeout_now_sent: bool,
    /// Leader: appends or commit updates are waiting to go out (sent in `ready`: batching).
    pending_broadcast: bool,
    /// Leader: commit index last sent to each follower is tracked here for empty appends.
    commit_sent: Vec<(NodeId, LogIndex)>,
    msgs_now: Vec<Message>,
    msgs_after_sync: Vec<Message>,
    reads: Vec<ReadState>,
    last_hard_state: HardState,
    /// `Ready`s handed and not yet advanced (advanced in the order they were handed).
    outstanding: u32,
    /// The last drained `Ready`, kept for its vectors; boxed, so that an idle replica
    /// (which releases it) does not carry its room.
    spare: Option<Box<Ready>>,
    snapshot_requested: LogIndex,
    scratch: Vec<u64>,
    released: Vec<PendingRead>,
}

impl RaftNode {
    /// Builds a node from its configuration and what was persisted (`Restored`); `rng_seed`
    /// drives the randomized election timeouts.
    pub fn new(
        config: &Config,
        restored: Restored,
        rng_seed: u64,
    ) -> Result<RaftNode, ConfigError> {
        config.validate()?;
        let Restored {
            hard_state,
            snapshot,
            entries,
            applied,
            vote_floor,
        } = restored;
        let mut expect = snapshot.last;
        for e in &entries {
            if e.index != expect.index.next() || e.term < expect.term {
                return Err(ConfigError::InconsistentRestore {
                    reason: format!("entry {} does not follow {}", e.id(), expect),
                });
            }
            expect = e.id();
        }
        if hard_state.term < expect.term {
            return Err(ConfigError::InconsistentRestore {
                reason: format!(
                    "hard state term {} below last entry {}",
                    hard_state.term, expect
                ),
            });
        }
        let conf = snapshot.conf_state.clone();
        let snap_index = snapshot.last.index;
        let mut log = RaftLog::new(snapshot, entries);
        // An applied entry was committed, even if the commit index was not synced after.
        let commit = hard_state.commit.max(snap_index).max(applied);
        if commit > log.last_index() {
            return Err(ConfigError::InconsistentRestore {
                reason: format!("commit {commit} beyond last index {}", log.last_index()),
            });
        }
        let applied = applied.max(snap_index).min(commit);
        log.applied = applied;
        log.apply_handed = applied;
        let mut node = RaftNode {
            id: config.id,
            cfg: config.clone(),
            rng: fastrand::Rng::with_seed(rng_seed),
            term: hard_state.term,
            vote: hard_state.vote,
            vote_floor,
            role: Role::Follower,
            leader: None,
            log,
            conf,
            conf_history: VecDeque::new(),
            progress: Vec::new(),
            votes: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            ticks: 1,
            vote_guard_until_tick: 0,
            pending_conf_index: LogIndex(0),
            transfer: None,
            read_only: ReadOnly::default(),
            heartbeat_seq: 0,
            quiesced: false,
            timeout_now_sent: false,
            pending_broadcast: false,
            commit_sent: Vec::new(),
            msgs_now: Vec::new(),
            msgs_after_sync: Vec::new(),
            reads: Vec::new(),
            last_hard_state: HardState {
                commit,
                ..hard_state
            },
            outstanding: 0,
            spare: None,
            snapshot_requested: LogIndex(0),
            scratch: Vec::new(),
            released: Vec::new(),
        };
        node.commit_to(commit);
        if hard_state.term > Term(0) && node.cfg.check_quorum {
            node.vote_guard_until_tick = node.ticks + u64::from(node.cfg.election_timeout_ticks);
        }
        node.reset_randomized_timeout();
        debug!(group = node.cfg.group, node = node.id.0, term = node.term.0, commit = commit.0, last = %node.log.last_id(), "raft node started");
        node.check_invariants();
        Ok(node)
    }

    // ----- accessors -----

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit(&self) -> LogIndex {
        self.log.committed
    }
    pub fn applied(&self) -> LogIndex {
        self.log.applied
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }
    pub fn last_id(&self) -> LogId {
        self.log.last_id()
    }
    /// The entry at `index`, if held in memory (not compacted, not beyond the log).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The term at `index` (also for the snapshot's last index).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// The last snapshot taken or installed.
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.log.snapshot
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    /// This node's logical clock: the ticks it counted, and those `clock_skipped` added.
    pub fn clock(&self) -> u64 {
        self.ticks
    }
    /// The node this one voted for in the current term, if any.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }
    /// The leader's view of `peer` (None if not leader or not a member).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress
            .iter()
            .find(|(id, _)| *id == peer)
            .map(|(_, p)| p)
    }
    /// A leader whose followers all hold and know the whole committed log may quiesce.
    pub fn can_quiesce(&self) -> bool {
        self.role == Role::Leader
            && self.transfer.is_none()
            && self.read_only.pending.is_empty()
            && self.log.committed == self.log.last_index()
            && self
                .progress
                .iter()
                .all(|(_, p)| p.matched == self.log.last_index())
    }
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            persisted: self.log.unstable.persisted,
            first_index: self.log.first_index(),
            last: self.log.last_id(),
            conf_state: self.conf.clone(),
            quiesced: self.quiesced,
        }
    }
    /// Does the leader hold a valid lease (§6.4.1)?
    pub fn has_lease(&self) -> bool {
        self.lease_valid()
    }

    // ----- inputs -----

    /// One unit of logical time. A quiesced node ignores ticks.
    pub fn tick(&mut self) {
        if self.quiesced {
            return;
        }
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
        self.check_invariants();
    }

    /// Real time worth `ticks` ticks passed without them (the process was paused, or its
    /// loop stalled, and the runtime does not tick in a burst). Only the lease clock moves:
    /// acknowledgements of heartbeats sent before the gap prove nothing about now, so a
    /// leader that was stopped past its lease serves no read from it until a fresh
    /// heartbeat round; election timers are left alone (no burst of campaigns).
    pub fn clock_skipped(&mut self, ticks: u64) {
        self.ticks += ticks;
    }

    /// Starts an election now (as if the election timer fired), if this node may lead.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.promotable() {
            self.start_campaign(Campaign::Election);
        }
        self.check_invariants();
    }

    /// Takes one message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        if message.to != self.id {
            return Err(StepError::WrongRecipient {
                to: message.to,
                me: self.id,
            });
        }
        if self.quiesced && !message.is_heartbeat() {
            self.wake();
        }
        let result = self.step_inner(message);
        self.check_invariants();
        result
    }

    /// Appends a command (leader only); returns its index. Committed iff it later appears
    /// in `Ready::apply` at that index with this node's term.
    pub fn propose(&mut self, command: Bytes) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        let index = self.append_local(EntryKind::Normal, command);
        self.check_invariants();
        Ok(index)
    }

    /// Proposes the membership `target` (voters and learners; not joint). A voter change
    /// enters a joint configuration; the leader leaves it on its own once committed.
    pub fn propose_conf_change(&mut self, target: &ConfState) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.committed {
            return Err(ProposeError::ConfChangePending {
                pending: self.pending_conf_index,
            });
        }
        let change = ConfChange::towards(&self.conf, target)
            .map_err(|reason| ProposeError::InvalidConfChange { reason })?;
        let index = self.append_local(EntryKind::ConfChange, change.encode());
        self.pending_conf_index = index;
        info!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            index = index.0,
            ?change,
            "proposed conf change"
        );
        Ok(index)
    }

    /// Asks for a linearizable read (§6.4). A `ReadState` with this `request` comes out of a
    /// later `Ready` (or never, if leadership changes: retry after a timeout).
    pub fn read_index(&mut self, request: ReadRequestId) -> Result<(), ProposeError> {
        if self.quiesced {
            self.wake();
        }
        match self.role {
            Role::Leader => {
                self.leader_read(request, self.id);
                self.check_invariants();
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { request }, Send::Now);
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader_hint: None }),
            },
        }
    }

    /// Hands leadership to `target` (§3.10): once it holds the whole log it gets
    /// `TimeoutNow`. Proposals are refused meanwhile; abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.id {
            return Err(TransferError::AlreadyLeader { target });
        }
        if !self.conf.is_voter(target) {
            return Err(TransferError::NotVoter { target });
        }
        let last = self.log.last_index();
        let pr = self
            .progress(target)
            .ok_or(TransferError::NotVoter { target })?;
        if matches!(pr.state, ProgressState::Snapshot { .. }) {
            return Err(TransferError::TargetLagging { target });
        }
        let caught_up = pr.matched == last;
        info!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            target = target.0,
            caught_up,
            "leadership transfer started"
        );
        self.transfer = Some((target, 0));
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.pending_broadcast = true;
        }
        self.check_invariants();
        Ok(())
    }

    /// Stops ticking (no elections, no heartbeats) until `wake` or a non-heartbeat
    /// message. A leader gives up its lease.
    pub fn quiesce(&mut self) {
        if !self.quiesced {
            debug!(
                group = self.cfg.group,
                node = self.id.0,
                term = self.term.0,
                "quiesced"
            );
        }
        self.quiesced = true;
        for (_, pr) in &mut self.progress {
            pr.heartbeat_acked_tick = 0;
        }
    }

    /// Resumes ticking; a leader sends heartbeats at once.
    pub fn wake(&mut self) {
        if !self.quiesced {
            return;
        }
        debug!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            "woken"
        );
        self.quiesced = false;
        // Time passed while the node did not tick: acknowledgements of heartbeats sent
        // before quiescing (and arriving during it) prove nothing about now. The lease
        // comes back with the acknowledgements of the heartbeats sent below.
        for (_, pr) in &mut self.progress {
            pr.heartbeat_acked_tick = 0;
        }
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        if self.role == Role::Leader {
            self.heartbeat_seq += 1;
            self.broadcast_heartbeat();
        }
    }

    /// Metadata for a snapshot of the state machine at `index` (applied, not compacted).
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, SnapshotError> {
        if index > self.log.applied {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        let term = self.log.term(index).ok_or(SnapshotError::Compacted {
            index,
            first: self.log.first_index(),
        })?;
        Ok(SnapshotMeta {
            last: LogId::new(term, index),
            conf_state: self.conf_at(index),
        })
    }

    /// The runtime took a snapshot at `index`: drop the log up to it. Followers behind it
    /// will get that snapshot.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), SnapshotError> {
        if index <= self.log.snapshot.last.index {
            return Ok(());
        }
        if index > self.log.unstable.persisted {
            return Err(SnapshotError::NotPersisted {
                index,
                persisted: self.log.unstable.persisted,
            });
        }
        let meta = self.snapshot_meta(index)?;
        while self.conf_history.front().is_some_and(|(i, _)| *i <= index) {
            self.conf_history.pop_front();
        }
        debug!(
            group = self.cfg.group,
            node = self.id.0,
            index = index.0,
            "log compacted"
        );
        self.log.compact(meta);
        self.check_invariants();
        Ok(())
    }

    /// The runtime's report on a snapshot sent to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, status: SnapshotStatus) {
        if let Some(pr) = self.progress_mut(to) {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                if status == SnapshotStatus::Failed {
                    // Nothing was installed: probe from what is known to match.
                    pr.state = ProgressState::Snapshot {
                        pending: LogIndex(0),
                    };
                }
                // Finished: probe after the snapshot (`become_probe` uses `pending`).
                pr.become_probe();
                self.pending_broadcast = true;
            }
        }
        self.check_invariants();
    }

    // ----- Ready / advance -----

    /// Is there something for the runtime to do?
    pub fn has_ready(&self) -> bool {
        if self.snapshot_blocks_ready() {
            return false;
        }
        self.pending_broadcast
            || !self.msgs_now.is_empty()
            || !self.msgs_after_sync.is_empty()
            || !self.reads.is_empty()
            || self.log.unstable.snapshot.is_some()
            || self.log.unstable.handed < self.log.last_index()
            || self.hard_state() != self.last_hard_state
            || self.next_apply_end() > self.log.apply_handed
    }

    /// The work to do now, or `None`. Several may be outstanding (a runtime that goes on
    /// while a sync runs: see the module docs of `ready`); `advance` them in the order they
    /// were handed. A snapshot travels alone: no `Ready` is handed while one carrying a
    /// snapshot is outstanding, and a snapshot only in a `Ready` handed when none is.
    pub fn ready(&mut self) -> Option<Box<Ready>> {
        if self.snapshot_blocks_ready() {
            return None;
        }
        if self.pending_broadcast && self.role == Role::Leader {
            self.flush_appends();
        }
        self.pending_broadcast = false;
        let mut rd = self.spare.take().unwrap_or_default();
        let hs = self.hard_state();
        if hs != self.last_hard_state {
            rd.hard_state = Some(hs);
            rd.hard_state_commit_only =
                hs.term == self.last_hard_state.term && hs.vote == self.last_hard_state.vote;
            self.last_hard_state = hs;
        }
        if let Some(meta) = self.log.unstable.snapshot.take() {
            self.log.unstable.snapshot_in_flight = Some(meta.last);
            rd.snapshot = Some(meta);
        }
        let last = self.log.last_index();
        if self.log.unstable.handed < last {
            self.log
                .slice_into(self.log.unstable.handed.next(), last, &mut rd.append);
            self.log.unstable.handed = last;
        }
        let apply_end = self.next_apply_end();
        if apply_end > self.log.apply_handed {
            self.log
                .slice_into(self.log.apply_handed.next(), apply_end, &mut rd.apply);
            self.log.apply_handed = apply_end;
        }
        std::mem::swap(&mut rd.send_now, &mut self.msgs_now);
        std::mem::swap(&mut rd.send_after_sync, &mut self.msgs_after_sync);
        std::mem::swap(&mut rd.reads, &mut self.reads);
        rd.snapshot_request = self.maybe_request_snapshot();
        if rd.is_empty() {
            self.spare = Some(rd);
            return None;
        }
        self.outstanding += 1;
        Some(rd)
    }

    /// Whether a snapshot keeps `ready` from handing anything now: one handed and not yet
    /// reported installed, or one received while other `Ready`s are outstanding.
    fn snapshot_blocks_ready(&self) -> bool {
        self.log.unstable.snapshot_in_flight.is_some()
            || (self.outstanding > 0 && self.log.unstable.snapshot.is_some())
    }

    /// Whether a received snapshot waits to be handed in a `Ready`.
    pub fn has_pending_snapshot(&self) -> bool {
        self.log.unstable.snapshot.is_some()
    }

    /// `Ready`s handed and not yet advanced.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Gives back the buffers kept for the next `Ready` (the recycled `Ready`, empty message
    /// queues, empty in-flight rings, the log's spare capacity): for a group going idle
    /// among thousands, which would otherwise each keep what their last burst needed. The
    /// next turn allocates them again.
    pub fn release_buffers(&mut self) {
        if self.outstanding > 0 {
            return;
        }
        self.spare = None;
        if self.msgs_now.is_empty() {
            self.msgs_now = Vec::new();
        }
        if self.msgs_after_sync.is_empty() {
            self.msgs_after_sync = Vec::new();
        }
        if self.reads.is_empty() {
            self.reads = Vec::new();
        }
        // Counted only while campaigning; a follower or leader cleared them when it
        // became one.
        if matches!(self.role, Role::Follower | Role::Leader) {
            self.votes = Vec::new();
        }
        for (_, p) in &mut self.progress {
            p.inflights.shrink();
        }
        self.log.shrink_to_fit();
    }

    /// Reports what the runtime did with the last `Ready` (see `Advanced`).
    /// Each call reports the oldest outstanding `Ready`; one made with none outstanding
    /// only reports persistence learnt later (`persisted`).
    pub fn advance(&mut self, done: Advanced) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Some(id) = done.snapshot_installed {
            if self.log.unstable.snapshot_in_flight == Some(id) {
                self.log.unstable.snapshot_in_flight = None;
                if self.log.snapshot.last == id {
                    self.log.unstable.persisted = self.log.unstable.persisted.max(id.index);
                    self.log.applied = self.log.applied.max(id.index);
                }
            }
        }
        if let Some(p) = done.persisted {
            if p.index <= self.log.unstable.handed && self.log.matches(p) {
                self.log.unstable.persisted = self.log.unstable.persisted.max(p.index);
            }
        }
        if let Some(a) = done.applied {
            assert!(
                a <= self.log.apply_handed,
                "applied {a} beyond handed {}",
                self.log.apply_handed
            );
            self.log.applied = self.log.applied.max(a);
        }
        if let Some(hs) = done.hard_state_persisted {
            if self.role == Role::Candidate && hs.term == self.term && hs.vote == Some(self.id) {
                // Our own vote counts only once it is durable: a restart cannot undo it.
                self.record_vote(self.id, self.self_vote());
            }
        }
        if self.role == Role::Leader {
            let persisted = self.log.unstable.persisted;
            let id = self.id;
            if let Some(pr) = self.progress_mut(id) {
                pr.maybe_update(persisted);
            }
            self.maybe_commit();
        }
        if let Some(mut rd) = done.buffers {
            rd.hard_state = None;
            rd.hard_state_commit_only = false;
            rd.append.clear();
            rd.send_now.clear();
            rd.send_after_sync.clear();
            rd.apply.clear();
            rd.snapshot = None;
            rd.reads.clear();
            rd.snapshot_request = None;
            self.spare = Some(rd);
        }
        self.check_invariants();
    }

    // ----- internals: elections -----

    fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    /// Whether this node's own vote counts for itself: not while its log is behind its vote
    /// floor (see [`Restored::vote_floor`]). It still campaigns (a replica left over from a
    /// removal learns so from the members' answers), but wins only with a majority of
    /// other voters.
    fn self_vote(&self) -> bool {
        self.log.last_id() >= self.vote_floor
    }

    fn reset_randomized_timeout(&mut self) {
        let base = self.cfg.election_timeout_ticks;
        self.randomized_election_timeout = base + self.rng.u32(0..base);
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.start_campaign(Campaign::Election);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                info!(
                    group = self.cfg.group,
                    node = self.id.0,
                    term = self.term.0,
                    "leader lost its quorum (check-quorum): stepping down"
                );
                self.become_follower(self.term, None);
                return;
            }
            for (id, pr) in &mut self.progress {
                if *id != self.id {
                    pr.recent_active = false;
                }
            }
        }
        if let Some((target, elapsed)) = self.transfer.as_mut() {
            *elapsed += 1;
            if *elapsed >= self.cfg.election_timeout_ticks {
                info!(
                    group = self.cfg.group,
                    node = self.id.0,
                    term = self.term.0,
                    target = target.0,
                    "leadership transfer timed out"
                );
                self.transfer = None;
            }
        }
        let retry_after = self.cfg.election_timeout_ticks * 2;
        for (id, pr) in &mut self.progress {
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                pr.snapshot_ticks += 1;
                if pr.snapshot_ticks >= retry_after {
                    debug!(
                        group = self.cfg.group,
                        node = self.id.0,
                        to = id.0,
                        "snapshot unreported: probing again"
                    );
                    pr.state = ProgressState::Snapshot {
                        pending: LogIndex(0),
                    };
                    pr.become_probe();
                    self.pending_broadcast = true;
                }
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.heartbeat_seq += 1;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let progress = &self.progress;
        let active = |n: NodeId| {
            u64::from(n == id || progress.iter().any(|(p, pr)| *p == n && pr.recent_active))
        };
        quorum::joint_value(&self.conf, active, &mut self.scratch) >= 1
    }

    fn start_campaign(&mut self, campaign: Campaign) {
        if self.cfg.pre_vote && campaign == Campaign::Election {
            self.become_pre_candidate();
        } else {
            self.become_candidate(campaign);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.transfer = None;
        self.progress.clear();
        self.read_only.clear();
        debug!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            "became pre-candidate"
        );
        let last = self.log.last_id();
        let term = Term(self.term.0 + 1);
        for to in self.conf.members() {
            if to != self.id && self.conf.is_voter(to) {
                let body = MessageBody::RequestVote {
                    kind: VoteKind::PreVote,
                    last,
                    campaign: Campaign::Election,
                };
                self.msgs_now.push(Message {
                    from: self.id,
                    to,
                    term,
                    body,
                });
            }
        }
        self.record_vote(self.id, self.self_vote());
    }

    fn become_candidate(&mut self, campaign: Campaign) {
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.transfer = None;
        self.progress.clear();
        self.read_only.clear();
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
        debug!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            ?campaign,
            "became candidate"
        );
        let last = self.log.last_id();
        for to in self.conf.members() {
            if to != self.id && self.conf.is_voter(to) {
                let body = MessageBody::RequestVote {
                    kind: VoteKind::Vote,
                    last,
                    campaign,
                };
                self.send(to, body, Send::Now);
            }
        }
        // The self-vote is recorded in `advance`, once the hard state is durable.
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        if self.votes.iter().any(|(id, _)| *id == from) {
            return;
        }
        self.votes.push((from, granted));
        let votes = &self.votes;
        let result = quorum::joint_vote(&self.conf, |id| {
            votes.iter().find(|(v, _)| *v == id).map(|(_, g)| *g)
        });
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.become_candidate(Campaign::Election),
            (VoteResult::Won, Role::Candidate) => self.become_leader(),
            (VoteResult::Lost, Role::PreCandidate | Role::Candidate) => {
                debug!(
                    group = self.cfg.group,
                    node = self.id.0,
                    term = self.term.0,
                    "election lost"
                );
                self.become_follower(self.term, None);
            }
            _ => {}
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term would go back from {} to {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        let changed = self.role != Role::Follower || self.leader != leader;
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.commit_sent.clear();
        self.transfer = None;
        self.read_only.clear();
        self.pending_broadcast = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        if changed {
            debug!(group = self.cfg.group, node = self.id.0, term = self.term.0, leader = ?leader.map(|l| l.0), "became follower");
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.vote,
            Some(self.id),
            "leader of {} without its own vote",
            self.term
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.timeout_now_sent = false;
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.transfer = None;
        self.read_only.clear();
        self.rebuild_progress();
        for (_, pr) in &mut self.progress {
            pr.recent_active = true;
        }
        debug!(group = self.cfg.group, node = self.id.0, term = self.term.0, last = %self.log.last_id(), "became leader");
        // §3.6.2 / §6.4: an entry of the new term lets the leader commit (and serve reads).
        self.append_local(EntryKind::Normal, Bytes::new());
        // Conservatively treat every uncommitted entry as a possible conf change.
        self.pending_conf_index = self.log.last_index();
        if self.conf.is_joint() && !self.uncommitted_conf_change() {
            self.propose_leave_joint();
        }
    }

    fn uncommitted_conf_change(&self) -> bool {
        self.log
            .iter_range(self.log.committed.next(), self.log.last_index())
            .any(|e| e.kind == EntryKind::ConfChange)
    }

    fn propose_leave_joint(&mut self) {
        let index = self.append_local(EntryKind::ConfChange, ConfChange::LeaveJoint.encode());
        self.pending_conf_index = index;
        info!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            index = index.0,
            "proposed leaving the joint configuration"
        );
    }

    fn rebuild_progress(&mut self) {
        let next = self.log.last_index().next();
        let members = self.conf.members();
        self.progress.retain(|(id, _)| members.contains(id));
        for m in members {
            if !self.progress.iter().any(|(id, _)| *id == m) {
                let mut pr = Progress::new(next, self.cfg.max_inflight_msgs);
                pr.recent_active = true;
                self.progress.push((m, pr));
            }
        }
        self.progress.sort_by_key(|(id, _)| *id);
        let persisted = self.log.unstable.persisted;
        let id = self.id;
        if let Some(pr) = self.progress_mut(id) {
            pr.maybe_update(persisted);
            pr.become_replicate();
        }
        self.commit_sent
            .retain(|(id, _)| self.progress.iter().any(|(p, _)| p == id));
    }

    // ----- internals: replication -----

    fn check_can_propose(&mut self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::ProposalDropped {
                reason: "leadership transfer in progress",
            });
        }
        if self.quiesced {
            self.wake();
        }
        Ok(())
    }

    fn append_local(&mut self, kind: EntryKind, data: Bytes) -> LogIndex {
        let index = self.log.last_index().next();
        self.log.append(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        self.pending_broadcast = true;
        index
    }

    fn progress_mut(&mut self, id: NodeId) -> Option<&mut Progress> {
        self.progress
            .iter_mut()
            .find(|(p, _)| *p == id)
            .map(|(_, pr)| pr)
    }

    fn flush_appends(&mut self) {
        for i in 0..self.progress.len() {
            let to = self.progress[i].0;
            if to == self.id {
                continue;
            }
            loop {
                let pr = &self.progress[i].1;
                if pr.is_paused() {
                    break;
                }
                let has_entries = pr.next <= self.log.last_index();
                let commit_sent = self.commit_sent_to(to);
                if !has_entries && pr.state == ProgressState::Replicate {
                    // Only the commit index to tell: a `Commit` up to what the follower
                    // acknowledged, which needs no answer (an empty append would get one).
                    // What it holds unacknowledged learns its commit once acknowledged.
                    let commit = self.log.committed.min(pr.matched);
                    if commit_sent < commit {
                        self.set_commit_sent(to, commit);
                        self.send(to, MessageBody::Commit { commit }, Send::Now);
                    }
                    break;
                }
                let needs_commit =
                    commit_sent < self.log.committed.min(pr.matched.max(pr.next.prev()));
                // A follower in probe whose log may lack entries gets a probe (an empty append
                // at `next`) even when nothing is new: the previous probe may have been lost,
                // and without an answer the leader never learns where the follower stands
                // (found by the simulator: a learner added to an idle range).
                let probe_due =
                    pr.state == ProgressState::Probe && pr.matched < self.log.last_index();
                if !has_entries && !needs_commit && !probe_due {
                    break;
                }
                let sent = self.send_append(i);
                if !has_entries || !sent {
                    break;
                }
            }
        }
    }

    fn set_commit_sent(&mut self, to: NodeId, commit: LogIndex) {
        match self.commit_sent.iter_mut().find(|(id, _)| *id == to) {
            Some((_, c)) => *c = commit,
            None => self.commit_sent.push((to, commit)),
        }
    }

    fn commit_sent_to(&self, to: NodeId) -> LogIndex {
        self.commit_sent
            .iter()
            .find(|(id, _)| *id == to)
            .map_or(LogIndex(0), |(_, c)| *c)
    }

    /// Sends the next append (or the snapshot) to progress `i`; false if an append
    /// could not be built (the loop in `flush_appends` must then stop).
    fn send_append(&mut self, i: usize) -> bool {
        let to = self.progress[i].0;
        let next = self.progress[i].1.next;
        if next <= self.log.snapshot.last.index {
            self.send_snapshot(i);
            return false;
        }
        let prev_index = next.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            return false;
        };
        // One allocation per message, sized up front (no growth while filling).
        let available = (self.log.last_index().0 + 1).saturating_sub(next.0) as usize;
        let mut entries = Vec::with_capacity(available.min(self.cfg.max_entries_per_msg));
        self.log.entries_from(
            next,
            self.cfg.max_entries_per_msg,
            self.cfg.max_bytes_per_msg,
            &mut entries,
        );
        let count = entries.len();
        let last = LogIndex(prev_index.0 + count as u64);
        let commit = self.log.committed;
        self.progress[i].1.sent(last, count);
        self.set_commit_sent(to, commit);
        let body = MessageBody::Append {
            prev: LogId::new(prev_term, prev_index),
            entries,
            commit,
        };
        self.send(to, body, Send::Now);
        true
    }

    fn send_empty_append(&mut self, i: usize) {
        let to = self.progress[i].0;
        let prev_index = self.progress[i].1.next.prev();
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entry before `next` was compacted away: only a snapshot can bring this
            // follower up to date (found by the simulator: seed 2827503250954064918).
            self.send_snapshot(i);
            return;
        };
        let commit = self.log.committed;
        let body = MessageBody::Append {
            prev: LogId::new(prev_term, prev_index),
            entries: Vec::new(),
            commit,
        };
        self.send(to, body, Send::Now);
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, MessageBody::TimeoutNow, Send::Now);
    }

    fn send_snapshot(&mut self, i: usize) {
        let to = self.progress[i].0;
        if matches!(self.progress[i].1.state, ProgressState::Snapshot { .. }) {
            return;
        }
        let pending = self.log.snapshot.last.index;
        self.progress[i].1.become_snapshot(pending);
        info!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            to = to.0,
            index = pending.0,
            "sending snapshot"
        );
        let meta = self.log.snapshot.clone();
        self.send(to, MessageBody::Snapshot { meta }, Send::Now);
    }

    fn broadcast_heartbeat(&mut self) {
        let seq = self.heartbeat_seq;
        let tick = self.ticks;
        for i in 0..self.progress.len() {
            let (to, ref pr) = self.progress[i];
            if to == self.id {
                continue;
            }
            let commit = self.log.committed.min(pr.matched);
            self.send(to, MessageBody::Heartbeat { commit, seq, tick }, Send::Now);
        }
    }

    fn maybe_commit(&mut self) {
        let progress = &self.progress;
        let matched = |id: NodeId| {
            progress
                .iter()
                .find(|(p, _)| *p == id)
                .map_or(0, |(_, pr)| pr.matched.0)
        };
        let index = LogIndex(quorum::joint_value(&self.conf, matched, &mut self.scratch));
        // §3.6.2: only entries of the current term are committed by counting replicas.
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            let first_in_term = self.log.term(self.log.committed) != Some(self.term);
            self.commit_to(index);
            self.pending_broadcast = true;
            if first_in_term {
                let waiting = std::mem::take(&mut self.read_only.waiting_for_commit);
                for (request, from) in waiting {
                    self.leader_read(request, from);
                }
            }
        }
    }

    /// Raises the commit index and applies committed conf changes (they take effect here).
    fn commit_to(&mut self, index: LogIndex) {
        let old = self.log.committed;
        if !self.log.commit_to(index) {
            return;
        }
        let from = old.next();
        let mut changes = Vec::new();
        for e in self.log.iter_range(from, index) {
            if e.kind == EntryKind::ConfChange {
                changes.push((e.index, e.data.clone()));
            }
        }
        if changes.is_empty() {
            return;
        }
        let last_change = changes.last().map_or(index, |(at, _)| *at);
        for (at, data) in changes {
            let change = match ConfChange::decode(&data) {
                Ok(c) => c,
                Err(e) => panic!("committed conf change at {at} is corrupt: {e}"),
            };
            let next = match change.apply(&self.conf) {
                Ok(c) => c,
                Err(reason) => panic!("committed conf change at {at} does not apply: {reason}"),
            };
            info!(
                group = self.cfg.group, node = self.id.0,
                term = self.term.0,
                index = at.0,
                ?change,
                voters = ?next.voters,
                outgoing = ?next.voters_outgoing,
                learners = ?next.learners,
                "membership changed"
            );
            self.conf = next.clone();
            self.conf_history.push_back((at, next));
        }
        // Only once every change committed here is in force (several may commit at once).
        if self.role == Role::Leader {
            // Members this change removed learn that it committed (an empty append at what
            // they hold, carrying the commit up to it): otherwise a removed replica never
            // sees its removal in force and cannot tell it may delete its copy.
            let farewells: Vec<(NodeId, LogIndex)> = self
                .progress
                .iter()
                .filter(|(id, _)| *id != self.id && !self.conf.contains(*id))
                .map(|(id, pr)| (*id, pr.matched))
                .collect();
            self.rebuild_progress();
            for (to, matched) in farewells {
                if matched < last_change {
                    continue;
                }
                if let Some(term) = self.log.term(matched) {
                    let body = MessageBody::Append {
                        prev: LogId::new(term, matched),
                        entries: Vec::new(),
                        commit: self.log.committed.min(matched),
                    };
                    self.send(to, body, Send::Now);
                }
            }
            if self.conf.is_joint() {
                if !self.uncommitted_conf_change() {
                    self.propose_leave_joint();
                }
            } else if !self.conf.is_voter(self.id) {
                info!(
                    group = self.cfg.group,
                    node = self.id.0,
                    term = self.term.0,
                    "leader removed from the configuration: stepping down"
                );
                // Tell the members the commit first, and hand over at once instead of
                // waiting for an election timeout (and, at followers that still honour this
                // leader's lease, longer): to the voter that acknowledged the most, if it
                // holds everything committed. Not only to one holding the whole log: a busy
                // leader has appended entries past the change that nobody acknowledged
                // yet, and waiting for one would leave the group without a leader. Those
                // entries were never committed; a campaign that fails is a plain election.
                self.flush_appends();
                let committed = self.log.committed;
                let heir = self
                    .progress
                    .iter()
                    .filter(|(id, pr)| {
                        *id != self.id && pr.matched >= committed && self.conf.is_voter(*id)
                    })
                    // The first of the most caught up.
                    .min_by_key(|(_, pr)| std::cmp::Reverse(pr.matched))
                    .map(|(id, _)| *id);
                if let Some(heir) = heir {
                    self.send_timeout_now(heir);
                }
                self.become_follower(self.term, None);
            }
        } else if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.promotable() {
            self.become_follower(self.term, None);
        }
    }

    fn conf_at(&self, index: LogIndex) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.log.snapshot.conf_state.clone(), |(_, c)| c.clone())
    }

    fn next_apply_end(&self) -> LogIndex {
        if self.log.unstable.snapshot.is_some() || self.log.unstable.snapshot_in_flight.is_some() {
            return self.log.apply_handed;
        }
        self.log
            .committed
            .min(self.log.unstable.persisted)
            .max(self.log.apply_handed)
    }

    fn maybe_request_snapshot(&mut self) -> Option<SnapshotMeta> {
        let every = self.cfg.snapshot_after_entries;
        let applied = self.log.applied;
        if every == 0
            || applied.0 < self.log.snapshot.last.index.0 + every
            || applied.0 < self.snapshot_requested.0 + every
        {
            return None;
        }
        let meta = self.snapshot_meta(applied).ok()?;
        self.snapshot_requested = applied;
        Some(meta)
    }

    fn send(&mut self, to: NodeId, body: MessageBody, when: Send) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        match when {
            Send::Now => self.msgs_now.push(msg),
            Send::AfterSync => self.msgs_after_sync.push(msg),
        }
    }

    // ----- internals: reads -----

    fn lease_valid(&self) -> bool {
        if self.role != Role::Leader
            || self.cfg.lease_ticks == 0
            || self.transfer.is_some()
            || self.timeout_now_sent
            || self.quiesced
        {
            return false;
        }
        let id = self.id;
        let now = self.ticks;
        let acked = |n: NodeId| {
            if n == id {
                now
            } else {
                self.progress
                    .iter()
                    .find(|(p, _)| *p == n)
                    .map_or(0, |(_, pr)| pr.heartbeat_acked_tick)
            }
        };
        let mut scratch = Vec::new();
        let since = quorum::joint_value(&self.conf, acked, &mut scratch);
        since > 0 && since + u64::from(self.cfg.lease_ticks) > now
    }

    fn leader_read(&mut self, request: ReadRequestId, from: NodeId) {
        if self.log.term(self.log.committed) != Some(self.term) {
            self.read_only.waiting_for_commit.push((request, from));
            return;
        }
        let index = self.log.committed;
        let single = self.conf.voters.len() == 1
            && self.conf.voters_outgoing.len() <= 1
            && self.conf.is_voter(self.id)
            && !self.conf.is_joint();
        if single || self.lease_valid() {
            self.release_read(PendingRead {
                request,
                from,
                index,
                seq: 0,
            });
            return;
        }
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        self.read_only.pending.push_back(PendingRead {
            request,
            from,
            index,
            seq,
        });
        self.broadcast_heartbeat();
    }

    fn release_read(&mut self, r: PendingRead) {
        if r.from == self.id {
            self.reads.push(ReadState {
                request: r.request,
                index: r.index,
            });
        } else {
            self.send(
                r.from,
                MessageBody::ReadIndexResp {
                    request: r.request,
                    index: r.index,
                },
                Send::Now,
            );
        }
    }

    fn release_confirmed_reads(&mut self) {
        if self.read_only.pending.is_empty() {
            return;
        }
        let id = self.id;
        let seq = self.heartbeat_seq;
        let progress = &self.progress;
        let acked = |n: NodeId| {
            if n == id {
                seq
            } else {
                progress
                    .iter()
                    .find(|(p, _)| *p == n)
                    .map_or(0, |(_, pr)| pr.heartbeat_acked_seq)
            }
        };
        let confirmed = quorum::joint_value(&self.conf, acked, &mut self.scratch);
        let mut released = std::mem::take(&mut self.released);
        self.read_only.release(confirmed, &mut released);
        for r in released.drain(..) {
            self.release_read(r);
        }
        self.released = released;
    }

    // ----- internals: messages -----

    fn step_inner(&mut self, m: Message) -> Result<(), StepError> {
        if let MessageBody::Append { prev, entries, .. } = &m.body {
            validate_append(&m, *prev, entries)?;
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote { kind, campaign, .. } => {
                    let forced = *campaign == Campaign::Transfer;
                    let in_lease = self.cfg.check_quorum
                        && self.leader.is_some()
                        && self.election_elapsed < self.cfg.election_timeout_ticks;
                    let guarded = self.ticks < self.vote_guard_until_tick;
                    if !forced && (in_lease || guarded) {
                        debug!(
                            group = self.cfg.group,
                            node = self.id.0,
                            term = self.term.0,
                            from = m.from.0,
                            "ignoring vote request: leader lease"
                        );
                        return Ok(());
                    }
                    if *kind == VoteKind::Vote {
                        self.become_follower(m.term, None);
                    }
                }
                MessageBody::RequestVoteResp {
                    kind: VoteKind::PreVote,
                    granted: true,
                } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Commit { .. }
                | MessageBody::Snapshot { .. } => self.become_follower(m.term, Some(m.from)),
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Commit { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a stale leader about the newer term (it steps down).
                    let body = MessageBody::AppendResp {
                        outcome: AppendOutcome::Accepted { last: LogIndex(0) },
                    };
                    self.send(m.from, body, Send::Now);
                }
                MessageBody::RequestVote {
                    kind: VoteKind::PreVote,
                    ..
                } => {
                    let body = MessageBody::RequestVoteResp {
                        kind: VoteKind::PreVote,
                        granted: false,
                    };
                    self.send(m.from, body, Send::Now);
                }
                _ => {}
            }
            return Ok(());
        }
        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::RequestVote { kind, last, .. } => {
                self.on_request_vote(from, term, kind, last)
            }
            MessageBody::RequestVoteResp { kind, granted } => {
                let expected = match (self.role, kind) {
                    (Role::PreCandidate, VoteKind::PreVote) => {
                        term.0 == self.term.0 + 1 || (!granted && term == self.term)
                    }
                    (Role::Candidate, VoteKind::Vote) => term == self.term,
                    _ => false,
                };
                if expected && self.conf.is_voter(from) {
                    self.record_vote(from, granted);
                }
            }
            MessageBody::Append {
                prev,
                entries,
                commit,
            } => self.on_append(from, prev, entries, commit),
            MessageBody::AppendResp { outcome } => self.on_append_resp(from, outcome),
            MessageBody::Heartbeat { commit, seq, tick } => {
                self.follow(from);
                let commit = commit.min(self.log.last_index());
                self.commit_to(commit.max(self.log.committed));
                self.send(from, MessageBody::HeartbeatResp { seq, tick }, Send::Now);
            }
            MessageBody::HeartbeatResp { seq, tick } => self.on_heartbeat_resp(from, seq, tick),
            MessageBody::Commit { commit } => {
                self.follow(from);
                let commit = commit.min(self.log.last_index());
                self.commit_to(commit.max(self.log.committed));
            }
            MessageBody::Snapshot { meta } => self.on_snapshot(from, meta),
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() {
                    info!(
                        group = self.cfg.group,
                        node = self.id.0,
                        term = self.term.0,
                        from = from.0,
                        "TimeoutNow: campaigning for a leadership transfer"
                    );
                    self.start_campaign(Campaign::Transfer);
                }
            }
            MessageBody::ReadIndex { request } => {
                if self.role == Role::Leader && self.conf.contains(from) {
                    self.leader_read(request, from);
                }
            }
            MessageBody::ReadIndexResp { request, index } => {
                if self.role != Role::Leader {
                    self.reads.push(ReadState { request, index });
                }
            }
        }
        Ok(())
    }

    /// A replica created by `Restored::joining` that has not learned a membership yet.
    fn needs_configuration(&self) -> bool {
        self.log.last_index() == LogIndex(0) && self.conf == ConfState::default()
    }

    /// A message from the leader of our term: follow it.
    fn follow(&mut self, leader: NodeId) {
        assert!(
            !(self.role == Role::Leader && leader != self.id),
            "two leaders in term {}: {} and {leader}",
            self.term,
            self.id
        );
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    fn on_request_vote(&mut self, from: NodeId, term: Term, kind: VoteKind, last: LogId) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (kind == VoteKind::PreVote && term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last) && last >= self.vote_floor;
        debug!(
            group = self.cfg.group,
            node = self.id.0,
            term = self.term.0,
            from = from.0,
            ?kind,
            granted,
            "vote request"
        );
        match (kind, granted) {
            (VoteKind::Vote, true) => {
                self.vote = Some(from);
                self.election_elapsed = 0;
                let body = MessageBody::RequestVoteResp { kind, granted };
                self.send(from, body, Send::AfterSync);
            }
            (VoteKind::PreVote, true) => {
                let body = MessageBody::RequestVoteResp { kind, granted };
                self.msgs_now.push(Message {
                    from: self.id,
                    to: from,
                    term,
                    body,
                });
            }
            (_, false) => {
                self.send(
                    from,
                    MessageBody::RequestVoteResp { kind, granted },
                    Send::Now,
                );
            }
        }
    }

    fn on_append(&mut self, from: NodeId, prev: LogId, mut entries: Vec<Entry>, commit: LogIndex) {
        self.follow(from);
        if self.needs_configuration() {
            // A joining replica knows no membership: it needs a snapshot (possibly the one
            // at index 0 that holds the initial configuration) before any entry.
            let body = MessageBody::AppendResp {
                outcome: AppendOutcome::Rejected {
                    rejected: LogIndex(0),
                    hint: LogId::default(),
                },
            };
            self.send(from, body, Send::Now);
            return;
        }
        let committed = self.log.committed;
        let prev = if prev.index < committed {
            // Already committed here: skip that part (it is identical by Leader Completeness).
            let skip = (committed.0 - prev.index.0).min(entries.len() as u64) as usize;
            let Some(term) = self.log.term(committed) else {
                return;
            };
            entries.drain(..skip);
            LogId::new(term, committed)
        } else {
            prev
        };
        match self.log.maybe_append(prev, entries) {
            Some(last_new) => {
                self.commit_to(commit.min(last_new).max(self.log.committed));
                let body = MessageBody::AppendResp {
                    outcome: AppendOutcome::Accepted { last: last_new },
                };
                self.send(from, body, Send::AfterSync);
            }
            None => {
                let hint = self.log.find_conflict_by_term(prev.index, prev.term);
                debug!(group = self.cfg.group, node = self.id.0, term = self.term.0, %prev, %hint, "append rejected");
                let body = MessageBody::AppendResp {
                    outcome: AppendOutcome::Rejected {
                        rejected: prev.index,
                        hint,
                    },
                };
                self.send(from, body, Send::Now);
            }
        }
    }

    fn on_append_resp(&mut self, from: NodeId, outcome: AppendOutcome) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(i) = self.progress.iter().position(|(id, _)| *id == from) else {
            return;
        };
        self.progress[i].1.recent_active = true;
        match outcome {
            AppendOutcome::Accepted { last: acked } => {
                if acked > last {
                    return;
                }
                let pr = &mut self.progress[i].1;
                let updated = pr.maybe_update(acked);
                match pr.state {
                    ProgressState::Probe if updated || pr.matched == acked => pr.become_replicate(),
                    ProgressState::Snapshot { pending } if pr.matched >= pending => {
                        pr.become_probe();
                        pr.become_replicate();
                    }
                    ProgressState::Replicate => pr.inflights.free_to(acked),
                    _ => {}
                }
                if updated {
                    self.maybe_commit();
                }
                // Committing may have changed the membership (or ended the leadership).
                let Some(i) = self.progress.iter().position(|(id, _)| *id == from) else {
                    return;
                };
                if self.progress[i].1.next <= last || updated {
                    self.pending_broadcast = true;
                }
                if let Some((target, _)) = self.transfer {
                    if target == from && self.progress[i].1.matched == self.log.last_index() {
                        info!(
                            group = self.cfg.group,
                            node = self.id.0,
                            term = self.term.0,
                            target = target.0,
                            "transfer target caught up: sending TimeoutNow"
                        );
                        self.send_timeout_now(target);
                    }
                }
            }
            AppendOutcome::Rejected { rejected, hint } => {
                let probe_last = if hint.term == Term(0) {
                    hint.index
                } else {
                    self.log.find_conflict_by_term(hint.index, hint.term).index
                };
                if rejected == LogIndex(0) {
                    // The follower has no membership yet: it needs a snapshot first.
                    self.send_snapshot(i);
                    return;
                }
                let pr = &mut self.progress[i].1;
                if pr.maybe_decr_to(rejected, probe_last.next()) {
                    debug!(
                        group = self.cfg.group,
                        node = self.id.0,
                        term = self.term.0,
                        to = from.0,
                        next = pr.next.0,
                        "backtracking"
                    );
                    if pr.state == ProgressState::Replicate {
                        let next = pr.next;
                        pr.become_probe();
                        pr.next = next;
                    }
                    self.pending_broadcast = true;
                }
            }
        }
    }

    fn on_heartbeat_resp(&mut self, from: NodeId, seq: u64, tick: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let quiesced = self.quiesced;
        let Some(pr) = self.progress_mut(from) else {
            return;
        };
        pr.recent_active = true;
        pr.heartbeat_acked_seq = pr.heartbeat_acked_seq.max(seq);
        if !quiesced {
            // (A quiesced leader's clock stands still: no lease from it.)
            pr.heartbeat_acked_tick = pr.heartbeat_acked_tick.max(tick);
        }
        let replicate_behind = pr.state == ProgressState::Replicate && pr.matched < last;
        if pr.state == ProgressState::Probe {
            pr.probe_sent = false;
        }
        if pr.matched < last {
            self.pending_broadcast = true;
        }
        if replicate_behind {
            // Appends in flight may have been lost: an empty append at `next` either is
            // acknowledged or rejected, and a rejection falls back to probing.
            if let Some(i) = self.progress.iter().position(|(id, _)| *id == from) {
                self.send_empty_append(i);
            }
        }
        self.release_confirmed_reads();
    }

    fn on_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.follow(from);
        let index = meta.last.index;
        let restore = self.needs_configuration()
            || (index > self.log.committed && !self.log.matches(meta.last));
        let acked = if restore {
            self.restore_snapshot(meta);
            index
        } else if index <= self.log.committed {
            self.log.committed
        } else {
            // We hold the snapshot's last entry: the log before it is the same.
            self.commit_to(index);
            index
        };
        let body = MessageBody::AppendResp {
            outcome: AppendOutcome::Accepted { last: acked },
        };
        self.send(from, body, Send::AfterSync);
    }

    fn restore_snapshot(&mut self, meta: SnapshotMeta) {
        info!(group = self.cfg.group, node = self.id.0, term = self.term.0, snapshot = %meta.last, "restoring from snapshot");
        let index = meta.last.index;
        self.conf = meta.conf_state.clone();
        self.conf_history.clear();
        self.log.restore(meta.clone());
        self.log.apply_handed = index;
        self.log.unstable.snapshot = Some(meta);
    }

    /// Every invariant of this node; panics with context on a violation. Run after every
    /// input in debug and simulation builds.
    pub fn check_invariants(&self) {
        #[cfg(any(debug_assertions, feature = "sim"))]
        self.check_invariants_now();
    }

    #[cfg(any(debug_assertions, feature = "sim"))]
    fn check_invariants_now(&self) {
        let ctx = || format!("node {} term {} role {:?}", self.id, self.term, self.role);
        self.log.check_invariants();
        assert!(
            self.log.last_id().term <= self.term,
            "{}: log term beyond current term",
            ctx()
        );
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "{}", ctx());
                assert_eq!(
                    self.vote,
                    Some(self.id),
                    "{}: leader without self vote",
                    ctx()
                );
                for (id, pr) in &self.progress {
                    assert!(
                        pr.matched < pr.next,
                        "{}: progress of {id}: matched >= next",
                        ctx()
                    );
                    assert!(
                        pr.matched <= self.log.last_index(),
                        "{}: {id} matched beyond log",
                        ctx()
                    );
                }
                if let Some((_, pr)) = self.progress.iter().find(|(id, _)| *id == self.id) {
                    assert!(
                        pr.matched <= self.log.unstable.persisted,
                        "{}: own match not durable",
                        ctx()
                    );
                }
            }
            Role::Candidate => assert_eq!(self.vote, Some(self.id), "{}", ctx()),
            Role::Follower | Role::PreCandidate => {
                assert!(
                    self.progress.is_empty(),
                    "{}: progress outside leadership",
                    ctx()
                )
            }
        }
        for list in [
            &self.conf.voters,
            &self.conf.voters_outgoing,
            &self.conf.learners,
        ] {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "{}: conf lists unsorted",
                ctx()
            );
        }
        assert!(
            self.conf_history
                .iter()
                .all(|(i, _)| *i <= self.log.committed),
            "{}: uncommitted conf change in force",
            ctx()
        );
    }
}

fn validate_append(m: &Message, prev: LogId, entries: &[Entry]) -> Result<(), StepError> {
    let mut expect = prev;
    for e in entries {
        if e.index != expect.index.next() {
            return Err(StepError::Malformed {
                from: m.from,
                reason: "append entries not contiguous",
            });
        }
        if e.term < expect.term || e.term > m.term {
            return Err(StepError::Malformed {
                from: m.from,
                reason: "append entry terms out of order",
            });
        }
        expect = e.id();
    }
    if prev.index == LogIndex(0) && prev.term != Term(0) {
        return Err(StepError::Malformed {
            from: m.from,
            reason: "prev at index 0 with a term",
        });
    }
    Ok(())
}
