//! Raft messages between nodes: one [`RaftBatch`] frame carries the messages
//! of many groups bound for one destination shard (multi-raft batching).
//!
//! Owns the wire shape only; the protocol (what a message means, when it is
//! sent) lives in `shard::raft`. Entry payloads are archived byte vectors:
//! the receiver reads them in place (`ArchivedVec<u8>::as_slice`) and may
//! hand them to the WAL without deserializing.
//!
//! ```text
//!  RaftBatch { from, to, to_shard }
//!   ├─ messages:            [ RaftMessage { group, term, body } ... ]
//!   ├─ heartbeats:          [ Heartbeat { group, term, commit, seq, tick } ... ]  one per group,
//!   ├─ heartbeat_responses: [ HeartbeatResponse { group, term, seq, tick } ... ] coalesced per node
//!   └─ commits:             [ CommitNotice { group, term, commit } ... ]  no answer
//! ```

use rkyv::{Archive, Deserialize, Serialize};

use super::ids::{GroupId, LogId, LogIndex, NodeId, ShardId, Term};
use super::range::RangeDescriptor;
use crate::frame::FrameKind;

/// Every Raft message from one node to one shard of another node since the
/// last flush of that destination's queue.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct RaftBatch {
    /// Sending node (the replica of every group in this batch on that node).
    pub from: NodeId,
    /// Receiving node.
    pub to: NodeId,
    /// Shard of the receiving node that owns every group in this batch.
    pub to_shard: ShardId,
    /// Per-group messages, in the order they were produced for each group.
    pub messages: Vec<RaftMessage>,
    /// Leader heartbeats, at most one per group.
    pub heartbeats: Vec<Heartbeat>,
    /// Follower answers to heartbeats, at most one per group.
    pub heartbeat_responses: Vec<HeartbeatResponse>,
    /// Leader commit indexes for followers that hold the entries (no answer expected).
    pub commits: Vec<CommitNotice>,
}
crate::wire_message!(RaftBatch, FrameKind::RaftBatch);

impl RaftBatch {
    /// Number of Raft messages carried (heartbeats counted one each).
    pub fn message_count(&self) -> usize {
        self.messages.len()
            + self.heartbeats.len()
            + self.heartbeat_responses.len()
            + self.commits.len()
    }
}

impl ArchivedRaftBatch {
    /// Number of Raft messages carried (heartbeats counted one each).
    pub fn message_count(&self) -> usize {
        self.messages.len()
            + self.heartbeats.len()
            + self.heartbeat_responses.len()
            + self.commits.len()
    }
}

/// One Raft message of one group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftMessage {
    /// The group.
    pub group: GroupId,
    /// The sender's current term in that group.
    pub term: Term,
    /// What is said.
    pub body: RaftBody,
}

/// The message proper (Raft thesis §3 and §9 names; etcd `MsgApp` ...).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RaftBody {
    /// Leader → follower: entries after `prev` (`MsgApp`).
    Append(Append),
    /// Follower → leader (`MsgAppResp`).
    AppendResponse(AppendResponse),
    /// Candidate → voter (`MsgVote`).
    RequestVote(VoteRequest),
    /// Voter → candidate (`MsgVoteResp`).
    VoteResponse(VoteResponse),
    /// Pre-candidate → voter, without bumping the term (`MsgPreVote`, thesis §9.6).
    RequestPreVote(VoteRequest),
    /// Voter → pre-candidate (`MsgPreVoteResp`).
    PreVoteResponse(VoteResponse),
    /// Leader → follower: one chunk of a snapshot (`MsgSnap`).
    Snapshot(SnapshotChunk),
    /// Follower → leader: progress of a snapshot transfer.
    SnapshotResponse(SnapshotResponse),
    /// Leader → transferee: campaign at once (`MsgTimeoutNow`, thesis §3.10).
    TimeoutNow,
    /// Follower → leader: ask for a read index (`MsgReadIndex`, thesis §6.4).
    ReadIndex(ReadIndexRequest),
    /// Leader → follower (`MsgReadIndexResp`).
    ReadIndexResponse(ReadIndexResponse),
    /// Member → a replica that campaigns in a group whose configuration, committed and
    /// applied at `applied` on the sender, no longer has it: it was removed (a replica
    /// that missed its removal learns it here and may delete its copy if it applied less).
    Removed {
        /// The sender's applied index.
        applied: LogIndex,
    },
    /// Member → a replica that campaigns in a group the sender destroyed: the group was
    /// merged away (its range absorbed by its left neighbour) and exists nowhere any more.
    /// The replica may delete its copy unless a local range may still absorb it.
    Destroyed {
        /// The group that absorbed it (0: the sender no longer knows, after a restart).
        survivor: GroupId,
        /// The index of the merge entry in the survivor's log (0 when unknown): a local
        /// replica of the survivor that applied less will still absorb the copy.
        index: LogIndex,
    },
    /// A replica that cannot campaign (a learner) and has heard no leader for an election
    /// timeout → the voters of its configuration: a quiesced leader wakes up, and its
    /// heartbeats then tell the replica who leads (a restarted learner of a quiet group
    /// would otherwise never learn it). Also a replica's periodic membership check (a
    /// member that no longer counts it answers `Removed`): sent to the leader it follows,
    /// it carries that leader's term in the message's `term` (0 otherwise), and a
    /// quiesced leader of that term stays asleep.
    LeaderWanted,
}

/// Log entries for a follower.
///
/// Invariant: `entries[i]` has index `prev.index + 1 + i` (entries are contiguous).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Append {
    /// The entry just before the first one sent (log matching check).
    pub prev: LogId,
    /// The entries, contiguous after `prev`.
    pub entries: Vec<Entry>,
    /// Leader's commit index.
    pub commit: LogIndex,
}

fn index_after(prev: u64, i: usize) -> Option<LogIndex> {
    prev.checked_add(1)?
        .checked_add(u64::try_from(i).ok()?)
        .map(LogIndex)
}

impl Append {
    /// Index of `entries[i]`; `None` if it would overflow a `u64` (only a
    /// corrupt or hostile `prev` can do that: drop the message).
    pub fn entry_index(&self, i: usize) -> Option<LogIndex> {
        index_after(self.prev.index.0, i)
    }
}

impl ArchivedAppend {
    /// Index of `entries[i]`, read in place; `None` on overflow (see [`Append::entry_index`]).
    pub fn entry_index(&self, i: usize) -> Option<LogIndex> {
        index_after(self.prev.index.0.to_native(), i)
    }
}

/// What an entry's payload is.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum EntryKind {
    /// A command for the range state machine (or an empty leader no-op).
    Normal,
    /// A membership change.
    ConfChange,
}

/// One log entry; the payload is read in place on the receiver.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    /// Term in which the entry was created.
    pub term: Term,
    /// Normal or membership change.
    pub kind: EntryKind,
    /// Opaque command bytes.
    pub payload: Vec<u8>,
}

/// A follower's answer to [`Append`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AppendResponse {
    /// The log matches up to `last_index` (the last entry of the append, or
    /// `prev.index` for an empty one).
    Accepted {
        /// Highest index known to match the leader's log.
        last_index: LogIndex,
    },
    /// The log does not contain `prev`; `hint` is the follower's last entry at
    /// or below `rejected` so the leader can skip back fast (etcd's reject hint).
    Rejected {
        /// The `prev.index` that did not match.
        rejected: LogIndex,
        /// Where the leader should probe next.
        hint: LogId,
    },
}

/// Why a candidate campaigns.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum CampaignReason {
    /// The election timeout fired.
    Election,
    /// The old leader asked (TimeoutNow): voters ignore their leader lease.
    LeaderTransfer,
}

/// A vote or pre-vote request; the message's term is the proposed term.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct VoteRequest {
    /// The candidate's last log entry (election restriction, thesis §3.6).
    pub last_log: LogId,
    /// Why the campaign started.
    pub reason: CampaignReason,
}

/// A voter's decision.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum VoteResponse {
    /// The vote is given.
    Granted,
    /// The vote is refused.
    Rejected,
}

/// One chunk of a snapshot stream.
///
/// Invariant: `offset_bytes + data.len() <= total_bytes`; the chunk with
/// `offset_bytes + data.len() == total_bytes` is the last.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotChunk {
    /// Last log entry the snapshot includes.
    pub snapshot: LogId,
    /// The range as of that entry.
    pub descriptor: RangeDescriptor,
    /// The Raft membership as of that entry (it may be joint, which the
    /// descriptor cannot say): the voters.
    pub voters: Vec<NodeId>,
    /// The outgoing voters of a joint configuration (empty otherwise).
    pub voters_outgoing: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// Where `data` starts in the whole snapshot.
    pub offset_bytes: u64,
    /// Length of the whole snapshot.
    pub total_bytes: u64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

impl SnapshotChunk {
    /// Whether this chunk ends the snapshot.
    pub fn is_last(&self) -> bool {
        self.offset_bytes.saturating_add(self.data.len() as u64) >= self.total_bytes
    }
}

/// What the receiver did with snapshot chunks.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum SnapshotOutcome {
    /// Stored up to `received_bytes`; send the next chunk.
    Continue,
    /// The whole snapshot is installed.
    Installed,
    /// Refused (stale snapshot or a gap): the leader restarts the transfer.
    Rejected,
}

/// Follower → leader: progress of a snapshot transfer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotResponse {
    /// Which snapshot.
    pub snapshot: LogId,
    /// Bytes stored contiguously from offset 0.
    pub received_bytes: u64,
    /// Continue, installed or rejected.
    pub outcome: SnapshotOutcome,
}

/// Follower → leader: the follower wants to serve a read.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReadIndexRequest {
    /// Opaque id the follower matches the answer with.
    pub context: u64,
}

/// Leader → follower: the read index, once the leader confirmed its leadership.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReadIndexResponse {
    /// Serve the read once applied up to `index`.
    Ready {
        /// The request's context.
        context: u64,
        /// The leader's commit index when leadership was confirmed.
        index: LogIndex,
    },
    /// The receiver is not (or no longer) leader: retry elsewhere.
    NotLeader {
        /// The request's context.
        context: u64,
    },
}

/// A leader's heartbeat for one group, coalesced with others per node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct Heartbeat {
    /// The group.
    pub group: GroupId,
    /// Leader's term.
    pub term: Term,
    /// Commit index the follower may advance to (at most what it matched).
    pub commit: LogIndex,
    /// The leader's heartbeat round (ReadIndex confirmation); echoed back.
    pub seq: u64,
    /// The leader's tick count when sent (leases); echoed back.
    pub tick: u64,
}

/// A leader's commit index for one group, sent to a follower that acknowledged holding the
/// log up to `commit` in the leader's term, when nothing else is due to it: unlike an empty
/// append, it gets no answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct CommitNotice {
    /// The group.
    pub group: GroupId,
    /// Leader's term.
    pub term: Term,
    /// Commit index the follower may advance to (at most what it acknowledged).
    pub commit: LogIndex,
}

/// A follower's answer to a [`Heartbeat`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponse {
    /// The group.
    pub group: GroupId,
    /// Follower's term (a higher one makes the leader step down).
    pub term: Term,
    /// The heartbeat's `seq`, echoed.
    pub seq: u64,
    /// The heartbeat's `tick`, echoed.
    pub tick: u64,
}
