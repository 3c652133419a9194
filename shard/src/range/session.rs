//! Exactly-once client sessions (Raft thesis §6.3): for every client session the range
//! remembers the outcomes of its most recent writes, so a write retried after an ambiguous
//! answer returns its first outcome instead of being applied twice.
//!
//! The table is replicated state: every replica applies the same writes in the same order,
//! so every decision here (what to remember, what to evict) depends only on the applied log
//! and is the same on every replica, including after a snapshot.

use std::collections::{BTreeSet, HashMap, VecDeque};

use quasar_rpc::message::{Reply, RequestError, Sequence, SessionId};

/// Outcomes kept per session. A pipelining client keeps at most this many writes in
/// flight per session; a retry of an older one gets [`Lookup::Forgotten`].
pub const OUTCOMES_PER_SESSION: usize = 64;

/// Sessions kept per range; the least recently used is forgotten first.
pub const DEFAULT_MAX_SESSIONS: usize = 16_384;

/// A remembered outcome.
pub type Outcome = Result<Reply, RequestError>;

/// What the table knows about a `(session, sequence)` about to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Never seen: apply it.
    New,
    /// Already applied: answer with this outcome, apply nothing.
    Duplicate(&'a Outcome),
    /// Older than every outcome still remembered for the session (or the session was
    /// evicted after it had been seen): whether it was applied is no longer known.
    Forgotten,
}

#[derive(Debug, Clone)]
struct Session {
    /// The log index of the session's last write: the eviction order.
    last_index: u64,
    /// The index of its entry in `Sessions::by_age`: at most `last_index`.
    aged_at: u64,
    /// Outcomes by sequence, oldest first, at most [`OUTCOMES_PER_SESSION`].
    outcomes: VecDeque<(Sequence, Outcome)>,
    /// Every sequence at or below this one has been forgotten (0: none).
    forgotten_through: u64,
    /// The highest sequence recorded: the highest of `outcomes` and `forgotten_through`. A
    /// client's next write is above it, so the common lookup scans nothing.
    highest: u64,
}

/// The sessions of one range.
#[derive(Debug, Clone)]
pub struct Sessions {
    by_id: HashMap<SessionId, Session>,
    /// `(aged_at, session)` for every session, the least recently used first, kept
    /// lazily: `aged_at` is at most the session's `last_index` (a write that raises
    /// `last_index` updates `by_id` alone, not this tree: two tree operations fewer per
    /// write; one that lowers it, after a merge brought a neighbour's higher indexes, moves
    /// the entry down). Eviction refreshes a stale first entry and looks again, so it still
    /// evicts the session with the lowest `(last_index, id)`, the same on every replica
    /// however stale their entries are.
    by_age: BTreeSet<(u64, SessionId)>,
    max_sessions: usize,
    /// How many sessions were evicted as a whole. Once any was, an unknown session writing
    /// a sequence above 1 may be an evicted one retrying, so it gets [`Lookup::Forgotten`];
    /// clients start every session at sequence 1.
    evictions: u64,
}

impl PartialEq for Session {
    fn eq(&self, other: &Session) -> bool {
        self.last_index == other.last_index
            && self.outcomes == other.outcomes
            && self.forgotten_through == other.forgotten_through
            && self.highest == other.highest
    }
}

impl Eq for Session {}

/// Equal tables hold the same sessions and outcomes; how stale `by_age`'s entries are
/// is not part of the state.
impl PartialEq for Sessions {
    fn eq(&self, other: &Sessions) -> bool {
        self.by_id == other.by_id
            && self.max_sessions == other.max_sessions
            && self.evictions == other.evictions
    }
}

impl Eq for Sessions {}

impl Sessions {
    pub fn new(max_sessions: usize) -> Sessions {
        assert!(
            max_sessions > 0,
            "a range must remember at least one session"
        );
        Sessions {
            by_id: HashMap::new(),
            by_age: BTreeSet::new(),
            max_sessions,
            evictions: 0,
        }
    }

    /// `SessionId(0)` opts out of exactly-once (one-shot tools): nothing is remembered.
    pub fn tracks(session: SessionId) -> bool {
        session.0 != 0
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Looks up a write before applying it.
    pub fn lookup(&self, session: SessionId, sequence: Sequence) -> Lookup<'_> {
        if !Self::tracks(session) {
            return Lookup::New;
        }
        let Some(s) = self.by_id.get(&session) else {
            if self.evictions > 0 && sequence.0 > 1 {
                return Lookup::Forgotten;
            }
            return Lookup::New;
        };
        if sequence.0 > s.highest {
            return Lookup::New;
        }
        if let Some((_, outcome)) = s.outcomes.iter().find(|(seq, _)| *seq == sequence) {
            return Lookup::Duplicate(outcome);
        }
        if sequence.0 <= s.forgotten_through {
            return Lookup::Forgotten;
        }
        Lookup::New
    }

    /// Records the outcome of a write applied at `index`.
    pub fn record(&mut self, session: SessionId, sequence: Sequence, index: u64, outcome: Outcome) {
        if !Self::tracks(session) {
            return;
        }
        let s = self.by_id.entry(session).or_insert_with(|| Session {
            last_index: index,
            aged_at: u64::MAX,
            outcomes: VecDeque::with_capacity(4),
            forgotten_through: 0,
            highest: 0,
        });
        if index < s.aged_at {
            // New, or its index went down (a merge): the entry must stay at or below it.
            self.by_age.remove(&(s.aged_at, session));
            self.by_age.insert((index, session));
            s.aged_at = index;
        }
        s.last_index = index;
        s.outcomes.push_back((sequence, outcome));
        s.highest = s.highest.max(sequence.0);
        if s.outcomes.len() > OUTCOMES_PER_SESSION {
            if let Some((oldest, _)) = s.outcomes.pop_front() {
                // Sequences are increasing per session in the common case; a client that
                // reorders keeps the maximum as the watermark, so nothing is reapplied.
                s.forgotten_through = s.forgotten_through.max(oldest.0);
            }
        }
        self.evict_over_limit();
    }

    /// Every session with its outcomes, in session order (for snapshots and hashing).
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (SessionId, u64, u64, &VecDeque<(Sequence, Outcome)>)> {
        let mut ids: Vec<&SessionId> = self.by_id.keys().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| {
            let s = &self.by_id[id];
            (*id, s.last_index, s.forgotten_through, &s.outcomes)
        })
    }

    /// Unites `other` into this table (a merge): a session known to both keeps every
    /// remembered outcome (the newest [`OUTCOMES_PER_SESSION`]) and the higher watermark.
    pub fn absorb(&mut self, other: Sessions) {
        self.evictions = self.evictions.max(other.evictions);
        for (id, theirs) in other.by_id {
            match self.by_id.get_mut(&id) {
                None => {
                    let mut theirs = theirs;
                    theirs.aged_at = theirs.last_index;
                    self.by_age.insert((theirs.last_index, id));
                    self.by_id.insert(id, theirs);
                }
                Some(ours) => {
                    for (seq, outcome) in theirs.outcomes {
                        if !ours.outcomes.iter().any(|(s, _)| *s == seq) {
                            ours.outcomes.push_back((seq, outcome));
                        }
                    }
                    ours.outcomes.make_contiguous().sort_by_key(|(s, _)| *s);
                    while ours.outcomes.len() > OUTCOMES_PER_SESSION {
                        if let Some((oldest, _)) = ours.outcomes.pop_front() {
                            ours.forgotten_through = ours.forgotten_through.max(oldest.0);
                        }
                    }
                    ours.forgotten_through = ours.forgotten_through.max(theirs.forgotten_through);
                    ours.highest = ours.highest.max(theirs.highest);
                    // (`by_age`'s entry for it stays at or below the new value.)
                    ours.last_index = ours.last_index.max(theirs.last_index);
                }
            }
        }
        self.evict_over_limit();
    }

    /// Forgets the least recently used sessions beyond the limit.
    fn evict_over_limit(&mut self) {
        while self.by_id.len() > self.max_sessions {
            let Some((index, id)) = self.by_age.pop_first() else {
                break;
            };
            let Some(s) = self.by_id.get_mut(&id) else {
                continue;
            };
            if s.last_index > index {
                // Written since the entry was made: its place is further on.
                s.aged_at = s.last_index;
                self.by_age.insert((s.last_index, id));
            } else {
                self.by_id.remove(&id);
                self.evictions += 1;
            }
        }
    }

    /// Sessions evicted so far (part of the replicated state).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Restores the eviction count from a snapshot.
    pub fn set_evictions(&mut self, evictions: u64) {
        self.evictions = evictions;
    }

    /// Rebuilds one session from a snapshot.
    pub fn restore(
        &mut self,
        session: SessionId,
        last_index: u64,
        forgotten_through: u64,
        outcomes: VecDeque<(Sequence, Outcome)>,
    ) {
        if let Some(old) = self.by_id.get(&session) {
            self.by_age.remove(&(old.aged_at, session));
        }
        self.by_age.insert((last_index, session));
        let highest = outcomes
            .iter()
            .map(|(seq, _)| seq.0)
            .fold(forgotten_through, u64::max);
        self.by_id.insert(
            session,
            Session {
                last_index,
                aged_at: last_index,
                outcomes,
                forgotten_through,
                highest,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::message::KeyVersion;

    fn written(v: u64) -> Outcome {
        Ok(Reply::Written {
            version: KeyVersion(v),
        })
    }

    #[test]
    fn a_retry_gets_the_first_outcome() {
        let mut s = Sessions::new(10);
        assert_eq!(s.lookup(SessionId(1), Sequence(1)), Lookup::New);
        s.record(SessionId(1), Sequence(1), 5, written(5));
        assert_eq!(
            s.lookup(SessionId(1), Sequence(1)),
            Lookup::Duplicate(&written(5))
        );
        assert_eq!(s.lookup(SessionId(1), Sequence(2)), Lookup::New);
        assert_eq!(s.lookup(SessionId(2), Sequence(1)), Lookup::New);
    }

    #[test]
    fn old_outcomes_are_forgotten_not_reapplied() {
        let mut s = Sessions::new(10);
        for seq in 1..=(OUTCOMES_PER_SESSION as u64 + 3) {
            s.record(SessionId(1), Sequence(seq), seq, written(seq));
        }
        assert_eq!(s.lookup(SessionId(1), Sequence(3)), Lookup::Forgotten);
        assert_eq!(
            s.lookup(SessionId(1), Sequence(4)),
            Lookup::Duplicate(&written(4))
        );
    }

    proptest::proptest! {
        /// `by_age` is kept lazily; eviction must still pick what an eagerly kept order
        /// picks (the lowest `(last_index, id)`), including after a merge's `absorb`.
        #[test]
        fn lazy_eviction_evicts_the_least_recently_used(
            writes in proptest::collection::vec(0u64..12, 1..300),
            merge_at in 0usize..300,
            theirs in proptest::collection::vec((0u64..12, 1u64..400), 0..8),
        ) {
            let max = 5;
            let mut table = Sessions::new(max);
            let mut model: Vec<(u64, u64)> = Vec::new(); // (session, last_index)
            let evict = |model: &mut Vec<(u64, u64)>| {
                while model.len() > max {
                    let oldest = model
                        .iter()
                        .map(|&(id, last)| (last, id))
                        .min()
                        .expect("not empty");
                    model.retain(|&(id, _)| id != oldest.1);
                }
            };
            for (i, &id) in writes.iter().enumerate() {
                let index = i as u64 + 1;
                if i == merge_at {
                    // A merged neighbour's table: sessions known to both keep the later index.
                    let mut other = Sessions::new(max);
                    for &(id, last) in &theirs {
                        if other.by_id.contains_key(&SessionId(id + 1)) {
                            continue;
                        }
                        other.restore(SessionId(id + 1), last, 0, VecDeque::new());
                        match model.iter_mut().find(|(m, _)| *m == id + 1) {
                            Some((_, l)) => *l = (*l).max(last),
                            None => model.push((id + 1, last)),
                        }
                    }
                    table.absorb(other);
                    evict(&mut model);
                }
                table.record(SessionId(id + 1), Sequence(index), index, written(index));
                match model.iter_mut().find(|(m, _)| *m == id + 1) {
                    Some((_, l)) => *l = index,
                    None => model.push((id + 1, index)),
                }
                evict(&mut model);
                let mut held: Vec<(u64, u64)> = table
                    .by_id
                    .iter()
                    .map(|(id, s)| (id.0, s.last_index))
                    .collect();
                held.sort_unstable();
                model.sort_unstable();
                proptest::prop_assert_eq!(&held, &model);
            }
        }
    }

    #[test]
    fn the_least_recently_used_session_is_evicted() {
        let mut s = Sessions::new(2);
        s.record(SessionId(1), Sequence(1), 1, written(1));
        s.record(SessionId(2), Sequence(1), 2, written(2));
        s.record(SessionId(1), Sequence(2), 3, written(3));
        s.record(SessionId(3), Sequence(1), 4, written(4));
        assert_eq!(s.len(), 2);
        // Session 2 was evicted: its retry is not reapplied, and other unknown sessions
        // past their first write are refused the same way.
        assert_eq!(s.lookup(SessionId(2), Sequence(1)), Lookup::New);
        assert_eq!(s.lookup(SessionId(2), Sequence(2)), Lookup::Forgotten);
        assert_eq!(s.lookup(SessionId(9), Sequence(7)), Lookup::Forgotten);
        assert_eq!(
            s.lookup(SessionId(1), Sequence(2)),
            Lookup::Duplicate(&written(3))
        );
    }

    #[test]
    fn writes_applied_out_of_order_are_each_found_and_a_restored_table_is_equal() {
        let mut s = Sessions::new(10);
        // A pipelining client's writes 5 and 3 land before 4.
        s.record(SessionId(1), Sequence(5), 1, written(1));
        assert_eq!(s.lookup(SessionId(1), Sequence(3)), Lookup::New);
        s.record(SessionId(1), Sequence(3), 2, written(2));
        assert_eq!(s.lookup(SessionId(1), Sequence(4)), Lookup::New);
        assert_eq!(
            s.lookup(SessionId(1), Sequence(5)),
            Lookup::Duplicate(&written(1))
        );
        assert_eq!(
            s.lookup(SessionId(1), Sequence(3)),
            Lookup::Duplicate(&written(2))
        );
        assert_eq!(s.lookup(SessionId(1), Sequence(6)), Lookup::New);
        let mut restored = Sessions::new(10);
        for (id, last_index, forgotten, outcomes) in s.iter() {
            restored.restore(id, last_index, forgotten, outcomes.clone());
        }
        assert_eq!(restored, s);
        assert_eq!(
            restored.lookup(SessionId(1), Sequence(5)),
            Lookup::Duplicate(&written(1))
        );
    }

    #[test]
    fn session_zero_is_not_tracked() {
        let mut s = Sessions::new(2);
        s.record(SessionId(0), Sequence(1), 1, written(1));
        assert!(s.is_empty());
        assert_eq!(s.lookup(SessionId(0), Sequence(1)), Lookup::New);
    }
}
