//! The snapshot of one range: every key with its value and version, the exactly-once
//! sessions and the applied index, in one checksummed byte string that the runtime writes to
//! a file, sends in chunks and installs atomically.
//!
//! ```text
//!  0        4     6        8            16          20        24
//!  | QSNP   | ver | (zero) | body len   | body crc  | hdr crc | rkyv body (RangeImage) |
//! ```
//! `hdr crc` is CRC32C over bytes [0, 20); `body crc` over the body. A damaged or
//! truncated snapshot is refused with the reason, never half-installed.

use std::collections::VecDeque;

use quasar_rpc::message::{
    ArchivedKeyValue, KeyValue, KeyVersion, RangeDescriptor, Reply, RequestError, Sequence,
    SessionId,
};
use rkyv::with::Inline;
use rkyv::{Archive, Deserialize, Serialize};

use super::{RangeLimits, RangeState, Sessions, Versioned, DEFAULT_MAX_SESSIONS};

const MAGIC: [u8; 4] = *b"QSNP";
const VERSION: u16 = 3;
/// Size of the fixed header before the body.
pub const HEADER_LEN: usize = 24;

/// What the body holds.
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

/// [`RangeImage`] borrowing the keys and values of the live state: field for field the same
/// archived layout (so the same bytes, which the tests check), without cloning a million
/// small vectors first.
#[derive(Archive, Serialize)]
struct RangeImageRef<'a> {
    #[rkyv(with = Inline)]
    descriptor: &'a RangeDescriptor,
    applied_index: u64,
    version_offset: u64,
    entries: Vec<KeyValueRef<'a>>,
    sessions: Vec<SessionImage>,
    session_evictions: u64,
    frozen_at: Option<u64>,
}

/// One entry of [`RangeImageRef`], laid out as an archived `KeyValue`.
#[derive(Archive, Serialize)]
struct KeyValueRef<'a> {
    #[rkyv(with = Inline)]
    key: &'a Vec<u8>,
    #[rkyv(with = Inline)]
    value: &'a Vec<u8>,
    version: KeyVersion,
}

/// A writer that appends to a `Vec` already holding `base` bytes, counting positions from
/// there: the archive is laid out as if the body started its own buffer (as the reader sees
/// it), but it is written once, in place, after the header.
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

/// Why snapshot bytes cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {len} bytes, shorter than its {HEADER_LEN}-byte header: it was cut; fetch it again")]
    Truncated { len: usize },
    #[error("not a range snapshot (bad magic or header checksum): fetch it again")]
    BadHeader,
    #[error("snapshot format version {got} is not supported (this build reads {VERSION})")]
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

impl RangeState {
    /// Encodes the whole applied state.
    pub fn encode_snapshot(&self) -> Vec<u8> {
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

    /// About how many bytes [`RangeState::encode_snapshot`] makes (a buffer's capacity).
    pub fn snapshot_size_hint(&self) -> usize {
        // Per entry: the archived `KeyValue` (two vectors' pointers and lengths, a version)
        // and the bytes of its key and value; the sessions are small.
        let entries = self.data.len() * (std::mem::size_of::<ArchivedKeyValue>() + 8);
        HEADER_LEN + self.bytes as usize + entries + (64 << 10)
    }

    /// Appends the snapshot bytes of [`RangeState::encode_snapshot`] to `out`, serializing
    /// the archive in place (no copy of the keys and values but into `out`); returns the
    /// CRC32C of the appended bytes (so a caller checksumming a larger whole can combine it
    /// instead of reading them again).
    pub fn encode_snapshot_into(&self, out: &mut Vec<u8>) -> u32 {
        let image = RangeImageRef {
            descriptor: &self.descriptor,
            applied_index: self.applied_index,
            version_offset: self.version_offset,
            entries: self
                .data
                .iter()
                .map(|(key, v)| KeyValueRef {
                    key,
                    value: &v.value,
                    version: v.version,
                })
                .collect(),
            sessions: self.session_images(),
            session_evictions: self.sessions.evictions(),
            frozen_at: self.frozen_at,
        };
        let start = out.len();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let base = out.len();
        if let Err(e) =
            rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&image, Appender { out, base })
        {
            // Serializing plain owned data into memory cannot fail short of allocation
            // failure, which aborts anyway.
            panic!(
                "range {}: snapshot serialization failed: {e}",
                self.descriptor.id
            );
        }
        let body_len = out.len() - base;
        let body_crc = crc32c::crc32c(&out[base..]);
        let header = &mut out[start..base];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&(body_len as u64).to_le_bytes());
        header[16..20].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&header[..20]);
        header[20..24].copy_from_slice(&header_crc.to_le_bytes());
        crc32c::crc32c_combine(crc32c::crc32c(header), body_crc, body_len)
    }

    /// Decodes a snapshot made by [`RangeState::encode_snapshot`], verifying everything
    /// before building anything.
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
        if version != VERSION {
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
        // The body sits at offset 24 of the caller's buffer, which need not be aligned for
        // the archive: copy it into an aligned buffer once.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let image = rkyv::from_bytes::<RangeImage, rkyv::rancor::Error>(&aligned).map_err(|e| {
            SnapshotError::Invalid {
                reason: e.to_string(),
            }
        })?;
        let mut state = RangeState::new(image.descriptor, limits);
        state.applied_index = image.applied_index;
        state.version_offset = image.version_offset;
        state.frozen_at = image.frozen_at;
        let mut sessions = Sessions::new(DEFAULT_MAX_SESSIONS);
        for s in image.sessions {
            sessions.restore(
                s.session,
                s.last_index,
                s.forgotten_through,
                VecDeque::from(s.outcomes),
            );
        }
        sessions.set_evictions(image.session_evictions);
        state.sessions = sessions;
        for kv in image.entries {
            if kv.version.0 > state.version_bound() {
                return Err(SnapshotError::Invalid {
                    reason: format!(
                        "key version {} is past the applied index {} plus the version offset {}",
                        kv.version.0, state.applied_index, state.version_offset
                    ),
                });
            }
            state.bytes += (kv.key.len() + kv.value.len()) as u64;
            let v = Versioned::new(&kv.key, kv.value, kv.version);
            state.content_hash = state.content_hash.wrapping_add(v.hash);
            if state.data.insert(kv.key, v).is_some() {
                return Err(SnapshotError::Invalid {
                    reason: "a key appears twice".into(),
                });
            }
        }
        Ok(state)
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
        let state = state_with_data();
        let bytes = state.encode_snapshot();
        let restored = RangeState::decode_snapshot(&bytes, RangeLimits::default()).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.state_hash(), state.state_hash());
    }

    /// What `encode_snapshot` wrote before it borrowed the keys and values: the owned image.
    fn owned_body(state: &RangeState) -> Vec<u8> {
        let image = RangeImage {
            descriptor: state.descriptor.clone(),
            applied_index: state.applied_index,
            version_offset: state.version_offset,
            entries: state
                .data
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.value.clone(),
                    version: v.version,
                })
                .collect(),
            sessions: state.session_images(),
            session_evictions: state.sessions.evictions(),
            frozen_at: state.frozen_at,
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&image)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn the_borrowed_image_archives_to_the_owned_images_bytes() {
        assert_eq!(
            std::mem::size_of::<ArchivedKeyValueRef<'static>>(),
            std::mem::size_of::<ArchivedKeyValue>()
        );
        assert_eq!(
            std::mem::size_of::<ArchivedRangeImageRef<'static>>(),
            std::mem::size_of::<ArchivedRangeImage>()
        );
        let mut frozen = state_with_data();
        frozen.freeze(60);
        let empty = RangeState::new(frozen.descriptor.clone(), RangeLimits::default());
        for state in [state_with_data(), frozen, empty] {
            let mut out = b"prefix".to_vec();
            let crc = state.encode_snapshot_into(&mut out);
            assert_eq!(&out[6 + HEADER_LEN..], owned_body(&state).as_slice());
            assert_eq!(crc, crc32c::crc32c(&out[6..]));
            let restored = RangeState::decode_snapshot(&out[6..], RangeLimits::default()).unwrap();
            assert_eq!(restored, state);
        }
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
