//! Leader completeness (thesis fig. 3.2): if an entry is committed in a given term, it is
//! present in the logs of the leaders of all higher terms. To know what is committed, it
//! records every entry a node holds at or below its commit index, and fails at once if two
//! nodes ever consider different entries committed at one index (the log-level form of
//! state machine safety).

use std::collections::BTreeMap;

use super::{EntryView, NodeView, Violation};

#[derive(Debug, Clone, Copy)]
struct Committed {
    entry: EntryView,
    /// Term of the first node seen holding it as committed: the entry was committed in
    /// this term or earlier.
    seen_in_term: u64,
}

/// Every entry seen committed, by index.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<u64, Committed>,
}

impl LeaderCompleteness {
    /// The entry known committed at `index`, if any node has reported it.
    #[must_use]
    pub fn committed(&self, index: u64) -> Option<EntryView> {
        self.committed.get(&index).map(|c| c.entry)
    }

    /// Highest index known committed.
    #[must_use]
    pub fn max_committed(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Records that `entry` is committed at `index`, as seen by a node in `term` (an
    /// applied entry is committed: this catches entries committed, applied and compacted
    /// between two checks, which no log view would show).
    pub fn record(&mut self, index: u64, entry: EntryView, term: u64) -> Result<(), Violation> {
        match self.committed.get(&index) {
            Some(c) if c.entry != entry => Err(Violation {
                property: "leader_completeness",
                detail: format!(
                    "{entry:?} applied at index {index} (term {term}), but {:?} was committed there",
                    c.entry
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(index, Committed { entry, seen_in_term: term });
                Ok(())
            }
        }
    }

    /// Records newly committed entries, then checks every live leader's log.
    pub fn check(&mut self, views: &[NodeView]) -> Result<(), Violation> {
        for v in views.iter().filter(|v| v.alive) {
            let top = v.commit.min(v.last_index());
            for index in v.first_index.max(1)..=top {
                let Some(entry) = v.entry(index) else { break };
                match self.committed.get(&index) {
                    Some(c) if c.entry != entry => {
                        return Err(Violation {
                            property: "leader_completeness",
                            detail: format!(
                                "n{} (term {}) holds {entry:?} as committed at index {index}, \
                                 but {:?} was committed there before",
                                v.id, v.term, c.entry
                            ),
                        });
                    }
                    Some(_) => {}
                    None => {
                        self.committed.insert(
                            index,
                            Committed {
                                entry,
                                seen_in_term: v.term,
                            },
                        );
                    }
                }
            }
        }
        for leader in views.iter().filter(|v| v.alive && v.is_leader) {
            for (&index, c) in self.committed.range(leader.first_index.max(1)..) {
                if c.seen_in_term > leader.term {
                    continue;
                }
                if leader.entry(index) != Some(c.entry) {
                    return Err(Violation {
                        property: "leader_completeness",
                        detail: format!(
                            "leader n{} of term {} lacks committed entry {:?} at index {index} \
                             (committed by term {}); it has {:?}",
                            leader.id,
                            leader.term,
                            c.entry,
                            c.seen_in_term,
                            leader.entry(index)
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, term: u64, leader: bool, commit: u64, log: &[(u64, u64)]) -> NodeView {
        NodeView {
            id,
            alive: true,
            is_leader: leader,
            term,
            commit,
            first_index: 1,
            log: log
                .iter()
                .map(|&(term, digest)| EntryView { term, digest })
                .collect(),
            ..NodeView::default()
        }
    }

    #[test]
    fn a_later_leader_missing_a_committed_entry_is_caught() {
        let mut c = LeaderCompleteness::default();
        c.check(&[node(1, 1, true, 2, &[(1, 1), (1, 2)])]).unwrap();
        assert_eq!(c.max_committed(), 2);
        // A stale leader of an earlier term is not bound by entries committed later.
        c.check(&[node(2, 3, true, 0, &[(1, 1), (1, 2), (3, 3)])])
            .unwrap();
        let v = c.check(&[node(3, 4, true, 1, &[(1, 1)])]).unwrap_err();
        assert!(v.detail.contains("lacks committed entry"));
    }

    #[test]
    fn two_different_committed_entries_at_one_index_are_caught() {
        let mut c = LeaderCompleteness::default();
        c.check(&[node(1, 1, false, 1, &[(1, 1)])]).unwrap();
        let v = c.check(&[node(2, 2, false, 1, &[(2, 7)])]).unwrap_err();
        assert!(v.detail.contains("was committed there before"));
    }

    #[test]
    fn applied_entries_count_as_committed() {
        let mut c = LeaderCompleteness::default();
        let e = EntryView { term: 1, digest: 5 };
        c.record(3, e, 1).unwrap();
        assert_eq!(c.committed(3), Some(e));
        assert!(c.record(3, EntryView { term: 2, digest: 6 }, 2).is_err());
    }
}
