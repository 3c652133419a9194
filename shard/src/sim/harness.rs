//! Runs one scenario over many seeds and turns failures into reports: the seed, what
//! broke, the replay command and the tail of the event log. Also runs canaries, which
//! must fail.

use std::time::Instant;

use super::seeds::{replay_command, seeds_for};

/// Why a seed failed.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// What was violated (an invariant's message, or a panic's).
    pub reason: String,
    /// The last lines of the event log.
    pub log_tail: String,
}

/// What one seed did (for reports and to prove the run did real work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimSummary {
    /// Ticks simulated.
    pub ticks: u64,
    /// Writes acknowledged to clients.
    pub writes_acked: u64,
    /// Reads served.
    pub reads_served: u64,
    /// Node crashes injected.
    pub crashes: u64,
    /// Highest commit index seen.
    pub commit_index: u64,
    /// Conf change entries applied, summed over nodes.
    pub conf_changes: u64,
    /// Snapshot messages delivered to followers.
    pub snapshots_installed: u64,
    /// Range changes (splits, merges, leadership transfers) that completed.
    pub range_changes: u64,
    /// Of those, replica set changes (moves).
    pub replica_moves: u64,
}

/// Runs `scenario` for each seed of `test` (in integration test `file`); panics listing
/// every failing seed with its replay command. Returns the summed summaries.
pub fn run_seeds(
    file: &str,
    test: &str,
    default_count: u64,
    scenario: impl Fn(u64) -> Result<SimSummary, SimFailure>,
) -> SimSummary {
    let started = Instant::now();
    let seeds = seeds_for(test, default_count);
    let mut total = SimSummary::default();
    let mut failed: Vec<(u64, SimFailure)> = Vec::new();
    for &seed in &seeds {
        match scenario(seed) {
            Ok(s) => {
                total.ticks += s.ticks;
                total.writes_acked += s.writes_acked;
                total.reads_served += s.reads_served;
                total.crashes += s.crashes;
                total.commit_index = total.commit_index.max(s.commit_index);
                total.conf_changes += s.conf_changes;
                total.snapshots_installed += s.snapshots_installed;
                total.range_changes += s.range_changes;
                total.replica_moves += s.replica_moves;
            }
            Err(f) => {
                eprintln!("SIM FAILURE {test} seed {seed}: {}", f.reason);
                eprintln!("  replay: {}", replay_command(file, test, seed));
                failed.push((seed, f));
            }
        }
    }
    eprintln!(
        "{test}: {} seeds, {} failed, {:?}; {total:?}",
        seeds.len(),
        failed.len(),
        started.elapsed()
    );
    if let Some((seed, first)) = failed.first() {
        eprintln!("--- event log tail of seed {seed} ---\n{}", first.log_tail);
        let list: Vec<String> = failed
            .iter()
            .map(|(s, f)| {
                format!(
                    "  seed {s}: {}\n    {}",
                    f.reason,
                    replay_command(file, test, *s)
                )
            })
            .collect();
        panic!(
            "{test}: {} of {} seeds failed:\n{}",
            failed.len(),
            seeds.len(),
            list.join("\n")
        );
    }
    total
}

/// Runs a canary: a scenario with a deliberately broken rule. A seed counts as caught when
/// it fails with one of the `expected` properties named in its reason (a failure for any
/// other reason, such as liveness, proves nothing about the broken rule and is reported).
/// Returns how many seeds were caught; panics if fewer than `min_caught`, which would mean
/// the checks do not bite.
pub fn run_canary(
    test: &str,
    default_count: u64,
    min_caught: usize,
    expected: &[&str],
    scenario: impl Fn(u64) -> Result<SimSummary, SimFailure>,
) -> usize {
    let seeds = seeds_for(test, default_count);
    let mut caught = Vec::new();
    for &seed in &seeds {
        if let Err(f) = scenario(seed) {
            if expected.iter().any(|p| f.reason.contains(p)) {
                caught.push((seed, f.reason));
            } else {
                eprintln!(
                    "{test}: seed {seed} failed for another reason: {}",
                    f.reason
                );
            }
        }
    }
    eprintln!(
        "{test}: the checks caught {} of {} seeds",
        caught.len(),
        seeds.len()
    );
    if let Some((seed, reason)) = caught.first() {
        eprintln!("  e.g. seed {seed}: {reason}");
    }
    let need = min_caught.min(seeds.len());
    assert!(
        caught.len() >= need,
        "{test}: the broken rule went unnoticed in {} of {} seeds (need at least {need} caught): \
         the invariants do not bite",
        seeds.len() - caught.len(),
        seeds.len()
    );
    caught.len()
}
