//! Plain values of the Raft protocol: ids, positions, log entries, hard state, membership
//! (`ConfState`), snapshot metadata and read states. No behaviour beyond small helpers.

use bytes::Bytes;
use std::fmt;

/// A replica of one group, named by the node that hosts it. `NodeId(0)` is never valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A Raft term (thesis §3.3). Terms only grow on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty log (before the first entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

/// A read request chosen by the caller of `read_index`; returned in its `ReadState`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadRequestId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}
impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl LogIndex {
    /// The next index.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
    /// The previous index (saturating at 0).
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// The identity of a log entry: its term and index. Two logs holding the same `LogId` are
/// identical up to that index (Log Matching, thesis fig. 3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    pub term: Term,
    pub index: LogIndex,
}

impl LogId {
    pub const fn new(term: Term, index: LogIndex) -> LogId {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term.0, self.index.0)
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the state machine (empty `data`: the leader's no-op of its term).
    #[default]
    Normal,
    /// An encoded [`ConfChange`](super::ConfChange); it takes effect when committed.
    ConfChange,
}

/// One log entry. `data` is shared (`Bytes`): cloning an entry never copies its payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    pub fn id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }
    /// Bytes this entry counts for in batching limits (payload plus a fixed header).
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// What must be durable before a vote or an append acknowledgement leaves the node
/// (thesis fig. 3.1 "persistent state"). `commit` is persisted for a faster restart only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    pub term: Term,
    /// The candidate voted for in `term`, if any. Never changes within a term once set.
    pub vote: Option<NodeId>,
    pub commit: LogIndex,
}

/// A membership: voters, and during a joint configuration (thesis §4.3) the outgoing voters
/// too; learners receive the log but never vote. Each list is sorted and duplicate-free,
/// and `learners` is disjoint from both voter lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    /// Non-empty only in a joint configuration: C_old while C_old,new is in force.
    pub voters_outgoing: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of voters only (the usual bootstrap).
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        let mut v: Vec<NodeId> = voters.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        ConfState {
            voters: v,
            voters_outgoing: Vec::new(),
            learners: Vec::new(),
        }
    }
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok() || self.voters_outgoing.binary_search(&id).is_ok()
    }
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }
    /// Every member (voters of both halves and learners), without allocating: unsorted, and
    /// a voter of both halves of a joint configuration comes twice.
    pub fn each_member(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
    }
    /// Every member (voters of both halves and learners), sorted, without duplicates.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Describes a snapshot: the last entry it covers and the membership at that entry. The core
/// carries only this; the runtime ships and installs the state machine bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub last: LogId,
    pub conf_state: ConfState,
}

/// A linearizable read may be served once the local state machine has applied `index`
/// (thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    pub request: ReadRequestId,
    pub index: LogIndex,
}

/// The role of a node (thesis fig. 3.3, plus the pre-candidate of §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts the log from a leader; campaigns when its election timer fires.
    Follower,
    /// Asking for pre-votes (§9.6): its term is not yet raised.
    PreCandidate,
    /// Asking for votes in `term`; has voted for itself.
    Candidate,
    /// Leads `term`; the only role that accepts proposals.
    Leader,
}

/// A point-in-time view of a node for tests, metrics and the simulator's invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub persisted: LogIndex,
    pub first_index: LogIndex,
    pub last: LogId,
    pub conf_state: ConfState,
    pub quiesced: bool,
}
