//! quasar-shard: the pure Raft core, and (later) ranges, the multi-raft store and the runtime.

#[cfg(feature = "sim")]
pub mod sim;
