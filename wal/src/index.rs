//! The in-memory index of one group's log: first/last index, the entry before the first
//! (snapshot or compaction point), hard state, and the runs of entries (one per `Entries`
//! record: segment, offset, first index, count), and the cache of where its most recent
//! entries lie (`cache::GroupCache`). The same code applies live operations and replays
//! records during recovery, so both agree by construction.

use std::collections::VecDeque;

use crate::cache::GroupCache;
use crate::segment::SegmentId;
use crate::{HardState, LogId, LogIndex, Term};

/// One `Entries` record (or the live part of it) of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: LogIndex,
    pub count: u32,
    /// Offset of the record header in its segment.
    pub offset: u32,
    pub segment: SegmentId,
}

impl Run {
    pub fn last(&self) -> LogIndex {
        LogIndex(self.first.0 + u64::from(self.count) - 1)
    }
}

/// Why an operation does not fit a group's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogOpError {
    #[error("entries start at {first} but the log ends at {last}: a gap")]
    Gap { first: LogIndex, last: LogIndex },
    #[error("index {index} is at or below the compaction point {base}")]
    BelowBase { index: LogIndex, base: LogIndex },
    #[error("cannot compact below {below}: the log ends at {last}")]
    CompactPastLast { below: LogIndex, last: LogIndex },
}

/// The log of one group.
///
/// Invariants: `base.index <= last`; runs are contiguous (`runs[i+1].first ==
/// runs[i].last() + 1`), cover at most `(base.index, last]` with the last run ending at
/// `last`, and their segments never decrease.
#[derive(Debug, Clone, Default)]
pub struct GroupLog {
    /// The entry just before the first one: the snapshot or compaction point.
    pub base: LogId,
    pub last: LogIndex,
    pub runs: VecDeque<Run>,
    pub hard_state: Option<HardState>,
    /// Segment of the latest hard-state record.
    pub hard_state_segment: Option<SegmentId>,
    /// Segment of the latest record that moved `base` (compact or snapshot mark).
    pub base_segment: Option<SegmentId>,
    /// Where the group's most recent entries lie (filled by `Wal::append`, never by
    /// recovery); every operation below applies to it too, so it stays part of the log.
    pub cache: GroupCache,
}

impl GroupLog {
    pub fn first(&self) -> LogIndex {
        LogIndex(self.base.index.0 + 1)
    }

    /// Checks that entries starting at `first` can be appended.
    pub fn check_append(base: LogIndex, last: LogIndex, first: LogIndex) -> Result<(), LogOpError> {
        if first.0 <= base.0 {
            return Err(LogOpError::BelowBase { index: first, base });
        }
        if first.0 > last.0 + 1 {
            return Err(LogOpError::Gap { first, last });
        }
        Ok(())
    }

    /// Appends a run; entries at `run.first` and after are replaced.
    pub fn append(&mut self, run: Run) -> Result<(), LogOpError> {
        Self::check_append(self.base.index, self.last, run.first)?;
        self.truncate_from(run.first)?;
        if let Some(back) = self.runs.back() {
            assert!(
                back.segment <= run.segment,
                "run segments go backwards: {back:?} then {run:?}"
            );
        }
        self.last = run.last();
        self.runs.push_back(run);
        Ok(())
    }

    /// Removes entries at `from` and after.
    pub fn truncate_from(&mut self, from: LogIndex) -> Result<(), LogOpError> {
        if from.0 <= self.base.index.0 {
            return Err(LogOpError::BelowBase {
                index: from,
                base: self.base.index,
            });
        }
        if from.0 > self.last.0 {
            return Ok(());
        }
        self.cache.truncate(from);
        while let Some(back) = self.runs.back_mut() {
            if back.first.0 >= from.0 {
                self.runs.pop_back();
            } else {
                if back.last().0 >= from.0 {
                    back.count = u32::try_from(from.0 - back.first.0).unwrap_or(u32::MAX);
                }
                // A run cut back to at or below the compaction point holds nothing live.
                if back.last().0 <= self.base.index.0 {
                    self.runs.pop_back();
                }
                break;
            }
        }
        self.last = LogIndex(from.0 - 1);
        Ok(())
    }

    /// Entries below `below` are no longer needed; `term` is the term of `below - 1`.
    pub fn compact(&mut self, below: LogIndex, term: Term, segment: SegmentId) {
        if below.0 <= self.first().0 {
            return;
        }
        self.base = LogId {
            index: LogIndex(below.0 - 1),
            term,
        };
        self.base_segment = Some(segment);
        self.cache.compact(below);
        while let Some(front) = self.runs.front() {
            if front.last().0 < below.0 {
                self.runs.pop_front();
            } else {
                break;
            }
        }
        if self.last.0 < self.base.index.0 {
            self.last = self.base.index;
        }
    }

    /// The log restarts after a snapshot at `at`.
    pub fn snapshot(&mut self, at: LogId, segment: SegmentId) {
        self.base = at;
        self.last = at.index;
        self.runs.clear();
        self.cache.clear();
        self.base_segment = Some(segment);
    }

    pub fn set_hard_state(&mut self, hs: HardState, segment: SegmentId) {
        self.hard_state = Some(hs);
        self.hard_state_segment = Some(segment);
    }

    /// The run holding `index`, if the index is live and stored in the log.
    pub fn run_of(&self, index: LogIndex) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.first.0 <= index.0);
        let run = self.runs.get(i.checked_sub(1)?)?;
        (index.0 <= run.last().0).then_some(run)
    }

    /// The oldest segment this group still needs.
    pub fn oldest_segment(&self) -> Option<SegmentId> {
        [
            self.runs.front().map(|r| r.segment),
            self.hard_state_segment,
            self.base_segment,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn check_invariants(&self) {
        assert!(
            self.base.index.0 <= self.last.0,
            "base {:?} past last {:?}",
            self.base,
            self.last
        );
        let mut expect = None;
        for r in &self.runs {
            assert!(r.count > 0, "empty run {r:?}");
            assert!(
                r.first.0 > self.base.index.0 || r.last().0 > self.base.index.0,
                "dead run {r:?}"
            );
            if let Some(e) = expect {
                assert_eq!(r.first, e, "runs not contiguous at {r:?}");
            }
            expect = Some(LogIndex(r.last().0 + 1));
        }
        if let Some(back) = self.runs.back() {
            assert_eq!(back.last(), self.last, "last run does not end at last");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: u64, count: u32, segment: u64) -> Run {
        Run {
            first: LogIndex(first),
            count,
            offset: 0,
            segment: SegmentId(segment),
        }
    }

    #[test]
    fn append_overwrites_a_suffix() {
        let mut g = GroupLog::default();
        g.append(run(1, 5, 1)).unwrap();
        g.append(run(6, 5, 1)).unwrap();
        g.append(run(4, 2, 2)).unwrap();
        assert_eq!(g.last, LogIndex(5));
        assert_eq!(g.runs.len(), 2);
        assert_eq!(g.runs[0].count, 3);
        assert_eq!(g.run_of(LogIndex(4)).unwrap().segment, SegmentId(2));
        assert_eq!(g.run_of(LogIndex(3)).unwrap().segment, SegmentId(1));
        assert!(g.run_of(LogIndex(6)).is_none());
        g.check_invariants();
    }

    #[test]
    fn gaps_and_writes_below_base_are_refused() {
        let mut g = GroupLog::default();
        assert_eq!(
            g.append(run(2, 1, 1)),
            Err(LogOpError::Gap {
                first: LogIndex(2),
                last: LogIndex(0)
            })
        );
        g.append(run(1, 10, 1)).unwrap();
        g.compact(LogIndex(5), Term(1), SegmentId(1));
        assert_eq!(g.first(), LogIndex(5));
        assert!(matches!(
            g.append(run(4, 1, 1)),
            Err(LogOpError::BelowBase { .. })
        ));
        assert!(matches!(
            g.truncate_from(LogIndex(3)),
            Err(LogOpError::BelowBase { .. })
        ));
    }

    #[test]
    fn compaction_drops_whole_runs_and_tracks_oldest_segment() {
        let mut g = GroupLog::default();
        g.append(run(1, 5, 1)).unwrap();
        g.append(run(6, 5, 2)).unwrap();
        g.set_hard_state(HardState::default(), SegmentId(2));
        assert_eq!(g.oldest_segment(), Some(SegmentId(1)));
        g.compact(LogIndex(7), Term(3), SegmentId(3));
        assert_eq!(g.runs.len(), 1);
        assert_eq!(
            g.base,
            LogId {
                index: LogIndex(6),
                term: Term(3)
            }
        );
        assert_eq!(g.oldest_segment(), Some(SegmentId(2)));
        g.snapshot(
            LogId {
                index: LogIndex(20),
                term: Term(4),
            },
            SegmentId(3),
        );
        assert_eq!((g.first(), g.last), (LogIndex(21), LogIndex(20)));
        g.check_invariants();
    }
}
