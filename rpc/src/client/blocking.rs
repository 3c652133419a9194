//! The blocking client on `std::net::TcpStream`, for `quasarctl` and tests: one request at a
//! time, one cached connection per (node, shard) address, every socket call bounded by a
//! timeout. Routing and retries are `Call`'s.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use rkyv::util::AlignedVec;

use super::{AttemptError, Call, ClientConfig, Next, RangeCache, Session, Target};
use crate::conn::RecvBuffer;
use crate::error::ClientError;
use crate::frame::{decode_body, encode_frame_limited, FrameKind, PROTOCOL_VERSION};
use crate::message::{
    ClientResponse, Handshake, HandshakeReply, KeyVersion, Operation, Origin, Reply, RequestError,
    RequestId, ScanPage, ScanRequest, VersionedValue,
};

struct BlockingConn {
    stream: TcpStream,
    buf: RecvBuffer,
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
        if let Err(reason) = self.connect(target) {
            return Ok(Err(AttemptError::NotSent(reason)));
        }
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        self.out.clear();
        encode_frame_limited(
            call.request_for(target, request_id),
            self.config.max_frame_len_bytes as u64,
            &mut self.out,
        )?;
        let Some(conn) = self.conns.get_mut(&target.addr) else {
            return Ok(Err(AttemptError::NotSent("no connection".into())));
        };
        if let Err(e) = conn.stream.write_all(&self.out) {
            // NOTE: a failed write may still have put part of the frame on the wire; a
            // partial frame is never applied, but a whole one might be.
            self.conns.remove(&target.addr);
            return Ok(Err(AttemptError::Lost(format!(
                "write to {}: {e}",
                target.addr
            ))));
        }
        loop {
            let response = read_frame(conn, |kind, body| {
                if kind != FrameKind::ClientResponse {
                    return Err(format!("server sent {kind:?}, not a response"));
                }
                decode_body::<ClientResponse>(body).map_err(|e| e.to_string())
            });
            match response {
                Ok(Ok(response)) if response.request_id == request_id => {
                    return Ok(Ok(response.result));
                }
                // An answer to an earlier, abandoned attempt: skip it.
                Ok(Ok(_stale)) => continue,
                Ok(Err(reason)) | Err(reason) => {
                    self.conns.remove(&target.addr);
                    return Ok(Err(AttemptError::Lost(format!(
                        "{}: {reason}",
                        target.addr
                    ))));
                }
            }
        }
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
        let mut conn = BlockingConn {
            stream,
            buf: RecvBuffer::new(&self.config.conn_config()),
        };
        let hello = Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster: self.config.cluster,
            origin: Origin::Client {
                session: self.session.id(),
            },
            target_shard: target.shard,
        };
        let mut out = AlignedVec::new();
        encode_frame_limited(&hello, 1 << 16, &mut out).map_err(|e| e.to_string())?;
        conn.stream
            .write_all(&out)
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
            .set_read_timeout(Some(self.config.request_timeout))
            .map_err(setup)?;
        self.conns.insert(addr, conn);
        Ok(())
    }
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
            Err(e) => return Err(e.to_string()),
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
