//! The range descriptor: which group serves which keys on which replicas.
//!
//! Owns the wire form and the pure questions about it (does it contain a key,
//! is it well formed). The truth about a range lives in its own Raft log and
//! in the meta range; this type is only how it travels.

use rkyv::{Archive, Deserialize, Serialize};

use super::ids::{GroupId, NodeId, RangeEpoch, RangeId};

/// The role of a replica in its group's configuration.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum ReplicaRole {
    /// Votes and counts towards the quorum.
    Voter,
    /// Receives the log but does not vote (catching up before promotion).
    Learner,
    /// A voter of the incoming configuration only, while the group is in a joint
    /// configuration (being added).
    Joining,
    /// A voter of the outgoing configuration only, while the group is in a joint
    /// configuration (being removed).
    Leaving,
}

impl ReplicaRole {
    /// Whether the replica votes (in either half of a joint configuration).
    pub fn votes(self) -> bool {
        !matches!(self, ReplicaRole::Learner)
    }
}

/// One replica of a range.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
#[rkyv(compare(PartialEq))]
pub struct ReplicaDescriptor {
    /// The node that holds the replica.
    pub node: NodeId,
    /// Voter or learner.
    pub role: ReplicaRole,
}

/// A range: keys `[start, end)` served by one Raft group.
///
/// Invariants (checked by [`RangeDescriptor::validate`]): `end` is empty
/// (unbounded) or greater than `start`; node ids are unique and non-zero;
/// at least one voter.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
#[rkyv(compare(PartialEq))]
pub struct RangeDescriptor {
    /// The range.
    pub id: RangeId,
    /// The Raft group that serves it.
    pub group: GroupId,
    /// First key of the range (inclusive); empty for the first range.
    pub start: Vec<u8>,
    /// End of the range (exclusive); empty means no upper bound (the last range).
    pub end: Vec<u8>,
    /// Replicas with their roles.
    pub replicas: Vec<ReplicaDescriptor>,
    /// Bumped by every split, merge and membership change.
    pub epoch: RangeEpoch,
}

/// Why a descriptor is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// `end` is not empty and not greater than `start`.
    #[error("range {range} has end <= start; a descriptor must cover a non-empty key span")]
    EmptySpan {
        /// The range.
        range: RangeId,
    },
    /// No voter: the group could never elect a leader.
    #[error("range {range} has no voter; a group needs at least one voting replica")]
    NoVoter {
        /// The range.
        range: RangeId,
    },
    /// The same node appears twice, or node 0.
    #[error("range {range} lists node {node} twice or uses the reserved node id 0")]
    BadReplica {
        /// The range.
        range: RangeId,
        /// The offending node.
        node: NodeId,
    },
}

fn span_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

impl RangeDescriptor {
    /// Whether `key` lies in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        span_contains(&self.start, &self.end, key)
    }

    /// Whether `[start, end)` of a request lies wholly inside this range; an
    /// empty `end` means "to the end of the key space".
    pub fn contains_span(&self, start: &[u8], end: &[u8]) -> bool {
        if !self.contains(start) {
            return false;
        }
        match (end.is_empty(), self.end.is_empty()) {
            (_, true) => true,
            (true, false) => false,
            (false, false) => end <= self.end.as_slice(),
        }
    }

    /// Replicas that vote (in either half of a joint configuration).
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(|r| r.role.votes())
            .map(|r| r.node)
    }

    /// The replica on `node`, if any.
    pub fn replica(&self, node: NodeId) -> Option<&ReplicaDescriptor> {
        self.replicas.iter().find(|r| r.node == node)
    }

    /// Checks the invariants stated on the type.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        if !self.end.is_empty() && self.end <= self.start {
            return Err(DescriptorError::EmptySpan { range: self.id });
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if r.node.0 == 0 || self.replicas[..i].iter().any(|o| o.node == r.node) {
                return Err(DescriptorError::BadReplica {
                    range: self.id,
                    node: r.node,
                });
            }
        }
        if self.voters().next().is_none() {
            return Err(DescriptorError::NoVoter { range: self.id });
        }
        Ok(())
    }
}

impl ArchivedRangeDescriptor {
    /// Whether `key` lies in `[start, end)`, read in place.
    pub fn contains(&self, key: &[u8]) -> bool {
        span_contains(&self.start, &self.end, key)
    }
}
