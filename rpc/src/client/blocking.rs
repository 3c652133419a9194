//! The blocking client on `std::net::TcpStream`, for `quasarctl` and tests: one request at a
//! time, one cached connection per (node, shard) address, every socket call bounded by a
//! timeout. Routing and retries are `Call`'s.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use rkyv::util::AlignedVec;

use std::time::Duration;

use super::{AttemptError, Call, ClientConfig, Next, RangeCache, Session, Target};
use crate::conn::RecvBuffer;
use crate::error::ClientError;
use crate::frame::{decode_body, encode_frame_limited, FrameKind, WireMessage};
use crate::message::{
    AdminOp, AdminReply, AdminRequest, AdminResponse, ClientResponse, HandshakeReply, KeyVersion,
    NodeId, Operation, Reply, RequestError, RequestId, ScanPage, ScanRequest, ShardId,
    VersionedValue,
};
use crate::transport::{shard_addr, Backoff};

struct BlockingConn {
    stream: BlockingStream,
    buf: RecvBuffer,
}

/// A plaintext or TLS socket; the timeouts live on the TCP socket underneath.
enum BlockingStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl BlockingStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            BlockingStream::Plain(s) => s,
            BlockingStream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Tls(s) => s.flush(),
        }
    }
}

/// A synchronous client. Not thread-safe by design (one per thread).
pub struct BlockingClient {
    config: ClientConfig,
    session: Session,
    cache: RangeCache,
    conns: HashMap<SocketAddr, BlockingConn>,
    next_request: u64,
    out: AlignedVec,
}

impl BlockingClient {
    pub fn new(config: ClientConfig) -> BlockingClient {
        BlockingClient {
            session: Session::new(config.session),
            config,
            cache: RangeCache::new(),
            conns: HashMap::new(),
            next_request: 1,
            out: AlignedVec::new(),
        }
    }

    pub fn cache(&self) -> &RangeCache {
        &self.cache
    }

    pub fn cache_mut(&mut self) -> &mut RangeCache {
        &mut self.cache
    }

    pub fn session(&self) -> crate::message::SessionId {
        self.session.id()
    }

    /// Runs one operation with routing and retries.
    pub fn execute(&mut self, op: Operation) -> Result<Reply, ClientError> {
        let mut call = Call::new(&self.config, &mut self.session, op);
        loop {
            let target = call.target(&self.config, &self.cache)?;
            let answer = self.attempt(&mut call, &target)?;
            match call.on_answer(&mut self.cache, &target, answer) {
                Next::Done(result) => return result,
                Next::Retry(delay) => std::thread::sleep(delay),
            }
        }
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        match self.execute(Operation::Get { key: key.to_vec() })? {
            Reply::Get(v) => Ok(v),
            other => Err(super::unexpected(other)),
        }
    }

    /// Writes `key` and returns its new version.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<KeyVersion, ClientError> {
        match self.execute(Operation::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })? {
            Reply::Written { version } => Ok(version),
            other => Err(super::unexpected(other)),
        }
    }

    /// Deletes `key`; returns the version of the delete and whether the key existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<(KeyVersion, bool), ClientError> {
        match self.execute(Operation::Delete { key: key.to_vec() })? {
            Reply::Deleted { version, found } => Ok((version, found)),
            other => Err(super::unexpected(other)),
        }
    }

    /// One page of `[start, end)`; continue from `resume_key`.
    pub fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        max_count: u32,
        max_bytes: u32,
    ) -> Result<ScanPage, ClientError> {
        match self.execute(Operation::Scan(ScanRequest {
            start: start.to_vec(),
            end: end.to_vec(),
            max_count,
            max_bytes,
        }))? {
            Reply::Scan(page) => Ok(page),
            other => Err(super::unexpected(other)),
        }
    }

    fn attempt(
        &mut self,
        call: &mut Call,
        target: &Target,
    ) -> Result<Result<Result<Reply, RequestError>, AttemptError>, ClientError> {
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        self.out.clear();
        encode_frame_limited(
            call.request_for(target, request_id),
            self.config.max_frame_len_bytes as u64,
            &mut self.out,
        )?;
        Ok(self
            .exchange::<ClientResponse>(target, request_id, |r| r.request_id)
            .map(|r| r.result))
    }

    /// Sends the frame in `self.out` to `target` and reads until the answer carrying
    /// `request_id` (answers to earlier, abandoned attempts are skipped).
    fn exchange<R: WireMessage>(
        &mut self,
        target: &Target,
        request_id: RequestId,
        id_of: impl Fn(&R) -> RequestId,
    ) -> Result<R, AttemptError> {
        self.connect(target).map_err(AttemptError::NotSent)?;
        let Some(conn) = self.conns.get_mut(&target.addr) else {
            return Err(AttemptError::NotSent("no connection".into()));
        };
        let addr = target.addr;
        if let Err(e) = conn
            .stream
            .write_all(&self.out)
            .and_then(|()| conn.stream.flush())
        {
            // NOTE: a failed write may still have put the whole frame on the wire.
            self.conns.remove(&addr);
            return Err(AttemptError::Lost(format!("write to {addr}: {e}")));
        }
        loop {
            let response = read_frame(conn, |kind, body| {
                if kind != R::KIND {
                    return Err(format!("server sent {kind:?}, not {:?}", R::KIND));
                }
                decode_body::<R>(body).map_err(|e| e.to_string())
            });
            match response {
                Ok(Ok(response)) if id_of(&response) == request_id => return Ok(response),
                Ok(Ok(_stale)) => continue,
                Ok(Err(reason)) | Err(reason) => {
                    self.conns.remove(&addr);
                    return Err(AttemptError::Lost(format!("{addr}: {reason}")));
                }
            }
        }
    }

    /// Runs an admin operation on `node`'s `shard`, following `NotLeader` hints and retrying
    /// retryable errors with backoff. Admin operations carry the epoch they expect, so a
    /// retry after a lost answer is refused rather than applied twice; a lost answer on the
    /// last attempt is still reported as `Ambiguous`.
    pub fn admin(
        &mut self,
        node: NodeId,
        shard: ShardId,
        op: AdminOp,
    ) -> Result<AdminReply, ClientError> {
        let mut node = node;
        let mut backoff = Backoff::new(
            self.config.backoff_min,
            self.config.backoff_max,
            self.session.id().0,
        );
        let mut ambiguous = None;
        let mut last = String::new();
        let attempts = self.config.max_attempts.max(1);
        let mut request = AdminRequest {
            request_id: RequestId(0),
            op,
        };
        for _ in 0..attempts {
            let delay = match self.admin_once(node, shard, &mut request)? {
                Ok(AdminResponse {
                    result: Ok(reply), ..
                }) => return Ok(reply),
                Ok(AdminResponse {
                    result:
                        Err(RequestError::NotLeader {
                            leader_hint: Some(leader),
                            ..
                        }),
                    ..
                }) if leader != node => {
                    last = format!("node {node} is not the leader");
                    node = leader;
                    Duration::ZERO
                }
                Ok(AdminResponse { result: Err(e), .. }) if e.is_retryable() => {
                    last = e.to_string();
                    backoff.next_delay()
                }
                Ok(AdminResponse { result: Err(e), .. }) => return Err(ClientError::Failed(e)),
                Err(AttemptError::NotSent(reason)) => {
                    last = reason;
                    backoff.next_delay()
                }
                Err(AttemptError::Lost(reason)) => {
                    ambiguous = Some(reason.clone());
                    last = reason;
                    backoff.next_delay()
                }
            };
            std::thread::sleep(delay);
        }
        Err(match ambiguous {
            Some(last) => ClientError::Ambiguous { attempts, last },
            None => ClientError::Unavailable { attempts, last },
        })
    }

    /// One attempt of an admin request on `node`'s `shard` (a fresh request id each time):
    /// the server's answer, or why none came. No retry, no redirect: for callers with their
    /// own routing (`client::admin`). `Err` only when the request cannot be encoded or
    /// `node` has no address.
    pub fn admin_once(
        &mut self,
        node: NodeId,
        shard: ShardId,
        request: &mut AdminRequest,
    ) -> Result<Result<AdminResponse, AttemptError>, ClientError> {
        let base = self
            .config
            .nodes
            .iter()
            .find(|(n, _)| *n == node)
            .map(|p| p.1)
            .ok_or(ClientError::NoNodes)?;
        let target = Target {
            node,
            shard,
            addr: shard_addr(base, shard),
            route: None,
        };
        request.request_id = RequestId(self.next_request);
        self.next_request += 1;
        self.out.clear();
        encode_frame_limited(
            &*request,
            self.config.max_frame_len_bytes as u64,
            &mut self.out,
        )?;
        Ok(self.exchange::<AdminResponse>(&target, request.request_id, |r| r.request_id))
    }

    fn connect(&mut self, target: &Target) -> Result<(), String> {
        if self.conns.contains_key(&target.addr) {
            return Ok(());
        }
        let addr = target.addr;
        let stream = TcpStream::connect_timeout(&addr, self.config.io_timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let setup = |e: std::io::Error| format!("socket options on {addr}: {e}");
        stream.set_nodelay(true).map_err(setup)?;
        stream
            .set_write_timeout(Some(self.config.io_timeout))
            .map_err(setup)?;
        stream
            .set_read_timeout(Some(self.config.io_timeout))
            .map_err(setup)?;
        let stream = match &self.config.tls {
            None => BlockingStream::Plain(stream),
            Some(tls) => {
                let name = crate::tls::server_name(target.node, addr);
                let session =
                    rustls::ClientConnection::new(std::sync::Arc::clone(&tls.config), name)
                        .map_err(|e| format!("TLS to {addr}: {e}"))?;
                let mut tls = rustls::StreamOwned::new(session, stream);
                // Run the TLS handshake now (bounded by the socket timeouts), so that a bad
                // certificate is reported as such rather than as a failed request.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                        format!(
                            "TLS handshake with {addr} failed: {e}; check --cacert, --cert and \
                             --key (certificates signed by the cluster CA)"
                        )
                    })?;
                }
                BlockingStream::Tls(Box::new(tls))
            }
        };
        let mut conn = BlockingConn {
            stream,
            buf: RecvBuffer::new(&self.config.conn_config()),
        };
        let hello = self.config.hello(self.session.id(), target);
        let mut out = AlignedVec::new();
        encode_frame_limited(&hello, 1 << 16, &mut out).map_err(|e| e.to_string())?;
        conn.stream
            .write_all(&out)
            .and_then(|()| conn.stream.flush())
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        let reply = read_frame(&mut conn, |kind, body| {
            if kind != FrameKind::HandshakeReply {
                return Err(format!("server sent {kind:?}, not a handshake reply"));
            }
            decode_body::<HandshakeReply>(body).map_err(|e| e.to_string())
        })??;
        match reply {
            HandshakeReply::Accepted { cluster, .. } if cluster == self.config.cluster => {}
            HandshakeReply::Accepted { cluster, .. } => {
                return Err(format!(
                    "{addr} is in cluster {cluster}, not {}",
                    self.config.cluster
                ))
            }
            HandshakeReply::Refused(reason) => return Err(format!("{addr} refused: {reason}")),
        }
        conn.stream
            .tcp()
            .set_read_timeout(Some(self.config.request_timeout))
            .map_err(setup)?;
        self.conns.insert(addr, conn);
        Ok(())
    }
}

/// A frame error in words; a TLS record where a frame should be (a plaintext client talking
/// to a TLS node: the node answers with an alert) says what to do.
fn explain(e: crate::frame::FrameError) -> String {
    if let crate::frame::FrameError::BadMagic { got } = e {
        let [content_type, major, ..] = got.to_le_bytes();
        if (content_type == 0x15 || content_type == 0x16) && major == 0x03 {
            return "the node answered in TLS: pass --cacert (and --cert/--key or --token)".into();
        }
    }
    e.to_string()
}

/// Reads one frame (bounded by the socket's read timeout) and hands it to `f`.
fn read_frame<T>(
    conn: &mut BlockingConn,
    f: impl FnOnce(FrameKind, &[u8]) -> T,
) -> Result<T, String> {
    loop {
        match conn.buf.next_frame() {
            Ok(Some(frame)) => return Ok(f(frame.kind, frame.body)),
            Ok(None) => {}
            Err(e) => return Err(explain(e)),
        }
        let spare = conn.buf.spare_mut();
        match conn.stream.read(spare) {
            Ok(0) => return Err("connection closed by the server".into()),
            Ok(n) => conn.buf.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
}
