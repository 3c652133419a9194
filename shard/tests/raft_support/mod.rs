//! An in-process cluster of `RaftNode`s for the Raft tests: durable storage per node (what
//! a crash keeps), a message queue, state machines that record applied entries, and
//! helpers to drive it. Used by the transcripts, the paper tests and the chaos test.

#![allow(dead_code, reason = "each test binary uses a different part")]

use bytes::Bytes;
use quasar_shard::raft::{
    Advanced, ConfState, Config, Entry, EntryKind, HardState, LogId, LogIndex, Message,
    MessageBody, NodeId, RaftNode, ReadState, Ready, Restored, SnapshotMeta, SnapshotStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// What a node has synced: survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// The state machine at `snapshot.last.index` (applied entries' payloads).
    pub snapshot_data: Vec<(LogIndex, Bytes)>,
    pub entries: Vec<Entry>,
    /// The node's vote floor (see `Restored::vote_floor`).
    pub vote_floor: LogId,
}

impl Storage {
    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let keep = first.index.0.saturating_sub(self.snapshot.last.index.0 + 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    fn restored(&self) -> Restored {
        Restored {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
            applied: self.snapshot.last.index,
            vote_floor: self.vote_floor,
        }
    }
}

pub struct Peer {
    pub node: RaftNode,
    pub storage: Storage,
    pub config: Config,
    /// The state machine: every entry applied, in order (normal entries only carry data).
    pub applied: Vec<(LogIndex, Bytes)>,
    pub reads: Vec<ReadState>,
    /// Data attached to a snapshot message received, waiting for `Ready::snapshot`.
    pub incoming_snapshot: Option<Vec<(LogIndex, Bytes)>>,
    pub incarnation: u64,
}

/// Everything in flight and every node.
pub struct Cluster {
    pub peers: BTreeMap<u64, Peer>,
    pub queue: Vec<Message>,
    /// Pairs (from, to) whose messages are dropped.
    pub cut: BTreeSet<(u64, u64)>,
    pub seed: u64,
    /// Every entry ever applied anywhere: index -> (term, data), for state machine safety.
    pub applied_anywhere: BTreeMap<u64, (u64, Bytes)>,
    /// index -> the lowest term of a node that applied it: it was committed in that term
    /// or before, so every leader of a later term must hold it (Leader Completeness).
    pub committed_by_term: BTreeMap<u64, u64>,
    /// Leaders seen per term, for election safety.
    pub leaders: BTreeMap<u64, u64>,
}

pub fn config(id: u64) -> Config {
    Config {
        election_timeout_ticks: 10,
        heartbeat_interval_ticks: 2,
        max_entries_per_msg: 64,
        max_inflight_msgs: 8,
        ..Config::new(NodeId(id))
    }
}

pub fn ids(v: &[u64]) -> Vec<NodeId> {
    v.iter().map(|&i| NodeId(i)).collect()
}

impl Cluster {
    /// Nodes `1..=n`, all voters, with `tweak` applied to each config.
    pub fn new(n: u64, seed: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut c = Cluster {
            peers: BTreeMap::new(),
            queue: Vec::new(),
            cut: BTreeSet::new(),
            seed,
            applied_anywhere: BTreeMap::new(),
            committed_by_term: BTreeMap::new(),
            leaders: BTreeMap::new(),
        };
        let conf = ConfState::with_voters((1..=n).map(NodeId));
        for id in 1..=n {
            let mut cfg = config(id);
            tweak(&mut cfg);
            c.add_peer(id, cfg, Restored::new_group(conf.clone()));
        }
        c
    }

    /// Adds a node (initial member or one joining later).
    pub fn add_peer(&mut self, id: u64, cfg: Config, restored: Restored) {
        let storage = Storage {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot.clone(),
            vote_floor: restored.vote_floor,
            ..Storage::default()
        };
        let node = RaftNode::new(&cfg, restored, self.seed ^ (id * 7919)).expect("valid config");
        self.peers.insert(
            id,
            Peer {
                node,
                storage,
                config: cfg,
                applied: Vec::new(),
                reads: Vec::new(),
                incoming_snapshot: None,
                incarnation: 0,
            },
        );
    }

    pub fn node(&self, id: u64) -> &RaftNode {
        &self.peers[&id].node
    }

    pub fn node_mut(&mut self, id: u64) -> &mut RaftNode {
        &mut self.peers.get_mut(&id).expect("no such node").node
    }

    /// Runs one Ready of node `id` (persist, sync, send, apply, advance). Returns a
    /// description, or `None` if there was nothing to do.
    pub fn process_ready(&mut self, id: u64) -> Option<String> {
        let peer = self.peers.get_mut(&id)?;
        let rd = peer.node.ready()?;
        let text = describe_ready(id, &rd);
        if let Some(meta) = &rd.snapshot {
            let data = peer
                .incoming_snapshot
                .take()
                .expect("snapshot data arrived with it");
            peer.storage.snapshot = meta.clone();
            peer.storage.entries.clear();
            peer.storage.snapshot_data = data.clone();
            peer.applied = data;
        }
        if let Some(hs) = rd.hard_state {
            peer.storage.hard_state = hs;
        }
        peer.storage.append(&rd.append);
        self.queue.extend(rd.send_now.iter().cloned());
        // The sync happens here, then acknowledgements may leave.
        self.queue.extend(rd.send_after_sync.iter().cloned());
        let observer_term = peer.node.term().0;
        for e in &rd.apply {
            let t = self
                .committed_by_term
                .entry(e.index.0)
                .or_insert(observer_term);
            *t = (*t).min(observer_term);
            if e.kind == EntryKind::Normal {
                peer.applied.push((e.index, e.data.clone()));
            }
            match self.applied_anywhere.get(&e.index.0) {
                Some((term, data)) => assert!(
                    *term == e.term.0 && *data == e.data,
                    "state machine safety: index {} applied as {}/{:?} and {}/{:?}",
                    e.index,
                    term,
                    data,
                    e.term,
                    e.data
                ),
                None => {
                    self.applied_anywhere
                        .insert(e.index.0, (e.term.0, e.data.clone()));
                }
            }
        }
        peer.reads.extend(rd.reads.iter().copied());
        let snapshot_request = rd.snapshot_request.clone();
        peer.node.advance(rd.done());
        if let Some(meta) = snapshot_request {
            // The core asked for a snapshot: take it at that applied index and compact.
            if let Err(e) = self.compact(id, meta.last.index) {
                panic!("requested snapshot at {} refused: {e}", meta.last);
            }
        }
        self.record_leader(id);
        Some(text)
    }

    fn record_leader(&mut self, id: u64) {
        let node = &self.peers[&id].node;
        if node.leader() == Some(NodeId(id)) {
            let term = node.term().0;
            let prev = self.leaders.insert(term, id);
            assert!(
                prev.is_none() || prev == Some(id),
                "election safety: term {term} has leaders {prev:?} and {id}"
            );
        }
    }

    /// Delivers one message (dropped if cut or the destination is missing).
    pub fn deliver_one(&mut self, m: Message) -> Option<String> {
        let (from, to) = (m.from.0, m.to.0);
        let is_snapshot = matches!(m.body, MessageBody::Snapshot { .. });
        if self.cut.contains(&(from, to)) || !self.peers.contains_key(&to) {
            if is_snapshot {
                if let Some(p) = self.peers.get_mut(&from) {
                    p.node.report_snapshot(NodeId(to), SnapshotStatus::Failed);
                }
            }
            return None;
        }
        let line = format!("{m}");
        if is_snapshot {
            let data = self.peers[&from].storage.snapshot_data.clone();
            self.peers.get_mut(&to).expect("checked").incoming_snapshot = Some(data);
        }
        let result = self.node_mut(to).step(m);
        if let Err(e) = result {
            return Some(format!("{line} -> error: {e}"));
        }
        if is_snapshot {
            if let Some(p) = self.peers.get_mut(&from) {
                p.node.report_snapshot(NodeId(to), SnapshotStatus::Finished);
            }
        }
        self.record_leader(to);
        Some(line)
    }

    /// Delivers every queued message addressed to one of `to` (all if empty).
    pub fn deliver(&mut self, to: &[u64]) -> Vec<String> {
        let queue = std::mem::take(&mut self.queue);
        let (now, later): (Vec<_>, Vec<_>) = queue
            .into_iter()
            .partition(|m| to.is_empty() || to.contains(&m.to.0));
        self.queue = later;
        now.into_iter()
            .filter_map(|m| self.deliver_one(m))
            .collect()
    }

    /// Processes readies and delivers messages until nothing moves.
    pub fn stabilize(&mut self, out: &mut String) {
        for round in 0..10_000 {
            if round > 9_990 {
                eprintln!("{}\n{out}", self.state());
                out.clear();
            }
            let mut moved = false;
            let ids: Vec<u64> = self.peers.keys().copied().collect();
            for id in ids {
                while let Some(text) = self.process_ready(id) {
                    out.push_str(&text);
                    moved = true;
                }
            }
            for line in self.deliver(&[]) {
                let _ = writeln!(out, "  deliver {line}");
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    pub fn stabilize_quiet(&mut self) {
        let mut sink = String::new();
        self.stabilize(&mut sink);
    }

    pub fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            for p in self.peers.values_mut() {
                p.node.tick();
            }
        }
    }

    /// Drops every message between `id` and the others (both ways).
    pub fn isolate(&mut self, id: u64) {
        let all: Vec<u64> = self.peers.keys().copied().collect();
        for other in all {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crash: everything not synced is lost (the storage was synced at every Ready).
    pub fn crash_restart(&mut self, id: u64) {
        let peer = self.peers.get_mut(&id).expect("no such node");
        peer.incarnation += 1;
        let seed = self.seed ^ (id * 7919) ^ (peer.incarnation << 32);
        peer.node = RaftNode::new(&peer.config, peer.storage.restored(), seed).expect("restart");
        peer.applied = peer.storage.snapshot_data.clone();
        peer.reads.clear();
        peer.incoming_snapshot = None;
        self.queue.retain(|m| m.to.0 != id);
    }

    /// Snapshot the state machine of `id` at its applied index and compact the log.
    pub fn compact(&mut self, id: u64, index: LogIndex) -> Result<(), String> {
        let peer = self.peers.get_mut(&id).expect("no such node");
        let meta = peer.node.snapshot_meta(index).map_err(|e| e.to_string())?;
        peer.node.compact(index).map_err(|e| e.to_string())?;
        peer.storage.snapshot_data = peer
            .applied
            .iter()
            .filter(|(i, _)| *i <= index)
            .cloned()
            .collect();
        let drop = (index.0 - peer.storage.snapshot.last.index.0) as usize;
        peer.storage
            .entries
            .drain(..drop.min(peer.storage.entries.len()));
        peer.storage.snapshot = meta;
        Ok(())
    }

    /// The current leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.peers
            .iter()
            .filter(|(id, p)| p.node.leader() == Some(NodeId(**id)))
            .max_by_key(|(_, p)| p.node.term())
            .map(|(id, _)| *id)
    }

    /// One line per node: role, term, leader, commit, applied, last.
    pub fn state(&self) -> String {
        let mut out = String::new();
        for (id, p) in &self.peers {
            let s = p.node.status();
            let _ = writeln!(
                out,
                "n{id}: {:?} term={} vote={} leader={} commit={} applied={} last={} voters={:?}{}{}",
                s.role,
                s.term.0,
                s.vote.map_or(0, |v| v.0),
                s.leader.map_or(0, |v| v.0),
                s.commit.0,
                s.applied.0,
                s.last,
                s.conf_state.voters.iter().map(|v| v.0).collect::<Vec<_>>(),
                if s.conf_state.voters_outgoing.is_empty() {
                    String::new()
                } else {
                    format!(
                        " outgoing={:?}",
                        s.conf_state.voters_outgoing.iter().map(|v| v.0).collect::<Vec<_>>()
                    )
                },
                if s.conf_state.learners.is_empty() {
                    String::new()
                } else {
                    format!(
                        " learners={:?}",
                        s.conf_state.learners.iter().map(|v| v.0).collect::<Vec<_>>()
                    )
                },
            );
        }
        out
    }

    /// Log Matching (fig. 3.2): entries with the same index and term are identical, and so
    /// are the logs before them.
    pub fn check_log_matching(&self) {
        let peers: Vec<&Peer> = self.peers.values().collect();
        for (i, a) in peers.iter().enumerate() {
            for b in &peers[i + 1..] {
                let (na, nb) = (&a.node, &b.node);
                let hi = na.last_id().index.min(nb.last_id().index);
                let lo = na.first_index().max(nb.first_index());
                let mut idx = hi;
                let mut matched = false;
                while idx >= lo && idx.0 > 0 {
                    let (ea, eb) = (na.entry(idx), nb.entry(idx));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if matched {
                            assert_eq!(ea, eb, "log matching broken at {idx}");
                        } else if ea.term == eb.term {
                            assert_eq!(ea, eb, "same term, different entry at {idx}");
                            matched = true;
                        }
                    }
                    idx = idx.prev();
                }
            }
        }
    }

    /// Leader Completeness: a leader holds every entry applied anywhere.
    pub fn check_leader_completeness(&self) {
        for (id, p) in &self.peers {
            if p.node.leader() != Some(NodeId(*id)) {
                continue;
            }
            for (index, (term, data)) in &self.applied_anywhere {
                let idx = LogIndex(*index);
                if idx < p.node.first_index() || self.committed_by_term[index] >= p.node.term().0 {
                    continue;
                }
                let e = p.node.entry(idx).unwrap_or_else(|| {
                    panic!("leader completeness: leader n{id} lacks committed index {index}")
                });
                assert_eq!(
                    (e.term.0, &e.data),
                    (*term, data),
                    "leader n{id} differs at {index}"
                );
            }
        }
    }
}

fn list(v: &[NodeId]) -> String {
    v.iter()
        .map(|n| n.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A compact text rendering of a Ready, one item per line.
pub fn describe_ready(id: u64, rd: &Ready) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "n{id} ready:");
    if let Some(hs) = rd.hard_state {
        let vote = hs.vote.map_or(0, |v| v.0);
        let _ = writeln!(
            out,
            "  hard_state term={} vote={vote} commit={}",
            hs.term.0, hs.commit.0
        );
    }
    if let Some(meta) = &rd.snapshot {
        let _ = writeln!(
            out,
            "  snapshot last={} voters={} learners={}",
            meta.last,
            list(&meta.conf_state.voters),
            list(&meta.conf_state.learners)
        );
    }
    if !rd.append.is_empty() {
        let ids: Vec<String> = rd.append.iter().map(|e| e.id().to_string()).collect();
        let _ = writeln!(out, "  append {}", ids.join(" "));
    }
    for m in &rd.send_now {
        let _ = writeln!(out, "  send {m}");
    }
    for m in &rd.send_after_sync {
        let _ = writeln!(out, "  send-after-sync {m}");
    }
    if !rd.apply.is_empty() {
        let ids: Vec<String> = rd
            .apply
            .iter()
            .map(|e| match e.kind {
                EntryKind::ConfChange => format!("{}(conf)", e.id()),
                EntryKind::Normal if e.data.is_empty() => e.id().to_string(),
                EntryKind::Normal => format!("{}({})", e.id(), String::from_utf8_lossy(&e.data)),
            })
            .collect();
        let _ = writeln!(out, "  apply {}", ids.join(" "));
    }
    for r in &rd.reads {
        let _ = writeln!(out, "  read request={} index={}", r.request.0, r.index.0);
    }
    if let Some(meta) = &rd.snapshot_request {
        let _ = writeln!(out, "  snapshot-request at {}", meta.last);
    }
    out
}

/// An `Advanced` that reports nothing durable (a runtime that has not synced yet).
pub fn nothing_done() -> Advanced {
    Advanced::default()
}

/// `LogId` shorthand.
pub fn lid(term: u64, index: u64) -> LogId {
    LogId::new(quasar_shard::raft::Term(term), LogIndex(index))
}
