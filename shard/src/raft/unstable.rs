//! Which part of the in-memory log is not durable yet: the entries not yet handed to the
//! runtime in a `Ready`, those handed but not reported synced, and a received snapshot
//! waiting to be installed.
//!
//! ```text
//!   first ........ persisted ....... handed ........ last
//!   |  durable      |  being synced   |  not in a Ready yet |
//! ```

use super::types::{LogId, LogIndex, SnapshotMeta};

#[derive(Clone, Debug, Default)]
pub struct Unstable {
    /// Every entry at or below `handed` has been given to a `Ready::append` (since the
    /// last overwrite). Invariant: `persisted <= handed <= last index`.
    pub handed: LogIndex,
    /// Every entry at or below `persisted` is durable on this node, as reported by
    /// `advance`. Lowered when a suffix is overwritten.
    pub persisted: LogIndex,
    /// A snapshot received from the leader, not yet handed to a `Ready`.
    pub snapshot: Option<SnapshotMeta>,
    /// A snapshot handed to a `Ready`, not yet reported installed.
    pub snapshot_in_flight: Option<LogId>,
}

impl Unstable {
    /// A suffix from `from` on was replaced: nothing there is handed or durable any more.
    pub fn truncated(&mut self, from: LogIndex) {
        let keep = from.prev();
        self.handed = self.handed.min(keep);
        self.persisted = self.persisted.min(keep);
    }
}
