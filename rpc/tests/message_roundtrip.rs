//! Property tests: every message type survives a full frame round trip
//! (encode → decode → bytecheck access → deserialize), alone and behind
//! another frame in the same buffer; and validation of a request gives the
//! same verdict on the owned value and on its archive read in place.

use std::fmt::Debug;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use quasar_rpc::frame::{
    encode_frame, Decoded, FrameDecoder, FrameKind, WireMessage, BODY_ALIGN, HEADER_LEN,
};
use quasar_rpc::message::*;
use rkyv::rancor;
use rkyv::util::AlignedVec;

fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..max).boxed()
}

fn key() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..24).boxed()
}

fn log_id() -> BoxedStrategy<LogId> {
    (any::<u64>(), any::<u64>())
        .prop_map(|(t, i)| LogId {
            term: Term(t),
            index: LogIndex(i),
        })
        .boxed()
}

fn node() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId)
}

fn role() -> impl Strategy<Value = ReplicaRole> {
    prop_oneof![
        Just(ReplicaRole::Voter),
        Just(ReplicaRole::Learner),
        Just(ReplicaRole::Joining),
        Just(ReplicaRole::Leaving)
    ]
}

fn descriptor() -> BoxedStrategy<RangeDescriptor> {
    (
        any::<u64>(),
        any::<u64>(),
        key(),
        key(),
        vec(
            (node(), role()).prop_map(|(node, role)| ReplicaDescriptor { node, role }),
            0..5,
        ),
        any::<u64>(),
    )
        .prop_map(|(id, group, start, end, replicas, epoch)| RangeDescriptor {
            id: RangeId(id),
            group: GroupId(group),
            start,
            end,
            replicas,
            epoch: RangeEpoch(epoch),
        })
        .boxed()
}

fn raft_body() -> BoxedStrategy<RaftBody> {
    let entry = (
        any::<u64>(),
        prop_oneof![Just(EntryKind::Normal), Just(EntryKind::ConfChange)],
    )
        .prop_flat_map(|(term, kind)| {
            bytes(160).prop_map(move |payload| Entry {
                term: Term(term),
                kind,
                payload,
            })
        });
    let vote = (
        log_id(),
        prop_oneof![
            Just(CampaignReason::Election),
            Just(CampaignReason::LeaderTransfer)
        ],
    )
        .prop_map(|(last_log, reason)| VoteRequest { last_log, reason })
        .boxed();
    let vote_resp = prop_oneof![Just(VoteResponse::Granted), Just(VoteResponse::Rejected)].boxed();
    prop_oneof![
        (log_id(), vec(entry, 0..8), any::<u64>()).prop_map(|(prev, entries, commit)| {
            RaftBody::Append(Append {
                prev,
                entries,
                commit: LogIndex(commit),
            })
        }),
        any::<u64>().prop_map(|i| RaftBody::AppendResponse(AppendResponse::Accepted {
            last_index: LogIndex(i)
        })),
        (any::<u64>(), log_id()).prop_map(|(r, hint)| RaftBody::AppendResponse(
            AppendResponse::Rejected {
                rejected: LogIndex(r),
                hint
            }
        )),
        vote.clone().prop_map(RaftBody::RequestVote),
        vote.prop_map(RaftBody::RequestPreVote),
        vote_resp.clone().prop_map(RaftBody::VoteResponse),
        vote_resp.prop_map(RaftBody::PreVoteResponse),
        (
            log_id(),
            descriptor(),
            any::<u64>(),
            any::<u64>(),
            bytes(300)
        )
            .prop_map(|(snapshot, descriptor, offset_bytes, total_bytes, data)| {
                RaftBody::Snapshot(SnapshotChunk {
                    snapshot,
                    voters: descriptor.voters().collect(),
                    voters_outgoing: Vec::new(),
                    learners: Vec::new(),
                    descriptor,
                    offset_bytes,
                    total_bytes,
                    data,
                })
            }),
        (
            log_id(),
            any::<u64>(),
            prop_oneof![
                Just(SnapshotOutcome::Continue),
                Just(SnapshotOutcome::Installed),
                Just(SnapshotOutcome::Rejected)
            ]
        )
            .prop_map(|(snapshot, received_bytes, outcome)| {
                RaftBody::SnapshotResponse(SnapshotResponse {
                    snapshot,
                    received_bytes,
                    outcome,
                })
            }),
        Just(RaftBody::TimeoutNow),
        any::<u64>().prop_map(|context| RaftBody::ReadIndex(ReadIndexRequest { context })),
        (any::<u64>(), any::<u64>()).prop_map(|(context, i)| RaftBody::ReadIndexResponse(
            ReadIndexResponse::Ready {
                context,
                index: LogIndex(i)
            }
        )),
        any::<u64>().prop_map(|context| RaftBody::ReadIndexResponse(
            ReadIndexResponse::NotLeader { context }
        )),
        (any::<u64>(), any::<u64>()).prop_map(|(g, i)| RaftBody::Destroyed {
            survivor: GroupId(g),
            index: LogIndex(i)
        }),
        Just(RaftBody::LeaderWanted),
        any::<u64>().prop_map(|i| RaftBody::Removed {
            applied: LogIndex(i)
        }),
    ]
    .boxed()
}

fn raft_batch() -> BoxedStrategy<RaftBatch> {
    let message = (any::<u64>(), any::<u64>(), raft_body()).prop_map(|(g, t, body)| RaftMessage {
        group: GroupId(g),
        term: Term(t),
        body,
    });
    let heartbeat =
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(g, t, c, s)| {
            Heartbeat {
                group: GroupId(g),
                term: Term(t),
                commit: LogIndex(c),
                seq: s,
                tick: s ^ c,
            }
        });
    let heartbeat_resp =
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(g, t, s)| HeartbeatResponse {
            group: GroupId(g),
            term: Term(t),
            seq: s,
            tick: s.rotate_left(7),
        });
    let commit = (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(g, t, c)| CommitNotice {
        group: GroupId(g),
        term: Term(t),
        commit: LogIndex(c),
    });
    (
        node(),
        node(),
        any::<u32>(),
        vec(message, 0..6),
        vec(heartbeat, 0..6),
        vec(heartbeat_resp, 0..6),
        vec(commit, 0..6),
    )
        .prop_map(
            |(from, to, shard, messages, heartbeats, heartbeat_responses, commits)| RaftBatch {
                from,
                to,
                to_shard: ShardId(shard),
                messages,
                heartbeats,
                heartbeat_responses,
                commits,
            },
        )
        .boxed()
}

fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![
        (node(), any::<u32>()).prop_map(|(node, s)| Origin::Node {
            node,
            shard: ShardId(s)
        }),
        any::<u64>().prop_map(|s| Origin::Client {
            session: SessionId(s)
        }),
    ]
}

fn handshake() -> impl Strategy<Value = Handshake> {
    (
        any::<u16>(),
        any::<u64>(),
        origin(),
        any::<u32>(),
        proptest::option::of("[ -~]{0,40}"),
    )
        .prop_map(|(v, c, origin, s, token)| Handshake {
            protocol_version: v,
            cluster: ClusterId(c),
            origin,
            target_shard: ShardId(s),
            token,
        })
}

fn handshake_reply() -> impl Strategy<Value = HandshakeReply> {
    let refusal = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(e, g)| HandshakeRefusal::ClusterMismatch {
            expected: ClusterId(e),
            got: ClusterId(g)
        }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(got, supported)| HandshakeRefusal::UnsupportedVersion { got, supported }),
        (any::<u32>(), any::<u32>()).prop_map(|(w, r)| HandshakeRefusal::WrongShard {
            wanted: ShardId(w),
            reached: ShardId(r)
        }),
        node().prop_map(|node| HandshakeRefusal::NodeIdConflict { node }),
        Just(HandshakeRefusal::ShuttingDown),
        node().prop_map(|node| HandshakeRefusal::NodeCertificateMismatch { node }),
        Just(HandshakeRefusal::ClientCertificateRequired),
        Just(HandshakeRefusal::NoCredentials),
        Just(HandshakeRefusal::BadToken),
        Just(HandshakeRefusal::UnboundCertificate),
    ];
    prop_oneof![
        (any::<u64>(), node(), any::<u32>(), any::<u16>()).prop_map(|(c, node, s, v)| {
            HandshakeReply::Accepted {
                cluster: ClusterId(c),
                node,
                shard: ShardId(s),
                protocol_version: v,
            }
        }),
        refusal.prop_map(HandshakeReply::Refused),
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Equal),
        Just(CompareOp::NotEqual),
        Just(CompareOp::Less),
        Just(CompareOp::Greater)
    ]
}

fn compare_target() -> BoxedStrategy<CompareTarget> {
    prop_oneof![
        any::<u64>().prop_map(|v| CompareTarget::Version(KeyVersion(v))),
        bytes(40).prop_map(CompareTarget::Value),
    ]
    .boxed()
}

fn txn_op() -> BoxedStrategy<TxnOp> {
    prop_oneof![
        key().prop_map(|key| TxnOp::Get { key }),
        (key(), bytes(40)).prop_map(|(key, value)| TxnOp::Put { key, value }),
        key().prop_map(|key| TxnOp::Delete { key }),
        (key(), key()).prop_map(|(start, end)| TxnOp::DeleteRange { start, end }),
    ]
    .boxed()
}

fn operation(value_max: usize) -> BoxedStrategy<Operation> {
    let compare = (key(), compare_op(), compare_target()).prop_map(|(key, op, target)| Compare {
        key,
        op,
        target,
    });
    prop_oneof![
        key().prop_map(|key| Operation::Get { key }),
        (key(), bytes(value_max)).prop_map(|(key, value)| Operation::Put { key, value }),
        key().prop_map(|key| Operation::Delete { key }),
        (
            key(),
            prop_oneof![
                any::<u64>().prop_map(|v| Expected::Version(KeyVersion(v))),
                bytes(value_max).prop_map(Expected::Value),
            ],
            bytes(value_max)
        )
            .prop_map(|(key, expected, value)| Operation::CompareAndSet {
                key,
                expected,
                value
            }),
        (key(), key()).prop_map(|(start, end)| Operation::DeleteRange { start, end }),
        (key(), key(), 0..3u32, 0..3u32).prop_map(|(start, end, max_count, max_bytes)| {
            Operation::Scan(ScanRequest {
                start,
                end,
                max_count,
                max_bytes,
            })
        }),
        (vec(compare, 0..4), vec(txn_op(), 0..4), vec(txn_op(), 0..4)).prop_map(
            |(compares, success, failure)| Operation::Txn(Txn {
                compares,
                success,
                failure
            })
        ),
        (key(), any::<i64>()).prop_map(|(key, delta)| Operation::Increment { key, delta }),
    ]
    .boxed()
}

fn consistency() -> impl Strategy<Value = ReadConsistency> {
    prop_oneof![
        Just(ReadConsistency::Linearizable),
        Just(ReadConsistency::Follower),
        any::<u32>().prop_map(|max_staleness_ms| ReadConsistency::Stale { max_staleness_ms }),
    ]
}

fn client_request_with(value_max: usize) -> BoxedStrategy<ClientRequest> {
    let route = (any::<u64>(), any::<u64>()).prop_map(|(r, e)| Route {
        range: RangeId(r),
        epoch: RangeEpoch(e),
    });
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        consistency(),
        option::of(route),
        operation(value_max),
    )
        .prop_map(|(id, session, seq, consistency, route, op)| ClientRequest {
            request_id: RequestId(id),
            session: SessionId(session),
            sequence: Sequence(seq),
            consistency,
            route,
            op,
        })
        .boxed()
}

fn versioned() -> impl Strategy<Value = VersionedValue> {
    (bytes(40), any::<u64>()).prop_map(|(value, v)| VersionedValue {
        value,
        version: KeyVersion(v),
    })
}

fn request_error() -> BoxedStrategy<RequestError> {
    prop_oneof![
        (any::<u64>(), option::of(node())).prop_map(|(r, leader_hint)| {
            RequestError::NotLeader {
                range: RangeId(r),
                leader_hint,
            }
        }),
        descriptor().prop_map(|descriptor| RequestError::RangeMoved { descriptor }),
        descriptor().prop_map(|descriptor| RequestError::KeyNotInRange { descriptor }),
        any::<u64>().prop_map(|r| RequestError::UnknownRange { range: RangeId(r) }),
        any::<u64>().prop_map(|v| RequestError::ConditionFailed {
            current_version: KeyVersion(v)
        }),
        (
            prop_oneof![
                Just(LimitKind::Key),
                Just(LimitKind::Value),
                Just(LimitKind::Frame)
            ],
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(what, len, max)| RequestError::TooLarge { what, len, max }),
        prop_oneof![
            Just(InvalidReason::EmptyKey),
            Just(InvalidReason::EmptySpan),
            Just(InvalidReason::ZeroScanLimit),
            Just(InvalidReason::NotACounter),
            Just(InvalidReason::CounterOverflow),
            Just(InvalidReason::BadSplitKey),
            Just(InvalidReason::NotMergeable),
            Just(InvalidReason::BadReplicaChange),
        ]
        .prop_map(|reason| RequestError::InvalidRequest { reason }),
        node().prop_map(|node| RequestError::UnknownNode { node }),
        "[a-z ]{0,40}".prop_map(|reason| RequestError::Refused { reason }),
        any::<u64>().prop_map(|r| RequestError::ChangeInProgress { range: RangeId(r) }),
        prop_oneof![
            Just(UnavailableReason::NoLeader),
            Just(UnavailableReason::NoQuorum),
            Just(UnavailableReason::ShuttingDown),
            Just(UnavailableReason::Overloaded),
            Just(UnavailableReason::CatchingUp),
        ]
        .prop_map(|reason| RequestError::Unavailable { reason }),
        prop_oneof![
            Just(AmbiguousReason::Timeout),
            Just(AmbiguousReason::ConnectionLost),
            Just(AmbiguousReason::LeadershipLost),
        ]
        .prop_map(|reason| RequestError::Ambiguous { reason }),
    ]
    .boxed()
}

fn reply() -> BoxedStrategy<Reply> {
    let kv = (key(), bytes(40), any::<u64>()).prop_map(|(key, value, v)| KeyValue {
        key,
        value,
        version: KeyVersion(v),
    });
    let txn_result = prop_oneof![
        option::of(versioned()).prop_map(TxnOpResult::Get),
        Just(TxnOpResult::Put),
        any::<bool>().prop_map(|found| TxnOpResult::Delete { found }),
        any::<u64>().prop_map(|deleted_count| TxnOpResult::DeleteRange { deleted_count }),
    ];
    prop_oneof![
        option::of(versioned()).prop_map(Reply::Get),
        any::<u64>().prop_map(|v| Reply::Written {
            version: KeyVersion(v)
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(v, found)| Reply::Deleted {
            version: KeyVersion(v),
            found
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(v, deleted_count)| Reply::DeletedRange {
            version: KeyVersion(v),
            deleted_count
        }),
        (vec(kv, 0..6), option::of(key())).prop_map(|(entries, resume_key)| Reply::Scan(
            ScanPage {
                entries,
                resume_key
            }
        )),
        (
            prop_oneof![Just(TxnBranch::Success), Just(TxnBranch::Failure)],
            any::<u64>(),
            vec(txn_result, 0..5)
        )
            .prop_map(|(branch, v, results)| Reply::Txn(TxnReply {
                branch,
                version: KeyVersion(v),
                results
            })),
        (any::<i64>(), any::<u64>()).prop_map(|(value, v)| Reply::Incremented {
            value,
            version: KeyVersion(v)
        }),
    ]
    .boxed()
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    (
        any::<u64>(),
        prop_oneof![reply().prop_map(Ok), request_error().prop_map(Err)],
    )
        .prop_map(|(id, result)| ClientResponse {
            request_id: RequestId(id),
            result,
        })
}

fn admin_op() -> BoxedStrategy<AdminOp> {
    let epoch = || any::<u64>().prop_map(RangeEpoch);
    let range = || any::<u64>().prop_map(RangeId);
    prop_oneof![
        (range(), key(), epoch()).prop_map(|(range, split_key, expected_epoch)| {
            AdminOp::SplitRange {
                range,
                split_key,
                expected_epoch,
            }
        }),
        (range(), epoch()).prop_map(|(left, expected_epoch)| AdminOp::MergeRanges {
            left,
            expected_epoch
        }),
        (range(), node(), role(), epoch()).prop_map(|(range, node, role, expected_epoch)| {
            AdminOp::AddReplica {
                range,
                node,
                role,
                expected_epoch,
            }
        }),
        (range(), node(), epoch()).prop_map(|(range, node, expected_epoch)| {
            AdminOp::RemoveReplica {
                range,
                node,
                expected_epoch,
            }
        }),
        (range(), node(), node(), epoch()).prop_map(|(range, from, to, expected_epoch)| {
            AdminOp::MoveReplica {
                range,
                from,
                to,
                expected_epoch,
            }
        }),
        (range(), node()).prop_map(|(range, to)| AdminOp::TransferLeader { range, to }),
        (key(), any::<u32>())
            .prop_map(|(start_key, limit)| AdminOp::ListRanges { start_key, limit }),
        range().prop_map(|r| AdminOp::DescribeRange(RangeSelector::Id(r))),
        key().prop_map(|k| AdminOp::DescribeRange(RangeSelector::Key(k))),
        Just(AdminOp::ListMembers),
        (node(), "[a-z0-9.:]{0,24}")
            .prop_map(|(node, address)| AdminOp::AddMember { node, address }),
        node().prop_map(|node| AdminOp::RemoveMember { node }),
        Just(AdminOp::Status),
    ]
    .boxed()
}

fn admin_request() -> impl Strategy<Value = AdminRequest> {
    (any::<u64>(), admin_op()).prop_map(|(id, op)| AdminRequest {
        request_id: RequestId(id),
        op,
    })
}

fn member() -> impl Strategy<Value = Member> {
    (
        node(),
        "[a-z0-9.:]{0,24}",
        prop_oneof![
            Just(MemberState::Active),
            Just(MemberState::Joining),
            Just(MemberState::Unreachable)
        ],
    )
        .prop_map(|(node, address, state)| Member {
            node,
            address,
            state,
        })
}

fn range_info() -> impl Strategy<Value = RangeInfo> {
    (
        descriptor(),
        option::of(node()),
        option::of(any::<u64>().prop_map(LogIndex)),
    )
        .prop_map(|(descriptor, leader, commit)| RangeInfo {
            descriptor,
            leader,
            commit,
        })
}

fn admin_reply() -> BoxedStrategy<AdminReply> {
    let shard = (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(s, groups, leaders, wal_bytes, cpu_micros)| ShardStatus {
            shard: ShardId(s),
            groups,
            leaders,
            wal_bytes,
            cpu_micros,
        });
    prop_oneof![
        (descriptor(), descriptor()).prop_map(|(left, right)| AdminReply::Split { left, right }),
        descriptor().prop_map(|merged| AdminReply::Merged { merged }),
        descriptor().prop_map(|descriptor| AdminReply::ReplicasChanged { descriptor }),
        (any::<u64>(), any::<u64>(), node()).prop_map(|(r, g, leader)| {
            AdminReply::LeaderTransferred {
                range: RangeId(r),
                group: GroupId(g),
                leader,
            }
        }),
        (vec(range_info(), 0..3), option::of(key()))
            .prop_map(|(ranges, resume_key)| AdminReply::Ranges { ranges, resume_key }),
        range_info().prop_map(AdminReply::Range),
        vec(member(), 0..4).prop_map(AdminReply::Members),
        member().prop_map(AdminReply::MemberAdded),
        node().prop_map(|node| AdminReply::MemberRemoved { node }),
        (
            any::<u64>(),
            node(),
            any::<u64>(),
            any::<(u64, u64)>(),
            vec(shard, 0..4)
        )
            .prop_map(|(c, node, uptime_secs, (user, system), shards)| {
                AdminReply::Status(NodeStatus {
                    cluster: ClusterId(c),
                    node,
                    uptime_secs,
                    cpu_user_micros: user,
                    cpu_system_micros: system,
                    shards,
                })
            }),
    ]
    .boxed()
}

fn admin_response() -> impl Strategy<Value = AdminResponse> {
    (
        any::<u64>(),
        prop_oneof![admin_reply().prop_map(Ok), request_error().prop_map(Err)],
    )
        .prop_map(|(id, result)| AdminResponse {
            request_id: RequestId(id),
            result,
        })
}

/// Encodes `msg` behind `prefix_frames` other frames, decodes every frame in
/// turn, validates the last as `M` and deserializes it back.
fn roundtrip<M: WireMessage + PartialEq + Debug>(msg: &M, prefix_frames: usize) {
    let mut buf = AlignedVec::new();
    let filler = Handshake::from_node(ClusterId(1), NodeId(2), ShardId(0), ShardId(1));
    for _ in 0..prefix_frames {
        encode_frame(&filler, &mut buf).expect("frame round trip");
    }
    let encoded = encode_frame(msg, &mut buf).expect("frame round trip");
    assert_eq!(encoded.frame.end, buf.len());
    assert_eq!(buf.len() % BODY_ALIGN, 0);
    assert_eq!(encoded.frame.len(), HEADER_LEN + encoded.body_len as usize);

    let mut decoder = FrameDecoder::new(u64::from(SizeLimits::default().max_frame_bytes));
    let mut at = 0;
    for _ in 0..prefix_frames {
        let Decoded::Frame(frame) = decoder.decode(&buf[at..]).expect("frame round trip") else {
            panic!("prefix frame incomplete")
        };
        assert_eq!(frame.kind, FrameKind::Handshake);
        at += frame.consumed;
    }
    assert_eq!(at, encoded.frame.start);
    let Decoded::Frame(frame) = decoder.decode(&buf[at..]).expect("frame round trip") else {
        panic!("frame incomplete")
    };
    assert_eq!(frame.kind, M::KIND);
    assert_eq!(at + frame.consumed, buf.len());
    let archived = frame.access::<M>(&buf[at..]).expect("frame round trip");
    let back: M = rkyv::deserialize::<M, rancor::Error>(archived).expect("frame round trip");
    assert_eq!(&back, msg);
    // Every strict prefix of the frame is Incomplete, never an error or a frame.
    for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, frame.consumed - 1] {
        match decoder
            .decode(&buf[at..at + cut])
            .expect("frame round trip")
        {
            Decoded::Incomplete { needed } => {
                assert!(
                    cut + needed <= frame.consumed,
                    "needed {needed} past the frame end"
                )
            }
            other => panic!("prefix of {cut} bytes decoded as {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn raft_batch_roundtrips(batch in raft_batch(), prefix in 0..3usize) {
        roundtrip(&batch, prefix);
    }

    #[test]
    fn append_payloads_read_in_place(batch in raft_batch()) {
        let mut buf = AlignedVec::new();
        encode_frame(&batch, &mut buf).unwrap();
        let Decoded::Frame(frame) = FrameDecoder::new(1 << 24).decode(&buf).unwrap() else {
            panic!("incomplete")
        };
        let archived = frame.access::<RaftBatch>(&buf).unwrap();
        prop_assert_eq!(archived.message_count(), batch.message_count());
        for (owned, arch) in batch.messages.iter().zip(archived.messages.iter()) {
            prop_assert_eq!(owned.group, arch.group.get());
            if let (RaftBody::Append(a), ArchivedRaftBody::Append(b)) = (&owned.body, &arch.body) {
                prop_assert_eq!(a.entries.len(), b.entries.len());
                for (i, (x, y)) in a.entries.iter().zip(b.entries.iter()).enumerate() {
                    prop_assert_eq!(x.payload.as_slice(), y.payload.as_slice());
                    prop_assert_eq!(a.entry_index(i), b.entry_index(i));
                }
            }
        }
    }

    #[test]
    fn handshake_roundtrips(h in handshake(), r in handshake_reply(), prefix in 0..3usize) {
        roundtrip(&h, prefix);
        roundtrip(&r, prefix);
    }

    #[test]
    fn client_request_roundtrips(req in client_request_with(64), prefix in 0..3usize) {
        roundtrip(&req, prefix);
    }

    #[test]
    fn client_response_roundtrips(resp in client_response(), prefix in 0..3usize) {
        roundtrip(&resp, prefix);
    }

    #[test]
    fn admin_request_roundtrips(req in admin_request(), prefix in 0..3usize) {
        roundtrip(&req, prefix);
    }

    #[test]
    fn admin_response_roundtrips(resp in admin_response(), prefix in 0..3usize) {
        roundtrip(&resp, prefix);
    }

    /// The node validates the archive in place, the client the owned value:
    /// they must agree on every request (tight limits so TooLarge is common).
    #[test]
    fn validation_agrees_on_owned_and_archived(req in client_request_with(64), admin in admin_request()) {
        let limits = SizeLimits { max_key_bytes: 12, max_value_bytes: 24, max_frame_bytes: 1 << 20 };
        let mut buf = AlignedVec::new();
        encode_frame(&req, &mut buf).unwrap();
        let start = buf.len();
        encode_frame(&admin, &mut buf).unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let Decoded::Frame(frame) = decoder.decode(&buf).unwrap() else { panic!("incomplete") };
        let archived = frame.access::<ClientRequest>(&buf).unwrap();
        prop_assert_eq!(
            limits.validate_request(&req),
            limits.validate_archived_request(archived)
        );
        let Decoded::Frame(frame) = decoder.decode(&buf[start..]).unwrap() else {
            panic!("incomplete")
        };
        let archived = frame.access::<AdminRequest>(&buf[start..]).unwrap();
        prop_assert_eq!(
            limits.validate_admin_request(&admin),
            limits.validate_archived_admin_request(archived)
        );
    }

    /// `Compare::holds` gives the same answer on the archive as on the value.
    #[test]
    fn compare_agrees_on_owned_and_archived(
        key in key(),
        op in compare_op(),
        target in compare_target(),
        current in option::of((bytes(40), any::<u64>())),
    ) {
        let compare = Compare { key, op, target };
        let request = ClientRequest {
            request_id: RequestId(1),
            session: SessionId(1),
            sequence: Sequence(1),
            consistency: ReadConsistency::Linearizable,
            route: None,
            op: Operation::Txn(Txn { compares: vec![compare.clone()], ..Txn::default() }),
        };
        let mut buf = AlignedVec::new();
        encode_frame(&request, &mut buf).unwrap();
        let Decoded::Frame(frame) = FrameDecoder::new(1 << 20).decode(&buf).unwrap() else {
            panic!("incomplete")
        };
        let archived = frame.access::<ClientRequest>(&buf).unwrap();
        let ArchivedOperation::Txn(txn) = &archived.op else { panic!("not a txn") };
        let state = current.as_ref().map(|(v, ver)| (v.as_slice(), KeyVersion(*ver)));
        prop_assert_eq!(compare.holds(state), txn.compares[0].holds(state));
    }
}
