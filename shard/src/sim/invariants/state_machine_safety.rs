//! State machine safety (thesis fig. 3.2): if a node has applied an entry at an index, no
//! other node ever applies a different entry at that index. The runtime reports every
//! apply; snapshots installed are reported as "applied up to" and checked against what
//! was applied below them.

use std::collections::BTreeMap;

use super::{EntryView, Violation};

/// Every entry applied anywhere, by index.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<u64, (u64, EntryView)>,
}

impl StateMachineSafety {
    /// Records that node `node` applied `entry` at `index`.
    pub fn on_apply(&mut self, node: u64, index: u64, entry: EntryView) -> Result<(), Violation> {
        match self.applied.get(&index) {
            Some(&(first_node, first)) if first != entry => Err(Violation {
                property: "state_machine_safety",
                detail: format!(
                    "n{node} applied {entry:?} at index {index}, n{first_node} applied {first:?}"
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (node, entry));
                Ok(())
            }
        }
    }

    /// The entry applied at `index`, if any node applied one.
    #[must_use]
    pub fn applied(&self, index: u64) -> Option<EntryView> {
        self.applied.get(&index).map(|&(_, e)| e)
    }

    /// Highest index applied anywhere.
    #[must_use]
    pub fn max_applied(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_entries_applied_at_one_index_are_caught() {
        let mut c = StateMachineSafety::default();
        let a = EntryView { term: 1, digest: 5 };
        c.on_apply(1, 1, a).unwrap();
        c.on_apply(2, 1, a).unwrap();
        assert_eq!(c.applied(1), Some(a));
        let v = c
            .on_apply(3, 1, EntryView { term: 2, digest: 6 })
            .unwrap_err();
        assert!(v.detail.contains("n3 applied"));
    }
}
