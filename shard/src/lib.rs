//! quasar-shard: the pure Raft core, and (later) ranges, the multi-raft store and the runtime.

pub mod range;

/// Linearizability checking of client histories, for the simulators.
#[cfg(feature = "sim")]
pub mod linearizability;
