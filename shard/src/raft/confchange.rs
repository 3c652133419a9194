//! Membership changes (thesis §4): their log encoding and how each one turns one
//! `ConfState` into the next. Any change of voters goes through a joint configuration
//! (§4.3): `EnterJoint` makes C_old,new, the leader then proposes `LeaveJoint` for C_new.
//! A change of learners only takes effect in one step.
//!
//! ```text
//!   C_old --EnterJoint{C_new}--> C_old,new (both quorums) --LeaveJoint--> C_new
//! ```
//!
//! A change takes effect on a node when the node learns that its entry is committed.

use super::types::{ConfState, NodeId};
use bytes::{BufMut, Bytes, BytesMut};

/// One membership change, as carried by an `EntryKind::ConfChange` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Replace the learners; voters stay as they are.
    Learners { learners: Vec<NodeId> },
    /// Enter the joint configuration: `voters` become the incoming voters, the current
    /// voters the outgoing ones, `learners` the learners.
    EnterJoint {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Leave the joint configuration: only the incoming voters remain.
    LeaveJoint,
}

/// A conf change entry whose bytes do not decode.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("conf change entry does not decode: {reason}; the log is corrupt")]
pub struct DecodeError {
    pub reason: &'static str,
}

const TAG_LEARNERS: u8 = 1;
const TAG_ENTER_JOINT: u8 = 2;
const TAG_LEAVE_JOINT: u8 = 3;

impl ConfChange {
    /// The change that moves `current` to `target` (voters and learners of `target`), or
    /// why there is none.
    pub fn towards(current: &ConfState, target: &ConfState) -> Result<ConfChange, &'static str> {
        if current.is_joint() {
            return Err("the group is in a joint configuration; wait for it to leave");
        }
        if target.is_joint() {
            return Err("the target must not be joint");
        }
        let mut voters = target.voters.clone();
        voters.sort_unstable();
        voters.dedup();
        let mut learners = target.learners.clone();
        learners.sort_unstable();
        learners.dedup();
        let change = if voters == current.voters {
            if learners == current.learners {
                return Err("the target equals the current configuration");
            }
            ConfChange::Learners { learners }
        } else {
            ConfChange::EnterJoint { voters, learners }
        };
        change.apply(current)?;
        Ok(change)
    }

    /// The configuration after this change, or why it cannot apply to `current`.
    pub fn apply(&self, current: &ConfState) -> Result<ConfState, &'static str> {
        match self {
            ConfChange::Learners { learners } => {
                if current.is_joint() {
                    return Err("learner change while joint");
                }
                check_sorted_ids(learners)?;
                if learners
                    .iter()
                    .any(|l| current.voters.binary_search(l).is_ok())
                {
                    return Err("a voter cannot also be a learner");
                }
                Ok(ConfState {
                    voters: current.voters.clone(),
                    voters_outgoing: Vec::new(),
                    learners: learners.clone(),
                })
            }
            ConfChange::EnterJoint { voters, learners } => {
                if current.is_joint() {
                    return Err("already joint");
                }
                check_sorted_ids(voters)?;
                check_sorted_ids(learners)?;
                if voters.is_empty() {
                    return Err("a configuration needs at least one voter");
                }
                if learners.iter().any(|l| {
                    voters.binary_search(l).is_ok() || current.voters.binary_search(l).is_ok()
                }) {
                    return Err(
                        "a learner cannot be a voter of either half; demote a voter by \
                                removing it first",
                    );
                }
                Ok(ConfState {
                    voters: voters.clone(),
                    voters_outgoing: current.voters.clone(),
                    learners: learners.clone(),
                })
            }
            ConfChange::LeaveJoint => {
                if !current.is_joint() {
                    return Err("not joint");
                }
                Ok(ConfState {
                    voters: current.voters.clone(),
                    voters_outgoing: Vec::new(),
                    learners: current.learners.clone(),
                })
            }
        }
    }

    /// The bytes stored in the entry: a tag, then for each id list a u32 count and u64 ids,
    /// little-endian.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        match self {
            ConfChange::Learners { learners } => {
                b.put_u8(TAG_LEARNERS);
                put_ids(&mut b, learners);
            }
            ConfChange::EnterJoint { voters, learners } => {
                b.put_u8(TAG_ENTER_JOINT);
                put_ids(&mut b, voters);
                put_ids(&mut b, learners);
            }
            ConfChange::LeaveJoint => b.put_u8(TAG_LEAVE_JOINT),
        }
        b.freeze()
    }

    pub fn decode(mut bytes: &[u8]) -> Result<ConfChange, DecodeError> {
        let tag = take_u8(&mut bytes)?;
        let change = match tag {
            TAG_LEARNERS => ConfChange::Learners {
                learners: take_ids(&mut bytes)?,
            },
            TAG_ENTER_JOINT => {
                let voters = take_ids(&mut bytes)?;
                ConfChange::EnterJoint {
                    voters,
                    learners: take_ids(&mut bytes)?,
                }
            }
            TAG_LEAVE_JOINT => ConfChange::LeaveJoint,
            _ => {
                return Err(DecodeError {
                    reason: "unknown tag",
                })
            }
        };
        if !bytes.is_empty() {
            return Err(DecodeError {
                reason: "trailing bytes",
            });
        }
        Ok(change)
    }
}

fn check_sorted_ids(ids: &[NodeId]) -> Result<(), &'static str> {
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err("ids must be sorted and unique");
    }
    if ids.contains(&NodeId(0)) {
        return Err("node id 0 is reserved");
    }
    Ok(())
}

fn put_ids(b: &mut BytesMut, ids: &[NodeId]) {
    b.put_u32_le(u32::try_from(ids.len()).unwrap_or(u32::MAX));
    for id in ids {
        b.put_u64_le(id.0);
    }
}

fn take_u8(bytes: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&first, rest) = bytes.split_first().ok_or(DecodeError {
        reason: "truncated",
    })?;
    *bytes = rest;
    Ok(first)
}

fn take_ids(bytes: &mut &[u8]) -> Result<Vec<NodeId>, DecodeError> {
    let (len, rest) = bytes.split_at_checked(4).ok_or(DecodeError {
        reason: "truncated",
    })?;
    let count = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if rest.len() < count.saturating_mul(8) {
        return Err(DecodeError {
            reason: "truncated id list",
        });
    }
    let mut ids = Vec::with_capacity(count);
    for chunk in rest[..count * 8].chunks_exact(8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        ids.push(NodeId(u64::from_le_bytes(raw)));
    }
    *bytes = &rest[count * 8..];
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn encode_decode_round_trip() {
        for c in [
            ConfChange::Learners {
                learners: ids(&[4]),
            },
            ConfChange::EnterJoint {
                voters: ids(&[1, 2, 4]),
                learners: ids(&[5]),
            },
            ConfChange::LeaveJoint,
        ] {
            assert_eq!(ConfChange::decode(&c.encode()).unwrap(), c);
        }
        assert!(ConfChange::decode(&[9]).is_err());
        assert!(ConfChange::decode(&[2, 5, 0, 0, 0]).is_err());
    }

    #[test]
    fn voter_change_goes_through_joint() {
        let cur = ConfState::with_voters(ids(&[1, 2, 3]));
        let target = ConfState::with_voters(ids(&[1, 2, 4]));
        let c = ConfChange::towards(&cur, &target).unwrap();
        let joint = c.apply(&cur).unwrap();
        assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
        assert!(joint.is_joint());
        let after = ConfChange::LeaveJoint.apply(&joint).unwrap();
        assert_eq!(after, target);
        assert!(ConfChange::towards(&joint, &target).is_err());
        assert!(ConfChange::towards(&cur, &cur).is_err());
    }
}
