//! One glommio TCP connection: the socket, its reused aligned receive buffer with the
//! `FrameDecoder`, and its bounded outbound byte queue. It never interprets a frame body
//! beyond the handshake; `transport` and `client` decide what frames mean.
//!
//! ```text
//!   push_with(Lossy|Reliable, encode) --> pending: AlignedVec --(flush | writer task)--> socket
//!   socket --> RecvBuffer [start..end) --FrameDecoder--> InFrame { kind, body (aligned) }
//! ```
//!
//! Writes: frames are encoded straight into one contiguous pending buffer, so everything queued
//! during a turn of the event loop leaves in one `send` (glommio 0.9's `TcpStream` has no
//! vectored write; a contiguous buffer gives the same one-syscall-per-turn). The task that
//! produced the bytes may write them at once with `flush` (no task hop on the request/response
//! path); otherwise `kick` wakes the connection's writer task, which runs after the current
//! task yields and therefore sends everything queued in this turn together.
//!
//! Memory is bounded: above `queue_limit_bytes` a `Lossy` (Raft) frame is dropped and counted
//! (Raft retransmits); a `Reliable` frame (a client response) is never dropped silently: above
//! `hard_limit_bytes` the connection is closed with `TransportError::SlowPeer`, so the client
//! sees a closed connection and reports its in-flight writes as ambiguous. Buffers follow
//! use: send buffers start empty, and a send or receive buffer grown by a burst is halved
//! back (to 64 KiB, or the configured receive size) after `SHRINK_AFTER` writes or frames in
//! a row that each used under a quarter of it.
//!
//! Every socket wait is bounded: reads by `idle_timeout`, writes and connects by `io_timeout`
//! (glommio's own socket timeouts, armed only when a call would wait). A link on which the
//! peer never sends (`silent_peer`: the Raft link a node dialed) waits again after an idle
//! read instead of closing.
//!
//! TLS: a connection is plaintext (the socket itself, read with `try_recv` first, see `fill`)
//! or TLS (`futures_rustls` over a [`Socket`], which keeps the same read trick underneath
//! the record layer). The plaintext path pays one enum branch per read and write; only the
//! TLS path goes through rustls. The TLS handshake runs in `accept_tls` / `connect_tls`,
//! within `io_timeout`, before the frame handshake.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;

/// The buffer type frames are encoded into (`push_with`'s argument), re-exported so that
/// callers need no direct rkyv dependency.
pub use rkyv::util::AlignedVec;

use crate::error::TransportError;
use crate::frame::{
    encode_frame_limited, Decoded, EncodeError, Frame, FrameDecoder, FrameError, FrameKind,
    WireMessage, BODY_ALIGN,
};
use crate::tls::PeerCertificate;

/// A glommio socket whose reads first take the bytes already waiting with a non-blocking
/// `recv` and only then wait for readiness through glommio, reading one byte (see the NOTE
/// in `Conn::fill`): the TLS record layer reads through it.
pub struct Socket {
    stream: TcpStream,
    fd: std::os::fd::RawFd,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(result) = try_recv_fd(this.fd, buf) {
            return Poll::Ready(result);
        }
        match Pin::new(&mut this.stream).poll_read(cx, &mut buf[..1]) {
            Poll::Ready(Ok(1)) => {
                let more = try_recv_fd(this.fd, &mut buf[1..])
                    .transpose()?
                    .unwrap_or(0);
                Poll::Ready(Ok(1 + more))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// A non-blocking `recv` straight on a socket: `None` when no byte is waiting.
fn try_recv_fd(fd: std::os::fd::RawFd, into: &mut [u8]) -> Option<std::io::Result<usize>> {
    if into.is_empty() {
        return Some(Ok(0));
    }
    match nix::sys::socket::recv(fd, into, nix::sys::socket::MsgFlags::MSG_DONTWAIT) {
        Ok(n) => Some(Ok(n)),
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => None,
        Err(e) => Some(Err(e.into())),
    }
}

/// The byte stream of a connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<Socket>>),
}

impl Stream {
    fn poll_write(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    /// TLS keeps written records in rustls until flushed; plaintext has nothing to flush.
    fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
}

/// Sizes and timeouts of one connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Largest accepted frame body; a larger announced length closes the connection before
    /// any allocation.
    pub max_frame_len_bytes: usize,
    /// Bound on connecting, on the handshake and on each wait for the socket to take bytes.
    pub io_timeout: Duration,
    /// A connection on which nothing arrives for this long is closed (a peer's dialer sends
    /// liveness batches; clients reconnect on demand). Bounds every read wait.
    pub idle_timeout: Duration,
    /// Nothing is expected to arrive (a Raft link this side dialed: the peer answers on a
    /// link of its own). A read wait that reaches `idle_timeout` is waited again instead of
    /// closing the connection; a dead peer still shows as a closed socket or as a write
    /// that times out.
    pub silent_peer: bool,
    /// Above this many queued bytes, `Lossy` frames are dropped.
    pub queue_limit_bytes: usize,
    /// Above this many queued bytes, a `Reliable` frame closes the connection.
    pub hard_limit_bytes: usize,
    /// Initial size of the receive buffer (it grows up to one maximal frame).
    pub recv_buf_bytes: usize,
}

impl Default for ConnConfig {
    fn default() -> ConnConfig {
        ConnConfig {
            max_frame_len_bytes: 16 << 20,
            io_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            silent_peer: false,
            queue_limit_bytes: 8 << 20,
            hard_limit_bytes: 64 << 20,
            recv_buf_bytes: 256 << 10,
        }
    }
}

/// What may happen to a frame when the peer is slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Raft traffic: dropped (and counted) when the queue is over its limit.
    Lossy,
    /// Client requests and responses, handshakes: queued, or the connection is closed.
    Reliable,
}

/// What `push_with` did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was over its limit; the frame was dropped and counted.
    Dropped,
}

/// Counters of one connection, read by metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    pub frames_queued: u64,
    pub frames_dropped: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
}

/// One received frame: its kind and its body, aligned to `frame::BODY_ALIGN` (ready for
/// `access_body`), valid until the next call on the `RecvBuffer`.
#[derive(Debug)]
pub struct InFrame<'a> {
    pub kind: FrameKind,
    pub body: &'a [u8],
}

/// The reused receive buffer of one connection: bytes `[start, end)` are received and not yet
/// decoded. Frames are decoded in place: every frame is a multiple of `BODY_ALIGN` long and
/// `start` only moves by whole frames or back to 0, so bodies stay aligned. A body found at an
/// unaligned address anyway (a bug) is copied into `scratch` rather than refused.
pub struct RecvBuffer {
    buf: AlignedVec,
    scratch: AlignedVec,
    start: usize,
    end: usize,
    /// Bytes the decoder asked for the current incomplete frame (0: unknown yet).
    needed: usize,
    decoder: FrameDecoder,
    max_buf_bytes: usize,
    /// The size the buffer starts at and shrinks back to.
    base_len: usize,
    /// The most bytes held at once since the buffer last emptied.
    peak: usize,
    /// Counts drains (a frame taken leaving no byte behind) by their `peak`.
    trim: Trim,
    /// Set by `trim` at a drain; `spare_mut` shrinks the buffer to it.
    shrink_to: Option<usize>,
}

/// A grown buffer is halved after this many uses in a row (a receive buffer's drains, a send
/// buffer's writes) that each needed under a quarter of it: the frames of a burst (a
/// restart's elections) no longer hold its peak for good, and a load whose writes are big
/// and small in turn keeps its buffers.
pub const SHRINK_AFTER: u32 = 64;
/// What a send buffer grown by a burst shrinks back to (buffers start empty and grow with
/// what is queued).
const SEND_BUF_BYTES: usize = 64 << 10;

/// When a buffer grown by a burst goes back toward its base size (see `SHRINK_AFTER`).
#[derive(Debug, Default)]
struct Trim {
    /// Small uses in a row.
    quiet: u32,
}

impl Trim {
    /// Notes a use of `used` bytes of a buffer of `len`; returns the size to shrink it to
    /// once `SHRINK_AFTER` small uses in a row have been seen.
    fn note(&mut self, used: usize, len: usize, base: usize) -> Option<usize> {
        if len <= base || used >= len / 4 {
            self.quiet = 0;
            return None;
        }
        self.quiet += 1;
        if self.quiet < SHRINK_AFTER {
            return None;
        }
        self.quiet = 0;
        Some((len / 2).max(base))
    }
}

impl RecvBuffer {
    pub fn new(config: &ConnConfig) -> RecvBuffer {
        let base_len = config.recv_buf_bytes.max(4096);
        let mut buf = AlignedVec::new();
        buf.resize(base_len, 0);
        RecvBuffer {
            buf,
            scratch: AlignedVec::new(),
            start: 0,
            end: 0,
            needed: 0,
            decoder: FrameDecoder::new(config.max_frame_len_bytes as u64),
            // One maximal frame plus its header always fits.
            max_buf_bytes: config.max_frame_len_bytes + 4096,
            base_len,
            peak: 0,
            trim: Trim::default(),
            shrink_to: None,
        }
    }

    /// Switches to `config`'s frame limit and grows the buffer to its initial size, keeping
    /// the bytes received so far: a listener reads the handshake under a small limit and
    /// buffer (see `transport::MAX_HANDSHAKE_BYTES`), then this.
    pub fn set_limits(&mut self, config: &ConnConfig) {
        self.decoder = FrameDecoder::new(config.max_frame_len_bytes as u64);
        self.max_buf_bytes = config.max_frame_len_bytes + 4096;
        let len = config.recv_buf_bytes.max(4096);
        self.base_len = len;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
    }

    /// Free space to receive into, after moving undecoded bytes to the front or growing the
    /// buffer (never past one maximal frame) when the pending frame would not fit.
    ///
    /// The buffer grows with the bytes that arrive, not to the length a header announces: it
    /// doubles (up to what the frame needs) only once it is full, so a peer that announces a
    /// maximal frame and sends little of it holds at most twice what it sent. It shrinks
    /// back by halves, down to its starting size, once `SHRINK_AFTER` drains in a row each
    /// held under a quarter of it.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if let Some(len) = self.shrink_to.take() {
                let mut smaller = AlignedVec::with_capacity(len);
                smaller.resize(len, 0);
                self.buf = smaller;
            }
        }
        // `needed`: bytes still missing from the frame at `start` (0: not known yet).
        let want = self.needed.max(1);
        if self.buf.len() - self.end < want {
            if self.start > 0 {
                let pending = self.end - self.start;
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = pending;
            }
            let need_len = self.end + want;
            if need_len > self.buf.len() && self.end == self.buf.len() {
                let new_len = need_len
                    .next_power_of_two()
                    .min(self.buf.len() * 2)
                    .min(self.max_buf_bytes)
                    .max(self.buf.len() + 1);
                self.buf.resize(new_len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of `spare_mut` as received.
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "filled past the receive buffer"
        );
        self.end += n;
        self.peak = self.peak.max(self.end);
    }

    /// Counts a drain (the buffer just emptied) as small or not.
    fn drained(&mut self) {
        self.shrink_to = self.trim.note(self.peak, self.buf.len(), self.base_len);
        self.peak = 0;
    }

    /// Whether undecoded bytes are held (a frame cut by a close is a protocol error).
    pub fn has_partial(&self) -> bool {
        self.start != self.end
    }

    /// Decodes the next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<InFrame<'_>>, FrameError> {
        if self.start == self.end {
            return Ok(None);
        }
        match self.decoder.decode(&self.buf[self.start..self.end])? {
            Decoded::Incomplete { needed } => {
                self.needed = needed;
                Ok(None)
            }
            Decoded::Frame(Frame {
                kind,
                body,
                consumed,
            }) => {
                self.needed = 0;
                let at = self.start;
                self.start += consumed;
                if self.start == self.end {
                    self.drained();
                }
                let body = &self.buf[at + body.start..at + body.end];
                if body.as_ptr().align_offset(BODY_ALIGN) == 0 {
                    Ok(Some(InFrame { kind, body }))
                } else {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(body);
                    Ok(Some(InFrame {
                        kind,
                        body: &self.scratch[..],
                    }))
                }
            }
        }
    }
}

/// One TCP connection. Shared (`Rc`) between its receive loop, its writer task and whoever
/// queues frames; it lives on one executor.
pub struct Conn {
    peer: SocketAddr,
    config: ConnConfig,
    stream: RefCell<Stream>,
    /// The socket of `stream`, for non-blocking `recv`; valid as long as `stream` lives (the
    /// same struct owns both).
    fd: std::os::fd::RawFd,
    /// Whether `stream` is TLS (read through rustls, never with `try_recv` on `fd`).
    tls: bool,
    /// The certificate the peer presented in the TLS handshake (verified against the CA).
    peer_certificate: Option<PeerCertificate>,
    /// Whole frames queued and not yet handed to the socket.
    pending: RefCell<AlignedVec>,
    /// The buffer being written, kept between writes to reuse its memory.
    spare: RefCell<AlignedVec>,
    /// Counts writes by their size, to shrink the two buffers after a burst.
    send_trim: RefCell<Trim>,
    /// Invariant: while true, exactly one task is inside `write_pending`; nobody else writes.
    writing: Cell<bool>,
    writer_waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    stats: Cell<ConnStats>,
}

impl Conn {
    /// Wraps an accepted or connected stream: sets TCP_NODELAY and the socket timeouts.
    pub fn new(stream: TcpStream, config: ConnConfig) -> Result<Rc<Conn>, TransportError> {
        let (peer, fd) = Self::prepare(&stream, &config)?;
        Ok(Rc::new(Conn::with_stream(
            peer,
            fd,
            Stream::Plain(stream),
            None,
            config,
        )))
    }

    /// Wraps an accepted stream after the server side of a TLS handshake (within
    /// `io_timeout`). A peer certificate, when presented, has been verified against the CA.
    pub async fn accept_tls(
        stream: TcpStream,
        config: ConnConfig,
        acceptor: &TlsAcceptor,
    ) -> Result<Rc<Conn>, TransportError> {
        let (peer, fd) = Self::prepare(&stream, &config)?;
        let accepted = glommio::timer::timeout(config.io_timeout, async {
            Ok(acceptor.accept(Socket { stream, fd }).await)
        })
        .await;
        let tls = handshake_done(peer, &config, accepted)?;
        let cert = first_certificate(tls.get_ref().1.peer_certificates());
        let stream = Stream::Tls(Box::new(tls.into()));
        Ok(Rc::new(Conn::with_stream(peer, fd, stream, cert, config)))
    }

    /// Connects within `io_timeout` and runs the client side of a TLS handshake (within
    /// `io_timeout` again), checking the server certificate against `name`.
    pub async fn connect_tls(
        addr: SocketAddr,
        config: ConnConfig,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<Rc<Conn>, TransportError> {
        let stream = TcpStream::connect_timeout(addr, config.io_timeout)
            .await
            .map_err(|e| TransportError::Io {
                peer: addr,
                source: e.into(),
            })?;
        let (peer, fd) = Self::prepare(&stream, &config)?;
        let connected = glommio::timer::timeout(config.io_timeout, async {
            Ok(connector.connect(name, Socket { stream, fd }).await)
        })
        .await;
        let tls = handshake_done(peer, &config, connected)?;
        let cert = first_certificate(tls.get_ref().1.peer_certificates());
        let stream = Stream::Tls(Box::new(tls.into()));
        Ok(Rc::new(Conn::with_stream(peer, fd, stream, cert, config)))
    }

    fn with_stream(
        peer: SocketAddr,
        fd: std::os::fd::RawFd,
        stream: Stream,
        peer_certificate: Option<PeerCertificate>,
        config: ConnConfig,
    ) -> Conn {
        Conn {
            peer,
            config,
            fd,
            tls: matches!(stream, Stream::Tls(_)),
            peer_certificate,
            stream: RefCell::new(stream),
            pending: RefCell::new(AlignedVec::new()),
            spare: RefCell::new(AlignedVec::new()),
            send_trim: RefCell::new(Trim::default()),
            writing: Cell::new(false),
            writer_waker: RefCell::new(None),
            closed: Cell::new(false),
            stats: Cell::new(ConnStats::default()),
        }
    }

    /// The peer address and the raw socket, after setting TCP_NODELAY and the timeouts.
    fn prepare(
        stream: &TcpStream,
        config: &ConnConfig,
    ) -> Result<(SocketAddr, std::os::fd::RawFd), TransportError> {
        let peer = stream.peer_addr().map_err(|e| TransportError::Io {
            peer: ([0, 0, 0, 0], 0).into(),
            source: e.into(),
        })?;
        let io = |e: glommio::GlommioError<()>| TransportError::Io {
            peer,
            source: e.into(),
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(config.idle_timeout))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(config.io_timeout))
            .map_err(io)?;
        Ok((peer, std::os::fd::AsRawFd::as_raw_fd(stream)))
    }

    /// Connects within `io_timeout`.
    pub async fn connect(addr: SocketAddr, config: ConnConfig) -> Result<Rc<Conn>, TransportError> {
        let stream = TcpStream::connect_timeout(addr, config.io_timeout)
            .await
            .map_err(|e| TransportError::Io {
                peer: addr,
                source: e.into(),
            })?;
        Conn::new(stream, config)
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The certificate the peer presented in the TLS handshake, if any.
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer_certificate.as_ref()
    }

    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    pub fn stats(&self) -> ConnStats {
        self.stats.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.pending.borrow().len()
    }

    fn update_stats(&self, f: impl FnOnce(&mut ConnStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Queues one frame that `encode` appends to the buffer it is given (it must append exactly
    /// one whole frame, or nothing and return an error). Nothing is sent before `flush`,
    /// `kick` or the writer task's next turn.
    pub fn push_with<E>(
        &self,
        delivery: Delivery,
        encode: impl FnOnce(&mut AlignedVec) -> Result<(), E>,
    ) -> Result<Pushed, PushError<E>> {
        if self.closed.get() {
            return Err(PushError::Transport(TransportError::Closed {
                peer: self.peer,
            }));
        }
        let mut pending = self.pending.borrow_mut();
        let before = pending.len();
        if delivery == Delivery::Lossy && before >= self.config.queue_limit_bytes {
            drop(pending);
            self.update_stats(|s| s.frames_dropped += 1);
            return Ok(Pushed::Dropped);
        }
        if let Err(e) = encode(&mut pending) {
            pending.resize(before, 0);
            return Err(PushError::Encode(e));
        }
        let after = pending.len();
        drop(pending);
        match delivery {
            Delivery::Lossy if after > self.config.queue_limit_bytes && before > 0 => {
                // NOTE: one frame larger than the whole limit still goes out on an empty queue,
                // otherwise a big append could never be sent.
                self.pending.borrow_mut().resize(before, 0);
                self.update_stats(|s| s.frames_dropped += 1);
                Ok(Pushed::Dropped)
            }
            Delivery::Reliable if after > self.config.hard_limit_bytes => {
                let err = TransportError::SlowPeer {
                    peer: self.peer,
                    queued_bytes: after,
                    limit_bytes: self.config.hard_limit_bytes,
                };
                tracing::warn!(peer = %self.peer, error = %err, "closing connection");
                self.close();
                Err(PushError::Transport(err))
            }
            _ => {
                self.update_stats(|s| s.frames_queued += 1);
                Ok(Pushed::Queued)
            }
        }
    }

    /// Queues `msg` as one frame (see `push_with`), refusing a body over `max_frame_len_bytes`.
    pub fn push<M: WireMessage>(
        &self,
        delivery: Delivery,
        msg: &M,
    ) -> Result<Pushed, PushError<EncodeError>> {
        let max = self.config.max_frame_len_bytes as u64;
        self.push_with(delivery, |out| {
            encode_frame_limited(msg, max, out).map(|_| ())
        })
    }

    /// Wakes the writer task: everything queued in this turn of the event loop leaves together
    /// once the current task yields.
    pub fn kick(&self) {
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Writes the queued bytes now from the calling task, unless another task is writing (that
    /// one then also sends these bytes). Returns once the bytes are in the socket.
    pub async fn flush(&self) -> Result<(), TransportError> {
        if self.writing.get() || self.pending.borrow().is_empty() {
            return Ok(());
        }
        self.write_pending().await
    }

    async fn write_pending(&self) -> Result<(), TransportError> {
        assert!(!self.writing.get(), "two writers on one connection");
        self.writing.set(true);
        let result = self.write_pending_inner().await;
        self.writing.set(false);
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    async fn write_pending_inner(&self) -> Result<(), TransportError> {
        loop {
            let mut out = std::mem::take(&mut *self.spare.borrow_mut());
            std::mem::swap(&mut out, &mut *self.pending.borrow_mut());
            if out.is_empty() {
                *self.spare.borrow_mut() = out;
                return Ok(());
            }
            let mut off = 0;
            while off < out.len() {
                if self.closed.get() {
                    return Err(TransportError::Closed { peer: self.peer });
                }
                let n = poll_fn(|cx| self.stream.borrow_mut().poll_write(cx, &out[off..]))
                    .await
                    .map_err(|e| self.io_error(e, "writing"))?;
                if n == 0 {
                    return Err(TransportError::Closed { peer: self.peer });
                }
                off += n;
            }
            if self.tls {
                poll_fn(|cx| self.stream.borrow_mut().poll_flush(cx))
                    .await
                    .map_err(|e| self.io_error(e, "writing"))?;
            }
            self.update_stats(|s| s.bytes_sent += out.len() as u64);
            // A buffer grown by a burst is halved once a run of writes used under a quarter
            // of it; the other buffer (the writes alternate) after the next run.
            let shrink =
                self.send_trim
                    .borrow_mut()
                    .note(out.len(), out.capacity(), SEND_BUF_BYTES);
            match shrink {
                Some(cap) => out = AlignedVec::with_capacity(cap),
                None => out.clear(),
            }
            *self.spare.borrow_mut() = out;
        }
    }

    /// The writer task: sends whatever is queued whenever it is kicked, until the connection
    /// closes. Spawn one per connection that receives `kick`s.
    pub async fn writer_loop(self: Rc<Conn>) -> Result<(), TransportError> {
        loop {
            poll_fn(|cx| {
                if self.closed.get() || (!self.writing.get() && !self.pending.borrow().is_empty()) {
                    Poll::Ready(())
                } else {
                    *self.writer_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if self.closed.get() {
                return Err(TransportError::Closed { peer: self.peer });
            }
            self.write_pending().await?;
        }
    }

    /// Receives into `buf` until at least one frame is complete or the connection fails;
    /// returns the number of bytes read. Bounded by `idle_timeout`.
    pub async fn fill(&self, buf: &mut RecvBuffer) -> Result<usize, TransportError> {
        if self.closed.get() {
            return Err(TransportError::Closed { peer: self.peer });
        }
        let spare = buf.spare_mut();
        if self.tls {
            // The TLS record layer reads through `Socket`, which does the same as below.
            let n = poll_fn(|cx| match &mut *self.stream.borrow_mut() {
                Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, spare),
                Stream::Plain(s) => Pin::new(s).poll_read(cx, spare),
            })
            .await
            .map_err(|e| self.io_error(e, "waiting for bytes"))?;
            if n == 0 {
                return Err(TransportError::Closed { peer: self.peer });
            }
            buf.filled(n);
            return Ok(n);
        }
        // NOTE: glommio's `poll_read` arms an io_uring readiness poll whenever a read returns
        // fewer bytes than asked, and while that poll is pending it skips its own
        // non-blocking read: with a large receive buffer every request/response round trip
        // would pay for one more ring submission and completion. So bytes already waiting are
        // taken with a plain non-blocking `recv`, and glommio only waits for readiness,
        // reading exactly one byte (a full read arms nothing); the rest follows at once.
        let n = match self.try_recv(spare) {
            Some(result) => result?,
            None => {
                let first = poll_fn(|cx| match &mut *self.stream.borrow_mut() {
                    Stream::Plain(s) => Pin::new(s).poll_read(cx, &mut spare[..1]),
                    Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, &mut spare[..1]),
                })
                .await
                .map_err(|e| self.io_error(e, "waiting for bytes"))?;
                if first == 1 {
                    1 + self.try_recv(&mut spare[1..]).transpose()?.unwrap_or(0)
                } else {
                    first
                }
            }
        };
        if n == 0 {
            return Err(TransportError::Closed { peer: self.peer });
        }
        buf.filled(n);
        Ok(n)
    }

    /// A non-blocking `recv` straight on the socket: `None` when no byte is waiting.
    fn try_recv(&self, into: &mut [u8]) -> Option<Result<usize, TransportError>> {
        try_recv_fd(self.fd, into).map(|r| {
            r.map_err(|source| TransportError::Io {
                peer: self.peer,
                source,
            })
        })
    }

    /// Reads one frame (used for the handshake and by simple request/response callers) and
    /// gives it to `f`.
    pub async fn read_frame<T>(
        &self,
        buf: &mut RecvBuffer,
        f: impl FnOnce(InFrame<'_>) -> T,
    ) -> Result<T, TransportError> {
        loop {
            match buf.next_frame() {
                Ok(Some(frame)) => {
                    self.update_stats(|s| s.frames_received += 1);
                    return Ok(f(frame));
                }
                Ok(None) => {}
                Err(source) => return Err(self.frame_error(source)),
            }
            self.fill(buf).await?;
        }
    }

    /// The receive loop: reads, hands every complete frame to `on_frame`, then flushes what
    /// the handlers queued on this connection from this same task. A bad frame or an error
    /// returned by `on_frame` closes this connection only (logged with peer and reason).
    pub async fn recv_loop(
        &self,
        buf: &mut RecvBuffer,
        mut on_frame: impl FnMut(InFrame<'_>) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        let result: Result<(), TransportError> = async {
            loop {
                loop {
                    match buf.next_frame() {
                        Ok(Some(frame)) => {
                            self.update_stats(|s| s.frames_received += 1);
                            on_frame(frame)?;
                        }
                        Ok(None) => break,
                        Err(source) => return Err(self.frame_error(source)),
                    }
                }
                self.flush().await?;
                match self.fill(buf).await {
                    Err(TransportError::Timeout { .. }) if self.config.silent_peer => {}
                    r => {
                        r?;
                    }
                }
            }
        }
        .await;
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    fn frame_error(&self, source: FrameError) -> TransportError {
        let err = TransportError::Frame {
            peer: self.peer,
            source,
        };
        tracing::warn!(peer = %self.peer, error = %err, "closing connection on a bad frame");
        self.close();
        err
    }

    fn io_error(&self, e: std::io::Error, what: &'static str) -> TransportError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            let timeout = if what == "writing" {
                self.config.io_timeout
            } else {
                self.config.idle_timeout
            };
            TransportError::Timeout {
                peer: self.peer,
                what,
                timeout,
            }
        } else {
            TransportError::Io {
                peer: self.peer,
                source: e,
            }
        }
    }

    fn fail(&self, e: &TransportError) {
        if !self.closed.get() {
            match e {
                TransportError::Closed { .. } => {
                    tracing::debug!(peer = %self.peer, "connection closed by peer")
                }
                e => tracing::info!(peer = %self.peer, error = %e, "connection closed"),
            }
        }
        self.close();
    }

    /// Closes the connection: both directions are shut down, queued bytes are discarded, the
    /// writer task and the receive loop end with `Closed`.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.pending.borrow_mut().clear();
        // NOTE: shutdown wakes a read pending in the receive loop; its result does not
        // matter since the socket is being dropped.
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
        self.kick();
    }
}

fn tls_error(peer: SocketAddr, e: std::io::Error) -> TransportError {
    TransportError::Tls {
        peer,
        reason: e.to_string(),
    }
}

/// The outcome of a TLS handshake run under `io_timeout` (either side).
fn handshake_done<T, E>(
    peer: SocketAddr,
    config: &ConnConfig,
    outcome: Result<std::io::Result<T>, E>,
) -> Result<T, TransportError> {
    match outcome {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(tls_error(peer, e)),
        Err(_) => Err(TransportError::Timeout {
            peer,
            what: "in the TLS handshake",
            timeout: config.io_timeout,
        }),
    }
}

/// The end-entity certificate the other side presented, if any.
fn first_certificate(
    chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
) -> Option<PeerCertificate> {
    chain
        .and_then(|c| c.first())
        .map(|c| PeerCertificate(c.clone().into_owned()))
}

/// `push_with` failed: the encoder refused the message, or the connection is gone.
#[derive(Debug, thiserror::Error)]
pub enum PushError<E> {
    #[error("could not encode the frame: {0}")]
    Encode(E),
    #[error(transparent)]
    Transport(TransportError),
}

#[cfg(test)]
mod tests {
    use super::{Trim, SHRINK_AFTER};

    #[test]
    fn a_run_of_small_uses_halves_a_grown_buffer_and_one_big_use_restarts_the_run() {
        let (base, len) = (64 << 10, 1 << 20);
        let mut t = Trim::default();
        for _ in 0..SHRINK_AFTER - 1 {
            assert_eq!(t.note(100, len, base), None);
        }
        // A big use (a quarter or more) starts the count over.
        assert_eq!(t.note(len / 4, len, base), None);
        for _ in 0..SHRINK_AFTER - 1 {
            assert_eq!(t.note(100, len, base), None);
        }
        assert_eq!(t.note(100, len, base), Some(len / 2));
        // Big and small uses in turn never shrink.
        for i in 0..4 * SHRINK_AFTER {
            let used = if i % 2 == 0 { len } else { 0 };
            assert_eq!(t.note(used, len, base), None);
        }
        // Never below the base, and nothing at the base.
        let mut t = Trim::default();
        let last = (0..SHRINK_AFTER).map(|_| t.note(0, base + 1, base)).last();
        assert_eq!(last, Some(Some(base)));
        assert!((0..2 * SHRINK_AFTER).all(|_| t.note(0, base, base).is_none()));
    }
}
