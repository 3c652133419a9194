//! Linearizable reads on the leader (thesis §6.4): requests waiting for the first commit of
//! the term, and requests waiting for a heartbeat round to be acknowledged by a quorum.
//! Leases (§6.4.1) are decided in `node.rs` from the heartbeat acknowledgements.

use super::types::{LogIndex, NodeId, ReadRequestId};
use std::collections::VecDeque;

/// One read the leader serves, for itself (`from == leader`) or a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRead {
    pub request: ReadRequestId,
    pub from: NodeId,
    /// The commit index when the read arrived: serve once a quorum confirmed leadership.
    pub index: LogIndex,
    /// The heartbeat round whose acknowledgement by a quorum confirms it.
    pub seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// Reads that arrived before the leader committed an entry of its term (§6.4 step 1).
    pub waiting_for_commit: Vec<(ReadRequestId, NodeId)>,
    /// Reads waiting for a heartbeat round, in increasing `seq` order.
    pub pending: VecDeque<PendingRead>,
}

impl ReadOnly {
    /// Removes and returns (into `out`) every read whose round `acked_seq` covers.
    pub fn release(&mut self, acked_seq: u64, out: &mut Vec<PendingRead>) {
        while self.pending.front().is_some_and(|r| r.seq <= acked_seq) {
            if let Some(r) = self.pending.pop_front() {
                out.push(r);
            }
        }
    }

    pub fn clear(&mut self) {
        self.waiting_for_commit.clear();
        self.pending.clear();
    }
}
