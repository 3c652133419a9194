//! Space reclamation policy: which segments no group needs any more, and which cold
//! groups pin the oldest segment and should have their live records rewritten forward.
//! Pure functions over the index; `Wal::collect_garbage` (lib.rs) performs the I/O.
//!
//! A segment is dead once every group's oldest needed segment (its first run, its latest
//! hard state, its latest compaction or snapshot mark) is newer. Deleting it is safe only
//! once the records that moved those pins forward are durable, so a deletion decided at
//! appended position L waits until `durable_lsn >= L`.

use std::collections::HashMap;

use crate::index::GroupLog;
use crate::segment::SegmentId;
use crate::{GroupHasher, GroupId};

/// What one `collect_garbage` call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub segments_removed: Vec<SegmentId>,
    pub groups_rewritten: usize,
    pub bytes_rewritten: usize,
}

/// The oldest segment any group needs, or `active` if none needs an older one.
pub fn oldest_needed(
    groups: &HashMap<GroupId, GroupLog, GroupHasher>,
    active: SegmentId,
) -> SegmentId {
    groups
        .values()
        .filter_map(GroupLog::oldest_segment)
        .fold(active, SegmentId::min)
}

/// Groups that pin `segment` (their oldest needed segment is it or older), smallest first
/// by live entry count so the cheapest rewrites come first.
pub fn groups_pinning(
    groups: &HashMap<GroupId, GroupLog, GroupHasher>,
    segment: SegmentId,
) -> Vec<GroupId> {
    let mut out: Vec<(u64, GroupId)> = groups
        .iter()
        .filter(|(_, g)| g.oldest_segment().is_some_and(|s| s <= segment))
        .map(|(&id, g)| (g.last.0 - g.base.index.0, id))
        .collect();
    out.sort_unstable();
    out.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Run;
    use crate::LogIndex;

    #[test]
    fn the_oldest_pin_wins_and_pinning_groups_are_found() {
        let mut groups: HashMap<GroupId, GroupLog, GroupHasher> = HashMap::default();
        let mut hot = GroupLog::default();
        hot.append(Run {
            first: LogIndex(1),
            count: 1,
            offset: 0,
            segment: SegmentId(5),
        })
        .unwrap();
        let mut cold = GroupLog::default();
        cold.set_hard_state(crate::HardState::default(), SegmentId(2));
        groups.insert(GroupId(1), hot);
        groups.insert(GroupId(2), cold);
        assert_eq!(oldest_needed(&groups, SegmentId(6)), SegmentId(2));
        assert_eq!(groups_pinning(&groups, SegmentId(2)), vec![GroupId(2)]);
        assert_eq!(groups_pinning(&groups, SegmentId(1)), Vec::<GroupId>::new());
    }
}
