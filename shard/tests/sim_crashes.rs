//! Simulation with crashes: nodes lose power at random moments (often with unsynced
//! writes) and restart from what their disk synced (thesis §3.8: persisted state; §11.7
//! persistence). No committed entry may be lost, no node may vote twice in a term, no
//! acknowledged write may vanish, and reads stay linearizable (§6.4).

use quasar_shard::sim::cluster::{run, FaultProfile, Scenario};
use quasar_shard::sim::harness::run_seeds;
use quasar_shard::sim::net::NetConfig;

const FILE: &str = "sim_crashes";

fn crashing(voters: u64, max_down: usize) -> Scenario {
    Scenario {
        fault_ticks: 1000,
        net: NetConfig {
            loss: 0.01,
            ..NetConfig::lossy()
        },
        faults: FaultProfile {
            crash: 0.01,
            crash_unsynced: 0.02,
            restart: 0.05,
            max_down,
            ..FaultProfile::none()
        },
        sync_ticks_max: 4,
        ..Scenario::calm(voters)
    }
}

fn safety_only(scenario: Scenario) -> Scenario {
    Scenario {
        check_liveness: false,
        ..scenario
    }
}

#[test]
fn s3_8_committed_entries_survive_minority_crashes_three_nodes() {
    let scenario = safety_only(crashing(3, 1));
    let name = "s3_8_committed_entries_survive_minority_crashes_three_nodes";
    let total = run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
    assert!(total.crashes > 0 && total.writes_acked > 0, "{total:?}");
}

#[test]
fn s3_8_committed_entries_survive_minority_crashes_five_nodes() {
    let scenario = safety_only(crashing(5, 2));
    let name = "s3_8_committed_entries_survive_minority_crashes_five_nodes";
    let total = run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
    assert!(total.crashes > 0 && total.writes_acked > 0, "{total:?}");
}

#[test]
fn s3_8_safety_holds_when_every_node_crashes() {
    let scenario = safety_only(crashing(3, 3));
    let name = "s3_8_safety_holds_when_every_node_crashes";
    let total = run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
    assert!(total.crashes > 0, "{total:?}");
}

#[test]
fn s3_8_minority_crashes_then_liveness_three_nodes() {
    let scenario = crashing(3, 1);
    let name = "s3_8_minority_crashes_then_liveness_three_nodes";
    run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
}

#[test]
fn s3_8_minority_crashes_then_liveness_five_nodes() {
    let scenario = crashing(5, 2);
    let name = "s3_8_minority_crashes_then_liveness_five_nodes";
    run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
}

#[test]
fn s3_8_all_nodes_crash_then_liveness() {
    let scenario = crashing(3, 3);
    let name = "s3_8_all_nodes_crash_then_liveness";
    run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
}
