//! Admin requests and responses: range operations (split, merge, replica
//! changes, leadership transfer, listing) and cluster membership, status.
//!
//! Owns the wire shape only; `quasarctl` sends these with the blocking
//! client and the node's shard that leads the range (or the meta range)
//! carries them out. Errors reuse [`RequestError`].

use rkyv::{Archive, Deserialize, Serialize};

use super::client::RequestError;
use super::ids::{ClusterId, GroupId, LogIndex, NodeId, RangeEpoch, RangeId, RequestId, ShardId};
use super::range::{RangeDescriptor, ReplicaRole};
use crate::frame::FrameKind;

/// One admin request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AdminRequest {
    /// Echoed by the response.
    pub request_id: RequestId,
    /// The operation.
    pub op: AdminOp,
}
crate::wire_message!(AdminRequest, FrameKind::AdminRequest);

/// Which range an admin request is about.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum RangeSelector {
    /// By id.
    Id(RangeId),
    /// The range containing this key.
    Key(Vec<u8>),
}

/// An admin operation. Operations that change a range name the epoch the
/// operator saw; a changed range answers [`RequestError::RangeMoved`] instead
/// of acting on a descriptor the operator never looked at.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AdminOp {
    /// Split `range` at `split_key`: the right-hand range starts at it.
    SplitRange {
        /// The range.
        range: RangeId,
        /// First key of the new right-hand range.
        split_key: Vec<u8>,
        /// The epoch the operator saw.
        expected_epoch: RangeEpoch,
    },
    /// Merge `left` with the range right after it (same replicas required).
    MergeRanges {
        /// The left range (survives).
        left: RangeId,
        /// The epoch of `left` the operator saw.
        expected_epoch: RangeEpoch,
    },
    /// Add a replica on `node` (a voter is added as a learner, caught up, then promoted).
    AddReplica {
        /// The range.
        range: RangeId,
        /// The new replica's node.
        node: NodeId,
        /// Its final role.
        role: ReplicaRole,
        /// The epoch the operator saw.
        expected_epoch: RangeEpoch,
    },
    /// Remove the replica on `node` (leadership moves away first).
    RemoveReplica {
        /// The range.
        range: RangeId,
        /// The replica's node.
        node: NodeId,
        /// The epoch the operator saw.
        expected_epoch: RangeEpoch,
    },
    /// Move a replica: add on `to`, catch up, promote, remove from `from`.
    MoveReplica {
        /// The range.
        range: RangeId,
        /// Node losing the replica.
        from: NodeId,
        /// Node gaining it.
        to: NodeId,
        /// The epoch the operator saw.
        expected_epoch: RangeEpoch,
    },
    /// Transfer leadership of `range` to the voter on `to`.
    TransferLeader {
        /// The range.
        range: RangeId,
        /// The new leader.
        to: NodeId,
    },
    /// List ranges in key order from `start_key`, at most `limit` of them.
    ListRanges {
        /// First key to list from (empty: from the start).
        start_key: Vec<u8>,
        /// Page size (at least 1).
        limit: u32,
    },
    /// Describe one range.
    DescribeRange(RangeSelector),
    /// List the cluster's members.
    ListMembers,
    /// Add a node to the cluster.
    AddMember {
        /// Its id (non-zero, unused).
        node: NodeId,
        /// The address peers dial (host:base_port).
        address: String,
    },
    /// Remove a node from the cluster (it must hold no replica).
    RemoveMember {
        /// The node.
        node: NodeId,
    },
    /// The answering node's status.
    Status,
}

/// The answer to one [`AdminRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct AdminResponse {
    /// The request's id.
    pub request_id: RequestId,
    /// The reply or a typed error.
    pub result: Result<AdminReply, RequestError>,
}
crate::wire_message!(AdminResponse, FrameKind::AdminResponse);

/// A range with its current leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeInfo {
    /// The descriptor.
    pub descriptor: RangeDescriptor,
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The leader's commit index, if known.
    pub commit: Option<LogIndex>,
}

/// A member's state in the cluster.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum MemberState {
    /// Serving.
    Active,
    /// Added, not yet heard from.
    Joining,
    /// Not reachable from the answering node.
    Unreachable,
}

/// One cluster member.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Member {
    /// The node.
    pub node: NodeId,
    /// The address peers dial.
    pub address: String,
    /// Its state as seen by the answering node.
    pub state: MemberState,
}

/// One shard's status.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ShardStatus {
    /// The shard.
    pub shard: ShardId,
    /// Groups with a replica on this shard.
    pub groups: u32,
    /// Of those, groups this shard leads.
    pub leaders: u32,
    /// Bytes of WAL on disk.
    pub wal_bytes: u64,
    /// CPU time (user and system) of the shard's thread since it started, in microseconds
    /// (10 ms resolution; 0 where the platform does not tell).
    pub cpu_micros: u64,
}

/// A node's status.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NodeStatus {
    /// The cluster.
    pub cluster: ClusterId,
    /// The node.
    pub node: NodeId,
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// User CPU time of the whole process (every thread), in microseconds (10 ms
    /// resolution; 0 where the platform does not tell).
    pub cpu_user_micros: u64,
    /// System CPU time of the whole process, in microseconds.
    pub cpu_system_micros: u64,
    /// Per shard.
    pub shards: Vec<ShardStatus>,
}

/// A successful admin answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum AdminReply {
    /// The range was split.
    Split {
        /// The left-hand range (same id, new epoch).
        left: RangeDescriptor,
        /// The new right-hand range.
        right: RangeDescriptor,
    },
    /// The ranges were merged.
    Merged {
        /// The surviving range.
        merged: RangeDescriptor,
    },
    /// The replica set changed (add, remove, move).
    ReplicasChanged {
        /// The range after the change.
        descriptor: RangeDescriptor,
    },
    /// Leadership moved.
    LeaderTransferred {
        /// The range.
        range: RangeId,
        /// Its group.
        group: GroupId,
        /// The new leader.
        leader: NodeId,
    },
    /// A page of ranges.
    Ranges {
        /// Ranges in key order.
        ranges: Vec<RangeInfo>,
        /// Start key of the next page; `None` after the last range.
        resume_key: Option<Vec<u8>>,
    },
    /// One range.
    Range(RangeInfo),
    /// The members.
    Members(Vec<Member>),
    /// A member was added.
    MemberAdded(Member),
    /// A member was removed.
    MemberRemoved {
        /// The node.
        node: NodeId,
    },
    /// The node's status.
    Status(NodeStatus),
}
