//! The async client on glommio, for `quasar-bench` and services: pipelined, any number of
//! requests in flight on one connection per (node, shard), matched to their answers by
//! request id. Lives on one executor (`Rc`); clone it freely within that executor.
//!
//! Each connection has a receive task that completes waiting requests as answers arrive (in
//! any order), a writer task (a request is queued and the writer is kicked, so requests
//! issued by many tasks in one turn of the event loop leave in one `send`) and, while
//! requests wait, a watch task that wakes every `WAKE_BOUND` and ends the requests whose
//! timeout passed: a request sets no timer of its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::{AttemptError, Call, ClientConfig, Next, RangeCache, Session, Target};
use crate::conn::{Conn, Delivery, PushError, RecvBuffer};
use crate::error::{ClientError, TransportError};
use crate::frame::{decode_body, FrameError, FrameKind};
use crate::message::{
    ClientResponse, HandshakeReply, KeyVersion, Operation, Reply, RequestError, RequestId,
    SessionId, VersionedValue,
};
use crate::transport::handshake;

/// The longest a request waits without its executor waking up (see `ClientConn::watch`).
const WAKE_BOUND: Duration = Duration::from_millis(20);

/// Where the answer to one request lands.
#[derive(Default)]
struct Slot {
    result: RefCell<Option<Result<ClientResponse, String>>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn complete(&self, result: Result<ClientResponse, String>) {
        *self.result.borrow_mut() = Some(result);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A request waiting for its answer.
struct Waiting {
    slot: Rc<Slot>,
    /// When the watch task gives up on it.
    deadline: Instant,
}

struct ClientConn {
    conn: Rc<Conn>,
    waiting: RefCell<HashMap<RequestId, Waiting>>,
    /// The watch task, parked while no request waits.
    watch_waker: RefCell<Option<Waker>>,
}

/// A dial in progress; tasks that need the same address wait for it.
#[derive(Default)]
struct Dial {
    done: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

struct DialGuard<'a> {
    inner: &'a Inner,
    addr: SocketAddr,
    dial: Rc<Dial>,
}

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        let mut conns = self.inner.conns.borrow_mut();
        if let Some(ConnState::Connecting(d)) = conns.get(&self.addr) {
            if Rc::ptr_eq(d, &self.dial) {
                conns.remove(&self.addr);
            }
        }
        drop(conns);
        self.dial.done.set(true);
        for w in self.dial.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

#[derive(Clone)]
enum ConnState {
    Connecting(Rc<Dial>),
    Ready(Rc<ClientConn>),
}

struct Inner {
    config: ClientConfig,
    session: RefCell<Session>,
    cache: RefCell<RangeCache>,
    conns: RefCell<HashMap<SocketAddr, ConnState>>,
    next_request: Cell<u64>,
}

/// A pipelined client on the current glommio executor.
#[derive(Clone)]
pub struct AsyncClient {
    inner: Rc<Inner>,
}

impl AsyncClient {
    pub fn new(config: ClientConfig) -> AsyncClient {
        AsyncClient {
            inner: Rc::new(Inner {
                session: RefCell::new(Session::new(config.session)),
                config,
                cache: RefCell::new(RangeCache::new()),
                conns: RefCell::new(HashMap::new()),
                next_request: Cell::new(1),
            }),
        }
    }

    pub fn session(&self) -> SessionId {
        self.inner.session.borrow().id()
    }

    /// A copy of the range cache (for tests and status output).
    pub fn cache(&self) -> RangeCache {
        self.inner.cache.borrow().clone()
    }

    /// Runs one operation with routing and retries.
    pub async fn execute(&self, op: Operation) -> Result<Reply, ClientError> {
        let inner = &self.inner;
        let mut call = Call::new(&inner.config, &mut inner.session.borrow_mut(), op);
        loop {
            let target = call.target(&inner.config, &inner.cache.borrow())?;
            let answer = self.attempt(&mut call, &target).await?;
            let next = call.on_answer(&mut inner.cache.borrow_mut(), &target, answer);
            match next {
                Next::Done(result) => return result,
                Next::Retry(delay) if delay.is_zero() => {}
                Next::Retry(delay) => glommio::timer::sleep(delay).await,
            }
        }
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        match self.execute(Operation::Get { key: key.to_vec() }).await? {
            Reply::Get(v) => Ok(v),
            other => Err(super::unexpected(other)),
        }
    }

    /// Writes `key` and returns its new version.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<KeyVersion, ClientError> {
        let op = Operation::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        match self.execute(op).await? {
            Reply::Written { version } => Ok(version),
            other => Err(super::unexpected(other)),
        }
    }

    async fn attempt(
        &self,
        call: &mut Call,
        target: &Target,
    ) -> Result<Result<Result<Reply, RequestError>, AttemptError>, ClientError> {
        let cc = match self.connection(target).await {
            Ok(cc) => cc,
            Err(e) => return Ok(Err(AttemptError::NotSent(e.to_string()))),
        };
        let id = RequestId(self.inner.next_request.get());
        self.inner.next_request.set(id.0 + 1);
        let slot = Rc::new(Slot::default());
        let timeout = self.inner.config.request_timeout;
        cc.wait_for(
            id,
            Waiting {
                slot: Rc::clone(&slot),
                deadline: Instant::now() + timeout,
            },
        );
        match cc
            .conn
            .push(Delivery::Reliable, call.request_for(target, id))
        {
            Ok(_) => cc.conn.kick(),
            Err(PushError::Encode(e)) => {
                cc.waiting.borrow_mut().remove(&id);
                return Err(ClientError::Encode(e));
            }
            Err(PushError::Transport(e)) => {
                cc.waiting.borrow_mut().remove(&id);
                return Ok(Err(AttemptError::NotSent(e.to_string())));
            }
        }
        // Completed by the receive task (the answer, or the connection's loss) or by the
        // watch task (the timeout), each of which also takes the request out of `waiting`.
        let answer = poll_fn(|cx| {
            if let Some(r) = slot.result.borrow_mut().take() {
                return Poll::Ready(r);
            }
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        Ok(match answer {
            Ok(response) => Ok(response.result),
            Err(reason) => Err(AttemptError::Lost(reason)),
        })
    }

    async fn connection(&self, target: &Target) -> Result<Rc<ClientConn>, TransportError> {
        // One dial per address at a time: tasks that find a dial in progress wait for it.
        loop {
            let state = self.inner.conns.borrow().get(&target.addr).cloned();
            match state {
                Some(ConnState::Ready(cc)) if !cc.conn.is_closed() => return Ok(cc),
                Some(ConnState::Connecting(dial)) => {
                    poll_fn(|cx| {
                        if dial.done.get() {
                            Poll::Ready(())
                        } else {
                            dial.wakers.borrow_mut().push(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                    .await
                }
                _ => break,
            }
        }
        let dial = Rc::new(Dial::default());
        self.inner
            .conns
            .borrow_mut()
            .insert(target.addr, ConnState::Connecting(Rc::clone(&dial)));
        // Finishes the dial even if this future is dropped half-way, so waiters never hang.
        let guard = DialGuard {
            inner: &self.inner,
            addr: target.addr,
            dial,
        };
        let result = self.dial(target).await;
        if let Ok(cc) = &result {
            self.inner
                .conns
                .borrow_mut()
                .insert(target.addr, ConnState::Ready(Rc::clone(cc)));
        }
        drop(guard);
        result
    }

    async fn dial(&self, target: &Target) -> Result<Rc<ClientConn>, TransportError> {
        let config = &self.inner.config;
        let conn = match &config.tls {
            Some(tls) => {
                let name = crate::tls::server_name(target.node, target.addr);
                Conn::connect_tls(target.addr, config.conn_config(), &tls.connector(), name).await?
            }
            None => Conn::connect(target.addr, config.conn_config()).await?,
        };
        let mut buf = RecvBuffer::new(conn.config());
        let hello = config.hello(self.session(), target);
        let cluster = config.cluster;
        let result = handshake(&conn, &mut buf, &hello, |reply| match reply {
            HandshakeReply::Accepted { cluster: c, .. } if c == cluster => Ok(()),
            HandshakeReply::Accepted { cluster: c, .. } => {
                Err(format!("server is in cluster {c}, not {cluster}"))
            }
            HandshakeReply::Refused(reason) => Err(reason.to_string()),
        })
        .await;
        if let Err(e) = result {
            conn.close();
            return Err(e);
        }
        let cc = Rc::new(ClientConn {
            conn: Rc::clone(&conn),
            waiting: RefCell::new(HashMap::new()),
            watch_waker: RefCell::new(None),
        });
        glommio::spawn_local(Rc::clone(&conn).writer_loop()).detach();
        let reader = Rc::clone(&cc);
        glommio::spawn_local(async move { reader.receive(buf).await }).detach();
        let watch = Rc::clone(&cc);
        let timeout = config.request_timeout;
        glommio::spawn_local(async move { watch.watch(timeout).await }).detach();
        Ok(cc)
    }
}

impl ClientConn {
    /// Registers a request sent (or about to be) on this connection.
    fn wait_for(&self, id: RequestId, w: Waiting) {
        let mut waiting = self.waiting.borrow_mut();
        let was_empty = waiting.is_empty();
        waiting.insert(id, w);
        drop(waiting);
        if was_empty {
            self.wake_watch();
        }
    }

    fn wake_watch(&self) {
        if let Some(w) = self.watch_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The watch task: while requests wait, wakes every `WAKE_BOUND` and ends those whose
    /// deadline passed; parked while none waits; ends with the connection. Its timer also
    /// bounds a lost wake-up: an io_uring completion that fails to wake the parked executor
    /// (seen here about once a minute under load: an answer sat unread until its request's
    /// 5 s timeout) costs at most one `WAKE_BOUND`, since the timer wakes the executor,
    /// which then reaps every completion.
    async fn watch(self: Rc<Self>, timeout: Duration) {
        loop {
            poll_fn(|cx| {
                if self.conn.is_closed() || !self.waiting.borrow().is_empty() {
                    Poll::Ready(())
                } else {
                    *self.watch_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if self.conn.is_closed() {
                // The receive task ends every request still waiting.
                return;
            }
            glommio::timer::sleep(WAKE_BOUND).await;
            let now = Instant::now();
            let peer = self.conn.peer();
            let mut expired = Vec::new();
            self.waiting.borrow_mut().retain(|_, w| {
                let live = w.deadline > now;
                if !live {
                    expired.push(Rc::clone(&w.slot));
                }
                live
            });
            for slot in expired {
                slot.complete(Err(format!("no answer from {peer} within {timeout:?}")));
            }
        }
    }

    /// Completes waiting requests as answers arrive; when the connection ends, every request
    /// still waiting learns that its answer was lost.
    async fn receive(self: Rc<Self>, mut buf: RecvBuffer) {
        let peer = self.conn.peer();
        let result = self
            .conn
            .recv_loop(&mut buf, |frame| {
                let answer = if frame.kind == FrameKind::ClientResponse {
                    decode_body::<ClientResponse>(frame.body)
                } else {
                    Err(FrameError::KindMismatch {
                        expected: FrameKind::ClientResponse,
                        got: frame.kind,
                    })
                };
                let response = answer.map_err(|source| TransportError::Frame { peer, source })?;
                // NOTE: an answer nobody waits for (its attempt timed out) is dropped.
                let waiting = self.waiting.borrow_mut().remove(&response.request_id);
                if let Some(w) = waiting {
                    w.slot.complete(Ok(response));
                }
                Ok(())
            })
            .await;
        let reason = match result {
            Err(e) => format!("connection to {peer} lost: {e}"),
            Ok(()) => format!("connection to {peer} closed"),
        };
        self.conn.close();
        let lost: Vec<Waiting> = self.waiting.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in lost {
            w.slot.complete(Err(reason.clone()));
        }
        self.wake_watch();
    }
}
