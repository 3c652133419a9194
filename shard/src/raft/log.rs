//! The replicated log of one node, held in memory since the last compaction: entries,
//! the snapshot they follow, the commit and apply positions, and what is durable
//! (`Unstable`). The runtime persists the same entries through `Ready::append`.

use super::types::{Entry, LogId, LogIndex, SnapshotMeta, Term};
use super::unstable::Unstable;
use std::collections::VecDeque;

#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// Everything up to `snapshot.last` is compacted away.
    pub snapshot: SnapshotMeta,
    /// Invariant: `entries[i].index == snapshot.last.index + 1 + i`, terms never decrease.
    entries: VecDeque<Entry>,
    /// Highest index known committed. Invariant: `committed <= last_index`, never decreases.
    pub committed: LogIndex,
    /// Highest index the runtime reported applied. Invariant: `applied <= committed`.
    pub applied: LogIndex,
    /// Highest index handed to a `Ready::apply`. Invariant: `applied <= apply_handed`.
    pub apply_handed: LogIndex,
    pub unstable: Unstable,
}

impl RaftLog {
    pub fn new(snapshot: SnapshotMeta, entries: Vec<Entry>) -> RaftLog {
        let mut log = RaftLog {
            snapshot,
            ..RaftLog::default()
        };
        log.entries = entries.into();
        let last = log.last_index();
        log.unstable.handed = last;
        log.unstable.persisted = last;
        log.committed = log.snapshot.last.index;
        log.applied = log.snapshot.last.index;
        log.apply_handed = log.applied;
        log
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot.last.index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.last.index.0 + self.entries.len() as u64)
    }

    pub fn last_id(&self) -> LogId {
        self.entries.back().map_or(self.snapshot.last, Entry::id)
    }

    /// The term at `index`; `None` if compacted (below the snapshot) or beyond the log.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.last.index {
            return Some(self.snapshot.last.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.first_index().0;
        if index.0 < first {
            return None;
        }
        self.entries.get((index.0 - first) as usize)
    }

    pub fn matches(&self, id: LogId) -> bool {
        self.term(id.index) == Some(id.term)
    }

    /// §3.6.1: a candidate whose last entry is `last` is at least as up to date as us.
    pub fn is_up_to_date(&self, last: LogId) -> bool {
        let mine = self.last_id();
        last.term > mine.term || (last.term == mine.term && last.index >= mine.index)
    }

    /// Appends entries that directly follow the last one (the leader's own proposals).
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "append must be contiguous"
        );
        assert!(
            entry.term >= self.last_id().term,
            "terms never decrease in the log"
        );
        self.entries.push_back(entry);
    }

    /// The follower side of §3.5: if `prev` matches, merge `entries` (truncating a
    /// conflicting suffix) and return the index of the last entry of the message.
    /// `entries` must follow `prev` contiguously (checked by the caller).
    /// Entries are moved into the log (payloads are neither copied nor re-counted).
    pub fn maybe_append(&mut self, prev: LogId, entries: Vec<Entry>) -> Option<LogIndex> {
        if !self.matches(prev) {
            return None;
        }
        let last_new = LogIndex(prev.index.0 + entries.len() as u64);
        if prev.index == self.last_index() {
            // The common case: the entries extend our log (checked contiguous by the caller).
            self.entries.extend(entries);
            return Some(last_new);
        }
        for e in entries {
            if e.index <= self.snapshot.last.index {
                continue;
            }
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(
                        e.index > self.committed,
                        "conflict at {} at or below commit {}: committed entry overwritten",
                        e.index,
                        self.committed
                    );
                    self.truncate_from(e.index);
                    self.entries.push_back(e);
                }
                None => self.entries.push_back(e),
            }
        }
        Some(last_new)
    }

    /// Drops every entry from `from` on.
    fn truncate_from(&mut self, from: LogIndex) {
        let keep = (from.0 - self.first_index().0) as usize;
        self.entries.truncate(keep);
        self.unstable.truncated(from);
        if self.apply_handed >= from {
            panic!(
                "truncating {from} below handed-out apply {}",
                self.apply_handed
            );
        }
    }

    /// The follower's hint for a rejected `prev` (§5.3 of the etcd design, thesis §3.5
    /// optimisation): the last entry at or below `index` whose term is at most `term`.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> LogId {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i = i.prev(),
                Some(t) => return LogId::new(t, i),
                None => return LogId::new(Term(0), i),
            }
            if i.0 == 0 {
                return LogId::default();
            }
        }
    }

    /// Copies entries from `from` into `out`, at most `max_count` and `max_bytes` (at
    /// least one if any). Payloads are shared, not copied.
    pub fn entries_from(
        &self,
        from: LogIndex,
        max_count: usize,
        max_bytes: u64,
        out: &mut Vec<Entry>,
    ) {
        let first = self.first_index().0;
        if from.0 < first || from > self.last_index() {
            return;
        }
        let mut bytes = 0u64;
        for e in self
            .entries
            .range((from.0 - first) as usize..)
            .take(max_count)
        {
            bytes += e.size_bytes();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e.clone());
        }
    }

    /// Entries in `[from, to]` (both present), appended to `out`.
    pub fn slice_into(&self, from: LogIndex, to: LogIndex, out: &mut Vec<Entry>) {
        if to < from {
            return;
        }
        let first = self.first_index().0;
        assert!(
            from.0 >= first,
            "slice below the first index {first}: {from}"
        );
        let start = (from.0 - first) as usize;
        let end = (to.0 - first) as usize + 1;
        // The deque is at most two slices: clone them in bulk (the hot path of `Ready`).
        let (a, b) = self.entries.as_slices();
        let mut s = start;
        if s < a.len() {
            let upto = end.min(a.len());
            out.extend_from_slice(&a[s..upto]);
            s = upto;
        }
        if s < end {
            out.extend_from_slice(&b[s - a.len()..end - a.len()]);
        }
    }

    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Drops entries up to `index` (inclusive); `meta` describes what replaces them.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        let index = meta.last.index;
        assert!(index >= self.snapshot.last.index && index <= self.last_index());
        let drop = (index.0 - self.snapshot.last.index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot = meta;
    }

    /// Gives back the log's spare capacity: an idle group's log keeps what its last append
    /// grew it to (twice its length at worst) for as long as it sleeps.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub fn restore(&mut self, meta: SnapshotMeta) {
        let index = meta.last.index;
        self.entries.clear();
        self.snapshot = meta;
        self.committed = index;
        self.unstable.handed = index;
        self.unstable.persisted = self.unstable.persisted.min(index);
    }

    /// Iterates entries in `[from, to]`.
    pub fn iter_range(&self, from: LogIndex, to: LogIndex) -> impl Iterator<Item = &Entry> {
        let first = self.first_index().0;
        let start = from.0.max(first).saturating_sub(first) as usize;
        let end = (to.0 + 1)
            .saturating_sub(first)
            .min(self.entries.len() as u64) as usize;
        self.entries.range(start..end.max(start))
    }

    /// Every structural invariant of the log (O(1): see the note on the tail below).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub fn check_invariants(&self) {
        let last = self.last_index();
        assert!(
            self.committed <= last,
            "commit {} > last {last}",
            self.committed
        );
        assert!(
            self.applied <= self.committed,
            "applied {} > commit {}",
            self.applied,
            self.committed
        );
        assert!(self.applied <= self.apply_handed && self.apply_handed <= self.committed);
        assert!(
            self.unstable.persisted <= self.unstable.handed,
            "persisted > handed"
        );
        assert!(
            self.unstable.handed <= last,
            "handed {} > last {last}",
            self.unstable.handed
        );
        // Entries change only at the tail (append, truncate) and at the head (compaction),
        // so checking the head link and the last entries after every input covers every
        // entry while keeping each check O(1).
        const TAIL: usize = 64;
        if let Some(first) = self.entries.front() {
            assert_eq!(
                first.index,
                self.snapshot.last.index.next(),
                "log does not follow snapshot"
            );
            assert!(
                first.term >= self.snapshot.last.term,
                "term decreases after the snapshot"
            );
        }
        let skip = self.entries.len().saturating_sub(TAIL + 1);
        let mut prev: Option<LogId> = None;
        for e in self.entries.range(skip..) {
            if let Some(p) = prev {
                assert_eq!(e.index, p.index.next(), "log not contiguous after {p}");
                assert!(e.term >= p.term, "term decreases at {}", e.index);
            }
            prev = Some(e.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use bytes::Bytes;

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| e(t, i as u64 + 1))
            .collect();
        RaftLog::new(SnapshotMeta::default(), entries)
    }

    #[test]
    fn maybe_append_truncates_a_conflicting_suffix_only() {
        let mut l = log(&[1, 1, 2, 2]);
        // Duplicate of what we hold: nothing changes, the longer log is kept.
        assert_eq!(
            l.maybe_append(LogId::new(Term(1), LogIndex(1)), vec![e(1, 2)]),
            Some(LogIndex(2))
        );
        assert_eq!(l.last_index(), LogIndex(4));
        // Conflict at 3: the suffix from 3 is replaced.
        assert_eq!(
            l.maybe_append(LogId::new(Term(1), LogIndex(2)), vec![e(3, 3)]),
            Some(LogIndex(3))
        );
        assert_eq!(l.last_id(), LogId::new(Term(3), LogIndex(3)));
        assert_eq!(l.unstable.handed, LogIndex(2));
        // Mismatching prev: refused.
        assert_eq!(
            l.maybe_append(LogId::new(Term(2), LogIndex(3)), vec![e(3, 4)]),
            None
        );
        l.check_invariants();
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let l = log(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(
            l.find_conflict_by_term(LogIndex(7), Term(4)),
            LogId::new(Term(2), LogIndex(5))
        );
        assert_eq!(
            l.find_conflict_by_term(LogIndex(9), Term(5)),
            LogId::new(Term(5), LogIndex(7))
        );
        assert_eq!(
            l.find_conflict_by_term(LogIndex(7), Term(0)),
            LogId::default()
        );
    }

    #[test]
    fn compaction_keeps_terms_and_positions() {
        let mut l = log(&[1, 1, 2, 2]);
        l.committed = LogIndex(3);
        l.applied = LogIndex(3);
        l.apply_handed = LogIndex(3);
        let meta = SnapshotMeta {
            last: LogId::new(Term(2), LogIndex(3)),
            ..SnapshotMeta::default()
        };
        l.compact(meta);
        assert_eq!(l.first_index(), LogIndex(4));
        assert_eq!(l.term(LogIndex(3)), Some(Term(2)));
        assert_eq!(l.term(LogIndex(2)), None);
        let mut out = Vec::new();
        l.entries_from(LogIndex(4), 10, 1 << 20, &mut out);
        assert_eq!(out.len(), 1);
        l.check_invariants();
    }

    #[test]
    fn shrink_to_fit_gives_back_what_an_append_grew_and_keeps_the_entries() {
        let mut l = log(&[1, 1, 2, 2]);
        l.entries.shrink_to_fit();
        let exact = l.entries.capacity();
        let last = l.last_id();
        l.append(Entry {
            term: last.term,
            index: last.index.next(),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        });
        assert!(
            l.entries.capacity() > l.entries.len(),
            "grown past its length"
        );
        l.shrink_to_fit();
        assert!(l.entries.capacity() < 2 * l.entries.len());
        assert!(l.entries.capacity() >= exact);
        assert_eq!(l.last_index(), LogIndex(5));
        assert_eq!(l.term(LogIndex(3)), Some(Term(2)));
        l.check_invariants();
    }
}
