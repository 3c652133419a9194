//! Simulation with partitions: symmetric splits, one-way cuts, bridges and an isolated
//! leader, over a lossy, duplicating, reordering network. Pre-vote (thesis §9.6) and
//! check-quorum keep a cut-off node from disrupting the majority; election safety, log
//! matching, leader completeness (figure 3.2) and linearizable reads (§6.4) must hold.

use quasar_shard::raft::NodeId;
use quasar_shard::sim::cluster::{expectation, run, script, FaultProfile, Scenario};
use quasar_shard::sim::harness::run_seeds;
use quasar_shard::sim::net::NetConfig;

const FILE: &str = "sim_partitions";

fn partitioned(voters: u64) -> Scenario {
    Scenario {
        fault_ticks: 1000,
        net: NetConfig::lossy(),
        faults: FaultProfile {
            partition: 0.02,
            heal: 0.03,
            weather: 0.01,
            ..FaultProfile::none()
        },
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
fn s9_6_prevote_and_fig_3_2_safety_under_partitions_three_nodes() {
    let scenario = safety_only(partitioned(3));
    let name = "s9_6_prevote_and_fig_3_2_safety_under_partitions_three_nodes";
    let total = run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
    assert!(total.writes_acked > 0, "{total:?}");
}

#[test]
fn s9_6_prevote_and_fig_3_2_safety_under_partitions_five_nodes() {
    let scenario = safety_only(partitioned(5));
    let name = "s9_6_prevote_and_fig_3_2_safety_under_partitions_five_nodes";
    let total = run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
    assert!(total.writes_acked > 0, "{total:?}");
}

#[test]
fn s6_4_lease_reads_stay_linearizable_under_partitions() {
    let scenario = safety_only(Scenario {
        lease_ticks: 8,
        ..partitioned(3)
    });
    let name = "s6_4_lease_reads_stay_linearizable_under_partitions";
    let total = run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
    assert!(total.reads_served > 0, "{total:?}");
}

#[test]
fn s9_6_partitions_then_liveness_three_nodes() {
    let scenario = partitioned(3);
    let name = "s9_6_partitions_then_liveness_three_nodes";
    run_seeds(FILE, name, 24, |seed| run(seed, &scenario));
}

#[test]
fn s9_6_partitions_then_liveness_five_nodes() {
    let scenario = partitioned(5);
    let name = "s9_6_partitions_then_liveness_five_nodes";
    run_seeds(FILE, name, 16, |seed| run(seed, &scenario));
}

/// Thesis §9.6: a follower cut off from the cluster keeps failing its pre-vote, so it does
/// not raise its term; when the partition heals it rejoins without deposing the leader.
#[test]
fn s9_6_prevote_an_isolated_follower_rejoins_without_disrupting_the_leader() {
    let scenario = Scenario::calm(3);
    let name = "s9_6_prevote_an_isolated_follower_rejoins_without_disrupting_the_leader";
    run_seeds(FILE, name, 8, |seed| {
        script(seed, &scenario, |c| {
            if !c.run_until(200, |c| c.leader().is_some())? {
                return Err(expectation("no leader within 200 ticks".into()));
            }
            let leader = c.leader().expect("just checked");
            let term = c.term_of(leader).expect("the leader runs");
            let ids = c.node_ids();
            let follower = *ids.iter().find(|&&id| id != leader).expect("three nodes");
            let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != follower).collect();
            c.net_mut().isolate(follower, &others);
            for _ in 0..150 {
                c.tick()?;
            }
            if c.term_of(follower) != Some(term) {
                return Err(expectation(format!(
                    "isolated {follower} moved from term {term} to {:?}: pre-vote should stop it",
                    c.term_of(follower)
                )));
            }
            c.net_mut().heal();
            for _ in 0..60 {
                c.tick()?;
            }
            if c.leader() != Some(leader) || c.term_of(leader) != Some(term) {
                return Err(expectation(format!(
                    "leader {leader} of term {term} was disrupted: now {:?} at {:?}",
                    c.leader(),
                    c.leader().and_then(|l| c.term_of(l))
                )));
            }
            Ok(())
        })
    });
}

/// Thesis §6.4: once the leader is cut off, a new leader takes writes; the old one must
/// not answer reads with its stale state (with leases, only within the lease, which ends
/// before anyone else can be elected). The oracle checks every read clients got.
#[test]
fn s6_4_an_isolated_old_leader_serves_no_stale_reads() {
    let scenario = Scenario {
        lease_ticks: 8,
        ..Scenario::calm(3)
    };
    let name = "s6_4_an_isolated_old_leader_serves_no_stale_reads";
    let total = run_seeds(FILE, name, 8, |seed| {
        script(seed, &scenario, |c| {
            if !c.run_until(200, |c| c.leader().is_some())? {
                return Err(expectation("no leader within 200 ticks".into()));
            }
            let old = c.leader().expect("just checked");
            let others: Vec<NodeId> = c.node_ids().into_iter().filter(|&id| id != old).collect();
            c.net_mut().isolate(old, &others);
            let moved = c.run_until(200, |c| c.leader().is_some_and(|l| l != old))?;
            if !moved {
                return Err(expectation(format!("no new leader after isolating {old}")));
            }
            for _ in 0..200 {
                c.tick()?;
            }
            c.net_mut().heal();
            Ok(())
        })
    });
    assert!(total.reads_served > 0, "{total:?}");
}
