//! The key-value state machine of one range: an ordered map of byte-string keys to
//! versioned values, the client operations of `rpc::message`, size limits and exactly-once
//! sessions.
//!
//! Pure and deterministic: no clock, no I/O. Writes arrive as committed log entries and are
//! applied in log order with [`RangeState::apply`], which reads the request in place (the
//! entry payload is the client's rkyv-encoded request, copied once from the socket into the
//! log). A key's version is the index of the entry that last wrote it plus the range's
//! version offset (zero until a merge: see [`RangeState::absorb`]), so versions of a key
//! only ever grow, across splits and merges too. Reads never touch the
//! log: the replica decides when it may serve them (lease, ReadIndex or stale bound) and
//! then calls [`RangeState::read`].
//!
//! ```text
//!  propose:  check_proposal (limits, route, key in range)  -> Raft log
//!  commit:   apply(index, request) -> session lookup -> execute -> record outcome
//!  read:     read(op) on the applied state
//!  snapshot: encode_snapshot() -> checksummed bytes -> decode_snapshot() on the receiver
//!            (or begin_snapshot() + continue_snapshot() a slice at a time, writes going on)
//! ```

mod session;
mod snapshot;

use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::Bound;

use quasar_rpc::message::{
    ArchivedClientRequest, ArchivedExpected, ArchivedOperation, ArchivedScanRequest, ArchivedTxn,
    ArchivedTxnOp, InvalidReason, KeyValue, KeyVersion, LimitKind, RangeDescriptor, Reply,
    RequestError, ScanPage, SizeLimits, TxnBranch, TxnOpResult, TxnReply, VersionedValue,
};

pub use session::{Lookup, Outcome, Sessions, DEFAULT_MAX_SESSIONS, OUTCOMES_PER_SESSION};
pub use snapshot::{SnapshotError, SnapshotProgress};

/// Limits a range enforces before proposing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLimits {
    /// Keys and values (and frames, for the transport).
    pub sizes: SizeLimits,
    /// The encoded request (one log entry).
    pub max_request_bytes: u32,
}

impl Default for RangeLimits {
    /// Keys 8 KiB, values 1 MiB, requests 4 MiB.
    fn default() -> RangeLimits {
        RangeLimits {
            sizes: SizeLimits {
                max_key_bytes: 8 << 10,
                ..SizeLimits::default()
            },
            max_request_bytes: 4 << 20,
        }
    }
}

/// A value and the version (log index) of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Versioned {
    value: Vec<u8>,
    version: KeyVersion,
    /// `entry_hash` of the key, this value and version: a split sums the hashes of the
    /// half it moves without reading any key or value.
    hash: u64,
}

impl Versioned {
    fn new(key: &[u8], value: Vec<u8>, version: KeyVersion) -> Versioned {
        let hash = entry_hash(key, &value, version);
        Versioned {
            value,
            version,
            hash,
        }
    }
}

/// Key bytes a range stores inside its B-tree node instead of on the heap.
const KEY_INLINE_BYTES: usize = 24;

/// A stored key. Short keys (most: a filesystem's inode and name keys, the bench's 16-byte
/// names) lie inside the B-tree node, so a lookup compares keys in the nodes it already
/// reads instead of following a pointer per comparison: with heap keys, the comparisons
/// of a write's lookup were 5 % of a node's CPU at `--ranges 64` (each a cache miss).
type Key = SmallVec<[u8; KEY_INLINE_BYTES]>;

/// The applied state of one range replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeState {
    descriptor: RangeDescriptor,
    data: BTreeMap<Key, Versioned>,
    sessions: Sessions,
    /// The index of the last applied entry; versions never exceed it plus `version_offset`.
    applied_index: u64,
    /// Added to the log index to make a write's version. Zero until this range absorbs a
    /// neighbour whose versions ran ahead of this range's log (`absorb`); inherited by the
    /// right half of a split.
    version_offset: u64,
    limits: RangeLimits,
    /// Key and value bytes held (the size that automatic splits look at).
    bytes: u64,
    /// The wrapping sum of every entry's hash (`entry_hash`), kept up to date by every
    /// change so that `state_hash` costs nothing however many keys the range holds.
    content_hash: u64,
    /// Set when the range is frozen for a merge into its left neighbour: the index of the
    /// freeze. A frozen range serves reads and refuses every write.
    frozen_at: Option<u64>,
    /// A snapshot being encoded a slice at a time (`begin_snapshot`).
    capture: Option<Box<snapshot::Capture>>,
}

impl RangeState {
    pub fn new(descriptor: RangeDescriptor, limits: RangeLimits) -> RangeState {
        RangeState {
            descriptor,
            data: BTreeMap::new(),
            sessions: Sessions::new(DEFAULT_MAX_SESSIONS),
            applied_index: 0,
            version_offset: 0,
            limits,
            bytes: 0,
            content_hash: 0,
            frozen_at: None,
            capture: None,
        }
    }

    /// Replaces the descriptor (a split, merge or membership change was applied).
    pub fn set_descriptor(&mut self, descriptor: RangeDescriptor) {
        self.descriptor = descriptor;
    }

    /// Key and value bytes held.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// The freeze index, when the range is frozen for a merge.
    pub fn frozen_at(&self) -> Option<u64> {
        self.frozen_at
    }

    /// Freezes the range at `index` (the freeze entry): writes are refused from now on.
    pub fn freeze(&mut self, index: u64) {
        self.skip_to(index);
        self.frozen_at = Some(index);
    }

    /// The key in the middle of the range (by count), if it is a valid split point: greater
    /// than the range's start. O(n): asked for only when a split is due.
    pub fn middle_key(&self) -> Option<Vec<u8>> {
        let key = self.data.keys().nth(self.data.len() / 2)?;
        (key.as_slice() > self.descriptor.start.as_slice()).then(|| key.to_vec())
    }

    /// Applies a split at `index`: keys from `right.start` on move to the returned state of
    /// the new right-hand range (described by `right`), which starts at `index` with a copy
    /// of the session table; this range keeps the rest under `left`. Nothing is copied over
    /// the network: every replica splits its own data at the same log index.
    pub fn split_off(
        &mut self,
        index: u64,
        left: RangeDescriptor,
        right: RangeDescriptor,
    ) -> RangeState {
        self.skip_to(index);
        // A snapshot under way would mix the two halves' states.
        self.capture = None;
        let data = self.data.split_off(right.start.as_slice());
        let mut moved = 0u64;
        let mut moved_hash = 0u64;
        for (k, v) in &data {
            moved += (k.len() + v.value.len()) as u64;
            moved_hash = moved_hash.wrapping_add(v.hash);
        }
        self.bytes -= moved;
        self.content_hash = self.content_hash.wrapping_sub(moved_hash);
        self.descriptor = left;
        RangeState {
            descriptor: right,
            data,
            sessions: self.sessions.clone(),
            applied_index: index,
            version_offset: self.version_offset,
            limits: self.limits,
            bytes: moved,
            content_hash: moved_hash,
            frozen_at: None,
            capture: None,
        }
    }

    /// Applies a merge at `index`: absorbs the frozen right-hand neighbour `right` and takes
    /// the `merged` descriptor. Sessions are united.
    ///
    /// The absorbed keys keep their versions, which come from the right range's own log and
    /// may be ahead of this range's: the version offset grows so that every later write here
    /// gets a higher version than any key of either range had (a version never goes back, so
    /// a compare-and-set on a version can never match a different write: no ABA). The bound
    /// is taken at the right range's freeze (its last write), which every replica agrees on.
    pub fn absorb(&mut self, index: u64, right: RangeState, merged: RangeDescriptor) {
        self.skip_to(index);
        self.capture = None;
        let right_top = right.version_offset + right.frozen_at.unwrap_or(right.applied_index);
        self.version_offset = self.version_offset.max(right_top.saturating_sub(index));
        // Every key of `right` sorts after every key here: one linear bulk merge, and the
        // sizes and hashes that `right` kept up to date add up.
        let mut data = right.data;
        self.data.append(&mut data);
        self.bytes += right.bytes;
        self.content_hash = self.content_hash.wrapping_add(right.content_hash);
        self.sessions.absorb(right.sessions);
        self.descriptor = merged;
    }

    /// The highest version this range can have given out: its applied index plus its
    /// version offset.
    pub fn version_bound(&self) -> u64 {
        self.applied_index + self.version_offset
    }

    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.descriptor
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Checks a request before proposing it: its encoded size, its keys and values against
    /// the limits, its route's epoch and that its keys lie in this range. A refused request
    /// was not applied (a definite error).
    pub fn check_proposal(
        &self,
        encoded_len: usize,
        request: &ArchivedClientRequest,
    ) -> Result<(), RequestError> {
        if encoded_len > self.limits.max_request_bytes as usize {
            return Err(RequestError::TooLarge {
                what: LimitKind::Frame,
                len: encoded_len as u64,
                max: u64::from(self.limits.max_request_bytes),
            });
        }
        self.limits.sizes.validate_archived_request(request)?;
        if self.frozen_at.is_some() && request.op.is_write() {
            return Err(RequestError::ChangeInProgress {
                range: self.descriptor.id,
            });
        }
        if let Some(route) = request.route.as_ref() {
            if route.range.get() != self.descriptor.id || route.epoch.get() != self.descriptor.epoch
            {
                return Err(RequestError::RangeMoved {
                    descriptor: self.descriptor.clone(),
                });
            }
        }
        self.check_keys(&request.op)
    }

    /// Every key and span of `op` must lie in this range.
    fn check_keys(&self, op: &ArchivedOperation) -> Result<(), RequestError> {
        let outside = || RequestError::KeyNotInRange {
            descriptor: self.descriptor.clone(),
        };
        let key_ok = |key: &[u8]| self.descriptor.contains(key);
        let span_ok = |start: &[u8], end: &[u8]| self.descriptor.contains_span(start, end);
        let ok = match op {
            ArchivedOperation::Get { key }
            | ArchivedOperation::Put { key, .. }
            | ArchivedOperation::Delete { key }
            | ArchivedOperation::CompareAndSet { key, .. }
            | ArchivedOperation::Increment { key, .. } => key_ok(key),
            ArchivedOperation::DeleteRange { start, end } => span_ok(start, end),
            // A scan may run past the range's end: the page stops there and the client
            // continues in the next range.
            ArchivedOperation::Scan(scan) => key_ok(&scan.start),
            ArchivedOperation::Txn(txn) => {
                txn.compares.iter().all(|c| key_ok(&c.key))
                    && txn
                        .success
                        .iter()
                        .chain(txn.failure.iter())
                        .all(|op| match op {
                            ArchivedTxnOp::Get { key }
                            | ArchivedTxnOp::Put { key, .. }
                            | ArchivedTxnOp::Delete { key } => key_ok(key),
                            ArchivedTxnOp::DeleteRange { start, end } => span_ok(start, end),
                        })
            }
        };
        if ok {
            Ok(())
        } else {
            Err(outside())
        }
    }

    /// Applies the committed write at `index`. Deterministic: every replica returns the
    /// same outcome and reaches the same state. A retried write (same session and
    /// sequence) returns its first outcome and changes nothing.
    pub fn apply(&mut self, index: u64, request: &ArchivedClientRequest) -> Outcome {
        assert!(
            index > self.applied_index,
            "range {}: apply of index {index} after {} (log order broken)",
            self.descriptor.id,
            self.applied_index
        );
        self.applied_index = index;
        if self.frozen_at.is_some() {
            // Writes that reached the log after the freeze are refused on every replica,
            // and not remembered: the merge absorbs the state at the freeze.
            return Err(RequestError::ChangeInProgress {
                range: self.descriptor.id,
            });
        }
        let session = request.session.get();
        let sequence = request.sequence.get();
        match self.sessions.lookup(session, sequence) {
            Lookup::Duplicate(outcome) => return outcome.clone(),
            Lookup::Forgotten => {
                return Err(RequestError::SessionExpired { session, sequence });
            }
            Lookup::New => {}
        }
        // Keys are checked again at apply time: a split may have committed between the
        // proposal and this entry.
        let outcome = match self.check_keys(&request.op) {
            Ok(()) => self.execute(KeyVersion(index + self.version_offset), &request.op),
            Err(e) => Err(e),
        };
        self.sessions
            .record(session, sequence, index, outcome.clone());
        outcome
    }

    /// Records that the entry at `index` changed nothing here (a leader's no-op or a
    /// membership change): versions stay, the applied index moves.
    pub fn skip_to(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "range {}: skip to {index} after {} (log order broken)",
            self.descriptor.id,
            self.applied_index
        );
        self.applied_index = index;
    }

    /// Serves a read (`Get`, `Scan`, read-only `Txn`) from the applied state. The caller
    /// has established that the state is fresh enough.
    pub fn read(&self, op: &ArchivedOperation) -> Outcome {
        self.check_keys(op)?;
        match op {
            ArchivedOperation::Get { key } => Ok(Reply::Get(self.get(key))),
            ArchivedOperation::Scan(scan) => Ok(Reply::Scan(self.scan(scan))),
            ArchivedOperation::Txn(txn) if txn_is_read_only(txn) => {
                let branch = self.branch(txn);
                let ops = match branch {
                    TxnBranch::Success => &txn.success,
                    TxnBranch::Failure => &txn.failure,
                };
                let results = ops
                    .iter()
                    .map(|op| match op {
                        ArchivedTxnOp::Get { key } => TxnOpResult::Get(self.get(key)),
                        _ => unreachable!("checked read-only above"),
                    })
                    .collect();
                Ok(Reply::Txn(TxnReply {
                    branch,
                    version: KeyVersion::ABSENT,
                    results,
                }))
            }
            _ => panic!(
                "range {}: read() called with a write; propose it",
                self.descriptor.id
            ),
        }
    }

    fn get(&self, key: &[u8]) -> Option<VersionedValue> {
        self.data.get(key).map(|v| VersionedValue {
            value: v.value.clone(),
            version: v.version,
        })
    }

    fn current(&self, key: &[u8]) -> Option<(&[u8], KeyVersion)> {
        self.data.get(key).map(|v| (v.value.as_slice(), v.version))
    }

    fn put(&mut self, key: &[u8], value: &[u8], version: KeyVersion) {
        self.keep_for_snapshot(key);
        match self.data.get_mut(key) {
            Some(existing) => {
                self.bytes = self.bytes + value.len() as u64 - existing.value.len() as u64;
                self.content_hash = self.content_hash.wrapping_sub(existing.hash);
                existing.value.clear();
                existing.value.extend_from_slice(value);
                existing.version = version;
                existing.hash = entry_hash(key, value, version);
                self.content_hash = self.content_hash.wrapping_add(existing.hash);
            }
            None => {
                self.bytes += (key.len() + value.len()) as u64;
                let v = Versioned::new(key, value.to_vec(), version);
                self.content_hash = self.content_hash.wrapping_add(v.hash);
                self.data.insert(Key::from_slice(key), v);
            }
        }
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &[u8]) -> bool {
        self.keep_for_snapshot(key);
        match self.data.remove(key) {
            Some(v) => {
                self.bytes -= (key.len() + v.value.len()) as u64;
                self.content_hash = self.content_hash.wrapping_sub(v.hash);
                true
            }
            None => false,
        }
    }

    /// Removes the keys of `[start, end)` clipped to this range; returns how many.
    fn delete_span(&mut self, start: &[u8], end: &[u8]) -> u64 {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let doomed: Vec<Key> = self
            .data
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            self.remove(key);
        }
        doomed.len() as u64
    }

    fn execute(&mut self, version: KeyVersion, op: &ArchivedOperation) -> Outcome {
        match op {
            ArchivedOperation::Put { key, value } => {
                self.put(key, value, version);
                Ok(Reply::Written { version })
            }
            ArchivedOperation::Delete { key } => {
                let found = self.remove(key);
                Ok(Reply::Deleted { version, found })
            }
            ArchivedOperation::CompareAndSet {
                key,
                expected,
                value,
            } => {
                let current = self.current(key);
                let holds = match expected {
                    ArchivedExpected::Version(v) => {
                        current.map_or(KeyVersion::ABSENT, |(_, v)| v) == v.get()
                    }
                    ArchivedExpected::Value(expected) => {
                        current.is_some_and(|(value, _)| value == expected.as_slice())
                    }
                };
                if !holds {
                    let current_version = current.map_or(KeyVersion::ABSENT, |(_, v)| v);
                    return Err(RequestError::ConditionFailed { current_version });
                }
                self.put(key, value, version);
                Ok(Reply::Written { version })
            }
            ArchivedOperation::DeleteRange { start, end } => {
                let deleted_count = self.delete_span(start, end);
                Ok(Reply::DeletedRange {
                    version,
                    deleted_count,
                })
            }
            ArchivedOperation::Increment { key, delta } => {
                let before = match self.current(key) {
                    None => 0,
                    Some((bytes, _)) => match <[u8; 8]>::try_from(bytes) {
                        Ok(raw) => i64::from_le_bytes(raw),
                        Err(_) => {
                            return Err(RequestError::InvalidRequest {
                                reason: InvalidReason::NotACounter,
                            })
                        }
                    },
                };
                let Some(after) = before.checked_add(delta.to_native()) else {
                    return Err(RequestError::InvalidRequest {
                        reason: InvalidReason::CounterOverflow,
                    });
                };
                self.put(key, &after.to_le_bytes(), version);
                Ok(Reply::Incremented {
                    value: after,
                    version,
                })
            }
            ArchivedOperation::Txn(txn) => {
                let branch = self.branch(txn);
                let ops = match branch {
                    TxnBranch::Success => &txn.success,
                    TxnBranch::Failure => &txn.failure,
                };
                let mut results = Vec::with_capacity(ops.len());
                for op in ops.iter() {
                    results.push(match op {
                        ArchivedTxnOp::Get { key } => TxnOpResult::Get(self.get(key)),
                        ArchivedTxnOp::Put { key, value } => {
                            self.put(key, value, version);
                            TxnOpResult::Put
                        }
                        ArchivedTxnOp::Delete { key } => TxnOpResult::Delete {
                            found: self.remove(key),
                        },
                        ArchivedTxnOp::DeleteRange { start, end } => TxnOpResult::DeleteRange {
                            deleted_count: self.delete_span(start, end),
                        },
                    });
                }
                Ok(Reply::Txn(TxnReply {
                    branch,
                    version,
                    results,
                }))
            }
            // Reads that reached the log (a client may send a read as a write to order it
            // with its writes) are answered from the state at this index.
            ArchivedOperation::Get { .. } | ArchivedOperation::Scan(_) => self.read(op),
        }
    }

    fn branch(&self, txn: &ArchivedTxn) -> TxnBranch {
        if txn.compares.iter().all(|c| c.holds(self.current(&c.key))) {
            TxnBranch::Success
        } else {
            TxnBranch::Failure
        }
    }

    /// One page of `[start, end)` clipped to this range: at most `max_count` pairs and
    /// about `max_bytes` key+value bytes, the first pair always whole.
    fn scan(&self, scan: &ArchivedScanRequest) -> ScanPage {
        let (start, end) = (scan.start.as_slice(), scan.end.as_slice());
        let range_end = self.descriptor.end.as_slice();
        // The effective end: the smaller of the request's and the range's (empty: none).
        let stop: &[u8] = match (end.is_empty(), range_end.is_empty()) {
            (true, _) => range_end,
            (false, true) => end,
            (false, false) => end.min(range_end),
        };
        let upper = if stop.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(stop)
        };
        let max_count = scan.max_count.to_native() as usize;
        let max_bytes = scan.max_bytes.to_native() as usize;
        let mut page = ScanPage::default();
        let mut bytes = 0usize;
        for (key, v) in self.data.range::<[u8], _>((Bound::Included(start), upper)) {
            let size = key.len() + v.value.len();
            let full = page.entries.len() >= max_count
                || (!page.entries.is_empty() && bytes + size > max_bytes);
            if full {
                page.resume_key = Some(key.to_vec());
                return page;
            }
            bytes += size;
            page.entries.push(KeyValue {
                key: key.to_vec(),
                value: v.value.clone(),
                version: v.version,
            });
        }
        page
    }

    /// A hash of the applied state (every key, value and version, then the applied
    /// index), equal on replicas that applied the same prefix of the log. O(1): the sum of
    /// the entries' hashes is kept up to date by every change.
    pub fn state_hash(&self) -> u32 {
        let crc = crc32c::crc32c(&self.content_hash.to_le_bytes());
        let crc = crc32c::crc32c_append(crc, &self.applied_index.to_le_bytes());
        crc32c::crc32c_append(crc, &self.version_offset.to_le_bytes())
    }

    /// The entries' hash sum and byte count recomputed from scratch (tests check the ones
    /// kept up to date against it).
    #[cfg(test)]
    fn recomputed_sums(&self) -> (u64, u64) {
        let bytes = self
            .data
            .iter()
            .map(|(k, v)| (k.len() + v.value.len()) as u64)
            .sum();
        let hash = self.data.iter().fold(0u64, |h, (k, v)| {
            h.wrapping_add(entry_hash(k, &v.value, v.version))
        });
        (hash, bytes)
    }
}

/// One entry's contribution to the state hash: CRC32C of its key, value and version,
/// spread over 64 bits so that the wrapping sum of many rarely cancels out.
fn entry_hash(key: &[u8], value: &[u8], version: KeyVersion) -> u64 {
    // Two CRC passes; the key's length fixes where the key ends and the value starts, the
    // version is mixed in arithmetically.
    let crc = crc32c::crc32c_append(crc32c::crc32c(key), value);
    let lens = (key.len() as u64) << 32 | (value.len() as u64 & 0xffff_ffff);
    let mut h =
        u64::from(crc) ^ lens.rotate_left(17) ^ version.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The splitmix64 finalizer spreads every input bit over the 64 bits of the sum.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn txn_is_read_only(txn: &ArchivedTxn) -> bool {
    txn.success
        .iter()
        .chain(txn.failure.iter())
        .all(|op| matches!(op, ArchivedTxnOp::Get { .. }))
}

#[cfg(test)]
mod tests;
