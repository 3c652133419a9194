//! Simulated clients of the whole-node simulator and the sequential model their history is
//! checked against. Each client runs one operation at a time through the real client
//! library's retry logic (`quasar_rpc::client::Call`: leader hints, range cache, one
//! session sequence per operation so a retried write applies at most once).
//!
//! Every value is a counter (8 little-endian bytes), so Put, Delete, CompareAndSet and
//! Increment mix on the same keys.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use quasar_rpc::client::{AttemptError, Call, ClientConfig, Next, RangeCache, Session, Target};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{
    ClientResponse, ClusterId, Expected, KeyVersion, NodeId, Operation as WireOp, ReadConsistency,
    Reply, RequestError, RequestId, SessionId,
};

use crate::linearizability::{Model, Operation};
use crate::sim::rng::SimRng;

/// One operation of the model, on key `key` (an index into the key set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    pub key: u8,
    pub kind: OpKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Put(i64),
    Delete,
    /// Write `value` if the key holds `expected` (`None`: the key is absent).
    Cas {
        expected: Option<i64>,
        value: i64,
    },
    Incr(i64),
}

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOut {
    Value(Option<i64>),
    Written,
    Deleted { found: bool },
    Swapped(bool),
    Incremented(i64),
}

/// Counters per key: the sequential specification.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterModel;

impl Model for CounterModel {
    type State = Option<i64>;
    type Input = KvOp;
    type Output = KvOut;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &KvOp,
        output: Option<&KvOut>,
    ) -> Option<Option<i64>> {
        match (&input.kind, output) {
            (OpKind::Get, None) => Some(*state),
            (OpKind::Get, Some(KvOut::Value(v))) => (v == state).then_some(*state),
            (OpKind::Put(v), None | Some(KvOut::Written)) => Some(Some(*v)),
            (OpKind::Delete, None) => Some(None),
            (OpKind::Delete, Some(KvOut::Deleted { found })) => {
                (*found == state.is_some()).then_some(None)
            }
            (OpKind::Cas { expected, value }, out) => {
                let holds = expected == state;
                match out {
                    None => Some(if holds { Some(*value) } else { *state }),
                    Some(KvOut::Swapped(true)) if holds => Some(Some(*value)),
                    Some(KvOut::Swapped(false)) if !holds => Some(*state),
                    Some(_) => None,
                }
            }
            (OpKind::Incr(d), out) => {
                let after = state.unwrap_or(0).checked_add(*d)?;
                match out {
                    None => Some(Some(after)),
                    Some(KvOut::Incremented(v)) if *v == after => Some(Some(after)),
                    Some(_) => None,
                }
            }
            (_, Some(_)) => None,
        }
    }

    fn partition(&self, ops: &[Operation<KvOp, KvOut>]) -> Vec<Vec<usize>> {
        let mut by_key: std::collections::BTreeMap<u8, Vec<usize>> = Default::default();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key).or_default().push(i);
        }
        by_key.into_values().collect()
    }
}

/// The key bytes of key index `k` (user range: first byte >= 0x01).
#[must_use]
pub fn key_bytes(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k]
}

fn counter(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
}

/// The wire operation of a model operation.
#[must_use]
pub fn wire_op(op: &KvOp) -> WireOp {
    let key = key_bytes(op.key);
    match op.kind {
        OpKind::Get => WireOp::Get { key },
        OpKind::Put(v) => WireOp::Put {
            key,
            value: v.to_le_bytes().to_vec(),
        },
        OpKind::Delete => WireOp::Delete { key },
        OpKind::Cas { expected, value } => WireOp::CompareAndSet {
            key,
            expected: match expected {
                Some(e) => Expected::Value(e.to_le_bytes().to_vec()),
                None => Expected::Version(KeyVersion::ABSENT),
            },
            value: value.to_le_bytes().to_vec(),
        },
        OpKind::Incr(delta) => WireOp::Increment { key, delta },
    }
}

/// How an operation ended, for the history: `Ok(Some(out))` completed with `out`,
/// `Ok(None)` outcome unknown (may have happened), `Err` definitely did not happen (or a
/// read that failed: no information).
pub fn outcome(op: &KvOp, result: Result<Reply, ClientError>) -> Result<Option<KvOut>, String> {
    let is_write = !matches!(op.kind, OpKind::Get);
    match (&op.kind, result) {
        (OpKind::Get, Ok(Reply::Get(v))) => match v {
            None => Ok(Some(KvOut::Value(None))),
            Some(vv) => match counter(&vv.value) {
                Some(c) => Ok(Some(KvOut::Value(Some(c)))),
                None => Err(format!("read a value that is not a counter: {vv:?}")),
            },
        },
        (OpKind::Put(_), Ok(Reply::Written { .. })) => Ok(Some(KvOut::Written)),
        (OpKind::Cas { .. }, Ok(Reply::Written { .. })) => Ok(Some(KvOut::Swapped(true))),
        (OpKind::Cas { .. }, Err(ClientError::Failed(RequestError::ConditionFailed { .. }))) => {
            Ok(Some(KvOut::Swapped(false)))
        }
        (OpKind::Delete, Ok(Reply::Deleted { found, .. })) => Ok(Some(KvOut::Deleted { found })),
        (OpKind::Incr(_), Ok(Reply::Incremented { value, .. })) => {
            Ok(Some(KvOut::Incremented(value)))
        }
        (_, Ok(reply)) => Err(format!("unexpected reply {reply:?} to {op:?}")),
        (_, Err(ClientError::Ambiguous { .. })) if is_write => Ok(None),
        (_, Err(e)) => Err(e.to_string()),
    }
}

/// The address standing for node `n` in the client config (nothing listens on it).
#[must_use]
pub fn fake_addr(n: u64) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        20_000 + n as u16 * 10,
    ))
}

/// The node a target address stands for.
#[must_use]
pub fn node_of(target: &Target) -> u64 {
    target.node.0
}

/// Converts a client backoff into simulated steps (a step stands for 10 ms).
#[must_use]
pub fn steps_of(d: Duration) -> u64 {
    (d.as_millis() / 10) as u64
}

/// One attempt on the wire.
#[derive(Debug)]
pub struct Attempt {
    pub target: Target,
    pub request_id: RequestId,
    pub deadline: u64,
}

/// An operation in progress.
#[derive(Debug)]
pub struct Pending {
    pub op: KvOp,
    pub call: Call,
    pub called: u64,
    pub attempt: Option<Attempt>,
    /// When to send the next attempt.
    pub retry_at: u64,
    /// Follower read: sent to a random replica instead of the leader.
    pub follower: bool,
    /// Index of this operation's record in the history.
    pub record: usize,
}

/// One simulated client.
#[derive(Debug)]
pub struct SimClient {
    pub id: u64,
    pub config: ClientConfig,
    pub session: Session,
    pub cache: RangeCache,
    pub pending: Option<Pending>,
    pub next_request: u64,
    pub idle_until: u64,
    pub rng: SimRng,
}

impl SimClient {
    #[must_use]
    pub fn new(id: u64, nodes: u64, seed: u64) -> SimClient {
        let node_list = (1..=nodes).map(|n| (NodeId(n), fake_addr(n))).collect();
        let mut config = ClientConfig::new(ClusterId::from_name("quasar"), node_list, 1);
        let session = SessionId(crate::sim::rng::mix64(seed ^ id) | 1);
        config.session = session;
        config.max_attempts = 12;
        config.request_timeout = Duration::from_millis(1000);
        config.consistency = ReadConsistency::Linearizable;
        SimClient {
            id,
            config,
            session: Session::new(session),
            cache: RangeCache::new(),
            pending: None,
            next_request: 1,
            idle_until: 0,
            rng: SimRng::derive(seed, 1000 + id),
        }
    }

    /// A random operation on one of `keys` keys.
    pub fn random_op(&mut self, keys: u8) -> KvOp {
        let key = self.rng.between(0, u64::from(keys.max(1)) - 1) as u8;
        let v = self.rng.between(1, 1_000_000) as i64;
        let kind = match self.rng.between(0, 9) {
            0..=3 => OpKind::Get,
            4 | 5 => OpKind::Put(v),
            6 => OpKind::Delete,
            7 => OpKind::Cas {
                expected: if self.rng.chance(0.3) {
                    None
                } else {
                    Some(self.rng.between(1, 1_000_000) as i64)
                },
                value: v,
            },
            _ => OpKind::Incr(self.rng.between(1, 5) as i64),
        };
        KvOp { key, kind }
    }

    /// Starts `op` at `now`.
    pub fn start(&mut self, op: KvOp, now: u64, record: usize) {
        let call = Call::new(&self.config, &mut self.session, wire_op(&op));
        let follower = matches!(op.kind, OpKind::Get) && self.rng.chance(0.25);
        let mut call = call;
        if follower {
            call.request.consistency = ReadConsistency::Follower;
        }
        self.pending = Some(Pending {
            op,
            call,
            called: now,
            attempt: None,
            retry_at: now,
            follower,
            record,
        });
    }

    /// The next attempt to send at `now`, if one is due: (node, encoded request).
    pub fn due_attempt(
        &mut self,
        now: u64,
        timeout: u64,
    ) -> Option<(u64, quasar_rpc::message::ClientRequest)> {
        let p = self.pending.as_mut()?;
        if p.attempt.is_some() || p.retry_at > now {
            return None;
        }
        let mut target = match p.call.target(&self.config, &self.cache) {
            Ok(t) => t,
            Err(_) => return None,
        };
        if p.follower {
            let n = self.rng.between(1, self.config.nodes.len() as u64);
            target.node = NodeId(n);
            target.addr = fake_addr(n);
        }
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        let req = p.call.request_for(&target, request_id).clone();
        let node = node_of(&target);
        p.attempt = Some(Attempt {
            target,
            request_id,
            deadline: now + timeout,
        });
        Some((node, req))
    }

    /// An attempt ended (answered, lost or never sent). Returns the final result when the
    /// operation is over.
    pub fn on_attempt_end(
        &mut self,
        now: u64,
        answer: Result<Result<Reply, RequestError>, AttemptError>,
    ) -> Option<Result<Reply, ClientError>> {
        let p = self.pending.as_mut()?;
        let attempt = p.attempt.take()?;
        match p.call.on_answer(&mut self.cache, &attempt.target, answer) {
            Next::Retry(d) => {
                p.retry_at = now + steps_of(d).max(1);
                None
            }
            Next::Done(result) => Some(result),
        }
    }

    /// A response arrived: whether it answers the attempt in flight.
    #[must_use]
    pub fn matches(&self, resp: &ClientResponse) -> bool {
        self.pending
            .as_ref()
            .and_then(|p| p.attempt.as_ref())
            .is_some_and(|a| a.request_id == resp.request_id)
    }
}
