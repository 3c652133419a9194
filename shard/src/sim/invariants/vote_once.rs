//! A node never votes twice in a term (thesis §3.4, figure 3.2 "votedFor" persisted before
//! replying): every vote grant that leaves a node is recorded, and a second grant by the
//! same node in the same term to a different candidate fails, even across restarts. This
//! catches a lost vote before it has elected two leaders.

use std::collections::BTreeMap;

use super::Violation;

/// Vote grants seen on the wire: (voter, term) -> candidate.
#[derive(Debug, Default)]
pub struct VoteOnce {
    grants: BTreeMap<(u64, u64), u64>,
}

impl VoteOnce {
    /// Records that `voter` sent a vote grant for `candidate` in `term`.
    pub fn on_grant(&mut self, voter: u64, term: u64, candidate: u64) -> Result<(), Violation> {
        let first = *self.grants.entry((voter, term)).or_insert(candidate);
        if first != candidate {
            return Err(Violation {
                property: "vote_once",
                detail: format!("n{voter} voted for n{first} and for n{candidate} in term {term}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_vote_in_a_term_is_caught_a_repeated_one_is_not() {
        let mut c = VoteOnce::default();
        c.on_grant(1, 5, 2).unwrap();
        c.on_grant(1, 5, 2).unwrap();
        c.on_grant(1, 6, 3).unwrap();
        assert!(c
            .on_grant(1, 5, 3)
            .unwrap_err()
            .detail
            .contains("n1 voted for n2 and for n3"));
    }
}
