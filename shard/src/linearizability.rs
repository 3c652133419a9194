//! Linearizability checking of client histories (Wing & Gong's search with Lowe's
//! memoization, the algorithm Porcupine and Knossos use), for the simulators.
//!
//! A history is a set of [`Operation`]s, each with the time its call was sent and the time
//! its answer came back. It is linearizable when every completed operation can be given a
//! point between its call and its return such that running the operations in that order
//! through a sequential [`Model`] produces exactly the answers the clients saw. An
//! operation whose outcome is unknown (the client gave up: `Ambiguous`) has no return: it
//! may take effect at any point after its call, or never.
//!
//! ```text
//!   client 1  |--put(x,1)--|
//!   client 2        |------get(x)=1------|        linearizable: put, then get
//!   client 3                  |--get(x)=None--|   not: x was already 1 and never deleted
//! ```
//!
//! The search is exponential in the worst case, so histories are first split into
//! independent parts ([`Model::partition`]: one per key for a key-value store) and a part
//! gives up with [`Verdict::Unknown`] after a budget of explored states. Per-key histories
//! of a few hundred operations check in milliseconds.
//!
//! Time is whatever the caller measures (simulated ticks, steps): operation `a` precedes `b`
//! only when `a.returned < b.called`; equal times count as concurrent, the permissive choice
//! for simulators that finish several events in one step.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification of the object under test.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Runs `input` on `state`. With `Some(output)` the operation must have produced
    /// exactly that output; with `None` (outcome unknown) any output is accepted. Returns
    /// the next state, or `None` when the output is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits a history into parts that can be checked independently (default: one part).
    /// Returns indexes into `ops`.
    fn partition(&self, ops: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }
}

/// One client operation as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    pub client: u64,
    pub input: I,
    /// `None`: the outcome is unknown (timed out, connection lost after sending).
    pub output: Option<O>,
    pub called: u64,
    /// `None` exactly when `output` is `None`: the operation never returned.
    pub returned: Option<u64>,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the part of the history made of these operations (indexes into
    /// the checked slice, in call order).
    NotLinearizable {
        part: Vec<usize>,
    },
    /// The search explored `budget` states in one part without deciding.
    Unknown {
        part: Vec<usize>,
        budget: u64,
    },
}

/// Checks `ops` against `model`, exploring at most `budget_states` states per part.
pub fn check<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], budget: u64) -> Verdict {
    for part in model.partition(ops) {
        match check_part(model, ops, &part, budget) {
            PartVerdict::Ok => {}
            PartVerdict::Fail => {
                return Verdict::NotLinearizable {
                    part: sorted_by_call(ops, part),
                }
            }
            PartVerdict::OutOfBudget => {
                return Verdict::Unknown {
                    part: sorted_by_call(ops, part),
                    budget,
                }
            }
        }
    }
    Verdict::Linearizable
}

fn sorted_by_call<I, O>(ops: &[Operation<I, O>], mut part: Vec<usize>) -> Vec<usize> {
    part.sort_by_key(|&i| ops[i].called);
    part
}

enum PartVerdict {
    Ok,
    Fail,
    OutOfBudget,
}

/// A set of linearized operations of one part (bit `i` = `part[i]` is linearized).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Done(Vec<u64>);

impl Done {
    fn new(len: usize) -> Done {
        Done(vec![0; len.div_ceil(64)])
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize) -> Done {
        let mut next = self.clone();
        next.0[i / 64] |= 1 << (i % 64);
        next
    }
}

/// Depth-first search over linearization orders. An operation may go next when no other
/// not-yet-linearized, completed operation returned before it was called. `seen` remembers
/// every (linearized set, model state) pair already explored: reaching one again by another
/// order cannot succeed where the first failed (Lowe's memoization).
fn check_part<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    part: &[usize],
    budget: u64,
) -> PartVerdict {
    let completed = part.iter().filter(|&&i| ops[i].returned.is_some()).count();
    let mut seen: HashSet<(Done, M::State)> = HashSet::new();
    // Each frame: the set done so far, its state, how many completed ops it holds, and the
    // next candidate position to try.
    let mut stack: Vec<(Done, M::State, usize, usize)> =
        vec![(Done::new(part.len()), model.init(), 0, 0)];
    let mut explored = 0u64;
    while let Some(frame) = stack.last_mut() {
        if frame.2 == completed {
            return PartVerdict::Ok;
        }
        explored += 1;
        if explored > budget {
            return PartVerdict::OutOfBudget;
        }
        // The earliest return among the completed operations not yet linearized bounds
        // which operations may be linearized next.
        let horizon = part
            .iter()
            .enumerate()
            .filter(|&(pos, _)| !frame.0.contains(pos))
            .filter_map(|(_, &i)| ops[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        let mut pushed = None;
        while frame.3 < part.len() {
            let pos = frame.3;
            frame.3 += 1;
            let op = &ops[part[pos]];
            if frame.0.contains(pos) || op.called > horizon {
                continue;
            }
            let Some(next_state) = model.step(&frame.1, &op.input, op.output.as_ref()) else {
                continue;
            };
            let next_done = frame.0.with(pos);
            let key = (next_done, next_state);
            if seen.contains(&key) {
                continue;
            }
            let completed_now = frame.2 + usize::from(op.returned.is_some());
            seen.insert(key.clone());
            pushed = Some((key.0, key.1, completed_now, 0));
            break;
        }
        match pushed {
            Some(next) => stack.push(next),
            None => {
                stack.pop();
            }
        }
    }
    PartVerdict::Fail
}

/// A key-value store of byte strings, checked one key at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

/// Operations of [`KvModel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    Get {
        key: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Succeeds and writes `value` when the current value equals `expected`.
    CompareAndSet {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

impl KvInput {
    pub fn key(&self) -> &[u8] {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::CompareAndSet { key, .. } => key,
        }
    }
}

/// Answers of [`KvModel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    Value(Option<Vec<u8>>),
    Written,
    Swapped(bool),
}

impl Model for KvModel {
    /// The value of the one key of the part being checked.
    type State = Option<Vec<u8>>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Self::State> {
        match (input, output) {
            (KvInput::Get { .. }, None) => Some(state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Value(seen))) => {
                (seen == state).then(|| state.clone())
            }
            (KvInput::Put { value, .. }, None | Some(KvOutput::Written)) => {
                Some(Some(value.clone()))
            }
            (KvInput::Delete { .. }, None | Some(KvOutput::Written)) => Some(None),
            (
                KvInput::CompareAndSet {
                    expected, value, ..
                },
                output,
            ) => {
                let swaps = expected == state;
                match output {
                    None => Some(if swaps {
                        Some(value.clone())
                    } else {
                        state.clone()
                    }),
                    Some(KvOutput::Swapped(true)) if swaps => Some(Some(value.clone())),
                    Some(KvOutput::Swapped(false)) if !swaps => Some(state.clone()),
                    Some(_) => None,
                }
            }
            (_, Some(_)) => None,
        }
    }

    fn partition(&self, ops: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut by_key: std::collections::BTreeMap<&[u8], Vec<usize>> = Default::default();
        for (i, op) in ops.iter().enumerate() {
            by_key.entry(op.input.key()).or_default().push(i);
        }
        by_key.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BUDGET: u64 = 1_000_000;

    fn op(
        client: u64,
        input: KvInput,
        output: KvOutput,
        t: (u64, u64),
    ) -> Operation<KvInput, KvOutput> {
        Operation {
            client,
            input,
            output: Some(output),
            called: t.0,
            returned: Some(t.1),
        }
    }
    fn put(v: &[u8]) -> KvInput {
        KvInput::Put {
            key: b"x".to_vec(),
            value: v.to_vec(),
        }
    }
    fn get() -> KvInput {
        KvInput::Get { key: b"x".to_vec() }
    }
    fn val(v: Option<&[u8]>) -> KvOutput {
        KvOutput::Value(v.map(<[u8]>::to_vec))
    }

    #[test]
    fn concurrent_read_may_see_either_side_of_a_write() {
        for seen in [None, Some(&b"1"[..])] {
            let h = vec![
                op(1, put(b"1"), KvOutput::Written, (0, 10)),
                op(2, get(), val(seen), (5, 6)),
            ];
            assert_eq!(check(&KvModel, &h, BUDGET), Verdict::Linearizable);
        }
    }

    #[test]
    fn stale_read_after_a_completed_write_is_caught() {
        let h = vec![
            op(1, put(b"1"), KvOutput::Written, (0, 2)),
            op(2, get(), val(Some(b"1")), (3, 4)),
            op(3, get(), val(None), (5, 6)),
        ];
        assert_eq!(
            check(&KvModel, &h, BUDGET),
            Verdict::NotLinearizable {
                part: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn reads_may_not_go_back_in_time_even_when_concurrent_with_the_write() {
        // Both reads overlap the write, but the first saw the new value and returned before
        // the second began: the second cannot see the old one.
        let h = vec![
            op(1, put(b"1"), KvOutput::Written, (0, 100)),
            op(2, get(), val(Some(b"1")), (10, 20)),
            op(3, get(), val(None), (30, 40)),
        ];
        assert!(matches!(
            check(&KvModel, &h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_ambiguous_write_may_apply_late_or_never() {
        let ambiguous = Operation {
            client: 1,
            input: put(b"1"),
            output: None,
            called: 0,
            returned: None,
        };
        for later in [None, Some(&b"1"[..])] {
            let h = vec![
                ambiguous.clone(),
                op(2, get(), val(None), (5, 6)),
                op(3, get(), val(later), (50, 60)),
            ];
            assert_eq!(
                check(&KvModel, &h, BUDGET),
                Verdict::Linearizable,
                "later read {later:?}"
            );
        }
        // ... but once seen it stays.
        let h = vec![
            ambiguous,
            op(2, get(), val(Some(b"1")), (5, 6)),
            op(3, get(), val(None), (50, 60)),
        ];
        assert!(matches!(
            check(&KvModel, &h, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn compare_and_set_answers_must_match_the_order() {
        let cas = |expected: Option<&[u8]>, v: &[u8]| KvInput::CompareAndSet {
            key: b"x".to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            value: v.to_vec(),
        };
        // Two concurrent creates of the same key: exactly one may win.
        let both_win = vec![
            op(1, cas(None, b"a"), KvOutput::Swapped(true), (0, 10)),
            op(2, cas(None, b"b"), KvOutput::Swapped(true), (1, 11)),
        ];
        assert!(matches!(
            check(&KvModel, &both_win, BUDGET),
            Verdict::NotLinearizable { .. }
        ));
        let one_wins = vec![
            op(1, cas(None, b"a"), KvOutput::Swapped(true), (0, 10)),
            op(2, cas(None, b"b"), KvOutput::Swapped(false), (1, 11)),
            op(3, get(), val(Some(b"a")), (12, 13)),
        ];
        assert_eq!(check(&KvModel, &one_wins, BUDGET), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        let on = |key: &[u8], input: KvInput| match input {
            KvInput::Put { value, .. } => KvInput::Put {
                key: key.to_vec(),
                value,
            },
            KvInput::Get { .. } => KvInput::Get { key: key.to_vec() },
            other => other,
        };
        let h = vec![
            op(1, on(b"a", put(b"1")), KvOutput::Written, (0, 1)),
            op(1, on(b"b", get()), val(None), (2, 3)),
            op(1, on(b"b", put(b"2")), KvOutput::Written, (4, 5)),
            op(1, on(b"a", get()), val(None), (6, 7)),
        ];
        assert_eq!(
            check(&KvModel, &h, BUDGET),
            Verdict::NotLinearizable { part: vec![0, 3] }
        );
    }

    #[test]
    fn a_tiny_budget_gives_up_instead_of_guessing() {
        let h: Vec<_> = (0..20)
            .map(|i| op(i, put(&[i as u8]), KvOutput::Written, (0, 100)))
            .collect();
        let mut h = h;
        h.push(op(99, get(), val(Some(b"missing")), (101, 102)));
        assert!(matches!(
            check(&KvModel, &h, 10),
            Verdict::Unknown { budget: 10, .. }
        ));
    }

    /// Runs random operations through the model in a random sequential order, then gives
    /// each a random interval around its point: such a history is linearizable by
    /// construction. Changing one read's answer to a value never written must be caught.
    fn generated_history(seed: u64, len: usize) -> Vec<Operation<KvInput, KvOutput>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut state: Option<Vec<u8>> = None;
        let mut ops = Vec::with_capacity(len);
        for point in 0..len as u64 {
            let at = point * 10 + 5;
            let called = at.saturating_sub(rng.u64(0..30));
            let returned = at + rng.u64(0..30);
            let (input, output) = match rng.u8(0..4) {
                0 => (get(), val(state.as_deref())),
                1 => {
                    let v = vec![rng.u8(0..4)];
                    state = Some(v.clone());
                    (put(&v), KvOutput::Written)
                }
                2 => {
                    state = None;
                    (KvInput::Delete { key: b"x".to_vec() }, KvOutput::Written)
                }
                _ => {
                    let expected = (rng.bool()).then(|| vec![rng.u8(0..4)]);
                    let v = vec![rng.u8(0..4)];
                    let swapped = expected == state;
                    if swapped {
                        state = Some(v.clone());
                    }
                    let input = KvInput::CompareAndSet {
                        key: b"x".to_vec(),
                        expected,
                        value: v,
                    };
                    (input, KvOutput::Swapped(swapped))
                }
            };
            ops.push(Operation {
                client: point,
                input,
                output: Some(output),
                called,
                returned: Some(returned),
            });
        }
        ops
    }

    proptest! {
        #[test]
        fn sequential_executions_with_overlap_are_linearizable(seed in any::<u64>(), len in 1usize..40) {
            let h = generated_history(seed, len);
            prop_assert_eq!(check(&KvModel, &h, BUDGET), Verdict::Linearizable);
        }

        #[test]
        fn a_read_of_a_never_written_value_is_caught(seed in any::<u64>(), len in 1usize..40) {
            let mut h = generated_history(seed, len);
            h.push(op(u64::MAX, get(), val(Some(b"never")), (0, 1_000_000)));
            let caught = matches!(check(&KvModel, &h, BUDGET), Verdict::NotLinearizable { .. });
            prop_assert!(caught);
        }
    }
}
