//! Canaries: the simulated runtime breaks one rule on purpose, and the checks must catch
//! it in some seeds. If a canary passes every seed, the invariants or the fault injection
//! have gone blunt, and this file fails.

use quasar_shard::sim::cluster::{run, Canary, FaultProfile, Scenario};
use quasar_shard::sim::harness::run_canary;
use quasar_shard::sim::net::NetConfig;

/// Crash-heavy weather: the faults that turn a broken durability rule into lost data.
fn crashy(voters: u64, canary: Canary) -> Scenario {
    Scenario {
        fault_ticks: 800,
        net: NetConfig::lossy(),
        faults: FaultProfile {
            crash: 0.02,
            crash_unsynced: 0.08,
            restart: 0.3,
            partition: 0.01,
            heal: 0.05,
            max_down: voters as usize,
            ..FaultProfile::none()
        },
        sync_ticks_max: 8,
        canary: Some(canary),
        ..Scenario::calm(voters)
    }
}

#[test]
fn canary_votes_and_acks_sent_before_sync_are_caught() {
    let scenario = crashy(3, Canary::SendBeforeSync);
    let expect = [
        "election_safety",
        "vote_once",
        "leader_completeness",
        "state_machine_safety",
        "no_acked_write_lost",
        "log_matching",
    ];
    run_canary(
        "canary_votes_and_acks_sent_before_sync_are_caught",
        24,
        1,
        &expect,
        |seed| run(seed, &scenario),
    );
}

#[test]
fn canary_hard_state_never_persisted_is_caught() {
    // Caught by the core's restore check (a log whose terms exceed the stored term) or,
    // when it slips through, by election safety or leader completeness.
    let scenario = crashy(3, Canary::HardStateNotPersisted);
    let expect = ["cannot restart", "election_safety", "leader_completeness"];
    run_canary(
        "canary_hard_state_never_persisted_is_caught",
        8,
        6,
        &expect,
        |seed| run(seed, &scenario),
    );
}

#[test]
fn canary_vote_not_persisted_is_caught() {
    // Without pre-vote and check-quorum a restarted node may vote at once, and elections
    // collide often: a forgotten vote gets granted twice.
    let mut scenario = Scenario {
        pre_vote: false,
        check_quorum: false,
        election_timeout_ticks: 4,
        heartbeat_interval_ticks: 1,
        // Elections this short cannot finish over slow syncs: check safety only.
        check_liveness: false,
        ..crashy(3, Canary::VoteNotPersisted)
    };
    scenario.faults.crash = 0.05;
    scenario.faults.restart = 0.5;
    scenario.faults.partition = 0.05;
    scenario.faults.heal = 0.1;
    let expect = ["vote_once", "election_safety"];
    run_canary(
        "canary_vote_not_persisted_is_caught",
        40,
        1,
        &expect,
        |seed| run(seed, &scenario),
    );
}

#[test]
fn canary_entries_applied_before_commit_are_caught() {
    let scenario = crashy(3, Canary::ApplyBeforeCommit);
    let expect = [
        "commit_monotonic",
        "state_machine_safety",
        "no_acked_write_lost",
    ];
    run_canary(
        "canary_entries_applied_before_commit_are_caught",
        8,
        4,
        &expect,
        |seed| run(seed, &scenario),
    );
}

#[test]
fn canary_write_acked_before_commit_is_caught() {
    let scenario = crashy(3, Canary::AckBeforeCommit);
    let expect = ["no_acked_write_lost", "linearizability"];
    run_canary(
        "canary_write_acked_before_commit_is_caught",
        8,
        6,
        &expect,
        |seed| run(seed, &scenario),
    );
}

#[test]
fn canary_read_without_read_index_is_caught() {
    let mut scenario = crashy(5, Canary::ReadWithoutReadIndex);
    scenario.faults.partition = 0.05;
    let expect = ["linearizability"];
    run_canary(
        "canary_read_without_read_index_is_caught",
        8,
        6,
        &expect,
        |seed| run(seed, &scenario),
    );
}
