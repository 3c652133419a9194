//! A simulated cluster: the `RaftNode`s, their disks and state machines, the network, the
//! clients and the fault injector, all driven from one seed (`runtime`). A scenario is a
//! `Scenario` value: cluster size, a workload profile (`workload`) and a fault profile
//! (`faults`), kept apart. `run` plays a seed through a fault phase, then a liveness phase
//! (faults stop; a leader must be elected and commit within a bound), then the final checks
//! (every acknowledged write committed, the client history linearizable).
//!
//! `Canary` breaks one rule of the runtime on purpose; the canary tests assert that the
//! checks catch it.

pub mod faults;
pub mod runtime;
pub mod workload;

use std::collections::BTreeMap;

use bytes::Bytes;

use super::clock::SimClock;
use super::event_log::EventLog;
use super::harness::{SimFailure, SimSummary};
use super::invariants::linearizability::History;
use super::invariants::{Checks, Violation};
use super::net::{NetConfig, SimNet};
use super::rng::SimRng;
use crate::raft::{Message, NodeId};

pub use faults::FaultProfile;
pub use runtime::SimNode;
pub use workload::WorkloadProfile;

/// A rule of the runtime deliberately broken, to prove the checks notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canary {
    /// Send votes and append acknowledgements before the covering sync (crashes then lose
    /// what was promised).
    SendBeforeSync,
    /// Never persist the hard state: a restarted node forgets its term, vote and commit.
    HardStateNotPersisted,
    /// Persist the hard state without its vote: a restarted node forgets whom it voted
    /// for in its term and may vote again.
    VoteNotPersisted,
    /// Apply entries to the state machine as soon as they are appended, before they are
    /// committed (an overwritten suffix was applied anyway).
    ApplyBeforeCommit,
    /// Tell the client a write succeeded as soon as the leader accepted it.
    AckBeforeCommit,
    /// Serve reads from the local state machine of any node, without ReadIndex.
    ReadWithoutReadIndex,
}

/// Everything that defines one simulated run, apart from its seed.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Voters at the start (ids 1..=voters).
    pub voters: u64,
    /// Further node ids that membership changes may add (voters+1..=voters+spares).
    pub spares: u64,
    /// Ticks of the fault phase.
    pub fault_ticks: u64,
    /// Bound on the liveness phase: a leader must commit a new write within it.
    pub liveness_ticks: u64,
    /// Whether to run the liveness phase (and then require every acknowledged write to be
    /// committed); `false` checks safety only.
    pub check_liveness: bool,
    /// Network behaviour during the fault phase.
    pub net: NetConfig,
    /// Faults injected during the fault phase.
    pub faults: FaultProfile,
    /// Client behaviour.
    pub workload: WorkloadProfile,
    /// Raft: election timeout (ticks).
    pub election_timeout_ticks: u32,
    /// Raft: heartbeat interval (ticks).
    pub heartbeat_interval_ticks: u32,
    /// Raft: pre-vote (§9.6).
    pub pre_vote: bool,
    /// Raft: check-quorum (a leader without a quorum steps down; restarted nodes refuse
    /// votes for an election timeout).
    pub check_quorum: bool,
    /// Raft: leader lease (ticks, 0 = off).
    pub lease_ticks: u32,
    /// Raft: ask for a snapshot every this many applied entries (0 = never).
    pub snapshot_after_entries: u64,
    /// Raft: entries per append message.
    pub max_entries_per_msg: usize,
    /// Raft: in-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Longest simulated fdatasync, in ticks (each sync takes 0..=this).
    pub sync_ticks_max: u64,
    /// How a node added by a membership change starts: `false` (the documented way)
    /// with `Restored::joining()`; `true` with the group's bootstrap state (the initial
    /// configuration at index 0), which every replica could know.
    pub join_from_bootstrap: bool,
    /// A deliberately broken rule, if any.
    pub canary: Option<Canary>,
}

impl Scenario {
    /// A calm cluster of `voters`: reliable network, no faults, steady clients.
    #[must_use]
    pub fn calm(voters: u64) -> Scenario {
        Scenario {
            voters,
            spares: 0,
            fault_ticks: 600,
            liveness_ticks: 300,
            check_liveness: true,
            net: NetConfig::reliable(),
            faults: FaultProfile::none(),
            workload: WorkloadProfile::default(),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_ticks: 0,
            snapshot_after_entries: 0,
            max_entries_per_msg: 16,
            max_inflight_msgs: 8,
            sync_ticks_max: 1,
            join_from_bootstrap: false,
            canary: None,
        }
    }
}

/// One simulated cluster in the middle of a run.
pub struct Cluster {
    pub(crate) scenario: Scenario,
    pub(crate) seed: u64,
    pub(crate) clock: SimClock,
    pub(crate) net: SimNet<NodeId, Envelope>,
    /// Every node id of the universe (started or not), by id.
    pub(crate) nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) log: EventLog,
    pub(crate) checks: Checks,
    pub(crate) history: History,
    pub(crate) rng: SimRng,
    pub(crate) workload: workload::Workload,
    pub(crate) faults: faults::FaultState,
    /// Where each written value was applied (its log index): the linearization order.
    pub(crate) positions: BTreeMap<u64, u64>,
    pub(crate) summary: SimSummary,
    /// The first violation seen; the run stops at the end of the step that found it.
    pub(crate) violation: Option<Violation>,
    /// Whether faults are being injected (false in the liveness phase).
    pub(crate) faults_on: bool,
}

/// A message on the simulated wire: the Raft message, plus the state machine snapshot
/// the transport attaches to a `Snapshot` message.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The Raft message.
    pub message: Message,
    /// State machine bytes for `MessageBody::Snapshot`.
    pub snapshot_data: Option<Bytes>,
}

/// Plays `scenario` from `seed` to the end: the fault phase, then `finish`. `Err`
/// describes the first violation (or panic), with the event log.
pub fn run(seed: u64, scenario: &Scenario) -> Result<SimSummary, SimFailure> {
    script(seed, scenario, |cluster| {
        for _ in 0..cluster.scenario.fault_ticks {
            cluster.step()?;
        }
        Ok(())
    })
}

/// Builds the cluster for `scenario` and `seed`, runs `body` on it, then `finish`es it
/// (liveness phase and final checks). A violation or a panic anywhere becomes a
/// `SimFailure` carrying the event log.
pub fn script(
    seed: u64,
    scenario: &Scenario,
    body: impl FnOnce(&mut Cluster) -> Result<(), Violation>,
) -> Result<SimSummary, SimFailure> {
    install_quiet_panic_hook();
    let mut cluster = Cluster::new(seed, scenario.clone());
    QUIET_PANICS.with(|q| q.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        body(&mut cluster)?;
        cluster.finish()
    }));
    QUIET_PANICS.with(|q| q.set(false));
    let reason = match outcome {
        Ok(Ok(summary)) => return Ok(summary),
        Ok(Err(v)) => v.to_string(),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            let at = PANIC_AT.with(|p| p.take()).unwrap_or_default();
            format!("panic at {at}: {text}")
        }
    };
    let now = cluster.clock.now();
    cluster.log.record(now, format!("FAILED: {reason}"));
    Err(SimFailure {
        reason: format!("at {now}: {reason}"),
        log_tail: cluster.log.tail(),
    })
}

/// A scenario expectation that is not a Raft invariant (for scripted tests).
#[must_use]
pub fn expectation(detail: String) -> Violation {
    Violation {
        property: "scenario expectation",
        detail,
    }
}

thread_local! {
    /// Set while this thread plays a seed: its panics are reported by `run`, with the seed.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Where the last quiet panic happened (file:line), for the failure report.
    static PANIC_AT: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// Installs (once) a panic hook that stays silent for panics inside `run` (they become a
/// `SimFailure` with the seed and the event log) and defers to the previous hook otherwise.
fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET_PANICS.with(std::cell::Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                PANIC_AT.with(|p| p.set(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// A scripted run, for scenario tests that drive the cluster step by step (the fault
/// injector stays off unless the scenario's profile turns it on).
impl Cluster {
    /// Advances the whole cluster by one tick and runs every per-step check.
    pub fn tick(&mut self) -> Result<(), Violation> {
        self.step()
    }

    /// Ticks until `done` holds (checked after each tick) or `max_ticks` pass; returns
    /// whether it held.
    pub fn run_until(
        &mut self,
        max_ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool, Violation> {
        for _ in 0..max_ticks {
            self.step()?;
            if done(self) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The leader with the highest term, if any node leads.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.current_leader()
    }

    /// The current term of `id`, if it runs.
    #[must_use]
    pub fn term_of(&self, id: NodeId) -> Option<u64> {
        self.nodes.get(&id)?.core.as_ref().map(|c| c.term().0)
    }

    /// The running core of `id`, to inspect.
    #[must_use]
    pub fn core(&self, id: NodeId) -> Option<&crate::raft::RaftNode> {
        self.nodes.get(&id)?.core.as_ref()
    }

    /// The running core of `id` (to inspect, or to ask for a transfer or a conf change).
    pub fn core_mut(&mut self, id: NodeId) -> Option<&mut crate::raft::RaftNode> {
        self.nodes.get_mut(&id)?.core.as_mut()
    }

    /// The simulated network (to cut or heal links).
    pub fn net_mut(&mut self) -> &mut SimNet<NodeId, Envelope> {
        &mut self.net
    }

    /// The ids of the nodes started so far.
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.started)
            .map(|n| n.id)
            .collect()
    }

    /// Power loss at `id` (unsynced writes partly lost).
    pub fn crash_node(&mut self, id: NodeId) {
        self.crash(id);
    }

    /// Restarts a crashed `id` from its disk.
    pub fn restart_node(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_some_and(|n| !n.is_alive()) {
            self.start(id);
        }
    }

    /// Ends the run: the liveness phase (if the scenario asks for it) and the final checks.
    pub fn finish(&mut self) -> Result<SimSummary, Violation> {
        if self.scenario.check_liveness {
            self.liveness_phase()?;
        }
        self.final_checks()?;
        Ok(self.summary())
    }
}
