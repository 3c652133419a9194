//! quasar-shard: everything one core of a Quasar node runs.
//!
//! - [`raft`]: the pure, deterministic Raft core (`RaftNode` -> `Ready` -> `advance`).
//!
//! Ranges, the multi-raft store, the runtime and the simulator (feature `sim`) live beside
//! it (see `DESIGN.md`).

pub mod raft;

#[cfg(feature = "sim")]
pub mod sim;
