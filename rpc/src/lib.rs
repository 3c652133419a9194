//! quasar-rpc: the wire between Quasar nodes and their clients.
//!
//! - [`frame`]: the frame layout (24-byte header with CRC32C over header and
//!   body, rkyv body read in place) and the sans-I/O [`frame::FrameDecoder`].
//! - [`message`]: every message type that travels as a frame body: the Raft
//!   batch, the handshake, client and admin requests and responses, the range
//!   descriptor and the size limits.
//! - [`conn`] and [`transport`]: glommio connections (plaintext or TLS), the shard's
//!   listener and its peers; [`client`]: the async and blocking clients.
//! - [`tls`]: rustls configurations of nodes and clients, certificate names (`node-<id>`);
//!   [`auth`]: roles, principals and the access policy (tokens, certificate identities).
//!
//! A round trip through the codec, as the transport does it:
//!
//! ```
//! use quasar_rpc::frame::{encode_frame, Decoded, FrameDecoder};
//! use quasar_rpc::message::{
//!     ClientRequest, Operation, ReadConsistency, RequestId, SessionId, Sequence,
//! };
//! use rkyv::util::AlignedVec;
//!
//! let request = ClientRequest {
//!     request_id: RequestId(7),
//!     session: SessionId(42),
//!     sequence: Sequence(1),
//!     consistency: ReadConsistency::Linearizable,
//!     route: None,
//!     op: Operation::Get { key: b"inode/1".to_vec() },
//! };
//! let mut buf = AlignedVec::new();
//! encode_frame(&request, &mut buf).unwrap();
//!
//! let mut decoder = FrameDecoder::new(1 << 20);
//! let Decoded::Frame(frame) = decoder.decode(&buf).unwrap() else { panic!("whole frame") };
//! // Validated with bytecheck, then read in place without deserializing.
//! let archived = frame.access::<ClientRequest>(&buf).unwrap();
//! assert_eq!(archived.request_id.0, 7);
//! assert_eq!(frame.consumed, buf.len());
//! ```

pub mod auth;
pub mod client;
pub mod conn;
pub mod error;
pub mod frame;
pub mod message;
pub mod tls;
pub mod transport;
