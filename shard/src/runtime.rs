//! The per-core event loop: the only glommio code of the shard. One executor thread per
//! shard runs a `Store` over the shard's memory-mapped WAL, the shard's transport (listener
//! on base port + shard index, one connection per peer node) and a tick timer.
//!
//! ```text
//!  frames (transport tasks) --on_frame--> store inputs, wake the loop (not for an
//!        empty liveness batch)
//!  sync tasks: fdatasync up to a target --done--> wake the loop
//!  loop: wait (wake | oldest sync done | next tick; every group asleep: the tick of the
//!        next liveness beat, then the ticks slept through in a row) -> tick?
//!        -> oldest syncs done? on_sync_done, finish_synced() each -> send, answer
//!        -> process() (while syncs run only if the store allows) -> send, answer
//!        -> needs a sync, fewer than `WalConfig::syncs_in_flight` run, and none or the
//!           store allows the overlap (`may_overlap_syncs`)? begin one;
//!           none running? finish() -> send, answer
//!        -> publish status now and then
//!  stop: stop accepting, finish the syncs in flight, close
//! ```
//!
//! Each fdatasync runs in a task of its own. With `StoreConfig::pipelined_turns` (on by
//! default) the loop goes on handling what arrives meanwhile: a leader appends and
//! replicates new proposals at once, and commits, applies and answers the writes its
//! followers acknowledge. What those turns append gets a sync of its own at once while
//! fewer than `WalConfig::syncs_in_flight` (the node's `--wal-syncs-in-flight`, 2 by
//! default) run, and otherwise waits for the next one. Syncs are completed in the order
//! they began: one that ends first waits for the older. Without pipelined turns the loop
//! waits for the sync before the next `process()`. Acknowledgements and votes leave only
//! after the sync covering them (`Store::finish_synced`).
//!
//! Everything the node's other threads see (status, metrics, health) goes through
//! [`NodeShared`], updated by each shard a few times per second; cross-core channels are
//! not on the hot path.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use quasar_rpc::conn::{Conn, Delivery, InFrame};
use quasar_rpc::frame::{access_body, FrameError, FrameKind};
use quasar_rpc::message::{
    self as msg, AdminReply, AdminRequest, AdminResponse, ArchivedAdminOp, ClientRequest,
    ClusterId, InvalidReason, Member, MemberState, NodeStatus, RaftBatch, RangeInfo, RangeSelector,
    RequestError, ShardStatus,
};
use quasar_rpc::transport::{
    shard_addr, Destination, FrameHandler, PeerInfo, Transport, TransportConfig, TransportStats,
};
use quasar_wal::{MmapDisk, Wal, WalConfig};
use tracing::{error, info, warn};

use crate::raft::{NodeId, Role};
use crate::store::snapfile::DirSnapshots;
use crate::store::{ConnToken, ReplicaStatus, SharedDirectory, Store, StoreConfig, StoreMetrics};

/// What one shard last published about itself.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// Every serving replica's status by group. Brought up to date in place with the
    /// statuses that may have changed (`Store::status_changes`), so an idle shard's
    /// reports cost nothing; copying a report copies a pointer.
    pub replicas: Arc<BTreeMap<msg::GroupId, ReplicaStatus>>,
    pub metrics: StoreMetrics,
    pub transport: TransportStats,
    /// Bytes of WAL segments on disk.
    pub wal_bytes: u64,
    pub running: bool,
    /// Why the shard stopped serving (a failed fsync, a damaged log ...).
    pub failure: Option<String>,
    /// Where the shard thread's CPU time can be read (`/proc/self/task/<tid>/stat`).
    pub thread_stat: Option<PathBuf>,
}

/// Time spent in the shard's hot path, reported to the node's metrics.
pub trait ShardObserver: Send + Sync {
    fn wal_append(&self, shard: u32, seconds: f64);
    fn wal_fsync(&self, shard: u32, seconds: f64);
    /// A client request answered (`op` is the operation's name).
    fn request(&self, shard: u32, op: &'static str, seconds: f64, ok: bool);
}

/// An observer that records nothing (tests).
pub struct NoObserver;

impl ShardObserver for NoObserver {
    fn wal_append(&self, _: u32, _: f64) {}
    fn wal_fsync(&self, _: u32, _: f64) {}
    fn request(&self, _: u32, _: &'static str, _: f64, _: bool) {}
}

/// State shared by every shard and the node's other threads.
pub struct NodeShared {
    pub node: NodeId,
    pub cluster_name: String,
    pub cluster: ClusterId,
    pub shards: u32,
    /// Every member with the advertised address of its shard 0.
    pub members: Vec<(NodeId, SocketAddr)>,
    pub started: Instant,
    pub directory: SharedDirectory,
    pub reports: Vec<Mutex<ShardReport>>,
    pub stop: AtomicBool,
    pub observer: Arc<dyn ShardObserver>,
}

impl NodeShared {
    pub fn report(&self, shard: u32) -> ShardReport {
        self.reports
            .get(shard as usize)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The replicas' statuses `shard` last published (a pointer, not a copy).
    fn report_replicas(&self, shard: u32) -> Arc<BTreeMap<msg::GroupId, ReplicaStatus>> {
        self.reports
            .get(shard as usize)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).replicas.clone())
            .unwrap_or_default()
    }

    /// Why `shard` stopped, if it did (without copying its whole report).
    pub fn failure(&self, shard: u32) -> Option<String> {
        self.reports
            .get(shard as usize)
            .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).failure.clone())
    }

    fn publish(&self, shard: u32, report: ShardReport) {
        self.update(shard, |r| *r = report);
    }

    fn update(&self, shard: u32, f: impl FnOnce(&mut ShardReport)) {
        if let Some(m) = self.reports.get(shard as usize) {
            f(&mut m.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// The leader and commit index of `group` as the local replica knows them.
    fn range_info(&self, d: msg::RangeDescriptor) -> RangeInfo {
        let shard = quasar_rpc::transport::shard_for_group(d.group, self.shards);
        let report = self.report(shard.0);
        let local = report.replicas.get(&d.group);
        // The directory changes when a split or merge applies; reports are published a few
        // times per second: the newer descriptor wins.
        RangeInfo {
            descriptor: match local {
                Some(r) if r.descriptor.epoch > d.epoch => r.descriptor.clone(),
                _ => d,
            },
            leader: local.and_then(|r| r.leader).map(msg::NodeId),
            commit: local.map(|r| msg::LogIndex(r.commit)),
        }
    }

    /// Answers an admin request that needs no Raft round (status, members, ranges).
    pub fn admin(&self, op: &ArchivedAdminOp) -> Result<AdminReply, RequestError> {
        // The directory is read under its lock, never copied whole: an admin request at
        // 100,000 ranges must not cost 100,000 descriptors (a pre-split asks one per split).
        let dir = || self.directory.read().unwrap_or_else(|e| e.into_inner());
        match op {
            ArchivedAdminOp::Status => {
                let cpu = crate::cpu::process().unwrap_or_default();
                Ok(AdminReply::Status(NodeStatus {
                    cluster: self.cluster,
                    node: msg::NodeId(self.node.0),
                    uptime_secs: self.started.elapsed().as_secs(),
                    cpu_user_micros: cpu.user_micros,
                    cpu_system_micros: cpu.system_micros,
                    shards: (0..self.shards)
                        .map(|s| {
                            let r = self.report(s);
                            ShardStatus {
                                shard: msg::ShardId(s),
                                groups: r.replicas.len() as u32,
                                leaders: r
                                    .replicas
                                    .values()
                                    .filter(|x| x.role == Role::Leader)
                                    .count() as u32,
                                wal_bytes: r.wal_bytes,
                                cpu_micros: r
                                    .thread_stat
                                    .as_deref()
                                    .and_then(crate::cpu::read_stat)
                                    .map_or(0, |t| t.total_micros()),
                            }
                        })
                        .collect(),
                }))
            }
            ArchivedAdminOp::ListMembers => Ok(AdminReply::Members(
                self.members
                    .iter()
                    .map(|(n, a)| Member {
                        node: msg::NodeId(n.0),
                        address: a.to_string(),
                        state: MemberState::Active,
                    })
                    .collect(),
            )),
            ArchivedAdminOp::ListRanges { .. } => {
                let ranges: Vec<msg::RangeDescriptor> = dir().ranges().cloned().collect();
                Ok(AdminReply::Ranges {
                    ranges: ranges.into_iter().map(|d| self.range_info(d)).collect(),
                    resume_key: None,
                })
            }
            ArchivedAdminOp::DescribeRange(sel) => {
                let selector: RangeSelector =
                    rkyv::deserialize::<RangeSelector, rkyv::rancor::Error>(sel).map_err(|_| {
                        RequestError::InvalidRequest {
                            reason: InvalidReason::EmptyKey,
                        }
                    })?;
                let d = match &selector {
                    RangeSelector::Id(id) => dir().by_id(*id).cloned(),
                    RangeSelector::Key(k) => dir().lookup(k).cloned(),
                };
                match d {
                    Some(d) => Ok(AdminReply::Range(self.range_info(d))),
                    None => Err(RequestError::UnknownRange {
                        range: match selector {
                            RangeSelector::Id(id) => id,
                            RangeSelector::Key(_) => msg::RangeId(0),
                        },
                    }),
                }
            }
            _ => Err(RequestError::InvalidRequest {
                reason: InvalidReason::Unsupported,
            }),
        }
    }
}

/// Everything one shard needs to run.
pub struct ShardSpec {
    pub store: StoreConfig,
    pub wal_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub wal: WalConfig,
    /// Where this shard listens.
    pub listen: SocketAddr,
    pub tick: Duration,
    pub shared: Arc<NodeShared>,
    /// TLS on the shard's listener and peer connections (`None`: plaintext).
    pub tls: Option<quasar_rpc::tls::NodeTls>,
    /// Who may do what (checked per request against the connection's principal).
    pub access: Arc<quasar_rpc::auth::AccessPolicy>,
}

/// Why a shard could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("shard {shard}: cannot open the WAL in {dir}: {source}")]
    Wal {
        shard: u32,
        dir: PathBuf,
        source: quasar_wal::WalError,
    },
    #[error("shard {shard}: {source}")]
    Store {
        shard: u32,
        source: crate::store::StoreError,
    },
    #[error("shard {shard}: snapshot directory {dir}: {source}")]
    Snapshots {
        shard: u32,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("shard {shard}: {source}")]
    Transport {
        shard: u32,
        source: quasar_rpc::error::TransportError,
    },
}

type ShardStore = Store<MmapDisk, DirSnapshots>;

/// When a request arrived and which operation it is.
type Started = (Instant, &'static str);

struct Handler {
    shard: u32,
    store: RefCell<Option<Rc<RefCell<ShardStore>>>>,
    shared: Arc<NodeShared>,
    conns: RefCell<HashMap<ConnToken, Weak<Conn>>>,
    /// Requests in flight: when they arrived and what they are, for latency metrics.
    started: RefCell<HashMap<(ConnToken, u64), Started>>,
    wake: LocalSender<()>,
    pending_wake: Cell<bool>,
    clock: Rc<TickClock>,
}

/// The real time the shard's ticks account for. When the shard falls behind by more than
/// two ticks (a long sync, or the process was stopped with SIGSTOP), the gap is reported to
/// the store as skipped ticks instead of a burst of ticks: timers do not fire in a storm,
/// but every lease learns that the time passed. Checked before each tick and before every
/// client request and Raft batch is handled (a frame may be handled right after the
/// process resumes, before the loop's next tick): a leader stopped past its lease must not
/// serve a read from it.
///
/// While the store is idle (every group asleep, `Store::idle_ticks`) the loop sleeps up to
/// `stride` ticks, until the next liveness beat; the ticks it slept through are then run
/// in a row, as ticks, not reported as skipped (a beat is due among them).
struct TickClock {
    tick: Duration,
    accounted: Cell<Instant>,
    /// The ticks the loop's current sleep may cover (1 unless the store is idle).
    stride: Cell<u64>,
}

impl TickClock {
    fn catch_up(&self, store: &mut ShardStore, now: Instant) {
        let stride = self.stride.get();
        let mut ran = 0;
        while stride > 1
            && ran < stride
            && store.is_idle()
            && now >= self.accounted.get() + self.tick
        {
            store.tick();
            self.accounted.set(self.accounted.get() + self.tick);
            ran += 1;
        }
        let behind = now.saturating_duration_since(self.accounted.get());
        if behind > self.tick * 2 {
            let missed = behind.as_nanos() / self.tick.as_nanos().max(1) - 1;
            let missed = u32::try_from(missed).unwrap_or(u32::MAX / 2);
            store.clock_skipped(u64::from(missed));
            self.accounted
                .set(self.accounted.get() + self.tick.saturating_mul(missed));
        }
    }
}

fn op_name(op: &msg::ArchivedOperation) -> &'static str {
    match op {
        msg::ArchivedOperation::Get { .. } => "get",
        msg::ArchivedOperation::Put { .. } => "put",
        msg::ArchivedOperation::Delete { .. } => "delete",
        msg::ArchivedOperation::CompareAndSet { .. } => "cas",
        msg::ArchivedOperation::DeleteRange { .. } => "delete_range",
        msg::ArchivedOperation::Scan(_) => "scan",
        msg::ArchivedOperation::Txn(_) => "txn",
        msg::ArchivedOperation::Increment { .. } => "increment",
    }
}

impl Handler {
    /// The store, after its lease clocks caught up with real time (see `TickClock`).
    fn caught_up<'a>(&self, store: &'a RefCell<ShardStore>) -> std::cell::RefMut<'a, ShardStore> {
        let mut store = store.borrow_mut();
        self.clock.catch_up(&mut store, Instant::now());
        store
    }

    fn wake(&self) {
        if !self.pending_wake.replace(true) {
            let _ = self.wake.try_send(());
        }
    }
}

impl FrameHandler for Handler {
    fn on_frame(
        &self,
        peer: &PeerInfo,
        frame: InFrame<'_>,
        conn: &Rc<Conn>,
    ) -> Result<(), FrameError> {
        let Some(store) = self.store.borrow().clone() else {
            return Ok(());
        };
        match frame.kind {
            FrameKind::RaftBatch => {
                if !matches!(peer.origin, msg::Origin::Node { .. }) {
                    return Err(FrameError::KindMismatch {
                        expected: FrameKind::ClientRequest,
                        got: frame.kind,
                    });
                }
                let batch = access_body::<RaftBatch>(frame.body)?;
                let mut s = self.caught_up(&store);
                // A peer's empty liveness beat needs no turn (unless the catch-up ticked).
                if s.on_raft_batch(batch) || s.has_work() {
                    drop(s);
                    self.wake();
                }
            }
            FrameKind::ClientRequest => {
                let req = access_body::<ClientRequest>(frame.body)?;
                let needed = quasar_rpc::auth::role_for_operation(&req.op);
                if !peer.principal.role.allows(needed) {
                    warn!(shard = self.shard, peer = %peer.addr, who = %peer.principal,
                        op = op_name(&req.op), "permission denied");
                    let resp = msg::ClientResponse {
                        request_id: req.request_id.get(),
                        result: Err(RequestError::PermissionDenied {
                            needed,
                            role: peer.principal.role,
                        }),
                    };
                    if conn.push(Delivery::Reliable, &resp).is_err() {
                        warn!(shard = self.shard, peer = %peer.addr, "cannot queue a refusal");
                    }
                    return Ok(());
                }
                let token = Rc::as_ptr(conn) as usize as ConnToken;
                let at = Instant::now();
                let answer = self
                    .caught_up(&store)
                    .answer_client_request(token, req, frame.body);
                match answer {
                    // Answered at once (a lease read, a refusal): it leaves with this
                    // connection's flush after the frames of this receive, before the turn,
                    // so a client's next requests overlap the other connections' reads.
                    Some(resp) => {
                        self.shared.observer.request(
                            self.shard,
                            op_name(&req.op),
                            at.elapsed().as_secs_f64(),
                            resp.result.is_ok(),
                        );
                        if conn.push(Delivery::Reliable, &resp).is_err() {
                            warn!(shard = self.shard, peer = %peer.addr, "cannot queue an answer");
                        }
                    }
                    None => {
                        self.conns
                            .borrow_mut()
                            .entry(token)
                            .or_insert_with(|| Rc::downgrade(conn));
                        self.started
                            .borrow_mut()
                            .insert((token, req.request_id.get().0), (at, op_name(&req.op)));
                    }
                }
                // The request may have woken its group, or ticked the clock: the turn
                // decides (a wake-up already pending costs nothing).
                self.wake();
            }
            FrameKind::AdminRequest => {
                let req = access_body::<AdminRequest>(frame.body)?;
                let needed = quasar_rpc::auth::role_for_admin(&req.op);
                if !peer.principal.role.allows(needed) {
                    warn!(shard = self.shard, peer = %peer.addr, who = %peer.principal,
                        op = ?req.op, "permission denied for an admin operation");
                    let resp = AdminResponse {
                        request_id: req.request_id.get(),
                        result: Err(RequestError::PermissionDenied {
                            needed,
                            role: peer.principal.role,
                        }),
                    };
                    if conn.push(Delivery::Reliable, &resp).is_err() {
                        warn!(shard = self.shard, peer = %peer.addr, "cannot queue a refusal");
                    }
                    return Ok(());
                }
                if needed == quasar_rpc::auth::Role::Admin {
                    // Every change an operator makes is logged with who asked.
                    info!(shard = self.shard, peer = %peer.addr, who = %peer.principal,
                        op = ?req.op, "admin operation");
                }
                let range = match &req.op {
                    ArchivedAdminOp::SplitRange { range, .. }
                    | ArchivedAdminOp::TransferLeader { range, .. }
                    | ArchivedAdminOp::MoveReplica { range, .. }
                    | ArchivedAdminOp::AddReplica { range, .. }
                    | ArchivedAdminOp::RemoveReplica { range, .. } => Some(range.get()),
                    ArchivedAdminOp::MergeRanges { left, .. } => Some(left.get()),
                    _ => None,
                };
                let joining = match &req.op {
                    ArchivedAdminOp::MoveReplica { to, .. } => Some(to.get()),
                    ArchivedAdminOp::AddReplica { node, .. } => Some(node.get()),
                    _ => None,
                };
                let stranger =
                    joining.filter(|n| !self.shared.members.iter().any(|(m, _)| m.0 == n.0));
                if let (Some(range), None) = (range, stranger) {
                    // Range changes are carried out by the shard that holds the range.
                    let token = Rc::as_ptr(conn) as usize as ConnToken;
                    let mut s = store.borrow_mut();
                    if s.holds_range(range) {
                        self.conns
                            .borrow_mut()
                            .entry(token)
                            .or_insert_with(|| Rc::downgrade(conn));
                        s.on_admin_request(token, req.request_id.get(), &req.op);
                        drop(s);
                        self.wake();
                        return Ok(());
                    }
                }
                let result = match (range, stranger) {
                    (_, Some(n)) => Err(RequestError::Refused {
                        reason: format!(
                            "node {n} is not a member of the cluster: list them with \
                             `quasarctl node list`"
                        ),
                    }),
                    (Some(range), None) => Err(RequestError::UnknownRange { range }),
                    (None, None) => self.shared.admin(&req.op),
                };
                let resp = AdminResponse {
                    request_id: req.request_id.get(),
                    result,
                };
                if conn.push(Delivery::Reliable, &resp).is_err() {
                    warn!(shard = self.shard, peer = %peer.addr, "cannot queue admin response");
                }
            }
            kind => {
                return Err(FrameError::KindMismatch {
                    expected: FrameKind::ClientRequest,
                    got: kind,
                })
            }
        }
        Ok(())
    }
}

/// Publishes a failure in the shard's report when the shard unwinds (a panic), so that the
/// node stops with a failure instead of waiting forever on a shard that is gone.
struct FailOnPanic {
    shard: u32,
    shared: Arc<NodeShared>,
}

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut report = self.shared.report(self.shard);
            report.running = false;
            report.failure = Some(format!(
                "shard {} panicked (the panic message precedes this in the log)",
                self.shard
            ));
            self.shared.publish(self.shard, report);
        }
    }
}

/// Runs one shard on the calling glommio executor until `shared.stop` is set or the shard
/// fails; publishes its failure in its report (a panic included).
pub async fn run_shard(spec: ShardSpec) -> Result<(), RuntimeError> {
    let shard = spec.store.shard.0;
    let _fail_on_panic = FailOnPanic {
        shard,
        shared: Arc::clone(&spec.shared),
    };
    let result = run_shard_inner(spec.clone_light(), &spec).await;
    let mut report = spec.shared.report(shard);
    report.running = false;
    if let Err(e) = &result {
        error!(shard, error = %e, "shard stopped");
        report.failure = Some(e.to_string());
    }
    spec.shared.publish(shard, report);
    result
}

impl ShardSpec {
    fn clone_light(&self) -> (u32, Arc<NodeShared>) {
        (self.store.shard.0, Arc::clone(&self.shared))
    }
}

async fn run_shard_inner(
    (shard, shared): (u32, Arc<NodeShared>),
    spec: &ShardSpec,
) -> Result<(), RuntimeError> {
    let wal =
        Wal::open_dir(&spec.wal_dir, spec.wal.clone()).map_err(|source| RuntimeError::Wal {
            shard,
            dir: spec.wal_dir.clone(),
            source,
        })?;
    let snaps =
        DirSnapshots::open(&spec.snapshot_dir).map_err(|source| RuntimeError::Snapshots {
            shard,
            dir: spec.snapshot_dir.clone(),
            source,
        })?;
    let seed = quasar_rpc::transport::splitmix64(
        shared.node.0 ^ u64::from(shard) << 32 ^ shared.started.elapsed().as_nanos() as u64,
    );
    let store = Store::open(
        spec.store.clone(),
        wal,
        snaps,
        Arc::clone(&shared.directory),
        seed,
    )
    .map_err(|source| RuntimeError::Store { shard, source })?;
    let store = Rc::new(RefCell::new(store));
    let (wake_tx, wake_rx): (LocalSender<()>, LocalReceiver<()>) = local_channel::new_bounded(1);
    let handler = Rc::new(Handler {
        shard,
        store: RefCell::new(Some(Rc::clone(&store))),
        shared: Arc::clone(&shared),
        conns: RefCell::new(HashMap::new()),
        started: RefCell::new(HashMap::new()),
        wake: wake_tx,
        pending_wake: Cell::new(false),
        clock: Rc::new(TickClock {
            tick: spec.tick,
            accounted: Cell::new(Instant::now()),
            stride: Cell::new(1),
        }),
    });
    let mut tcfg = TransportConfig::new(
        shared.cluster,
        msg::NodeId(shared.node.0),
        msg::ShardId(shard),
    );
    tcfg.conn.idle_timeout = Duration::from_secs(30);
    tcfg.tls = spec.tls.clone();
    tcfg.access = Arc::clone(&spec.access);
    tcfg.members = shared
        .members
        .iter()
        .map(|(n, _)| msg::NodeId(n.0))
        .collect();
    let transport = Transport::new(tcfg, Rc::clone(&handler) as Rc<dyn FrameHandler>);
    let bound = transport
        .listen(spec.listen)
        .map_err(|source| RuntimeError::Transport { shard, source })?;
    info!(shard, addr = %bound, "shard listening");
    for (node, base) in &shared.members {
        if *node != shared.node {
            transport.add_peer(
                Destination {
                    node: msg::NodeId(node.0),
                    shard: msg::ShardId(shard),
                },
                shard_addr(*base, msg::ShardId(shard)),
            );
        }
    }
    let clock = Rc::clone(&handler.clock);
    // This thread's CPU time, for `Status`: found once, read when asked.
    let thread_stat = crate::cpu::this_thread_stat_path();
    let mut last_publish = Instant::now();
    // The syncs in flight, oldest first (`WalConfig::syncs_in_flight` of them at most).
    let mut syncs: VecDeque<SyncInFlight> = VecDeque::new();
    let result = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = Instant::now();
        let stride = store.borrow().idle_ticks();
        clock.stride.set(stride);
        let next_tick =
            clock.accounted.get() + spec.tick.saturating_mul(u32::try_from(stride).unwrap_or(1));
        let busy = syncs.front().is_some_and(SyncInFlight::is_done) || {
            let s = store.borrow();
            s.may_process() && s.has_work()
        };
        if now < next_tick && !busy {
            let wait = next_tick - now;
            let _ = glommio::timer::timeout(wait, async {
                let _ = wake_rx.recv().await;
                Ok(())
            })
            .await;
        }
        handler.pending_wake.set(false);
        let now = Instant::now();
        // The ticks an idle sleep covered run in a row here (see `TickClock`).
        clock.catch_up(&mut store.borrow_mut(), now);
        clock.stride.set(1);
        if now >= clock.accounted.get() + spec.tick {
            store.borrow_mut().tick();
            clock.accounted.set(clock.accounted.get() + spec.tick);
        }
        if let Err(e) = turn(shard, &store, &transport, &handler, &shared, &mut syncs).await {
            break Err(e);
        }
        if last_publish.elapsed() >= Duration::from_millis(100) {
            last_publish = Instant::now();
            // Segments no group needs any more are deleted, cold groups rewritten forward.
            if let Err(e) = store.borrow_mut().wal_mut().collect_garbage() {
                break Err(RuntimeError::Store {
                    shard,
                    source: e.into(),
                });
            }
            // New segments that could not be prepared (a full disk) are asked for again:
            // writes resume by themselves once space is freed.
            store.borrow_mut().wal_mut().check_prepared();
            publish(shard, &store, &transport, &shared, &thread_stat);
            handler
                .conns
                .borrow_mut()
                .retain(|_, w| w.strong_count() > 0);
        }
        // Let the transport's tasks run between turns.
        glommio::executor().yield_if_needed().await;
    };
    // The syncs in flight complete (their writes are answered) before the shard closes.
    let mut result = result;
    while let Some(s) = syncs.pop_front() {
        if result.is_err() {
            break;
        }
        result = complete_sync(shard, &store, &shared, s).await.map(|()| {
            send_outbox(shard, &store, &transport);
            answer_clients(shard, &store, &handler, &shared);
        });
    }
    publish(shard, &store, &transport, &shared, &thread_stat);
    transport.stop();
    handler.store.borrow_mut().take();
    result
}

fn publish(
    shard: u32,
    store: &Rc<RefCell<ShardStore>>,
    transport: &Transport,
    shared: &NodeShared,
    thread_stat: &Option<PathBuf>,
) {
    let changes = {
        let published = shared.report_replicas(shard);
        store.borrow_mut().status_changes(&published)
        // `published` goes here: held on, it would make the update below copy the map.
    };
    let s = store.borrow();
    shared.update(shard, |report| {
        if !changes.is_empty() {
            // Copied only if a reader still holds the previous map.
            let replicas = Arc::make_mut(&mut report.replicas);
            for (g, status) in changes {
                match status {
                    Some(st) => replicas.insert(g, st),
                    None => replicas.remove(&g),
                };
            }
        }
        report.metrics = s.metrics();
        report.transport = transport.stats();
        report.wal_bytes = s.wal().disk_bytes();
        report.running = true;
        report.failure = None;
        report.thread_stat.clone_from(thread_stat);
    });
}

/// The WAL sync the loop began: a task running the fdatasync, and its result (with how
/// long it took) once done.
struct SyncInFlight {
    target: quasar_wal::Lsn,
    done: Rc<Cell<bool>>,
    task: glommio::task::JoinHandle<(std::io::Result<()>, Duration)>,
}

impl SyncInFlight {
    fn is_done(&self) -> bool {
        self.done.get()
    }
}

/// Begins a sync of everything appended so far, run by a task of its own that wakes the
/// loop when it completes; `None` when nothing waits to be synced.
fn begin_sync(
    shard: u32,
    store: &Rc<RefCell<ShardStore>>,
    handler: &Rc<Handler>,
) -> Result<Option<SyncInFlight>, RuntimeError> {
    let job = store
        .borrow_mut()
        .wal_mut()
        .begin_sync()
        .map_err(|e| RuntimeError::Store {
            shard,
            source: e.into(),
        })?;
    let Some(job) = job else {
        return Ok(None);
    };
    store.borrow_mut().sync_started();
    quasar_wal::crash_point!("wal-before-sync");
    let done = Rc::new(Cell::new(false));
    let (flag, wake) = (Rc::clone(&done), Rc::clone(handler));
    let target = job.target();
    let task = glommio::spawn_local(async move {
        let started = Instant::now();
        let result = job.run().await;
        flag.set(true);
        wake.wake();
        (result, started.elapsed())
    })
    .detach();
    Ok(Some(SyncInFlight { target, done, task }))
}

/// Completes the oldest sync begun by `begin_sync` (waiting for it if it still runs): the
/// WAL learns what is durable, and the `Ready`s it covered are finished. A failed fsync
/// poisons the WAL: the shard stops, it never retries.
async fn complete_sync(
    shard: u32,
    store: &Rc<RefCell<ShardStore>>,
    shared: &NodeShared,
    s: SyncInFlight,
) -> Result<(), RuntimeError> {
    let result = match s.task.await {
        Some((result, took)) => {
            shared.observer.wal_fsync(shard, took.as_secs_f64());
            result
        }
        None => Err(std::io::Error::other("the WAL sync task was cancelled")),
    };
    quasar_wal::crash_point!("wal-after-sync");
    let mut st = store.borrow_mut();
    st.wal_mut()
        .on_sync_done(s.target, result)
        .map_err(|e| RuntimeError::Store {
            shard,
            source: e.into(),
        })?;
    st.finish_synced()
        .map_err(|source| RuntimeError::Store { shard, source })
}

/// One turn: the completed syncs finished, oldest first (a newer one that completed
/// waits for the older); new work processed (while syncs run too, if the store allows);
/// then a sync begun for what needs one if the WAL allows another in flight, or, with
/// none in flight, the turn's work finished at once. Sends and answers follow each step.
async fn turn(
    shard: u32,
    store: &Rc<RefCell<ShardStore>>,
    transport: &Transport,
    handler: &Rc<Handler>,
    shared: &NodeShared,
    syncs: &mut VecDeque<SyncInFlight>,
) -> Result<(), RuntimeError> {
    let mut completed = false;
    while syncs.front().is_some_and(SyncInFlight::is_done) {
        if let Some(s) = syncs.pop_front() {
            complete_sync(shard, store, shared, s).await?;
            completed = true;
        }
    }
    if completed {
        send_outbox(shard, store, transport);
        answer_clients(shard, store, handler, shared);
    }
    if !store.borrow().may_process() {
        return Ok(());
    }
    let started = Instant::now();
    let needs_sync = store
        .borrow_mut()
        .process()
        .map_err(|source| RuntimeError::Store { shard, source })?;
    if needs_sync {
        shared
            .observer
            .wal_append(shard, started.elapsed().as_secs_f64());
    }
    send_outbox(shard, store, transport);
    // Writes `process` applied (committed and durable on a majority) are answered now,
    // while the sync runs.
    answer_clients(shard, store, handler, shared);
    // A sync begins beside those in flight only if the store has nothing waiting for a
    // turn without one (`may_overlap_syncs`); the WAL bounds how many run.
    if needs_sync && (syncs.is_empty() || store.borrow().may_overlap_syncs()) {
        if let Some(s) = begin_sync(shard, store, handler)? {
            syncs.push_back(s);
            return Ok(());
        }
    }
    if !syncs.is_empty() {
        return Ok(());
    }
    store
        .borrow_mut()
        .finish()
        .map_err(|source| RuntimeError::Store { shard, source })?;
    send_outbox(shard, store, transport);
    answer_clients(shard, store, handler, shared);
    Ok(())
}

fn send_outbox(shard: u32, store: &Rc<RefCell<ShardStore>>, transport: &Transport) {
    let mut s = store.borrow_mut();
    for batch in s.outbox() {
        let dest = Destination {
            node: batch.to,
            shard: msg::ShardId(shard),
        };
        if let Err(e) = transport.send_raft(dest, batch) {
            warn!(shard, to = batch.to.0, error = %e, "raft batch does not encode; dropped");
        }
    }
    s.recycle_outbox();
    drop(s);
    transport.flush();
}

fn answer_clients(
    shard: u32,
    store: &Rc<RefCell<ShardStore>>,
    handler: &Handler,
    shared: &NodeShared,
) {
    let mut s = store.borrow_mut();
    let conns = handler.conns.borrow();
    let mut started = handler.started.borrow_mut();
    let mut kicked: Vec<Rc<Conn>> = Vec::new();
    for (token, resp) in s.take_responses() {
        if let Some((at, op)) = started.remove(&(token, resp.request_id.0)) {
            shared
                .observer
                .request(shard, op, at.elapsed().as_secs_f64(), resp.result.is_ok());
        }
        let Some(conn) = conns.get(&token).and_then(Weak::upgrade) else {
            continue;
        };
        if conn.push(Delivery::Reliable, &resp).is_ok()
            && !kicked.iter().any(|c| Rc::ptr_eq(c, &conn))
        {
            kicked.push(conn);
        }
    }
    for (token, resp) in s.take_admin_responses() {
        let Some(conn) = conns.get(&token).and_then(Weak::upgrade) else {
            continue;
        };
        if conn.push(Delivery::Reliable, &resp).is_ok()
            && !kicked.iter().any(|c| Rc::ptr_eq(c, &conn))
        {
            kicked.push(conn);
        }
    }
    for c in kicked {
        c.kick();
    }
}
