//! Client requests and responses: the key-value operations and their typed errors.
//!
//! Owns the wire shape, the pure evaluation of a transaction [`Compare`], and
//! the error taxonomy: "try elsewhere" ([`RequestError::is_retryable`]) apart
//! from "stop", and "outcome unknown" ([`RequestError::Ambiguous`]) apart from
//! definite failures ([`RequestError::is_definite`]). Executing requests is
//! the range state machine's job (`shard::range`).
//!
//! Exactly-once: every request carries `(session, sequence)`. A write retried
//! with the same pair after an [`RequestError::Ambiguous`] answer is applied
//! at most once; the server answers the retry with the first outcome.

use rkyv::{Archive, Deserialize, Serialize};

use super::ids::{KeyVersion, NodeId, RangeEpoch, RangeId, RequestId, Sequence, SessionId};
use super::range::RangeDescriptor;
use crate::frame::FrameKind;

/// One client request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClientRequest {
    /// Chosen by the client; the response echoes it (many in flight per connection).
    pub request_id: RequestId,
    /// The client's exactly-once session.
    pub session: SessionId,
    /// Position of this request in the session; a retry reuses it.
    pub sequence: Sequence,
    /// How fresh a read must be (ignored by writes, which are always linearizable).
    pub consistency: ReadConsistency,
    /// The range (and epoch) the client believes serves the key, from its
    /// range cache; `None` lets the node route by key.
    pub route: Option<Route>,
    /// The operation.
    pub op: Operation,
}
crate::wire_message!(ClientRequest, FrameKind::ClientRequest);

/// A cached route: which range, as of which epoch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct Route {
    /// The range.
    pub range: RangeId,
    /// Its epoch in the client's cache; a stale one gets [`RequestError::RangeMoved`].
    pub epoch: RangeEpoch,
}

/// Read consistency (DESIGN "Data model and ranges").
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum ReadConsistency {
    /// Served by the leader under a lease or after a ReadIndex round.
    Linearizable,
    /// Served by a follower after a ReadIndex round to the leader.
    Follower,
    /// Served locally by any replica whose data is at most this old.
    Stale {
        /// Bound on staleness in milliseconds.
        max_staleness_ms: u32,
    },
}

/// A key-value operation within one range.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Operation {
    /// Read one key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Write `value` if the key's current state matches `expected`; fails
    /// with [`RequestError::ConditionFailed`] otherwise.
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The condition.
        expected: Expected,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete every key in `[start, end)` (`end` empty: to the end of the range).
    DeleteRange {
        /// First key (inclusive).
        start: Vec<u8>,
        /// End (exclusive); empty for unbounded.
        end: Vec<u8>,
    },
    /// Read keys in order, one page at a time.
    Scan(ScanRequest),
    /// An atomic transaction.
    Txn(Txn),
    /// Add `delta` to a counter (a value of 8 little-endian bytes, absent = 0).
    Increment {
        /// The key.
        key: Vec<u8>,
        /// What to add (may be negative).
        delta: i64,
    },
}

impl Operation {
    /// Whether the operation goes through the Raft log.
    pub fn is_write(&self) -> bool {
        match self {
            Operation::Get { .. } | Operation::Scan(_) => false,
            Operation::Txn(txn) => !txn.is_read_only(),
            Operation::Put { .. }
            | Operation::Delete { .. }
            | Operation::CompareAndSet { .. }
            | Operation::DeleteRange { .. }
            | Operation::Increment { .. } => true,
        }
    }
}

impl ArchivedOperation {
    /// Whether the operation writes (see [`Operation::is_write`]), read in place.
    pub fn is_write(&self) -> bool {
        match self {
            ArchivedOperation::Get { .. } | ArchivedOperation::Scan(_) => false,
            ArchivedOperation::Txn(txn) => txn
                .success
                .iter()
                .chain(txn.failure.iter())
                .any(|op| !matches!(op, ArchivedTxnOp::Get { .. })),
            ArchivedOperation::Put { .. }
            | ArchivedOperation::Delete { .. }
            | ArchivedOperation::CompareAndSet { .. }
            | ArchivedOperation::DeleteRange { .. }
            | ArchivedOperation::Increment { .. } => true,
        }
    }

    /// The key that routes the operation (as `client::routing_key`), read in place.
    pub fn routing_key(&self) -> &[u8] {
        match self {
            ArchivedOperation::Get { key }
            | ArchivedOperation::Put { key, .. }
            | ArchivedOperation::Delete { key }
            | ArchivedOperation::CompareAndSet { key, .. }
            | ArchivedOperation::Increment { key, .. } => key.as_slice(),
            ArchivedOperation::DeleteRange { start, .. } => start.as_slice(),
            ArchivedOperation::Scan(scan) => scan.start.as_slice(),
            ArchivedOperation::Txn(txn) => txn
                .compares
                .first()
                .map(|c| c.key.as_slice())
                .or_else(|| {
                    txn.success
                        .iter()
                        .chain(txn.failure.iter())
                        .next()
                        .map(|op| match op {
                            ArchivedTxnOp::Get { key }
                            | ArchivedTxnOp::Put { key, .. }
                            | ArchivedTxnOp::Delete { key } => key.as_slice(),
                            ArchivedTxnOp::DeleteRange { start, .. } => start.as_slice(),
                        })
                })
                .unwrap_or(&[]),
        }
    }
}

/// The condition of a compare-and-set.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Expected {
    /// The key's version equals this one ([`KeyVersion::ABSENT`]: the key does not exist).
    Version(KeyVersion),
    /// The key exists with exactly this value.
    Value(Vec<u8>),
}

/// One page of a scan over `[start, end)`.
///
/// The answer stops at whichever limit is reached first and carries a
/// `resume_key`; the next page is the same request with `start = resume_key`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ScanRequest {
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End (exclusive); empty for unbounded.
    pub end: Vec<u8>,
    /// At most this many keys in the page (at least 1).
    pub max_count: u32,
    /// At most about this many key and value bytes in the page (at least 1;
    /// the first pair is always returned whole, so a page makes progress).
    pub max_bytes: u32,
}

/// An atomic transaction within one range, etcd's shape: if every compare
/// holds, run `success`, else run `failure`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations when every compare holds.
    pub success: Vec<TxnOp>,
    /// Operations otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// Whether no branch writes.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(|op| matches!(op, TxnOp::Get { .. }))
    }
}

/// A condition on one key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Compare {
    /// The key.
    pub key: Vec<u8>,
    /// How the key's state compares with `target`.
    pub op: CompareOp,
    /// The version or value to compare with.
    pub target: CompareTarget,
}

/// A comparison operator.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum CompareOp {
    /// `current == target`.
    Equal,
    /// `current != target`.
    NotEqual,
    /// `current < target`.
    Less,
    /// `current > target`.
    Greater,
}

/// What a [`Compare`] looks at.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CompareTarget {
    /// The key's version (an absent key has [`KeyVersion::ABSENT`]).
    Version(KeyVersion),
    /// The key's value, compared bytewise (an absent key fails every value compare).
    Value(Vec<u8>),
}

fn compare_holds(op: CompareOp, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering;
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}

impl Compare {
    /// Whether the compare holds for the key's current state (`None`: absent).
    pub fn holds(&self, current: Option<(&[u8], KeyVersion)>) -> bool {
        match (&self.target, current) {
            (CompareTarget::Version(v), current) => {
                let version = current.map_or(KeyVersion::ABSENT, |(_, v)| v);
                compare_holds(self.op, version.cmp(v))
            }
            (CompareTarget::Value(_), None) => false,
            (CompareTarget::Value(target), Some((value, _))) => {
                compare_holds(self.op, value.cmp(target.as_slice()))
            }
        }
    }
}

impl ArchivedCompare {
    /// Whether the compare holds for the key's current state (`None`: absent), read in place.
    pub fn holds(&self, current: Option<(&[u8], KeyVersion)>) -> bool {
        let op = match self.op {
            ArchivedCompareOp::Equal => CompareOp::Equal,
            ArchivedCompareOp::NotEqual => CompareOp::NotEqual,
            ArchivedCompareOp::Less => CompareOp::Less,
            ArchivedCompareOp::Greater => CompareOp::Greater,
        };
        match (&self.target, current) {
            (ArchivedCompareTarget::Version(v), current) => {
                let version = current.map_or(KeyVersion::ABSENT, |(_, v)| v);
                compare_holds(op, version.cmp(&v.get()))
            }
            (ArchivedCompareTarget::Value(_), None) => false,
            (ArchivedCompareTarget::Value(target), Some((value, _))) => {
                compare_holds(op, value.cmp(target.as_slice()))
            }
        }
    }
}

/// An operation inside a transaction branch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TxnOp {
    /// Read one key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write one key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Delete `[start, end)` (`end` empty: to the end of the range).
    DeleteRange {
        /// First key (inclusive).
        start: Vec<u8>,
        /// End (exclusive); empty for unbounded.
        end: Vec<u8>,
    },
}

/// The answer to one [`ClientRequest`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClientResponse {
    /// The request's id.
    pub request_id: RequestId,
    /// The reply or a typed error.
    pub result: Result<Reply, RequestError>,
}
crate::wire_message!(ClientResponse, FrameKind::ClientResponse);

/// A value with the version of the write that produced it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct VersionedValue {
    /// The value.
    pub value: Vec<u8>,
    /// The version: the log index that wrote it plus its range's version offset (grown by
    /// merges), so a key's versions only ever grow.
    pub version: KeyVersion,
}

/// A key, its value and version (one scan result).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The version: the log index that wrote it plus its range's version offset (grown by
    /// merges), so a key's versions only ever grow.
    pub version: KeyVersion,
}

/// A successful answer. Every write answer carries the new version: the Raft
/// log index that applied the write.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Reply {
    /// Answer to `Get`; `None` when the key does not exist.
    Get(Option<VersionedValue>),
    /// Answer to `Put` and a successful `CompareAndSet`.
    Written {
        /// The key's new version.
        version: KeyVersion,
    },
    /// Answer to `Delete`.
    Deleted {
        /// The log index that applied the delete.
        version: KeyVersion,
        /// Whether the key existed.
        found: bool,
    },
    /// Answer to `DeleteRange`.
    DeletedRange {
        /// The log index that applied the delete.
        version: KeyVersion,
        /// How many keys were deleted.
        deleted_count: u64,
    },
    /// One page of a `Scan`.
    Scan(ScanPage),
    /// Answer to `Txn`.
    Txn(TxnReply),
    /// Answer to `Increment`.
    Incremented {
        /// The counter after the increment.
        value: i64,
        /// The key's new version.
        version: KeyVersion,
    },
}

/// One page of scan results.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ScanPage {
    /// Pairs in key order.
    pub entries: Vec<KeyValue>,
    /// Where the next page starts; `None` when `[start, end)` is exhausted
    /// within this range.
    pub resume_key: Option<Vec<u8>>,
}

/// Which branch of a transaction ran.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum TxnBranch {
    /// Every compare held: `success` ran.
    Success,
    /// Some compare failed: `failure` ran.
    Failure,
}

/// The answer to a transaction.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TxnReply {
    /// Which branch ran.
    pub branch: TxnBranch,
    /// Log index that applied the transaction: the new version of every key
    /// it wrote ([`KeyVersion::ABSENT`] for a read-only transaction).
    pub version: KeyVersion,
    /// One result per operation of the branch that ran, in order.
    pub results: Vec<TxnOpResult>,
}

/// The result of one [`TxnOp`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum TxnOpResult {
    /// Result of `Get`.
    Get(Option<VersionedValue>),
    /// Result of `Put`.
    Put,
    /// Result of `Delete`: whether the key existed.
    Delete {
        /// Whether the key existed.
        found: bool,
    },
    /// Result of `DeleteRange`.
    DeleteRange {
        /// How many keys were deleted.
        deleted_count: u64,
    },
}

/// Which size limit a request broke.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum LimitKind {
    /// A key.
    Key,
    /// A value (including compare targets).
    Value,
    /// A whole frame.
    Frame,
}

/// Why a request is malformed (a bug in the caller; never retried).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum InvalidReason {
    /// A key of zero bytes.
    EmptyKey,
    /// `end` is not empty and not greater than `start`.
    EmptySpan,
    /// A scan with `max_count` or `max_bytes` of 0.
    ZeroScanLimit,
    /// `Increment` on a value that is not 8 bytes.
    NotACounter,
    /// `Increment` would overflow an `i64`.
    CounterOverflow,
    /// A split key at a range boundary or outside the range.
    BadSplitKey,
    /// Ranges to merge are not adjacent or not on the same replicas.
    NotMergeable,
    /// The replica change makes no sense (node already there, last voter ...).
    BadReplicaChange,
    /// A client write to the system key space (keys that start with byte 0x00, served by
    /// the meta range); only the node writes there.
    ReservedKey,
    /// This node does not implement the operation yet.
    Unsupported,
}

/// Why a node cannot serve now (retry later or elsewhere).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum UnavailableReason {
    /// The group has no leader at the moment (election in progress).
    NoLeader,
    /// The leader cannot reach a quorum.
    NoQuorum,
    /// The node is shutting down.
    ShuttingDown,
    /// Queues are full; back off.
    Overloaded,
    /// The replica is still catching up (stale reads not yet within bound).
    CatchingUp,
    /// The node's disk is full: its log cannot get space for new writes (reads are still
    /// served). Retry after a backoff; writes resume by themselves once space is freed.
    DiskFull,
}

/// Why the outcome of a request is unknown.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum AmbiguousReason {
    /// No answer in time after the request was sent.
    Timeout,
    /// The connection broke after the request was sent.
    ConnectionLost,
    /// The entry was proposed but leadership changed before it was known to commit.
    LeadershipLost,
}

/// Typed request errors (STYLE 10: "try elsewhere" apart from "stop").
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[rkyv(derive(Debug))]
pub enum RequestError {
    /// This replica is not the leader.
    #[error("not the leader of range {range} (leader hint: {leader_hint:?}): retry at the leader")]
    NotLeader {
        /// The range addressed.
        range: RangeId,
        /// The leader, if known.
        leader_hint: Option<NodeId>,
    },
    /// The route's epoch is stale (split, merge or membership change since).
    #[error(
        "range {} moved to epoch {}: refresh the range cache from this descriptor and retry",
        descriptor.id, descriptor.epoch
    )]
    RangeMoved {
        /// The range's current descriptor.
        descriptor: RangeDescriptor,
    },
    /// The key is not in the range that was addressed.
    #[error(
        "key not in range {} (epoch {}): refresh the range cache and retry",
        descriptor.id, descriptor.epoch
    )]
    KeyNotInRange {
        /// The descriptor of the range that was addressed.
        descriptor: RangeDescriptor,
    },
    /// This node has no replica of the range.
    #[error("range {range} is not on this node: refresh the range cache and retry")]
    UnknownRange {
        /// The range addressed.
        range: RangeId,
    },
    /// The condition of a compare-and-set did not hold (nothing was written).
    #[error("condition failed: the key is at version {current_version}; re-read and decide")]
    ConditionFailed {
        /// The key's current version ([`KeyVersion::ABSENT`] when absent).
        current_version: KeyVersion,
    },
    /// A key, value or frame is over its limit.
    #[error("{what:?} of {len} bytes exceeds the limit of {max} bytes: make it smaller")]
    TooLarge {
        /// Which limit.
        what: LimitKind,
        /// The size seen.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The request is malformed.
    #[error("invalid request: {reason:?}; fix the caller")]
    InvalidRequest {
        /// What is wrong.
        reason: InvalidReason,
    },
    /// No such node in the cluster (admin requests).
    #[error("node {node} is not a member of the cluster: check `quasarctl member list`")]
    UnknownNode {
        /// The node named.
        node: NodeId,
    },
    /// A range operation (split, merge, leadership transfer) was refused; nothing changed.
    /// The reason is one line for the operator: what is wrong and what to do.
    #[error("refused: {reason}")]
    Refused {
        /// What is wrong, and what to do.
        reason: String,
    },
    /// Another split, merge or membership change of the range is in flight.
    #[error("range {range} has a configuration change in progress: retry when it completes")]
    ChangeInProgress {
        /// The range.
        range: RangeId,
    },
    /// The node cannot serve now; nothing was done.
    #[error("unavailable ({reason:?}): nothing was applied; retry after a backoff")]
    Unavailable {
        /// Why.
        reason: UnavailableReason,
    },
    /// The outcome is unknown: the write may or may not have been applied.
    #[error(
        "outcome unknown ({reason:?}): the write may have been applied; retry with the same \
         session and sequence to learn the outcome exactly once"
    )]
    Ambiguous {
        /// Why the outcome is unknown.
        reason: AmbiguousReason,
    },
    /// A retry of a write whose outcome the range no longer remembers (the session was
    /// evicted, or the sequence is older than the outcomes kept per session). Whether it
    /// was applied is unknown, and retrying cannot tell.
    #[error(
        "session {session} sequence {sequence} is too old: the range no longer remembers its \
         outcome; read the key to learn whether the write took effect, and start a new session"
    )]
    SessionExpired {
        /// The session.
        session: SessionId,
        /// The sequence retried.
        sequence: Sequence,
    },
    /// The connection's principal lacks the role this request needs; nothing was done.
    #[error(
        "permission denied: this request needs the `{needed}` role and the connection is \
         authenticated as `{role}`: use a certificate or token bound to a stronger role"
    )]
    PermissionDenied {
        /// The role the request needs.
        needed: crate::auth::Role,
        /// The role the connection has.
        role: crate::auth::Role,
    },
}

impl RequestError {
    /// Whether retrying (after refreshing routes, or a backoff) can succeed.
    ///
    /// `Ambiguous` is retryable only with the same session and sequence:
    /// exactly-once makes the retry return the first outcome instead of
    /// applying the write twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            RequestError::NotLeader { .. }
            | RequestError::RangeMoved { .. }
            | RequestError::KeyNotInRange { .. }
            | RequestError::UnknownRange { .. }
            | RequestError::ChangeInProgress { .. }
            | RequestError::Unavailable { .. }
            | RequestError::Ambiguous { .. } => true,
            RequestError::ConditionFailed { .. }
            | RequestError::TooLarge { .. }
            | RequestError::InvalidRequest { .. }
            | RequestError::UnknownNode { .. }
            | RequestError::Refused { .. }
            | RequestError::SessionExpired { .. }
            | RequestError::PermissionDenied { .. } => false,
        }
    }

    /// Whether the request is known not to have been applied (every error but
    /// `Ambiguous` and `SessionExpired`).
    pub fn is_definite(&self) -> bool {
        !matches!(
            self,
            RequestError::Ambiguous { .. } | RequestError::SessionExpired { .. }
        )
    }
}
