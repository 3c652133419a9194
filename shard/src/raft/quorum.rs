//! Majority arithmetic (thesis §3.6 commit rule, §4.3 joint quorums): the highest index held
//! by a quorum, and the outcome of a vote. A joint configuration needs both halves.

use super::types::{ConfState, NodeId};

/// The state of an election, seen by the candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither a quorum of grants nor of rejections yet.
    Pending,
    Won,
    Lost,
}

/// The largest value that a majority of `voters` has reached (`acked(id)`); `u64::MAX` for
/// an empty set so that an absent half of a joint quorum never limits the other.
/// `scratch` is reused so that the hot path does not allocate.
pub fn majority_value(
    voters: &[NodeId],
    acked: impl Fn(NodeId) -> u64,
    scratch: &mut Vec<u64>,
) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    scratch.clear();
    scratch.extend(voters.iter().map(|&v| acked(v)));
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    // With n voters, the (n/2 + 1)-th largest value is held by a majority.
    scratch[voters.len() / 2]
}

/// `majority_value` for a possibly joint configuration: the minimum over both halves.
pub fn joint_value(conf: &ConfState, acked: impl Fn(NodeId) -> u64, scratch: &mut Vec<u64>) -> u64 {
    let incoming = majority_value(&conf.voters, &acked, scratch);
    let outgoing = majority_value(&conf.voters_outgoing, &acked, scratch);
    incoming.min(outgoing)
}

/// The result of a vote among `voters`, with `vote(id)`: `Some(granted)` or `None` (no
/// answer yet).
pub fn majority_vote(voters: &[NodeId], vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut yes, mut no) = (0usize, 0usize);
    for &v in voters {
        match vote(v) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    let majority = voters.len() / 2 + 1;
    if yes >= majority {
        VoteResult::Won
    } else if no >= majority || voters.len() - no < majority {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

/// `majority_vote` for a possibly joint configuration: both halves must win.
pub fn joint_vote(conf: &ConfState, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let a = majority_vote(&conf.voters, &vote);
    let b = majority_vote(&conf.voters_outgoing, &vote);
    match (a, b) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn majority_of_three_and_joint() {
        let mut s = Vec::new();
        let m = [0u64, 5, 7, 3, 9, 1];
        let f = |id: NodeId| m[id.0 as usize];
        assert_eq!(majority_value(&ids(&[1, 2, 3]), f, &mut s), 5);
        assert_eq!(majority_value(&ids(&[1, 2, 3, 4]), f, &mut s), 5);
        assert_eq!(majority_value(&ids(&[]), f, &mut s), u64::MAX);
        let joint = ConfState {
            voters: ids(&[3, 4, 5]),
            voters_outgoing: ids(&[1, 2, 3]),
            learners: vec![],
        };
        assert_eq!(joint_value(&joint, f, &mut s), 3);
    }

    #[test]
    fn votes() {
        let v = ids(&[1, 2, 3]);
        assert_eq!(
            majority_vote(&v, |id| (id.0 < 3).then_some(true)),
            VoteResult::Won
        );
        assert_eq!(
            majority_vote(&v, |id| (id.0 == 1).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(majority_vote(&v, |id| Some(id.0 == 1)), VoteResult::Lost);
    }
}
