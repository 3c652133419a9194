//! No acknowledged write is lost: once a client has been told its write succeeded at an
//! index, the entry at that index must be (or become) committed and equal to it, on every
//! node, forever. Checked after every step against the committed record kept by
//! `leader_completeness`, and at the end of a run (`check_final`) for acknowledgements
//! that were never followed by a commit.

use std::collections::BTreeMap;

use super::leader_completeness::LeaderCompleteness;
use super::{EntryView, NodeView, Violation};

/// Acknowledged writes, by index.
#[derive(Debug, Default)]
pub struct NoAckedWriteLost {
    acked: BTreeMap<u64, EntryView>,
}

impl NoAckedWriteLost {
    /// Records that a client was told the write `entry` at `index` succeeded.
    pub fn on_ack(&mut self, index: u64, entry: EntryView) -> Result<(), Violation> {
        if let Some(previous) = self.acked.insert(index, entry) {
            if previous != entry {
                return Err(Violation {
                    property: "no_acked_write_lost",
                    detail: format!("index {index} acknowledged for {previous:?} and {entry:?}"),
                });
            }
        }
        Ok(())
    }

    /// Number of acknowledged writes.
    #[must_use]
    pub fn count(&self) -> usize {
        self.acked.len()
    }

    /// Fails if an acknowledged index has been committed with a different entry, or a
    /// live node holds a different entry there at or below its commit index.
    pub fn check(
        &mut self,
        views: &[NodeView],
        committed: &LeaderCompleteness,
    ) -> Result<(), Violation> {
        for (&index, &entry) in &self.acked {
            if let Some(c) = committed.committed(index) {
                if c != entry {
                    return Err(lost(index, entry, format!("{c:?} was committed instead")));
                }
            }
            for v in views.iter().filter(|v| v.alive && v.commit >= index) {
                if let Some(held) = v.entry(index) {
                    if held != entry {
                        return Err(lost(index, entry, format!("n{} committed {held:?}", v.id)));
                    }
                }
            }
        }
        Ok(())
    }

    /// At the end of a run (after the liveness phase): every acknowledged write must be
    /// known committed.
    pub fn check_final(&self, committed: &LeaderCompleteness) -> Result<(), Violation> {
        for (&index, &entry) in &self.acked {
            if committed.committed(index) != Some(entry) {
                return Err(lost(index, entry, "it was never committed".to_string()));
            }
        }
        Ok(())
    }
}

fn lost(index: u64, entry: EntryView, why: String) -> Violation {
    Violation {
        property: "no_acked_write_lost",
        detail: format!("acknowledged write {entry:?} at index {index} lost: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_never_committed_or_overwritten_is_caught() {
        let committed = LeaderCompleteness::default();
        let mut c = NoAckedWriteLost::default();
        c.on_ack(1, EntryView { term: 1, digest: 1 }).unwrap();
        c.check(&[], &committed).unwrap();
        assert!(c
            .check_final(&committed)
            .unwrap_err()
            .detail
            .contains("never committed"));
        let holder = NodeView {
            id: 2,
            alive: true,
            commit: 1,
            first_index: 1,
            log: vec![EntryView { term: 2, digest: 9 }],
            ..NodeView::default()
        };
        assert!(c
            .check(&[holder], &committed)
            .unwrap_err()
            .detail
            .contains("n2 committed"));
    }
}
