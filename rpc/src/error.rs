//! Errors of the transport and of the client library. The codec's own `FrameError` lives in
//! `frame.rs`; this module wraps it where a connection is involved.
//!
//! "Try elsewhere" (`NotLeader`, `RangeMoved`, `Unavailable`) is kept apart from definite
//! failures (`ConditionFailed`, `TooLarge`) and from `Ambiguous`: a write whose outcome is
//! unknown must never be reported as failed, since it may still be applied.

use std::net::SocketAddr;
use std::time::Duration;

use crate::frame::FrameError;

/// Why a connection or a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("socket error with {peer}: {source}; the connection is closed and will be redialed")]
    Io {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer} did not answer within {timeout:?} while {what}; the connection is closed")]
    Timeout {
        peer: SocketAddr,
        what: &'static str,
        timeout: Duration,
    },
    #[error("bad frame from {peer}: {source}; the connection is closed, others keep running")]
    Frame {
        peer: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("handshake with {peer} refused: {reason}; check the peer's --cluster-id and node id")]
    HandshakeRefused { peer: SocketAddr, reason: String },
    #[error(
        "{peer} reads too slowly: {queued_bytes} bytes queued over the limit of {limit_bytes}; \
         the connection is closed so that memory stays bounded"
    )]
    SlowPeer {
        peer: SocketAddr,
        queued_bytes: usize,
        limit_bytes: usize,
    },
    #[error(
        "TLS handshake with {peer} failed: {reason}; check that both sides use certificates \
         signed by the same cluster CA (--tls-ca / --cacert) and that the certificate names \
         the node"
    )]
    Tls { peer: SocketAddr, reason: String },
    #[error("connection to {peer} is closed")]
    Closed { peer: SocketAddr },
    #[error("cannot listen on {addr}: {source}; is the port already in use?")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a client operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a definite failure (nothing was applied, or the answer is the
    /// outcome of this very session sequence).
    #[error("request failed: {0}")]
    Failed(crate::message::RequestError),
    /// A write was sent and no answer came back (timeout, connection lost) on the last
    /// attempt: it may or may not have been applied.
    #[error(
        "outcome unknown after {attempts} attempts ({last}): the write may have been applied; \
         read the key, or retry with the same session sequence"
    )]
    Ambiguous { attempts: u32, last: String },
    /// Every attempt failed without the request being applied (no route, no connection,
    /// unavailable, reads timing out).
    #[error(
        "gave up after {attempts} attempts ({last}); nothing was applied: check that the \
         cluster is up and reachable"
    )]
    Unavailable { attempts: u32, last: String },
    /// The request cannot be encoded (e.g. larger than the frame limit).
    #[error("cannot send the request: {0}")]
    Encode(#[from] crate::frame::EncodeError),
    /// The server answered something this client cannot make sense of (a bug on one side).
    #[error("protocol error: {reason}; client and server releases may be incompatible")]
    Protocol { reason: String },
    /// The configuration names no node to contact.
    #[error("the client knows no node address: pass at least one --node")]
    NoNodes,
}
