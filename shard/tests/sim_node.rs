//! The whole-node simulator (`quasar_shard::sim::node`): three real multi-raft stores over
//! the real WAL on simulated disks, simulated clients through the real client library's
//! retry logic, seeded faults (loss, delay, duplication, partitions, crashes that lose
//! unsynced bytes, failed fsyncs). Checks: store invariants every step, equal state at
//! equal applied index, convergence after healing, linearizable client histories.
//!
//! ```text
//! cargo test -p quasar-shard --test sim_node                       # the CI seed list
//! QUASAR_SIM_SEEDS=200 cargo test -p quasar-shard --test sim_node  # more seeds
//! QUASAR_SIM_SEED=<seed> cargo test -p quasar-shard --test sim_node -- \
//!     --include-ignored --exact <test>                             # replay one
//! QUASAR_SIM_LOG=1 ...                                             # echo the event log
//! ```

use quasar_shard::sim::harness::{run_canary, run_seeds};
use quasar_shard::sim::node::{run, Canary, NodeSimConfig};

const FILE: &str = "sim_node";

#[test]
fn whole_nodes_stay_linearizable_in_calm_weather() {
    let cfg = NodeSimConfig::calm();
    let name = "whole_nodes_stay_linearizable_in_calm_weather";
    let total = run_seeds(FILE, name, 3, |seed| run(seed, &cfg));
    assert!(
        total.writes_acked > 0 && total.reads_served > 0,
        "no progress: {total:?}"
    );
}

#[test]
fn whole_nodes_stay_linearizable_through_crashes_partitions_and_failed_fsyncs() {
    let cfg = NodeSimConfig::stormy();
    let name = "whole_nodes_stay_linearizable_through_crashes_partitions_and_failed_fsyncs";
    let total = run_seeds(FILE, name, 8, |seed| run(seed, &cfg));
    assert!(
        total.writes_acked > 0 && total.reads_served > 0 && total.crashes > 0,
        "no progress or no faults: {total:?}"
    );
}

/// Canary: clients that count a Put as done when they send it must be caught.
#[test]
fn canary_ack_before_answer_is_caught() {
    let mut cfg = NodeSimConfig::stormy();
    cfg.canary = Canary::AckBeforeAnswer;
    run_canary(
        "canary_ack_before_answer_is_caught",
        4,
        1,
        &["linearizability"],
        |seed| run(seed, &cfg),
    );
}

/// Canary: stale local reads passed off as linearizable must be caught.
#[test]
fn canary_stale_reads_are_caught() {
    let mut cfg = NodeSimConfig::stormy();
    cfg.canary = Canary::StaleReads;
    run_canary(
        "canary_stale_reads_are_caught",
        4,
        1,
        &["linearizability"],
        |seed| run(seed, &cfg),
    );
}
