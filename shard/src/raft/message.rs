//! The messages Raft nodes exchange (thesis fig. 3.1 and chapters 4, 6, 9). A message is a
//! header (`from`, `to`, `term`) and a `MessageBody`; the transport encodes them.
//!
//! ```text
//!  leader                                  follower
//!    | Append{prev, entries, commit}  ---->  |  (persist entries, then)
//!    | <---- AppendResp{Accepted{last}}      |  sent only after the covering sync
//!    | Heartbeat{commit, seq, tick}   ---->  |
//!    | <---- HeartbeatResp{seq, tick}        |  (ReadIndex rounds, leases)
//! ```

use super::types::{Entry, LogId, LogIndex, NodeId, ReadRequestId, SnapshotMeta, Term};

/// Which election a vote belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteKind {
    /// §9.6: would you vote for me at `term`? Changes no state on either side.
    PreVote,
    /// §3.4: the real vote; granting it is persisted before the response leaves.
    Vote,
}

/// Why a campaign started: a forced one (leadership transfer, §3.10) may interrupt a
/// follower that still hears from its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Campaign {
    /// The election timer fired (or a test asked).
    Election,
    /// `TimeoutNow` from the leader: skip pre-vote, override leader stickiness.
    Transfer,
}

/// The outcome of an `Append` at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppendOutcome {
    /// The follower's log matches the leader's up to `last` (its acknowledgement).
    Accepted { last: LogIndex },
    /// `prev` of the append at `rejected` did not match. `hint` is the follower's last entry
    /// at or below `rejected` whose term is at most the leader's `prev.term` (§5.3 fast
    /// backtracking): the leader can skip whole terms at once.
    Rejected { rejected: LogIndex, hint: LogId },
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Entries after `prev` and the leader's commit index (§3.5). May be empty.
    Append {
        prev: LogId,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    AppendResp {
        outcome: AppendOutcome,
    },
    /// A (pre-)vote request for `Message::term`, with the candidate's last log entry.
    RequestVote {
        kind: VoteKind,
        last: LogId,
        campaign: Campaign,
    },
    RequestVoteResp {
        kind: VoteKind,
        granted: bool,
    },
    /// Leader liveness and commit propagation. Carries no entries, so the store may coalesce
    /// the heartbeats of many groups bound for one node into one frame: it needs only
    /// (group, to, term, commit, seq, tick). `commit` is at most the follower's match index.
    /// `seq` numbers heartbeat rounds (ReadIndex) and `tick` is the leader's tick count when
    /// sent (leases); both are echoed back unchanged.
    Heartbeat {
        commit: LogIndex,
        seq: u64,
        tick: u64,
    },
    HeartbeatResp {
        seq: u64,
        tick: u64,
    },
    /// Commit propagation without an answer: the leader's commit index, at most what this
    /// follower acknowledged holding in the leader's term (so it needs no log check, like
    /// `Heartbeat`'s). Sent instead of an empty `Append` to a follower in replicate state when
    /// only the commit index moved: its answer would tell the leader nothing (found with
    /// `--ranges 64`: a write to a group with no other traffic cost eight messages, the two
    /// empty appends carrying its commit and their two answers among them). Coalesced per
    /// destination like heartbeats.
    Commit {
        commit: LogIndex,
    },
    /// Install the snapshot described by `meta`; the runtime attaches the state machine data.
    Snapshot {
        meta: SnapshotMeta,
    },
    /// Leadership transfer: campaign now (§3.10).
    TimeoutNow,
    /// A follower forwards a linearizable read to its leader (§6.4).
    ReadIndex {
        request: ReadRequestId,
    },
    /// The leader's answer to a forwarded read: serve it once `index` is applied.
    ReadIndexResp {
        request: ReadRequestId,
        index: LogIndex,
    },
}

/// One message between two replicas of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term (for `RequestVote{PreVote}`: the term it would campaign at).
    pub term: Term,
    pub body: MessageBody,
}

impl Message {
    /// A heartbeat or its response: small, entry-free, may be coalesced per destination.
    pub fn is_heartbeat(&self) -> bool {
        matches!(
            self.body,
            MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResp { .. }
        )
    }
    /// Short name of the body kind, for logs and transcripts.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResp { .. } => "AppendResp",
            MessageBody::RequestVote {
                kind: VoteKind::PreVote,
                ..
            } => "PreVote",
            MessageBody::RequestVote {
                kind: VoteKind::Vote,
                ..
            } => "Vote",
            MessageBody::RequestVoteResp {
                kind: VoteKind::PreVote,
                ..
            } => "PreVoteResp",
            MessageBody::RequestVoteResp {
                kind: VoteKind::Vote,
                ..
            } => "VoteResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResp { .. } => "HeartbeatResp",
            MessageBody::Commit { .. } => "Commit",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResp { .. } => "ReadIndexResp",
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{} {} t{}",
            self.from.0,
            self.to.0,
            self.kind_name(),
            self.term.0
        )?;
        match &self.body {
            MessageBody::Append {
                prev,
                entries,
                commit,
            } => {
                write!(f, " prev={prev} commit={}", commit.0)?;
                if !entries.is_empty() {
                    write!(f, " entries=[")?;
                    for (i, e) in entries.iter().enumerate() {
                        if i > 0 {
                            write!(f, " ")?;
                        }
                        write!(f, "{}", e.id())?;
                        if e.kind == super::types::EntryKind::ConfChange {
                            write!(f, "(conf)")?;
                        } else if !e.data.is_empty() {
                            write!(f, "({})", String::from_utf8_lossy(&e.data))?;
                        }
                    }
                    write!(f, "]")?;
                }
                Ok(())
            }
            MessageBody::AppendResp {
                outcome: AppendOutcome::Accepted { last },
            } => {
                write!(f, " accepted={}", last.0)
            }
            MessageBody::AppendResp {
                outcome: AppendOutcome::Rejected { rejected, hint },
            } => {
                write!(f, " rejected={} hint={hint}", rejected.0)
            }
            MessageBody::RequestVote { last, campaign, .. } => {
                write!(f, " last={last}")?;
                if *campaign == Campaign::Transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            MessageBody::RequestVoteResp { granted, .. } => {
                write!(f, " {}", if *granted { "granted" } else { "rejected" })
            }
            MessageBody::Heartbeat { commit, seq, tick } => {
                write!(f, " commit={} seq={seq} tick={tick}", commit.0)
            }
            MessageBody::HeartbeatResp { seq, tick } => write!(f, " seq={seq} tick={tick}"),
            MessageBody::Commit { commit } => write!(f, " commit={}", commit.0),
            MessageBody::Snapshot { meta } => write!(
                f,
                " last={} voters={:?}",
                meta.last,
                ids(&meta.conf_state.voters)
            ),
            MessageBody::TimeoutNow => Ok(()),
            MessageBody::ReadIndex { request } => write!(f, " request={}", request.0),
            MessageBody::ReadIndexResp { request, index } => {
                write!(f, " request={} index={}", request.0, index.0)
            }
        }
    }
}

fn ids(v: &[NodeId]) -> Vec<u64> {
    v.iter().map(|n| n.0).collect()
}
