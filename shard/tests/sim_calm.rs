//! Simulation, calm weather: a reliable network, no crashes. The properties of the Raft
//! thesis, figure 3.2 (election safety, log matching, leader completeness, state machine
//! safety) and linearizable reads (§6.4) must hold, and the cluster must make progress.

use quasar_shard::sim::cluster::{run, Scenario};
use quasar_shard::sim::harness::run_seeds;

const FILE: &str = "sim_calm";

#[test]
fn fig_3_2_properties_hold_in_a_calm_three_node_cluster() {
    let scenario = Scenario::calm(3);
    let name = "fig_3_2_properties_hold_in_a_calm_three_node_cluster";
    let total = run_seeds(FILE, name, 18, |seed| run(seed, &scenario));
    assert!(
        total.writes_acked > 0 && total.reads_served > 0,
        "no progress: {total:?}"
    );
}

#[test]
fn fig_3_2_properties_hold_in_a_calm_five_node_cluster() {
    let scenario = Scenario::calm(5);
    let name = "fig_3_2_properties_hold_in_a_calm_five_node_cluster";
    let total = run_seeds(FILE, name, 12, |seed| run(seed, &scenario));
    assert!(
        total.writes_acked > 0 && total.reads_served > 0,
        "no progress: {total:?}"
    );
}
