//! Tests of the range state machine, through encoded requests read in place as the log
//! delivers them.

use super::*;
use proptest::prelude::*;
use quasar_rpc::message::{
    ClientRequest, Compare, CompareOp, CompareTarget, Expected, GroupId, NodeId, Operation,
    RangeEpoch, RangeId, ReadConsistency, ReplicaDescriptor, ReplicaRole, RequestId, Route,
    ScanRequest, Sequence, SessionId, Txn, TxnOp,
};
use rkyv::util::AlignedVec;

fn descriptor(start: &[u8], end: &[u8]) -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(7),
        group: GroupId(70),
        start: start.to_vec(),
        end: end.to_vec(),
        replicas: vec![ReplicaDescriptor {
            node: NodeId(1),
            role: ReplicaRole::Voter,
        }],
        epoch: RangeEpoch(3),
    }
}

fn range() -> RangeState {
    RangeState::new(descriptor(b"", b""), RangeLimits::default())
}

fn request(session: u64, sequence: u64, op: Operation) -> ClientRequest {
    ClientRequest {
        request_id: RequestId(sequence),
        session: SessionId(session),
        sequence: Sequence(sequence),
        consistency: ReadConsistency::Linearizable,
        route: None,
        op,
    }
}

fn encode(request: &ClientRequest) -> AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(request).unwrap()
}

fn archived(bytes: &AlignedVec) -> &ArchivedClientRequest {
    rkyv::access::<ArchivedClientRequest, rkyv::rancor::Error>(bytes).unwrap()
}

/// Applies `op` at `index` without a session.
fn apply(r: &mut RangeState, index: u64, op: Operation) -> Outcome {
    r.apply(index, archived(&encode(&request(0, index, op))))
}

fn read(r: &RangeState, op: Operation) -> Outcome {
    r.read(&archived(&encode(&request(0, 1, op))).op)
}

fn put(key: &[u8], value: &[u8]) -> Operation {
    Operation::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn get(key: &[u8]) -> Operation {
    Operation::Get { key: key.to_vec() }
}

fn value_of(outcome: Outcome) -> Option<(Vec<u8>, KeyVersion)> {
    match outcome {
        Ok(Reply::Get(v)) => v.map(|v| (v.value, v.version)),
        other => panic!("not a get answer: {other:?}"),
    }
}

#[test]
fn versions_are_the_applying_log_index() {
    let mut r = range();
    assert_eq!(
        apply(&mut r, 5, put(b"a", b"1")),
        Ok(Reply::Written {
            version: KeyVersion(5)
        })
    );
    assert_eq!(
        apply(&mut r, 6, put(b"a", b"2")),
        Ok(Reply::Written {
            version: KeyVersion(6)
        })
    );
    assert_eq!(
        value_of(read(&r, get(b"a"))),
        Some((b"2".to_vec(), KeyVersion(6)))
    );
    assert_eq!(
        apply(&mut r, 7, Operation::Delete { key: b"a".to_vec() }),
        Ok(Reply::Deleted {
            version: KeyVersion(7),
            found: true
        })
    );
    assert_eq!(value_of(read(&r, get(b"a"))), None);
    assert_eq!(r.applied_index(), 7);
}

#[test]
fn compare_and_set_on_version_and_value() {
    let mut r = range();
    let cas = |expected, value: &[u8]| Operation::CompareAndSet {
        key: b"f".to_vec(),
        expected,
        value: value.to_vec(),
    };
    // Create exactly once: expected version ABSENT.
    assert!(apply(&mut r, 1, cas(Expected::Version(KeyVersion::ABSENT), b"x")).is_ok());
    assert_eq!(
        apply(&mut r, 2, cas(Expected::Version(KeyVersion::ABSENT), b"y")),
        Err(RequestError::ConditionFailed {
            current_version: KeyVersion(1)
        })
    );
    assert!(apply(&mut r, 3, cas(Expected::Value(b"x".to_vec()), b"z")).is_ok());
    assert_eq!(
        apply(&mut r, 4, cas(Expected::Value(b"x".to_vec()), b"w")),
        Err(RequestError::ConditionFailed {
            current_version: KeyVersion(3)
        })
    );
    assert_eq!(
        value_of(read(&r, get(b"f"))),
        Some((b"z".to_vec(), KeyVersion(3)))
    );
}

#[test]
fn increment_counts_and_refuses_non_counters_and_overflow() {
    let mut r = range();
    let inc = |delta| Operation::Increment {
        key: b"n".to_vec(),
        delta,
    };
    assert_eq!(
        apply(&mut r, 1, inc(5)),
        Ok(Reply::Incremented {
            value: 5,
            version: KeyVersion(1)
        })
    );
    assert_eq!(
        apply(&mut r, 2, inc(-7)),
        Ok(Reply::Incremented {
            value: -2,
            version: KeyVersion(2)
        })
    );
    assert_eq!(
        apply(&mut r, 3, inc(i64::MIN)),
        Err(RequestError::InvalidRequest {
            reason: InvalidReason::CounterOverflow
        })
    );
    apply(&mut r, 4, put(b"n", b"text")).unwrap();
    assert_eq!(
        apply(&mut r, 5, inc(1)),
        Err(RequestError::InvalidRequest {
            reason: InvalidReason::NotACounter
        })
    );
}

#[test]
fn transactions_run_one_branch_atomically() {
    let mut r = range();
    apply(&mut r, 1, put(b"src", b"inode-9")).unwrap();
    // A rename: if `src` is at version 1 and `dst` absent, move it.
    let rename = Operation::Txn(Txn {
        compares: vec![
            Compare {
                key: b"src".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(KeyVersion(1)),
            },
            Compare {
                key: b"dst".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(KeyVersion::ABSENT),
            },
        ],
        success: vec![
            TxnOp::Delete {
                key: b"src".to_vec(),
            },
            TxnOp::Put {
                key: b"dst".to_vec(),
                value: b"inode-9".to_vec(),
            },
        ],
        failure: vec![TxnOp::Get {
            key: b"dst".to_vec(),
        }],
    });
    let first = apply(&mut r, 2, rename.clone()).unwrap();
    assert_eq!(
        first,
        Reply::Txn(TxnReply {
            branch: TxnBranch::Success,
            version: KeyVersion(2),
            results: vec![TxnOpResult::Delete { found: true }, TxnOpResult::Put],
        })
    );
    let second = apply(&mut r, 3, rename).unwrap();
    let Reply::Txn(second) = second else {
        panic!("{second:?}")
    };
    assert_eq!(second.branch, TxnBranch::Failure);
    assert_eq!(
        second.results,
        vec![TxnOpResult::Get(Some(VersionedValue {
            value: b"inode-9".to_vec(),
            version: KeyVersion(2)
        }))]
    );
    assert_eq!(value_of(read(&r, get(b"src"))), None);
}

#[test]
fn scans_page_by_count_and_bytes_and_stop_at_the_range_end() {
    let mut r = RangeState::new(descriptor(b"a", b"m"), RangeLimits::default());
    for (i, key) in [b"b", b"c", b"d", b"e", b"f"].iter().enumerate() {
        apply(&mut r, i as u64 + 1, put(*key, b"0123456789")).unwrap();
    }
    let scan = |start: &[u8], end: &[u8], max_count, max_bytes| {
        Operation::Scan(ScanRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            max_count,
            max_bytes,
        })
    };
    let page = |outcome: Outcome| match outcome {
        Ok(Reply::Scan(page)) => page,
        other => panic!("{other:?}"),
    };
    let p = page(read(&r, scan(b"a", b"", 2, 1 << 20)));
    assert_eq!(
        p.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(p.resume_key, Some(b"d".to_vec()));
    // Bytes: each pair is 11 bytes; 25 allows two.
    let p = page(read(&r, scan(b"d", b"", 100, 25)));
    assert_eq!(p.entries.len(), 2);
    assert_eq!(p.resume_key, Some(b"f".to_vec()));
    // The first pair is always returned whole.
    assert_eq!(page(read(&r, scan(b"b", b"", 100, 1))).entries.len(), 1);
    // A scan to the end of the key space stops at the range end: the rest is elsewhere.
    let p = page(read(&r, scan(b"e", b"", 100, 1 << 20)));
    assert_eq!(p.entries.len(), 2);
    assert_eq!(p.resume_key, None);
    assert_eq!(
        page(read(&r, scan(b"c", b"e", 100, 1 << 20))).entries.len(),
        2
    );
}

#[test]
fn delete_range_removes_the_span_only() {
    let mut r = range();
    for (i, key) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
        apply(&mut r, i as u64 + 1, put(*key, b"v")).unwrap();
    }
    let out = apply(
        &mut r,
        5,
        Operation::DeleteRange {
            start: b"b".to_vec(),
            end: b"d".to_vec(),
        },
    );
    assert_eq!(
        out,
        Ok(Reply::DeletedRange {
            version: KeyVersion(5),
            deleted_count: 2
        })
    );
    assert_eq!(r.len(), 2);
}

#[test]
fn a_retried_write_is_applied_once() {
    let mut r = range();
    let inc = request(
        42,
        1,
        Operation::Increment {
            key: b"n".to_vec(),
            delta: 1,
        },
    );
    let bytes = encode(&inc);
    let first = r.apply(1, archived(&bytes));
    // The client saw a timeout and retried: the entry is in the log twice.
    let retry = r.apply(2, archived(&bytes));
    assert_eq!(first, retry);
    assert_eq!(
        first,
        Ok(Reply::Incremented {
            value: 1,
            version: KeyVersion(1)
        })
    );
    let next = request(
        42,
        2,
        Operation::Increment {
            key: b"n".to_vec(),
            delta: 1,
        },
    );
    assert_eq!(
        r.apply(3, archived(&encode(&next))),
        Ok(Reply::Incremented {
            value: 2,
            version: KeyVersion(3)
        })
    );
}

#[test]
fn a_retry_older_than_the_session_window_is_refused_not_reapplied() {
    let mut r = range();
    let first = encode(&request(9, 1, put(b"k", b"v1")));
    r.apply(1, archived(&first)).unwrap();
    for seq in 2..=(OUTCOMES_PER_SESSION as u64 + 1) {
        r.apply(seq, archived(&encode(&request(9, seq, put(b"k", b"v")))))
            .unwrap();
    }
    let index = OUTCOMES_PER_SESSION as u64 + 2;
    assert_eq!(
        r.apply(index, archived(&first)),
        Err(RequestError::SessionExpired {
            session: SessionId(9),
            sequence: Sequence(1)
        })
    );
}

#[test]
fn proposals_are_checked_against_limits_route_and_bounds() {
    let r = RangeState::new(descriptor(b"b", b"m"), RangeLimits::default());
    let check = |req: &ClientRequest| {
        let bytes = encode(req);
        r.check_proposal(bytes.len(), archived(&bytes))
    };
    assert_eq!(check(&request(1, 1, put(b"c", b"v"))), Ok(()));
    let big_key = vec![b'c'; (8 << 10) + 1];
    assert!(matches!(
        check(&request(1, 1, put(&big_key, b"v"))),
        Err(RequestError::TooLarge {
            what: LimitKind::Key,
            max: 8192,
            ..
        })
    ));
    let big_value = vec![0; (1 << 20) + 1];
    assert!(matches!(
        check(&request(1, 1, put(b"c", &big_value))),
        Err(RequestError::TooLarge {
            what: LimitKind::Value,
            max: 1048576,
            ..
        })
    ));
    let many = Operation::Txn(Txn {
        compares: vec![],
        success: (0..5)
            .map(|i| TxnOp::Put {
                key: vec![b'c', i],
                value: vec![0; 1 << 20],
            })
            .collect(),
        failure: vec![],
    });
    assert!(matches!(
        check(&request(1, 1, many)),
        Err(RequestError::TooLarge {
            what: LimitKind::Frame,
            max: 4194304,
            ..
        })
    ));
    assert!(matches!(
        check(&request(1, 1, put(b"z", b"v"))),
        Err(RequestError::KeyNotInRange { .. })
    ));
    let mut stale = request(1, 1, put(b"c", b"v"));
    stale.route = Some(Route {
        range: RangeId(7),
        epoch: RangeEpoch(2),
    });
    assert_eq!(
        check(&stale),
        Err(RequestError::RangeMoved {
            descriptor: descriptor(b"b", b"m")
        })
    );
}

#[test]
fn keys_outside_the_range_are_refused_at_apply_too() {
    let mut r = RangeState::new(descriptor(b"b", b"m"), RangeLimits::default());
    assert!(matches!(
        apply(&mut r, 1, put(b"x", b"v")),
        Err(RequestError::KeyNotInRange { .. })
    ));
    assert!(r.is_empty());
}

/// A model: a plain map with the same operations, applied sequentially.
#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    Cas(u8, Option<u8>, u8),
    Increment(u8, i8),
    DeleteRange(u8, u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..8, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        (0u8..8).prop_map(Step::Delete),
        (0u8..8, proptest::option::of(any::<u8>()), any::<u8>())
            .prop_map(|(k, e, v)| Step::Cas(k, e, v)),
        (8u8..10, any::<i8>()).prop_map(|(k, d)| Step::Increment(k, d)),
        (0u8..8, 0u8..8).prop_map(|(a, b)| Step::DeleteRange(a.min(b), a.max(b) + 1)),
    ]
}

proptest! {
    /// Random writes agree with a model map; replicas applying the same log agree on the
    /// state hash; a replica one entry behind has a different hash.
    #[test]
    fn state_matches_a_model_and_replicas_agree(steps in proptest::collection::vec(step(), 1..60)) {
        let mut a = range();
        let mut b = range();
        let mut model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let index = i as u64 + 1;
            let op = match s {
                Step::Put(k, v) => put(&[*k], &[*v]),
                Step::Delete(k) => Operation::Delete { key: vec![*k] },
                Step::Cas(k, e, v) => Operation::CompareAndSet {
                    key: vec![*k],
                    expected: Expected::Value(e.map(|e| vec![e]).unwrap_or_default()),
                    value: vec![*v],
                },
                Step::Increment(k, d) => Operation::Increment { key: vec![*k], delta: i64::from(*d) },
                Step::DeleteRange(lo, hi) => Operation::DeleteRange { start: vec![*lo], end: vec![*hi] },
            };
            let bytes = encode(&request(1, index, op));
            let out_a = a.apply(index, archived(&bytes));
            let out_b = b.apply(index, archived(&bytes));
            prop_assert_eq!(&out_a, &out_b);
            match s {
                Step::Put(k, v) => { model.insert(vec![*k], (vec![*v], index)); }
                Step::Delete(k) => { model.remove(&vec![*k]); }
                Step::Cas(k, e, v) => {
                    let expected = e.map(|e| vec![e]).unwrap_or_default();
                    let holds = model.get(&vec![*k]).is_some_and(|(cur, _)| *cur == expected);
                    prop_assert_eq!(holds, out_a.is_ok());
                    if holds { model.insert(vec![*k], (vec![*v], index)); }
                }
                Step::Increment(k, d) => {
                    let before = model.get(&vec![*k]).map_or(0, |(v, _)| i64::from_le_bytes(v.as_slice().try_into().unwrap()));
                    model.insert(vec![*k], ((before + i64::from(*d)).to_le_bytes().to_vec(), index));
                }
                Step::DeleteRange(lo, hi) => { model.retain(|k, _| k[0] < *lo || k[0] >= *hi); }
            }
        }
        for k in 0u8..10 {
            let got = value_of(read(&a, get(&[k])));
            let want = model.get(&vec![k]).map(|(v, i)| (v.clone(), KeyVersion(*i)));
            prop_assert_eq!(got, want, "key {}", k);
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
        // The sums kept up to date by every write, split and merge are the ones a full
        // recount finds.
        prop_assert_eq!((a.content_hash, a.bytes), a.recomputed_sums());
        let whole = (a.content_hash, a.bytes);
        let mut right = a.split_off(9_000, descriptor(b"", b"\x05"), descriptor(b"\x05", b""));
        prop_assert_eq!((a.content_hash, a.bytes), a.recomputed_sums());
        prop_assert_eq!((right.content_hash, right.bytes), right.recomputed_sums());
        right.freeze(9_001);
        a.absorb(9_002, right, descriptor(b"", b""));
        prop_assert_eq!((a.content_hash, a.bytes), whole);
        let last = encode(&request(1, 10_000, put(&[0], b"new")));
        b.apply(10_000, archived(&last)).unwrap();
        prop_assert_ne!(a.state_hash(), b.state_hash());
    }
}

#[test]
fn versions_never_go_back_across_a_merge() {
    // Left's log is short (index 10); right's ran ahead (its key was written at 500).
    let mut left = RangeState::new(descriptor(b"", b"m"), RangeLimits::default());
    apply(&mut left, 5, put(b"a", b"1")).unwrap();
    let mut right = RangeState::new(descriptor(b"m", b""), RangeLimits::default());
    apply(&mut right, 500, put(b"x", b"old")).unwrap();
    right.freeze(501);
    let before = value_of(read(&right, get(b"x"))).unwrap().1;
    assert_eq!(before, KeyVersion(500));

    left.absorb(10, right, descriptor(b"", b""));
    // The absorbed key keeps its version: a compare on it still matches.
    assert_eq!(value_of(read(&left, get(b"x"))).unwrap().1, before);
    let cas = Operation::CompareAndSet {
        key: b"x".to_vec(),
        expected: Expected::Version(before),
        value: b"new".to_vec(),
    };
    let written = apply(&mut left, 11, cas).unwrap();
    let Reply::Written { version } = written else {
        panic!("not written: {written:?}");
    };
    assert!(version > before, "{version:?} after {before:?}");
    // Every later write on either side's keys is above every earlier version.
    let Reply::Written { version: a } = apply(&mut left, 12, put(b"a", b"2")).unwrap() else {
        panic!("not written");
    };
    assert!(a > version);
    assert!(left.version_bound() >= a.0);

    // The offset survives a snapshot and a split.
    let restored = RangeState::decode_snapshot(&left.encode_snapshot(), RangeLimits::default())
        .expect("decodes");
    assert_eq!(restored.state_hash(), left.state_hash());
    let mut restored = restored;
    let mut child = restored.split_off(13, descriptor(b"", b"m"), descriptor(b"m", b""));
    let Reply::Written { version: x } = apply(&mut child, 14, put(b"x", b"3")).unwrap() else {
        panic!("not written");
    };
    assert!(x > version, "{x:?} after {version:?}");
}
