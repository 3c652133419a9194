//! Protocol errors of the Raft core. The core does no I/O, so nothing here is an environment
//! fault: each error says "try elsewhere" or "try later", or names a caller bug in config.

use super::types::{LogIndex, NodeId};
use thiserror::Error;

/// A configuration the node refuses to start with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id 0 is reserved: give every node a non-zero id")]
    ZeroNodeId,
    #[error("election timeout of {ticks} ticks is too short: use at least 2 (typically 10)")]
    ElectionTimeoutTooShort { ticks: u32 },
    #[error("heartbeat interval {heartbeat} must be at least 1 and below the election timeout {election} ticks")]
    HeartbeatNotBelowElection { heartbeat: u32, election: u32 },
    #[error("lease of {lease} ticks must be below the election timeout of {election} ticks")]
    LeaseNotBelowElection { lease: u32, election: u32 },
    #[error("leader leases need check_quorum: enable it or set lease_ticks to 0")]
    LeaseWithoutCheckQuorum,
    #[error("max_entries_per_msg and max_bytes_per_msg must be at least 1")]
    ZeroBatch,
    #[error("max_inflight_msgs must be at least 1")]
    ZeroInflight,
    #[error("restored state is inconsistent: {reason}; the persisted log cannot be trusted")]
    InconsistentRestore { reason: String },
}

/// Why a proposal (entry, conf change or read) was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader; {}", retry_at(.leader_hint))]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal dropped: {reason}; retry later")]
    ProposalDropped { reason: &'static str },
    #[error("a membership change is still pending at index {pending}; retry once it committed")]
    ConfChangePending { pending: LogIndex },
    #[error("invalid membership change: {reason}")]
    InvalidConfChange { reason: &'static str },
}

/// A message the node refuses to take.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StepError {
    #[error("message for {to} delivered to {me}: fix the routing")]
    WrongRecipient { to: NodeId, me: NodeId },
    #[error("message from {from} claims an impossible position: {reason}; dropped")]
    Malformed { from: NodeId, reason: &'static str },
}

/// Why a leadership transfer was not started.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    #[error("not the leader; {}", retry_at(.leader_hint))]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("{target} is not a voter of this group: it cannot lead")]
    NotVoter { target: NodeId },
    #[error("{target} is already the leader")]
    AlreadyLeader { target: NodeId },
    #[error("{target} lags too far behind (it needs a snapshot); retry once it caught up")]
    TargetLagging { target: NodeId },
}

/// Why a snapshot or compaction request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("index {index} is not applied yet (applied {applied}); snapshot an applied index")]
    NotApplied { index: LogIndex, applied: LogIndex },
    #[error("index {index} is below the first log index {first}: already compacted")]
    Compacted { index: LogIndex, first: LogIndex },
    #[error("index {index} is not durable yet (persisted {persisted})")]
    NotPersisted {
        index: LogIndex,
        persisted: LogIndex,
    },
}

fn retry_at(hint: &Option<NodeId>) -> String {
    match hint {
        Some(leader) => format!("retry at the leader {leader}"),
        None => "no leader known yet: retry after an election timeout".to_owned(),
    }
}
