//! Commit never regresses: within one incarnation of a node (between restarts), its commit
//! index, applied index and term never go back, and applied never passes commit. A restart
//! may legitimately forget a volatile commit index; the committed entries themselves are
//! protected by `leader_completeness` and `no_acked_write_lost`.

use std::collections::BTreeMap;

use super::{NodeView, Violation};

/// Last (incarnation, term, commit, applied) seen per node.
#[derive(Debug, Default)]
pub struct CommitMonotonic {
    last: BTreeMap<u64, (u64, u64, u64, u64)>,
}

impl CommitMonotonic {
    /// Compares each live node with what it reported at the previous step.
    pub fn check(&mut self, views: &[NodeView]) -> Result<(), Violation> {
        for v in views.iter().filter(|v| v.alive) {
            let fail = |detail: String| {
                Err(Violation {
                    property: "commit_monotonic",
                    detail,
                })
            };
            if v.applied > v.commit {
                return fail(format!(
                    "n{} applied {} beyond commit {}",
                    v.id, v.applied, v.commit
                ));
            }
            if let Some(&(inc, term, commit, applied)) = self.last.get(&v.id) {
                if inc == v.incarnation {
                    if v.term < term {
                        return fail(format!("n{} term went back {term} -> {}", v.id, v.term));
                    }
                    if v.commit < commit {
                        return fail(format!(
                            "n{} commit went back {commit} -> {}",
                            v.id, v.commit
                        ));
                    }
                    if v.applied < applied {
                        return fail(format!(
                            "n{} applied went back {applied} -> {}",
                            v.id, v.applied
                        ));
                    }
                }
            }
            self.last
                .insert(v.id, (v.incarnation, v.term, v.commit, v.applied));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(incarnation: u64, commit: u64, applied: u64) -> NodeView {
        NodeView {
            id: 1,
            alive: true,
            incarnation,
            commit,
            applied,
            ..NodeView::default()
        }
    }

    #[test]
    fn regression_within_an_incarnation_is_caught_across_a_restart_is_not() {
        let mut c = CommitMonotonic::default();
        c.check(&[node(0, 5, 4)]).unwrap();
        c.check(&[node(1, 2, 2)]).unwrap();
        let v = c.check(&[node(1, 1, 1)]).unwrap_err();
        assert!(v.detail.contains("commit went back 2 -> 1"));
        assert!(c
            .check(&[node(2, 3, 4)])
            .unwrap_err()
            .detail
            .contains("beyond commit"));
    }
}
