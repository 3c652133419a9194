//! The oracle for the client history: are the reads and writes clients saw linearizable?
//! Every write carries a unique value, and Raft orders writes by log index, so a read's
//! value names the write it saw and its position in that order. For one register (and
//! linearizability is local, so per key suffices) a history is then linearizable when:
//!
//! ```text
//!  W1  the log order of two writes agrees with real time (w1 acked before w2 invoked);
//!  R1  a read returns a write that was invoked before the read returned;
//!  R2  no write later in the log was acknowledged before the read was invoked (stale);
//!  R3  no write at or before the read's position was invoked after the read returned;
//!  R4  a read that starts after another read returned sees the same or a later write;
//!  R5  a value read was committed (no dirty or invented reads).
//! ```

use std::collections::BTreeMap;

use super::Violation;

/// Identifies one operation in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Still waiting (or the client gave up without an answer).
    Pending,
    /// Told it succeeded.
    Acked,
    /// Told it definitely did not happen.
    Failed,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        key: u64,
        value: u64,
        invoke: u64,
        complete: Option<u64>,
        outcome: WriteOutcome,
    },
    Read {
        key: u64,
        invoke: u64,
        complete: Option<u64>,
        value: Option<u64>,
    },
}

/// A committed write: (log position, invoke time, time acked if acked, value).
type CommittedWrite = (u64, u64, Option<u64>, u64);

/// The client history of one run, in simulated ticks.
#[derive(Debug, Default)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    /// A client starts writing `value` (unique, non-zero) to `key`.
    pub fn invoke_write(&mut self, key: u64, value: u64, now: u64) -> OpId {
        assert_ne!(value, 0, "0 is the initial value of every register");
        self.ops.push(Op::Write {
            key,
            value,
            invoke: now,
            complete: None,
            outcome: WriteOutcome::Pending,
        });
        OpId(self.ops.len() - 1)
    }

    /// The write `op` returned with `result` (`Acked` or `Failed`).
    pub fn complete_write(&mut self, op: OpId, now: u64, result: WriteOutcome) {
        if let Some(Op::Write {
            complete, outcome, ..
        }) = self.ops.get_mut(op.0)
        {
            assert!(complete.is_none(), "write {op:?} completed twice");
            *complete = Some(now);
            *outcome = result;
        } else {
            panic!("{op:?} is not a write");
        }
    }

    /// A client starts reading `key`.
    pub fn invoke_read(&mut self, key: u64, now: u64) -> OpId {
        self.ops.push(Op::Read {
            key,
            invoke: now,
            complete: None,
            value: None,
        });
        OpId(self.ops.len() - 1)
    }

    /// The read `op` returned `value`.
    pub fn complete_read(&mut self, op: OpId, now: u64, result: u64) {
        if let Some(Op::Read {
            complete, value, ..
        }) = self.ops.get_mut(op.0)
        {
            assert!(complete.is_none(), "read {op:?} completed twice");
            *complete = Some(now);
            *value = Some(result);
        } else {
            panic!("{op:?} is not a read");
        }
    }

    /// (acked writes, completed reads).
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let mut acked = 0;
        let mut reads = 0;
        for op in &self.ops {
            match op {
                Op::Write {
                    outcome: WriteOutcome::Acked,
                    ..
                } => acked += 1,
                Op::Read {
                    complete: Some(_), ..
                } => reads += 1,
                _ => {}
            }
        }
        (acked, reads)
    }

    /// Checks the history. `position` maps a written value to the log index where it was
    /// committed (`None`: never committed).
    pub fn check(&self, position: impl Fn(u64) -> Option<u64>) -> Result<(), Violation> {
        let fail = |detail: String| {
            Err(Violation {
                property: "linearizability",
                detail,
            })
        };
        // Writes by key: (position, invoke, acked-complete time, value).
        let mut writes: BTreeMap<u64, Vec<CommittedWrite>> = BTreeMap::new();
        let mut by_value: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for op in &self.ops {
            if let Op::Write {
                key,
                value,
                invoke,
                complete,
                outcome,
            } = *op
            {
                by_value.insert(value, (key, invoke));
                let pos = position(value);
                match (outcome, pos) {
                    (WriteOutcome::Acked, None) => {
                        return fail(format!(
                            "acknowledged write {value} to key {key} is not committed"
                        ));
                    }
                    (WriteOutcome::Failed, Some(p)) => {
                        return fail(format!(
                            "write {value} reported failed but committed at {p}"
                        ));
                    }
                    _ => {}
                }
                if let Some(p) = pos {
                    let acked_at = if outcome == WriteOutcome::Acked {
                        complete
                    } else {
                        None
                    };
                    writes
                        .entry(key)
                        .or_default()
                        .push((p, invoke, acked_at, value));
                }
            }
        }
        for list in writes.values_mut() {
            list.sort_unstable();
            // W1: for each write, every write acked before it was invoked sits earlier.
            let mut latest_ack_before: Vec<(u64, u64)> =
                list.iter().filter_map(|w| w.2.map(|c| (c, w.0))).collect();
            latest_ack_before.sort_unstable();
            for w in list.iter() {
                for &(acked_at, p) in &latest_ack_before {
                    if acked_at >= w.1 {
                        break;
                    }
                    if p > w.0 {
                        return fail(format!(
                            "write {} at index {} was invoked at t{} after a write at index {p} \
                             was acked at t{acked_at}",
                            w.3, w.0, w.1
                        ));
                    }
                }
            }
        }
        // Reads, per key, with their observed positions.
        let mut reads: BTreeMap<u64, Vec<(u64, u64, u64, u64)>> = BTreeMap::new();
        for op in &self.ops {
            let Op::Read {
                key,
                invoke,
                complete: Some(complete),
                value: Some(value),
            } = *op
            else {
                continue;
            };
            let empty = Vec::new();
            let list = writes.get(&key).unwrap_or(&empty);
            let pos = if value == 0 {
                0
            } else {
                let Some(&(wkey, winvoke)) = by_value.get(&value) else {
                    return fail(format!(
                        "read of key {key} returned {value}, which nobody wrote"
                    ));
                };
                if wkey != key {
                    return fail(format!(
                        "read of key {key} returned {value}, written to {wkey}"
                    ));
                }
                if winvoke > complete {
                    return fail(format!(
                        "read of key {key} [t{invoke}, t{complete}] returned {value}, \
                         written only at t{winvoke} (R1)"
                    ));
                }
                let Some(p) = position(value) else {
                    return fail(format!(
                        "read of key {key} returned uncommitted value {value} (R5)"
                    ));
                };
                p
            };
            for &(p, winvoke, acked_at, wvalue) in list {
                if p > pos && acked_at.is_some_and(|a| a < invoke) {
                    return fail(format!(
                        "stale read of key {key} at t{invoke}: returned {value} (index {pos}) but \
                         {wvalue} (index {p}) was acked at t{} (R2)",
                        acked_at.unwrap_or(0)
                    ));
                }
                if p <= pos && winvoke > complete {
                    return fail(format!(
                        "read of key {key} [t{invoke}, t{complete}] saw index {pos} but write \
                         {wvalue} at index {p} started later, at t{winvoke} (R3)"
                    ));
                }
            }
            reads
                .entry(key)
                .or_default()
                .push((invoke, complete, pos, value));
        }
        for (key, list) in &reads {
            // R4: sort by completion; for each read, every read completed before it began
            // must have seen no later position.
            let mut done: Vec<(u64, u64, u64)> = list.iter().map(|r| (r.1, r.2, r.3)).collect();
            done.sort_unstable();
            for r in list {
                for &(completed, pos, value) in &done {
                    if completed >= r.0 {
                        break;
                    }
                    if pos > r.2 {
                        return fail(format!(
                            "read of key {key} at t{} returned {} (index {}) after an earlier read \
                             returned {value} (index {pos}) at t{completed} (R4)",
                            r.0, r.3, r.2
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(table: &'static [(u64, u64)]) -> impl Fn(u64) -> Option<u64> {
        move |v| table.iter().find(|(val, _)| *val == v).map(|(_, p)| *p)
    }

    #[test]
    fn a_linearizable_history_passes() {
        let mut h = History::default();
        let w1 = h.invoke_write(1, 10, 0);
        let r0 = h.invoke_read(1, 1);
        h.complete_read(r0, 2, 0); // concurrent with w1: may miss it
        h.complete_write(w1, 3, WriteOutcome::Acked);
        let w2 = h.invoke_write(1, 11, 4);
        let r1 = h.invoke_read(1, 5);
        h.complete_read(r1, 6, 10); // concurrent with w2: may see the old value
        h.complete_write(w2, 7, WriteOutcome::Acked);
        let r2 = h.invoke_read(1, 8);
        h.complete_read(r2, 9, 11);
        h.check(pos(&[(10, 1), (11, 2)])).unwrap();
        assert_eq!(h.counts(), (2, 3));
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut h = History::default();
        let w1 = h.invoke_write(1, 10, 0);
        h.complete_write(w1, 1, WriteOutcome::Acked);
        let w2 = h.invoke_write(1, 11, 2);
        h.complete_write(w2, 3, WriteOutcome::Acked);
        let r = h.invoke_read(1, 4);
        h.complete_read(r, 5, 10);
        let v = h.check(pos(&[(10, 1), (11, 2)])).unwrap_err();
        assert!(v.detail.contains("(R2)"), "{v}");
    }

    #[test]
    fn non_monotonic_reads_and_future_reads_are_caught() {
        let mut h = History::default();
        h.invoke_write(1, 10, 0); // never answered
        let r1 = h.invoke_read(1, 1);
        h.complete_read(r1, 2, 10);
        let r2 = h.invoke_read(1, 3);
        h.complete_read(r2, 4, 0);
        assert!(h
            .check(pos(&[(10, 1)]))
            .unwrap_err()
            .detail
            .contains("(R4)"));

        let mut h = History::default();
        let r = h.invoke_read(1, 0);
        h.complete_read(r, 1, 10);
        h.invoke_write(1, 10, 2);
        assert!(h
            .check(pos(&[(10, 1)]))
            .unwrap_err()
            .detail
            .contains("(R1)"));
    }

    #[test]
    fn lost_dirty_and_reordered_writes_are_caught() {
        let mut h = History::default();
        let w = h.invoke_write(1, 10, 0);
        h.complete_write(w, 1, WriteOutcome::Acked);
        assert!(h
            .check(pos(&[]))
            .unwrap_err()
            .detail
            .contains("not committed"));

        let mut h = History::default();
        h.invoke_write(1, 10, 0);
        let r = h.invoke_read(1, 1);
        h.complete_read(r, 2, 10);
        assert!(h.check(pos(&[])).unwrap_err().detail.contains("(R5)"));

        let mut h = History::default();
        let w1 = h.invoke_write(1, 10, 0);
        h.complete_write(w1, 1, WriteOutcome::Acked);
        let w2 = h.invoke_write(1, 11, 2);
        h.complete_write(w2, 3, WriteOutcome::Acked);
        assert!(h
            .check(pos(&[(10, 2), (11, 1)]))
            .unwrap_err()
            .detail
            .contains("was invoked at"));
    }
}
