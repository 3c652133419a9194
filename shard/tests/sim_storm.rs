//! Simulation, storm: every fault at once (crashes with unsynced writes, every kind of
//! partition, loss, duplication, reordering, membership changes, leadership transfers,
//! snapshots) on three and five nodes. Then (the `_then_liveness` tests) the liveness
//! phase: faults stop and the cluster must elect a leader and commit within a bound.

use quasar_shard::sim::cluster::{run, FaultProfile, Scenario};
use quasar_shard::sim::harness::run_seeds;
use quasar_shard::sim::net::NetConfig;

const FILE: &str = "sim_storm";

fn storm(voters: u64) -> Scenario {
    Scenario {
        spares: 2,
        fault_ticks: 1500,
        liveness_ticks: 400,
        net: NetConfig::lossy(),
        faults: FaultProfile {
            crash: 0.01,
            crash_unsynced: 0.01,
            restart: 0.04,
            partition: 0.02,
            heal: 0.03,
            weather: 0.01,
            membership: 0.02,
            transfer: 0.01,
            max_down: voters as usize,
        },
        snapshot_after_entries: 16,
        sync_ticks_max: 3,
        // NOTE: joiners start from the bootstrap state until SIM_FINDINGS F2 is fixed.
        join_from_bootstrap: false,
        ..Scenario::calm(voters)
    }
}

#[test]
fn storm_safety_three_nodes() {
    let scenario = safety_only(storm(3));
    let name = "storm_safety_three_nodes";
    let total = run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
    assert!(total.crashes > 0 && total.writes_acked > 0, "{total:?}");
}

#[test]
fn storm_safety_five_nodes() {
    let scenario = safety_only(storm(5));
    let name = "storm_safety_five_nodes";
    let total = run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
    assert!(total.crashes > 0 && total.writes_acked > 0, "{total:?}");
}

fn safety_only(scenario: Scenario) -> Scenario {
    Scenario {
        check_liveness: false,
        ..scenario
    }
}

#[test]
fn storm_safety_then_liveness_three_nodes() {
    let scenario = storm(3);
    let name = "storm_safety_then_liveness_three_nodes";
    run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
}

#[test]
fn storm_safety_then_liveness_five_nodes() {
    let scenario = storm(5);
    let name = "storm_safety_then_liveness_five_nodes";
    run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
}
