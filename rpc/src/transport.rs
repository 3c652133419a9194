//! The transport of one shard: its listener (base port + shard index), the inbound
//! connections it accepted, and one outbound connection per destination `(node, shard)` with
//! handshake, reconnection (exponential backoff with jitter) and a bounded queue. It also owns
//! the routing rule `shard_for_group`, shared by nodes and clients.
//!
//! It never interprets Raft or client messages: received frames go to a `FrameHandler`
//! (the shard runtime), which reads them in place and answers through the connection.
//!
//! ```text
//!   send_raft(dest, batch) --encode--> Conn.pending(dest)   (dropped + counted when full)
//!   flush()  once per event-loop turn: kick every dirty destination's writer task
//!   peer task per dest:  connect -> Handshake -> HandshakeReply -> { writer task, recv loop }
//!                        on any failure: close, sleep backoff (jittered), redial
//!   accept loop:         accept -> [TLS handshake] -> read Handshake (io_timeout)
//!                        -> evaluate + authenticate -> reply -> recv loop -> handler;
//!                        Refused: log reason, reply, close
//! ```
//!
//! With TLS (`TransportConfig::tls`), every connection runs a TLS handshake first; peers dial
//! with their node certificate and check the listener's certificate names `node-<dest>`;
//! the listener checks the dialer's certificate names the node it claims. Then the
//! `AccessPolicy` turns the certificate or the handshake's token into the connection's
//! `Principal` (`PeerInfo::principal`), which the handler checks per request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use glommio::net::TcpListener;

use crate::auth::{AccessPolicy, AuthError, AuthMethod, Principal, Role};
use crate::conn::{Conn, ConnConfig, Delivery, InFrame, PushError, Pushed, RecvBuffer};
use crate::error::TransportError;
use crate::frame::{access_body, decode_body, EncodeError, FrameKind};
use crate::message::{
    ClusterId, GroupId, Handshake, HandshakeRefusal, HandshakeReply, LocalIdentity, NodeId, Origin,
    RaftBatch, ShardId,
};
use crate::tls::{node_name, NodeTls};

/// The shard of every node that hosts `group`: `splitmix64(group) % shards`. Every node and
/// every client computes the same answer, so a sender can dial the owning shard directly.
///
/// # Panics
/// If `shards` is 0 (a configuration bug).
pub fn shard_for_group(group: GroupId, shards: u32) -> ShardId {
    assert!(shards > 0, "a node has at least one shard");
    ShardId((splitmix64(group.0) % u64::from(shards)) as u32)
}

/// The port of `shard` on a node whose shard 0 listens on `base_port`.
///
/// # Panics
/// If the port overflows (a configuration bug: base port + shards must fit in 16 bits).
pub fn shard_port(base_port: u16, shard: ShardId) -> u16 {
    u16::try_from(u32::from(base_port) + shard.0)
        .unwrap_or_else(|_| panic!("base port {base_port} + shard {shard} exceeds 65535"))
}

/// The address of `shard` on a node whose shard 0 listens on `base`.
pub fn shard_addr(base: SocketAddr, shard: ShardId) -> SocketAddr {
    SocketAddr::new(base.ip(), shard_port(base.port(), shard))
}

/// SplitMix64's finalizer (Steele, Lea, Flood 2014): a fixed, well-mixed hash; changing it
/// would move every group to another shard, so it is part of the protocol.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Exponential backoff with "equal jitter": each delay is drawn uniformly from
/// `[d/2, d]` where `d` doubles from `min` up to `max`, so that peers that lost a node at the
/// same moment do not redial in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        assert!(
            min > Duration::ZERO && min <= max,
            "backoff bounds {min:?}..{max:?}"
        );
        Backoff {
            min,
            max,
            current: min,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next delay to wait; the following one will be about twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let jitter_ns = self.rng.u64(0..=(d - half).as_nanos() as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The largest handshake frame body a listener reads (a handshake is well under 1 KiB, a
/// bearer token included); a larger announced length closes the connection.
pub const MAX_HANDSHAKE_BYTES: usize = 64 << 10;

/// Configuration of one shard's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub cluster: ClusterId,
    pub node: NodeId,
    pub shard: ShardId,
    pub conn: ConnConfig,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TLS on every connection (`None`: plaintext, for loopback development).
    pub tls: Option<NodeTls>,
    /// Who may do what; empty: everything is allowed.
    pub access: std::sync::Arc<AccessPolicy>,
    /// The cluster's members: a client connection presenting one of their certificates is
    /// that node's HTTP gateway, which checked its caller's role itself (`admin`).
    pub members: Vec<NodeId>,
}

impl TransportConfig {
    pub fn new(cluster: ClusterId, node: NodeId, shard: ShardId) -> TransportConfig {
        TransportConfig {
            cluster,
            node,
            shard,
            conn: ConnConfig::default(),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            tls: None,
            access: std::sync::Arc::new(AccessPolicy::default()),
            members: Vec::new(),
        }
    }
}

/// Who is at the other end of an accepted (or dialed) connection, as its handshake said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub origin: Origin,
    /// Who it authenticated as (a peer node is `admin`; with no policy, everyone is).
    pub principal: Principal,
}

/// Receives every frame after the handshake, on any connection of this shard. Called from the
/// connection's receive loop: the body is read in place (`access_body`) and must not be kept;
/// answers go to `conn` with `Delivery::Reliable`, and `recv_loop` flushes them at once.
/// Returning an error closes that connection only.
pub trait FrameHandler {
    fn on_frame(
        &self,
        peer: &PeerInfo,
        frame: InFrame<'_>,
        conn: &Rc<Conn>,
    ) -> Result<(), crate::frame::FrameError>;
}

/// A destination of outbound Raft traffic: one shard of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub node: NodeId,
    pub shard: ShardId,
}

/// Counters of the transport, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    pub accepted: u64,
    pub handshakes_refused_in: u64,
    pub handshakes_refused_out: u64,
    pub connects: u64,
    pub frames_closed_bad: u64,
    /// Raft batches not queued because the destination's queue was full or it was down.
    pub raft_dropped: u64,
}

struct Peer {
    addr: SocketAddr,
    conn: RefCell<Option<Rc<Conn>>>,
    dirty: Cell<bool>,
}

/// One shard's transport. Lives on the shard's executor; cheap to share as `Rc`.
pub struct Transport {
    config: TransportConfig,
    handler: Rc<dyn FrameHandler>,
    peers: RefCell<HashMap<Destination, Rc<Peer>>>,
    inbound: RefCell<Vec<Weak<Conn>>>,
    stats: Cell<TransportStats>,
    stopped: Cell<bool>,
    seed: Cell<u64>,
}

impl Transport {
    pub fn new(config: TransportConfig, handler: Rc<dyn FrameHandler>) -> Rc<Transport> {
        let seed = splitmix64(config.node.0 ^ (u64::from(config.shard.0) << 48));
        Rc::new(Transport {
            config,
            handler,
            peers: RefCell::new(HashMap::new()),
            inbound: RefCell::new(Vec::new()),
            stats: Cell::new(TransportStats::default()),
            stopped: Cell::new(false),
            seed: Cell::new(seed),
        })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    pub fn stats(&self) -> TransportStats {
        self.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut TransportStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn local_identity(&self) -> LocalIdentity {
        LocalIdentity {
            cluster: self.config.cluster,
            node: self.config.node,
            shard: self.config.shard,
        }
    }

    /// Binds this shard's listener on `addr` and starts accepting; returns the bound address
    /// (useful with port 0).
    pub fn listen(self: &Rc<Self>, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let listener = TcpListener::bind(addr).map_err(|e| TransportError::Listen {
            addr,
            source: e.into(),
        })?;
        let local = listener.local_addr().map_err(|e| TransportError::Listen {
            addr,
            source: e.into(),
        })?;
        let this = Rc::clone(self);
        glommio::spawn_local(async move { this.accept_loop(listener).await }).detach();
        Ok(local)
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        // NOTE: accept is polled with a timeout only so that `stop` is noticed.
        while !self.stopped.get() {
            let accepted = glommio::timer::timeout(Duration::from_millis(200), async {
                Ok(listener.accept().await)
            })
            .await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_timeout) => continue,
            };
            if self.stopped.get() {
                break;
            }
            self.count(|s| s.accepted += 1);
            let this = Rc::clone(&self);
            // NOTE: the TLS handshake runs in the connection's own task, so that a slow or
            // silent dialer never holds up the accept loop.
            glommio::spawn_local(async move {
                let conn = match &this.config.tls {
                    None => Conn::new(stream, this.config.conn.clone()),
                    Some(tls) => {
                        Conn::accept_tls(stream, this.config.conn.clone(), &tls.acceptor).await
                    }
                };
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping an accepted connection");
                        this.count(|s| s.handshakes_refused_in += 1);
                        return;
                    }
                };
                this.inbound.borrow_mut().retain(|w| w.strong_count() > 0);
                this.inbound.borrow_mut().push(Rc::downgrade(&conn));
                this.serve_inbound(conn).await
            })
            .detach();
        }
    }

    /// Who the dialer is: a node must hold a certificate naming the id it claims (with TLS);
    /// a client is judged by the access policy.
    fn authenticate(&self, conn: &Conn, hello: &Handshake) -> Result<Principal, HandshakeRefusal> {
        match hello.origin {
            Origin::Node { node, .. } => {
                if self.config.tls.is_some()
                    && !conn.peer_certificate().is_some_and(|c| c.names_node(node))
                {
                    return Err(HandshakeRefusal::NodeCertificateMismatch { node });
                }
                Ok(Principal {
                    name: node_name(node),
                    role: Role::Admin,
                    method: AuthMethod::Node,
                })
            }
            Origin::Client { .. } => {
                if self.config.tls.is_some() {
                    if let Some(node) = self
                        .config
                        .members
                        .iter()
                        .copied()
                        .find(|n| conn.peer_certificate().is_some_and(|c| c.names_node(*n)))
                    {
                        return Ok(Principal {
                            name: format!("{} (HTTP gateway)", node_name(node)),
                            role: Role::Admin,
                            method: AuthMethod::Node,
                        });
                    }
                }
                let access = &self.config.access;
                if access.is_open()
                    && self.config.tls.is_some()
                    && conn.peer_certificate().is_none()
                {
                    return Err(HandshakeRefusal::ClientCertificateRequired);
                }
                access
                    .authenticate(conn.peer_certificate(), hello.token.as_deref())
                    .map_err(|e| match e {
                        AuthError::NoCredentials => HandshakeRefusal::NoCredentials,
                        AuthError::BadToken => HandshakeRefusal::BadToken,
                        AuthError::UnboundCertificate => HandshakeRefusal::UnboundCertificate,
                    })
            }
        }
    }

    async fn serve_inbound(self: Rc<Self>, conn: Rc<Conn>) {
        // NOTE: until its handshake is accepted, a connection gets a 4 KiB buffer and frames
        // of at most `MAX_HANDSHAKE_BYTES`: thousands of dialers that never finish their
        // handshake cost little memory (not a full receive buffer, let alone a maximal frame
        // announced by a header each).
        let mut buf = RecvBuffer::new(&ConnConfig {
            max_frame_len_bytes: MAX_HANDSHAKE_BYTES.min(self.config.conn.max_frame_len_bytes),
            recv_buf_bytes: 0,
            ..self.config.conn.clone()
        });
        let peer = conn.peer();
        let hello = glommio::timer::timeout(self.config.conn.io_timeout, async {
            Ok(conn
                .read_frame(&mut buf, |f| {
                    if f.kind != FrameKind::Handshake {
                        return Err(format!("first frame is {:?}, not a handshake", f.kind));
                    }
                    decode_body::<Handshake>(f.body).map_err(|e| e.to_string())
                })
                .await)
        })
        .await;
        let hello = match hello {
            Ok(Ok(Ok(hello))) => hello,
            Ok(Ok(Err(reason))) => {
                tracing::warn!(%peer, %reason, "refusing connection: bad handshake");
                self.count(|s| s.handshakes_refused_in += 1);
                conn.close();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "connection lost during handshake");
                conn.close();
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, timeout = ?self.config.conn.io_timeout,
                    "refusing connection: no handshake in time");
                conn.close();
                return;
            }
        };
        let mut reply = hello.evaluate(&self.local_identity());
        let mut principal = None;
        if let HandshakeReply::Accepted { .. } = reply {
            match self.authenticate(&conn, &hello) {
                Ok(p) => principal = Some(p),
                Err(refusal) => reply = HandshakeReply::Refused(refusal),
            }
        }
        let pushed = conn.push(Delivery::Reliable, &reply);
        if let HandshakeReply::Refused(reason) = reply {
            tracing::warn!(%peer, origin = ?hello.origin, %reason, "refusing connection");
            self.count(|s| s.handshakes_refused_in += 1);
            // NOTE: best effort: the dialer learns the reason if the reply gets through.
            let _ = conn.flush().await;
            conn.close();
            return;
        }
        if let Err(e) = pushed {
            tracing::warn!(%peer, error = %e, "cannot answer handshake");
            conn.close();
            return;
        }
        let Some(principal) = principal else {
            conn.close();
            return;
        };
        tracing::debug!(%peer, origin = ?hello.origin, %principal, "accepted connection");
        buf.set_limits(&self.config.conn);
        let info = PeerInfo {
            addr: peer,
            origin: hello.origin,
            principal,
        };
        self.run_conn(conn, buf, info).await;
    }

    /// Runs a connection after its handshake: a writer task for kicked frames and the receive
    /// loop in this task, until either fails.
    async fn run_conn(&self, conn: Rc<Conn>, mut buf: RecvBuffer, info: PeerInfo) {
        let writer = glommio::spawn_local(Rc::clone(&conn).writer_loop()).detach();
        let handler = Rc::clone(&self.handler);
        let result = conn
            .recv_loop(&mut buf, |frame| {
                handler
                    .on_frame(&info, frame, &conn)
                    .map_err(|source| TransportError::Frame {
                        peer: info.addr,
                        source,
                    })
            })
            .await;
        if let Err(TransportError::Frame { .. }) = result {
            self.count(|s| s.frames_closed_bad += 1);
        }
        conn.close();
        // NOTE: the writer ends with `Closed` once the connection is closed.
        let _ = writer.await;
    }

    /// Registers a destination and starts dialing it (`addr` is the address of that shard).
    /// Frames sent to it before the handshake completes are dropped (Raft retransmits).
    pub fn add_peer(self: &Rc<Self>, dest: Destination, addr: SocketAddr) {
        let peer = Rc::new(Peer {
            addr,
            conn: RefCell::new(None),
            dirty: Cell::new(false),
        });
        if let Some(old) = self.peers.borrow_mut().insert(dest, Rc::clone(&peer)) {
            if let Some(c) = old.conn.borrow_mut().take() {
                c.close();
            }
        }
        let this = Rc::clone(self);
        glommio::spawn_local(async move { this.peer_loop(dest, peer).await }).detach();
    }

    /// Forgets a destination and closes its connection.
    pub fn remove_peer(&self, dest: Destination) {
        if let Some(peer) = self.peers.borrow_mut().remove(&dest) {
            if let Some(c) = peer.conn.borrow_mut().take() {
                c.close();
            }
        }
    }

    /// Whether the destination has a connection with a completed handshake.
    pub fn is_connected(&self, dest: Destination) -> bool {
        self.peers
            .borrow()
            .get(&dest)
            .and_then(|p| p.conn.borrow().as_ref().map(|c| !c.is_closed()))
            .unwrap_or(false)
    }

    /// The outbound connection of a destination, if connected (for stats and tests).
    pub fn peer_conn(&self, dest: Destination) -> Option<Rc<Conn>> {
        self.peers.borrow().get(&dest)?.conn.borrow().clone()
    }

    fn next_seed(&self) -> u64 {
        let s = splitmix64(self.seed.get());
        self.seed.set(s);
        s
    }

    async fn peer_loop(self: Rc<Self>, dest: Destination, peer: Rc<Peer>) {
        let mut backoff = Backoff::new(
            self.config.backoff_min,
            self.config.backoff_max,
            self.next_seed(),
        );
        loop {
            let current = self
                .peers
                .borrow()
                .get(&dest)
                .is_some_and(|p| Rc::ptr_eq(p, &peer));
            if self.stopped.get() || !current {
                return;
            }
            match self.dial(dest, peer.addr).await {
                Ok((conn, buf)) => {
                    backoff.reset();
                    self.count(|s| s.connects += 1);
                    *peer.conn.borrow_mut() = Some(Rc::clone(&conn));
                    let info = PeerInfo {
                        addr: peer.addr,
                        origin: Origin::Node {
                            node: dest.node,
                            shard: dest.shard,
                        },
                        principal: Principal {
                            name: node_name(dest.node),
                            role: Role::Admin,
                            method: AuthMethod::Node,
                        },
                    };
                    self.run_conn(Rc::clone(&conn), buf, info).await;
                    let mut slot = peer.conn.borrow_mut();
                    if slot.as_ref().is_some_and(|c| Rc::ptr_eq(c, &conn)) {
                        *slot = None;
                    }
                }
                Err(e) => {
                    if let TransportError::HandshakeRefused { .. } = e {
                        self.count(|s| s.handshakes_refused_out += 1);
                        tracing::warn!(node = %dest.node, shard = %dest.shard, error = %e,
                            "peer refused our handshake");
                    } else {
                        tracing::debug!(node = %dest.node, shard = %dest.shard, error = %e,
                            "cannot reach peer");
                    }
                }
            }
            glommio::timer::sleep(backoff.next_delay()).await;
        }
    }

    /// Connects, sends our handshake and checks the reply, all within `io_timeout` each.
    async fn dial(
        &self,
        dest: Destination,
        addr: SocketAddr,
    ) -> Result<(Rc<Conn>, RecvBuffer), TransportError> {
        // The peer sends nothing back on this link (it answers on its own): being idle is
        // normal here, not a sign of a dead peer.
        let config = ConnConfig {
            silent_peer: true,
            ..self.config.conn.clone()
        };
        let conn = match &self.config.tls {
            None => Conn::connect(addr, config).await?,
            Some(tls) => {
                let name = crate::tls::server_name(dest.node, addr);
                Conn::connect_tls(addr, config, &tls.connector, name).await?
            }
        };
        let hello = Handshake::from_node(
            self.config.cluster,
            self.config.node,
            self.config.shard,
            dest.shard,
        );
        let mut buf = RecvBuffer::new(&self.config.conn);
        let result = handshake(&conn, &mut buf, &hello, |reply| match reply {
            HandshakeReply::Accepted {
                cluster,
                node,
                shard,
                ..
            } => {
                if cluster != self.config.cluster {
                    Err(format!(
                        "peer is in cluster {cluster}, we are in cluster {}",
                        self.config.cluster
                    ))
                } else if node != dest.node || shard != dest.shard {
                    Err(format!(
                        "expected node {} shard {} at {addr}, found node {node} shard {shard}",
                        dest.node, dest.shard
                    ))
                } else {
                    Ok(())
                }
            }
            HandshakeReply::Refused(reason) => Err(reason.to_string()),
        })
        .await;
        match result {
            Ok(()) => Ok((conn, buf)),
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// Queues a Raft batch for its destination; it leaves at the next `flush` (once per turn).
    /// Returns `Dropped` (counted) when the destination is unknown, down, or its queue is full.
    pub fn send_raft(&self, dest: Destination, batch: &RaftBatch) -> Result<Pushed, EncodeError> {
        let peer = self.peers.borrow().get(&dest).cloned();
        let conn = peer.as_ref().and_then(|p| p.conn.borrow().clone());
        let (Some(peer), Some(conn)) = (peer, conn) else {
            self.count(|s| s.raft_dropped += 1);
            return Ok(Pushed::Dropped);
        };
        match conn.push(Delivery::Lossy, batch) {
            Ok(Pushed::Queued) => {
                peer.dirty.set(true);
                Ok(Pushed::Queued)
            }
            Ok(Pushed::Dropped) | Err(PushError::Transport(_)) => {
                self.count(|s| s.raft_dropped += 1);
                Ok(Pushed::Dropped)
            }
            Err(PushError::Encode(e)) => Err(e),
        }
    }

    /// Hands every destination's queued frames to its writer task; call once per turn of the
    /// event loop, after the turn's `send_raft` calls.
    pub fn flush(&self) {
        for peer in self.peers.borrow().values() {
            if peer.dirty.replace(false) {
                if let Some(conn) = peer.conn.borrow().as_ref() {
                    conn.kick();
                }
            }
        }
    }

    /// Stops accepting and dialing and closes every connection.
    pub fn stop(&self) {
        self.stopped.set(true);
        for (_, peer) in self.peers.borrow_mut().drain() {
            if let Some(c) = peer.conn.borrow_mut().take() {
                c.close();
            }
        }
        for w in self.inbound.borrow_mut().drain(..) {
            if let Some(c) = w.upgrade() {
                c.close();
            }
        }
    }
}

/// The dialer's side of the handshake on a fresh connection: sends `hello`, reads the reply
/// within `io_timeout` and lets `check` judge it. Shared with the client library.
pub async fn handshake(
    conn: &Conn,
    buf: &mut RecvBuffer,
    hello: &Handshake,
    check: impl FnOnce(HandshakeReply) -> Result<(), String>,
) -> Result<(), TransportError> {
    let peer = conn.peer();
    let timeout = conn.config().io_timeout;
    conn.push(Delivery::Reliable, hello).map_err(|e| match e {
        PushError::Transport(t) => t,
        PushError::Encode(e) => TransportError::HandshakeRefused {
            peer,
            reason: format!("cannot encode our handshake: {e}"),
        },
    })?;
    let reply = glommio::timer::timeout(timeout, async {
        if let Err(e) = conn.flush().await {
            return Ok(Err(e));
        }
        Ok(conn
            .read_frame(buf, |f| {
                if f.kind != FrameKind::HandshakeReply {
                    return Err(format!("peer answered {:?}, not a handshake reply", f.kind));
                }
                // Validate in place, then take the small owned value.
                access_body::<HandshakeReply>(f.body)
                    .and_then(|_| decode_body::<HandshakeReply>(f.body))
                    .map_err(|e| e.to_string())
            })
            .await)
    })
    .await;
    let reply = match reply {
        Ok(Ok(Ok(reply))) => reply,
        Ok(Ok(Err(reason))) => return Err(TransportError::HandshakeRefused { peer, reason }),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(TransportError::Timeout {
                peer,
                what: "handshaking",
                timeout,
            })
        }
    };
    check(reply).map_err(|reason| TransportError::HandshakeRefused { peer, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_for_group_is_stable_and_spread() {
        // Fixed values: every node and client must agree, across releases.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let shards = 8;
        let mut counts = [0u32; 8];
        for g in 0..8000 {
            let s = shard_for_group(GroupId(g), shards);
            assert_eq!(s, shard_for_group(GroupId(g), shards));
            counts[s.0 as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn shard_port_adds_the_index() {
        assert_eq!(shard_port(7000, ShardId(3)), 7003);
        let base: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(shard_addr(base, ShardId(2)).port(), 7002);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut b = Backoff::new(min, max, 7);
        let mut bound = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= bound / 2 && d <= bound,
                "{d:?} outside [{:?}, {bound:?}]",
                bound / 2
            );
            bound = (bound * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
        // Two peers with different seeds do not redial in lockstep.
        let mut a = Backoff::new(min, max, 1);
        let mut c = Backoff::new(min, max, 2);
        let same = (0..8).filter(|_| a.next_delay() == c.next_delay()).count();
        assert!(same < 8);
    }
}
