//! The HTTP API's way into the cluster: a small pool of rpc `BlockingClient`s that talk to
//! this node's own client port (and, through the client's redirects, to the leaders), run
//! on tokio's blocking threads so that neither the admin port's event loop nor any shard
//! ever waits on them. Owns the key-value operations as the HTTP routes need them (a
//! conditional delete, a scan that crosses ranges, a transaction checked to stay in one
//! range); never parses HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{
    AdminOp, AdminReply, Compare, CompareOp, CompareTarget, KeyValue, KeyVersion, NodeId,
    Operation, RangeDescriptor, RangeSelector, ReadConsistency, Reply, ShardId, Txn, TxnBranch,
    TxnOp, TxnOpResult, TxnReply, VersionedValue,
};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// Requests to the cluster in flight at once (each holds one blocking thread and one client).
pub const MAX_IN_FLIGHT: usize = 8;
/// Attempts per operation: rides out an election (about 4 s of backoff) and then answers
/// 503, rather than holding an HTTP caller for the half minute `quasarctl` waits.
pub const MAX_ATTEMPTS: u32 = 10;
/// Bytes of keys and values one scan answer gathers before it stops with a `continue`.
pub const SCAN_MAX_BYTES: usize = 4 << 20;
/// The first key outside the system key space (keys starting with 0x00 belong to the node).
pub const FIRST_USER_KEY: &[u8] = b"\x01";

/// The clients of the HTTP API, pooled per read consistency.
pub struct Backend {
    config: ClientConfig,
    /// The node asked for range descriptors: this node.
    contact: NodeId,
    idle: Mutex<HashMap<ReadConsistency, Vec<BlockingClient>>>,
    permits: Arc<Semaphore>,
}

impl Backend {
    /// `config.nodes[0]` must be this node: requests without a cached route go there first.
    pub fn new(mut config: ClientConfig) -> Result<Backend, String> {
        let contact = config
            .nodes
            .first()
            .map(|n| n.0)
            .ok_or("the client configuration names no node")?;
        config.max_attempts = MAX_ATTEMPTS;
        Ok(Backend {
            config,
            contact,
            idle: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    fn take(&self, consistency: ReadConsistency) -> BlockingClient {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&consistency)
            .and_then(Vec::pop);
        pooled.unwrap_or_else(|| {
            // Every client needs a session of its own (see `ClientConfig::session`).
            let mut config = self.config.with_fresh_session();
            config.consistency = consistency;
            BlockingClient::new(config)
        })
    }

    fn give_back(&self, consistency: ReadConsistency, client: BlockingClient) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let clients = idle.entry(consistency).or_default();
        if clients.len() < MAX_IN_FLIGHT {
            clients.push(client);
        }
    }

    /// Runs `f` with a client of `consistency` on a blocking thread, at most
    /// [`MAX_IN_FLIGHT`] at a time.
    pub async fn run<T, F>(
        self: &Arc<Self>,
        consistency: ReadConsistency,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session<'_>) -> Result<T, ApiError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("the HTTP API is shutting down"))?;
        let backend = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut client = backend.take(consistency);
            let result = f(&mut Session {
                client: &mut client,
                contact: backend.contact,
            });
            backend.give_back(consistency, client);
            result
        })
        .await;
        joined.map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }
}

/// One client, borrowed from the pool for one HTTP request.
pub struct Session<'a> {
    client: &'a mut BlockingClient,
    contact: NodeId,
}

/// A page of a scan and where the next one starts.
pub struct ScanResult {
    pub entries: Vec<KeyValue>,
    pub next: Option<Vec<u8>>,
}

impl Session<'_> {
    pub fn get(&mut self, key: &[u8]) -> Result<Option<VersionedValue>, ApiError> {
        Ok(self.client.get(key)?)
    }

    /// Writes `key`; with `if_version`, only if the key is at that version (0: absent).
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        if_version: Option<u64>,
    ) -> Result<KeyVersion, ApiError> {
        let Some(version) = if_version else {
            return Ok(self.client.put(key, value)?);
        };
        match self.client.execute(Operation::CompareAndSet {
            key: key.to_vec(),
            expected: quasar_rpc::message::Expected::Version(KeyVersion(version)),
            value: value.to_vec(),
        })? {
            Reply::Written { version } => Ok(version),
            other => Err(unexpected("CompareAndSet", &other)),
        }
    }

    /// Deletes `key`: the version of the delete and whether the key existed. With
    /// `if_version`, only if the key is at that version (a transaction: compare, then
    /// delete, else read the current version for the 409).
    pub fn delete(
        &mut self,
        key: &[u8],
        if_version: Option<u64>,
    ) -> Result<(KeyVersion, bool), ApiError> {
        let Some(version) = if_version else {
            return Ok(self.client.delete(key)?);
        };
        let reply = self.txn(Txn {
            compares: vec![Compare {
                key: key.to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(KeyVersion(version)),
            }],
            success: vec![TxnOp::Delete { key: key.to_vec() }],
            failure: vec![TxnOp::Get { key: key.to_vec() }],
        })?;
        match (reply.branch, reply.results.as_slice()) {
            (TxnBranch::Success, [TxnOpResult::Delete { found }]) => Ok((reply.version, *found)),
            (TxnBranch::Failure, [TxnOpResult::Get(current)]) => Err(ApiError::condition_failed(
                current.as_ref().map_or(0, |v| v.version.get()),
            )),
            _ => Err(ApiError::internal(format!(
                "the conditional delete answered an unexpected result: {reply:?}"
            ))),
        }
    }

    /// The range serving `key`: from the client's cache, else asked of this node.
    fn range_of(&mut self, key: &[u8]) -> Result<RangeDescriptor, ApiError> {
        match self.client.cache().lookup(key) {
            Some(d) => Ok(d.clone()),
            None => self.describe(key),
        }
    }

    /// The range serving `key` as this node knows it now, merged into the client's cache
    /// (the newer epoch wins: a node that has not applied a split yet cannot roll it back).
    fn describe(&mut self, key: &[u8]) -> Result<RangeDescriptor, ApiError> {
        let reply = self.client.admin(
            self.contact,
            ShardId(0),
            AdminOp::DescribeRange(RangeSelector::Key(key.to_vec())),
        )?;
        let AdminReply::Range(info) = reply else {
            return Err(ApiError::internal(format!(
                "DescribeRange answered {reply:?}"
            )));
        };
        if !info.descriptor.contains(key) {
            return Err(ApiError::unavailable(format!(
                "the node described range {} for a key outside it; its directory is catching \
                 up",
                info.descriptor.id
            )));
        }
        self.client.cache_mut().insert(info.descriptor.clone());
        Ok(self
            .client
            .cache()
            .lookup(key)
            .cloned()
            .unwrap_or(info.descriptor))
    }

    /// Up to `limit` pairs of `[start, end)` (`end` empty: to the end), page by page and
    /// range by range; `next` is where a further call would start.
    pub fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<ScanResult, ApiError> {
        let mut start = start.to_vec();
        let mut entries: Vec<KeyValue> = Vec::new();
        let mut bytes = 0usize;
        loop {
            if entries.len() >= limit || bytes >= SCAN_MAX_BYTES {
                return Ok(ScanResult {
                    entries,
                    next: Some(start),
                });
            }
            // One request covers one range: clip the end to the range's.
            let range = self.range_of(&start)?;
            let page_end =
                if range.end.is_empty() || (!end.is_empty() && end <= range.end.as_slice()) {
                    end.to_vec()
                } else {
                    range.end.clone()
                };
            let count = u32::try_from(limit - entries.len()).unwrap_or(u32::MAX);
            let budget = u32::try_from(SCAN_MAX_BYTES - bytes).unwrap_or(u32::MAX);
            let page = self.client.scan(&start, &page_end, count, budget)?;
            let got = page.entries.len();
            bytes += page
                .entries
                .iter()
                .map(|e| e.key.len() + e.value.len())
                .sum::<usize>();
            entries.extend(page.entries);
            match page.resume_key {
                Some(resume) if resume > start || got > 0 => start = resume,
                Some(_) => {
                    return Err(ApiError::internal(
                        "the scan made no progress (no key and the same resume key)",
                    ))
                }
                None => {
                    // The page stopped at the range's end. A split since the lookup leaves
                    // the new, smaller range in the cache: continue from its end, not the
                    // old one, so that no key is skipped.
                    let reached = match self.client.cache().lookup(&start) {
                        Some(d)
                            if !d.end.is_empty() && (page_end.is_empty() || d.end < page_end) =>
                        {
                            d.end.clone()
                        }
                        _ => page_end,
                    };
                    if reached.is_empty() || (!end.is_empty() && reached.as_slice() >= end) {
                        return Ok(ScanResult {
                            entries,
                            next: None,
                        });
                    }
                    start = reached;
                }
            }
        }
    }

    /// Runs a transaction after checking that every key lies in one range (a transaction
    /// never spans ranges; the check names the range, where the node would only redirect).
    pub fn txn(&mut self, txn: Txn) -> Result<TxnReply, ApiError> {
        if txn.compares.is_empty() && txn.success.is_empty() && txn.failure.is_empty() {
            return Err(ApiError::bad_request(
                "the transaction is empty: give at least one compare or one operation",
            ));
        }
        let routing = quasar_rpc::client::routing_key(&Operation::Txn(txn.clone())).to_vec();
        // Asked afresh, not from the cache: a split since the last request must show here.
        let range = self.describe(&routing)?;
        check_one_range(&range, &txn)?;
        match self.client.execute(Operation::Txn(txn.clone())) {
            Ok(Reply::Txn(reply)) => Ok(reply),
            Ok(other) => Err(unexpected("Txn", &other)),
            // The node's directory lagged behind a split: the redirects taught the cache the
            // new bounds. Spanning ranges is the caller's error, not an outage.
            Err(e) => match self.client.cache().lookup(&routing) {
                Some(now) if now.epoch > range.epoch => {
                    check_one_range(&now.clone(), &txn)?;
                    Err(e.into())
                }
                _ => Err(e.into()),
            },
        }
    }
}

/// Every key and span of `txn` must lie in `range`.
fn check_one_range(range: &RangeDescriptor, txn: &Txn) -> Result<(), ApiError> {
    let keys = txn.compares.iter().map(|c| (c.key.as_slice(), None)).chain(
        txn.success.iter().chain(&txn.failure).map(|op| match op {
            TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                (key.as_slice(), None)
            }
            TxnOp::DeleteRange { start, end } => (start.as_slice(), Some(end.as_slice())),
        }),
    );
    for (key, end) in keys {
        let inside = match end {
            None => range.contains(key),
            Some(end) => range.contains_span(key, end),
        };
        if !inside {
            return Err(ApiError::bad_request(format!(
                "the transaction spans ranges: key {} is outside range {} [{}, {}), which \
                 holds its first key; a transaction stays within one range",
                key.escape_ascii(),
                range.id,
                range.start.escape_ascii(),
                range.end.escape_ascii()
            )));
        }
    }
    Ok(())
}

fn unexpected(op: &str, reply: &Reply) -> ApiError {
    ApiError::internal(format!("{op} answered an unexpected reply: {reply:?}"))
}
