//! Frame layout, encoder and the sans-I/O [`FrameDecoder`].
//!
//! Owns the bytes of one frame: the fixed header, the checksums and the rules
//! that decide whether a run of bytes from a socket is a frame, needs more
//! bytes, or must close the connection. It never performs I/O and never
//! interprets a body beyond running bytecheck on it ([`access_body`]); the
//! message types live in [`crate::message`], sockets in the transport.
//!
//! ```text
//!  offset  size  field
//!  0       4     magic        "QSRF" (0x4652_5351 little-endian)
//!  4       2     version      PROTOCOL_VERSION
//!  6       2     kind         FrameKind code (WireMessage::KIND_CODE)
//!  8       4     body_len     bytes of rkyv archive, a multiple of BODY_ALIGN
//!  12      4     body_crc     CRC32C of the body
//!  16      4     flags        reserved, must be 0 in version 1
//!  20      4     header_crc   CRC32C of bytes 0..20
//!  24      ..    body         rkyv 0.8 archive, root at its end
//! ```
//!
//! All integers are little-endian. Every frame is a multiple of
//! [`BODY_ALIGN`] bytes long (24-byte header, body length a multiple of 8), so
//! frames laid back to back in a 16-byte aligned buffer (an
//! [`AlignedVec`]) keep every body 8-byte aligned and readable in place. The
//! archived root of every [`WireMessage`] has alignment 8, which is what makes
//! every rkyv body a multiple of 8 bytes long (checked at compile time in
//! [`wire_message!`](crate::wire_message)).
//!
//! The decoder checks, in order: magic, header checksum, version, flags, body
//! length against the configured maximum (before the caller reserves any
//! memory for the body), kind, then (once the whole body is there) the body
//! checksum. A flipped length bit is caught by the header checksum before the
//! length is trusted [TigerBeetle header].

use std::ops::Range;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

/// First four bytes of every frame: `b"QSRF"`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QSRF");
/// Wire protocol version written by this build and the only one it accepts.
/// Version 2: the handshake carries an optional bearer token; new refusals and the
/// `PermissionDenied` request error (TLS and authentication). Version 3: `RaftBatch::commits`
/// (commit notices without an answer).
pub const PROTOCOL_VERSION: u16 = 3;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 24;
/// Alignment of every body inside an aligned buffer, and the granule of body lengths.
pub const BODY_ALIGN: usize = 8;
/// Bytes of the header covered by the header checksum.
const HEADER_CRC_COVERS: usize = 20;

const _: () = assert!(HEADER_LEN == 4 + 2 + 2 + 4 + 4 + 4 + 4);
const _: () = assert!(HEADER_CRC_COVERS == HEADER_LEN - 4);
const _: () = assert!(HEADER_LEN % BODY_ALIGN == 0);
// AlignedVec's base alignment must be at least the body alignment.
const _: () = assert!(AlignedVec::<16>::ALIGNMENT >= BODY_ALIGN);

/// What a frame carries; the `u16` code is the `kind` header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameKind {
    /// [`crate::message::Handshake`]: the first frame on every connection.
    Handshake = 1,
    /// [`crate::message::HandshakeReply`]: accept or refuse the handshake.
    HandshakeReply = 2,
    /// [`crate::message::RaftBatch`]: Raft messages of many groups for one shard.
    RaftBatch = 3,
    /// [`crate::message::ClientRequest`].
    ClientRequest = 4,
    /// [`crate::message::ClientResponse`].
    ClientResponse = 5,
    /// [`crate::message::AdminRequest`].
    AdminRequest = 6,
    /// [`crate::message::AdminResponse`].
    AdminResponse = 7,
}

impl FrameKind {
    /// Every kind, in code order.
    pub const ALL: [FrameKind; 7] = [
        FrameKind::Handshake,
        FrameKind::HandshakeReply,
        FrameKind::RaftBatch,
        FrameKind::ClientRequest,
        FrameKind::ClientResponse,
        FrameKind::AdminRequest,
        FrameKind::AdminResponse,
    ];

    /// The code written in the header.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The kind for a header code, `None` for a code this build does not know.
    pub const fn from_code(code: u16) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::HandshakeReply),
            3 => Some(FrameKind::RaftBatch),
            4 => Some(FrameKind::ClientRequest),
            5 => Some(FrameKind::ClientResponse),
            6 => Some(FrameKind::AdminRequest),
            7 => Some(FrameKind::AdminResponse),
            _ => None,
        }
    }
}

/// A message type that travels as the body of one frame kind.
///
/// The associated-type bounds say: the archive can be validated by bytecheck
/// (bytes from the network are untrusted) and deserialized back; the value
/// can be serialized straight into an [`AlignedVec`]. Implement it with
/// [`wire_message!`](crate::wire_message), which also checks the alignment rule.
pub trait WireMessage:
    Sized
    + Archive<
        Archived: Portable
                      + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a, 'b> Serialize<HighSerializer<&'b mut AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
    /// The frame kind this message is sent as.
    const KIND: FrameKind;
    /// `KIND` as written in the header.
    const KIND_CODE: u16 = Self::KIND.code();
}

/// Implements [`WireMessage`] for a message type and checks at compile time
/// that its archived root has alignment [`BODY_ALIGN`].
#[macro_export]
macro_rules! wire_message {
    ($ty:ty, $kind:expr) => {
        impl $crate::frame::WireMessage for $ty {
            const KIND: $crate::frame::FrameKind = $kind;
        }
        const _: () = assert!(
            ::core::mem::align_of::<<$ty as ::rkyv::Archive>::Archived>()
                == $crate::frame::BODY_ALIGN
        );
    };
}

/// Why bytes were refused as a frame. Each one closes the connection it came
/// from (the peer is broken, hostile or from another build); the node keeps
/// serving every other connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream is not Quasar frames (or lost its framing).
    #[error(
        "bad frame magic {got:#010x} (expected {MAGIC:#010x}): the peer is not speaking the \
         Quasar protocol or the stream lost sync; check the address and port"
    )]
    BadMagic {
        /// The first four bytes, little-endian.
        got: u32,
    },
    /// The header was damaged in transit or by a bug in the sender.
    #[error(
        "frame header checksum mismatch (header says {expected:#010x}, computed {actual:#010x}): \
         the header was corrupted; the connection is closed and will be re-established"
    )]
    HeaderChecksum {
        /// The checksum written in the header.
        expected: u32,
        /// The checksum of the bytes received.
        actual: u32,
    },
    /// The peer speaks another protocol version.
    #[error(
        "unsupported protocol version {got} (this build speaks {PROTOCOL_VERSION}): upgrade \
         the older side so that both run compatible releases"
    )]
    UnsupportedVersion {
        /// The version in the header.
        got: u16,
    },
    /// Flag bits this version does not define.
    #[error("unknown frame flags {flags:#010x}: the peer runs a newer release; upgrade this node")]
    UnsupportedFlags {
        /// The flags field.
        flags: u32,
    },
    /// The body is longer than this receiver accepts.
    #[error(
        "frame body of {len} bytes exceeds the limit of {max} bytes: raise max_frame_bytes on \
         the receiver or send smaller batches"
    )]
    TooLarge {
        /// Body length announced by the header.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// The body length breaks the alignment rule, so no encoder of ours wrote it.
    #[error(
        "frame body length {len} is not a multiple of {BODY_ALIGN}: the sender is not a \
         conforming Quasar encoder"
    )]
    UnalignedLength {
        /// Body length announced by the header.
        len: u32,
    },
    /// A kind code this build does not know.
    #[error("unknown frame kind {code}: the peer runs a newer release; upgrade this node")]
    UnknownKind {
        /// The kind code in the header.
        code: u16,
    },
    /// The body was damaged in transit.
    #[error(
        "frame body checksum mismatch (header says {expected:#010x}, computed {actual:#010x}): \
         the body was corrupted in transit; the connection is closed and will be re-established"
    )]
    Checksum {
        /// The checksum written in the header.
        expected: u32,
        /// The checksum of the body received.
        actual: u32,
    },
    /// The body's checksum matched but bytecheck refused the archive.
    #[error(
        "invalid {kind:?} archive: {reason}; the sender has a bug or is hostile, the frame is \
         dropped and the connection closed"
    )]
    InvalidArchive {
        /// The kind the body was read as.
        kind: FrameKind,
        /// What bytecheck (or the alignment check) reported.
        reason: String,
    },
    /// The caller asked for a body as another message type than the frame carries.
    #[error("frame carries {got:?}, not {expected:?}: a protocol bug in the peer or the caller")]
    KindMismatch {
        /// The type the caller asked for.
        expected: FrameKind,
        /// The kind in the header.
        got: FrameKind,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded body is larger than the limit given to the encoder.
    #[error(
        "encoded body of {len} bytes exceeds the limit of {max} bytes: split the batch or the \
         value"
    )]
    TooLarge {
        /// Length of the body that was produced.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// rkyv refused to serialize the value.
    #[error("cannot serialize {kind:?}: {reason}")]
    Serialize {
        /// The kind being encoded.
        kind: FrameKind,
        /// rkyv's error.
        reason: String,
    },
}

/// The parsed fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version.
    pub version: u16,
    /// Kind code (not yet checked against [`FrameKind`]).
    pub kind_code: u16,
    /// Length of the body in bytes.
    pub body_len: u32,
    /// CRC32C of the body.
    pub body_crc: u32,
    /// Reserved flags.
    pub flags: u32,
}

impl FrameHeader {
    /// Writes the header (with its checksum) into `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&self.version.to_le_bytes());
        out[6..8].copy_from_slice(&self.kind_code.to_le_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.body_crc.to_le_bytes());
        out[16..20].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32c::crc32c(&out[..HEADER_CRC_COVERS]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parses and checks the magic and header checksum of `bytes`; nothing else.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let magic = read_u32(bytes, 0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { got: magic });
        }
        let expected = read_u32(bytes, 20);
        let actual = crc32c::crc32c(&bytes[..HEADER_CRC_COVERS]);
        if expected != actual {
            return Err(FrameError::HeaderChecksum { expected, actual });
        }
        Ok(FrameHeader {
            version: u16::from_le_bytes([bytes[4], bytes[5]]),
            kind_code: u16::from_le_bytes([bytes[6], bytes[7]]),
            body_len: read_u32(bytes, 8),
            body_crc: read_u32(bytes, 12),
            flags: read_u32(bytes, 16),
        })
    }
}

fn read_u32(bytes: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Where an encoded frame landed in the output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Byte range of the whole frame (header and body) in the output buffer.
    pub frame: Range<usize>,
    /// Length of the body in bytes.
    pub body_len: u32,
}

/// Appends one frame carrying `msg` to `out`, with no limit but the 4 GiB of
/// the length field. See [`encode_frame_limited`].
pub fn encode_frame<M: WireMessage>(
    msg: &M,
    out: &mut AlignedVec,
) -> Result<EncodedFrame, EncodeError> {
    encode_frame_limited(msg, u64::from(u32::MAX), out)
}

/// Appends one frame carrying `msg` to `out`: the body is serialized by rkyv
/// straight after the header's place, then the header is written over it.
/// Several frames may be appended to one buffer back to back. On error `out`
/// is left as it was.
///
/// # Panics
/// If `out.len()` is not a multiple of [`BODY_ALIGN`]: `out` must hold only
/// whole frames, or the body would not be aligned (a bug in the caller).
pub fn encode_frame_limited<M: WireMessage>(
    msg: &M,
    max_body_len: u64,
    out: &mut AlignedVec,
) -> Result<EncodedFrame, EncodeError> {
    let start = out.len();
    assert!(
        start % BODY_ALIGN == 0,
        "frame buffer length {start} is not a multiple of {BODY_ALIGN}: it holds a partial frame"
    );
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    let body_start = out.len();
    let serialized = rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, &mut *out);
    if let Err(e) = serialized {
        out.resize(start, 0);
        return Err(EncodeError::Serialize {
            kind: M::KIND,
            reason: e.to_string(),
        });
    }
    let body_len = out.len() - body_start;
    let max = max_body_len.min(u64::from(u32::MAX));
    let Some(body_len_u32) = u32::try_from(body_len)
        .ok()
        .filter(|l| u64::from(*l) <= max)
    else {
        out.resize(start, 0);
        return Err(EncodeError::TooLarge {
            len: body_len as u64,
            max,
        });
    };
    // The archived root has alignment BODY_ALIGN (checked by wire_message!) and
    // ends the body, so the body length is a multiple of it.
    assert!(
        body_len % BODY_ALIGN == 0,
        "rkyv body of {:?} is {body_len} bytes, not a multiple of {BODY_ALIGN}",
        M::KIND
    );
    let header = FrameHeader {
        version: PROTOCOL_VERSION,
        kind_code: M::KIND_CODE,
        body_len: body_len_u32,
        body_crc: crc32c::crc32c(&out[body_start..]),
        flags: 0,
    };
    let mut bytes = [0u8; HEADER_LEN];
    header.write(&mut bytes);
    out[start..body_start].copy_from_slice(&bytes);
    #[cfg(debug_assertions)]
    {
        // Check at both ends (STYLE 9): what we wrote must decode and validate.
        let mut decoder = FrameDecoder::new(max_body_len);
        match decoder.decode(&out[start..]) {
            Ok(Decoded::Frame(frame)) => {
                debug_assert_eq!(frame.consumed, out.len() - start);
                debug_assert!(access_body::<M>(&out[start + frame.body.start..]).is_ok());
            }
            other => panic!(
                "freshly encoded {:?} frame does not decode: {other:?}",
                M::KIND
            ),
        }
    }
    Ok(EncodedFrame {
        frame: start..out.len(),
        body_len: body_len_u32,
    })
}

/// One frame found at the start of the decoder's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the body carries.
    pub kind: FrameKind,
    /// The body's byte range in the buffer given to [`FrameDecoder::decode`].
    pub body: Range<usize>,
    /// Bytes of the buffer taken by this frame (header and body).
    pub consumed: usize,
}

impl Frame {
    /// The body bytes of this frame in `buf` (the buffer it was decoded from).
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.body.clone()]
    }

    /// Validates the body (in `buf`, the buffer it was decoded from) as an `M`
    /// and returns the archived value, read in place.
    pub fn access<'a, M: WireMessage>(&self, buf: &'a [u8]) -> Result<&'a M::Archived, FrameError> {
        if self.kind != M::KIND {
            return Err(FrameError::KindMismatch {
                expected: M::KIND,
                got: self.kind,
            });
        }
        access_body::<M>(self.body(buf))
    }
}

/// The outcome of one [`FrameDecoder::decode`] call that found no error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checksummed frame is at the start of the buffer.
    Frame(Frame),
    /// The buffer holds the start of a frame; at least `needed` more bytes
    /// must be appended before calling again (the header once read, this is
    /// the exact remainder of the frame).
    Incomplete {
        /// How many more bytes to read at least.
        needed: usize,
    },
}

/// Sans-I/O frame decoder: bytes in, frames out.
///
/// Stateless between calls apart from its limit: give it the unconsumed bytes
/// starting at a frame boundary, drop `consumed` bytes after each frame.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_body_len: u64,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max_body_len` bytes.
    pub fn new(max_body_len: u64) -> FrameDecoder {
        FrameDecoder { max_body_len }
    }

    /// The limit on body length.
    pub fn max_body_len(&self) -> u64 {
        self.max_body_len
    }

    /// Decodes the frame at the start of `buf`.
    ///
    /// The header is verified (magic, checksum, version, flags, length
    /// limit, kind) as soon as its 24 bytes are there, so an oversized or
    /// corrupt frame is refused before the caller reserves room for its body.
    /// Once the whole body is there its checksum is verified. The body is not
    /// validated as an archive here: call [`Frame::access`] or [`access_body`].
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, FrameError> {
        let Some(header_bytes) = buf.first_chunk::<HEADER_LEN>() else {
            // Check the magic early on a short read, so garbage fails fast.
            let have = buf.len().min(4);
            if buf[..have] != MAGIC.to_le_bytes()[..have] {
                let mut got = [0u8; 4];
                got[..have].copy_from_slice(&buf[..have]);
                return Err(FrameError::BadMagic {
                    got: u32::from_le_bytes(got),
                });
            }
            return Ok(Decoded::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        };
        let header = FrameHeader::parse(header_bytes)?;
        if header.version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                got: header.version,
            });
        }
        if header.flags != 0 {
            return Err(FrameError::UnsupportedFlags {
                flags: header.flags,
            });
        }
        if u64::from(header.body_len) > self.max_body_len {
            return Err(FrameError::TooLarge {
                len: u64::from(header.body_len),
                max: self.max_body_len,
            });
        }
        if header.body_len as usize % BODY_ALIGN != 0 {
            return Err(FrameError::UnalignedLength {
                len: header.body_len,
            });
        }
        let Some(kind) = FrameKind::from_code(header.kind_code) else {
            return Err(FrameError::UnknownKind {
                code: header.kind_code,
            });
        };
        let total = HEADER_LEN + header.body_len as usize;
        if buf.len() < total {
            return Ok(Decoded::Incomplete {
                needed: total - buf.len(),
            });
        }
        let body = HEADER_LEN..total;
        let actual = crc32c::crc32c(&buf[body.clone()]);
        if actual != header.body_crc {
            return Err(FrameError::Checksum {
                expected: header.body_crc,
                actual,
            });
        }
        Ok(Decoded::Frame(Frame {
            kind,
            body,
            consumed: total,
        }))
    }
}

/// Validates `body` with bytecheck as the archive of an `M` and returns it,
/// read in place. `body` must start at an address aligned to [`BODY_ALIGN`]
/// (a frame inside an [`AlignedVec`] that holds whole frames does).
pub fn access_body<M: WireMessage>(body: &[u8]) -> Result<&M::Archived, FrameError> {
    let misalignment = body.as_ptr() as usize % BODY_ALIGN;
    if misalignment != 0 {
        return Err(FrameError::InvalidArchive {
            kind: M::KIND,
            reason: format!(
                "body starts {misalignment} bytes past a {BODY_ALIGN}-byte boundary; \
                 read frames into an AlignedVec"
            ),
        });
    }
    rkyv::access::<M::Archived, rancor::Error>(body).map_err(|e| FrameError::InvalidArchive {
        kind: M::KIND,
        reason: e.to_string(),
    })
}

/// Validates `body` as an `M` ([`access_body`]) and deserializes it into an owned value.
pub fn decode_body<M: WireMessage>(body: &[u8]) -> Result<M, FrameError> {
    let archived = access_body::<M>(body)?;
    rkyv::deserialize::<M, rancor::Error>(archived).map_err(|e| FrameError::InvalidArchive {
        kind: M::KIND,
        reason: e.to_string(),
    })
}
