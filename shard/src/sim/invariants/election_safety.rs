//! Election safety (thesis fig. 3.2): at most one leader can be elected in a given term.
//! Remembers, for every term, the first node seen leading it.

use std::collections::BTreeMap;

use super::{NodeView, Violation};

/// Leaders seen per term over the whole run.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, u64>,
}

impl ElectionSafety {
    /// Records the current leaders; fails if a term has had two.
    pub fn check(&mut self, views: &[NodeView]) -> Result<(), Violation> {
        for v in views.iter().filter(|v| v.alive && v.is_leader) {
            let first = *self.leaders.entry(v.term).or_insert(v.id);
            if first != v.id {
                return Err(Violation {
                    property: "election_safety",
                    detail: format!("term {} has two leaders: n{first} and n{}", v.term, v.id),
                });
            }
        }
        Ok(())
    }

    /// Number of terms that had a leader.
    #[must_use]
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(id: u64, term: u64) -> NodeView {
        NodeView {
            id,
            alive: true,
            is_leader: true,
            term,
            first_index: 1,
            ..NodeView::default()
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught_even_at_different_steps() {
        let mut c = ElectionSafety::default();
        c.check(&[leader(1, 2)]).unwrap();
        c.check(&[leader(2, 3)]).unwrap();
        let v = c.check(&[leader(3, 2)]).unwrap_err();
        assert!(v.detail.contains("term 2 has two leaders"));
    }
}
