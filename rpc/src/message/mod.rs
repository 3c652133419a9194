//! Every message type that travels as a frame body, and the pure rules about
//! them (size limits, handshake decision, transaction compares).
//!
//! One frame kind per top-level type, each implementing
//! [`crate::frame::WireMessage`]:
//!
//! | type | frame kind |
//! |---|---|
//! | [`Handshake`] / [`HandshakeReply`] | first frames of every connection |
//! | [`RaftBatch`] | Raft messages of many groups for one shard |
//! | [`ClientRequest`] / [`ClientResponse`] | key-value operations |
//! | [`AdminRequest`] / [`AdminResponse`] | ranges, members, status |
//!
//! Every type derives rkyv `Archive` with bytecheck: a receiver validates a
//! body with [`crate::frame::access_body`] and reads the `Archived*` form in
//! place; entry payloads, keys and values are `ArchivedVec<u8>` slices.

mod admin;
mod client;
mod handshake;
mod ids;
mod limits;
mod raft;
mod range;

pub use admin::*;
pub use client::*;
pub use handshake::*;
pub use ids::*;
pub use limits::*;
pub use raft::*;
pub use range::*;
