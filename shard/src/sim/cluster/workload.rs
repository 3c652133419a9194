//! The clients: each issues one operation at a time (a write of a unique value, or a
//! linearizable read) to a node, and records invocation and completion in the history the
//! linearizability oracle checks. A write is acknowledged when the node that accepted it
//! applies it at the index `propose` returned; a read is answered when the node's state
//! machine reaches the index of its `ReadState`. A crash or a timeout leaves the operation
//! unanswered (its outcome unknown), as a real client would see it.

use std::collections::BTreeMap;

use super::{Canary, Cluster};
use crate::raft::{LogIndex, NodeId, ProposeError, ReadRequestId, Role};
use crate::sim::invariants::linearizability::{OpId, WriteOutcome};
use crate::sim::invariants::{digest, EntryView, Violation};
use crate::sim::state_machine::Put;

/// How the clients behave.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadProfile {
    /// Concurrent clients.
    pub clients: u64,
    /// Registers they share (few keys: more conflicts, sharper checks).
    pub keys: u64,
    /// Probability that an operation is a write (else a read).
    pub write_ratio: f64,
    /// Probability that an idle client starts an operation in a given tick.
    pub op_chance: f64,
    /// Ticks a client waits for an answer before giving up.
    pub timeout_ticks: u64,
}

impl Default for WorkloadProfile {
    fn default() -> Self {
        WorkloadProfile {
            clients: 3,
            keys: 3,
            write_ratio: 0.6,
            op_chance: 0.3,
            timeout_ticks: 80,
        }
    }
}

#[derive(Debug, Clone)]
enum Waiting {
    Write {
        op: OpId,
        node: NodeId,
        incarnation: u64,
        index: u64,
        value: u64,
    },
    Read {
        op: OpId,
        node: NodeId,
        incarnation: u64,
        request: u64,
        key: u64,
    },
}

#[derive(Debug, Clone)]
struct Client {
    waiting: Option<(Waiting, u64)>,
}

/// The clients' state.
#[derive(Debug)]
pub struct Workload {
    clients: Vec<Client>,
    pub(crate) next_value: u64,
    next_request: u64,
    /// Writes acknowledged, reads answered (for the liveness probe).
    pub(crate) acked_writes: u64,
}

impl Workload {
    pub(crate) fn new(profile: &WorkloadProfile) -> Workload {
        let clients = (0..profile.clients.max(1))
            .map(|_| Client { waiting: None })
            .collect::<Vec<_>>();
        Workload {
            clients,
            next_value: 1,
            next_request: 1,
            acked_writes: 0,
        }
    }

    /// `node` crashed: its callers never hear back.
    pub(crate) fn on_crash(&mut self, node: NodeId) {
        for c in &mut self.clients {
            let gone = match &c.waiting {
                Some((Waiting::Write { node: n, .. } | Waiting::Read { node: n, .. }, _)) => {
                    *n == node
                }
                None => false,
            };
            if gone {
                c.waiting = None;
            }
        }
    }
}

impl Cluster {
    /// A node a client would find as leader (the one with the highest term), if any.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.core.as_ref().map(|c| (c.term(), n.id, c.role())))
            .filter(|(_, _, role)| *role == Role::Leader)
            .map(|(term, id, _)| (term, id))
            .max()
            .map(|(_, id)| id)
    }

    fn random_alive(&mut self) -> Option<NodeId> {
        let alive: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_alive())
            .map(|n| n.id)
            .collect();
        if alive.is_empty() {
            return None;
        }
        Some(*self.rng.pick(&alive))
    }

    pub(crate) fn issue_client_ops(&mut self) {
        let profile = self.scenario.workload.clone();
        for ci in 0..self.workload.clients.len() {
            if self.workload.clients[ci].waiting.is_some() || !self.rng.chance(profile.op_chance) {
                continue;
            }
            let key = self.rng.between(1, profile.keys.max(1));
            if self.rng.chance(profile.write_ratio) {
                self.issue_write(ci, key);
            } else {
                self.issue_read(ci, key);
            }
        }
    }

    /// Proposes a write of a fresh value; returns whether a node accepted it.
    pub(crate) fn issue_write(&mut self, ci: usize, key: u64) -> bool {
        let now = self.clock.now();
        let target = if self.rng.chance(0.8) {
            self.current_leader()
        } else {
            None
        };
        let Some(mut target) = target.or_else(|| self.random_alive()) else {
            return false;
        };
        let value = self.workload.next_value;
        self.workload.next_value += 1;
        let command = Put { key, value }.encode();
        let op = self.history.invoke_write(key, value, now.0);
        for _attempt in 0..2 {
            let node = self.nodes.get_mut(&target).expect("node of the universe");
            let incarnation = node.incarnation;
            let Some(core) = node.core.as_mut() else {
                break;
            };
            match core.propose(command.clone()) {
                Ok(LogIndex(index)) => {
                    let term = core.term().0;
                    self.log.record(
                        now,
                        format!("client{ci} put k{key}={value} -> {target} i{index}"),
                    );
                    if self.scenario.canary == Some(Canary::AckBeforeCommit) {
                        self.history.complete_write(op, now.0, WriteOutcome::Acked);
                        let view = EntryView {
                            term,
                            digest: digest(0, &command),
                        };
                        if let Err(v) = self.checks.acked.on_ack(index, view) {
                            self.violation.get_or_insert(v);
                        }
                        return true;
                    }
                    let waiting = Waiting::Write {
                        op,
                        node: target,
                        incarnation,
                        index,
                        value,
                    };
                    let deadline = now.0 + self.scenario.workload.timeout_ticks;
                    self.workload.clients[ci].waiting = Some((waiting, deadline));
                    return true;
                }
                Err(ProposeError::NotLeader {
                    leader_hint: Some(hint),
                }) if hint != target => {
                    target = hint;
                }
                Err(_) => break,
            }
        }
        // Refused: it never entered a log.
        self.history.complete_write(op, now.0, WriteOutcome::Failed);
        false
    }

    fn issue_read(&mut self, ci: usize, key: u64) {
        let now = self.clock.now();
        let target = if self.rng.chance(0.5) {
            self.current_leader()
        } else {
            None
        };
        let Some(target) = target.or_else(|| self.random_alive()) else {
            return;
        };
        if self.scenario.canary == Some(Canary::ReadWithoutReadIndex) {
            let value = self.nodes[&target].sm.read(key);
            let op = self.history.invoke_read(key, now.0);
            self.history.complete_read(op, now.0, value);
            return;
        }
        let request = self.workload.next_request;
        self.workload.next_request += 1;
        let node = self.nodes.get_mut(&target).expect("node of the universe");
        let incarnation = node.incarnation;
        let Some(core) = node.core.as_mut() else {
            return;
        };
        if core.read_index(ReadRequestId(request)).is_ok() {
            let op = self.history.invoke_read(key, now.0);
            let waiting = Waiting::Read {
                op,
                node: target,
                incarnation,
                request,
                key,
            };
            let deadline = now.0 + self.scenario.workload.timeout_ticks;
            self.workload.clients[ci].waiting = Some((waiting, deadline));
        }
    }

    /// `node` applied `index`: acknowledge or fail the write waiting on it.
    pub(crate) fn on_applied(&mut self, node: NodeId, index: u64, view: EntryView, data: &[u8]) {
        let now = self.clock.now();
        let put = Put::decode(data);
        if let Some(put) = put {
            let first = *self.positions.entry(put.value).or_insert(index);
            if first != index {
                self.violation.get_or_insert(Violation {
                    property: "state_machine_safety",
                    detail: format!(
                        "value {} applied at index {first} and at {index}",
                        put.value
                    ),
                });
            }
        }
        let incarnation = self.nodes[&node].incarnation;
        for ci in 0..self.workload.clients.len() {
            let Some((
                Waiting::Write {
                    op,
                    node: n,
                    incarnation: inc,
                    index: i,
                    value,
                },
                _,
            )) = self.workload.clients[ci].waiting.clone()
            else {
                continue;
            };
            if n != node || inc != incarnation || i != index {
                continue;
            }
            self.workload.clients[ci].waiting = None;
            if put.is_some_and(|p| p.value == value) {
                self.history.complete_write(op, now.0, WriteOutcome::Acked);
                self.workload.acked_writes += 1;
                if let Err(v) = self.checks.acked.on_ack(index, view) {
                    self.violation.get_or_insert(v);
                }
                self.log
                    .record(now, format!("client{ci} ack {value} at i{index}"));
            } else {
                // Another entry took the index: this proposal can never commit.
                self.history.complete_write(op, now.0, WriteOutcome::Failed);
                self.log.record(
                    now,
                    format!("client{ci} put {value} lost its index {index}"),
                );
            }
        }
    }

    /// Serves the read states of `id` whose index its state machine has reached.
    pub(crate) fn serve_reads(&mut self, id: NodeId) {
        let now = self.clock.now();
        let node = self.nodes.get_mut(&id).expect("node of the universe");
        let applied = node.sm.applied_index();
        let mut ready = Vec::new();
        node.pending_reads.retain(|r| {
            if r.index.0 <= applied {
                ready.push(r.request.0);
                false
            } else {
                true
            }
        });
        let incarnation = node.incarnation;
        for request in ready {
            for ci in 0..self.workload.clients.len() {
                let Some((
                    Waiting::Read {
                        op,
                        node: n,
                        incarnation: inc,
                        request: r,
                        key,
                    },
                    _,
                )) = self.workload.clients[ci].waiting.clone()
                else {
                    continue;
                };
                if n != id || inc != incarnation || r != request {
                    continue;
                }
                let value = self.nodes[&id].sm.read(key);
                self.history.complete_read(op, now.0, value);
                self.workload.clients[ci].waiting = None;
                self.log
                    .record(now, format!("client{ci} read k{key}={value} at {id}"));
            }
        }
    }

    /// Clients that waited too long give up (the outcome stays unknown).
    pub(crate) fn expire_client_ops(&mut self) {
        let now = self.clock.now().0;
        for c in &mut self.workload.clients {
            if c.waiting
                .as_ref()
                .is_some_and(|(_, deadline)| *deadline <= now)
            {
                c.waiting = None;
            }
        }
    }

    /// After the liveness phase: every acknowledged write committed (when the liveness
    /// phase ran), and the history linearizable.
    pub(crate) fn final_checks(&mut self) -> Result<(), Violation> {
        if self.scenario.check_liveness {
            self.checks.acked.check_final(&self.checks.completeness)?;
        }
        let positions: &BTreeMap<u64, u64> = &self.positions;
        self.history.check(|value| positions.get(&value).copied())?;
        let (acked, reads) = self.history.counts();
        self.summary.writes_acked = acked;
        self.summary.reads_served = reads;
        Ok(())
    }

    /// The summary of the run so far.
    #[must_use]
    pub fn summary(&self) -> crate::sim::harness::SimSummary {
        self.summary
    }
}
