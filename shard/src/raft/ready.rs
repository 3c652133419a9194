//! What the core asks of its runtime (`Ready`), what the runtime reports back (`Advanced`),
//! and what a node is rebuilt from after a restart (`Restored`).
//!
//! One turn of the runtime, for one node:
//!
//! ```text
//!  ready() -> Box<Ready>
//!   1. install `snapshot` (if any) and persist it with its data
//!   2. persist `hard_state` and `append` (overwriting from append[0].index on)
//!   3. send `send_now` at once (in parallel with 2: the leader replicates while it syncs)
//!   4. sync; then send `send_after_sync` (votes, acknowledgements)
//!   5. apply `apply`, serve `reads` once applied
//!  advance(ready.done()) (or an `Advanced` saying what actually happened)
//! ```
//!
//! A runtime may take the next `Ready` while the sync of the previous one still runs
//! (pipelining: the leader appends and replicates new proposals, and commits what its
//! followers acknowledge, during its own fdatasync). It then persists the `Ready`s in the
//! order they were handed, sends each one's `send_after_sync` only once a sync covering it
//! completed, applies in order, and calls `advance` once per `Ready`, in order. `apply`
//! never names an entry of a `Ready` not yet advanced: an entry is applied only once it is
//! durable here. A `Ready` carrying a snapshot is handed only when none is outstanding, and
//! none is handed until it is advanced.
//!
//! A `Ready` is boxed and handed back in `Advanced::buffers` for the next turn, vectors and
//! all: an idle node (thousands per shard) then holds a pointer, or nothing once it
//! releases its buffers, instead of the `Ready`'s room.

use super::message::Message;
use super::types::{Entry, HardState, LogId, LogIndex, ReadState, SnapshotMeta};

/// Work for the runtime; see the module docs for the order.
#[derive(Debug, Default)]
pub struct Ready {
    /// Persist with `append`, in the same sync. `None`: unchanged.
    pub hard_state: Option<HardState>,
    /// `hard_state` differs from the one handed before only in its commit index. That may
    /// be persisted lazily (by a later sync, or lost in a crash: a restarted node learns the
    /// commit again from its leader), so a `Ready` with nothing else to persist needs no
    /// sync of its own (see [`Ready::needs_sync`]).
    pub hard_state_commit_only: bool,
    /// Entries to persist, contiguous; the first may be at or below the last persisted
    /// index: the log from there on is overwritten (a new leader replaced a suffix).
    pub append: Vec<Entry>,
    /// Safe to send before `append` and `hard_state` are durable.
    pub send_now: Vec<Message>,
    /// Only after the sync that covers `append` and `hard_state`: votes and acknowledgements.
    pub send_after_sync: Vec<Message>,
    /// Committed entries to apply, in index order (only entries already durable here).
    pub apply: Vec<Entry>,
    /// A snapshot received from the leader: install its data (attached by the transport)
    /// and persist the metadata; the log now starts after `snapshot.last`.
    pub snapshot: Option<SnapshotMeta>,
    /// Linearizable reads: serve each once the state machine has applied its index.
    pub reads: Vec<ReadState>,
    /// The core asks for a state machine snapshot at this applied index; once taken, call
    /// `compact(meta.last.index)`. Only a request: ignoring it is safe.
    pub snapshot_request: Option<SnapshotMeta>,
}

impl Ready {
    /// The report for a runtime that did everything this `Ready` asked.
    pub fn done(self: Box<Self>) -> Advanced {
        Advanced {
            hard_state_persisted: self.hard_state,
            persisted: self.append.last().map(Entry::id),
            applied: self.apply.last().map(|e| e.index),
            snapshot_installed: self.snapshot.as_ref().map(|m| m.last),
            buffers: Some(self),
        }
    }

    /// Whether step 4 needs a sync: entries, a snapshot, or a term or vote to persist. When
    /// it does not, `send_after_sync` may leave at once: none of it depends on a commit
    /// index being durable.
    pub fn needs_sync(&self) -> bool {
        !self.append.is_empty()
            || self.snapshot.is_some()
            || (self.hard_state.is_some() && !self.hard_state_commit_only)
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.append.is_empty()
            && self.send_now.is_empty()
            && self.send_after_sync.is_empty()
            && self.apply.is_empty()
            && self.snapshot.is_none()
            && self.reads.is_empty()
            && self.snapshot_request.is_none()
    }
}

/// What the runtime did with the last `Ready`.
#[derive(Debug, Default)]
pub struct Advanced {
    /// The hard state that is now durable.
    pub hard_state_persisted: Option<HardState>,
    /// The last entry now durable (the last of `append`). Reports naming an entry that was
    /// overwritten meanwhile are ignored.
    pub persisted: Option<LogId>,
    /// The highest index now applied to the state machine.
    pub applied: Option<LogIndex>,
    /// The snapshot now installed.
    pub snapshot_installed: Option<LogId>,
    /// The drained `Ready`, handed back so the core reuses its vectors (no allocation per
    /// turn in the steady state). `None` is fine.
    pub buffers: Option<Box<Ready>>,
}

/// What a node is rebuilt from: exactly what the runtime persisted (nothing unsynced).
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The last snapshot installed or taken (`last.index == 0`: none). Its `conf_state` is
    /// the membership at `last.index`.
    pub snapshot: SnapshotMeta,
    /// Entries after `snapshot.last.index`, contiguous.
    pub entries: Vec<Entry>,
    /// The state machine's applied index (at least `snapshot.last.index`); entries from
    /// there up to the commit index are handed to `apply` again.
    pub applied: LogIndex,
    /// The last entry of an earlier replica of this group on this node, removed with its
    /// log (zero: none). The node neither votes for a candidate whose log is behind it nor
    /// counts its own vote while its own log is: it voted and acknowledged entries as a member that
    /// held that log, and a majority of an older configuration may still count on it (a
    /// lagging member that missed the change which removed this node must not win this
    /// node's vote with an empty log's consent; found by the whole-node simulator).
    pub vote_floor: LogId,
}

impl Restored {
    /// A brand-new group whose initial members are given by `conf_state` (every initial
    /// member is created with the same value).
    pub fn new_group(conf_state: super::types::ConfState) -> Restored {
        Restored {
            snapshot: SnapshotMeta {
                last: LogId::default(),
                conf_state,
            },
            ..Restored::default()
        }
    }

    /// A replica added to an existing group: it knows nothing and waits for the leader
    /// (it receives a snapshot or the log from the start).
    pub fn joining() -> Restored {
        Restored::default()
    }
}
