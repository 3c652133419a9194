//! quasar-shard: everything one core of a Quasar node runs.
//!
//! - [`raft`]: the pure, deterministic Raft core (`RaftNode` -> `Ready` -> `advance`).
//! - [`range`]: the key-value state machine of one range (versioned keys, compare-and-set,
//!   transactions, paged scans, counters, size limits, exactly-once sessions, snapshots).
//! - `sim` (feature `sim`): the deterministic cluster simulator that drives the Raft core
//!   under faults and checks safety after every step.
//! - [`linearizability`]: the Wing–Gong/Lowe checker of client histories, for the
//!   simulators and for `quasar-bench nemesis` on real processes.
//! - [`cpu`]: CPU time of the process and of a shard's thread, for `Status`.
//! - [`store`] and [`runtime`]: the multi-raft store of one shard and its glommio event
//!   loop, which join the Raft core to the WAL and the transport.

pub mod cpu;
pub mod raft;
pub mod range;

/// Linearizability checking of client histories (simulators and `quasar-bench nemesis`).
pub mod linearizability;

/// The deterministic cluster simulator (feature `sim`).
#[cfg(feature = "sim")]
pub mod sim;

/// The multi-raft store of one shard (no I/O of its own beyond the WAL and snapshot files).
pub mod store;

/// The per-core event loop on glommio (the only async code of the shard).
pub mod runtime;
