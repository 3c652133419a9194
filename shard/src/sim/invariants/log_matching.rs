//! Log matching (thesis fig. 3.2): if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index. Checked pairwise
//! over the indexes both nodes hold.

use super::{NodeView, Violation};

/// Stateless: compares the logs as they are now.
#[derive(Debug, Default)]
pub struct LogMatching;

impl LogMatching {
    /// Fails if two nodes agree on the term at some index but differ at or below it.
    pub fn check(&mut self, views: &[NodeView]) -> Result<(), Violation> {
        for (i, a) in views.iter().enumerate() {
            for b in &views[i + 1..] {
                check_pair(a, b)?;
            }
        }
        Ok(())
    }
}

fn check_pair(a: &NodeView, b: &NodeView) -> Result<(), Violation> {
    let lo = a.first_index.max(b.first_index);
    let hi = a.last_index().min(b.last_index());
    let mut matched_at: Option<u64> = None;
    let mut index = hi;
    while index >= lo && index > 0 {
        let (Some(x), Some(y)) = (a.entry(index), b.entry(index)) else {
            break;
        };
        if let Some(m) = matched_at {
            if x != y {
                return Err(Violation {
                    property: "log_matching",
                    detail: format!(
                        "n{} and n{} agree at index {m} but differ at {index}: {x:?} vs {y:?}",
                        a.id, b.id
                    ),
                });
            }
        } else if x.term == y.term {
            if x.digest != y.digest {
                return Err(Violation {
                    property: "log_matching",
                    detail: format!(
                        "n{} and n{} hold different entries with term {} at index {index}",
                        a.id, b.id, x.term
                    ),
                });
            }
            matched_at = Some(index);
        }
        index -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::EntryView;
    use super::*;

    fn node(id: u64, entries: &[(u64, u64)]) -> NodeView {
        NodeView {
            id,
            alive: true,
            first_index: 1,
            log: entries
                .iter()
                .map(|&(term, digest)| EntryView { term, digest })
                .collect(),
            ..NodeView::default()
        }
    }

    #[test]
    fn diverging_suffixes_are_fine_but_a_diverging_prefix_is_not() {
        let mut c = LogMatching;
        c.check(&[
            node(1, &[(1, 10), (1, 11), (2, 12)]),
            node(2, &[(1, 10), (1, 11), (3, 13)]),
        ])
        .unwrap();
        let v = c
            .check(&[
                node(1, &[(1, 10), (1, 11), (2, 12)]),
                node(2, &[(1, 10), (1, 99), (2, 12)]),
            ])
            .unwrap_err();
        assert!(v.detail.contains("agree at index 3 but differ at 2"));
        let v = c
            .check(&[node(1, &[(1, 10)]), node(2, &[(1, 11)])])
            .unwrap_err();
        assert!(v.detail.contains("different entries with term 1"));
    }
}
