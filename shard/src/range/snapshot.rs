//! The snapshot of one range: every key with its value and version, the exactly-once
//! sessions and the applied index, in one checksummed byte string that the runtime writes to
//! a file, sends in chunks and installs atomically.
//!
//! ```text
//!  0        4     6        8            16          20        24
//!  | QSNP   | ver | (zero) | body len   | body crc  | hdr crc | body: sections ... |
//!
//!  section: | u32 len | rkyv archive (len bytes) |
//!  body:    head section (RangeHead: descriptor, applied index, sessions ...)
//!           entry sections (each a Vec<KeyValue> of up to 4,096 entries, in key order)
//! ```
//! `hdr crc` is CRC32C over bytes [0, 20); `body crc` over the body. A damaged or
//! truncated snapshot is refused with the reason, never half-installed. Version 3 (the body
//! one `RangeImage` archive) is still read.
//!
//! Sections let a large range be encoded a slice at a time between other work
//! ([`RangeState::begin_snapshot`], [`RangeState::continue_snapshot`]) while writes go on:
//! the snapshot stays the state at its start because a write to a key not yet encoded first
//! keeps the key's previous value (copy on write, only for keys written during the snapshot).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use quasar_rpc::message::{
    ArchivedKeyValue, KeyValue, KeyVersion, RangeDescriptor, Reply, RequestError, Sequence,
    SessionId,
};
use rkyv::with::Inline;
use rkyv::{Archive, Deserialize, Serialize};

use super::{Key, RangeLimits, RangeState, Sessions, Versioned, DEFAULT_MAX_SESSIONS};

const MAGIC: [u8; 4] = *b"QSNP";
/// The format written (sections).
const VERSION: u16 = 4;
/// The former format, one archive (still read).
const VERSION_ONE_ARCHIVE: u16 = 3;
/// Size of the fixed header before the body.
pub const HEADER_LEN: usize = 24;
/// Entries per section at most.
const SECTION_ENTRIES: usize = 4096;

/// The body of a version 3 snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct RangeImage {
    descriptor: RangeDescriptor,
    applied_index: u64,
    /// Added to log indexes to make versions (grown by merges).
    version_offset: u64,
    entries: Vec<KeyValue>,
    sessions: Vec<SessionImage>,
    session_evictions: u64,
    /// The freeze index of a range frozen for a merge.
    frozen_at: Option<u64>,
}

/// The first section: everything but the entries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct RangeHead {
    descriptor: RangeDescriptor,
    applied_index: u64,
    /// Added to log indexes to make versions (grown by merges).
    version_offset: u64,
    sessions: Vec<SessionImage>,
    session_evictions: u64,
    /// The freeze index of a range frozen for a merge.
    frozen_at: Option<u64>,
}

/// One entry of an entry section borrowing the live state's key and value: archived
/// exactly as a `KeyValue` (the tests check), so a section reads back as `Vec<KeyValue>`.
#[derive(Archive, Serialize)]
struct KeyValueRef<'a> {
    #[rkyv(with = Inline)]
    key: &'a Key,
    #[rkyv(with = Inline)]
    value: &'a Vec<u8>,
    version: KeyVersion,
}

/// A writer that appends to a `Vec` already holding `base` bytes, counting positions from
/// there: the archive is laid out as if the section started its own buffer (as the reader
/// sees it), but it is written once, in place.
struct Appender<'a> {
    out: &'a mut Vec<u8>,
    base: usize,
}

impl rkyv::ser::Positional for Appender<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.base
    }
}

impl<E> rkyv::ser::Writer<E> for Appender<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct SessionImage {
    session: SessionId,
    last_index: u64,
    forgotten_through: u64,
    outcomes: Vec<(Sequence, Result<Reply, RequestError>)>,
}

/// A snapshot being encoded a section at a time (see [`RangeState::begin_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Capture {
    /// The caller's name for this snapshot.
    job: u64,
    /// The last key considered; the keys after it are still to come.
    after: Option<Key>,
    /// Keys after `after` written since the start, as they were then (`None`: absent).
    saved: BTreeMap<Key, Option<Versioned>>,
    /// Where the snapshot's header is in the caller's buffer.
    start: usize,
    /// CRC32C of the body written so far.
    body_crc: u32,
}

/// How far an incremental snapshot got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotProgress {
    /// More entries are to come.
    More,
    /// Complete: the CRC32C of the snapshot bytes (header and body).
    Done(u32),
    /// A split, merge, installed snapshot or another snapshot begun since: the bytes
    /// appended so far are void.
    Abandoned,
}

/// Why snapshot bytes cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {len} bytes, shorter than its {HEADER_LEN}-byte header: it was cut; fetch it again")]
    Truncated { len: usize },
    #[error("not a range snapshot (bad magic or header checksum): fetch it again")]
    BadHeader,
    #[error("snapshot format version {got} is not supported (this build reads {VERSION_ONE_ARCHIVE} and {VERSION})")]
    UnsupportedVersion { got: u16 },
    #[error(
        "snapshot body is {len} bytes but the header says {expected}: it was cut; fetch it again"
    )]
    BodyLength { len: usize, expected: u64 },
    #[error("snapshot body checksum mismatch (expected {expected:#010x}, got {actual:#010x}): fetch it again")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot body does not decode ({reason}): fetch it again")]
    Invalid { reason: String },
}

/// Appends one section holding `value`'s archive; returns the CRC32C of the section.
fn write_section<T>(out: &mut Vec<u8>, value: &T, what: &str) -> u32
where
    T: for<'a, 'b> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Appender<'b>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let base = out.len();
    if let Err(e) =
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, Appender { out, base })
    {
        // Serializing plain owned data into memory cannot fail short of allocation
        // failure, which aborts anyway.
        panic!("snapshot serialization of the {what} failed: {e}");
    }
    let len = (out.len() - base) as u32;
    out[at..base].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c(&out[at..])
}

/// Fills in the header of the snapshot starting at `start` in `out` (whose body runs to the
/// end of `out` and has the CRC32C `body_crc`); returns the CRC32C of the whole snapshot.
fn finish_header(out: &mut [u8], start: usize, body_crc: u32) -> u32 {
    let base = start + HEADER_LEN;
    let body_len = out.len() - base;
    let header = &mut out[start..base];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&[0, 0]);
    header[8..16].copy_from_slice(&(body_len as u64).to_le_bytes());
    header[16..20].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..20]);
    header[20..24].copy_from_slice(&header_crc.to_le_bytes());
    crc32c::crc32c_combine(crc32c::crc32c(header), body_crc, body_len)
}

impl RangeState {
    /// Encodes the whole applied state.
    pub fn encode_snapshot(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.snapshot_size_hint());
        let crc = self.encode_snapshot_into(&mut out);
        debug_assert_eq!(crc, crc32c::crc32c(&out));
        out
    }

    /// The exactly-once sessions as the snapshot holds them.
    fn session_images(&self) -> Vec<SessionImage> {
        self.sessions
            .iter()
            .map(
                |(session, last_index, forgotten_through, outcomes)| SessionImage {
                    session,
                    last_index,
                    forgotten_through,
                    outcomes: outcomes.iter().cloned().collect(),
                },
            )
            .collect()
    }

    /// The head section's content: everything but the entries.
    fn head(&self) -> RangeHead {
        RangeHead {
            descriptor: self.descriptor.clone(),
            applied_index: self.applied_index,
            version_offset: self.version_offset,
            sessions: self.session_images(),
            session_evictions: self.sessions.evictions(),
            frozen_at: self.frozen_at,
        }
    }

    /// About how many bytes [`RangeState::encode_snapshot`] makes (a buffer's capacity).
    pub fn snapshot_size_hint(&self) -> usize {
        // Per entry: the archived `KeyValue` (two vectors' pointers and lengths, a version)
        // and the bytes of its key and value; the sessions are small.
        let entries = self.data.len() * (std::mem::size_of::<ArchivedKeyValue>() + 8);
        HEADER_LEN + self.bytes as usize + entries + (64 << 10)
    }

    /// Appends the snapshot bytes of [`RangeState::encode_snapshot`] to `out` at once (the
    /// incremental encoder run to its end; one under way is abandoned), serializing in place
    /// (no copy of the keys and values but into `out`); returns the CRC32C of the appended
    /// bytes (so a caller checksumming a larger whole can combine it instead of reading them
    /// again).
    pub fn encode_snapshot_into(&mut self, out: &mut Vec<u8>) -> u32 {
        const WHOLE: u64 = u64::MAX;
        self.begin_snapshot(out, WHOLE);
        loop {
            match self.continue_snapshot(out, WHOLE, usize::MAX) {
                SnapshotProgress::Done(crc) => return crc,
                SnapshotProgress::More => {}
                // Nothing but this loop touches the state meanwhile.
                SnapshotProgress::Abandoned => unreachable!("a snapshot encoded at once"),
            }
        }
    }

    /// Starts a snapshot of the state as it is now, appending its first bytes to `out`;
    /// [`RangeState::continue_snapshot`] appends the rest a slice at a time, and writes
    /// applied meanwhile do not change what it holds. `job` names it to
    /// `continue_snapshot`; one begun before is abandoned.
    pub fn begin_snapshot(&mut self, out: &mut Vec<u8>, job: u64) {
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let body_crc = write_section(out, &self.head(), "head");
        self.capture = Some(Box::new(Capture {
            job,
            after: None,
            saved: BTreeMap::new(),
            start,
            body_crc,
        }));
    }

    /// Appends about `budget` more entries (at least one section's worth when it is not
    /// zero) of snapshot `job` to `out`, the buffer it began in.
    pub fn continue_snapshot(
        &mut self,
        out: &mut Vec<u8>,
        job: u64,
        budget: usize,
    ) -> SnapshotProgress {
        let RangeState { data, capture, .. } = self;
        let Some(cap) = capture.as_mut().filter(|c| c.job == job) else {
            return SnapshotProgress::Abandoned;
        };
        let mut left = budget.max(1);
        loop {
            let lower = match &cap.after {
                Some(a) => Bound::Excluded(a.as_slice()),
                None => Bound::Unbounded,
            };
            let mut live = data.range::<[u8], _>((lower, Bound::Unbounded)).peekable();
            let mut kept = cap
                .saved
                .range::<[u8], _>((lower, Bound::Unbounded))
                .peekable();
            let limit = SECTION_ENTRIES.min(left);
            let mut looked = 0;
            let mut last: Option<&Key> = None;
            let mut finished = false;
            let mut chunk: Vec<KeyValueRef<'_>> = Vec::with_capacity(limit);
            while looked < limit {
                // The smaller key of the live map and the kept values; a kept value stands
                // for its key as it was at the start.
                let from_kept = match (live.peek(), kept.peek()) {
                    (None, None) => {
                        finished = true;
                        break;
                    }
                    (Some(_), None) => false,
                    (None, Some(_)) => true,
                    (Some((lk, _)), Some((kk, _))) => kk.as_slice() <= lk.as_slice(),
                };
                let (key, value) = if from_kept {
                    let Some((k, v)) = kept.next() else { break };
                    if live.peek().is_some_and(|(lk, _)| *lk == k) {
                        live.next();
                    }
                    (k, v.as_ref())
                } else {
                    let Some((k, v)) = live.next() else { break };
                    (k, Some(v))
                };
                looked += 1;
                last = Some(key);
                if let Some(v) = value {
                    chunk.push(KeyValueRef {
                        key,
                        value: &v.value,
                        version: v.version,
                    });
                }
            }
            if !chunk.is_empty() {
                let at = out.len();
                let crc = write_section(out, &chunk, "entries");
                cap.body_crc = crc32c::crc32c_combine(cap.body_crc, crc, out.len() - at);
            }
            let last = last.cloned();
            drop(chunk);
            if let Some(k) = last {
                let mut rest = cap.saved.split_off(k.as_slice());
                rest.remove(k.as_slice());
                cap.saved = rest;
                cap.after = Some(k);
            }
            if finished {
                let (start, body_crc) = (cap.start, cap.body_crc);
                *capture = None;
                return SnapshotProgress::Done(finish_header(out, start, body_crc));
            }
            left = left.saturating_sub(looked.max(1));
            if left == 0 {
                return SnapshotProgress::More;
            }
        }
    }

    /// A write is about to change `key`: a snapshot under way that has not reached it yet
    /// keeps its value as it was at the snapshot's start.
    pub(super) fn keep_for_snapshot(&mut self, key: &[u8]) {
        let Some(cap) = self.capture.as_mut() else {
            return;
        };
        if cap.after.as_deref().is_some_and(|a| key <= a) || cap.saved.contains_key(key) {
            return;
        }
        cap.saved
            .insert(Key::from_slice(key), self.data.get(key).cloned());
    }

    /// Decodes a snapshot made by [`RangeState::encode_snapshot`] (or the incremental
    /// encoder, which makes the same format), verifying everything before building
    /// anything.
    pub fn decode_snapshot(bytes: &[u8], limits: RangeLimits) -> Result<RangeState, SnapshotError> {
        if bytes.len() < HEADER_LEN {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        let field =
            |at: usize| -> [u8; 4] { [header[at], header[at + 1], header[at + 2], header[at + 3]] };
        if header[..4] != MAGIC || u32::from_le_bytes(field(20)) != crc32c::crc32c(&header[..20]) {
            return Err(SnapshotError::BadHeader);
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != VERSION && version != VERSION_ONE_ARCHIVE {
            return Err(SnapshotError::UnsupportedVersion { got: version });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&header[8..16]);
        let expected_len = u64::from_le_bytes(len);
        if body.len() as u64 != expected_len {
            return Err(SnapshotError::BodyLength {
                len: body.len(),
                expected: expected_len,
            });
        }
        let expected = u32::from_le_bytes(field(16));
        let actual = crc32c::crc32c(body);
        if expected != actual {
            return Err(SnapshotError::Checksum { expected, actual });
        }
        let invalid = |e: rkyv::rancor::Error| SnapshotError::Invalid {
            reason: e.to_string(),
        };
        // The body sits at offset 24 of the caller's buffer, which need not be aligned for
        // the archives: each is copied into an aligned buffer once.
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        if version == VERSION_ONE_ARCHIVE {
            aligned.extend_from_slice(body);
            let image =
                rkyv::from_bytes::<RangeImage, rkyv::rancor::Error>(&aligned).map_err(invalid)?;
            let mut state = RangeState::from_head(
                RangeHead {
                    descriptor: image.descriptor,
                    applied_index: image.applied_index,
                    version_offset: image.version_offset,
                    sessions: image.sessions,
                    session_evictions: image.session_evictions,
                    frozen_at: image.frozen_at,
                },
                limits,
            );
            for kv in image.entries {
                state.insert_decoded(kv)?;
            }
            return Ok(state);
        }
        let mut rest = body;
        let mut next_section = || -> Result<Option<&[u8]>, SnapshotError> {
            if rest.is_empty() {
                return Ok(None);
            }
            let cut = || SnapshotError::Invalid {
                reason: "a section runs past the end of the body".into(),
            };
            let len = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(cut)?;
            let section = rest.get(4..4 + len).ok_or_else(cut)?;
            rest = &rest[4 + len..];
            Ok(Some(section))
        };
        let Some(head) = next_section()? else {
            return Err(SnapshotError::Invalid {
                reason: "the body has no head section".into(),
            });
        };
        aligned.extend_from_slice(head);
        let head = rkyv::from_bytes::<RangeHead, rkyv::rancor::Error>(&aligned).map_err(invalid)?;
        let mut state = RangeState::from_head(head, limits);
        while let Some(section) = next_section()? {
            aligned.clear();
            aligned.extend_from_slice(section);
            let entries = rkyv::from_bytes::<Vec<KeyValue>, rkyv::rancor::Error>(&aligned)
                .map_err(invalid)?;
            for kv in entries {
                state.insert_decoded(kv)?;
            }
        }
        Ok(state)
    }

    /// An empty state with a snapshot's head.
    fn from_head(head: RangeHead, limits: RangeLimits) -> RangeState {
        let mut state = RangeState::new(head.descriptor, limits);
        state.applied_index = head.applied_index;
        state.version_offset = head.version_offset;
        state.frozen_at = head.frozen_at;
        let mut sessions = Sessions::new(DEFAULT_MAX_SESSIONS);
        for s in head.sessions {
            sessions.restore(
                s.session,
                s.last_index,
                s.forgotten_through,
                VecDeque::from(s.outcomes),
            );
        }
        sessions.set_evictions(head.session_evictions);
        state.sessions = sessions;
        state
    }

    /// Adds one decoded entry, checking it.
    fn insert_decoded(&mut self, kv: KeyValue) -> Result<(), SnapshotError> {
        if kv.version.0 > self.version_bound() {
            return Err(SnapshotError::Invalid {
                reason: format!(
                    "key version {} is past the applied index {} plus the version offset {}",
                    kv.version.0, self.applied_index, self.version_offset
                ),
            });
        }
        self.bytes += (kv.key.len() + kv.value.len()) as u64;
        let v = Versioned::new(&kv.key, kv.value, kv.version);
        self.content_hash = self.content_hash.wrapping_add(v.hash);
        if self.data.insert(Key::from_vec(kv.key), v).is_some() {
            return Err(SnapshotError::Invalid {
                reason: "a key appears twice".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::message::{
        ClientRequest, GroupId, NodeId, Operation, RangeEpoch, RangeId, ReadConsistency,
        ReplicaDescriptor, ReplicaRole, RequestId,
    };

    fn state_with_data() -> RangeState {
        let descriptor = RangeDescriptor {
            id: RangeId(1),
            group: GroupId(1),
            start: vec![],
            end: vec![],
            replicas: vec![ReplicaDescriptor {
                node: NodeId(1),
                role: ReplicaRole::Voter,
            }],
            epoch: RangeEpoch(1),
        };
        let mut state = RangeState::new(descriptor, RangeLimits::default());
        for i in 1..=50u64 {
            let request = ClientRequest {
                request_id: RequestId(i),
                session: SessionId(i % 4),
                sequence: Sequence(i),
                consistency: ReadConsistency::Linearizable,
                route: None,
                op: Operation::Put {
                    key: i.to_be_bytes().to_vec(),
                    value: vec![i as u8; 10],
                },
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&request).unwrap();
            let archived = rkyv::access::<
                quasar_rpc::message::ArchivedClientRequest,
                rkyv::rancor::Error,
            >(&bytes)
            .unwrap();
            state.apply(i, archived).unwrap();
        }
        state
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut state = state_with_data();
        let bytes = state.encode_snapshot();
        let restored = RangeState::decode_snapshot(&bytes, RangeLimits::default()).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.state_hash(), state.state_hash());
    }

    /// A version 3 snapshot (one archive), as builds before sections wrote it.
    fn version_3_bytes(state: &RangeState) -> Vec<u8> {
        let image = RangeImage {
            descriptor: state.descriptor.clone(),
            applied_index: state.applied_index,
            version_offset: state.version_offset,
            entries: state
                .data
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_vec(),
                    value: v.value.clone(),
                    version: v.version,
                })
                .collect(),
            sessions: state.session_images(),
            session_evictions: state.sessions.evictions(),
            frozen_at: state.frozen_at,
        };
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&image).unwrap();
        let mut out = vec![0u8; HEADER_LEN];
        out.extend_from_slice(&body);
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION_ONE_ARCHIVE.to_le_bytes());
        out[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
        out[16..20].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        let header_crc = crc32c::crc32c(&out[..20]);
        out[20..24].copy_from_slice(&header_crc.to_le_bytes());
        out
    }

    #[test]
    fn a_version_3_snapshot_still_decodes() {
        let mut frozen = state_with_data();
        frozen.freeze(60);
        let empty = RangeState::new(frozen.descriptor.clone(), RangeLimits::default());
        for state in [state_with_data(), frozen, empty] {
            let restored =
                RangeState::decode_snapshot(&version_3_bytes(&state), RangeLimits::default())
                    .unwrap();
            assert_eq!(restored, state);
        }
    }

    #[test]
    fn a_borrowed_entry_archives_as_an_owned_one() {
        assert_eq!(
            std::mem::size_of::<ArchivedKeyValueRef<'static>>(),
            std::mem::size_of::<ArchivedKeyValue>()
        );
        // A key stored inline and one longer than the inline bytes (kept on the heap).
        let long = vec![b'k'; super::super::KEY_INLINE_BYTES + 9];
        for key in [b"key".to_vec(), long] {
            let stored = Key::from_slice(&key);
            let value = b"value".to_vec();
            let version = KeyVersion(9);
            let borrowed = vec![KeyValueRef {
                key: &stored,
                value: &value,
                version,
            }];
            let owned = vec![KeyValue {
                key: key.clone(),
                value: value.clone(),
                version,
            }];
            let mut a = Vec::new();
            write_section(&mut a, &borrowed, "entries");
            let b = rkyv::to_bytes::<rkyv::rancor::Error>(&owned).unwrap();
            assert_eq!(&a[4..], b.as_slice());
        }
    }

    #[test]
    fn an_encoding_into_a_larger_buffer_checksums_its_own_part() {
        let mut frozen = state_with_data();
        frozen.freeze(60);
        for mut state in [state_with_data(), frozen] {
            let mut out = b"prefix".to_vec();
            let crc = state.encode_snapshot_into(&mut out);
            assert_eq!(crc, crc32c::crc32c(&out[6..]));
            assert_eq!(&out[6..], state.encode_snapshot().as_slice());
            let restored = RangeState::decode_snapshot(&out[6..], RangeLimits::default()).unwrap();
            assert_eq!(restored, state);
        }
    }

    /// A range of `n` keys with 3-byte values, versions 1..=n.
    fn state_with_keys(n: u64) -> RangeState {
        let mut state = state_with_data();
        for i in 0..n {
            state.put(&(i * 2).to_be_bytes(), b"abc", KeyVersion(1));
        }
        state.skip_to(100);
        state
    }

    #[test]
    fn an_incremental_snapshot_holds_the_state_at_its_start_whatever_is_written_meanwhile() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..20u64 {
            let mut state = state_with_keys(3 * SECTION_ENTRIES as u64 / 2);
            let at_start = state.clone();
            let mut out = b"file prefix".to_vec();
            state.begin_snapshot(&mut out, round);
            let mut steps = 0;
            let crc = loop {
                // Overwrites, deletions and new keys (between the existing even keys and
                // past them), before and after where the encoder has got to.
                for _ in 0..rng.usize(0..200) {
                    let k = rng.u64(0..4 * SECTION_ENTRIES as u64).to_be_bytes();
                    match rng.u8(0..3) {
                        0 => {
                            state.remove(&k);
                        }
                        _ => state.put(&k, &[rng.u8(..); 5], KeyVersion(99)),
                    }
                }
                let budget = rng.usize(0..2 * SECTION_ENTRIES);
                match state.continue_snapshot(&mut out, round, budget) {
                    SnapshotProgress::More => steps += 1,
                    SnapshotProgress::Done(crc) => break crc,
                    SnapshotProgress::Abandoned => panic!("round {round}: abandoned"),
                }
                assert!(steps < 10_000, "round {round}: never finishes");
            };
            assert_eq!(crc, crc32c::crc32c(&out[11..]), "round {round}");
            assert!(state.capture.is_none());
            let restored = RangeState::decode_snapshot(&out[11..], RangeLimits::default())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(restored, at_start, "round {round} ({steps} steps)");
            assert_eq!(restored.state_hash(), at_start.state_hash());
        }
    }

    #[test]
    fn a_split_or_another_snapshot_abandons_one_under_way() {
        let mut state = state_with_keys(3 * SECTION_ENTRIES as u64);
        let mut out = Vec::new();
        state.begin_snapshot(&mut out, 1);
        assert_eq!(
            state.continue_snapshot(&mut out, 1, 10),
            SnapshotProgress::More
        );
        state.begin_snapshot(&mut Vec::new(), 2);
        assert_eq!(
            state.continue_snapshot(&mut out, 1, 10),
            SnapshotProgress::Abandoned
        );
        let (mut left, mut right) = (state.descriptor.clone(), state.descriptor.clone());
        right.start = 100u64.to_be_bytes().to_vec();
        left.end = right.start.clone();
        let _ = state.split_off(200, left, right);
        assert_eq!(
            state.continue_snapshot(&mut out, 2, 10),
            SnapshotProgress::Abandoned
        );
    }

    #[test]
    fn every_damage_is_refused() {
        let bytes = state_with_data().encode_snapshot();
        let decode = |b: &[u8]| RangeState::decode_snapshot(b, RangeLimits::default()).unwrap_err();
        assert_eq!(decode(&bytes[..10]), SnapshotError::Truncated { len: 10 });
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            SnapshotError::BodyLength { .. }
        ));
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 40] ^= 1;
        assert!(matches!(decode(&flipped), SnapshotError::Checksum { .. }));
        let mut header = bytes.clone();
        header[9] ^= 1;
        assert_eq!(decode(&header), SnapshotError::BadHeader);
        // Every single-bit flip anywhere is caught by one of the checks.
        for at in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert!(
                RangeState::decode_snapshot(&b, RangeLimits::default()).is_err(),
                "flip at {at}"
            );
        }
    }
}
