//! The deterministic cluster simulator (feature `sim`): N Raft nodes in one thread, driven
//! from one seed, over a simulated network (`net`), simulated disks (`storage`) and a
//! simulated clock (`clock`). A scenario is a workload plus fault injectors, kept apart
//! (`cluster::workload`, `cluster::faults`); after every step the checks in `invariants/`
//! run, one file per property, and the client history is checked for linearizability. A
//! failing seed prints itself and the command that replays it (`harness`, `seeds`).
//!
//! It owns no real I/O, thread or clock; everything random comes from the run seed.
//!
//! Running it (the scenario tests are `shard/tests/sim_*.rs`):
//!
//! ```text
//! cargo test -p quasar-shard --test sim_storm                  # the CI seed list
//! QUASAR_SIM_SEEDS=500 cargo test -p quasar-shard --test sim_storm       # more seeds
//! QUASAR_SIM_SEED_BASE=7 QUASAR_SIM_SEEDS=500 cargo test ...   # a different list
//! QUASAR_SIM_SEED=<seed> cargo test -p quasar-shard --test sim_storm -- \
//!     --include-ignored --exact <test>                         # replay one failure
//! QUASAR_SIM_LOG=1 ...                                         # echo the event log
//! ```
//!
//! `node` is the whole-node simulator: the real multi-raft `Store` of three nodes over the
//! real WAL on simulated disks (`shard/tests/sim_node.rs`).
//!
//! A step is one tick: faults, client operations, due syncs, message delivery, `tick`,
//! then every node's `Ready` (see `cluster::runtime`), then the invariants.

pub mod clock;
pub mod cluster;
pub mod event_log;
pub mod harness;
pub mod invariants;
pub mod net;
pub mod node;
pub mod rng;
pub mod seeds;
pub mod state_machine;
pub mod storage;
