//! The Raft core: a deterministic, sans-I/O implementation of the whole protocol (thesis:
//! D. Ongaro, "Consensus: Bridging Theory and Practice", 2014). It owns no clock, socket,
//! file, thread or global RNG, and has no `async`. Drive a [`RaftNode`] with `tick`,
//! `step`, `propose`, ...; do what its [`Ready`] says; report back with `advance`.
//!
//! ```
//! use quasar_shard::raft::{Config, ConfState, NodeId, RaftNode, Restored};
//! let conf = ConfState::with_voters([NodeId(1)]);
//! let mut node = RaftNode::new(&Config::new(NodeId(1)), Restored::new_group(conf), 7).unwrap();
//! node.campaign();
//! // A single voter: persist its vote, then it leads.
//! while let Some(rd) = node.ready() {
//!     node.advance(rd.done());
//! }
//! assert!(node.leader() == Some(NodeId(1)));
//! let index = node.propose(bytes::Bytes::from_static(b"x")).unwrap();
//! let mut applied = Vec::new();
//! while let Some(rd) = node.ready() {
//!     applied.extend(rd.apply.iter().map(|e| e.index));
//!     node.advance(rd.done());
//! }
//! assert!(applied.contains(&index));
//! ```

mod confchange;
mod config;
mod errors;
mod log;
mod message;
mod node;
mod progress;
mod quorum;
mod read_only;
mod ready;
mod types;
mod unstable;

pub use confchange::{ConfChange, DecodeError};
pub use config::Config;
pub use errors::{ConfigError, ProposeError, SnapshotError, StepError, TransferError};
pub use message::{AppendOutcome, Campaign, Message, MessageBody, VoteKind};
pub use node::{RaftNode, SnapshotStatus};
pub use progress::{Inflights, Progress, ProgressState};
pub use quorum::VoteResult;
pub use read_only::PendingRead;
pub use ready::{Advanced, Ready, Restored};
pub use types::{
    ConfState, Entry, EntryKind, HardState, LogId, LogIndex, NodeId, ReadRequestId, ReadState,
    Role, SnapshotMeta, Status, Term,
};
