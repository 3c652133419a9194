//! The nemesis workload and its checks: clients that record every operation's invocation and
//! completion, and the verdicts on the history they leave.
//!
//! Each client loops over get / put / compare-and-set on a small window of keys; the window
//! moves on every `ops_per_key x keys` operations (Jepsen's "independent keys"), so that each
//! key's history stays small enough to check exhaustively. Every written value is unique
//! (`c<client>-<n>`), so a read names the one write it saw.
//!
//! Outcomes: `ok` (the answer), `failed` (definitely not applied: left out of the history),
//! `ambiguous` (a write whose answer never came: it may take effect at any point after its
//! call, or never). Checks:
//!
//! - linearizability per key (`quasar_shard::linearizability`, Wing & Gong with Lowe's
//!   memoization). The final read of every key after the cluster healed is part of the
//!   history, so an acknowledged write that was lost is a violation;
//! - versions never go back: an operation that began after another one returned never
//!   sees a lower version of the key (reads of a value and acknowledged writes);
//! - no invented value: every value read was written by some put or compare-and-set.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quasar_rpc::client::BlockingClient;
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{Expected, KeyVersion, Operation, Reply, RequestError};
use quasar_shard::linearizability::{self, KvInput, KvModel, KvOutput, Verdict};
use serde::Serialize;

/// States the checker may explore per key before it gives up (`unknown`).
const CHECK_BUDGET: u64 = 2_000_000;

/// What an operation asked.
#[derive(Debug, Clone)]
pub enum Call {
    Get,
    Put(Vec<u8>),
    Cas {
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

/// What came back.
#[derive(Debug, Clone)]
pub enum Outcome {
    Read(Option<(Vec<u8>, u64)>),
    Written(u64),
    /// A compare-and-set that did not swap.
    NotSwapped,
    /// Definitely not applied.
    Failed(String),
    Ambiguous,
}

/// One operation as a client saw it; times in nanoseconds since the run began.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: u64,
    pub key: u64,
    pub call: Call,
    pub outcome: Outcome,
    pub called: u64,
    pub returned: u64,
}

/// Counts by outcome.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OpCounts {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub reads: u64,
    pub writes_acked: u64,
    /// The most frequent reasons of definite failures, with their counts.
    pub failure_reasons: Vec<(String, u64)>,
    /// The first definite failures in full, with when they were called (ms since the run
    /// began, the clock of the faults' `at_ms`) and how long they took: to find them in the
    /// nodes' logs.
    pub first_failures: Vec<String>,
}

/// How many failed operations `OpCounts::first_failures` lists.
const FIRST_FAILURES: usize = 10;

/// The shared history of a run.
pub struct History {
    pub epoch: Instant,
    ops: Mutex<Vec<Op>>,
    /// Operations handed out so far (moves the key window).
    issued: AtomicU64,
    keys: u64,
    ops_per_key: u64,
}

/// The name of key number `k`.
pub fn key_name(k: u64) -> Vec<u8> {
    format!("nemesis/{k:08}").into_bytes()
}

impl History {
    pub fn new(keys: u64, ops_per_key: u64) -> History {
        History {
            epoch: Instant::now(),
            ops: Mutex::new(Vec::new()),
            issued: AtomicU64::new(0),
            keys,
            ops_per_key,
        }
    }

    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// The key number the next operation uses.
    fn next_key(&self, rng: &mut fastrand::Rng) -> u64 {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let window = n / (self.keys * self.ops_per_key);
        window * self.keys + rng.u64(0..self.keys)
    }

    /// Every key number used so far.
    pub fn keys_used(&self) -> Vec<u64> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let keys: std::collections::BTreeSet<u64> = ops.iter().map(|o| o.key).collect();
        keys.into_iter().collect()
    }

    /// One key number from the current window (for the range operations' split points).
    pub fn current_key(&self, rng: &mut fastrand::Rng) -> u64 {
        let n = self.issued.load(Ordering::Relaxed);
        (n / (self.keys * self.ops_per_key)) * self.keys + rng.u64(0..self.keys)
    }

    /// Runs `call` on key `k` with `client`, records it and returns its outcome.
    pub fn run(
        &self,
        client_id: u64,
        client: &mut BlockingClient,
        key: u64,
        call: Call,
    ) -> Outcome {
        let name = key_name(key);
        let op = match &call {
            Call::Get => Operation::Get { key: name },
            Call::Put(v) => Operation::Put {
                key: name,
                value: v.clone(),
            },
            Call::Cas { expected, value } => Operation::CompareAndSet {
                key: name,
                expected: match expected {
                    Some(v) => Expected::Value(v.clone()),
                    None => Expected::Version(KeyVersion::ABSENT),
                },
                value: value.clone(),
            },
        };
        let called = self.now();
        let result = client.execute(op);
        let returned = self.now();
        let outcome = match result {
            Ok(Reply::Get(v)) => Outcome::Read(v.map(|v| (v.value, v.version.0))),
            Ok(Reply::Written { version }) => Outcome::Written(version.0),
            Ok(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
            Err(ClientError::Failed(RequestError::ConditionFailed { .. })) => Outcome::NotSwapped,
            Err(ClientError::Ambiguous { .. }) if !matches!(call, Call::Get) => Outcome::Ambiguous,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        self.record(Op {
            client: client_id,
            key,
            call,
            outcome: outcome.clone(),
            called,
            returned,
        });
        outcome
    }

    /// The operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One client's loop until `stop`: reads half of the time, puts and compare-and-sets the rest
/// (unique values, padded to `value_bytes`).
pub fn client_loop(
    id: u64,
    mut client: BlockingClient,
    history: &History,
    stop: &AtomicBool,
    pause: Duration,
    seed: u64,
    value_bytes: usize,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = history.next_key(&mut rng);
        n += 1;
        let mut value = format!("c{id}-{n}-").into_bytes();
        value.resize(value.len().max(value_bytes), b'.');
        let call = match rng.u32(0..100) {
            0..=49 => Call::Get,
            50..=84 => Call::Put(value),
            _ => Call::Cas {
                expected: seen.get(&key).cloned().flatten(),
                value,
            },
        };
        match history.run(id, &mut client, key, call) {
            Outcome::Read(v) => {
                seen.insert(key, v.map(|(v, _)| v));
            }
            Outcome::Written(_) | Outcome::NotSwapped | Outcome::Ambiguous => {
                seen.remove(&key);
            }
            Outcome::Failed(_) => {}
        }
        std::thread::sleep(pause);
    }
}

/// The verdicts on a history.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Verdicts {
    pub ops: OpCounts,
    pub keys: u64,
    /// Keys whose history no order explains.
    pub linearizability_violations: Vec<String>,
    /// Keys the checker gave up on (its state budget ran out).
    pub unknown_keys: u64,
    /// An operation saw a lower version than one that returned before it began.
    pub version_regressions: Vec<String>,
    /// A read returned a value nobody wrote.
    pub invented_values: Vec<String>,
}

impl Verdicts {
    pub fn ok(&self) -> bool {
        self.linearizability_violations.is_empty()
            && self.version_regressions.is_empty()
            && self.invented_values.is_empty()
    }
}

/// Checks a history (ops of every key, the final reads included).
pub fn check(ops: &[Op]) -> Verdicts {
    let mut v = Verdicts::default();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        v.ops.total += 1;
        match &op.outcome {
            Outcome::Failed(why) => {
                v.ops.failed += 1;
                let short: String = why.chars().take(80).collect();
                *reasons.entry(short).or_default() += 1;
                if v.ops.first_failures.len() < FIRST_FAILURES {
                    v.ops.first_failures.push(format!(
                        "client {} key {} called at {} ms, took {} ms: {why}",
                        op.client,
                        op.key,
                        op.called / 1_000_000,
                        op.returned.saturating_sub(op.called) / 1_000_000
                    ));
                }
            }
            Outcome::Ambiguous => v.ops.ambiguous += 1,
            Outcome::Read(_) => {
                v.ops.ok += 1;
                v.ops.reads += 1;
            }
            Outcome::Written(_) => {
                v.ops.ok += 1;
                v.ops.writes_acked += 1;
            }
            Outcome::NotSwapped => v.ops.ok += 1,
        }
    }
    let mut reasons: Vec<(String, u64)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    reasons.truncate(5);
    v.ops.failure_reasons = reasons;
    let mut by_key: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key).or_default().push(op);
    }
    v.keys = by_key.len() as u64;
    for (key, ops) in &by_key {
        check_key(*key, ops, &mut v);
    }
    v
}

fn check_key(key: u64, ops: &[&Op], v: &mut Verdicts) {
    let name = String::from_utf8_lossy(&key_name(key)).into_owned();
    // Invented values.
    let written: HashSet<&[u8]> = ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::Put(v) | Call::Cas { value: v, .. } => Some(v.as_slice()),
            Call::Get => None,
        })
        .collect();
    for o in ops {
        if let Outcome::Read(Some((value, _))) = &o.outcome {
            if !written.contains(value.as_slice()) {
                v.invented_values.push(format!(
                    "{name}: read {:?}, which no client wrote",
                    String::from_utf8_lossy(value)
                ));
            }
        }
    }
    // Versions: sweep calls in order, keeping the highest version returned before each.
    let versioned: Vec<(&Op, u64)> = ops
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Read(r) => Some((*o, r.as_ref().map_or(0, |(_, ver)| *ver))),
            Outcome::Written(ver) => Some((*o, *ver)),
            _ => None,
        })
        .collect();
    let mut by_return: Vec<&(&Op, u64)> = versioned.iter().collect();
    by_return.sort_by_key(|(o, _)| o.returned);
    let mut by_call: Vec<&(&Op, u64)> = versioned.iter().collect();
    by_call.sort_by_key(|(o, _)| o.called);
    let (mut i, mut high): (usize, Option<(u64, &Op)>) = (0, None);
    for (op, ver) in by_call {
        while i < by_return.len() && by_return[i].0.returned < op.called {
            let (o, w) = by_return[i];
            if high.is_none_or(|(h, _)| *w > h) {
                high = Some((*w, o));
            }
            i += 1;
        }
        if let Some((h, before)) = high {
            if *ver < h {
                v.version_regressions.push(format!(
                    "{name}: client {} saw version {ver} at {} ms, after client {} had seen \
                     version {h} (returned at {} ms)",
                    op.client,
                    op.called / 1_000_000,
                    before.client,
                    before.returned / 1_000_000
                ));
            }
        }
    }
    // Linearizability.
    let history: Vec<linearizability::Operation<KvInput, KvOutput>> = ops
        .iter()
        .filter_map(|o| {
            let k = key_name(key);
            let input = match &o.call {
                Call::Get => KvInput::Get { key: k },
                Call::Put(value) => KvInput::Put {
                    key: k,
                    value: value.clone(),
                },
                Call::Cas { expected, value } => KvInput::CompareAndSet {
                    key: k,
                    expected: expected.clone(),
                    value: value.clone(),
                },
            };
            let output = match &o.outcome {
                Outcome::Failed(_) => return None,
                Outcome::Ambiguous => None,
                Outcome::Read(r) => Some(KvOutput::Value(r.as_ref().map(|(v, _)| v.clone()))),
                Outcome::Written(_) if matches!(o.call, Call::Cas { .. }) => {
                    Some(KvOutput::Swapped(true))
                }
                Outcome::Written(_) => Some(KvOutput::Written),
                Outcome::NotSwapped => Some(KvOutput::Swapped(false)),
            };
            Some(linearizability::Operation {
                client: o.client,
                input,
                returned: output.as_ref().map(|_| o.returned),
                output,
                called: o.called,
            })
        })
        .collect();
    match linearizability::check(&KvModel, &history, CHECK_BUDGET) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable { part } => {
            let shown: Vec<String> = part
                .iter()
                .take(40)
                .map(|&i| {
                    let o = &history[i];
                    format!(
                        "c{} {:?} -> {:?} [{}..{:?}]",
                        o.client, o.input, o.output, o.called, o.returned
                    )
                })
                .collect();
            v.linearizability_violations
                .push(format!("{name}: {}", shown.join("; ")));
        }
        Verdict::Unknown { .. } => v.unknown_keys += 1,
    }
}

/// A shared counter of writes that succeeded, for the fault log ("progress during").
pub fn acked_writes(ops: &[Op], from: u64, to: u64) -> u64 {
    ops.iter()
        .filter(|o| matches!(o.outcome, Outcome::Written(_)))
        .filter(|o| o.returned >= from && o.returned <= to)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, call: Call, outcome: Outcome, t: (u64, u64)) -> Op {
        Op {
            client,
            key: 1,
            call,
            outcome,
            called: t.0,
            returned: t.1,
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_a_violation() {
        let ops = [
            op(1, Call::Put(b"a".to_vec()), Outcome::Written(5), (0, 10)),
            // The final read, after the write returned, sees nothing.
            op(2, Call::Get, Outcome::Read(None), (20, 30)),
        ];
        let v = check(&ops);
        assert_eq!(v.linearizability_violations.len(), 1, "{v:?}");
        assert_eq!(v.version_regressions.len(), 1, "{v:?}");
        assert!(!v.ok());
    }

    #[test]
    fn failed_operations_are_listed_with_when_they_ran_and_their_whole_reason() {
        let why = format!("gave up after 54 attempts ({})", "x".repeat(100));
        let ops = [
            op(
                3,
                Call::Get,
                Outcome::Failed(why.clone()),
                (2_000_000, 9_500_000),
            ),
            op(1, Call::Put(b"a".to_vec()), Outcome::Written(5), (0, 10)),
        ];
        let v = check(&ops);
        assert_eq!(v.ops.failed, 1);
        assert_eq!(
            v.ops.first_failures,
            vec![format!("client 3 key 1 called at 2 ms, took 7 ms: {why}")]
        );
        // The tally keeps its short form.
        assert_eq!(v.ops.failure_reasons[0].0.chars().count(), 80);
    }

    #[test]
    fn an_ambiguous_write_may_or_may_not_have_happened() {
        for seen in [None, Some((b"a".to_vec(), 5))] {
            let ops = [
                op(1, Call::Put(b"a".to_vec()), Outcome::Ambiguous, (0, 10)),
                op(2, Call::Get, Outcome::Read(seen), (20, 30)),
            ];
            let v = check(&ops);
            assert!(v.ok(), "{v:?}");
            assert_eq!(v.ops.ambiguous, 1);
        }
    }

    #[test]
    fn an_invented_value_and_a_stale_version_are_caught() {
        let ops = [
            op(1, Call::Put(b"a".to_vec()), Outcome::Written(7), (0, 10)),
            op(
                2,
                Call::Get,
                Outcome::Read(Some((b"zz".to_vec(), 9))),
                (20, 30),
            ),
        ];
        let v = check(&ops);
        assert_eq!(v.invented_values.len(), 1, "{v:?}");
        let ops = [
            op(1, Call::Put(b"a".to_vec()), Outcome::Written(7), (0, 10)),
            op(
                2,
                Call::Get,
                Outcome::Read(Some((b"a".to_vec(), 6))),
                (20, 30),
            ),
        ];
        let v = check(&ops);
        assert_eq!(v.version_regressions.len(), 1, "{v:?}");
    }

    #[test]
    fn a_failed_compare_and_set_must_be_explained() {
        // The key holds "a" when the CAS runs (expected "a"): it must swap, not fail.
        let ops = [
            op(1, Call::Put(b"a".to_vec()), Outcome::Written(3), (0, 10)),
            op(
                2,
                Call::Cas {
                    expected: Some(b"a".to_vec()),
                    value: b"b".to_vec(),
                },
                Outcome::NotSwapped,
                (20, 30),
            ),
        ];
        assert_eq!(check(&ops).linearizability_violations.len(), 1);
    }
}
