//! The whole-node simulator: the real multi-raft [`Store`] of three nodes, unchanged, over
//! the real WAL on a [`MemDisk`], driven from one seed in one thread. Each step delivers
//! due frames, ticks every node and runs each node's turn exactly as `crate::runtime`
//! does (`process`, send the outbox as encoded frames, `begin_sync` + `sync_started`,
//! `on_sync_done` + `finish_synced` or `finish`, send again, answer clients). A sync may
//! stay in flight for a few steps (`slow_sync_rate`), during which the node waits, or goes
//! on with pipelined turns when `pipelined_turns` is on. Simulated clients go through the real client
//! library's retry logic ([`quasar_rpc::client::Call`]); their history is checked for
//! linearizability per key ([`clients::CounterModel`]).
//!
//! Faults (seeded): frame loss, delay, duplication and reordering; one node cut off for a
//! while; crashes between turns and during the WAL sync that lose unsynced WAL bytes
//! (dropped, random sectors, torn) and restart the node from its disk and its (durable)
//! snapshots; failed fsyncs, which stop the node like a crash (it must never answer after
//! one). Scenarios: [`NodeSimConfig::calm`], [`NodeSimConfig::stormy`] (one node down at a
//! time) and [`NodeSimConfig::harsh`] (two down at once: no quorum until one returns). WAL
//! segments are 8 KiB so that runs roll segments and `collect_garbage` deletes and
//! rewrites them.
//!
//! Regressions it found are kept as seeds in `shard/tests/sim_node.rs` (a snapshot saved
//! before its WAL mark was durable; a long snapshot transfer restarted forever).
//!
//! Checks: `Store::check_invariants` after every step; replicas of a group at the same
//! applied index have the same state hash (at any step); after healing, every replica
//! converges; the client history is linearizable. A failure names the seed and the replay
//! command (see `super::harness`). Canaries ([`Canary`]) break one rule on purpose and
//! must be caught.

pub mod clients;
pub mod net;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};

use quasar_rpc::client::AttemptError;
use quasar_rpc::frame::{encode_frame, Decoded, FrameDecoder};
use quasar_rpc::message::{
    self as msg, ClientRequest, ClientResponse, RaftBatch, ReadConsistency, RequestError,
};
use quasar_wal::{Crash, MemDisk, Wal, WalConfig};
use rkyv::util::AlignedVec;

use crate::linearizability::{check, Operation, Verdict};
use crate::raft::{NodeId, Role};
use crate::sim::clock::SimTime;
use crate::sim::event_log::EventLog;
use crate::sim::harness::{SimFailure, SimSummary};
use crate::sim::rng::SimRng;
use crate::store::snapfile::{FinishedSave, MemSnapshots, SnapshotStore};
use crate::store::{Directory, SharedDirectory, Store, StoreConfig, StoreError};
use clients::{outcome, CounterModel, KvOp, KvOut, OpKind, SimClient};
use net::{NetFaults, SimNet};

/// A deliberately broken rule, to prove the checks bite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canary {
    /// Nothing broken.
    None,
    /// Clients record a Put as done the moment they send it.
    AckBeforeAnswer,
    /// Clients read any replica's local state (`Stale`) and call it linearizable.
    StaleReads,
    /// A crashed node comes back with an empty disk and no snapshots (synced data lost).
    Amnesia,
}

/// One scenario of the whole-node simulator.
#[derive(Debug, Clone)]
pub struct NodeSimConfig {
    pub nodes: u64,
    /// Replicas of each range at the start (on nodes `1..=replicas`); the others start
    /// empty and receive replicas by moves.
    pub replicas: u64,
    pub keys: u8,
    pub clients: u64,
    /// Operations the clients start in all.
    pub ops: usize,
    /// Bound on the faulty phase (steps).
    pub max_steps: u64,
    /// Bound on the healing phase (steps).
    pub settle_steps: u64,
    pub net: NetFaults,
    /// Probability per step that a node is cut off (when none is).
    pub partition_rate: f64,
    /// Probability per step that a node crashes (while fewer than `max_down` are down).
    pub crash_rate: f64,
    /// How many nodes may be down at once (2 of 3: the cluster loses its quorum and must
    /// recover it from the disks).
    pub max_down: usize,
    /// Probability per node turn that the node dies between its WAL append and the end of
    /// the sync (only while every node is up).
    pub mid_turn_crash_rate: f64,
    /// Probability that a node's WAL sync stays in flight past its turn (completing with
    /// probability 1/2 at each later turn). Meanwhile the node processes nothing new, unless
    /// `pipelined_turns` is on.
    pub slow_sync_rate: f64,
    /// The stores' `pipelined_turns` (on by default, as in the node).
    pub pipelined_turns: bool,
    /// The WALs' `syncs_in_flight`: with 2 (as in the node), a pipelined turn may begin a
    /// sync while the previous one is in flight; they complete in order.
    pub syncs_in_flight: usize,
    /// Probability per step that a node's disk starts failing (fsync errors).
    pub fsync_failure_rate: f64,
    /// Snapshot bytes per chunk: small, so that transfers take several chunks.
    pub snapshot_chunk_bytes: usize,
    /// WAL segment size: small, so that runs roll segments and collect garbage.
    pub wal_segment_bytes: usize,
    /// The stores' `forced_snapshot_delay_ticks`.
    pub forced_snapshot_delay_ticks: u64,
    /// How many turns a snapshot file written in the background takes to land.
    pub snapshot_save_turns: u32,
    /// The stores' `snapshot_entries_per_tick` (small: files encoded over many ticks).
    pub snapshot_entries_per_tick: usize,
    /// Call `Wal::collect_garbage` every this many steps (0: never).
    pub gc_every: u64,
    /// Client attempt timeout, in steps.
    pub client_timeout: u64,
    /// Probability per step that the operator splits, merges or moves leadership of a
    /// range (0: the ranges keep their bootstrap shape).
    pub range_op_rate: f64,
    /// Whether the operator also moves replicas (to nodes without one).
    pub replica_moves: bool,
    pub canary: Canary,
}

impl NodeSimConfig {
    /// Every fault on, at moderate rates.
    #[must_use]
    pub fn stormy() -> NodeSimConfig {
        NodeSimConfig {
            nodes: 3,
            replicas: 3,
            keys: 6,
            clients: 4,
            ops: 200,
            max_steps: 4000,
            settle_steps: 3000,
            net: NetFaults {
                drop: 0.03,
                duplicate: 0.02,
                reorder: 0.02,
                min_delay: 1,
                max_delay: 3,
            },
            partition_rate: 0.01,
            crash_rate: 0.01,
            max_down: 1,
            fsync_failure_rate: 0.004,
            mid_turn_crash_rate: 0.002,
            slow_sync_rate: 0.3,
            pipelined_turns: true,
            syncs_in_flight: 2,
            wal_segment_bytes: 8 << 10,
            snapshot_chunk_bytes: 1024,
            forced_snapshot_delay_ticks: 20,
            snapshot_save_turns: 3,
            snapshot_entries_per_tick: 4,
            gc_every: 16,
            client_timeout: 150,
            range_op_rate: 0.0,
            replica_moves: false,
            canary: Canary::None,
        }
    }

    /// Stormy weather while an operator keeps splitting, merging and moving leadership.
    #[must_use]
    pub fn reshaping() -> NodeSimConfig {
        NodeSimConfig {
            range_op_rate: 0.03,
            ops: 300,
            ..NodeSimConfig::stormy()
        }
    }

    /// Reshaping on four nodes with three replicas per range: the operator also moves
    /// replicas between nodes (learner, snapshot, joint consensus, removal).
    #[must_use]
    pub fn moving() -> NodeSimConfig {
        NodeSimConfig {
            nodes: 4,
            replicas: 3,
            replica_moves: true,
            ..NodeSimConfig::reshaping()
        }
    }

    /// Every fault at high rates; two nodes may be down at once.
    #[must_use]
    pub fn harsh() -> NodeSimConfig {
        NodeSimConfig {
            net: NetFaults {
                drop: 0.15,
                duplicate: 0.1,
                reorder: 0.1,
                min_delay: 1,
                max_delay: 8,
            },
            partition_rate: 0.02,
            crash_rate: 0.02,
            max_down: 2,
            fsync_failure_rate: 0.01,
            mid_turn_crash_rate: 0.01,
            max_steps: 8000,
            ..NodeSimConfig::stormy()
        }
    }

    /// More clients, keys and operations (longer logs, larger snapshots in 4 KiB chunks),
    /// a lossy reordering network, two nodes down at once.
    #[must_use]
    pub fn busy() -> NodeSimConfig {
        let mut c = NodeSimConfig::stormy();
        c.ops = 500;
        c.keys = 8;
        c.clients = 6;
        c.max_steps = 10_000;
        c.net.drop = 0.1;
        c.net.reorder = 0.1;
        c.max_down = 2;
        c.snapshot_chunk_bytes = 4096;
        c
    }

    /// A reliable network and no crashes.
    #[must_use]
    pub fn calm() -> NodeSimConfig {
        NodeSimConfig {
            net: NetFaults::calm(),
            partition_rate: 0.0,
            crash_rate: 0.0,
            fsync_failure_rate: 0.0,
            mid_turn_crash_rate: 0.0,
            ..NodeSimConfig::stormy()
        }
    }
}

/// Snapshots shared between a node's incarnations: `save` is durable at once, so a
/// restarted store finds what the crashed one saved. (`Store` keeps its snapshot store
/// private, so the simulator holds a second handle.)
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshots(Rc<RefCell<MemSnapshots>>);

impl SnapshotStore for SharedSnapshots {
    fn save(&mut self, group: msg::GroupId, file: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().save(group, file)
    }

    fn save_in_background(&mut self, ticket: u64, group: msg::GroupId, file: Vec<u8>) {
        self.0.borrow_mut().save_in_background(ticket, group, file)
    }

    fn finished_saves(&mut self, wait: bool) -> Vec<FinishedSave> {
        self.0.borrow_mut().finished_saves(wait)
    }

    fn load(&self, group: msg::GroupId) -> io::Result<Option<Vec<u8>>> {
        self.0.borrow().load(group)
    }

    fn location(&self, group: msg::GroupId) -> String {
        self.0.borrow().location(group)
    }

    fn groups(&self) -> io::Result<Vec<msg::GroupId>> {
        self.0.borrow().groups()
    }

    fn remove(&mut self, group: msg::GroupId) -> io::Result<()> {
        self.0.borrow_mut().remove(group)
    }

    fn bury(&mut self, group: msg::GroupId) -> io::Result<()> {
        self.0.borrow_mut().bury(group)
    }

    fn buried(&self) -> io::Result<Vec<msg::GroupId>> {
        self.0.borrow().buried()
    }

    fn mark_removed(&mut self, group: msg::GroupId) -> io::Result<()> {
        self.0.borrow_mut().mark_removed(group)
    }

    fn unmark_removed(&mut self, group: msg::GroupId) -> io::Result<()> {
        self.0.borrow_mut().unmark_removed(group)
    }

    fn removed(&self) -> io::Result<Vec<msg::GroupId>> {
        self.0.borrow().removed()
    }

    fn save_floor(&mut self, group: msg::GroupId, floor: crate::raft::LogId) -> io::Result<()> {
        self.0.borrow_mut().save_floor(group, floor)
    }

    fn floors(&self) -> io::Result<Vec<(msg::GroupId, crate::raft::LogId)>> {
        self.0.borrow().floors()
    }
}

type SimStore = Store<MemDisk, SharedSnapshots>;

struct Node {
    id: u64,
    store: Option<SimStore>,
    snaps: SharedSnapshots,
    /// The disk while the node is down.
    disk: Option<MemDisk>,
    restart_at: u64,
    incarnation: u64,
    last_leader: HashMap<u64, Option<u64>>,
    /// The node's range directory (a real node rebuilds it at every start).
    dir: SharedDirectory,
    /// The WAL syncs begun and not yet reported complete, oldest first: target and result.
    syncs: VecDeque<(quasar_wal::Lsn, std::io::Result<()>)>,
}

/// The connection token of the simulated operator's admin requests.
const OPERATOR_TOKEN: u64 = u64::MAX - 1; // u64::MAX is the store's own (`INTERNAL_TOKEN`)

/// A request or response between a client and a node.
enum ClientMsg {
    Request {
        node: u64,
        client: usize,
        frame: AlignedVec,
    },
    Response {
        node: u64,
        client: usize,
        resp: ClientResponse,
    },
}

struct Sim {
    cfg: NodeSimConfig,
    seed: u64,
    now: u64,
    nodes: Vec<Node>,
    members: Vec<NodeId>,
    op_rng: SimRng,
    net: SimNet,
    net_faults: NetFaults,
    net_rng: SimRng,
    fault_rng: SimRng,
    link_rng: SimRng,
    sync_rng: SimRng,
    clients: Vec<SimClient>,
    client_net: BTreeMap<(u64, u64), ClientMsg>,
    seq: u64,
    history: Vec<Option<Operation<KvOp, KvOut>>>,
    started: usize,
    log: EventLog,
    /// (group, applied) -> (state hash, node that reported it first).
    hashes: HashMap<(u64, u64), (u32, u64)>,
    partition_until: u64,
    faulty: bool,
    summary: SimSummary,
}

fn wal_config(segment_bytes: usize, syncs_in_flight: usize) -> WalConfig {
    WalConfig {
        segment_size_bytes: segment_bytes,
        syncs_in_flight,
        prepared_segments: 1,
        cache_bytes: 1 << 20,
        max_old_segments: 2,
        rewrite_budget_bytes: segment_bytes,
        ..WalConfig::default()
    }
}

fn store_config(node: u64, sim: &NodeSimConfig) -> StoreConfig {
    let mut c = StoreConfig::new(NodeId(node), msg::ShardId(0), 1);
    c.forced_snapshot_delay_ticks = sim.forced_snapshot_delay_ticks;
    c.snapshot_entries_per_tick = sim.snapshot_entries_per_tick;
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.snapshot_after_entries = 50;
    c.snapshot_chunk_bytes = sim.snapshot_chunk_bytes;
    c.request_timeout_ticks = 60;
    c.pipelined_turns = sim.pipelined_turns;
    c
}

/// Runs a future that must be ready at once (MemDisk's sync).
fn ready<T>(fut: impl std::future::Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a MemDisk sync future was not ready at once"),
    }
}

/// One frame holding `m`, in a buffer of its own.
fn frame_of<M: quasar_rpc::frame::WireMessage>(m: &M) -> AlignedVec {
    let mut buf = AlignedVec::new();
    encode_frame(m, &mut buf).expect("a simulated message encodes");
    buf
}

/// The body range of the one frame in `buf`.
fn body_of(buf: &AlignedVec) -> std::ops::Range<usize> {
    match FrameDecoder::new(u64::MAX).decode(buf) {
        Ok(Decoded::Frame(f)) => f.body,
        other => panic!("a simulated frame does not decode: {other:?}"),
    }
}

/// Runs one seed of `cfg`.
pub fn run(seed: u64, cfg: &NodeSimConfig) -> Result<SimSummary, SimFailure> {
    let mut sim = Sim::new(seed, cfg.clone());
    let result = catch_unwind(AssertUnwindSafe(|| sim.run()));
    let reason = match result {
        Ok(Ok(())) => return Ok(sim.summary),
        Ok(Err(reason)) => reason,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "a panic".to_string());
            format!("panic: {text}")
        }
    };
    Err(SimFailure {
        reason: format!("{reason} (step {})", sim.now),
        log_tail: sim.log.tail(),
    })
}

impl Sim {
    fn new(seed: u64, cfg: NodeSimConfig) -> Sim {
        let members: Vec<NodeId> = (1..=cfg.nodes).map(NodeId).collect();
        let clients = (0..cfg.clients)
            .map(|c| SimClient::new(c + 1, cfg.nodes, seed))
            .collect();
        Sim {
            net_faults: cfg.net,
            seed,
            now: 0,
            nodes: Vec::new(),
            members,
            op_rng: SimRng::derive(seed, 4),
            net: SimNet::new(),
            net_rng: SimRng::derive(seed, 1),
            fault_rng: SimRng::derive(seed, 2),
            link_rng: SimRng::derive(seed, 3),
            sync_rng: SimRng::derive(seed, 5),
            clients,
            client_net: BTreeMap::new(),
            seq: 0,
            history: Vec::new(),
            started: 0,
            log: EventLog::new(),
            hashes: HashMap::new(),
            partition_until: 0,
            faulty: true,
            summary: SimSummary::default(),
            cfg,
        }
    }

    /// The nodes every range starts on.
    fn bootstrap_members(&self) -> &[NodeId] {
        let n = (self.cfg.replicas as usize).clamp(1, self.members.len());
        &self.members[..n]
    }

    fn log(&mut self, line: impl AsRef<str>) {
        self.log.record(SimTime(self.now), line);
    }

    fn open_store(
        &mut self,
        id: u64,
        disk: MemDisk,
        snaps: SharedSnapshots,
        incarnation: u64,
        dir: SharedDirectory,
    ) -> Result<SimStore, String> {
        let wal = Wal::open(
            disk,
            wal_config(self.cfg.wal_segment_bytes, self.cfg.syncs_in_flight),
        )
        .map_err(|e| format!("node {id}: WAL does not reopen: {e}"))?;
        snaps.0.borrow_mut().save_polls = self.cfg.snapshot_save_turns;
        Store::open(
            store_config(id, &self.cfg),
            wal,
            snaps,
            dir,
            SimRng::derive_seed(self.seed, 100 + id * 1000 + incarnation),
        )
        .map_err(|e| format!("node {id}: store does not reopen: {e}"))
    }

    fn run(&mut self) -> Result<(), String> {
        for id in 1..=self.cfg.nodes {
            let snaps = SharedSnapshots::default();
            let dir = Arc::new(RwLock::new(Directory::bootstrap(self.bootstrap_members())));
            let store = self.open_store(id, MemDisk::new(), snaps.clone(), 0, Arc::clone(&dir))?;
            self.nodes.push(Node {
                id,
                store: Some(store),
                snaps,
                disk: None,
                restart_at: 0,
                incarnation: 0,
                last_leader: HashMap::new(),
                dir,
                syncs: VecDeque::new(),
            });
        }
        self.log(format!(
            "seed {} start: {} nodes",
            self.seed, self.cfg.nodes
        ));
        // Faulty phase: until every operation was started (and most answered) or the bound.
        while self.now < self.cfg.max_steps {
            self.step()?;
            if self.started >= self.cfg.ops {
                break;
            }
        }
        // Heal: the network calms down, every node comes back, nothing new starts.
        self.faulty = false;
        self.net_faults = NetFaults::calm();
        self.net.heal();
        self.log("heal: network calm, partitions healed, down nodes restart");
        for n in &mut self.nodes {
            n.restart_at = n.restart_at.min(self.now);
        }
        let settle_end = self.now + self.cfg.settle_steps;
        loop {
            self.step()?;
            if self.settled() {
                break;
            }
            if self.now >= settle_end {
                return Err(format!(
                    "liveness: not settled {} steps after healing: {}",
                    self.cfg.settle_steps,
                    self.describe()
                ));
            }
        }
        let segments: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let s = n.store.as_ref()?;
                Some(format!(
                    "n{} {} segments, last {:?}",
                    n.id,
                    s.wal().disk().segment_ids().len(),
                    s.wal().disk().segment_ids().last()
                ))
            })
            .collect();
        self.log(format!(
            "settled: {}; {}",
            self.describe(),
            segments.join(", ")
        ));
        self.check_history()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for n in &self.nodes {
            match &n.store {
                None => parts.push(format!("n{} down", n.id)),
                Some(s) => {
                    for st in s.statuses() {
                        let replicas: Vec<String> = st
                            .descriptor
                            .replicas
                            .iter()
                            .map(|r| format!("{}{:?}", r.node.0, r.role))
                            .collect();
                        parts.push(format!(
                            "n{} g{} {:?} t{} leader {:?} commit {} applied {} e{} [{}]",
                            n.id,
                            st.descriptor.group.0,
                            st.role,
                            st.term,
                            st.leader,
                            st.commit,
                            st.applied,
                            st.descriptor.epoch.0,
                            replicas.join(",")
                        ));
                    }
                }
            }
        }
        for n in &self.nodes {
            if let Some(s) = &n.store {
                let m = s.metrics();
                parts.push(format!(
                    "n{} snapshots sent {} installed {} taken {}, raft msgs in {} out {} bad {}",
                    n.id,
                    m.snapshots_sent,
                    m.snapshots_installed,
                    m.snapshots_taken,
                    m.raft_messages_in,
                    m.raft_messages_out,
                    m.raft_messages_bad
                ));
            }
        }
        for n in &self.nodes {
            if let Some(s) = &n.store {
                for (g, peers) in s.leader_progress() {
                    let lagging: Vec<String> = peers
                        .iter()
                        .filter(|p| p.state != "Replicate")
                        .map(|p| format!("n{} {} m{} next {}", p.node, p.state, p.matched, p.next))
                        .collect();
                    if !lagging.is_empty() {
                        parts.push(format!(
                            "n{} g{} leader sees {}",
                            n.id,
                            g.0,
                            lagging.join(", ")
                        ));
                    }
                }
            }
        }
        let busy = self.clients.iter().filter(|c| c.pending.is_some()).count();
        parts.push(format!("{busy} clients busy"));
        parts.join("; ")
    }

    /// Every node up, no client busy, every group applied to the same index everywhere,
    /// every replica knowing its leader (what a node's `/ready` asks).
    fn settled(&self) -> bool {
        if self.clients.iter().any(|c| c.pending.is_some()) {
            return false;
        }
        // Per group: (applied, commit) of each holder, its holders, its newest descriptor.
        type Seen = (Vec<(u64, u64)>, Vec<u64>, Option<msg::RangeDescriptor>);
        let mut groups: BTreeMap<u64, Seen> = BTreeMap::new();
        for n in &self.nodes {
            let Some(s) = &n.store else {
                return false;
            };
            for st in s.statuses() {
                if st.leader.is_none() {
                    return false;
                }
                let e = groups.entry(st.descriptor.group.0).or_default();
                e.0.push((st.applied, st.commit));
                e.1.push(n.id);
                if e.2.as_ref().is_none_or(|d| d.epoch < st.descriptor.epoch) {
                    e.2 = Some(st.descriptor);
                }
            }
        }
        groups.len() >= 2
            && groups.values().all(|(v, holders, d)| {
                // Exactly the replicas of the newest descriptor hold the group (a removed
                // replica has deleted its copy), all at the same point.
                let mut wanted: Vec<u64> = d
                    .iter()
                    .flat_map(|d| d.replicas.iter().map(|r| r.node.0))
                    .collect();
                wanted.sort_unstable();
                let mut holders = holders.clone();
                holders.sort_unstable();
                holders == wanted && v.iter().all(|x| *x == v[0])
            })
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        if self.faulty {
            self.inject_faults();
        }
        self.restart_due()?;
        self.deliver_client_msgs();
        for f in self.net.due(self.now) {
            let Some(store) = self.nodes[(f.to - 1) as usize].store.as_mut() else {
                continue;
            };
            let body = body_of(&f.frame);
            let batch = quasar_rpc::frame::access_body::<RaftBatch>(&f.frame[body])
                .map_err(|e| format!("a raft frame does not validate: {e}"))?;
            store.on_raft_batch(batch);
        }
        for i in 0..self.nodes.len() {
            if let Some(s) = self.nodes[i].store.as_mut() {
                s.tick();
            }
        }
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        self.net_rng.shuffle(&mut order);
        for i in order {
            if self.nodes[i].store.is_none() {
                continue;
            }
            let may_crash = self.may_crash();
            let crash_before_sync =
                self.faulty && may_crash && self.fault_rng.chance(self.cfg.mid_turn_crash_rate);
            match self.turn(i, crash_before_sync) {
                Ok(true) => {}
                Ok(false) => {
                    let id = self.nodes[i].id;
                    self.log(format!("n{id} dies during its WAL sync"));
                    let how = self.pick_crash();
                    self.crash(i, how);
                }
                Err(e) => {
                    let id = self.nodes[i].id;
                    self.log(format!("n{id} store stopped: {e}"));
                    let how = self.pick_crash();
                    self.crash(i, how);
                }
            }
        }
        if self.cfg.gc_every > 0 && self.now % self.cfg.gc_every == 0 {
            for i in 0..self.nodes.len() {
                let Some(s) = self.nodes[i].store.as_mut() else {
                    continue;
                };
                if let Err(e) = s.wal_mut().collect_garbage() {
                    let id = self.nodes[i].id;
                    self.log(format!("n{id} WAL garbage collection failed: {e}"));
                    let how = self.pick_crash();
                    self.crash(i, how);
                }
            }
        }
        self.drive_clients();
        if self.faulty && self.op_rng.chance(self.cfg.range_op_rate) {
            self.operate();
        }
        self.check_step()
    }

    /// The operator: a split at a random key, a merge of a range with its right neighbour
    /// (first moving the neighbour's leadership next to the left one's), or a leadership
    /// transfer, sent to the node that leads the range. Answers are logged.
    fn operate(&mut self) {
        use quasar_rpc::message::AdminOp;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].store.is_some())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.op_rng.index(up.len())];
        let Some(store) = self.nodes[i].store.as_ref() else {
            return;
        };
        let led: Vec<msg::RangeDescriptor> = store
            .statuses()
            .into_iter()
            .filter(|s| s.role == Role::Leader && s.descriptor.id.0 != 1)
            .map(|s| s.descriptor)
            .collect();
        if led.is_empty() {
            return;
        }
        let d = led[self.op_rng.index(led.len())].clone();
        let kinds = if self.cfg.replica_moves { 3 } else { 2 };
        let (target, op) = match self.op_rng.between(0, kinds) {
            0 => {
                let key =
                    clients::key_bytes(self.op_rng.between(0, u64::from(self.cfg.keys) - 1) as u8);
                (
                    i,
                    AdminOp::SplitRange {
                        range: d.id,
                        split_key: key,
                        expected_epoch: d.epoch,
                    },
                )
            }
            1 => {
                // Who leads the right neighbour?
                let right_leader = self.nodes.iter().position(|n| {
                    n.store.as_ref().is_some_and(|s| {
                        s.statuses().iter().any(|st| {
                            st.role == Role::Leader
                                && !d.end.is_empty()
                                && st.descriptor.start == d.end
                        })
                    })
                });
                match right_leader {
                    Some(j) if j != i => {
                        let Some(right) = self.nodes[j].store.as_ref().and_then(|s| {
                            s.statuses()
                                .into_iter()
                                .find(|st| st.descriptor.start == d.end)
                                .map(|st| st.descriptor)
                        }) else {
                            return;
                        };
                        (
                            j,
                            AdminOp::TransferLeader {
                                range: right.id,
                                to: msg::NodeId(self.nodes[i].id),
                            },
                        )
                    }
                    _ => (
                        i,
                        AdminOp::MergeRanges {
                            left: d.id,
                            expected_epoch: d.epoch,
                        },
                    ),
                }
            }
            2 => {
                let to = self.op_rng.between(1, self.cfg.nodes);
                (
                    i,
                    AdminOp::TransferLeader {
                        range: d.id,
                        to: msg::NodeId(to),
                    },
                )
            }
            _ => {
                let outside: Vec<u64> = (1..=self.cfg.nodes)
                    .filter(|n| d.replica(msg::NodeId(*n)).is_none())
                    .collect();
                if outside.is_empty() || d.replicas.is_empty() {
                    return;
                }
                let to = outside[self.op_rng.index(outside.len())];
                let from = d.replicas[self.op_rng.index(d.replicas.len())].node;
                (
                    i,
                    AdminOp::MoveReplica {
                        range: d.id,
                        from,
                        to: msg::NodeId(to),
                        expected_epoch: d.epoch,
                    },
                )
            }
        };
        self.seq += 1;
        let request_id = msg::RequestId(self.seq);
        let req = msg::AdminRequest { request_id, op };
        let bytes = match rkyv::to_bytes::<rkyv::rancor::Error>(&req) {
            Ok(b) => b,
            Err(e) => panic!("an admin request does not encode: {e}"),
        };
        let id = self.nodes[target].id;
        self.log(format!("operator -> n{id}: {:?}", req.op));
        let Some(store) = self.nodes[target].store.as_mut() else {
            return;
        };
        match quasar_rpc::frame::access_body::<msg::AdminRequest>(&bytes) {
            Ok(archived) => store.on_admin_request(OPERATOR_TOKEN, request_id, &archived.op),
            Err(e) => panic!("an admin request does not validate: {e}"),
        }
    }

    /// One turn of node `i`, as `runtime::turn` does it: the oldest sync in flight may
    /// complete (finishing its `Ready`s), new work is processed (unless a sync in flight
    /// forbids it), and a sync begins if the WAL allows one more in flight (it may stay in
    /// flight, see `slow_sync_rate`), or with none in flight the work is finished at once.
    /// With `crash_before_sync` the node dies after the append and the first sends, before
    /// a sync it would begin (returns `Ok(false)`; the caller crashes it).
    fn turn(&mut self, i: usize, crash_before_sync: bool) -> Result<bool, StoreError> {
        if !self.nodes[i].syncs.is_empty() && self.sync_rng.chance(0.5) {
            self.complete_sync(i)?;
        }
        let Some(store) = self.nodes[i].store.as_mut() else {
            return Ok(true);
        };
        if !store.may_process() {
            return Ok(true);
        }
        let needs_sync = store.process()?;
        // Writes applied by `process` are answered before the sync (and a crash).
        self.send_outputs(i);
        let in_flight = self.nodes[i].syncs.len();
        let Some(store) = self.nodes[i].store.as_mut() else {
            return Ok(true);
        };
        let overlap = in_flight == 0 || store.may_overlap_syncs();
        if needs_sync && overlap && in_flight < self.cfg.syncs_in_flight.max(1) {
            if crash_before_sync {
                return Ok(false);
            }
            if let Some(job) = store.wal_mut().begin_sync()? {
                store.sync_started();
                let target = job.target();
                // The in-memory disk syncs when the job is made; the report may come later.
                let result = ready(job.run());
                self.nodes[i].syncs.push_back((target, result));
                if !self.sync_rng.chance(self.cfg.slow_sync_rate) {
                    self.complete_sync(i)?;
                }
                return Ok(true);
            }
        }
        if in_flight > 0 {
            return Ok(true);
        }
        let Some(store) = self.nodes[i].store.as_mut() else {
            return Ok(true);
        };
        store.finish()?;
        self.send_outputs(i);
        Ok(true)
    }

    /// Reports node `i`'s oldest sync in flight complete and finishes the `Ready`s it
    /// covered.
    fn complete_sync(&mut self, i: usize) -> Result<(), StoreError> {
        let node = &mut self.nodes[i];
        let (Some(store), Some((target, result))) = (node.store.as_mut(), node.syncs.pop_front())
        else {
            return Ok(());
        };
        store.wal_mut().on_sync_done(target, result)?;
        store.finish_synced()?;
        self.send_outputs(i);
        Ok(())
    }

    /// Sends node `i`'s outbox as frames (sorted by destination: the store's maps iterate
    /// in a per-process order, and the draws of the network's generator must not depend on
    /// it), logs its answers to the operator and sends its client answers.
    fn send_outputs(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let now = self.now;
        let Some(store) = self.nodes[i].store.as_mut() else {
            return;
        };
        let mut frames: Vec<(u64, AlignedVec)> =
            store.outbox().map(|b| (b.to.0, frame_of(b))).collect();
        frames.sort_by_key(|f| f.0);
        store.recycle_outbox();
        let admin: Vec<_> = store.take_admin_responses().collect();
        for (to, frame) in frames {
            self.net
                .send(now, id, to, frame, &self.net_faults, &mut self.net_rng);
        }
        for (_, resp) in admin {
            if resp.result.is_ok() {
                self.summary.range_changes += 1;
            }
            if matches!(resp.result, Ok(msg::AdminReply::ReplicasChanged { .. })) {
                self.summary.replica_moves += 1;
            }
            self.log(format!("operator <- n{id}: {:?}", resp.result));
        }
        self.answer_clients(i);
    }

    /// Sends node `i`'s client answers (in a fixed order, for determinism).
    fn answer_clients(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let now = self.now;
        let Some(store) = self.nodes[i].store.as_mut() else {
            return;
        };
        let mut responses: Vec<_> = store.take_responses().collect();
        responses.sort_by_key(|(token, r)| (*token, r.request_id.0));
        for (token, resp) in responses {
            let delay = self.link_rng.between(1, 2);
            self.seq += 1;
            self.client_net.insert(
                (now + delay, self.seq),
                ClientMsg::Response {
                    node: id,
                    client: token as usize,
                    resp,
                },
            );
        }
    }

    fn pick_crash(&mut self) -> Crash {
        match self.fault_rng.between(0, 2) {
            0 => Crash::DropUnsynced,
            1 => Crash::RandomSectors {
                seed: self.fault_rng.next_u64(),
            },
            _ => Crash::TearUnsynced {
                keep_bytes: self.fault_rng.between(0, 4096) as usize,
            },
        }
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len() as u64;
        if self.partition_until != 0 && self.now >= self.partition_until {
            self.net.heal();
            self.partition_until = 0;
            self.log("partition healed");
        }
        if self.partition_until == 0 && self.fault_rng.chance(self.cfg.partition_rate) {
            let victim = self.fault_rng.between(1, n);
            let len = self.fault_rng.between(30, 300);
            self.net.isolate(victim);
            self.partition_until = self.now + len;
            self.log(format!("partition: n{victim} cut off for {len} steps"));
        }
        let may_crash = self.may_crash();
        if may_crash && self.fault_rng.chance(self.cfg.crash_rate) {
            let i = self.fault_rng.index(self.nodes.len());
            let how = self.pick_crash();
            self.crash(i, how);
        }
        if may_crash && self.fault_rng.chance(self.cfg.fsync_failure_rate) {
            let i = self.fault_rng.index(self.nodes.len());
            let ops = self.fault_rng.between(0, 20);
            if let Some(s) = self.nodes[i].store.as_mut() {
                s.wal_mut().disk_mut().fail_after(ops);
                let id = self.nodes[i].id;
                self.log(format!("n{id} disk fails after {ops} more operations"));
            }
        }
    }

    /// Whether one more node may go down.
    fn may_crash(&self) -> bool {
        self.nodes.iter().filter(|x| x.store.is_none()).count() < self.cfg.max_down
    }

    fn crash(&mut self, i: usize, how: Crash) {
        let id = self.nodes[i].id;
        let Some(store) = self.nodes[i].store.take() else {
            return;
        };
        self.nodes[i].syncs.clear();
        self.summary.crashes += 1;
        let disk = if self.cfg.canary == Canary::Amnesia {
            self.nodes[i].snaps = SharedSnapshots::default();
            MemDisk::new()
        } else {
            // Snapshot files still being written never land.
            self.nodes[i].snaps.0.borrow_mut().crash();
            store.wal().disk().crash(how)
        };
        drop(store);
        let down = if self.faulty {
            self.fault_rng.between(5, 150)
        } else {
            1
        };
        self.nodes[i].disk = Some(disk);
        self.nodes[i].restart_at = self.now + down;
        self.nodes[i].last_leader.clear();
        self.log(format!("n{id} crashed ({how:?}); back in {down} steps"));
        // Its connections break: frames in flight are lost, clients see the loss.
        self.net.cut(id);
        self.client_net.retain(|_, m| match m {
            ClientMsg::Request { node, .. } | ClientMsg::Response { node, .. } => *node != id,
        });
        for c in 0..self.clients.len() {
            let at_node = self.clients[c]
                .pending
                .as_ref()
                .and_then(|p| p.attempt.as_ref())
                .is_some_and(|a| a.target.node.0 == id);
            if at_node {
                self.attempt_ended(c, Err(AttemptError::Lost(format!("n{id} crashed"))));
            }
        }
    }

    fn restart_due(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].store.is_some() || self.nodes[i].restart_at > self.now {
                continue;
            }
            let Some(disk) = self.nodes[i].disk.take() else {
                continue;
            };
            let id = self.nodes[i].id;
            self.nodes[i].incarnation += 1;
            let dir = Arc::new(RwLock::new(Directory::bootstrap(self.bootstrap_members())));
            self.nodes[i].dir = Arc::clone(&dir);
            let store = self.open_store(
                id,
                disk,
                self.nodes[i].snaps.clone(),
                self.nodes[i].incarnation,
                dir,
            )?;
            let st: Vec<String> = store
                .statuses()
                .iter()
                .map(|s| {
                    format!(
                        "g{} commit {} applied {}",
                        s.descriptor.group.0, s.commit, s.applied
                    )
                })
                .collect();
            self.log(format!("n{id} restarted: {}", st.join(", ")));
            self.nodes[i].store = Some(store);
        }
        Ok(())
    }

    fn deliver_client_msgs(&mut self) {
        while let Some(entry) = self.client_net.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                ClientMsg::Request {
                    node,
                    client,
                    frame,
                } => {
                    let Some(store) = self.nodes[(node - 1) as usize].store.as_mut() else {
                        continue;
                    };
                    let body = &frame[body_of(&frame)];
                    match quasar_rpc::frame::access_body::<ClientRequest>(body) {
                        Ok(req) => store.on_client_request(client as u64, req, body),
                        Err(e) => panic!("a client frame does not validate: {e}"),
                    }
                }
                ClientMsg::Response { client, resp, .. } => {
                    if self.clients[client].matches(&resp) {
                        self.attempt_ended(client, Ok(resp.result));
                    }
                }
            }
        }
    }

    fn attempt_ended(
        &mut self,
        c: usize,
        answer: Result<Result<msg::Reply, RequestError>, AttemptError>,
    ) {
        let now = self.now;
        let Some(result) = self.clients[c].on_attempt_end(now, answer) else {
            return;
        };
        let Some(p) = self.clients[c].pending.take() else {
            return;
        };
        self.clients[c].idle_until = now + self.clients[c].rng.between(0, 25);
        let client = self.clients[c].id;
        let out = outcome(&p.op, result);
        self.log(format!(
            "c{client} {:?} on k{} -> {out:?} ({} attempts)",
            p.op.kind,
            p.op.key,
            p.call.attempts()
        ));
        let acked_early =
            self.cfg.canary == Canary::AckBeforeAnswer && matches!(p.op.kind, OpKind::Put(_));
        let Some(rec) = self.history.get_mut(p.record) else {
            return;
        };
        if acked_early {
            return;
        }
        match out {
            Ok(Some(o)) => {
                if let Some(r) = rec.as_mut() {
                    if matches!(o, KvOut::Value(_)) {
                        self.summary.reads_served += 1;
                    } else {
                        self.summary.writes_acked += 1;
                    }
                    r.output = Some(o);
                    r.returned = Some(now);
                }
            }
            // Outcome unknown: stays open-ended.
            Ok(None) => {}
            // Definitely not applied (or a read that failed): no information.
            Err(_) => *rec = None,
        }
    }

    fn drive_clients(&mut self) {
        let now = self.now;
        for c in 0..self.clients.len() {
            // Attempt timeouts.
            let timed_out = self.clients[c]
                .pending
                .as_ref()
                .and_then(|p| p.attempt.as_ref())
                .is_some_and(|a| a.deadline <= now);
            if timed_out {
                self.attempt_ended(c, Err(AttemptError::Lost("timed out".into())));
            }
            // New operations.
            if self.faulty
                && self.clients[c].pending.is_none()
                && self.clients[c].idle_until <= now
                && self.started < self.cfg.ops
            {
                let op = self.clients[c].random_op(self.cfg.keys);
                let client = self.clients[c].id;
                let acked_early =
                    self.cfg.canary == Canary::AckBeforeAnswer && matches!(op.kind, OpKind::Put(_));
                self.history.push(Some(Operation {
                    client,
                    input: op.clone(),
                    output: acked_early.then_some(KvOut::Written),
                    called: now,
                    returned: acked_early.then_some(now),
                }));
                let record = self.history.len() - 1;
                self.started += 1;
                self.clients[c].start(op, now, record);
                if self.cfg.canary == Canary::StaleReads {
                    if let Some(p) = self.clients[c].pending.as_mut() {
                        if matches!(p.op.kind, OpKind::Get) {
                            p.follower = true;
                            p.call.request.consistency = ReadConsistency::Stale {
                                max_staleness_ms: u32::MAX,
                            };
                        }
                    }
                }
            }
            // Attempts due.
            let timeout = self.cfg.client_timeout;
            let Some((node, req)) = self.clients[c].due_attempt(now, timeout) else {
                continue;
            };
            let up = self.nodes[(node - 1) as usize].store.is_some();
            if !up {
                self.attempt_ended(c, Err(AttemptError::NotSent(format!("n{node} is down"))));
                continue;
            }
            let delay = self.link_rng.between(1, 2);
            self.seq += 1;
            self.client_net.insert(
                (now + delay, self.seq),
                ClientMsg::Request {
                    node,
                    client: c,
                    frame: frame_of(&req),
                },
            );
        }
    }

    /// The per-step checks: store invariants, one state per (group, applied index).
    fn check_step(&mut self) -> Result<(), String> {
        let mut events = Vec::new();
        for n in &mut self.nodes {
            let Some(s) = &n.store else {
                continue;
            };
            s.check_invariants();
            for st in s.statuses() {
                let g = st.descriptor.group.0;
                self.summary.commit_index = self.summary.commit_index.max(st.commit);
                match self.hashes.get(&(g, st.applied)) {
                    Some(&(h, first)) if h != st.state_hash => {
                        return Err(format!(
                            "state machine safety: group {g} at applied {} has hash {:08x} on \
                             n{} but {h:08x} on n{first}",
                            st.applied, st.state_hash, n.id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.hashes.insert((g, st.applied), (st.state_hash, n.id));
                    }
                }
                let leader = (st.role == Role::Leader).then_some(n.id);
                if n.last_leader.get(&g) != Some(&leader) && leader.is_some() {
                    events.push(format!("n{} leads g{g} in term {}", n.id, st.term));
                }
                n.last_leader.insert(g, leader);
            }
        }
        for e in events {
            self.log(e);
        }
        self.summary.ticks = self.now;
        Ok(())
    }

    fn check_history(&mut self) -> Result<(), String> {
        let mut snaps = 0;
        for n in &self.nodes {
            if let Some(s) = &n.store {
                snaps += s.metrics().snapshots_installed;
            }
        }
        self.summary.snapshots_installed = snaps;
        let ops: Vec<Operation<KvOp, KvOut>> = self.history.iter().flatten().cloned().collect();
        match check(&CounterModel, &ops, 2_000_000) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { part } => {
                let lines: Vec<String> = part
                    .iter()
                    .map(|&i| {
                        let o = &ops[i];
                        format!(
                            "  c{} [{}, {:?}] {:?} -> {:?}",
                            o.client, o.called, o.returned, o.input, o.output
                        )
                    })
                    .collect();
                for l in &lines {
                    self.log(l);
                }
                Err(format!(
                    "linearizability: the history of key k{} is not linearizable ({} operations; \
                     see the log tail)",
                    part.first().map_or(0, |&i| ops[i].input.key),
                    part.len()
                ))
            }
            Verdict::Unknown { part, budget } => Err(format!(
                "linearizability: undecided after {budget} states ({} operations)",
                part.len()
            )),
        }
    }
}
