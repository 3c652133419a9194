//! The fault injector, kept apart from the workload: crashes and restarts, partitions
//! (symmetric, one-way, bridge, isolating the leader), network weather, and the
//! operator's actions that must be safe under faults: membership changes (add a learner,
//! promote it through a joint configuration, remove a voter or a learner) and leadership
//! transfers. Also the liveness phase: faults stop, the cluster heals, and a leader must
//! commit a new write on every running member within a bound.

use crate::raft::{ConfState, NodeId, Role};
use crate::sim::invariants::Violation;
use crate::sim::net::NetConfig;

use super::Cluster;

/// Per-tick probabilities of each fault (all 0 for a calm run).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultProfile {
    /// Crash a running node.
    pub crash: f64,
    /// Crash a running node that has unsynced writes (the crash that tests durability
    /// rules: it loses what it may have promised).
    pub crash_unsynced: f64,
    /// Restart a crashed node.
    pub restart: f64,
    /// Cut the network (one of the partition kinds).
    pub partition: f64,
    /// Heal every partition.
    pub heal: f64,
    /// Switch between a reliable and a lossy network.
    pub weather: f64,
    /// Propose a membership change.
    pub membership: f64,
    /// Ask the leader to hand over to another voter.
    pub transfer: f64,
    /// At most this many nodes down at once (a minority keeps the cluster live; more
    /// tests safety only).
    pub max_down: usize,
}

impl FaultProfile {
    /// No faults at all.
    #[must_use]
    pub fn none() -> FaultProfile {
        FaultProfile::default()
    }
}

/// What the injector remembers between ticks.
#[derive(Debug, Default)]
pub struct FaultState {
    /// Leaders (id, term) at the last step, to log changes.
    pub(crate) last_leaders: Vec<(u64, u64)>,
    /// Whether the net is currently lossy.
    lossy: bool,
}

impl Cluster {
    pub(crate) fn inject_faults(&mut self) {
        let p = self.scenario.faults.clone();
        let now = self.clock.now();
        if self.rng.chance(p.crash) {
            let down = self
                .nodes
                .values()
                .filter(|n| n.started && !n.is_alive())
                .count();
            if down < p.max_down {
                let alive: Vec<NodeId> = self
                    .nodes
                    .values()
                    .filter(|n| n.is_alive())
                    .map(|n| n.id)
                    .collect();
                if !alive.is_empty() {
                    // Crash the leader more often than chance would: it holds the most state.
                    let target = match self.current_leader() {
                        Some(l) if self.rng.chance(0.4) => l,
                        _ => *self.rng.pick(&alive),
                    };
                    self.crash(target);
                }
            }
        }
        if self.rng.chance(p.crash_unsynced) {
            let down = self
                .nodes
                .values()
                .filter(|n| n.started && !n.is_alive())
                .count();
            let dirty: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.is_alive() && n.disk.has_unsynced())
                .map(|n| n.id)
                .collect();
            if down < p.max_down && !dirty.is_empty() {
                let id = *self.rng.pick(&dirty);
                self.crash(id);
            }
        }
        if self.rng.chance(p.restart) {
            let down: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.started && !n.is_alive())
                .map(|n| n.id)
                .collect();
            if !down.is_empty() {
                let id = *self.rng.pick(&down);
                self.start(id);
            }
        }
        if self.rng.chance(p.partition) {
            self.partition();
        }
        if self.rng.chance(p.heal) && self.net.is_partitioned() {
            self.net.heal();
            self.log.record(now, "net healed");
        }
        if self.rng.chance(p.weather) {
            self.faults.lossy = !self.faults.lossy;
            let config = if self.faults.lossy {
                NetConfig::lossy()
            } else {
                self.scenario.net.clone()
            };
            self.log
                .record(now, format!("net weather lossy={}", self.faults.lossy));
            self.net.set_config(config);
        }
        if self.rng.chance(p.membership) {
            self.change_membership();
        }
        if self.rng.chance(p.transfer) {
            self.transfer_leadership();
        }
    }

    fn started_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.started)
            .map(|n| n.id)
            .collect()
    }

    fn partition(&mut self) {
        let now = self.clock.now();
        let mut ids = self.started_ids();
        if ids.len() < 2 {
            return;
        }
        self.rng.shuffle(&mut ids);
        match self.rng.between(0, 3) {
            0 => {
                let cut = self.rng.between(1, ids.len() as u64 - 1) as usize;
                let (a, b) = ids.split_at(cut);
                self.net.partition_symmetric(a, b);
                self.log.record(now, format!("partition {a:?} | {b:?}"));
            }
            1 => {
                self.net.block_one_way(ids[0], ids[1]);
                self.log
                    .record(now, format!("partition one-way {} -x-> {}", ids[0], ids[1]));
            }
            2 => {
                let cut = (ids.len() / 2).max(1);
                let bridge = ids[cut.min(ids.len() - 1)];
                let (a, b) = ids.split_at(cut);
                self.net.partition_bridge(a, b, bridge);
                self.log
                    .record(now, format!("partition {a:?} | {b:?} bridged by {bridge}"));
            }
            _ => {
                if let Some(leader) = self.current_leader() {
                    let others: Vec<NodeId> =
                        ids.iter().copied().filter(|&i| i != leader).collect();
                    self.net.isolate(leader, &others);
                    self.log
                        .record(now, format!("partition: leader {leader} isolated"));
                }
            }
        }
    }

    /// Proposes one membership change at the current leader: add a learner, promote a
    /// learner (joint consensus), remove a voter (keeping at least three), or drop a learner.
    fn change_membership(&mut self) {
        let now = self.clock.now();
        let Some(leader) = self.current_leader() else {
            return;
        };
        let conf = match self.nodes[&leader].core.as_ref() {
            Some(core) => core.conf_state().clone(),
            None => return,
        };
        if conf.is_joint() {
            return;
        }
        let outsiders: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| !conf.contains(*id))
            .collect();
        let mut target = ConfState::with_voters(conf.voters.iter().copied());
        target.learners = conf.learners.clone();
        let what = match self.rng.between(0, 3) {
            0 if !outsiders.is_empty() => {
                let id = *self.rng.pick(&outsiders);
                if !self.nodes[&id].is_alive() {
                    if self.nodes[&id].started {
                        return;
                    }
                    if self.scenario.join_from_bootstrap {
                        self.write_bootstrap(id);
                    }
                    self.start(id);
                }
                target.learners.push(id);
                target.learners.sort_unstable();
                format!("add learner {id}")
            }
            1 if !conf.learners.is_empty() => {
                let id = *self.rng.pick(&conf.learners);
                target.learners.retain(|&l| l != id);
                target.voters.push(id);
                target.voters.sort_unstable();
                format!("promote {id}")
            }
            2 if conf.voters.len() > 3 => {
                let id = *self.rng.pick(&conf.voters);
                target.voters.retain(|&v| v != id);
                format!("remove voter {id}")
            }
            3 if !conf.learners.is_empty() => {
                let id = *self.rng.pick(&conf.learners);
                target.learners.retain(|&l| l != id);
                format!("remove learner {id}")
            }
            _ => return,
        };
        let Some(core) = self.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()) else {
            return;
        };
        match core.propose_conf_change(&target) {
            Ok(index) => {
                self.log
                    .record(now, format!("{leader} proposes {what} at i{}", index.0));
            }
            Err(e) => self
                .log
                .record(now, format!("{leader} refuses {what}: {e}")),
        }
    }

    fn transfer_leadership(&mut self) {
        let now = self.clock.now();
        let Some(leader) = self.current_leader() else {
            return;
        };
        let Some(core) = self.nodes.get_mut(&leader).and_then(|n| n.core.as_mut()) else {
            return;
        };
        let voters: Vec<NodeId> = core
            .conf_state()
            .voters
            .iter()
            .copied()
            .filter(|&v| v != leader)
            .collect();
        if voters.is_empty() {
            return;
        }
        let target = *self.rng.pick(&voters);
        let core = self
            .nodes
            .get_mut(&leader)
            .and_then(|n| n.core.as_mut())
            .expect("leader runs");
        match core.transfer_leader(target) {
            Ok(()) => self
                .log
                .record(now, format!("{leader} transfers leadership to {target}")),
            Err(e) => self
                .log
                .record(now, format!("{leader} refuses transfer to {target}: {e}")),
        }
    }

    /// Faults stop: the network heals and turns reliable, every crashed node restarts.
    /// Within `liveness_ticks` a leader must be elected and a new write committed and
    /// applied by every running member of its configuration.
    pub(crate) fn liveness_phase(&mut self) -> Result<(), Violation> {
        let now = self.clock.now();
        self.faults_on = false;
        self.net.heal();
        self.net.set_config(NetConfig::reliable());
        let down: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.started && !n.is_alive())
            .map(|n| n.id)
            .collect();
        for id in down {
            self.start(id);
        }
        self.log.record(now, "liveness phase: faults stopped");
        let bound = self.scenario.liveness_ticks;
        let mut probe: Option<(NodeId, u64)> = None;
        for _ in 0..bound {
            self.step()?;
            match probe {
                None => {
                    if let Some(leader) = self.current_leader() {
                        probe = self.propose_probe(leader).map(|i| (leader, i));
                    }
                }
                Some((leader, index)) => {
                    let Some(core) = self.nodes[&leader].core.as_ref() else {
                        probe = None;
                        continue;
                    };
                    if core.role() != Role::Leader {
                        probe = None;
                        continue;
                    }
                    let conf = core.conf_state().clone();
                    let all_applied = conf.members().iter().all(|m| {
                        self.nodes
                            .get(m)
                            .is_some_and(|n| n.sm.applied_index() >= index)
                    });
                    if all_applied {
                        let now = self.clock.now();
                        self.log.record(
                            now,
                            format!("liveness: {leader} committed i{index} everywhere"),
                        );
                        return Ok(());
                    }
                }
            }
        }
        let status: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.started)
            .map(|n| match &n.core {
                Some(c) => format!(
                    "{}:{:?} t{} commit {} applied {}",
                    n.id,
                    c.role(),
                    c.term().0,
                    c.commit().0,
                    n.sm.applied_index()
                ),
                None => format!("{}:down", n.id),
            })
            .collect();
        if let Some(leader) = self.current_leader() {
            if let Some(core) = self.nodes[&leader].core.as_ref() {
                for m in core.conf_state().members() {
                    if let Some(pr) = core.progress(m) {
                        self.log.record(
                            self.clock.now(),
                            format!("{leader} progress of {m}: {pr:?}"),
                        );
                    }
                }
            }
        }
        Err(Violation {
            property: "liveness",
            detail: format!(
                "no leader committed a new write on every member within {bound} ticks after \
                 faults stopped (probe {probe:?}); nodes: {}",
                status.join(", ")
            ),
        })
    }

    /// Proposes a probe write at `leader`; returns its index.
    fn propose_probe(&mut self, leader: NodeId) -> Option<u64> {
        let value = self.workload.next_value;
        self.workload.next_value += 1;
        let core = self.nodes.get_mut(&leader)?.core.as_mut()?;
        let data = crate::sim::state_machine::Put { key: 0, value }.encode();
        core.propose(data).ok().map(|i| i.0)
    }
}
