//! The simulated runtime: what `shard::runtime` does for real, done in one thread against
//! simulated parts. One step is one tick of the clock:
//!
//! ```text
//!  1. faults (crash, restart, partition, heal, membership, transfer)    faults.rs
//!  2. clients issue writes and reads                                     workload.rs
//!  3. finish the syncs due now: sync the disk, send `send_after_sync`, advance
//!  4. deliver the messages due now; tick every running node
//!  5. handle every node's Ready: persist (unsynced) -> send `send_now` at once -> apply
//!     committed entries -> serve reads; schedule the sync (0..=sync_ticks_max ticks)
//!  6. run the invariants
//! ```
//!
//! A crash drops the process (core, state machine, pending sync) and keeps only what the
//! disk synced, plus a random prefix of unsynced writes; a restart rebuilds the node from
//! that (`Restored`), exactly like a real restart from the WAL.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Canary, Cluster, Envelope, Scenario};
use crate::raft::NodeId;
use crate::raft::{
    Advanced, ConfState, Config, Entry, EntryKind, HardState, LogId, LogIndex, MessageBody,
    RaftNode, ReadState, Restored, Role, SnapshotMeta, SnapshotStatus, VoteKind,
};
use crate::sim::clock::{SimClock, SimTime};
use crate::sim::event_log::EventLog;
use crate::sim::harness::SimSummary;
use crate::sim::invariants::{digest, EntryView, NodeView, Violation};
use crate::sim::net::SimNet;
use crate::sim::rng::SimRng;
use crate::sim::state_machine::KvStateMachine;
use crate::sim::storage::{DiskOp, SimDisk};

/// What a snapshot on disk holds: its metadata and the state machine bytes.
pub type StoredSnapshot = (SnapshotMeta, Bytes);

/// A node's simulated disk.
pub type NodeDisk = SimDisk<HardState, Entry, StoredSnapshot>;

/// The work of a `Ready` waiting for its sync.
struct PendingSync {
    due: SimTime,
    after_sync: Vec<crate::raft::Message>,
    advanced: Advanced,
    compact: Option<LogIndex>,
}

/// One node: a running process (or none, while crashed) and its disk.
pub struct SimNode {
    pub(crate) id: NodeId,
    /// The running core; `None` while crashed or never started.
    pub(crate) core: Option<RaftNode>,
    pub(crate) disk: NodeDisk,
    pub(crate) sm: KvStateMachine,
    /// Bumped at every start.
    pub(crate) incarnation: u64,
    pending_sync: Option<PendingSync>,
    /// Read states waiting for the state machine to reach their index.
    pub(crate) pending_reads: Vec<ReadState>,
    /// Snapshot bytes received, waiting for the core to ask for their installation.
    incoming_snapshots: BTreeMap<LogId, Bytes>,
    /// Whether the node was ever started (a spare is not until a membership change).
    pub(crate) started: bool,
    /// The last few snapshots this node took or installed, for sending to followers.
    snapshots: BTreeMap<LogId, Bytes>,
}

/// The digest view of an entry, shared by every check.
#[must_use]
pub fn entry_view(e: &Entry) -> EntryView {
    let tag = match e.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    };
    EntryView {
        term: e.term.0,
        digest: digest(tag, &e.data),
    }
}

/// Keeps `data` as the snapshot at `last`, and only the newest few.
fn remember_snapshot(snapshots: &mut BTreeMap<LogId, Bytes>, last: LogId, data: Bytes) {
    snapshots.insert(last, data);
    while snapshots.len() > 4 {
        snapshots.pop_first();
    }
}

/// One short line for a message (entries as a range, not their bytes).
fn short(m: &crate::raft::Message) -> String {
    let head = format!("{}->{} {} t{}", m.from.0, m.to.0, m.kind_name(), m.term.0);
    match &m.body {
        MessageBody::Append {
            prev,
            entries,
            commit,
        } => match (entries.first(), entries.last()) {
            (Some(a), Some(b)) => {
                format!(
                    "{head} prev={prev} commit={} entries={}..={}",
                    commit.0,
                    a.id(),
                    b.id()
                )
            }
            _ => format!("{head} prev={prev} commit={}", commit.0),
        },
        _ => m.to_string(),
    }
}

impl SimNode {
    fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            core: None,
            disk: NodeDisk::new(),
            sm: KvStateMachine::new(),
            incarnation: 0,
            pending_sync: None,
            pending_reads: Vec::new(),
            incoming_snapshots: BTreeMap::new(),
            started: false,
            snapshots: BTreeMap::new(),
        }
    }

    /// Whether the process runs.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.core.is_some()
    }

    fn view(&self) -> NodeView {
        match &self.core {
            Some(core) => {
                let first = core.first_index().0;
                let last = core.last_id().index.0;
                let log = (first..=last)
                    .map_while(|i| core.entry(LogIndex(i)).map(entry_view))
                    .collect();
                NodeView {
                    id: self.id.0,
                    alive: true,
                    incarnation: self.incarnation,
                    is_leader: core.role() == Role::Leader,
                    term: core.term().0,
                    commit: core.commit().0,
                    applied: self.sm.applied_index(),
                    first_index: first,
                    log,
                }
            }
            None => {
                let d = self.disk.synced();
                NodeView {
                    id: self.id.0,
                    alive: false,
                    incarnation: self.incarnation,
                    is_leader: false,
                    term: d.hard_state.map_or(0, |h| h.term.0),
                    commit: 0,
                    applied: 0,
                    first_index: d.first_index,
                    log: d.entries.iter().map(entry_view).collect(),
                }
            }
        }
    }
}

impl Cluster {
    /// A cluster for `scenario`, with the initial voters started and nothing else done.
    #[must_use]
    pub fn new(seed: u64, scenario: Scenario) -> Cluster {
        let mut nodes = BTreeMap::new();
        for id in 1..=scenario.voters + scenario.spares {
            nodes.insert(NodeId(id), SimNode::new(NodeId(id)));
        }
        let mut net = SimNet::new(scenario.net.clone(), SimRng::derive(seed, 1));
        net.notify_drops(|e: &Envelope| matches!(e.message.body, MessageBody::Snapshot { .. }));
        let workload = super::workload::Workload::new(&scenario.workload);
        let mut cluster = Cluster {
            seed,
            clock: SimClock::new(),
            net,
            nodes,
            log: EventLog::new(),
            checks: Default::default(),
            history: Default::default(),
            rng: SimRng::derive(seed, 2),
            workload,
            faults: Default::default(),
            positions: BTreeMap::new(),
            summary: SimSummary::default(),
            violation: None,
            faults_on: true,
            scenario,
        };
        for id in 1..=cluster.scenario.voters {
            cluster.write_bootstrap(NodeId(id));
            cluster.start(NodeId(id));
        }
        cluster.log.record(
            cluster.clock.now(),
            format!("seed {seed}: {:?}", cluster.scenario),
        );
        cluster
    }

    /// Writes the group's bootstrap state (the initial voters, at index 0) to `id`'s disk.
    pub(crate) fn write_bootstrap(&mut self, id: NodeId) {
        let conf = ConfState::with_voters((1..=self.scenario.voters).map(NodeId));
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        let meta = SnapshotMeta {
            last: LogId::default(),
            conf_state: conf,
        };
        node.disk.write(DiskOp::InstallSnapshot {
            index: 0,
            snapshot: (meta, KvStateMachine::new().snapshot()),
        });
        node.disk.sync();
    }

    fn raft_config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_timeout_ticks = self.scenario.election_timeout_ticks;
        c.heartbeat_interval_ticks = self.scenario.heartbeat_interval_ticks;
        c.lease_ticks = self.scenario.lease_ticks;
        c.pre_vote = self.scenario.pre_vote;
        c.check_quorum = self.scenario.check_quorum;
        c.snapshot_after_entries = self.scenario.snapshot_after_entries;
        c.max_entries_per_msg = self.scenario.max_entries_per_msg;
        c.max_inflight_msgs = self.scenario.max_inflight_msgs;
        c
    }

    /// Starts (or restarts) `id` from what its disk synced.
    pub(crate) fn start(&mut self, id: NodeId) {
        let config = self.raft_config(id);
        let now = self.clock.now();
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        assert!(node.core.is_none(), "{id} started twice");
        let durable = node.disk.synced().clone();
        let (restored, sm) = match &durable.snapshot {
            Some((index, (meta, data))) => {
                let sm = KvStateMachine::restore(data);
                assert_eq!(
                    sm.applied_index(),
                    *index,
                    "{id}: snapshot bytes and metadata differ"
                );
                let restored = Restored {
                    hard_state: durable.hard_state.unwrap_or_default(),
                    snapshot: meta.clone(),
                    entries: durable.entries.clone(),
                    applied: LogIndex(*index),
                    vote_floor: LogId::default(),
                };
                (restored, sm)
            }
            None => {
                let mut restored = Restored::joining();
                restored.hard_state = durable.hard_state.unwrap_or_default();
                restored.entries = durable.entries.clone();
                (restored, KvStateMachine::new())
            }
        };
        node.incarnation += 1;
        let rng_seed = SimRng::derive_seed(self.seed, 1000 + id.0 * 7919 + node.incarnation);
        let core = match RaftNode::new(&config, restored, rng_seed) {
            Ok(core) => core,
            Err(e) => panic!("{id} cannot restart from its synced state: {e}"),
        };
        self.log.record(
            now,
            format!(
                "{id} start #{} term {} last {} commit {}",
                node.incarnation,
                core.term().0,
                core.last_id(),
                core.commit().0
            ),
        );
        node.snapshots.clear();
        if let Some((_, (meta, data))) = &durable.snapshot {
            node.snapshots.insert(meta.last, data.clone());
        }
        node.core = Some(core);
        node.sm = sm;
        node.started = true;
        node.pending_reads.clear();
        node.incoming_snapshots.clear();
    }

    /// Power loss at `id`: the process is gone, and of the unsynced writes only a random
    /// prefix reaches the disk.
    pub(crate) fn crash(&mut self, id: NodeId) {
        let now = self.clock.now();
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        if node.core.is_none() {
            return;
        }
        let unsynced = node.disk.unsynced_len();
        let surviving = self.rng.between(0, unsynced as u64) as usize;
        node.disk.crash(surviving);
        node.core = None;
        node.pending_sync = None;
        node.pending_reads.clear();
        node.incoming_snapshots.clear();
        self.net.drop_node_traffic(id);
        self.workload.on_crash(id);
        self.summary.crashes += 1;
        self.log.record(
            now,
            format!("{id} CRASH ({surviving} of {unsynced} unsynced writes kept)"),
        );
    }

    /// One tick of the whole cluster.
    pub(crate) fn step(&mut self) -> Result<(), Violation> {
        let now = self.clock.advance();
        if self.faults_on {
            self.inject_faults();
        }
        self.issue_client_ops();
        self.finish_due_syncs(now);
        for d in self.net.deliver_due(now) {
            self.deliver(d.from, d.to, d.message);
        }
        for d in self.net.take_dropped() {
            if let Some(sender) = self.nodes.get_mut(&d.from).and_then(|n| n.core.as_mut()) {
                sender.report_snapshot(d.to, SnapshotStatus::Failed);
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(core) = node.core.as_mut() {
                core.tick();
            }
        }
        self.handle_readies(now);
        self.expire_client_ops();
        self.summary.ticks += 1;
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        let views: Vec<NodeView> = self
            .nodes
            .values()
            .filter(|n| n.started)
            .map(SimNode::view)
            .collect();
        self.checks.after_step(&views)?;
        self.observe_roles(&views);
        Ok(())
    }

    fn observe_roles(&mut self, views: &[NodeView]) {
        let leaders: Vec<(u64, u64)> = views
            .iter()
            .filter(|v| v.is_leader)
            .map(|v| (v.id, v.term))
            .collect();
        if leaders != self.faults.last_leaders {
            let now = self.clock.now();
            self.log.record(now, format!("leaders now {leaders:?}"));
            self.faults.last_leaders = leaders;
        }
        for v in views {
            self.summary.commit_index = self.summary.commit_index.max(v.commit);
        }
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, envelope: Envelope) {
        let now = self.clock.now();
        let is_snapshot = matches!(envelope.message.body, MessageBody::Snapshot { .. });
        let alive = self.nodes.get(&to).is_some_and(SimNode::is_alive);
        if !alive {
            if is_snapshot {
                if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.core.as_mut()) {
                    sender.report_snapshot(to, SnapshotStatus::Failed);
                }
            }
            return;
        }
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let is_snapshot = matches!(envelope.message.body, MessageBody::Snapshot { .. });
        if let (MessageBody::Snapshot { meta }, Some(data)) =
            (&envelope.message.body, envelope.snapshot_data)
        {
            node.incoming_snapshots.insert(meta.last, data);
        }
        if !envelope.message.is_heartbeat() {
            self.log
                .record(now, format!("deliver {}", short(&envelope.message)));
        }
        if let Err(e) = core.step(envelope.message) {
            self.log.record(now, format!("{to} step error: {e}"));
        }
        if is_snapshot {
            if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.core.as_mut()) {
                sender.report_snapshot(to, SnapshotStatus::Finished);
            }
            self.summary.snapshots_installed += 1;
        }
    }

    fn send(&mut self, from: NodeId, message: crate::raft::Message) {
        let now = self.clock.now();
        let snapshot_data = match &message.body {
            MessageBody::Snapshot { meta } => {
                // The transport attaches the sender's snapshot with exactly that metadata
                // (kept until superseded, like snapshot files beside the WAL).
                match self.nodes[&from].snapshots.get(&meta.last) {
                    Some(data) => Some(data.clone()),
                    None => panic!(
                        "{from} sends snapshot {} it never took or installed (has {:?})",
                        meta.last,
                        self.nodes[&from].snapshots.keys().collect::<Vec<_>>()
                    ),
                }
            }
            _ => None,
        };
        if let MessageBody::RequestVoteResp {
            kind: VoteKind::Vote,
            granted: true,
        } = message.body
        {
            if let Err(v) = self
                .checks
                .votes
                .on_grant(from.0, message.term.0, message.to.0)
            {
                self.violation.get_or_insert(v);
            }
        }
        let to = message.to;
        if !self.nodes.contains_key(&to) {
            self.log
                .record(now, format!("{from} sends to unknown {to}: dropped"));
            return;
        }
        self.net.send(
            now,
            from,
            to,
            Envelope {
                message,
                snapshot_data,
            },
        );
    }

    fn finish_due_syncs(&mut self, now: SimTime) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.finish_sync_if_due(id, now);
        }
    }

    fn finish_sync_if_due(&mut self, id: NodeId, now: SimTime) -> bool {
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        let due = node.pending_sync.as_ref().is_some_and(|p| p.due <= now);
        if !due || node.core.is_none() {
            return false;
        }
        let Some(pending) = node.pending_sync.take() else {
            return false;
        };
        node.disk.sync();
        let core = node.core.as_mut().expect("checked alive");
        core.advance(pending.advanced);
        if let Some(index) = pending.compact {
            if let Err(e) = core.compact(index) {
                self.log
                    .record(now, format!("{id} compact({}) refused: {e}", index.0));
            }
        }
        for m in pending.after_sync {
            self.send(id, m);
        }
        true
    }

    fn handle_readies(&mut self, now: SimTime) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            // A node with instant syncs may produce several Readies in one tick.
            for _ in 0..8 {
                if !self.handle_one_ready(id, now) {
                    break;
                }
                if !self.finish_sync_if_due(id, now) {
                    break;
                }
            }
            self.serve_reads(id);
        }
    }

    /// Handles `id`'s Ready, if it has one; returns whether it did.
    fn handle_one_ready(&mut self, id: NodeId, now: SimTime) -> bool {
        let canary = self.scenario.canary;
        let sync_delay = self.rng.between(0, self.scenario.sync_ticks_max);
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        if node.pending_sync.is_some() {
            return false;
        }
        let Some(core) = node.core.as_mut() else {
            return false;
        };
        let Some(mut rd) = core.ready() else {
            return false;
        };

        // One Ready is one WAL batch: it reaches the disk whole or not at all.
        let mut batch = Vec::new();
        // 1. An incoming snapshot replaces the state machine and the log.
        let mut snapshot_installed = None;
        if let Some(meta) = rd.snapshot.take() {
            let Some(data) = node.incoming_snapshots.remove(&meta.last) else {
                panic!("{id} must install snapshot {} it never received", meta.last);
            };
            node.sm = KvStateMachine::restore(&data);
            assert_eq!(
                node.sm.applied_index(),
                meta.last.index.0,
                "{id}: snapshot bytes vs meta"
            );
            remember_snapshot(&mut node.snapshots, meta.last, data.clone());
            batch.push(DiskOp::InstallSnapshot {
                index: meta.last.index.0,
                snapshot: (meta.clone(), data),
            });
            self.log
                .record(now, format!("{id} install snapshot {}", meta.last));
            snapshot_installed = Some(meta.last);
        }
        // 2. Persist (not yet durable).
        let append = std::mem::take(&mut rd.append);
        let persisted = append.last().map(Entry::id);
        let early_apply: Vec<Entry> = if canary == Some(Canary::ApplyBeforeCommit) {
            append.clone()
        } else {
            Vec::new()
        };
        if let Some(first) = append.first() {
            batch.push(DiskOp::Append {
                first: first.index.0,
                entries: append,
            });
        }
        let hard_state = rd.hard_state.take();
        if let Some(mut hs) = hard_state {
            if canary == Some(Canary::VoteNotPersisted) {
                hs.vote = None;
            }
            if canary != Some(Canary::HardStateNotPersisted) {
                batch.push(DiskOp::HardState(hs));
            }
        }
        // A snapshot requested at the applied index: take it before applying more.
        let mut compact = None;
        if let Some(meta) = rd.snapshot_request.take() {
            if meta.last.index.0 == node.sm.applied_index() {
                let data = node.sm.snapshot();
                remember_snapshot(&mut node.snapshots, meta.last, data.clone());
                batch.push(DiskOp::Compact {
                    index: meta.last.index.0,
                    snapshot: (meta.clone(), data),
                });
                compact = Some(meta.last.index);
                self.log
                    .record(now, format!("{id} snapshot taken at {}", meta.last));
            }
        }
        node.disk.write_batch(batch);
        // 3. Messages safe before the sync.
        let send_now = std::mem::take(&mut rd.send_now);
        let mut after_sync = std::mem::take(&mut rd.send_after_sync);
        // 4. Apply committed entries, then serve reads.
        let apply = std::mem::take(&mut rd.apply);
        let applied = apply.last().map(|e| e.index);
        let reads = std::mem::take(&mut rd.reads);
        node.pending_reads.extend(reads);
        let mut applied_entries = Vec::with_capacity(apply.len());
        for e in early_apply.iter().chain(&apply) {
            if e.index.0 <= node.sm.applied_index() {
                if canary == Some(Canary::ApplyBeforeCommit) {
                    // Already applied early: the checks see what is applied now.
                    applied_entries.push((e.index.0, entry_view(e), e.data.clone(), e.kind));
                }
                continue;
            }
            node.sm.apply(e.index.0, &e.data);
            applied_entries.push((e.index.0, entry_view(e), e.data.clone(), e.kind));
        }
        let advanced = Advanced {
            hard_state_persisted: hard_state,
            persisted,
            applied,
            snapshot_installed,
            buffers: Some(rd),
        };
        if canary == Some(Canary::SendBeforeSync) {
            for m in std::mem::take(&mut after_sync) {
                self.send(id, m);
            }
        }
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        let term = node.core.as_ref().map_or(0, |c| c.term().0);
        node.pending_sync = Some(PendingSync {
            due: now.after(sync_delay),
            after_sync,
            advanced,
            compact,
        });
        for m in send_now {
            self.send(id, m);
        }
        for (index, view, data, kind) in applied_entries {
            if let Err(v) = self.checks.state_machine.on_apply(id.0, index, view) {
                self.violation.get_or_insert(v);
            }
            if let Err(v) = self.checks.completeness.record(index, view, term) {
                self.violation.get_or_insert(v);
            }
            if kind == EntryKind::ConfChange {
                self.summary.conf_changes += 1;
                self.log
                    .record(now, format!("{id} applied conf change at {index}"));
            }
            self.on_applied(id, index, view, &data);
        }
        true
    }
}
