//! The multi-raft store of one shard: every Raft group of the core in one map, joined to the
//! shard's WAL, its snapshot files and the ranges' state machines. No clock, socket or async:
//! the runtime (`crate::runtime`, or the whole-node simulator) calls it and moves bytes.
//!
//! One event-loop turn:
//!
//! ```text
//!  inputs (any order):  tick()  on_raft_batch(batch)  on_client_request(token, req)
//!                       (answer_client_request: the same, an answer given at once, a
//!                       lease read or a refusal, returned for the runtime to send now)
//!  process()      every group with work hands over its Ready; ONE WAL append for all of
//!                 them; messages that may leave before the sync go to the outbox; the
//!                 committed client writes (durable on a majority already) are applied
//!  [runtime]      flush the outbox (one RaftBatch per destination node), send
//!                 take_responses() (those writes' answers), await the WAL's SyncJob (one
//!                 fdatasync; none when the turn wrote only commit indexes), report it
//!                 with wal_mut().on_sync_done
//!  finish()       votes and acknowledgements go to the outbox (only now: after the sync);
//!                 the rest of the committed entries (configuration changes, range
//!                 commands, an installed snapshot) are applied, reads served; advance
//!  [runtime]      flush the outbox, send take_responses() to their connections
//! ```
//!
//! With a sync in flight (`sync_started` ... `finish_synced`), `process()` may run again
//! (`pipelined_turns`, `may_process`), and the runtime may begin another sync for what it
//! appended (`WalConfig::syncs_in_flight`); `finish_synced` finishes the oldest one's
//! `Ready`s, in the order the syncs began.
//!
//! Snapshot files never hold the turn long: a range's file is encoded a slice per `tick()`
//! (`RangeState::continue_snapshot`, copy on write for keys written meanwhile), then handed
//! to the snapshot store's writer thread (`SnapshotStore::save_in_background`); `process()`
//! collects the files that became durable and only then compacts their logs.
//!
//! Groups live on shard `shard_for_group(group, shards)` of every node, so a group's peers
//! are the same shard index on other nodes, and a destination is just a node id.
//! A replica is created at open for every range of the directory this node holds, and lazily
//! when a message arrives for a group the directory says this node should hold.

pub mod command;
mod directory;
mod groups;
mod membership;
mod ranges;
pub mod snapfile;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::{BufMut, Bytes, BytesMut};
use quasar_rpc::frame::access_body;
use quasar_rpc::message::{
    self as msg, AdminReply, AdminResponse, AmbiguousReason, ArchivedAdminOp,
    ArchivedClientRequest, ArchivedRaftBatch, ArchivedRaftBody, ClientRequest, ClientResponse,
    InvalidReason, RaftBatch, RangeDescriptor, RangeId, RequestError, RequestId, UnavailableReason,
};
use quasar_wal::{Batch, Disk, Wal, WalError};
use rkyv::util::AlignedVec;
use smallvec::SmallVec;
use tracing::{debug, info, warn};

use crate::raft::{
    self, ConfState, Config as RaftConfig, EntryKind, LogId, LogIndex, Message, MessageBody,
    NodeId, RaftNode, ReadRequestId, Ready, Restored, Role, SnapshotMeta, SnapshotStatus, Term,
};
use crate::range::{RangeLimits, RangeState, SnapshotProgress};
use command::{RangeCommand, PAYLOAD_RANGE_COMMAND};
pub use directory::Directory;
use groups::Groups;
use snapfile::{SnapshotFile, SnapshotStore};

/// The first byte of a normal entry's payload that carries a client request (the leader's
/// empty no-op entries have no payload; conf change payloads start with their tag, 1 to 3).
pub const PAYLOAD_REQUEST: u8 = 0;

/// A connection of the runtime that is waiting for answers.
pub type ConnToken = u64;

/// The token of a change the store starts itself (no connection waits for its answer).
pub(crate) const INTERNAL_TOKEN: ConnToken = u64::MAX;

/// Ticks between two replicas' membership checks (`Store::check_membership`).
const MEMBERSHIP_CHECK_TICKS: u64 = 10;

/// The system key space: keys below `META_END` belong to the meta range.
pub const META_END: &[u8] = b"\x01";

pub type SharedDirectory = Arc<RwLock<Directory>>;

/// A member's replication state as its leader sees it (diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub node: u64,
    /// `Probe`, `Replicate` or `Snapshot { pending }`.
    pub state: String,
    pub matched: u64,
    pub next: u64,
}

/// Settings of one shard's store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node: NodeId,
    pub shard: msg::ShardId,
    pub shards: u32,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    /// Serve linearizable reads under the leader lease when it is valid (else ReadIndex);
    /// `false`: always ReadIndex.
    pub lease_reads: bool,
    /// Let `process` run while a sync is in flight (pipelined turns, see `may_process`).
    /// On by default; `false`: each turn waits for its sync.
    pub pipelined_turns: bool,
    pub limits: RangeLimits,
    /// Take a snapshot (and compact the log below it) once this many entries were applied
    /// since the last one; 0: never.
    pub snapshot_after_entries: u64,
    /// ... or once this many payload bytes were applied since the last one; 0: never.
    pub snapshot_after_bytes: u64,
    /// An idle group (everything committed and applied everywhere, nothing in flight)
    /// quiesces after this many ticks: it stops ticking and heartbeating until traffic wakes
    /// it. 0 disables quiescence.
    pub quiesce_after_ticks: u64,
    /// Snapshot bytes per chunk sent to a lagging replica (one chunk per destination per turn).
    pub snapshot_chunk_bytes: usize,
    /// A proposal or read unanswered for this many ticks is answered with an error.
    pub request_timeout_ticks: u64,
    /// Length of a tick in milliseconds (for `Stale` reads' staleness bound).
    pub tick_ms: u64,
    /// A range's leader splits it in the middle once it holds this many key and value
    /// bytes; 0: never. Also the largest merged range a merge may produce.
    pub split_after_bytes: u64,
    /// ... or this many keys; 0: never (also bounds merges).
    pub split_after_keys: u64,
    /// ... or once it applied this many writes per second over the last
    /// [`LOAD_WINDOW_TICKS`] ticks; 0: never.
    pub split_after_writes_per_sec: u64,
    /// Ticks a split child or merge survivor waits before writing its forced snapshot file
    /// (so the new range elects first, off the split's latency). 20; the simulator widens
    /// it to explore the window in which a child lives only in its parent's log.
    pub forced_snapshot_delay_ticks: u64,
    /// Entries of snapshot files encoded per tick (shared by the files under way): a large
    /// range's file is encoded a slice per tick between turns of ordinary work, so its
    /// leader keeps heartbeating and the file's cost is spread thin (8,192: about a
    /// millisecond per 10 ms tick, a million keys in about 1.2 s).
    pub snapshot_entries_per_tick: usize,
}

/// The window over which a range's write rate is measured for load-based splits.
pub const LOAD_WINDOW_TICKS: u64 = 100;

impl StoreConfig {
    pub fn new(node: NodeId, shard: msg::ShardId, shards: u32) -> StoreConfig {
        StoreConfig {
            node,
            shard,
            shards,
            election_ticks: 10,
            lease_reads: true,
            pipelined_turns: true,
            heartbeat_ticks: 2,
            limits: RangeLimits::default(),
            snapshot_after_entries: 10_000,
            snapshot_after_bytes: 64 << 20,
            quiesce_after_ticks: 20,
            snapshot_chunk_bytes: 1 << 20,
            request_timeout_ticks: 500,
            tick_ms: 10,
            split_after_bytes: 64 << 20,
            split_after_keys: 0,
            split_after_writes_per_sec: 0,
            forced_snapshot_delay_ticks: 20,
            snapshot_entries_per_tick: 8 << 10,
        }
    }

    /// The Raft configuration of this store's replica of `group`.
    fn raft(&self, group: msg::GroupId) -> RaftConfig {
        let mut c = RaftConfig::new(self.node);
        c.group = group.0;
        c.election_timeout_ticks = self.election_ticks;
        c.heartbeat_interval_ticks = self.heartbeat_ticks;
        // The lease must end before any follower may elect a new leader: below the
        // election timeout, with a margin for clock drift between nodes.
        c.lease_ticks = if self.lease_reads {
            self.election_ticks
                .saturating_sub(self.election_ticks / 5 + 1)
        } else {
            0
        };
        c.snapshot_after_entries = 0;
        c
    }
}

/// Why a store stops: it must not serve its groups any more.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("snapshot of group {group} at {location}: {reason}")]
    Snapshot {
        group: u64,
        location: String,
        reason: String,
    },
    #[error("group {group}: entry {index} in the WAL has an unknown payload tag {tag}; the log is damaged")]
    BadEntry { group: u64, index: u64, tag: u8 },
    #[error("group {group}: {reason}")]
    Raft { group: u64, reason: String },
}

/// Counters of one store, for `/metrics` and `/status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreMetrics {
    pub proposals: u64,
    pub proposals_refused: u64,
    pub applied_entries: u64,
    /// Entries this replica learned are committed (summed over its groups).
    pub committed_entries: u64,
    pub leader_changes: u64,
    pub reads: u64,
    pub wal_appends: u64,
    pub wal_bytes: u64,
    /// Turns whose WAL append held only commit indexes, written without a sync of their own.
    pub lazy_turns: u64,
    /// Turns that gathered work while a sync was in flight (pipelined).
    pub pipelined_turns: u64,
    pub snapshots_taken: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub raft_messages_in: u64,
    pub raft_messages_out: u64,
    pub raft_messages_bad: u64,
    pub splits: u64,
    pub merges: u64,
    /// Groups on the awake list now (a gauge: the others are quiesced and cost nothing).
    pub awake_groups: u64,
    /// Times a sleeping group was woken (by a request, a message, a silent leader node ...).
    pub groups_woken: u64,
}

/// A point-in-time view of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub descriptor: RangeDescriptor,
    pub role: Role,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    pub state_hash: u32,
    pub keys: usize,
    pub quiesced: bool,
    /// Restored at the store's open and has heard of no leader since: dormant, or in its
    /// first election after the restart (see `Dormant`). `/ready` does not wait for it: its
    /// first request or message elects a leader.
    pub restarting: bool,
}

struct Proposal {
    index: LogIndex,
    term: Term,
    token: ConnToken,
    request_id: RequestId,
    at_tick: u64,
}

struct PendingRead {
    group: msg::GroupId,
    token: ConnToken,
    request_id: RequestId,
    body: AlignedVec,
    at_tick: u64,
}

/// A snapshot arriving in chunks.
struct Incoming {
    last: LogId,
    from: NodeId,
    total: u64,
    bytes: Vec<u8>,
}

/// A received snapshot, decoded, waiting to be installed.
struct Staged {
    last: LogId,
    from: NodeId,
    state: RangeState,
    /// The file as received (kept as this replica's snapshot file once installed).
    file: Vec<u8>,
}

/// A snapshot being sent in chunks.
struct Outgoing {
    to: NodeId,
    /// The leader's term when the transfer started: every chunk carries it, and the
    /// transfer stops when this node no longer leads in it.
    term: Term,
    last: LogId,
    file: Arc<Vec<u8>>,
    offset: usize,
    descriptor: RangeDescriptor,
    conf: ConfState,
}

struct Replica {
    group: msg::GroupId,
    raft: RaftNode,
    range: RangeState,
    proposals: VecDeque<Proposal>,
    /// Reads whose index is known, waiting for the state machine: (index, read id).
    waiting_reads: Vec<(LogIndex, u64)>,
    was_leader: bool,
    last_leader: Option<NodeId>,
    /// A snapshot being received (boxed: rare).
    incoming: Option<Box<Incoming>>,
    /// A received snapshot, decoded, waiting for the core's `Ready::snapshot`. Boxed: rare,
    /// and as large as a range's state (every replica would carry the room).
    staged: Option<Box<Staged>>,
    outgoing: Vec<Outgoing>,
    last_snapshot: LogIndex,
    /// Payload bytes applied since the last snapshot.
    bytes_since_snapshot: u64,
    /// The tick of the last message or request for this group.
    last_activity: u64,
    /// The tick of the last message from the group's leader (stale reads' bound).
    last_leader_contact: u64,
    /// The commit index at the end of the last turn (for the commits counter).
    last_commit: LogIndex,
    /// A snapshot taken: compact the WAL below it in the next append.
    compact_below: Option<LogIndex>,
    /// A range created by a split of `parent` that has no snapshot file of its own yet: its
    /// state is durable only through the parent's log, which must keep the split entry.
    parent: Option<msg::GroupId>,
    /// Groups this range absorbed by merges: their files and log go once this range's next
    /// snapshot covers the merge.
    absorbed: Vec<msg::GroupId>,
    /// Parents (other than this range) of split children absorbed here before they had a
    /// file of their own: until this range's next file covers the merge, the child's state
    /// lives in that parent's log, which must keep the split (see `has_unsaved_child`).
    absorbed_parents: Vec<msg::GroupId>,
    /// The snapshot file being written in the background, if any (one at a time; boxed).
    saving: Option<Box<Saving>>,
    /// Writes applied in the current load window, and the tick the window started.
    window_writes: u64,
    window_start: u64,
    /// Writes per second over the last complete window.
    writes_per_sec: u64,
    /// The tick the split policy last looked at this range while a split was due.
    split_checked: u64,
    /// Created for a group this node never saw the birth of (a split it skipped by
    /// installing its parent's snapshot): it knows nothing until the group's leader sends a
    /// snapshot, and serves nothing meanwhile.
    awaiting_snapshot: bool,
    /// On the store's awake list (see `groups`): set by every mutable access.
    awake: bool,
    /// On the store's pending list (see `groups`): may have work for the next turn.
    pending: bool,
    /// Restored asleep at the store's open, and not yet roused (see `Dormant`).
    dormant: Dormant,
    /// Made dormant at the open and has heard of no leader since (`ReplicaStatus`).
    restarting: bool,
}

/// A replica restored at a restart sleeps until something needs it, so that a node with
/// 100,000 ranges serves as soon as its store is open instead of holding 100,000 elections
/// first, all at once. Its core is quiesced without a leader: no tick reaches it, and it
/// costs nothing. It is roused (`Store::rouse`: its clock told of the time it slept, which
/// ends the restart's vote guard on time, and its core woken) by a message for its group,
/// a client request, or the store's restart pacer, which campaigns the `Leads` replicas
/// a few hundred per tick once the vote guard is over, and then wakes the `Waits` ones
/// that no campaign reached, so every group has a leader again in the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dormant {
    /// Not dormant.
    No,
    /// Voted for another node (or none) in its last term: waits for that node's campaign.
    Waits,
    /// Voted for itself in its last term (it was the group's candidate, most likely its
    /// leader): it campaigns first, so a group's replicas do not campaign against each
    /// other.
    Leads,
}

impl Replica {
    /// Whether this range's state is durable only through `g`'s log: it is a split child of
    /// `g` without a file, or absorbed one before its own file covers the merge.
    fn pins_log_of(&self, g: msg::GroupId) -> bool {
        self.parent == Some(g) || (self.group != g && self.absorbed_parents.contains(&g))
    }

    /// Whether a turn (`Store::process`) may have something to do for this replica: a
    /// `Ready` to gather, a compaction to write, a snapshot transfer to send a chunk of.
    fn has_turn_work(&self) -> bool {
        self.raft.has_ready()
            || self.compact_below.is_some()
            || self.outgoing.iter().any(|o| o.offset < o.file.len())
    }

    /// Every group whose log this range pins (`pins_log_of` is true exactly for these).
    fn pinned_logs(&self) -> impl Iterator<Item = msg::GroupId> + '_ {
        self.parent.into_iter().chain(
            self.absorbed_parents
                .iter()
                .copied()
                .filter(move |p| *p != self.group),
        )
    }

    fn new(
        group: msg::GroupId,
        raft: RaftNode,
        range: RangeState,
        last_snapshot: LogIndex,
        now: u64,
    ) -> Replica {
        Replica {
            group,
            raft,
            range,
            proposals: VecDeque::new(),
            waiting_reads: Vec::new(),
            was_leader: false,
            last_leader: None,
            incoming: None,
            staged: None,
            outgoing: Vec::new(),
            last_snapshot,
            bytes_since_snapshot: 0,
            last_activity: 0,
            last_leader_contact: 0,
            last_commit: LogIndex(0),
            compact_below: None,
            parent: None,
            absorbed: Vec::new(),
            absorbed_parents: Vec::new(),
            saving: None,
            window_writes: 0,
            window_start: now,
            writes_per_sec: 0,
            split_checked: 0,
            awaiting_snapshot: false,
            awake: false,
            pending: false,
            dormant: Dormant::No,
            restarting: false,
        }
    }
}

/// A snapshot file on its way: encoded a slice per tick, then written by the snapshot
/// store's background writer.
#[derive(Debug)]
struct Saving {
    ticket: u64,
    /// The last entry the file covers.
    index: LogIndex,
    /// `bytes_since_snapshot` when it started (what its completion takes off).
    bytes: u64,
    /// The file's size, once encoded.
    size: usize,
    /// The file while it is being encoded; `None` once handed to the writer.
    encoding: Option<Box<Encoding>>,
}

/// A snapshot file being encoded (`RangeState::continue_snapshot`).
#[derive(Debug)]
struct Encoding {
    file: Vec<u8>,
    /// CRC32C of the file's prefix (`SnapshotFile::begin`), and where the range part starts.
    prefix_crc: u32,
    range_at: usize,
}

/// An admin request waiting for its change to take effect.
struct PendingAdmin {
    token: ConnToken,
    request_id: RequestId,
    at_tick: u64,
    wait: AdminWait,
}

#[derive(Clone)]
enum AdminWait {
    /// The split entry `index` of `group` to apply.
    Split {
        group: msg::GroupId,
        index: LogIndex,
        term: Term,
    },
    /// Split applied: waiting for the right-hand range to have a leader.
    SplitServing {
        left: RangeDescriptor,
        right: RangeDescriptor,
    },
    /// The freeze entry `index` of `right` to apply.
    Freeze {
        left: msg::GroupId,
        right: msg::GroupId,
        index: LogIndex,
        term: Term,
    },
    /// Right frozen at `freeze_index`: waiting for every replica to hold it, then the merge
    /// is proposed in `left`.
    Frozen {
        left: msg::GroupId,
        right: msg::GroupId,
        freeze_index: LogIndex,
    },
    /// The merge entry `index` of `left` to apply.
    Merge {
        left: msg::GroupId,
        index: LogIndex,
        term: Term,
    },
    /// Leadership of `group` going to `to`.
    Transfer { group: msg::GroupId, to: NodeId },
    /// A change of `group`'s replicas: `add` joins, `remove` leaves (see `membership.rs`).
    Replicas {
        group: msg::GroupId,
        add: Option<NodeId>,
        remove: Option<NodeId>,
        stage: membership::ReplicaStage,
    },
}

/// The `Ready`s of one turn (or several pipelined ones) under one sync in flight.
struct SyncingTurn {
    readys: Vec<(msg::GroupId, Box<Ready>)>,
    /// Whether all `finish_synced` will do for `readys` is send acknowledgements, serve
    /// reads and advance the cores: no snapshot, every committed entry applied before the
    /// sync. Only then may `process` run while the sync is in flight (`may_process`).
    plain: bool,
}

/// The store of one shard.
pub struct Store<D: Disk, S: SnapshotStore> {
    cfg: StoreConfig,
    wal: Wal<D>,
    snaps: S,
    dir: SharedDirectory,
    /// Every replica, and which are awake: the loops visit only those (see `groups`).
    groups: Groups,
    ticks: u64,
    outbox: Vec<RaftBatch>,
    responses: Vec<(ConnToken, ClientResponse)>,
    /// The `Ready`s `process` gathered since the last sync began (or the last `finish`), in
    /// the order handed: their records are in the WAL, not yet covered by a sync.
    in_flight: Vec<(msg::GroupId, Box<Ready>)>,
    /// Whether `in_flight` holds records that must be durable before it is finished.
    in_flight_needs_sync: bool,
    /// A record this store must see durable was written lazily or by an earlier turn (a
    /// removed replica whose log was already empty: its removal waits for the WAL's end,
    /// see `removed`): the next turn syncs even if it appends nothing that needs it.
    sync_wanted: bool,
    /// The syncs in flight, oldest first: the `Ready`s whose records each covers
    /// (`sync_started`), finished by `finish_synced` once it completed, in this order.
    syncing: VecDeque<SyncingTurn>,
    /// Emptied `Ready` vectors, kept for their capacity.
    spare_turns: Vec<Vec<(msg::GroupId, Box<Ready>)>>,
    /// A pipelined `process` left a received snapshot to the next unpipelined one (see
    /// `may_overlap_syncs`).
    snapshot_deferred: bool,
    /// The end of the last batch written without a sync of its own (only commit indexes):
    /// unsynced bytes up to here do not make the next turn sync.
    lazy_lsn: quasar_wal::Lsn,
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
    scratch: AlignedVec,
    metrics: StoreMetrics,
    seed: u64,
    /// Ticks that ran (`tick` calls: `clock_skipped` adds none). A peer's silence is
    /// counted in these, not in `ticks`: a shard whose own loop fell behind (100,000 groups
    /// awake after a restart) reads its peers' batches late, and counting the ticks it
    /// skipped meanwhile made every peer look silent, which woke every quiesced follower,
    /// which slowed the loop further: after a restart at 100,000 ranges the groups never
    /// went back to sleep.
    beats: u64,
    /// The beat at which each peer node was last heard from (any batch, even empty).
    last_heard: HashMap<NodeId, u64>,
    /// Peer nodes: every other replica of every range this shard holds.
    peers: Vec<NodeId>,
    /// Nodes silent for an election timeout (their quiesced followers here were woken when
    /// the silence started); a node leaves when heard again.
    silent: Vec<NodeId>,
    /// Send a batch to every peer in this turn, even an empty one.
    liveness_due: bool,
    /// Turns in a row whose outbox used under a quarter of its grown vectors (`recycle_outbox`).
    outbox_quiet: u32,
    admin_responses: Vec<(ConnToken, AdminResponse)>,
    pending_admin: Vec<PendingAdmin>,
    /// Messages for groups this shard does not hold (yet): a split's new range may hear
    /// from its first leader before this replica applied the split. (group, message, tick).
    orphans: Vec<(msg::GroupId, Message, u64)>,
    /// Groups that must write a snapshot file soon (split children, merge survivors), and
    /// the tick from which it is due.
    forced_snapshots: Vec<(msg::GroupId, u64)>,
    /// Due groups of `forced_snapshots` whose log another range pins: they wait for the
    /// table to report them unpinned (see `write_forced_snapshots`).
    forced_waiting: std::collections::HashSet<msg::GroupId, quasar_wal::GroupHasher>,
    /// The ticket of the next background snapshot save.
    next_save: u64,
    /// Groups whose snapshot file is being encoded, a slice per tick.
    encoding: Vec<msg::GroupId>,
    /// The last range id this store proposed for a split.
    last_allocated: u64,
    /// Groups destroyed here (merged away) since the store opened: messages for them are
    /// not taken for a new range's.
    destroyed: std::collections::BTreeSet<msg::GroupId>,
    /// Groups merged away here since the start: the survivor and the merge's index in its
    /// log (told to a zombie replica with `Destroyed`).
    merged_into: HashMap<msg::GroupId, (msg::GroupId, LogIndex)>,
    /// Ranges a newer local range supersedes but a local left neighbour may still absorb
    /// (see `left_neighbour_may_absorb`): destroyed by a later sweep once it cannot.
    kept_superseded: Vec<msg::GroupId>,
    /// Groups whose membership no longer has this replica as a voter of the incoming
    /// configuration: removed once that is final (see `membership.rs`).
    leaving: Vec<msg::GroupId>,
    /// Groups this node's replica left (marked `*.gone`): the tick it left (0: before this
    /// start) and the WAL position of the record dropping its log. Never re-created at
    /// start; adopted again only if added back, and only once that record is durable (the
    /// old log must not come back after a crash under the new replica).
    removed: BTreeMap<msg::GroupId, (u64, quasar_wal::Lsn)>,
    /// The vote floors of groups whose replica here was once removed with its log (see
    /// [`Restored::vote_floor`]; `*.floor` files, kept when the group adds this node back):
    /// every replica of the group created here later starts with it.
    floors: BTreeMap<msg::GroupId, LogId>,
    /// After a snapshot file could not be written (a full disk ...), no snapshot is taken
    /// before this tick: the policy retries now and then, not every turn (encoding a large
    /// range is not free).
    snapshot_retry_at: u64,
    /// The last group `check_membership` looked at (a round-robin cursor).
    membership_cursor: msg::GroupId,
    /// Snapshot files not written in a row (the retry interval doubles with each).
    snapshot_failures: u32,
    /// The restart pacer's queues (see `Dormant`), popped from the end: the dormant
    /// replicas that campaign first, and then the others.
    restart_leads: Vec<msg::GroupId>,
    restart_waits: Vec<msg::GroupId>,
    /// The tick from which the pacer wakes the `Waits` replicas: a few election timeouts
    /// after the last `Leads` campaign started, time for those campaigns to reach them.
    restart_waits_from: Option<u64>,
}

/// Ticks before the first retry after a snapshot file could not be written; doubled after
/// each failure in a row, up to `SNAPSHOT_RETRY_MAX_TICKS`.
const SNAPSHOT_RETRY_TICKS: u64 = 50;
const SNAPSHOT_RETRY_MAX_TICKS: u64 = 800;

/// Orphan messages kept at most, and for how many ticks.
const MAX_ORPHANS: usize = 1024;

impl<D: Disk, S: SnapshotStore> Store<D, S> {
    /// Opens the store over a recovered WAL and snapshot store: every range of `dir` that
    /// this node holds and that lives on this shard is rebuilt from its snapshot and log.
    pub fn open(
        cfg: StoreConfig,
        wal: Wal<D>,
        snaps: S,
        dir: SharedDirectory,
        seed: u64,
    ) -> Result<Store<D, S>, StoreError> {
        let mut store = Store {
            cfg,
            wal,
            snaps,
            dir,
            groups: Groups::new(),
            ticks: 0,
            outbox: Vec::new(),
            responses: Vec::new(),
            in_flight: Vec::new(),
            in_flight_needs_sync: false,
            sync_wanted: false,
            syncing: VecDeque::new(),
            spare_turns: Vec::new(),
            snapshot_deferred: false,
            lazy_lsn: quasar_wal::Lsn::ZERO,
            reads: BTreeMap::new(),
            next_read: 1,
            scratch: AlignedVec::new(),
            metrics: StoreMetrics::default(),
            seed,
            beats: 0,
            last_heard: HashMap::new(),
            peers: Vec::new(),
            silent: Vec::new(),
            liveness_due: false,
            outbox_quiet: 0,
            admin_responses: Vec::new(),
            pending_admin: Vec::new(),
            orphans: Vec::new(),
            forced_snapshots: Vec::new(),
            forced_waiting: Default::default(),
            next_save: 1,
            encoding: Vec::new(),
            last_allocated: 0,
            destroyed: std::collections::BTreeSet::new(),
            merged_into: HashMap::new(),
            kept_superseded: Vec::new(),
            leaving: Vec::new(),
            removed: BTreeMap::new(),
            floors: BTreeMap::new(),
            snapshot_retry_at: 0,
            membership_cursor: msg::GroupId(0),
            snapshot_failures: 0,
            restart_leads: Vec::new(),
            restart_waits: Vec::new(),
            restart_waits_from: None,
        };
        let (mine, max_id): (Vec<RangeDescriptor>, u64) = {
            let dir = store.dir.read().unwrap_or_else(|e| e.into_inner());
            (
                dir.ranges().filter(|d| store.owns(d)).cloned().collect(),
                dir.max_id(),
            )
        };
        store.last_allocated = max_id;
        let dir_err = |e: std::io::Error| StoreError::Snapshot {
            group: 0,
            location: "snapshot directory".into(),
            reason: e.to_string(),
        };
        let buried = store.snaps.buried().map_err(dir_err)?;
        store.destroyed.extend(buried);
        let floors = store.snaps.floors().map_err(dir_err)?;
        store.floors.extend(floors);
        let removed = store.snaps.removed().map_err(dir_err)?;
        for g in removed {
            // A crash may have lost the record that dropped its log: drop it again.
            let lsn = store.compact_all(g)?;
            store.sync_wanted |= lsn > store.wal.durable_lsn();
            store.removed.insert(g, (0, lsn));
        }
        for d in &mine {
            if !store.removed.contains_key(&d.group) {
                store.create_replica(d.group, Some(d), None)?;
            }
        }
        // Ranges born of splits (and every range with a snapshot) are found by their files;
        // a split child without a file yet is re-created when its parent's log replays.
        let files = store.snaps.groups().map_err(dir_err)?;
        for g in files {
            if store.destroyed.contains(&g) {
                // Buried before its file went (a crash in between): finish the job.
                store.destroy_files(g)?;
                continue;
            }
            if store.removed.contains_key(&g) {
                // Marked removed before its file went (a crash in between): finish the job.
                store.snaps.remove(g).map_err(|e| StoreError::Snapshot {
                    group: g.0,
                    location: store.snaps.location(g),
                    reason: e.to_string(),
                })?;
                continue;
            }
            if !store.groups.contains_key(&g) {
                store.create_replica(g, None, None)?;
            }
        }
        // A range merged away whose file outlived the merge (a crash right after the
        // survivor's snapshot): a newer range holds its first key.
        let stale = store.superseded();
        for g in stale {
            if store.left_neighbour_may_absorb(g) {
                store.kept_superseded.push(g);
                continue;
            }
            info!(
                group = g.0,
                "range merged away before a crash: its files go now"
            );
            store.drop_replica(g);
            store.destroy_files(g)?;
        }
        {
            let mut dir = store.dir.write().unwrap_or_else(|e| e.into_inner());
            for r in store.groups.values() {
                dir.upsert(r.range.descriptor());
            }
        }
        for r in store.groups.values() {
            let d = r.range.descriptor();
            store.last_allocated = store.last_allocated.max(d.id.0).max(d.group.0);
        }
        for g in store.wal.group_ids() {
            store.last_allocated = store.last_allocated.max(g.0);
        }
        // Ids of ranges merged away here, and ids named by splits still to apply, are never
        // handed out again: a replayed split of the range that first had the id would
        // otherwise re-create it over the log of the range that took it second. (Found by
        // the simulator: a node proposed a split, crashed, restarted before the split
        // applied, and later gave the same id, by then merged away, to another split; every
        // later start stopped on "entry 1/142 does not follow 0/133".)
        if let Some(g) = store.destroyed.iter().next_back() {
            store.last_allocated = store.last_allocated.max(g.0);
        }
        store.last_allocated = store.last_allocated.max(store.ids_in_unapplied_splits());
        store.make_dormant();
        // One line for the store, not one per replica: at 100,000 ranges the per-replica
        // lines (now at debug) were 400,000 lines and a tenth of a restart's CPU.
        info!(
            node = store.cfg.node.0,
            shard = store.cfg.shard.0,
            replicas = store.groups.len(),
            dormant = store.restart_leads.len() + store.restart_waits.len(),
            campaign_first = store.restart_leads.len(),
            "store opened"
        );
        Ok(store)
    }

    /// Marks dormant every replica just restored that follows no leader: a voter of a
    /// group that had a term before, not awaiting a snapshot (see `Dormant`). The first
    /// ticks put each to sleep once it has applied the committed entries of its restored
    /// log (a range replays its splits).
    fn make_dormant(&mut self) {
        let me = self.cfg.node;
        let (leads, waits) = (&mut self.restart_leads, &mut self.restart_waits);
        self.groups.for_each_awake(|r| {
            let voter = r
                .range
                .descriptor()
                .replica(msg::NodeId(me.0))
                .is_some_and(|x| x.role == msg::ReplicaRole::Voter);
            // A group that never had a term is new (a cluster's first start), not restored.
            if r.raft.role() != Role::Follower
                || r.raft.leader().is_some()
                || r.raft.term() == Term(0)
                || r.awaiting_snapshot
                || !voter
            {
                return;
            }
            r.restarting = true;
            r.dormant = if r.raft.vote() == Some(me) {
                leads.push(r.group);
                Dormant::Leads
            } else {
                waits.push(r.group);
                Dormant::Waits
            };
        });
        // Popped from the end: in group order.
        leads.reverse();
        waits.reverse();
    }

    /// The restart pacer (see `Dormant`): once the vote guard is over, rouses up to
    /// `RESTART_ROUSE_PER_TICK` dormant replicas a tick while fewer than
    /// `RESTART_AWAKE_CAP` groups are awake, the `Leads` ones first (each campaigns), then,
    /// a few election timeouts later, the `Waits` ones that no campaign reached (they
    /// campaign when their election timer fires, unless a leader speaks first). The cap
    /// keeps the elections of a restart from waking every group at once: the loops' cost
    /// follows the awake groups, and a turn stays short for the requests served meanwhile.
    fn pace_restart(&mut self, now: u64, election: u64) {
        if now < election || (self.restart_leads.is_empty() && self.restart_waits.is_empty()) {
            return;
        }
        let mut room = RESTART_AWAKE_CAP
            .saturating_sub(self.groups.awake_len())
            .min(RESTART_ROUSE_PER_TICK);
        while room > 0 {
            let (g, leads) = match self.restart_leads.pop() {
                Some(g) => (g, true),
                None => {
                    let from = *self.restart_waits_from.get_or_insert(now + 2 * election);
                    if now < from {
                        break;
                    }
                    match self.restart_waits.pop() {
                        Some(g) => (g, false),
                        None => break,
                    }
                }
            };
            if !self
                .groups
                .get(&g)
                .is_some_and(|r| r.dormant != Dormant::No)
            {
                continue; // roused meanwhile, or gone
            }
            if let Some(r) = self.groups.get_mut(&g) {
                rouse(r, now);
                if leads {
                    r.raft.campaign();
                }
                room -= 1;
            }
        }
        if self.restart_leads.is_empty() && self.restart_waits.is_empty() {
            self.restart_leads = Vec::new();
            self.restart_waits = Vec::new();
        }
    }

    /// Local ranges that no longer exist: another local range with a newer epoch holds
    /// their first key. Only a merge (or a newer range after it) can put a range's first key
    /// into another range, so such a range was absorbed, whatever this replica missed. (A
    /// lagging split parent overlaps its children with an older epoch: it is kept.)
    fn superseded(&self) -> Vec<msg::GroupId> {
        let mut ranges: Vec<&RangeDescriptor> = self
            .groups
            .values()
            .filter(|r| !r.awaiting_snapshot)
            .map(|r| r.range.descriptor())
            .collect();
        let mut out = superseded_among(&mut ranges);
        out.sort_unstable();
        out
    }

    /// The local ranges that the range `n` supersedes (see `superseded`).
    fn superseded_by(&self, n: &RangeDescriptor) -> Vec<msg::GroupId> {
        // Only a range that starts inside `n` can be (`supersedes`).
        self.groups
            .starting_in(&n.start, &n.end)
            .filter(|b| b.group != n.group && !b.awaiting_snapshot)
            .filter(|b| supersedes(n, b.range.descriptor()))
            .map(|b| b.group)
            .collect()
    }

    /// Destroys the superseded ranges kept for a neighbour that may have absorbed them, once
    /// it cannot any more (it applied its log: the merge took them, or never will).
    fn sweep_kept_superseded(&mut self) {
        for g in std::mem::take(&mut self.kept_superseded) {
            let Some(d) = self.groups.get(&g).map(|r| r.range.descriptor().clone()) else {
                continue; // absorbed by the merge meanwhile
            };
            let by = self.groups.values().find(|n| {
                n.group != g && !n.awaiting_snapshot && supersedes(n.range.descriptor(), &d)
            });
            if let Some(by) = by.map(|n| n.group) {
                self.destroy_superseded(by, vec![g]);
            }
        }
    }

    /// Whether a local range (not frozen, not the meta range) that starts before `d` (of
    /// group `g`) has entries left to apply, committed or not (a follower may hold the
    /// merge before it learns that it committed: found by the simulator, a replica that
    /// installed a split child of the survivor destroyed `d` while its survivor held the
    /// merge uncommitted, then skipped the merge and diverged): one may be the merge that absorbs
    /// `d` (after a restart the range replays from a snapshot older than the merge), and
    /// replaying it needs `d`'s data; that merge then takes `d`'s files. Destroying `d`
    /// first would make the replay skip the merge and lose `d`'s keys. Not only the range
    /// that ends at `d`'s start now: the replay may first re-apply a split or another merge
    /// that moves its end there (a range's start never changes, so only one that starts
    /// before `d` can ever absorb it). A replica adopted here and still awaiting its first
    /// snapshot counts too: its range is not known yet, and the snapshot it installs may
    /// end where `d` starts, older than a merge it will then apply from its log.
    fn left_neighbour_may_absorb(&self, g: msg::GroupId) -> bool {
        let Some(d) = self.groups.get(&g).map(|r| r.range.descriptor()) else {
            return false;
        };
        !d.start.is_empty()
            && self.groups.values().any(|l| {
                let ld = l.range.descriptor();
                l.group != g
                    && (l.awaiting_snapshot
                        || (ld.id != RangeId(1)
                            && l.range.frozen_at().is_none()
                            && ld.start < d.start
                            && l.raft.commit().max(l.raft.last_id().index).0
                                > l.range.applied_index()))
            })
    }

    /// Removes a replica from memory (its files stay; see `destroy_files`).
    fn drop_replica(&mut self, g: msg::GroupId) -> Option<Replica> {
        let r = self.groups.remove(&g)?;
        self.forced_snapshots.retain(|(x, _)| *x != g);
        self.forced_waiting.remove(&g);
        let range = r.range.descriptor().id;
        fail_reads(
            &mut self.reads,
            &mut self.responses,
            |rd| rd.group == g,
            &RequestError::UnknownRange { range },
        );
        Some(r)
    }

    /// Buries a destroyed range (it is never created again here), then deletes its snapshot
    /// file and its log in the WAL.
    fn destroy_files(&mut self, g: msg::GroupId) -> Result<(), StoreError> {
        self.destroyed.insert(g);
        self.snaps.bury(g).map_err(|e| StoreError::Snapshot {
            group: g.0,
            location: self.snaps.location(g),
            reason: e.to_string(),
        })?;
        self.snaps.remove(g).map_err(|e| StoreError::Snapshot {
            group: g.0,
            location: self.snaps.location(g),
            reason: e.to_string(),
        })?;
        self.compact_all(g).map(|_| ())
    }

    /// Drops the whole of `g`'s log from the WAL; returns the position of the record that
    /// does (the WAL's end when there was nothing to drop).
    fn compact_all(&mut self, g: msg::GroupId) -> Result<quasar_wal::Lsn, StoreError> {
        let wg = quasar_wal::GroupId(g.0);
        // Nothing to drop (already dropped, e.g. at an earlier start): no record.
        if self.wal.group_ids().any(|x| x == wg)
            && self.wal.first_index(wg) <= self.wal.last_index(wg)
        {
            let last = self.wal.last_index(wg);
            let mut batch = Batch::with_capacity(1);
            batch.compact(wg, quasar_wal::LogIndex(last.0 + 1));
            return Ok(self.wal.append(&batch)?);
        }
        Ok(self.wal.appended_lsn())
    }

    fn owns(&self, d: &RangeDescriptor) -> bool {
        d.replica(msg::NodeId(self.cfg.node.0)).is_some()
            && quasar_rpc::transport::shard_for_group(d.group, self.cfg.shards) == self.cfg.shard
    }

    /// Rebuilds (or creates) the replica of `group` from what is durable: its snapshot file
    /// (or `init`, the state a split just made) and its log in the WAL. `fallback` describes
    /// a brand-new group (no snapshot); a group with neither is skipped.
    fn create_replica(
        &mut self,
        group: msg::GroupId,
        fallback: Option<&RangeDescriptor>,
        init: Option<(SnapshotMeta, RangeState)>,
    ) -> Result<(), StoreError> {
        let wgroup = quasar_wal::GroupId(group.0);
        let from_file = if init.is_some() {
            None
        } else {
            let loaded = self.snaps.load(group).map_err(|e| StoreError::Snapshot {
                group: group.0,
                location: self.snaps.location(group),
                reason: e.to_string(),
            })?;
            match loaded {
                Some(bytes) => {
                    let file = SnapshotFile::decode(&bytes).map_err(|e| StoreError::Snapshot {
                        group: group.0,
                        location: self.snaps.location(group),
                        reason: e.to_string(),
                    })?;
                    let range = RangeState::decode_snapshot(&file.range_bytes, self.cfg.limits)
                        .map_err(|e| StoreError::Snapshot {
                            group: group.0,
                            location: self.snaps.location(group),
                            reason: e.to_string(),
                        })?;
                    Some((file.meta, range))
                }
                None => None,
            }
        };
        let from_disk = from_file.is_some();
        let snapshot = init.or(from_file);
        let d = match (&snapshot, fallback) {
            (Some((_, range)), _) => range.descriptor().clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => return Ok(()),
        };
        // A snapshot file here was taken or installed here: the replica is this node's
        // even when the descriptor at the snapshot does not list it yet (a learner's first
        // snapshot may predate the entry that added it; the log that follows does).
        let held = if from_disk {
            quasar_rpc::transport::shard_for_group(d.group, self.cfg.shards) == self.cfg.shard
        } else {
            self.owns(&d)
        };
        if !held {
            debug!(
                group = group.0,
                "snapshot of a range this shard does not hold; ignored"
            );
            return Ok(());
        }
        let d = &d;
        // A received snapshot's file is saved before the WAL record that restarts the log
        // after it is durable; a crash in between leaves the snapshot past the end of the
        // log. Restart the log after it now (as the lost record would have), or the next
        // append would leave a gap.
        if let Some((meta, _)) = &snapshot {
            let s = quasar_wal::LogIndex(meta.last.index.0);
            // The log agrees with the snapshot when it holds the snapshot's last entry with
            // the same term (then every later entry follows it); otherwise it ends before the
            // snapshot or holds another leader's entries there.
            let agrees = s <= self.wal.last_index(wgroup)
                && self
                    .wal
                    .term(wgroup, s)
                    .is_ok_and(|t| t.0 == meta.last.term.0);
            // The log compacted up to the snapshot (by the snapshot itself) continues it. One
            // compacted further comes from an earlier replica of the group on this node,
            // removed (`remove_replica` drops its log) before the group added this node back
            // and sent the snapshot: the entries after the snapshot are not in it, and the
            // log restarts after the snapshot too (found by the simulator: the next append
            // was refused as below the compaction point, at every restart).
            let first = self.wal.first_index(wgroup);
            let compacted_to_it = first.0 == s.0 + 1 && self.wal.last_index(wgroup) >= s;
            if !agrees && !compacted_to_it {
                let mut batch = Batch::with_capacity(1);
                batch.snapshot_mark(
                    wgroup,
                    quasar_wal::LogIndex(meta.last.index.0),
                    quasar_wal::Term(meta.last.term.0),
                );
                self.wal.append(&batch)?;
                info!(group = group.0, last = %meta.last, "log restarted after a snapshot installed just before a crash");
            }
        }
        // Without a snapshot the replica's log starts at index 1. A log compacted here with
        // no snapshot is what this node's earlier replica of the group left when it was
        // removed (`remove_replica` drops the whole log); the group added this node back
        // and the restart finds it a member again: restart the log empty, as for any new
        // replica (the hard state stays: the votes of earlier terms still bind this node).
        // Found by the simulator: the next append, at index 1, was refused as below the
        // compaction point, and the store stopped at every restart.
        let compacted_below = self.wal.first_index(wgroup).0;
        if snapshot.is_none() && compacted_below > 1 {
            let mut batch = Batch::with_capacity(1);
            batch.snapshot_mark(wgroup, quasar_wal::LogIndex(0), quasar_wal::Term(0));
            self.wal.append(&batch)?;
            info!(
                group = group.0,
                compacted_below,
                "log of a replica removed earlier restarts empty: the group holds this node again"
            );
        }
        let hard_state = self.wal.hard_state(wgroup);
        let has_log = hard_state.is_some() || self.wal.last_index(wgroup).0 > 0;
        let vote_floor = self.floors.get(&group).copied().unwrap_or_default();
        let initial_conf = ConfState::with_voters(d.voters().map(|n| NodeId(n.0)));
        let (mut restored, range) = match snapshot {
            Some((meta, range)) => (
                Restored {
                    applied: meta.last.index,
                    snapshot: meta,
                    ..Restored::default()
                },
                range,
            ),
            None => (
                Restored::new_group(initial_conf),
                RangeState::new(d.clone(), self.cfg.limits),
            ),
        };
        restored.vote_floor = vote_floor;
        if let Some(hs) = hard_state {
            restored.hard_state = raft::HardState {
                term: Term(hs.term.0),
                vote: (hs.vote != 0).then_some(NodeId(hs.vote)),
                commit: LogIndex(hs.commit.0),
            };
        }
        if has_log {
            let first = self
                .wal
                .first_index(wgroup)
                .0
                .max(restored.snapshot.last.index.0 + 1);
            let last = self.wal.last_index(wgroup).0;
            let mut entries = Vec::new();
            if last >= first {
                self.wal.entries(
                    wgroup,
                    quasar_wal::LogIndex(first)..quasar_wal::LogIndex(last + 1),
                    &mut entries,
                )?;
            }
            // Sized once, with room for the entry of the election that follows a restart:
            // grown by pushes, 100,000 restored logs would each hold up to twice their
            // length while they all campaign at once (a sleeping group's log is shrunk to
            // fit, `RaftNode::release_buffers`).
            restored
                .entries
                .reserve_exact(entries.len() + RESTORED_LOG_SLACK);
            for e in entries {
                let kind = match e.payload.first() {
                    None | Some(&PAYLOAD_REQUEST) | Some(&PAYLOAD_RANGE_COMMAND) => {
                        EntryKind::Normal
                    }
                    Some(1..=3) => EntryKind::ConfChange,
                    Some(&tag) => {
                        return Err(StoreError::BadEntry {
                            group: group.0,
                            index: e.index.0,
                            tag,
                        })
                    }
                };
                restored.entries.push(raft::Entry {
                    term: Term(e.term.0),
                    index: LogIndex(e.index.0),
                    kind,
                    data: Bytes::from(e.payload),
                });
            }
            // The commit index never exceeds what this log holds.
            let last_held = restored
                .entries
                .last()
                .map_or(restored.snapshot.last.index, |e| e.index);
            if restored.hard_state.commit > last_held {
                restored.hard_state.commit = last_held;
            }
            if restored.hard_state.commit < restored.snapshot.last.index {
                restored.hard_state.commit = restored.snapshot.last.index;
            }
        }
        let last_snapshot = restored.snapshot.last.index;
        let raft = RaftNode::new(
            &self.cfg.raft(group),
            restored,
            self.seed ^ quasar_rpc::transport::splitmix64(group.0),
        )
        .map_err(|e| StoreError::Raft {
            group: group.0,
            reason: e.to_string(),
        })?;
        debug!(node = self.cfg.node.0, group = group.0, first = raft.first_index().0, snapshot = %raft.snapshot().last, last = %raft.last_id(), commit = raft.commit().0, "replica opened");
        let replica = Replica::new(group, raft, range, last_snapshot, self.ticks);
        self.groups.insert(replica);
        for n in d.replicas.iter().map(|x| NodeId(x.node.0)) {
            if n != self.cfg.node && !self.peers.contains(&n) {
                self.peers.push(n);
                self.peers.sort_unstable();
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn wal(&self) -> &Wal<D> {
        &self.wal
    }

    /// For the runtime's sync: `begin_sync`, `on_sync_done`, `collect_garbage`.
    pub fn wal_mut(&mut self) -> &mut Wal<D> {
        &mut self.wal
    }

    pub fn metrics(&self) -> StoreMetrics {
        StoreMetrics {
            awake_groups: self.groups.awake_len() as u64,
            groups_woken: self.groups.woken(),
            ..self.metrics
        }
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn leader_count(&self) -> usize {
        self.groups
            .values()
            .filter(|r| r.raft.role() == Role::Leader)
            .count()
    }

    /// Every replica's status, in group order.
    /// For diagnostics (the simulator's liveness reports): every group led here, with each
    /// member's replication state.
    pub fn leader_progress(&self) -> Vec<(msg::GroupId, Vec<PeerProgress>)> {
        self.groups
            .in_order()
            .filter(|r| r.raft.role() == Role::Leader)
            .map(|r| {
                let peers = r
                    .raft
                    .conf_state()
                    .members()
                    .into_iter()
                    .filter_map(|n| {
                        let p = r.raft.progress(n)?;
                        Some(PeerProgress {
                            node: n.0,
                            state: format!("{:?}", p.state),
                            matched: p.matched.0,
                            next: p.next.0,
                        })
                    })
                    .collect();
                (r.group, peers)
            })
            .collect()
    }

    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.groups.in_order().filter_map(status_of).collect()
    }

    /// The statuses that changed against `published` (what the last calls returned, applied)
    /// since the last call, in group order (`None`: the replica is gone, or not serving
    /// yet). Only groups awake since the last call are looked at, and one whose status is
    /// as published costs a comparison, not a copy: a quiesced shard has none, and 100,000
    /// groups awake after a restart are not copied ten times a second (`perf`: a quarter of
    /// a node's samples went to publishing them).
    pub fn status_changes(
        &mut self,
        published: &BTreeMap<msg::GroupId, ReplicaStatus>,
    ) -> Vec<(msg::GroupId, Option<ReplicaStatus>)> {
        let mut out = Vec::new();
        for g in self.groups.take_touched() {
            let live = self.groups.get(&g).filter(|r| !r.awaiting_snapshot);
            match (live, published.get(&g)) {
                (Some(r), Some(p)) if status_is(r, p) => {}
                (Some(r), _) => out.push((g, status_of(r))),
                (None, Some(_)) => out.push((g, None)),
                (None, None) => {}
            }
        }
        out
    }

    /// One unit of logical time for every group; expires requests that waited too long.
    /// Real time worth `ticks` ticks passed without ticks (see `RaftNode::clock_skipped`):
    /// every lease clock moves on, no timer fires.
    pub fn clock_skipped(&mut self, ticks: u64) {
        self.ticks += ticks;
        self.groups.clock_skipped(ticks);
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        self.beats += 1;
        let beat = self.beats;
        self.advance_encodings();
        let now = self.ticks;
        let quiesce_after = self.cfg.quiesce_after_ticks;
        let election = u64::from(self.cfg.election_ticks);
        let idle_beat = self.idle_beat_ticks();
        self.note_silences(beat, election);
        let me = self.cfg.node;
        // A group whose `Ready` is in flight (handed to the WAL, or under the sync) is not
        // idle. The others may sleep even while a turn is in flight: waiting for a moment
        // with no turn in flight at all never came once 100,000 groups were awake at once
        // (woken by a pre-split's 66,000 leadership moves, each pass over the groups keeping
        // the shard busy), so some turn was always in flight and none slept again.
        let mut busy: Vec<msg::GroupId> = self
            .in_flight
            .iter()
            .chain(self.syncing.iter().flat_map(|t| &t.readys))
            .map(|(g, _)| *g)
            .collect();
        busy.sort_unstable();
        busy.dedup();
        let last_heard = &self.last_heard;
        let heard = |n: NodeId| last_heard.get(&n).copied();
        let wal = &mut self.wal;
        self.groups.retain_awake(|r| {
            if r.restarting && r.raft.leader().is_some() {
                r.restarting = false;
            }
            if r.dormant != Dormant::No {
                if r.raft.role() == Role::Follower && r.raft.leader().is_none() {
                    if LogIndex(r.range.applied_index()) < r.raft.commit() {
                        // Still applying its restored log: awake, its clock still.
                        return true;
                    }
                    r.raft.quiesce();
                    // Asleep, dormant; or back to sleep after an access that asked
                    // nothing of it (a pass over the groups).
                    if is_asleep_able(r, me) && busy.binary_search(&r.group).is_err() {
                        return false;
                    }
                }
                // It has work: roused.
                rouse(r, now);
            }
            if r.raft.is_quiesced() {
                // A quiesced follower wakes when its leader's node falls silent: the node-level
                // liveness batches stopped, so the leader may be gone.
                let leader_silent = r
                    .raft
                    .leader()
                    .is_none_or(|l| heard(l).is_none_or(|t| beat.saturating_sub(t) > election));
                if r.raft.role() != Role::Leader && leader_silent {
                    r.raft.wake();
                    return true;
                }
                if is_asleep_able(r, me) && busy.binary_search(&r.group).is_err() {
                    r.raft.release_buffers();
                    wal.release_group_buffers(quasar_wal::GroupId(r.group.0));
                    return false;
                }
                return true;
            }
            r.raft.tick();
            if quiesce_after == 0 || now.saturating_sub(r.last_activity) < quiesce_after {
                return true;
            }
            let settled = r.proposals.is_empty()
                && r.waiting_reads.is_empty()
                && r.outgoing.is_empty()
                && r.raft.commit() == r.raft.last_id().index
                && LogIndex(r.range.applied_index()) == r.raft.commit();
            if !settled {
                return true;
            }
            match r.raft.role() {
                Role::Leader if r.raft.can_quiesce() => r.raft.quiesce(),
                // A follower whose live leader stopped heartbeating: the leader quiesced.
                Role::Follower => {
                    // (Two beats of an idle node: its beats are the rarer ones.)
                    let leader_alive = r.raft.leader().is_some_and(|l| {
                        heard(l).is_some_and(|t| beat.saturating_sub(t) <= 2 * idle_beat)
                    });
                    if leader_alive {
                        r.raft.quiesce();
                    }
                }
                _ => {}
            }
            // Asleep at the next tick at the earliest: this turn may still have work for it.
            true
        });
        // Node-level liveness: one (possibly empty) batch per peer every heartbeat interval,
        // whatever the number of groups, so quiesced followers can tell a quiet leader from
        // a dead one; half as often while every group here sleeps (`idle_beat_ticks`).
        if now % self.beat_ticks() == 0 {
            for i in 0..self.peers.len() {
                let p = self.peers[i];
                self.batch_for(p);
            }
            self.liveness_due = true;
        }
        if !self.kept_superseded.is_empty() && now % election == 0 {
            self.sweep_kept_superseded();
        }
        self.pace_restart(now, election);
        if now % MEMBERSHIP_CHECK_TICKS == 0 {
            self.check_membership();
        }
        if now % election == 0 {
            self.want_leaders(now, election);
        }
        self.adopt_orphans();
        self.check_admin();
        self.finish_frozen();
        let deadline = self.cfg.request_timeout_ticks;
        if self.ticks % 16 == 0 {
            let now = self.ticks;
            // A group with proposals is awake (it cannot sleep with any).
            let responses = &mut self.responses;
            self.groups.for_each_awake(|r| {
                while r
                    .proposals
                    .front()
                    .is_some_and(|p| now.saturating_sub(p.at_tick) > deadline)
                {
                    if let Some(p) = r.proposals.pop_front() {
                        responses.push((
                            p.token,
                            ClientResponse {
                                request_id: p.request_id,
                                result: Err(RequestError::Ambiguous {
                                    reason: AmbiguousReason::Timeout,
                                }),
                            },
                        ));
                    }
                }
            });
            fail_reads(
                &mut self.reads,
                &mut self.responses,
                |r| now.saturating_sub(r.at_tick) > deadline,
                &RequestError::Unavailable {
                    reason: UnavailableReason::NoLeader,
                },
            );
        }
    }

    fn batch_for(&mut self, to: NodeId) -> &mut RaftBatch {
        let i = match self.outbox.iter().position(|b| b.to.0 == to.0) {
            Some(i) => i,
            None => {
                self.outbox.push(RaftBatch {
                    from: msg::NodeId(self.cfg.node.0),
                    to: msg::NodeId(to.0),
                    to_shard: self.cfg.shard,
                    ..RaftBatch::default()
                });
                self.outbox.len() - 1
            }
        };
        &mut self.outbox[i]
    }

    fn send(&mut self, group: msg::GroupId, m: &Message) {
        self.metrics.raft_messages_out += 1;
        if let MessageBody::Snapshot { meta } = &m.body {
            self.start_snapshot_transfer(group, m.to, meta);
            return;
        }
        let batch = self.batch_for(m.to);
        wire::push_message(batch, group, m);
    }

    /// The Raft traffic gathered since the last call, one batch per destination node; the
    /// runtime sends each and then calls `recycle_outbox`.
    pub fn outbox(&self) -> impl Iterator<Item = &RaftBatch> {
        let all = self.liveness_due;
        self.outbox
            .iter()
            .filter(move |b| all || b.message_count() > 0)
    }

    /// Empties the outbox, keeping its buffers: a burst (a restart's elections of 100,000
    /// groups, one message each per peer) would otherwise keep its peak for good, so after
    /// `OUTBOX_SHRINK_AFTER` turns in a row that used under a quarter of every grown vector,
    /// each is halved (see `clear_and_trim`); a load whose turns are big and small in turn
    /// keeps them.
    pub fn recycle_outbox(&mut self) {
        self.liveness_due = false;
        let quiet = self.outbox.iter().all(|b| {
            is_small_use(&b.messages)
                && is_small_use(&b.heartbeats)
                && is_small_use(&b.heartbeat_responses)
                && is_small_use(&b.commits)
        });
        self.outbox_quiet = if quiet { self.outbox_quiet + 1 } else { 0 };
        let shrink = self.outbox_quiet >= OUTBOX_SHRINK_AFTER;
        if shrink {
            self.outbox_quiet = 0;
        }
        for b in &mut self.outbox {
            clear_and_trim(&mut b.messages, shrink);
            clear_and_trim(&mut b.heartbeats, shrink);
            clear_and_trim(&mut b.heartbeat_responses, shrink);
            clear_and_trim(&mut b.commits, shrink);
        }
    }

    /// Answers for clients gathered since the last call.
    pub fn take_responses(&mut self) -> std::vec::Drain<'_, (ConnToken, ClientResponse)> {
        self.responses.drain(..)
    }

    fn replica_for_message(&mut self, group: msg::GroupId) -> Option<&mut Replica> {
        if !self.groups.contains_key(&group) {
            let d = {
                let dir = self.dir.read().unwrap_or_else(|e| e.into_inner());
                dir.by_group(group).cloned()
            };
            match d {
                // Only the ranges a cluster starts with are created on first contact; a
                // range born of a split is created by applying the split (or adopted, see
                // `adopt_orphans`).
                Some(d)
                    if self.owns(&d) && d.epoch.0 == 1 && !self.removed.contains_key(&group) =>
                {
                    if let Err(e) = self.create_replica(d.group, Some(&d), None) {
                        warn!(group = group.0, error = %e, "cannot create replica");
                        return None;
                    }
                }
                _ => {
                    debug!(
                        group = group.0,
                        "message for a group this shard does not hold"
                    );
                    return None;
                }
            }
        }
        self.groups.get_mut(&group)
    }

    /// Steps every message of a received batch into its group. Returns whether the batch
    /// may have given the store work for a turn: false for an empty batch (a peer's
    /// liveness beat while its groups sleep) that woke nothing, which only notes the peer
    /// as heard.
    pub fn on_raft_batch(&mut self, batch: &ArchivedRaftBatch) -> bool {
        let from = NodeId(batch.from.get().0);
        let to = self.cfg.node;
        let before = self.last_heard.insert(from, self.beats);
        self.silent.retain(|n| *n != from);
        let mut woke = false;
        if before.is_some_and(|t| self.beats.saturating_sub(t) > u64::from(self.cfg.election_ticks))
        {
            self.wake_leaders_of(from);
            woke = true;
        }
        if batch.to.get().0 != to.0 || batch.to_shard.get() != self.cfg.shard {
            self.metrics.raft_messages_bad += 1;
            warn!(
                to = batch.to.get().0,
                shard = batch.to_shard.get().0,
                "raft batch for another node or shard dropped"
            );
            return woke;
        }
        if batch.message_count() == 0 {
            return woke;
        }
        for hb in batch.heartbeats.iter() {
            let m = wire::heartbeat_from_wire(from, to, hb);
            self.step(hb.group.get(), m);
        }
        for hb in batch.heartbeat_responses.iter() {
            let m = wire::heartbeat_response_from_wire(from, to, hb);
            self.step(hb.group.get(), m);
        }
        for c in batch.commits.iter() {
            let m = wire::commit_from_wire(from, to, c);
            self.step(c.group.get(), m);
        }
        for m in batch.messages.iter() {
            let group = m.group.get();
            match &m.body {
                ArchivedRaftBody::Snapshot(chunk) => {
                    self.on_snapshot_chunk(group, from, Term(m.term.get().0), chunk)
                }
                ArchivedRaftBody::SnapshotResponse(resp) => {
                    self.on_snapshot_response(group, from, resp)
                }
                ArchivedRaftBody::Removed { applied } => {
                    self.on_removed(group, from, LogIndex(applied.get().0))
                }
                ArchivedRaftBody::Destroyed { survivor, index } => self.on_destroyed(
                    group,
                    from,
                    Some((survivor.get(), LogIndex(index.get().0))).filter(|(s, _)| s.0 != 0),
                ),
                ArchivedRaftBody::LeaderWanted => {
                    self.on_leader_wanted(group, from, Term(m.term.get().0))
                }
                _ => match wire::message_from_wire(from, to, m) {
                    Ok(Some(m)) => self.step(group, m),
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.raft_messages_bad += 1;
                        warn!(group = group.0, from = from.0, error = %e, "bad raft message dropped");
                    }
                },
            }
        }
        true
    }

    /// One replica in turn (round-robin over every group, asleep or not) that does not
    /// lead asks its leader, or its voters when it knows none, whether it is still a
    /// member (`LeaderWanted`; a member that no longer counts it answers `Removed`). A
    /// voter removed while it was cut off or down, asleep afterwards as the follower of a
    /// live leader that no longer writes to it, is otherwise never told (found by the
    /// simulator); CockroachDB's replica GC queue does this job. One replica every
    /// `MEMBERSHIP_CHECK_TICKS`: at 100,000 replicas a shard goes round in under three
    /// hours, for a message every 100 ms.
    fn check_membership(&mut self) {
        let Some(g) = self.groups.next_after(self.membership_cursor) else {
            return;
        };
        self.membership_cursor = g;
        let me = self.cfg.node;
        let r = &self.groups[&g];
        if r.raft.role() == Role::Leader || r.awaiting_snapshot {
            return;
        }
        // Asked of a known leader, the check carries the term this replica follows it in:
        // a quiesced leader of that term is not woken by it (see `on_leader_wanted`).
        let mut term = msg::Term(0);
        let ask: SmallVec<[NodeId; 4]> = match r.raft.leader() {
            Some(leader) if leader != me => {
                term = msg::Term(r.raft.term().0);
                smallvec::smallvec![leader]
            }
            _ => {
                let conf = membership::conf_of(r.range.descriptor());
                conf.voters
                    .iter()
                    .chain(conf.voters_outgoing.iter())
                    .copied()
                    .filter(|&n| n != me)
                    .collect()
            }
        };
        for n in ask {
            self.batch_for(n).messages.push(msg::RaftMessage {
                group: g,
                term,
                body: msg::RaftBody::LeaderWanted,
            });
        }
    }

    /// Learners (they never campaign) that have heard no leader for an election timeout ask
    /// the voters of their group to wake a quiesced leader (see `RaftBody::LeaderWanted`).
    fn want_leaders(&mut self, now: u64, election: u64) {
        let me = self.cfg.node;
        let mut asks: Vec<(msg::GroupId, Vec<NodeId>)> = Vec::new();
        // Only learners ask, and a learner never sleeps (see `is_asleep_able`).
        for r in self.groups.awake_values() {
            let g = &r.group;
            let silent = now.saturating_sub(r.last_leader_contact);
            // A known leader that stays silent may have dropped this replica from its group
            // (a learner removed before it received the removal); a quiesced leader is
            // silent by design, so only a long silence counts then.
            let lost = r.raft.leader().is_none()
                || (!r.raft.is_quiesced() && silent > 2 * election)
                || silent > 8 * election;
            if r.awaiting_snapshot || !lost || silent <= election {
                continue;
            }
            let conf = membership::conf_of(r.range.descriptor());
            if conf.is_voter(me) {
                continue; // a voter campaigns, which wakes the group
            }
            let voters = conf
                .voters
                .iter()
                .chain(conf.voters_outgoing.iter())
                .copied()
                .filter(|&n| n != me)
                .collect();
            asks.push((*g, voters));
        }
        for (g, voters) in asks {
            for n in voters {
                self.batch_for(n).messages.push(msg::RaftMessage {
                    group: g,
                    term: msg::Term(0),
                    body: msg::RaftBody::LeaderWanted,
                });
            }
        }
    }

    /// A replica of `g` on `from` that cannot campaign has heard no leader for a while
    /// (`term` 0), or checks that it is still a member (`check_membership`; `term` is the
    /// term it follows this node's replica in, or 0 when it knows no leader).
    fn on_leader_wanted(&mut self, g: msg::GroupId, from: NodeId, term: Term) {
        if !self.groups.contains_key(&g) {
            // A learner of a group merged away (it never campaigns, so no vote request
            // reaches a member to answer it).
            if self.destroyed.contains(&g) {
                self.tell_destroyed(g, from);
            }
            return;
        }
        // Not a member any more: it missed its removal (as for a vote request).
        if self.tell_removed(g, from) {
            return;
        }
        // A member that follows this leader in its term asked only whether it still is one:
        // a quiesced leader sleeps on. (Every check used to wake the group it named, ten a
        // second per shard, each leader heartbeating its followers until it quiesced again.)
        let wanted = self.groups.get(&g).is_some_and(|r| {
            r.raft.is_quiesced()
                && r.raft.role() == Role::Leader
                && (term == Term(0) || term != r.raft.term())
        });
        if wanted {
            if let Some(r) = self.groups.get_mut(&g) {
                debug!(
                    group = g.0,
                    from = from.0,
                    "a replica wants its leader: woken"
                );
                r.raft.wake();
            }
        }
    }

    /// `peer` talks again after a silence (it restarted, or a partition healed): its
    /// replicas may not know their leaders, and a quiesced leader sends them nothing. A
    /// voter there would campaign and so wake its group, but a learner never campaigns:
    /// wake the quiesced leaders here of every group with a replica on `peer`, whose
    /// heartbeats then tell it.
    fn wake_leaders_of(&mut self, peer: NodeId) {
        let quiet: Vec<msg::GroupId> = self
            .groups
            .in_order()
            .filter(|r| {
                r.raft.is_quiesced()
                    && r.raft.role() == Role::Leader
                    && r.raft.progress(peer).is_some()
            })
            .map(|r| r.group)
            .collect();
        for g in quiet {
            if let Some(r) = self.groups.get_mut(&g) {
                r.raft.wake();
            }
        }
    }

    /// Notes the peers that fell silent (no batch for an election timeout) since the last
    /// tick, and wakes the quiesced followers here whose leader is on one of them: asleep,
    /// nothing else would look at them (see `groups`).
    fn note_silences(&mut self, now: u64, election: u64) {
        let mut newly: SmallVec<[NodeId; 4]> = SmallVec::new();
        for (&n, &t) in &self.last_heard {
            if now.saturating_sub(t) > election && !self.silent.contains(&n) {
                newly.push(n);
            }
        }
        if newly.is_empty() {
            return;
        }
        newly.sort_unstable();
        self.silent.extend(newly.iter().copied());
        let orphaned: Vec<msg::GroupId> = self
            .groups
            .in_order()
            .filter(|r| {
                !r.awake
                    && r.raft.role() != Role::Leader
                    && r.raft.leader().is_some_and(|l| newly.contains(&l))
            })
            .map(|r| r.group)
            .collect();
        for g in orphaned {
            // Woken by the access; the tick's loop wakes its core (its leader is silent).
            self.groups.get_mut(&g);
        }
    }

    fn step(&mut self, group: msg::GroupId, m: Message) {
        self.metrics.raft_messages_in += 1;
        let now = self.ticks;
        if !self.groups.contains_key(&group)
            && self.destroyed.contains(&group)
            && matches!(m.body, MessageBody::RequestVote { .. })
        {
            self.tell_destroyed(group, m.from);
            return;
        }
        if self.replica_for_message(group).is_none() {
            // Perhaps a range this replica has not applied the split of yet.
            if self.orphans.len() < MAX_ORPHANS {
                self.orphans.push((group, m, now));
            }
            return;
        }
        if matches!(m.body, MessageBody::RequestVote { .. }) && self.tell_removed(group, m.from) {
            return;
        }
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        rouse(r, now);
        if r.awaiting_snapshot && matches!(m.body, MessageBody::RequestVote { .. }) {
            // An adopted replica awaiting its first snapshot does not vote. A voter that
            // missed its range's split is such a replica, so a move's joint configuration
            // that needs it can stall (seed 2368108311524870767, open); letting it vote
            // (bound by its vote floor and the term and vote its node kept) made two nodes
            // apply different states at one index in another run (seed
            // 9106561584092197944, not yet explained), so it stays out.
            return;
        }
        if r.raft.leader() == Some(m.from) {
            r.last_leader_contact = now;
        }
        // Heartbeats keep a group alive but are not activity: an idle group still quiesces.
        if !m.is_heartbeat() {
            r.last_activity = now;
            if r.raft.is_quiesced() {
                r.raft.wake();
            }
        } else if r.raft.is_quiesced() && r.raft.role() != Role::Leader {
            // A heartbeat means the leader is awake again.
            r.raft.wake();
        }
        if let Err(e) = r.raft.step(m) {
            debug!(group = group.0, error = %e, "message not stepped");
        }
    }

    fn on_snapshot_chunk(
        &mut self,
        group: msg::GroupId,
        from: NodeId,
        term: Term,
        chunk: &msg::ArchivedSnapshotChunk,
    ) {
        let meta = wire::snapshot_meta_from_chunk(chunk);
        let offset = chunk.offset_bytes.to_native();
        let total = chunk.total_bytes.to_native();
        let limits = self.cfg.limits;
        let Some(r) = self.replica_for_message(group) else {
            return;
        };
        if offset == 0 {
            r.incoming = Some(Box::new(Incoming {
                last: meta.last,
                from,
                total,
                bytes: Vec::with_capacity(total.min(64 << 20) as usize),
            }));
        }
        let in_order = matches!(&r.incoming, Some(inc) if inc.last == meta.last
            && inc.from == from
            && inc.bytes.len() as u64 == offset
            && inc.total == total);
        let refused = if !in_order {
            r.incoming = None;
            warn!(
                group = group.0,
                from = from.0,
                offset,
                "snapshot chunk out of order: transfer restarts"
            );
            true
        } else {
            let complete = match &mut r.incoming {
                Some(inc) => {
                    inc.bytes.extend_from_slice(chunk.data.as_slice());
                    inc.bytes.len() as u64 >= total
                }
                None => false,
            };
            if !complete {
                return;
            }
            let bytes = r.incoming.take().map(|i| i.bytes).unwrap_or_default();
            let decoded = SnapshotFile::decode(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    RangeState::decode_snapshot(&f.range_bytes, limits).map_err(|e| e.to_string())
                });
            match decoded {
                Ok(state) => {
                    r.staged = Some(Box::new(Staged {
                        last: meta.last,
                        from,
                        state,
                        file: bytes,
                    }));
                    false
                }
                Err(e) => {
                    warn!(group = group.0, from = from.0, error = %e, "received snapshot refused");
                    true
                }
            }
        };
        if refused {
            let resp = msg::RaftMessage {
                group,
                term: msg::Term(r.raft.term().0),
                body: msg::RaftBody::SnapshotResponse(msg::SnapshotResponse {
                    snapshot: msg::LogId {
                        term: msg::Term(meta.last.term.0),
                        index: msg::LogIndex(meta.last.index.0),
                    },
                    received_bytes: 0,
                    outcome: msg::SnapshotOutcome::Rejected,
                }),
            };
            self.batch_for(from).messages.push(resp);
            return;
        }
        // The whole snapshot is here and valid: hand its metadata to the core, which decides
        // (stale or not) and returns it in `Ready::snapshot` for `process` to install.
        let m = Message {
            from,
            to: self.cfg.node,
            term,
            body: MessageBody::Snapshot { meta },
        };
        self.step(group, m);
    }

    fn on_snapshot_response(
        &mut self,
        group: msg::GroupId,
        from: NodeId,
        resp: &msg::ArchivedSnapshotResponse,
    ) {
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        let status = match resp.outcome {
            msg::ArchivedSnapshotOutcome::Continue => return,
            msg::ArchivedSnapshotOutcome::Installed => SnapshotStatus::Finished,
            msg::ArchivedSnapshotOutcome::Rejected => SnapshotStatus::Failed,
        };
        r.outgoing.retain(|o| o.to != from);
        r.raft.report_snapshot(from, status);
    }

    /// The stored snapshot file of `group` and its header, if it covers at least `at_least`.
    fn stored_snapshot(
        &self,
        group: msg::GroupId,
        at_least: LogIndex,
    ) -> Result<(Vec<u8>, SnapshotMeta), String> {
        let file = match self.snaps.load(group) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err("none is stored yet".into()),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        match SnapshotFile::decode(&file) {
            Ok(f) if f.meta.last.index >= at_least => Ok((file, f.meta)),
            Ok(f) => Err(format!("the stored one ends at {}", f.meta.last)),
            Err(e) => Err(format!("the stored one does not decode: {e}")),
        }
    }

    fn start_snapshot_transfer(&mut self, group: msg::GroupId, to: NodeId, meta: &SnapshotMeta) {
        // What is sent is described by the file's own header, never by the request: the
        // file may be newer (taken since, in this turn). No file yet, or an older one (a new
        // member of a range that never needed one, a leader elected since its last file):
        // it is written now.
        // A range that absorbed a neighbour since its file was written sends a new one: a
        // receiver given the older file would then replay the merge entry without the
        // absorbed range's state (it may never have held that range; found by the
        // simulator with the survivor's file delayed, the receiver skipped the merge and
        // its state diverged).
        let absorbed_since =
            |s: &Self| s.groups.get(&group).is_some_and(|r| !r.absorbed.is_empty());
        let stored = match self.stored_snapshot(group, meta.last.index) {
            Ok(found) if !absorbed_since(self) => Ok(found),
            _ => {
                if let Err(e) = self.save_now(group) {
                    warn!(group = group.0, error = %e, "snapshot for a transfer failed");
                }
                if absorbed_since(self) {
                    Err(
                        "the range absorbed a neighbour since its last file, and a new one \
                         cannot be written yet"
                            .to_string(),
                    )
                } else {
                    self.stored_snapshot(group, meta.last.index)
                }
            }
        };
        let (file, meta) = match stored {
            Ok(found) => found,
            Err(reason) => {
                // The core asks again later (a split's new range before its first file).
                debug!(group = group.0, wanted = %meta.last, %reason, "snapshot not sent");
                if let Some(r) = self.groups.get_mut(&group) {
                    r.raft.report_snapshot(to, SnapshotStatus::Failed);
                }
                return;
            }
        };
        let meta = &meta;
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        // The core asks again when a transfer takes long; one still sending the same
        // snapshot goes on (restarting it would never finish a large one).
        if r.outgoing
            .iter()
            .any(|o| o.to == to && o.last == meta.last && o.offset < o.file.len())
        {
            return;
        }
        r.outgoing.retain(|o| o.to != to);
        r.outgoing.push(Outgoing {
            to,
            term: r.raft.term(),
            last: meta.last,
            file: Arc::new(file),
            offset: 0,
            descriptor: r.range.descriptor().clone(),
            conf: meta.conf_state.clone(),
        });
        self.metrics.snapshots_sent += 1;
        info!(group = group.0, to = to.0, last = %meta.last, "sending snapshot");
    }

    /// Sends the next chunk of every snapshot transfer in progress (one per destination).
    fn pump_snapshots(&mut self) {
        let chunk = self.cfg.snapshot_chunk_bytes.max(1);
        let mut out: Vec<(NodeId, msg::RaftMessage)> = Vec::new();
        // A group with a chunk to send is pending (`Replica::has_turn_work`).
        self.groups.for_each_pending(|r| {
            if r.outgoing.is_empty() {
                return;
            }
            // A transfer started by this node as leader of an older term stops: stamped with
            // the current term, its chunks would reach the new leader as a second leader's.
            let (leads, now) = (r.raft.role() == Role::Leader, r.raft.term());
            r.outgoing.retain(|o| leads && o.term == now);
            let term = msg::Term(now.0);
            for o in &mut r.outgoing {
                if o.offset >= o.file.len() && !o.file.is_empty() {
                    continue;
                }
                if out.iter().any(|(to, _)| *to == o.to) {
                    continue;
                }
                let end = (o.offset + chunk).min(o.file.len());
                let (voters, voters_outgoing, learners) = wire::conf_to_wire(&o.conf);
                out.push((
                    o.to,
                    msg::RaftMessage {
                        group: r.group,
                        term,
                        body: msg::RaftBody::Snapshot(msg::SnapshotChunk {
                            snapshot: msg::LogId {
                                term: msg::Term(o.last.term.0),
                                index: msg::LogIndex(o.last.index.0),
                            },
                            descriptor: o.descriptor.clone(),
                            voters,
                            voters_outgoing,
                            learners,
                            offset_bytes: o.offset as u64,
                            total_bytes: o.file.len() as u64,
                            data: o.file[o.offset..end].to_vec(),
                        }),
                    },
                ));
                o.offset = end.max(o.offset + 1);
            }
        });
        for (to, m) in out {
            self.batch_for(to).messages.push(m);
        }
    }

    /// Handles one client request (validated frame body `body`, archived `req`); its answer,
    /// when there is one at once, joins the turn's (`take_responses`).
    pub fn on_client_request(
        &mut self,
        token: ConnToken,
        req: &ArchivedClientRequest,
        body: &[u8],
    ) {
        if let Some(resp) = self.answer_client_request(token, req, body) {
            self.responses.push((token, resp));
        }
    }

    /// Handles one client request like `on_client_request`, but returns the answer given at
    /// once (a refusal, a read served from the leader's lease or a stale read) for the
    /// caller to send without waiting for a turn. `None`: the request was proposed or
    /// queued, and its answer comes from a later turn.
    #[must_use]
    pub fn answer_client_request(
        &mut self,
        token: ConnToken,
        req: &ArchivedClientRequest,
        body: &[u8],
    ) -> Option<ClientResponse> {
        let result = match self.route_request(token, req, body) {
            Ok(None) => return None,
            Ok(Some(result)) => result,
            Err(e) => Err(e),
        };
        Some(ClientResponse {
            request_id: req.request_id.get(),
            result,
        })
    }

    /// Returns `Err` to refuse at once, `Ok(Some(_))` with a read served at once, `Ok(None)`
    /// when the request was proposed or queued.
    fn route_request(
        &mut self,
        token: ConnToken,
        req: &ArchivedClientRequest,
        body: &[u8],
    ) -> Result<Option<crate::range::Outcome>, RequestError> {
        let key = req.op.routing_key();
        let unrouted = req.route.is_none();
        // Under the directory's lock, only the range's identity is read: its descriptor is
        // copied for the answers that carry it, and for unrouted requests (a client's
        // first contact with a range; it caches the descriptor it gets back).
        let (range_id, group, descriptor) = {
            let dir = self.dir.read().unwrap_or_else(|e| e.into_inner());
            let d = match req.route.as_ref() {
                Some(route) => dir
                    .by_id(route.range.get())
                    .ok_or(RequestError::UnknownRange {
                        range: route.range.get(),
                    })?,
                // The range found holds the key.
                None => dir.lookup(key).ok_or(RequestError::Unavailable {
                    reason: UnavailableReason::CatchingUp,
                })?,
            };
            if !self.owns(d) || !self.groups.contains_key(&d.group) {
                return Err(RequestError::KeyNotInRange {
                    descriptor: d.clone(),
                });
            }
            (d.id, d.group, unrouted.then(|| d.clone()))
        };
        let Some(r) = self.groups.get_mut(&group) else {
            return Err(RequestError::Unavailable {
                reason: UnavailableReason::CatchingUp,
            });
        };
        if is_restarting(r) {
            // A request for a group without a leader since the restart: this replica
            // campaigns now (once the vote guard is over), not when the pacer or its
            // election timer comes to it. Clients ask the leader they last knew first,
            // which is usually the `Leads` replica.
            rouse(r, self.ticks);
            if r.raft.role() == Role::Follower && self.ticks >= u64::from(self.cfg.election_ticks) {
                r.raft.campaign();
            }
        }
        r.last_activity = self.ticks;
        if r.raft.is_quiesced() {
            r.raft.wake();
        }
        let not_leader = |r: &Replica| {
            if let Some(descriptor) = &descriptor {
                // The client has no descriptor of this range (it asked a seed node by key):
                // a leader hint alone would not fill its range cache, and every later
                // request would come here first again. Give it the descriptor; the leader
                // hint follows from whichever replica it asks next.
                RequestError::RangeMoved {
                    descriptor: descriptor.clone(),
                }
            } else {
                RequestError::NotLeader {
                    range: range_id,
                    leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
                }
            }
        };
        if let Some(route) = req.route.as_ref() {
            if route.range.get() == range_id && route.epoch.get().0 > r.range.descriptor().epoch.0 {
                // The client has seen a newer descriptor than this replica has applied: it
                // lags. Send the client to the leader, or (the leader itself lags: a new one
                // applying its predecessor's log) to a retry, not back to an older view.
                return Err(if r.raft.role() == Role::Leader {
                    RequestError::Unavailable {
                        reason: UnavailableReason::CatchingUp,
                    }
                } else {
                    not_leader(r)
                });
            }
        }
        r.range.check_proposal(body.len(), req)?;
        let is_write = req.op.is_write();
        if is_write {
            if range_id == RangeId(1) {
                return Err(RequestError::InvalidRequest {
                    reason: InvalidReason::ReservedKey,
                });
            }
            if r.raft.role() != Role::Leader {
                return Err(not_leader(r));
            }
            if self.wal.space_shortage().is_some() {
                // The log cannot get new segments (a full disk): refuse before proposing,
                // so nothing is written that might need space the log cannot get.
                self.metrics.proposals_refused += 1;
                return Err(RequestError::Unavailable {
                    reason: UnavailableReason::DiskFull,
                });
            }
            let mut data = BytesMut::with_capacity(body.len() + 1);
            data.put_u8(PAYLOAD_REQUEST);
            data.put_slice(body);
            let index = r.raft.propose(data.freeze()).map_err(|e| {
                debug!(group = r.group.0, error = %e, "proposal refused");
                match e {
                    // A leader handing over (transfer) refuses proposals for a moment: the
                    // client backs off and finds the next leader, instead of being sent
                    // back here.
                    raft::ProposeError::ProposalDropped { .. } => RequestError::Unavailable {
                        reason: UnavailableReason::NoLeader,
                    },
                    _ => not_leader(r),
                }
            })?;
            r.proposals.push_back(Proposal {
                index,
                term: r.raft.term(),
                token,
                request_id: req.request_id.get(),
                at_tick: self.ticks,
            });
            self.metrics.proposals += 1;
            return Ok(None);
        }
        self.metrics.reads += 1;
        match req.consistency {
            msg::ArchivedReadConsistency::Stale { max_staleness_ms } => {
                // The local state is at most as old as the last word from the leader (a
                // quiesced group's leader has nothing newer); the leader itself is current.
                let age_ms = self.ticks.saturating_sub(r.last_leader_contact) * self.cfg.tick_ms;
                let fresh = r.raft.role() == Role::Leader
                    || r.raft.is_quiesced()
                    || age_ms <= u64::from(max_staleness_ms.to_native());
                if !fresh {
                    return Err(RequestError::Unavailable {
                        reason: UnavailableReason::CatchingUp,
                    });
                }
                Ok(Some(r.range.read(&req.op)))
            }
            msg::ArchivedReadConsistency::Linearizable | msg::ArchivedReadConsistency::Follower => {
                let linearizable =
                    matches!(req.consistency, msg::ArchivedReadConsistency::Linearizable);
                if linearizable && r.raft.role() != Role::Leader {
                    return Err(not_leader(r));
                }
                if r.raft.leader().is_none() {
                    return Err(RequestError::Unavailable {
                        reason: UnavailableReason::NoLeader,
                    });
                }
                let lease_ok = r.raft.role() == Role::Leader
                    && r.raft.has_lease()
                    && r.raft.term_at(r.raft.commit()) == Some(r.raft.term());
                if lease_ok && r.range.applied_index() >= r.raft.commit().0 {
                    // Leader lease with everything known committed applied: served now,
                    // from the state every acknowledged write is already in.
                    return Ok(Some(r.range.read(&req.op)));
                }
                let id = self.next_read;
                self.next_read += 1;
                let mut copy = AlignedVec::with_capacity(body.len());
                copy.extend_from_slice(body);
                if lease_ok {
                    // Leader lease (thesis §6.4.1): no round trip; serve once applied up to
                    // the commit index known now.
                    r.waiting_reads.push((r.raft.commit(), id));
                } else {
                    r.raft
                        .read_index(ReadRequestId(id))
                        .map_err(|_| not_leader(r))?;
                }
                let group = r.group;
                self.reads.insert(
                    id,
                    PendingRead {
                        group,
                        token,
                        request_id: req.request_id.get(),
                        body: copy,
                        at_tick: self.ticks,
                    },
                );
                Ok(None)
            }
        }
    }

    fn serve_reads(&mut self, group: msg::GroupId) {
        let Some(r) = self.groups.get_mut(&group) else {
            return;
        };
        let applied = LogIndex(r.range.applied_index());
        let mut i = 0;
        while i < r.waiting_reads.len() {
            let (index, id) = r.waiting_reads[i];
            if index > applied {
                i += 1;
                continue;
            }
            r.waiting_reads.swap_remove(i);
            let Some(read) = self.reads.remove(&id) else {
                continue;
            };
            let result = match access_body::<ClientRequest>(&read.body) {
                Ok(req) => r.range.read(&req.op),
                Err(e) => Err(RequestError::InvalidRequest {
                    reason: {
                        warn!(error = %e, "stored read no longer decodes");
                        InvalidReason::EmptyKey
                    },
                }),
            };
            self.responses.push((
                read.token,
                ClientResponse {
                    request_id: read.request_id,
                    result,
                },
            ));
        }
    }

    /// Phase 1 of a turn: gathers the Ready of every group with work into ONE WAL append
    /// and queues the messages that may leave before the sync. Returns whether the
    /// gathered `Ready`s need a sync before they are finished (something was appended that
    /// must be durable first: entries, a term or vote, a snapshot mark, a compaction).
    ///
    /// Without a sync in flight, the runtime then either finishes them (`finish`) or begins
    /// a sync (`sync_started`). While a sync runs, `process` may run again if `may_process`
    /// says so: what it gathers joins `in_flight` and waits for the next sync. A pipelined
    /// turn leaves to the next unpipelined one what must not overlap a sync: snapshots to
    /// install, forced snapshot files, removed replicas.
    pub fn process(&mut self) -> Result<bool, StoreError> {
        let pipelined = !self.syncing.is_empty();
        assert!(
            self.may_process(),
            "process() while a sync of non-plain Readys is in flight"
        );
        self.collect_saves(false)?;
        if !pipelined {
            self.write_forced_snapshots()?;
            self.collect_removed()?;
        }
        self.pump_snapshots();
        let start = self.in_flight.len();
        // Only a pending group can have work (see `groups`).
        let in_flight = &mut self.in_flight;
        let mut deferred = false;
        self.groups.for_each_pending(|r| {
            if pipelined && r.raft.has_pending_snapshot() {
                deferred = true;
                return;
            }
            if r.compact_below.is_some() || r.raft.has_ready() {
                if let Some(rd) = r.raft.ready() {
                    in_flight.push((r.group, rd));
                }
            }
        });
        self.snapshot_deferred = deferred;
        // Install received snapshots first: their files must be durable before the WAL
        // record that restarts the log after them.
        for i in start..self.in_flight.len() {
            let (g, ref rd) = self.in_flight[i];
            if let Some(meta) = rd.snapshot.clone() {
                self.stage_install(g, &meta)?;
            }
        }
        let mut compactions = Vec::new();
        self.groups.for_each_pending(|r| {
            if let Some(below) = r.compact_below.take() {
                compactions.push((r.group, below));
            }
        });
        self.groups.settle_pending();
        compactions.sort_unstable_by_key(|(g, _)| *g);
        // Records written outside the turn's batch (a removed replica's log dropped, a log
        // rewritten forward) are synced with it; records written lazily, or covered by the
        // sync in flight, are not waited for.
        let covered = self.wal.durable_lsn().max(self.lazy_lsn).max(
            self.wal
                .in_flight_sync_target()
                .unwrap_or(quasar_wal::Lsn::ZERO),
        );
        let unsynced_before = self.wal.appended_lsn() > covered;
        let appended = write_turn(
            &mut self.wal,
            &self.in_flight[start..],
            &compactions,
            &mut self.metrics,
        )?;
        let mut now = Vec::new();
        for (g, rd) in &mut self.in_flight[start..] {
            for m in rd.send_now.drain(..) {
                now.push((*g, m));
            }
        }
        for (g, m) in now {
            self.send(g, &m);
        }
        self.apply_before_sync(start)?;
        // A turn that only moved commit indexes (a leader learning that its followers have
        // its entries, a follower told the leader's commit) writes them without a sync of
        // its own: the next sync makes them durable, and nothing waits for them. The leader
        // that answered the writes of this commit is free at once for the next ones.
        let needs_sync = unsynced_before
            || std::mem::take(&mut self.sync_wanted)
            || !compactions.is_empty()
            || self.in_flight[start..]
                .iter()
                .any(|(_, rd)| rd.needs_sync());
        if appended && !needs_sync {
            self.lazy_lsn = self.wal.appended_lsn();
            self.metrics.lazy_turns += 1;
        }
        if pipelined && self.in_flight.len() > start {
            self.metrics.pipelined_turns += 1;
        }
        self.in_flight_needs_sync |= needs_sync;
        Ok(self.in_flight_needs_sync)
    }

    /// Whether `process` may run now: no sync in flight, or (with `pipelined_turns`) only
    /// syncs whose `Ready`s need nothing more of `finish_synced` than acknowledgements,
    /// reads and the cores' advance (see `SyncingTurn::plain`). Otherwise the runtime waits
    /// for the syncs first.
    pub fn may_process(&self) -> bool {
        self.syncing.is_empty()
            || (self.cfg.pipelined_turns && self.syncing.iter().all(|t| t.plain))
    }

    /// Whether the runtime may begin a sync while others are in flight
    /// (`WalConfig::syncs_in_flight` above 1): not while something waits for a turn with no
    /// sync in flight (a received snapshot to install, a forced snapshot file, a removed
    /// replica; see `process`). Overlapping syncs under steady load would leave no such
    /// turn; without the overlap the syncs in flight drain, and the next turn is one.
    pub fn may_overlap_syncs(&self) -> bool {
        !self.snapshot_deferred
            && self.leaving.is_empty()
            && self.forced_snapshots.is_empty()
            && self.forced_waiting.is_empty()
    }

    /// Whether a sync begun by the runtime is waiting for `finish_synced`.
    pub fn is_syncing(&self) -> bool {
        !self.syncing.is_empty()
    }

    /// The runtime began a sync covering everything `process` appended so far
    /// (`Wal::begin_sync`): the gathered `Ready`s wait for it, and `finish_synced` finishes
    /// them once `Wal::on_sync_done` reported it complete. A sync may begin while earlier
    /// ones run (`WalConfig::syncs_in_flight`), only after a pipelined turn (`may_process`).
    pub fn sync_started(&mut self) {
        assert!(
            self.may_process(),
            "a sync begun while one of non-plain Readys is in flight"
        );
        let groups = &self.groups;
        let plain = self.in_flight.iter().all(|(g, rd)| {
            let applied = groups.get(g).map(|r| r.range.applied_index());
            rd.snapshot.is_none()
                && applied.is_some_and(|a| rd.apply.last().is_none_or(|e| e.index.0 <= a))
        });
        let readys = std::mem::replace(
            &mut self.in_flight,
            self.spare_turns.pop().unwrap_or_default(),
        );
        self.syncing.push_back(SyncingTurn { readys, plain });
        self.in_flight_needs_sync = false;
    }

    /// Phase 2 for the `Ready`s of the oldest sync in flight, which just completed
    /// (`sync_started`).
    pub fn finish_synced(&mut self) -> Result<(), StoreError> {
        let Some(turn) = self.syncing.pop_front() else {
            return Ok(());
        };
        let emptied = self.finish_readys(turn.readys)?;
        if self.spare_turns.len() < 2 {
            self.spare_turns.push(emptied);
        }
        Ok(())
    }

    /// Applies the client writes (and empty entries) that lead each group's committed
    /// entries now, before the turn's sync, so that their answers need not wait for it: the
    /// core hands out only entries durable here and committed on a majority, so this turn's
    /// sync covers nothing they depend on (it saves a leader one sync of latency per write:
    /// the sync of the turn that learns the commit). A group installing a snapshot, and
    /// everything from a group's first configuration change or range command on, is applied
    /// by `finish` after the sync as before; `finish` skips what was applied here. So is an
    /// entry that does not follow the group's applied index (an earlier `Ready` of the same
    /// sync left its configuration change to `finish`).
    fn apply_before_sync(&mut self, start: usize) -> Result<(), StoreError> {
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut result = Ok(());
        'groups: for (g, rd) in &in_flight[start..] {
            if rd.snapshot.is_some() {
                continue;
            }
            for e in &rd.apply {
                let plain = e.kind == EntryKind::Normal
                    && matches!(e.data.first(), None | Some(&PAYLOAD_REQUEST));
                let next = self
                    .groups
                    .get(g)
                    .is_some_and(|r| e.index.0 == r.range.applied_index() + 1);
                if !plain || !next {
                    break;
                }
                if let Err(err) = self.apply_entry(*g, e) {
                    result = Err(err);
                    break 'groups;
                }
            }
        }
        self.in_flight = in_flight;
        result
    }

    pub(super) fn stage_install(
        &mut self,
        g: msg::GroupId,
        meta: &SnapshotMeta,
    ) -> Result<(), StoreError> {
        self.save_children(g)?;
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        // A file of this replica's own still being written lands before the installed one
        // (the snapshot store keeps the order); its completion is stale.
        r.saving = None;
        let Some(&Staged { last, ref file, .. }) = r.staged.as_deref() else {
            return Err(StoreError::Raft {
                group: g.0,
                reason: format!(
                    "core asked to install snapshot {} that never arrived",
                    meta.last
                ),
            });
        };
        if last != meta.last {
            return Err(StoreError::Raft {
                group: g.0,
                reason: format!(
                    "core asked to install snapshot {} but {} arrived",
                    meta.last, last
                ),
            });
        }
        self.snaps.save(g, file).map_err(|e| StoreError::Snapshot {
            group: g.0,
            location: self.snaps.location(g),
            reason: e.to_string(),
        })?;
        // The range's state is durable in its own file now: it pins no parent's log.
        self.snapshot_written(g)
    }

    /// Phase 2 of a turn, once the WAL is durable up to everything `process` appended (or
    /// nothing appended needs a sync): acknowledgements leave, committed entries are
    /// applied, clients answered, reads served. Not while a sync begun with
    /// `sync_started` is in flight: `finish_synced` comes first.
    pub fn finish(&mut self) -> Result<(), StoreError> {
        assert!(
            self.syncing.is_empty(),
            "finish() while a sync is in flight (finish_synced first)"
        );
        let done = std::mem::take(&mut self.in_flight);
        self.in_flight_needs_sync = false;
        self.in_flight = self.finish_readys(done)?;
        Ok(())
    }

    /// `finish` of the `Ready`s in `done` (in the order handed); gives back the emptied
    /// vector (kept for its capacity).
    fn finish_readys(
        &mut self,
        mut done: Vec<(msg::GroupId, Box<Ready>)>,
    ) -> Result<Vec<(msg::GroupId, Box<Ready>)>, StoreError> {
        let mut applied_up_to = Vec::with_capacity(done.len());
        for (g, rd) in done.iter_mut() {
            let g = *g;
            applied_up_to.push(rd.apply.last().map(|e| e.index));
            for m in rd.send_after_sync.drain(..) {
                self.send(g, &m);
            }
            if rd.snapshot.is_some() {
                self.install_staged(g);
            }
            // Entries `process` applied already are skipped.
            for e in &rd.apply {
                self.apply_entry(g, e)?;
            }
            if let Some(r) = self.groups.get_mut(&g) {
                for rs in rd.reads.drain(..) {
                    r.waiting_reads.push((rs.index, rs.request.0));
                }
            }
        }
        for ((g, rd), applied) in done.drain(..).zip(applied_up_to) {
            if let Some(r) = self.groups.get_mut(&g) {
                // The drained `Ready` goes back to the core, which reuses its vectors.
                r.raft.advance(raft::Advanced {
                    hard_state_persisted: rd.hard_state,
                    persisted: rd.append.last().map(raft::Entry::id),
                    applied,
                    snapshot_installed: rd.snapshot.as_ref().map(|m| m.last),
                    buffers: Some(rd),
                });
            }
            self.serve_reads(g);
            self.after_turn(g)?;
        }
        if !self.pending_admin.is_empty() {
            self.check_admin();
        }
        Ok(done)
    }

    fn install_staged(&mut self, g: msg::GroupId) {
        let Some(r) = self.groups.get_mut(&g) else {
            return;
        };
        let Some(Staged {
            last, from, state, ..
        }) = r.staged.take().map(|s| *s)
        else {
            return;
        };
        info!(group = g.0, last = %last, keys = state.len(), "snapshot installed");
        let installed = state.descriptor().clone();
        let was_awaiting = std::mem::take(&mut r.awaiting_snapshot);
        self.groups
            .update_range(g, |r| std::mem::replace(&mut r.range, state));
        let Some(r) = self.groups.get_mut(&g) else {
            return;
        };
        r.last_snapshot = last.index;
        r.bytes_since_snapshot = 0;
        // Proposals below the snapshot can no longer be matched to their entries.
        let term = msg::Term(r.raft.term().0);
        let below = r.proposals.partition_point(|p| p.index <= last.index);
        answer_lost(&mut self.responses, r.proposals.drain(..below));
        self.metrics.snapshots_installed += 1;
        let resp = msg::RaftMessage {
            group: g,
            term,
            body: msg::RaftBody::SnapshotResponse(msg::SnapshotResponse {
                snapshot: msg::LogId {
                    term: msg::Term(last.term.0),
                    index: msg::LogIndex(last.index.0),
                },
                received_bytes: 0,
                outcome: msg::SnapshotOutcome::Installed,
            }),
        };
        self.batch_for(from).messages.push(resp);
        self.after_install(g, &installed, was_awaiting);
    }

    fn apply_entry(&mut self, g: msg::GroupId, e: &raft::Entry) -> Result<(), StoreError> {
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        if e.index.0 <= r.range.applied_index() {
            return Ok(());
        }
        self.metrics.applied_entries += 1;
        r.bytes_since_snapshot += e.data.len() as u64;
        if e.kind == EntryKind::ConfChange {
            self.apply_conf_change(g, e)?;
            if let Some(r) = self.groups.get_mut(&g) {
                settle_proposals(r, &mut self.responses, e, None);
            }
            return Ok(());
        }
        if e.kind == EntryKind::Normal && e.data.first() == Some(&PAYLOAD_RANGE_COMMAND) {
            self.apply_range_command(g, e)?;
            if let Some(r) = self.groups.get_mut(&g) {
                settle_proposals(r, &mut self.responses, e, None);
            }
            return Ok(());
        }
        let outcome = match (e.kind, e.data.first()) {
            (EntryKind::Normal, Some(&PAYLOAD_REQUEST)) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&e.data[1..]);
                match access_body::<ClientRequest>(&self.scratch) {
                    Ok(req) => {
                        r.window_writes += 1;
                        Some(r.range.apply(e.index.0, req))
                    }
                    Err(err) => {
                        return Err(StoreError::Raft {
                            group: g.0,
                            reason: format!(
                                "committed entry {} does not decode ({err}): the log is damaged",
                                e.index.0
                            ),
                        })
                    }
                }
            }
            (EntryKind::Normal, None) | (EntryKind::ConfChange, _) => {
                r.range.skip_to(e.index.0);
                None
            }
            (EntryKind::Normal, Some(&tag)) => {
                return Err(StoreError::BadEntry {
                    group: g.0,
                    index: e.index.0,
                    tag,
                })
            }
        };
        settle_proposals(r, &mut self.responses, e, outcome.as_ref());
        Ok(())
    }

    /// Leadership bookkeeping and snapshot policy after a group's turn.
    fn after_turn(&mut self, g: msg::GroupId) -> Result<(), StoreError> {
        let every = self.cfg.snapshot_after_entries;
        let every_bytes = self.cfg.snapshot_after_bytes;
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        let commit = r.raft.commit();
        if commit > r.last_commit {
            if r.last_commit.0 > 0 {
                self.metrics.committed_entries += commit.0 - r.last_commit.0;
            }
            r.last_commit = commit;
        }
        let leader = r.raft.leader();
        if leader != r.last_leader {
            r.last_leader = leader;
            self.metrics.leader_changes += 1;
        }
        let is_leader = r.raft.role() == Role::Leader;
        if r.was_leader && !is_leader {
            // Proposals of a deposed leader may still commit under the new one: unknown.
            let range = r.range.descriptor().id;
            answer_lost(&mut self.responses, r.proposals.drain(..));
            r.waiting_reads.clear();
            fail_reads(
                &mut self.reads,
                &mut self.responses,
                |rd| rd.group == g,
                &RequestError::NotLeader {
                    range,
                    leader_hint: leader.map(|n| msg::NodeId(n.0)),
                },
            );
        }
        r.was_leader = is_leader;
        let applied = LogIndex(r.range.applied_index());
        let due = (every > 0 && applied.0 >= r.last_snapshot.0 + every)
            || (every_bytes > 0 && r.bytes_since_snapshot >= every_bytes);
        // A leader keeps the log a lagging follower still needs, up to twice the policy:
        // a follower a little behind catches up from the log, a dead one gets a snapshot.
        let overdue = (every > 0 && applied.0 >= r.last_snapshot.0 + 2 * every)
            || (every_bytes > 0 && r.bytes_since_snapshot >= 2 * every_bytes);
        let me = r.raft.id();
        let lagging = is_leader
            && r.raft
                .conf_state()
                .each_member()
                .filter(|p| *p != me)
                .any(|p| r.raft.progress(p).is_none_or(|pr| pr.matched < applied));
        if due
            && (!lagging || overdue)
            && self.ticks >= self.snapshot_retry_at
            && applied > r.last_snapshot
            && applied <= r.raft.applied()
            && !self.has_unsaved_child(g)
        {
            self.take_snapshot(g, applied)?;
        }
        self.maybe_split(g);
        Ok(())
    }

    /// Starts writing the range's snapshot at `applied` in the background; once it is
    /// durable (`collect_saves`) the core's log is compacted below it and the next WAL
    /// append compacts the shard log.
    fn take_snapshot(&mut self, g: msg::GroupId, applied: LogIndex) -> Result<(), StoreError> {
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        if r.saving.is_some() {
            return Ok(());
        }
        let meta = match r.raft.snapshot_meta(applied) {
            Ok(m) => m,
            Err(e) => {
                debug!(group = g.0, error = %e, "snapshot deferred");
                return Ok(());
            }
        };
        if self.snapshot_deferred() {
            return Ok(());
        }
        self.start_save(g, meta);
        Ok(())
    }

    /// Starts `g`'s snapshot file of its applied state with `meta`: encoded a slice per
    /// tick (`advance_encoding`, the first one now) while the group goes on applying
    /// writes, then handed to the snapshot store's background writer.
    fn start_save(&mut self, g: msg::GroupId, meta: SnapshotMeta) {
        let Some(r) = self.groups.get_mut(&g) else {
            return;
        };
        let (mut file, prefix_crc) = SnapshotFile::begin(g, &meta, r.range.snapshot_size_hint());
        let range_at = file.len();
        let ticket = self.next_save;
        self.next_save += 1;
        r.range.begin_snapshot(&mut file, ticket);
        r.saving = Some(Box::new(Saving {
            ticket,
            index: meta.last.index,
            bytes: r.bytes_since_snapshot,
            size: 0,
            encoding: Some(Box::new(Encoding {
                file,
                prefix_crc,
                range_at,
            })),
        }));
        if !self.encoding.contains(&g) {
            self.encoding.push(g);
        }
        self.advance_encoding(g, self.cfg.snapshot_entries_per_tick);
    }

    /// Encodes about `budget` more entries of `g`'s snapshot file; a complete file goes to
    /// the background writer.
    fn advance_encoding(&mut self, g: msg::GroupId, budget: usize) {
        let mut finished = true;
        if let Some(r) = self.groups.get_mut(&g) {
            if let Some(s) = r.saving.as_mut() {
                if let Some(enc) = s.encoding.as_mut() {
                    match r.range.continue_snapshot(&mut enc.file, s.ticket, budget) {
                        SnapshotProgress::More => finished = false,
                        SnapshotProgress::Done(crc) => {
                            if let Some(enc) = s.encoding.take() {
                                let Encoding {
                                    mut file,
                                    prefix_crc,
                                    range_at,
                                } = *enc;
                                SnapshotFile::finish(&mut file, prefix_crc, range_at, crc);
                                s.size = file.len();
                                self.snaps.save_in_background(s.ticket, g, file);
                            }
                        }
                        // A split or merge changed the range since: started again later.
                        SnapshotProgress::Abandoned => r.saving = None,
                    }
                }
            }
        }
        if finished {
            self.encoding.retain(|x| *x != g);
        }
    }

    /// One tick's slice of the snapshot files being encoded, shared among them.
    fn advance_encodings(&mut self) {
        if self.encoding.is_empty() {
            return;
        }
        let budget = (self.cfg.snapshot_entries_per_tick / self.encoding.len()).max(1);
        for g in self.encoding.clone() {
            self.advance_encoding(g, budget);
        }
    }

    /// Takes in the background snapshot saves that finished (with `wait`, all of them,
    /// waiting for those under way): a durable file compacts its group's log and frees what
    /// it no longer needs; a failed one defers snapshots (`snapshot_write_failed`).
    pub(super) fn collect_saves(&mut self, wait: bool) -> Result<(), StoreError> {
        for done in self.snaps.finished_saves(wait) {
            let g = done.group;
            let Some(r) = self.groups.get_mut(&g) else {
                continue;
            };
            // A save the group no longer waits for (a merge, split or installed snapshot
            // since made it stale) changes nothing here: its file is a valid older one.
            let Some(saving) = r.saving.take_if(|s| s.ticket == done.ticket) else {
                continue;
            };
            if let Err(e) = done.result {
                let e = StoreError::Snapshot {
                    group: g.0,
                    location: self.snaps.location(g),
                    reason: e.to_string(),
                };
                self.snapshot_write_failed(g, &e);
                continue;
            }
            self.snapshot_saved(g, *saving)?;
        }
        Ok(())
    }

    /// `saving` is durable.
    fn snapshot_saved(&mut self, g: msg::GroupId, saving: Saving) -> Result<(), StoreError> {
        let Some(r) = self.groups.get_mut(&g) else {
            return Ok(());
        };
        self.metrics.snapshots_taken += 1;
        self.snapshot_failures = 0;
        let index = saving.index;
        if index > r.raft.snapshot().last.index {
            if let Err(e) = r.raft.compact(index) {
                debug!(group = g.0, error = %e, "compaction deferred");
                return Ok(());
            }
            r.last_snapshot = index;
            r.bytes_since_snapshot = r.bytes_since_snapshot.saturating_sub(saving.bytes);
            r.compact_below = Some(LogIndex(index.0 + 1));
        }
        info!(
            node = self.cfg.node.0,
            group = g.0,
            index = index.0,
            bytes = saving.size,
            "snapshot taken"
        );
        self.snapshot_written(g)
    }

    /// Whether snapshot files are not attempted now, after one could not be written.
    pub(super) fn snapshot_deferred(&self) -> bool {
        self.ticks < self.snapshot_retry_at
    }

    /// A snapshot file could not be written (a full disk ...). Nothing durable is at stake:
    /// the previous snapshot file and the log are intact, the log is just not compacted
    /// yet. Snapshots are retried later, less often after each failure in a row.
    pub(super) fn snapshot_write_failed(&mut self, g: msg::GroupId, e: &StoreError) {
        let retry_in = SNAPSHOT_RETRY_TICKS
            .saturating_mul(1 << self.snapshot_failures.min(16))
            .min(SNAPSHOT_RETRY_MAX_TICKS);
        self.snapshot_failures = self.snapshot_failures.saturating_add(1);
        self.snapshot_retry_at = self.ticks + retry_in;
        warn!(group = g.0, error = %e, retry_in_ticks = retry_in,
            "snapshot file not written (is the disk full?); the log keeps its entries, retrying later");
    }

    /// Makes `node` campaign in `group` at once (bootstrap and tests).
    pub fn campaign(&mut self, group: msg::GroupId) {
        if let Some(r) = self.groups.get_mut(&group) {
            r.raft.campaign();
        }
    }

    /// Whether every group sleeps and no turn of the store is in flight: then a tick only
    /// counts time, sends the liveness beats and runs the store's periodic checks, and the
    /// runtime may sleep through ticks (`idle_ticks`).
    pub fn is_idle(&self) -> bool {
        self.groups.awake_len() == 0
            && self.in_flight.is_empty()
            && self.syncing.is_empty()
            && self.restart_leads.is_empty()
            && self.restart_waits.is_empty()
            && self.reads.is_empty()
            && self.pending_admin.is_empty()
    }

    /// How many ticks the runtime may let pass before it next ticks the store: one unless
    /// the store is idle (`is_idle`), and then up to the tick of the next liveness beat
    /// (`beat_ticks`), so beats leave on time. The runtime runs the ticks it
    /// slept through in a row, as soon as it wakes, before anything else; anything that
    /// gives the store work wakes it earlier.
    pub fn idle_ticks(&self) -> u64 {
        if !self.is_idle() {
            return 1;
        }
        let beat = self.beat_ticks();
        beat - self.ticks % beat
    }

    /// Ticks between two liveness beats of this shard to each peer: the heartbeat interval,
    /// or `idle_beat_ticks` while the store is idle.
    fn beat_ticks(&self) -> u64 {
        if self.is_idle() {
            self.idle_beat_ticks()
        } else {
            u64::from(self.cfg.heartbeat_ticks.max(1))
        }
    }

    /// The beat interval of an idle store: two heartbeat intervals, but never fewer than
    /// five beats in an election timeout (a peer's silence for one wakes the followers of
    /// its leaders, who then campaign), and never below the heartbeat interval. A beat is
    /// a send here and a receive and a wake-up at each peer: at 100,000 sleeping ranges
    /// the beats were most of an idle node's CPU.
    fn idle_beat_ticks(&self) -> u64 {
        let heartbeat = u64::from(self.cfg.heartbeat_ticks.max(1));
        (2 * heartbeat)
            .min(u64::from(self.cfg.election_ticks) / 5)
            .max(heartbeat)
    }

    /// Whether any group has work for `process` (the runtime may skip a turn otherwise).
    pub fn has_work(&self) -> bool {
        !self.responses.is_empty()
            || !self.admin_responses.is_empty()
            || self.liveness_due
            || self.sync_wanted
            || self.outbox.iter().any(|b| b.message_count() > 0)
            || self.groups.pending_values().any(|r| {
                // A received snapshot waits for a turn without a sync in flight.
                (r.raft.has_ready() && !(self.is_syncing() && r.raft.has_pending_snapshot()))
                    || r.compact_below.is_some()
                    || r.outgoing.iter().any(|o| o.offset < o.file.len())
            })
    }

    /// Checks the invariants of every group (simulator and tests).
    pub fn check_invariants(&self) {
        self.groups.check();
        for g in &self.forced_waiting {
            assert!(
                self.groups.pinned(*g) || self.groups.was_unpinned(*g),
                "group {} waits for its children's files but none pins its log",
                g.0
            );
        }
        let queued: HashSet<msg::GroupId> = self
            .restart_leads
            .iter()
            .chain(&self.restart_waits)
            .copied()
            .collect();
        for r in self.groups.values() {
            if r.dormant != Dormant::No {
                // The pacer rouses it in the end, if nothing else does first.
                assert!(
                    queued.contains(&r.group),
                    "group {} dormant but not queued for the restart pacer",
                    r.group.0
                );
                assert!(
                    r.raft.leader().is_none() && r.restarting,
                    "group {} dormant with a leader",
                    r.group.0
                );
            }
            if !r.awake {
                assert!(
                    is_asleep_able(r, self.cfg.node),
                    "group {} asleep with work or not quiesced",
                    r.group.0
                );
                if r.raft.role() != Role::Leader && r.dormant == Dormant::No {
                    let l = r.raft.leader();
                    assert!(
                        l.is_some_and(
                            |l| self.last_heard.contains_key(&l) && !self.silent.contains(&l)
                        ),
                        "group {}: a follower asleep while its leader {:?} is silent",
                        r.group.0,
                        l
                    );
                }
            }
            r.raft.check_invariants();
            assert!(
                LogIndex(r.range.applied_index()) <= r.raft.commit(),
                "group {}: applied {} beyond commit {}",
                r.group.0,
                r.range.applied_index(),
                r.raft.commit().0
            );
        }
    }
}

fn status_of(r: &Replica) -> Option<ReplicaStatus> {
    if r.awaiting_snapshot {
        return None;
    }
    Some(ReplicaStatus {
        descriptor: r.range.descriptor().clone(),
        role: r.raft.role(),
        term: r.raft.term().0,
        leader: r.raft.leader().map(|n| n.0),
        commit: r.raft.commit().0,
        applied: r.range.applied_index(),
        state_hash: r.range.state_hash(),
        keys: r.range.len(),
        quiesced: r.raft.is_quiesced(),
        restarting: is_restarting(r),
    })
}

/// Whether `p` is `r`'s status now (`status_of(r) == Some(p)`, without building it).
/// Every field is named, so one added to `ReplicaStatus` must be compared here too.
fn status_is(r: &Replica, p: &ReplicaStatus) -> bool {
    let ReplicaStatus {
        descriptor,
        role,
        term,
        leader,
        commit,
        applied,
        state_hash,
        keys,
        quiesced,
        restarting,
    } = p;
    *role == r.raft.role()
        && *term == r.raft.term().0
        && *leader == r.raft.leader().map(|n| n.0)
        && *commit == r.raft.commit().0
        && *applied == r.range.applied_index()
        && *state_hash == r.range.state_hash()
        && *keys == r.range.len()
        && *quiesced == r.raft.is_quiesced()
        && *restarting == is_restarting(r)
        && descriptor == r.range.descriptor()
}

/// Room left in a restored log for the entries of the first turns after a restart.
const RESTORED_LOG_SLACK: usize = 4;

/// Elements an outbox vector keeps whatever its use.
const OUTBOX_KEEP: usize = 1024;
/// Quiet turns in a row after which the outbox's grown vectors are halved.
const OUTBOX_SHRINK_AFTER: u32 = 64;

/// Whether this turn used under a quarter of `v`, or `v` is no larger than it always keeps.
fn is_small_use<T>(v: &Vec<T>) -> bool {
    v.capacity() <= OUTBOX_KEEP || v.len() < v.capacity() / 4
}

/// Empties `v`, keeping its buffer for the next turn; with `shrink`, a buffer grown past
/// `OUTBOX_KEEP` is halved (never below it).
fn clear_and_trim<T>(v: &mut Vec<T>, shrink: bool) {
    v.clear();
    if shrink && v.capacity() > OUTBOX_KEEP {
        v.shrink_to((v.capacity() / 2).max(OUTBOX_KEEP));
    }
}

/// Whether `r` was made dormant at the open and has heard of no leader since.
fn is_restarting(r: &Replica) -> bool {
    r.restarting && r.raft.leader().is_none()
}

/// Rouses a dormant replica (see `Dormant`); nothing for one that is not. Its core was
/// created at the store's open (tick 0) and its clock stood still while it slept: the time
/// it missed passes now, so the restart's vote guard ends when it would have had the core
/// ticked all along (no earlier: that would break the leases the guard protects).
fn rouse(r: &mut Replica, now: u64) {
    if r.dormant == Dormant::No {
        return;
    }
    r.dormant = Dormant::No;
    r.raft.clock_skipped(now.saturating_sub(r.raft.clock()));
    r.raft.wake();
    r.last_activity = now;
}

/// The restart pacer's bounds (see `Store::pace_restart`): replicas roused per tick, and
/// awake groups above which it rouses none.
const RESTART_ROUSE_PER_TICK: usize = 64;
const RESTART_AWAKE_CAP: usize = 2048;

/// Whether `r` may sleep (leave the awake list until something accesses it): quiesced, with
/// nothing in flight or waiting, and nothing only a tick would notice (a learner's silent
/// leader: `want_leaders`; a frozen range: `finish_frozen`).
fn is_asleep_able(r: &Replica, me: NodeId) -> bool {
    r.raft.is_quiesced()
        && !r.raft.has_ready()
        && r.compact_below.is_none()
        && r.proposals.is_empty()
        && r.waiting_reads.is_empty()
        && r.outgoing.is_empty()
        && r.incoming.is_none()
        && r.staged.is_none()
        && r.saving.is_none()
        && !r.awaiting_snapshot
        && r.range.frozen_at().is_none()
        && r.range
            .descriptor()
            .replica(msg::NodeId(me.0))
            .is_some_and(|x| x.role == msg::ReplicaRole::Voter)
}

/// Writes one turn's records: as one WAL append when they fit (the usual case), else as
/// several appends, each at most `Wal::max_batch_bytes` (one sync covers them all). A
/// group's hard state goes before its entries (a restore clips a commit index past the log),
/// and its entries may be split across appends at entry boundaries. Returns whether
/// anything was appended.
fn write_turn<D: Disk>(
    wal: &mut Wal<D>,
    in_flight: &[(msg::GroupId, Box<Ready>)],
    compactions: &[(msg::GroupId, LogIndex)],
    metrics: &mut StoreMetrics,
) -> Result<bool, WalError> {
    use quasar_wal::record::{entry_len, record_len, ENTRIES_PREFIX_LEN};
    let max = wal.max_batch_bytes();
    let mut appended = false;
    let mut batch = Batch::with_capacity(64);
    let flush = |batch: &mut Batch<'_>,
                 wal: &mut Wal<D>,
                 metrics: &mut StoreMetrics,
                 appended: &mut bool|
     -> Result<(), WalError> {
        if !batch.is_empty() {
            metrics.wal_appends += 1;
            metrics.wal_bytes += batch.len_bytes() as u64;
            wal.append(batch)?;
            batch.clear();
            *appended = true;
        }
        Ok(())
    };
    // Small fixed-size records: 16 to 24-byte bodies.
    let small = record_len(24);
    for (g, rd) in in_flight {
        let wg = quasar_wal::GroupId(g.0);
        if let Some(meta) = &rd.snapshot {
            if batch.len_bytes() + small > max {
                flush(&mut batch, wal, metrics, &mut appended)?;
            }
            batch.snapshot_mark(
                wg,
                quasar_wal::LogIndex(meta.last.index.0),
                quasar_wal::Term(meta.last.term.0),
            );
        }
        if let Some(hs) = rd.hard_state {
            if batch.len_bytes() + small > max {
                flush(&mut batch, wal, metrics, &mut appended)?;
            }
            batch.hard_state(
                wg,
                quasar_wal::HardState {
                    term: quasar_wal::Term(hs.term.0),
                    vote: hs.vote.map_or(0, |n| n.0),
                    commit: quasar_wal::LogIndex(hs.commit.0),
                },
            );
        }
        let mut rest: &[raft::Entry] = &rd.append;
        while let Some(first) = rest.first() {
            let room = max.saturating_sub(batch.len_bytes() + record_len(ENTRIES_PREFIX_LEN));
            let mut used = 0;
            let mut take = 0;
            for e in rest {
                let len = entry_len(e.data.len());
                if used + len > room {
                    break;
                }
                used += len;
                take += 1;
            }
            if take == 0 {
                if batch.is_empty() {
                    // One entry larger than a segment: the WAL refuses it with the limits.
                    take = 1;
                } else {
                    flush(&mut batch, wal, metrics, &mut appended)?;
                    continue;
                }
            }
            batch.entries(
                wg,
                quasar_wal::LogIndex(first.index.0),
                rest[..take]
                    .iter()
                    .map(|e| (quasar_wal::Term(e.term.0), e.data.as_ref())),
            );
            rest = &rest[take..];
        }
    }
    for (g, below) in compactions {
        if batch.len_bytes() + small > max {
            flush(&mut batch, wal, metrics, &mut appended)?;
        }
        batch.compact(quasar_wal::GroupId(g.0), quasar_wal::LogIndex(below.0));
    }
    flush(&mut batch, wal, metrics, &mut appended)?;
    Ok(appended)
}

/// Answers the proposals of `r` up to entry `e`: the one at `e` (if this replica proposed
/// it in `e`'s term) with `outcome`, older ones whose index another leader's entry took
/// with `NotLeader` (never committed).
fn settle_proposals(
    r: &mut Replica,
    responses: &mut Vec<(ConnToken, ClientResponse)>,
    e: &raft::Entry,
    outcome: Option<&crate::range::Outcome>,
) {
    while let Some(p) = r.proposals.front() {
        if p.index > e.index {
            break;
        }
        let Some(p) = r.proposals.pop_front() else {
            break;
        };
        let result = if p.index == e.index && p.term == e.term {
            match outcome {
                Some(o) => o.clone(),
                None => continue,
            }
        } else {
            Err(RequestError::NotLeader {
                range: r.range.descriptor().id,
                leader_hint: r.raft.leader().map(|n| msg::NodeId(n.0)),
            })
        };
        responses.push((
            p.token,
            ClientResponse {
                request_id: p.request_id,
                result,
            },
        ));
    }
}

/// Answers proposals whose fate this replica can no longer learn (leadership lost, or a
/// snapshot replaced their entries): they may have been committed, so `Ambiguous`.
fn answer_lost(
    responses: &mut Vec<(ConnToken, ClientResponse)>,
    lost: impl Iterator<Item = Proposal>,
) {
    for p in lost {
        responses.push((
            p.token,
            ClientResponse {
                request_id: p.request_id,
                result: Err(RequestError::Ambiguous {
                    reason: AmbiguousReason::LeadershipLost,
                }),
            },
        ));
    }
}

/// Answers every pending read that `pick` selects with `error`.
fn fail_reads(
    reads: &mut BTreeMap<u64, PendingRead>,
    responses: &mut Vec<(ConnToken, ClientResponse)>,
    pick: impl Fn(&PendingRead) -> bool,
    error: &RequestError,
) {
    let ids: Vec<u64> = reads
        .iter()
        .filter(|(_, r)| pick(r))
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        if let Some(r) = reads.remove(&id) {
            responses.push((
                r.token,
                ClientResponse {
                    request_id: r.request_id,
                    result: Err(error.clone()),
                },
            ));
        }
    }
}

/// Whether range `n` replaced range `d`: it is newer and holds `d`'s first key, which only
/// a merge (or a newer range after one) can do.
fn supersedes(n: &RangeDescriptor, d: &RangeDescriptor) -> bool {
    n.epoch > d.epoch && n.contains(&d.start)
}

/// The groups of `ranges` that another of them supersedes (`supersedes`), in O(n log n)
/// (a store opens with many thousands of ranges): a sweep over the ranges by start keeps
/// those begun so far in a heap by epoch; the newest one still holding the current start
/// decides.
fn superseded_among(ranges: &mut [&RangeDescriptor]) -> Vec<msg::GroupId> {
    use std::collections::BinaryHeap;
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    let mut begun: BinaryHeap<(msg::RangeEpoch, usize)> = BinaryHeap::new();
    let mut next = 0;
    let mut out = Vec::new();
    for (i, d) in ranges.iter().enumerate() {
        while next < ranges.len() && ranges[next].start <= d.start {
            begun.push((ranges[next].epoch, next));
            next += 1;
        }
        // A range that ends at or before this start ends before every later one.
        while begun
            .peek()
            .is_some_and(|&(_, j)| !ranges[j].contains(&d.start))
        {
            begun.pop();
        }
        // The newest range holding `d.start` (`d` itself is on the heap: when it is on top,
        // no other is newer).
        if begun.peek().is_some_and(|&(e, j)| j != i && e > d.epoch) {
            out.push(d.group);
        }
    }
    out
}

#[cfg(test)]
mod tests;
