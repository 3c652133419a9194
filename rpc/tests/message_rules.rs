//! The pure rules attached to messages: which errors are retryable or
//! definite, size limits (TooLarge carries the limit), request
//! well-formedness, the handshake decision, range descriptors and compares.

use quasar_rpc::message::*;

fn descriptor() -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(3),
        group: GroupId(30),
        start: b"b".to_vec(),
        end: b"m".to_vec(),
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
        epoch: RangeEpoch(4),
    }
}

fn every_error() -> Vec<RequestError> {
    vec![
        RequestError::NotLeader {
            range: RangeId(1),
            leader_hint: Some(NodeId(2)),
        },
        RequestError::RangeMoved {
            descriptor: descriptor(),
        },
        RequestError::KeyNotInRange {
            descriptor: descriptor(),
        },
        RequestError::UnknownRange { range: RangeId(1) },
        RequestError::ConditionFailed {
            current_version: KeyVersion(17),
        },
        RequestError::TooLarge {
            what: LimitKind::Value,
            len: 2 << 20,
            max: 1 << 20,
        },
        RequestError::InvalidRequest {
            reason: InvalidReason::EmptySpan,
        },
        RequestError::UnknownNode { node: NodeId(9) },
        RequestError::Refused {
            reason: "ranges 2 and 3 are not adjacent".into(),
        },
        RequestError::ChangeInProgress { range: RangeId(1) },
        RequestError::Unavailable {
            reason: UnavailableReason::NoQuorum,
        },
        RequestError::Ambiguous {
            reason: AmbiguousReason::Timeout,
        },
    ]
}

#[test]
fn only_ambiguous_is_not_definite() {
    for e in every_error() {
        let ambiguous = matches!(e, RequestError::Ambiguous { .. });
        assert_eq!(e.is_definite(), !ambiguous, "{e:?}");
    }
}

#[test]
fn retryable_errors_are_routing_and_availability_ones() {
    let retryable: Vec<bool> = every_error()
        .iter()
        .map(RequestError::is_retryable)
        .collect();
    assert_eq!(
        retryable,
        [true, true, true, true, false, false, false, false, false, true, true, true],
        "NotLeader, RangeMoved, KeyNotInRange, UnknownRange, ChangeInProgress, Unavailable and \
         Ambiguous (same session+sequence) retry; the rest stop"
    );
}

#[test]
fn error_text_names_the_numbers_and_the_next_step() {
    let text = RequestError::TooLarge {
        what: LimitKind::Key,
        len: 5000,
        max: 4096,
    }
    .to_string();
    assert!(text.contains("5000") && text.contains("4096"), "{text}");
    let text = RequestError::ConditionFailed {
        current_version: KeyVersion(17),
    }
    .to_string();
    assert!(text.contains("17"), "{text}");
    let text = RequestError::RangeMoved {
        descriptor: descriptor(),
    }
    .to_string();
    assert!(
        text.contains("range 3") && text.contains("epoch 4"),
        "{text}"
    );
    let text = RequestError::Ambiguous {
        reason: AmbiguousReason::Timeout,
    }
    .to_string();
    assert!(text.contains("same session and sequence"), "{text}");
}

#[test]
fn default_limits_are_8k_keys_1m_values() {
    let limits = SizeLimits::default();
    assert_eq!(limits.max_key_bytes, 8192);
    assert_eq!(limits.max_value_bytes, 1 << 20);
    assert!(limits.max_frame_bytes > limits.max_value_bytes + limits.max_key_bytes);
}

fn put(key_len: usize, value_len: usize) -> Operation {
    Operation::Put {
        key: vec![b'k'; key_len],
        value: vec![b'v'; value_len],
    }
}

#[test]
fn limits_refuse_with_the_limit_and_accept_at_it() {
    let limits = SizeLimits::default();
    assert_eq!(limits.validate_operation(&put(8192, 1 << 20)), Ok(()));
    assert_eq!(
        limits.validate_operation(&put(8193, 1)),
        Err(RequestError::TooLarge {
            what: LimitKind::Key,
            len: 8193,
            max: 8192
        })
    );
    assert_eq!(
        limits.validate_operation(&put(1, (1 << 20) + 1)),
        Err(RequestError::TooLarge {
            what: LimitKind::Value,
            len: (1 << 20) + 1,
            max: 1 << 20
        })
    );
    assert_eq!(
        limits.check_frame(limits.max_frame_bytes as usize + 1),
        Err(RequestError::TooLarge {
            what: LimitKind::Frame,
            len: u64::from(limits.max_frame_bytes) + 1,
            max: u64::from(limits.max_frame_bytes),
        })
    );
}

#[test]
fn limits_reach_inside_transactions_and_compare_and_set() {
    let limits = SizeLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_frame_bytes: 1024,
    };
    let big_value = vec![0u8; 17];
    let cas = Operation::CompareAndSet {
        key: b"k".to_vec(),
        expected: Expected::Value(big_value.clone()),
        value: b"v".to_vec(),
    };
    assert!(matches!(
        limits.validate_operation(&cas),
        Err(RequestError::TooLarge {
            what: LimitKind::Value,
            len: 17,
            max: 16
        })
    ));
    let txn = Operation::Txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Get { key: b"a".to_vec() }],
        failure: vec![TxnOp::Put {
            key: b"a".to_vec(),
            value: big_value,
        }],
    });
    assert!(matches!(
        limits.validate_operation(&txn),
        Err(RequestError::TooLarge {
            what: LimitKind::Value,
            ..
        })
    ));
    let txn = Operation::Txn(Txn {
        compares: vec![Compare {
            key: vec![1; 9],
            op: CompareOp::Equal,
            target: CompareTarget::Version(KeyVersion::ABSENT),
        }],
        ..Txn::default()
    });
    assert!(matches!(
        limits.validate_operation(&txn),
        Err(RequestError::TooLarge {
            what: LimitKind::Key,
            len: 9,
            max: 8
        })
    ));
}

#[test]
fn malformed_requests_are_invalid() {
    let limits = SizeLimits::default();
    let invalid = |reason| Err(RequestError::InvalidRequest { reason });
    assert_eq!(
        limits.validate_operation(&Operation::Get { key: vec![] }),
        invalid(InvalidReason::EmptyKey)
    );
    let span = |start: &[u8], end: &[u8]| Operation::DeleteRange {
        start: start.to_vec(),
        end: end.to_vec(),
    };
    assert_eq!(
        limits.validate_operation(&span(b"b", b"a")),
        invalid(InvalidReason::EmptySpan)
    );
    assert_eq!(
        limits.validate_operation(&span(b"a", b"a")),
        invalid(InvalidReason::EmptySpan)
    );
    assert_eq!(limits.validate_operation(&span(b"a", b"")), Ok(()));
    assert_eq!(limits.validate_operation(&span(b"", b"a")), Ok(()));
    let scan = |max_count, max_bytes| {
        Operation::Scan(ScanRequest {
            start: vec![],
            end: vec![],
            max_count,
            max_bytes,
        })
    };
    assert_eq!(
        limits.validate_operation(&scan(0, 10)),
        invalid(InvalidReason::ZeroScanLimit)
    );
    assert_eq!(
        limits.validate_operation(&scan(10, 0)),
        invalid(InvalidReason::ZeroScanLimit)
    );
    assert_eq!(limits.validate_operation(&scan(1, 1)), Ok(()));
    let admin = |op| AdminRequest {
        request_id: RequestId(1),
        op,
    };
    assert_eq!(
        limits.validate_admin_request(&admin(AdminOp::MoveReplica {
            range: RangeId(1),
            from: NodeId(2),
            to: NodeId(2),
            expected_epoch: RangeEpoch(1),
        })),
        invalid(InvalidReason::BadReplicaChange)
    );
    assert_eq!(
        limits.validate_admin_request(&admin(AdminOp::SplitRange {
            range: RangeId(1),
            split_key: vec![],
            expected_epoch: RangeEpoch(1),
        })),
        invalid(InvalidReason::EmptyKey)
    );
    assert_eq!(
        limits.validate_admin_request(&admin(AdminOp::Status)),
        Ok(())
    );
}

#[test]
fn writes_and_reads_are_told_apart() {
    assert!(!Operation::Get { key: b"a".to_vec() }.is_write());
    assert!(put(1, 1).is_write());
    assert!(Operation::Increment {
        key: b"c".to_vec(),
        delta: -1
    }
    .is_write());
    let read_txn = Txn {
        success: vec![TxnOp::Get { key: b"a".to_vec() }],
        ..Txn::default()
    };
    assert!(!Operation::Txn(read_txn).is_write());
    let write_txn = Txn {
        failure: vec![TxnOp::Delete { key: b"a".to_vec() }],
        ..Txn::default()
    };
    assert!(Operation::Txn(write_txn).is_write());
}

#[test]
fn compares_follow_etcd_semantics() {
    let version = |op, v| Compare {
        key: b"k".to_vec(),
        op,
        target: CompareTarget::Version(KeyVersion(v)),
    };
    let value = |op, v: &[u8]| Compare {
        key: b"k".to_vec(),
        op,
        target: CompareTarget::Value(v.to_vec()),
    };
    let present = Some((b"m".as_slice(), KeyVersion(5)));
    // Absent keys have version 0: "create if absent" is Version == 0.
    assert!(version(CompareOp::Equal, 0).holds(None));
    assert!(!version(CompareOp::Equal, 0).holds(present));
    assert!(version(CompareOp::Equal, 5).holds(present));
    assert!(version(CompareOp::Less, 6).holds(present));
    assert!(version(CompareOp::Greater, 4).holds(present));
    assert!(version(CompareOp::NotEqual, 4).holds(present));
    assert!(value(CompareOp::Equal, b"m").holds(present));
    assert!(value(CompareOp::Less, b"n").holds(present));
    assert!(value(CompareOp::Greater, b"a").holds(present));
    // Every value compare fails on an absent key, even NotEqual.
    assert!(!value(CompareOp::NotEqual, b"m").holds(None));
}

#[test]
fn descriptor_contains_half_open_span() {
    let d = descriptor();
    assert!(d.contains(b"b"));
    assert!(d.contains(b"lzzz"));
    assert!(!d.contains(b"m"));
    assert!(!d.contains(b"a"));
    assert!(d.contains_span(b"c", b"m"));
    assert!(!d.contains_span(b"c", b"n"));
    assert!(!d.contains_span(b"c", b""));
    let last = RangeDescriptor {
        end: vec![],
        ..descriptor()
    };
    assert!(last.contains(&[0xff; 100]));
    assert!(last.contains_span(b"x", b""));
    assert_eq!(d.voters().collect::<Vec<_>>(), [NodeId(1), NodeId(2)]);
    assert_eq!(
        d.replica(NodeId(3)).map(|r| r.role),
        Some(ReplicaRole::Learner)
    );
}

#[test]
fn descriptor_validation() {
    assert_eq!(descriptor().validate(), Ok(()));
    let empty = RangeDescriptor {
        end: b"b".to_vec(),
        ..descriptor()
    };
    assert_eq!(
        empty.validate(),
        Err(DescriptorError::EmptySpan { range: RangeId(3) })
    );
    let mut dup = descriptor();
    dup.replicas.push(ReplicaDescriptor {
        node: NodeId(2),
        role: ReplicaRole::Learner,
    });
    assert_eq!(
        dup.validate(),
        Err(DescriptorError::BadReplica {
            range: RangeId(3),
            node: NodeId(2)
        })
    );
    let mut learners = descriptor();
    learners
        .replicas
        .iter_mut()
        .for_each(|r| r.role = ReplicaRole::Learner);
    assert_eq!(
        learners.validate(),
        Err(DescriptorError::NoVoter { range: RangeId(3) })
    );
}

const LOCAL: LocalIdentity = LocalIdentity {
    cluster: ClusterId(7),
    node: NodeId(1),
    shard: ShardId(2),
};

#[test]
fn handshake_from_a_peer_of_this_cluster_is_accepted() {
    let h = Handshake::from_node(ClusterId(7), NodeId(2), ShardId(0), ShardId(2));
    assert_eq!(
        h.evaluate(&LOCAL),
        HandshakeReply::Accepted {
            cluster: ClusterId(7),
            node: NodeId(1),
            shard: ShardId(2),
            protocol_version: quasar_rpc::frame::PROTOCOL_VERSION,
        }
    );
    let client = Handshake {
        origin: Origin::Client {
            session: SessionId(99),
        },
        ..h
    };
    assert!(matches!(
        client.evaluate(&LOCAL),
        HandshakeReply::Accepted { .. }
    ));
}

#[test]
fn handshake_refusals_name_the_reason() {
    let good = Handshake::from_node(ClusterId(7), NodeId(2), ShardId(0), ShardId(2));
    let refused = |h: Handshake| match h.evaluate(&LOCAL) {
        HandshakeReply::Refused(r) => r,
        accepted => panic!("{h:?} was {accepted:?}"),
    };
    assert_eq!(
        refused(Handshake {
            cluster: ClusterId(8),
            ..good.clone()
        }),
        HandshakeRefusal::ClusterMismatch {
            expected: ClusterId(7),
            got: ClusterId(8)
        }
    );
    assert!(matches!(
        refused(Handshake {
            protocol_version: 99,
            ..good.clone()
        }),
        HandshakeRefusal::UnsupportedVersion { got: 99, .. }
    ));
    assert_eq!(
        refused(Handshake {
            target_shard: ShardId(3),
            ..good.clone()
        }),
        HandshakeRefusal::WrongShard {
            wanted: ShardId(3),
            reached: ShardId(2)
        }
    );
    assert_eq!(
        refused(Handshake::from_node(
            ClusterId(7),
            NodeId(1),
            ShardId(0),
            ShardId(2)
        )),
        HandshakeRefusal::NodeIdConflict { node: NodeId(1) }
    );
    let text = HandshakeRefusal::ClusterMismatch {
        expected: ClusterId(7),
        got: ClusterId(8),
    }
    .to_string();
    assert!(
        text.contains("cluster 8") && text.contains("cluster 7"),
        "{text}"
    );
}

#[test]
fn snapshot_chunk_knows_when_it_is_last() {
    let chunk = |offset_bytes, len: usize, total_bytes| SnapshotChunk {
        snapshot: LogId {
            term: Term(2),
            index: LogIndex(100),
        },
        descriptor: descriptor(),
        voters: vec![],
        voters_outgoing: vec![],
        learners: vec![],
        offset_bytes,
        total_bytes,
        data: vec![0; len],
    };
    assert!(!chunk(0, 10, 20).is_last());
    assert!(chunk(10, 10, 20).is_last());
    assert!(chunk(0, 0, 0).is_last());
}

#[test]
fn entry_indexes_follow_prev_and_refuse_overflow() {
    let append = |prev_index| Append {
        prev: LogId {
            term: Term(1),
            index: LogIndex(prev_index),
        },
        entries: vec![],
        commit: LogIndex(0),
    };
    assert_eq!(append(41).entry_index(0), Some(LogIndex(42)));
    assert_eq!(append(41).entry_index(3), Some(LogIndex(45)));
    assert_eq!(
        append(u64::MAX - 1).entry_index(0),
        Some(LogIndex(u64::MAX))
    );
    assert_eq!(append(u64::MAX - 1).entry_index(1), None);
    assert_eq!(append(u64::MAX).entry_index(0), None);
}
