//! Conversions between the Raft core's messages (`raft::Message`) and their wire form
//! (`rpc::message::RaftBatch`), and between the core's ids and the WAL's and the wire's.
//!
//! Sending: a message is appended to the batch of its destination node; heartbeats and their
//! responses go to the batch's coalesced lists, everything else to `messages`. Receiving: a
//! batch is read in place (`ArchivedRaftBatch`) and each message rebuilt for `RaftNode::step`.
//! Entry payloads are copied once on each side (into the frame, out of it into `Bytes`).

use bytes::Bytes;
use quasar_rpc::message as wire;
use quasar_rpc::message::{ArchivedRaftBody, ArchivedRaftMessage, RaftBatch};

use crate::raft::{
    AppendOutcome, Campaign, ConfState, Entry, EntryKind, LogId, LogIndex, Message, MessageBody,
    NodeId, ReadRequestId, SnapshotMeta, Term, VoteKind,
};

pub fn node_to_wire(n: NodeId) -> wire::NodeId {
    wire::NodeId(n.0)
}

pub fn node_from_wire(n: wire::NodeId) -> NodeId {
    NodeId(n.0)
}

fn log_id_to_wire(id: LogId) -> wire::LogId {
    wire::LogId {
        term: wire::Term(id.term.0),
        index: wire::LogIndex(id.index.0),
    }
}

fn log_id_from_archived(id: &wire::ArchivedLogId) -> LogId {
    let id = wire::LogId::from(id);
    LogId::new(Term(id.term.0), LogIndex(id.index.0))
}

/// Appends `msg` of `group` to `batch` (whose `to` is `msg.to`). A `Snapshot` message is not
/// handled here: the store sends its chunks itself.
pub fn push_message(batch: &mut RaftBatch, group: wire::GroupId, msg: &Message) {
    let term = wire::Term(msg.term.0);
    let body = match &msg.body {
        MessageBody::Heartbeat { commit, seq, tick } => {
            batch.heartbeats.push(wire::Heartbeat {
                group,
                term,
                commit: wire::LogIndex(commit.0),
                seq: *seq,
                tick: *tick,
            });
            return;
        }
        MessageBody::HeartbeatResp { seq, tick } => {
            batch.heartbeat_responses.push(wire::HeartbeatResponse {
                group,
                term,
                seq: *seq,
                tick: *tick,
            });
            return;
        }
        MessageBody::Commit { commit } => {
            batch.commits.push(wire::CommitNotice {
                group,
                term,
                commit: wire::LogIndex(commit.0),
            });
            return;
        }
        MessageBody::Append {
            prev,
            entries,
            commit,
        } => wire::RaftBody::Append(wire::Append {
            prev: log_id_to_wire(*prev),
            entries: entries
                .iter()
                .map(|e| wire::Entry {
                    term: wire::Term(e.term.0),
                    kind: match e.kind {
                        EntryKind::Normal => wire::EntryKind::Normal,
                        EntryKind::ConfChange => wire::EntryKind::ConfChange,
                    },
                    payload: e.data.to_vec(),
                })
                .collect(),
            commit: wire::LogIndex(commit.0),
        }),
        MessageBody::AppendResp { outcome } => wire::RaftBody::AppendResponse(match outcome {
            AppendOutcome::Accepted { last } => wire::AppendResponse::Accepted {
                last_index: wire::LogIndex(last.0),
            },
            AppendOutcome::Rejected { rejected, hint } => wire::AppendResponse::Rejected {
                rejected: wire::LogIndex(rejected.0),
                hint: log_id_to_wire(*hint),
            },
        }),
        MessageBody::RequestVote {
            kind,
            last,
            campaign,
        } => {
            let request = wire::VoteRequest {
                last_log: log_id_to_wire(*last),
                reason: match campaign {
                    Campaign::Election => wire::CampaignReason::Election,
                    Campaign::Transfer => wire::CampaignReason::LeaderTransfer,
                },
            };
            match kind {
                VoteKind::PreVote => wire::RaftBody::RequestPreVote(request),
                VoteKind::Vote => wire::RaftBody::RequestVote(request),
            }
        }
        MessageBody::RequestVoteResp { kind, granted } => {
            let answer = if *granted {
                wire::VoteResponse::Granted
            } else {
                wire::VoteResponse::Rejected
            };
            match kind {
                VoteKind::PreVote => wire::RaftBody::PreVoteResponse(answer),
                VoteKind::Vote => wire::RaftBody::VoteResponse(answer),
            }
        }
        MessageBody::TimeoutNow => wire::RaftBody::TimeoutNow,
        MessageBody::ReadIndex { request } => {
            wire::RaftBody::ReadIndex(wire::ReadIndexRequest { context: request.0 })
        }
        MessageBody::ReadIndexResp { request, index } => {
            wire::RaftBody::ReadIndexResponse(wire::ReadIndexResponse::Ready {
                context: request.0,
                index: wire::LogIndex(index.0),
            })
        }
        MessageBody::Snapshot { .. } => {
            debug_assert!(false, "snapshots are sent as chunks by the store");
            return;
        }
    };
    batch.messages.push(wire::RaftMessage { group, term, body });
}

/// The wire form of a membership, for snapshot chunks.
pub fn conf_to_wire(conf: &ConfState) -> (Vec<wire::NodeId>, Vec<wire::NodeId>, Vec<wire::NodeId>) {
    let ids = |v: &[NodeId]| v.iter().map(|n| node_to_wire(*n)).collect();
    (
        ids(&conf.voters),
        ids(&conf.voters_outgoing),
        ids(&conf.learners),
    )
}

/// The membership carried by an archived snapshot chunk.
pub fn conf_from_chunk(chunk: &wire::ArchivedSnapshotChunk) -> ConfState {
    let ids = |v: &rkyv::vec::ArchivedVec<wire::ArchivedNodeId>| {
        let mut out: Vec<NodeId> = v.iter().map(|n| NodeId(n.get().0)).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    ConfState {
        voters: ids(&chunk.voters),
        voters_outgoing: ids(&chunk.voters_outgoing),
        learners: ids(&chunk.learners),
    }
}

/// The snapshot meta an archived chunk describes.
pub fn snapshot_meta_from_chunk(chunk: &wire::ArchivedSnapshotChunk) -> SnapshotMeta {
    SnapshotMeta {
        last: log_id_from_archived(&chunk.snapshot),
        conf_state: conf_from_chunk(chunk),
    }
}

/// Why a wire message cannot become a Raft message (a corrupt or hostile peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("append entry index overflows u64")]
    IndexOverflow,
}

/// Rebuilds the Raft message of `msg` (not a snapshot chunk: the store assembles those).
/// Returns `None` for a snapshot chunk or a snapshot response.
pub fn message_from_wire(
    from: NodeId,
    to: NodeId,
    msg: &ArchivedRaftMessage,
) -> Result<Option<Message>, WireError> {
    let term = Term(msg.term.get().0);
    let body = match &msg.body {
        ArchivedRaftBody::Append(a) => {
            let mut entries = Vec::with_capacity(a.entries.len());
            for (i, e) in a.entries.iter().enumerate() {
                let index = a.entry_index(i).ok_or(WireError::IndexOverflow)?;
                entries.push(Entry {
                    term: Term(e.term.get().0),
                    index: LogIndex(index.0),
                    kind: match e.kind {
                        wire::ArchivedEntryKind::Normal => EntryKind::Normal,
                        wire::ArchivedEntryKind::ConfChange => EntryKind::ConfChange,
                    },
                    data: Bytes::copy_from_slice(e.payload.as_slice()),
                });
            }
            MessageBody::Append {
                prev: log_id_from_archived(&a.prev),
                entries,
                commit: LogIndex(a.commit.get().0),
            }
        }
        ArchivedRaftBody::AppendResponse(r) => MessageBody::AppendResp {
            outcome: match r {
                wire::ArchivedAppendResponse::Accepted { last_index } => AppendOutcome::Accepted {
                    last: LogIndex(last_index.get().0),
                },
                wire::ArchivedAppendResponse::Rejected { rejected, hint } => {
                    AppendOutcome::Rejected {
                        rejected: LogIndex(rejected.get().0),
                        hint: log_id_from_archived(hint),
                    }
                }
            },
        },
        ArchivedRaftBody::RequestVote(v) | ArchivedRaftBody::RequestPreVote(v) => {
            MessageBody::RequestVote {
                kind: if matches!(msg.body, ArchivedRaftBody::RequestVote(_)) {
                    VoteKind::Vote
                } else {
                    VoteKind::PreVote
                },
                last: log_id_from_archived(&v.last_log),
                campaign: match v.reason {
                    wire::ArchivedCampaignReason::Election => Campaign::Election,
                    wire::ArchivedCampaignReason::LeaderTransfer => Campaign::Transfer,
                },
            }
        }
        ArchivedRaftBody::VoteResponse(v) | ArchivedRaftBody::PreVoteResponse(v) => {
            MessageBody::RequestVoteResp {
                kind: if matches!(msg.body, ArchivedRaftBody::VoteResponse(_)) {
                    VoteKind::Vote
                } else {
                    VoteKind::PreVote
                },
                granted: *v == wire::ArchivedVoteResponse::Granted,
            }
        }
        ArchivedRaftBody::TimeoutNow => MessageBody::TimeoutNow,
        ArchivedRaftBody::ReadIndex(r) => MessageBody::ReadIndex {
            request: ReadRequestId(r.context.to_native()),
        },
        ArchivedRaftBody::ReadIndexResponse(r) => match r {
            wire::ArchivedReadIndexResponse::Ready { context, index } => {
                MessageBody::ReadIndexResp {
                    request: ReadRequestId(context.to_native()),
                    index: LogIndex(index.get().0),
                }
            }
            wire::ArchivedReadIndexResponse::NotLeader { .. } => return Ok(None),
        },
        ArchivedRaftBody::Snapshot(_)
        | ArchivedRaftBody::SnapshotResponse(_)
        | ArchivedRaftBody::Removed { .. }
        | ArchivedRaftBody::Destroyed { .. }
        | ArchivedRaftBody::LeaderWanted => return Ok(None),
    };
    Ok(Some(Message {
        from,
        to,
        term,
        body,
    }))
}

/// The Raft heartbeat of an archived coalesced heartbeat.
pub fn heartbeat_from_wire(from: NodeId, to: NodeId, hb: &wire::ArchivedHeartbeat) -> Message {
    Message {
        from,
        to,
        term: Term(hb.term.get().0),
        body: MessageBody::Heartbeat {
            commit: LogIndex(hb.commit.get().0),
            seq: hb.seq.to_native(),
            tick: hb.tick.to_native(),
        },
    }
}

/// The Raft commit notice of an archived coalesced one.
pub fn commit_from_wire(from: NodeId, to: NodeId, c: &wire::ArchivedCommitNotice) -> Message {
    Message {
        from,
        to,
        term: Term(c.term.get().0),
        body: MessageBody::Commit {
            commit: LogIndex(c.commit.get().0),
        },
    }
}

/// The Raft heartbeat response of an archived coalesced one.
pub fn heartbeat_response_from_wire(
    from: NodeId,
    to: NodeId,
    hb: &wire::ArchivedHeartbeatResponse,
) -> Message {
    Message {
        from,
        to,
        term: Term(hb.term.get().0),
        body: MessageBody::HeartbeatResp {
            seq: hb.seq.to_native(),
            tick: hb.tick.to_native(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::frame::{access_body, encode_frame, Decoded, FrameDecoder};
    use rkyv::util::AlignedVec;

    fn roundtrip(msg: Message) -> Message {
        let mut batch = RaftBatch {
            from: wire::NodeId(1),
            to: wire::NodeId(2),
            ..RaftBatch::default()
        };
        push_message(&mut batch, wire::GroupId(9), &msg);
        let mut buf = AlignedVec::new();
        encode_frame(&batch, &mut buf).expect("encodes");
        let mut decoder = FrameDecoder::new(1 << 20);
        let Ok(Decoded::Frame(frame)) = decoder.decode(&buf) else {
            panic!("one whole frame")
        };
        let body = frame.body(&buf);
        let archived = access_body::<RaftBatch>(body).expect("valid");
        if let Some(hb) = archived.heartbeats.first() {
            assert_eq!(hb.group.get(), wire::GroupId(9));
            return heartbeat_from_wire(NodeId(1), NodeId(2), hb);
        }
        if let Some(hb) = archived.heartbeat_responses.first() {
            return heartbeat_response_from_wire(NodeId(1), NodeId(2), hb);
        }
        if let Some(c) = archived.commits.first() {
            assert_eq!(c.group.get(), wire::GroupId(9));
            return commit_from_wire(NodeId(1), NodeId(2), c);
        }
        assert_eq!(archived.messages.len(), 1);
        message_from_wire(NodeId(1), NodeId(2), &archived.messages[0])
            .expect("valid")
            .expect("a raft message")
    }

    #[test]
    fn every_message_kind_survives_the_wire() {
        let id = |t, i| LogId::new(Term(t), LogIndex(i));
        let bodies = vec![
            MessageBody::Append {
                prev: id(2, 5),
                entries: vec![
                    Entry {
                        term: Term(3),
                        index: LogIndex(6),
                        kind: EntryKind::Normal,
                        data: Bytes::from_static(b"\x00put"),
                    },
                    Entry {
                        term: Term(3),
                        index: LogIndex(7),
                        kind: EntryKind::ConfChange,
                        data: Bytes::from_static(b"\x03"),
                    },
                ],
                commit: LogIndex(5),
            },
            MessageBody::AppendResp {
                outcome: AppendOutcome::Accepted { last: LogIndex(7) },
            },
            MessageBody::AppendResp {
                outcome: AppendOutcome::Rejected {
                    rejected: LogIndex(7),
                    hint: id(1, 4),
                },
            },
            MessageBody::RequestVote {
                kind: VoteKind::PreVote,
                last: id(3, 7),
                campaign: Campaign::Election,
            },
            MessageBody::RequestVote {
                kind: VoteKind::Vote,
                last: id(3, 7),
                campaign: Campaign::Transfer,
            },
            MessageBody::RequestVoteResp {
                kind: VoteKind::Vote,
                granted: true,
            },
            MessageBody::RequestVoteResp {
                kind: VoteKind::PreVote,
                granted: false,
            },
            MessageBody::Heartbeat {
                commit: LogIndex(4),
                seq: 8,
                tick: 99,
            },
            MessageBody::HeartbeatResp { seq: 8, tick: 99 },
            MessageBody::Commit {
                commit: LogIndex(6),
            },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex {
                request: ReadRequestId(12),
            },
            MessageBody::ReadIndexResp {
                request: ReadRequestId(12),
                index: LogIndex(40),
            },
        ];
        for body in bodies {
            let msg = Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body,
            };
            assert_eq!(roundtrip(msg.clone()), msg);
        }
    }
}
