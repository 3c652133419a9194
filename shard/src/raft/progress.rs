//! The leader's view of one follower (thesis §3.5, flow control as in etcd's design):
//! what it holds, what to send next, and how much may be in flight.
//!
//! ```text
//!            reject / heartbeat miss          follower behind the compacted log
//!   +-------+ <----------------- +-----------+ -----------------> +----------+
//!   | Probe |                    | Replicate |                    | Snapshot |
//!   +-------+ -----------------> +-----------+ <-- report_snapshot +----------+
//!             accepted append                      (via Probe)
//! ```

use super::types::LogIndex;
use std::collections::VecDeque;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Position unknown: one append at a time, until one is accepted.
    Probe,
    /// Position known: appends are sent optimistically (pipelined), bounded by the window.
    Replicate,
    /// The follower needs the snapshot at `pending`; no appends until it reports.
    Snapshot { pending: LogIndex },
}

/// Ring of the last index of every append in flight (Replicate state). It grows to what
/// the follower's window has needed (at most `cap`) and keeps that, instead of holding
/// `cap` slots from the start: a node leads thousands of mostly idle groups.
#[derive(Clone, Debug)]
pub struct Inflights {
    last_indexes: VecDeque<LogIndex>,
    cap: usize,
}

impl Inflights {
    pub fn new(cap: usize) -> Inflights {
        Inflights {
            last_indexes: VecDeque::new(),
            cap,
        }
    }
    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.cap
    }
    pub fn count(&self) -> usize {
        self.last_indexes.len()
    }
    /// Gives back the memory of an empty ring (an idle group's).
    pub fn shrink(&mut self) {
        if self.last_indexes.is_empty() {
            self.last_indexes = VecDeque::new();
        }
    }
    pub fn add(&mut self, last: LogIndex) {
        assert!(!self.full(), "inflight window overflow at {last}");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b <= last));
        self.last_indexes.push_back(last);
    }
    /// Frees every append whose last index is at or below `index`.
    pub fn free_to(&mut self, index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&f| f <= index) {
            self.last_indexes.pop_front();
        }
    }
    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// One follower (or learner) as the leader sees it.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log. Never decreases within a term.
    pub matched: LogIndex,
    /// Next index to send. Invariant: `matched < next`.
    pub next: LogIndex,
    pub state: ProgressState,
    /// Probe state: an append was sent and not answered yet (wait before the next).
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round (§6.2).
    pub recent_active: bool,
    /// The leader's tick count echoed by the latest heartbeat response (leases, §6.4.1).
    pub heartbeat_acked_tick: u64,
    /// The highest heartbeat round acknowledged (ReadIndex, §6.4).
    pub heartbeat_acked_seq: u64,
    /// Ticks spent in the snapshot state: a snapshot whose report never comes (lost
    /// message, runtime restart) is retried after a while instead of blocking forever.
    pub snapshot_ticks: u32,
}

impl Progress {
    pub fn new(next: LogIndex, max_inflight: usize) -> Progress {
        Progress {
            matched: LogIndex(0),
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            heartbeat_acked_tick: 0,
            heartbeat_acked_seq: 0,
            snapshot_ticks: 0,
        }
    }

    pub fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.next = self.matched.max(pending).next();
        } else {
            self.next = self.matched.next();
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched.next();
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_snapshot(&mut self, pending: LogIndex) {
        self.state = ProgressState::Snapshot { pending };
        self.snapshot_ticks = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// May another append be sent now?
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records an append whose entries end at `last` (or an empty probe).
    pub fn sent(&mut self, last: LogIndex, entry_count: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next = last.next();
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// An acknowledgement up to `index`; false if stale (nothing learned).
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let mut updated = false;
        if self.matched < index {
            self.matched = index;
            updated = true;
            self.probe_sent = false;
        }
        if self.next <= index {
            self.next = index.next();
        }
        updated
    }

    /// A rejection of the append after `rejected`, with the follower's `hint_next`
    /// (first index to try). False if stale.
    pub fn maybe_decr_to(&mut self, rejected: LogIndex, hint_next: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            // Pipelined appends: only a rejection at or above `matched` is news.
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched.next();
            return true;
        }
        // Probe: only a rejection of the probe in flight counts.
        if self.next.prev() != rejected {
            return false;
        }
        self.next = hint_next.min(rejected).max(self.matched.next());
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_pauses_and_frees() {
        let mut p = Progress::new(LogIndex(1), 2);
        p.become_replicate();
        p.sent(LogIndex(3), 3);
        assert!(!p.is_paused());
        p.sent(LogIndex(5), 2);
        assert!(p.is_paused());
        assert!(p.maybe_update(LogIndex(3)));
        p.inflights.free_to(LogIndex(3));
        assert!(!p.is_paused());
        assert_eq!(p.next, LogIndex(6));
    }

    #[test]
    fn probe_backtracks_to_hint_but_not_below_match() {
        let mut p = Progress::new(LogIndex(10), 4);
        p.matched = LogIndex(2);
        p.sent(LogIndex(9), 1);
        assert!(p.is_paused());
        assert!(
            !p.maybe_decr_to(LogIndex(5), LogIndex(3)),
            "stale rejection"
        );
        assert!(p.maybe_decr_to(LogIndex(9), LogIndex(1)));
        assert_eq!(p.next, LogIndex(3));
        assert!(!p.is_paused());
    }
}
