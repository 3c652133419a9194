//! The safety checks the simulator runs after every step, one file per property. They
//! read `NodeView`s (what each node's core, disk and state machine look like now) and the
//! events the runtime reports (applies, acknowledgements), and keep whatever history a
//! property needs across steps. They know nothing of how the cluster is driven, and a
//! runtime with a deliberately broken rule (a canary) must make one of them fail.

pub mod commit_monotonic;
pub mod election_safety;
pub mod leader_completeness;
pub mod linearizability;
pub mod log_matching;
pub mod no_acked_write_lost;
pub mod state_machine_safety;
pub mod vote_once;

use std::fmt;

/// One log entry, reduced to what the checks compare: its position and a digest of its
/// kind and payload (two different entries have different digests with overwhelming
/// probability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryView {
    /// Term the entry was created in.
    pub term: u64,
    /// Digest of kind and data.
    pub digest: u64,
}

/// One node as the checks see it at the end of a step.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// Whether the process is running (a crashed node has only its disk).
    pub alive: bool,
    /// Incarnation: bumped at every restart (volatile state may legitimately go back).
    pub incarnation: u64,
    /// Whether the core says it is leader.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Commit index of the core.
    pub commit: u64,
    /// Applied index of the state machine.
    pub applied: u64,
    /// Index of `log[0]`; entries below are covered by the snapshot.
    pub first_index: u64,
    /// The core's log from `first_index` on (including entries not yet persisted).
    pub log: Vec<EntryView>,
}

impl NodeView {
    /// The entry at `index`, if the node's log holds it.
    #[must_use]
    pub fn entry(&self, index: u64) -> Option<EntryView> {
        if index < self.first_index {
            return None;
        }
        self.log
            .get(usize::try_from(index - self.first_index).ok()?)
            .copied()
    }

    /// Index of the last entry (first_index - 1 when the log is empty).
    #[must_use]
    pub fn last_index(&self) -> u64 {
        self.first_index + self.log.len() as u64 - 1
    }
}

/// A broken safety property: which, and the facts that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's name (its file name).
    pub property: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.property, self.detail)
    }
}

/// A 64-bit FNV-1a digest of an entry's kind tag and payload.
#[must_use]
pub fn digest(kind_tag: u8, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(kind_tag);
    h = h.wrapping_mul(0x0100_0000_01b3);
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Every per-step property, with the history each keeps.
#[derive(Debug, Default)]
pub struct Checks {
    /// At most one leader per term.
    pub election: election_safety::ElectionSafety,
    /// Same index and term means same entry and same prefix.
    pub log_matching: log_matching::LogMatching,
    /// Committed entries are in every later leader's log.
    pub completeness: leader_completeness::LeaderCompleteness,
    /// No two nodes apply different entries at an index.
    pub state_machine: state_machine_safety::StateMachineSafety,
    /// Commit and apply never go back within one incarnation.
    pub monotonic: commit_monotonic::CommitMonotonic,
    /// An acknowledged write stays committed at its index.
    pub acked: no_acked_write_lost::NoAckedWriteLost,
    /// No node grants two votes in one term.
    pub votes: vote_once::VoteOnce,
}

impl Checks {
    /// Runs every per-step property on the current views.
    pub fn after_step(&mut self, views: &[NodeView]) -> Result<(), Violation> {
        self.election.check(views)?;
        self.monotonic.check(views)?;
        self.log_matching.check(views)?;
        self.completeness.check(views)?;
        self.acked.check(views, &self.completeness)?;
        Ok(())
    }
}
