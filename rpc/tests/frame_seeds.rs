//! The fuzz seed corpus: real encoded frames of every kind, committed under
//! `rpc/fuzz/seeds/<target>/seed-*.bin` (passed to libFuzzer as a second
//! corpus, see `rpc/fuzz/README.md`) so fuzzing starts from valid frames.
//!
//! `committed_seeds_are_current` fails when the frame format or a message
//! layout changes and the committed seeds no longer match what this build
//! encodes. Regenerate them (and review the diff) with:
//!
//! ```text
//! QUASAR_REGEN_SEEDS=1 cargo test -p quasar-rpc --test frame_seeds
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use quasar_rpc::frame::{encode_frame, Decoded, FrameDecoder, FrameKind, WireMessage};
use quasar_rpc::message::*;
use rkyv::util::AlignedVec;

const TARGETS: [&str; 2] = ["frame_decode", "message_validate"];
const REGEN_VAR: &str = "QUASAR_REGEN_SEEDS";

fn frame<M: WireMessage>(msg: &M) -> Vec<u8> {
    let mut buf = AlignedVec::new();
    encode_frame(msg, &mut buf).expect("seed encodes");
    buf.to_vec()
}

fn descriptor() -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(12),
        group: GroupId(120),
        start: b"dir/a".to_vec(),
        end: b"dir/m".to_vec(),
        replicas: vec![
            ReplicaDescriptor {
                node: NodeId(1),
                role: ReplicaRole::Voter,
            },
            ReplicaDescriptor {
                node: NodeId(2),
                role: ReplicaRole::Voter,
            },
            ReplicaDescriptor {
                node: NodeId(3),
                role: ReplicaRole::Learner,
            },
        ],
        epoch: RangeEpoch(6),
    }
}

fn request(id: u64, op: Operation) -> ClientRequest {
    ClientRequest {
        request_id: RequestId(id),
        session: SessionId(0xfeed),
        sequence: Sequence(id),
        consistency: ReadConsistency::Linearizable,
        route: Some(Route {
            range: RangeId(12),
            epoch: RangeEpoch(6),
        }),
        op,
    }
}

fn raft(messages: Vec<RaftMessage>, heartbeats: Vec<Heartbeat>) -> RaftBatch {
    RaftBatch {
        from: NodeId(1),
        to: NodeId(2),
        to_shard: ShardId(1),
        messages,
        heartbeats,
        heartbeat_responses: vec![HeartbeatResponse {
            group: GroupId(121),
            term: Term(3),
            seq: 9,
            tick: 40,
        }],
        commits: vec![CommitNotice {
            group: GroupId(122),
            term: Term(3),
            commit: LogIndex(17),
        }],
    }
}

/// Every seed by file name.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let mut seeds = BTreeMap::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        seeds.insert(format!("seed-{name}.bin"), bytes);
    };
    let hello = Handshake::from_node(ClusterId(7), NodeId(1), ShardId(1), ShardId(1));
    add("handshake", frame(&hello));
    add(
        "handshake-client",
        frame(&Handshake {
            origin: Origin::Client {
                session: SessionId(0xfeed),
            },
            ..hello.clone()
        }),
    );
    add(
        "handshake-accepted",
        frame(&HandshakeReply::Accepted {
            cluster: ClusterId(7),
            node: NodeId(2),
            shard: ShardId(1),
            protocol_version: 1,
        }),
    );
    add(
        "handshake-refused",
        frame(&HandshakeReply::Refused(
            HandshakeRefusal::ClusterMismatch {
                expected: ClusterId(7),
                got: ClusterId(8),
            },
        )),
    );
    let append = RaftMessage {
        group: GroupId(120),
        term: Term(3),
        body: RaftBody::Append(Append {
            prev: LogId {
                term: Term(3),
                index: LogIndex(41),
            },
            entries: (0..3)
                .map(|i| Entry {
                    term: Term(3),
                    kind: EntryKind::Normal,
                    payload: vec![i; 16],
                })
                .collect(),
            commit: LogIndex(40),
        }),
    };
    add("raft-append", frame(&raft(vec![append.clone()], vec![])));
    add(
        "raft-mixed",
        frame(&raft(
            vec![
                append,
                RaftMessage {
                    group: GroupId(121),
                    term: Term(4),
                    body: RaftBody::RequestPreVote(VoteRequest {
                        last_log: LogId {
                            term: Term(3),
                            index: LogIndex(9),
                        },
                        reason: CampaignReason::Election,
                    }),
                },
                RaftMessage {
                    group: GroupId(122),
                    term: Term(2),
                    body: RaftBody::AppendResponse(AppendResponse::Rejected {
                        rejected: LogIndex(7),
                        hint: LogId {
                            term: Term(1),
                            index: LogIndex(5),
                        },
                    }),
                },
                RaftMessage {
                    group: GroupId(123),
                    term: Term(2),
                    body: RaftBody::ReadIndexResponse(ReadIndexResponse::Ready {
                        context: 5,
                        index: LogIndex(70),
                    }),
                },
                RaftMessage {
                    group: GroupId(124),
                    term: Term(2),
                    body: RaftBody::TimeoutNow,
                },
            ],
            (0..4)
                .map(|g| Heartbeat {
                    group: GroupId(g),
                    term: Term(2),
                    commit: LogIndex(g * 10),
                    seq: g + 1,
                    tick: 100 + g,
                })
                .collect(),
        )),
    );
    add(
        "raft-snapshot",
        frame(&raft(
            vec![RaftMessage {
                group: GroupId(120),
                term: Term(3),
                body: RaftBody::Snapshot(SnapshotChunk {
                    snapshot: LogId {
                        term: Term(3),
                        index: LogIndex(500),
                    },
                    descriptor: descriptor(),
                    voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                    voters_outgoing: vec![],
                    learners: vec![],
                    offset_bytes: 0,
                    total_bytes: 64,
                    data: (0..64).collect(),
                }),
            }],
            vec![],
        )),
    );
    add(
        "client-get",
        frame(&request(
            1,
            Operation::Get {
                key: b"dir/b".to_vec(),
            },
        )),
    );
    add(
        "client-put",
        frame(&request(
            2,
            Operation::Put {
                key: b"dir/b".to_vec(),
                value: b"inode 9".to_vec(),
            },
        )),
    );
    add(
        "client-cas",
        frame(&request(
            3,
            Operation::CompareAndSet {
                key: b"dir/c".to_vec(),
                expected: Expected::Version(KeyVersion::ABSENT),
                value: b"inode 10".to_vec(),
            },
        )),
    );
    add(
        "client-scan",
        frame(&ClientRequest {
            consistency: ReadConsistency::Stale {
                max_staleness_ms: 500,
            },
            ..request(
                4,
                Operation::Scan(ScanRequest {
                    start: b"dir/".to_vec(),
                    end: b"dir0".to_vec(),
                    max_count: 100,
                    max_bytes: 65536,
                }),
            )
        }),
    );
    add(
        "client-txn",
        frame(&request(
            5,
            Operation::Txn(Txn {
                compares: vec![Compare {
                    key: b"dir/old".to_vec(),
                    op: CompareOp::Greater,
                    target: CompareTarget::Version(KeyVersion::ABSENT),
                }],
                success: vec![
                    TxnOp::Delete {
                        key: b"dir/old".to_vec(),
                    },
                    TxnOp::Put {
                        key: b"dir/new".to_vec(),
                        value: b"inode 11".to_vec(),
                    },
                ],
                failure: vec![TxnOp::Get {
                    key: b"dir/old".to_vec(),
                }],
            }),
        )),
    );
    add(
        "client-increment",
        frame(&request(
            6,
            Operation::Increment {
                key: b"next-inode".to_vec(),
                delta: 1,
            },
        )),
    );
    add(
        "response-scan",
        frame(&ClientResponse {
            request_id: RequestId(4),
            result: Ok(Reply::Scan(ScanPage {
                entries: vec![KeyValue {
                    key: b"dir/b".to_vec(),
                    value: b"inode 9".to_vec(),
                    version: KeyVersion(44),
                }],
                resume_key: Some(b"dir/c".to_vec()),
            })),
        }),
    );
    add(
        "response-txn",
        frame(&ClientResponse {
            request_id: RequestId(5),
            result: Ok(Reply::Txn(TxnReply {
                branch: TxnBranch::Success,
                version: KeyVersion(45),
                results: vec![TxnOpResult::Delete { found: true }, TxnOpResult::Put],
            })),
        }),
    );
    add(
        "response-range-moved",
        frame(&ClientResponse {
            request_id: RequestId(2),
            result: Err(RequestError::RangeMoved {
                descriptor: descriptor(),
            }),
        }),
    );
    add(
        "response-not-leader",
        frame(&ClientResponse {
            request_id: RequestId(1),
            result: Err(RequestError::NotLeader {
                range: RangeId(12),
                leader_hint: Some(NodeId(3)),
            }),
        }),
    );
    add(
        "admin-split",
        frame(&AdminRequest {
            request_id: RequestId(100),
            op: AdminOp::SplitRange {
                range: RangeId(12),
                split_key: b"dir/g".to_vec(),
                expected_epoch: RangeEpoch(6),
            },
        }),
    );
    add(
        "admin-add-member",
        frame(&AdminRequest {
            request_id: RequestId(101),
            op: AdminOp::AddMember {
                node: NodeId(4),
                address: "10.0.0.4:7000".to_string(),
            },
        }),
    );
    add(
        "admin-ranges",
        frame(&AdminResponse {
            request_id: RequestId(102),
            result: Ok(AdminReply::Ranges {
                ranges: vec![RangeInfo {
                    descriptor: descriptor(),
                    leader: Some(NodeId(1)),
                    commit: Some(LogIndex(45)),
                }],
                resume_key: None,
            }),
        }),
    );
    add(
        "admin-status",
        frame(&AdminResponse {
            request_id: RequestId(103),
            result: Ok(AdminReply::Status(NodeStatus {
                cluster: ClusterId(7),
                node: NodeId(1),
                uptime_secs: 3600,
                cpu_user_micros: 1_250_000,
                cpu_system_micros: 310_000,
                shards: vec![ShardStatus {
                    shard: ShardId(0),
                    groups: 10,
                    leaders: 4,
                    wal_bytes: 1 << 26,
                    cpu_micros: 1_400_000,
                }],
            })),
        }),
    );
    // A connection's opening: three frames back to back, as the decoder sees a stream.
    let mut stream = frame(&hello);
    stream.extend(frame(&request(
        7,
        Operation::Delete {
            key: b"dir/b".to_vec(),
        },
    )));
    stream.extend(frame(&request(
        8,
        Operation::DeleteRange {
            start: b"dir/".to_vec(),
            end: vec![],
        },
    )));
    add("stream-three-frames", stream);
    seeds
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("seeds")
        .join(target)
}

fn committed(target: &str) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(corpus_dir(target)) else {
        return found;
    };
    for entry in entries {
        let entry = entry.expect("readable corpus dir");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seed-") {
            found.insert(name, std::fs::read(entry.path()).expect("readable seed"));
        }
    }
    found
}

#[test]
fn every_seed_decodes_into_valid_frames() {
    let mut kinds = vec![];
    for (name, bytes) in seeds() {
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(&bytes);
        let mut decoder = FrameDecoder::new(u64::from(SizeLimits::default().max_frame_bytes));
        let mut at = 0;
        while at < buf.len() {
            let Decoded::Frame(frame) = decoder.decode(&buf[at..]).unwrap() else {
                panic!("{name}: incomplete at {at}")
            };
            let body = frame.body(&buf[at..]);
            let ok = match frame.kind {
                FrameKind::Handshake => quasar_rpc::frame::access_body::<Handshake>(body).is_ok(),
                FrameKind::HandshakeReply => {
                    quasar_rpc::frame::access_body::<HandshakeReply>(body).is_ok()
                }
                FrameKind::RaftBatch => quasar_rpc::frame::access_body::<RaftBatch>(body).is_ok(),
                FrameKind::ClientRequest => {
                    quasar_rpc::frame::access_body::<ClientRequest>(body).is_ok()
                }
                FrameKind::ClientResponse => {
                    quasar_rpc::frame::access_body::<ClientResponse>(body).is_ok()
                }
                FrameKind::AdminRequest => {
                    quasar_rpc::frame::access_body::<AdminRequest>(body).is_ok()
                }
                FrameKind::AdminResponse => {
                    quasar_rpc::frame::access_body::<AdminResponse>(body).is_ok()
                }
            };
            assert!(ok, "{name}: {:?} frame at {at} fails bytecheck", frame.kind);
            kinds.push(frame.kind);
            at += frame.consumed;
        }
    }
    for kind in FrameKind::ALL {
        assert!(kinds.contains(&kind), "no seed carries a {kind:?} frame");
    }
}

#[test]
fn committed_seeds_are_current() {
    let expected = seeds();
    let regenerate = std::env::var_os(REGEN_VAR).is_some_and(|v| v == "1");
    for target in TARGETS {
        if regenerate {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).expect("create corpus dir");
            for stale in committed(target)
                .keys()
                .filter(|n| !expected.contains_key(*n))
            {
                std::fs::remove_file(dir.join(stale)).expect("remove stale seed");
            }
            for (name, bytes) in &expected {
                std::fs::write(dir.join(name), bytes).expect("write seed");
            }
        }
        let found = committed(target);
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&found),
            names(&expected),
            "seed files of fuzz target {target} differ from what this build generates; run \
             `{REGEN_VAR}=1 cargo test -p quasar-rpc --test frame_seeds` and commit the result"
        );
        for (name, bytes) in &expected {
            assert!(
                &found[name] == bytes,
                "{target}/{name} is stale: the frame format or a message layout changed. If that \
                 is intended, bump PROTOCOL_VERSION when old peers cannot read it, run \
                 `{REGEN_VAR}=1 cargo test -p quasar-rpc --test frame_seeds` and commit the seeds"
            );
        }
    }
}
