//! The handshake: the first frame each side sends on a new connection.
//!
//! Owns the wire shape and the pure decision [`Handshake::evaluate`] (accept
//! or refuse, and why). Sockets, logging and closing belong to the transport.
//!
//! ```text
//!  dialer                                listener (shard `target_shard`)
//!    │── Handshake { cluster, origin, target_shard, version,      │
//!    │               token } ────────────────────────────────────▶│
//!    │◀── HandshakeReply::Accepted { cluster, node, shard } ─────│
//!    │         or HandshakeReply::Refused(reason) then close     │
//! ```
//!
//! Over TLS the transport also checks who the dialer is before answering: a node must
//! present a certificate naming `node-<id>` for the id it claims, and a client is
//! authenticated by its certificate or by the bearer `token` carried here (see `crate::auth`);
//! the refusals below say which check failed.

use rkyv::{Archive, Deserialize, Serialize};

use super::ids::{ClusterId, NodeId, SessionId, ShardId};
use crate::frame::{FrameKind, PROTOCOL_VERSION};

/// Who opens the connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
pub enum Origin {
    /// Another node's shard (Raft traffic, forwarded requests).
    Node {
        /// The dialing node.
        node: NodeId,
        /// The dialing shard on that node.
        shard: ShardId,
    },
    /// A client library instance.
    Client {
        /// Its exactly-once session.
        session: SessionId,
    },
}

/// The dialer's first frame.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Handshake {
    /// Wire protocol version of the dialer ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Cluster the dialer belongs to (a client learns it from its seed nodes).
    pub cluster: ClusterId,
    /// Node shard or client.
    pub origin: Origin,
    /// The shard index the dialer means to reach (base port + shard index).
    pub target_shard: ShardId,
    /// A client's bearer token (`None`: authenticate by certificate, or no auth configured).
    /// Send it over TLS only: it is a secret.
    pub token: Option<String>,
}
crate::wire_message!(Handshake, FrameKind::Handshake);

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("protocol_version", &self.protocol_version)
            .field("cluster", &self.cluster)
            .field("origin", &self.origin)
            .field("target_shard", &self.target_shard)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The listener's identity, against which a [`Handshake`] is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIdentity {
    /// This node's cluster.
    pub cluster: ClusterId,
    /// This node.
    pub node: NodeId,
    /// The shard that owns the listening socket.
    pub shard: ShardId,
}

/// Why a handshake was refused; sent back to the dialer, then the connection closes.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error,
)]
#[rkyv(derive(Debug))]
pub enum HandshakeRefusal {
    /// The dialer belongs to another cluster.
    #[error(
        "peer is from cluster {got}, this node is in cluster {expected}: check the peer's \
         --initial-members / data dir; nodes of different clusters never talk"
    )]
    ClusterMismatch {
        /// This node's cluster.
        expected: ClusterId,
        /// The dialer's cluster.
        got: ClusterId,
    },
    /// The dialer speaks another protocol version.
    #[error(
        "peer speaks protocol version {got}, this node speaks {supported}: run compatible releases"
    )]
    UnsupportedVersion {
        /// The dialer's version.
        got: u16,
        /// The version this node speaks.
        supported: u16,
    },
    /// The dialer reached a port of another shard.
    #[error(
        "peer wanted shard {wanted} but reached shard {reached}: its shard count or base port \
         is misconfigured"
    )]
    WrongShard {
        /// The shard the dialer asked for.
        wanted: ShardId,
        /// The shard that answered.
        reached: ShardId,
    },
    /// A node dialed with this node's own id, or with the reserved id 0.
    #[error(
        "peer claims node id {node}, which is this node's own id or reserved: fix its --node-id"
    )]
    NodeIdConflict {
        /// The id the dialer claimed.
        node: NodeId,
    },
    /// This node is shutting down.
    #[error("node is shutting down: connect to another node")]
    ShuttingDown,
    /// A node dialed without a TLS certificate, or with one that does not name the node id
    /// it claims.
    #[error(
        "peer claims node id {node} but its TLS certificate does not name node-{node}: give \
         each node the certificate issued for its id (`quasar certs node --id {node}`)"
    )]
    NodeCertificateMismatch {
        /// The id the dialer claimed.
        node: NodeId,
    },
    /// TLS is on and the client presented no certificate (and no auth is configured to let
    /// it in with a token).
    #[error(
        "this node requires a client certificate signed by the cluster CA: pass --cert and \
         --key (e.g. from `quasar certs client`)"
    )]
    ClientCertificateRequired,
    /// Authentication is configured and the client sent neither a bound certificate nor a
    /// token.
    #[error(
        "authentication required: present a client certificate bound to a role (--cert/--key) \
         or a bearer token (--token)"
    )]
    NoCredentials,
    /// The bearer token is not configured on this node.
    #[error("the bearer token is not valid: check --token against the node's [[auth.tokens]]")]
    BadToken,
    /// The client certificate is valid but its identity is bound to no role.
    #[error(
        "the client certificate names no identity bound to a role: add an \
         [[auth.identities]] entry for it, or use a token"
    )]
    UnboundCertificate,
}

/// The listener's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum HandshakeReply {
    /// The connection is open for frames.
    Accepted {
        /// The listener's cluster.
        cluster: ClusterId,
        /// The listener's node.
        node: NodeId,
        /// The listener's shard.
        shard: ShardId,
        /// The listener's protocol version.
        protocol_version: u16,
    },
    /// Refused; the listener closes the connection after sending this.
    Refused(HandshakeRefusal),
}
crate::wire_message!(HandshakeReply, FrameKind::HandshakeReply);

impl Handshake {
    /// The handshake a node's shard sends when dialing `target_shard` of a peer.
    pub fn from_node(cluster: ClusterId, node: NodeId, shard: ShardId, target: ShardId) -> Self {
        Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster,
            origin: Origin::Node { node, shard },
            target_shard: target,
            token: None,
        }
    }

    /// Decides whether `local` accepts this handshake.
    pub fn evaluate(&self, local: &LocalIdentity) -> HandshakeReply {
        match self.check(local) {
            Ok(()) => HandshakeReply::Accepted {
                cluster: local.cluster,
                node: local.node,
                shard: local.shard,
                protocol_version: PROTOCOL_VERSION,
            },
            Err(refusal) => HandshakeReply::Refused(refusal),
        }
    }

    fn check(&self, local: &LocalIdentity) -> Result<(), HandshakeRefusal> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(HandshakeRefusal::UnsupportedVersion {
                got: self.protocol_version,
                supported: PROTOCOL_VERSION,
            });
        }
        if self.cluster != local.cluster {
            return Err(HandshakeRefusal::ClusterMismatch {
                expected: local.cluster,
                got: self.cluster,
            });
        }
        if self.target_shard != local.shard {
            return Err(HandshakeRefusal::WrongShard {
                wanted: self.target_shard,
                reached: local.shard,
            });
        }
        if let Origin::Node { node, .. } = self.origin {
            if node == local.node || node.0 == 0 {
                return Err(HandshakeRefusal::NodeIdConflict { node });
            }
        }
        Ok(())
    }
}
