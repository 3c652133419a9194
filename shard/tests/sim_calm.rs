//! Simulation, calm weather: a reliable network, no crashes. The properties of the Raft
//! thesis, figure 3.2 (election safety, log matching, leader completeness, state machine
//! safety) and linearizable reads (§6.4) must hold, and the cluster must make progress.

use quasar_shard::sim::cluster::{expectation, run, script, Scenario};
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

/// Thesis §3.10: a leadership transfer to an up-to-date voter hands over leadership
/// (TimeoutNow), with no write lost and no stale read.
#[test]
fn s3_10_leadership_transfer_hands_over_to_the_target() {
    let scenario = Scenario::calm(3);
    let name = "s3_10_leadership_transfer_hands_over_to_the_target";
    run_seeds(FILE, name, 8, |seed| {
        script(seed, &scenario, |c| {
            if !c.run_until(200, |c| c.leader().is_some())? {
                return Err(expectation("no leader within 200 ticks".into()));
            }
            // Let clients write a while so the target has a log to catch up on.
            for _ in 0..50 {
                c.tick()?;
            }
            let old = c.leader().expect("calm network keeps the leader");
            let target = *c
                .node_ids()
                .iter()
                .find(|&&id| id != old)
                .expect("three nodes");
            c.core_mut(old)
                .expect("the leader runs")
                .transfer_leader(target)
                .map_err(|e| expectation(format!("transfer {old} -> {target} refused: {e}")))?;
            if !c.run_until(40, |c| c.leader() == Some(target))? {
                return Err(expectation(format!(
                    "{target} did not take over from {old}"
                )));
            }
            Ok(())
        })
    });
}
