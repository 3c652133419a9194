//! `SimDisk`: one node's durable Raft state as a crash would leave it. Every write is a
//! batch of operations (one WAL append: all-or-nothing, like a batch under one checksum)
//! queued after the last sync; `sync` makes every queued batch durable at once; `crash`
//! keeps the synced state plus a random *prefix* of the unsynced batches (an append-only
//! WAL can lose a suffix of unsynced records, never a record in the middle). It is
//! generic over the hard state `H`, the log entry `E` and the snapshot `S`, and knows
//! nothing of Raft beyond "entries are numbered from 1 and contiguous".

use std::fmt::Debug;

/// One queued write.
#[derive(Debug, Clone)]
pub enum DiskOp<H, E, S> {
    /// Replace the hard state (term, vote, commit).
    HardState(H),
    /// Write `entries` at `first` and onwards, dropping any entry at or after `first`.
    Append {
        /// Index of `entries[0]`.
        first: u64,
        /// The entries, contiguous.
        entries: Vec<E>,
    },
    /// Install a snapshot taken at `index`, replacing the whole log.
    InstallSnapshot {
        /// Last index the snapshot covers.
        index: u64,
        /// The snapshot itself.
        snapshot: S,
    },
    /// Record a locally taken snapshot at `index` and drop the entries up to it.
    Compact {
        /// Last index the snapshot covers.
        index: u64,
        /// The snapshot itself.
        snapshot: S,
    },
}

/// What is on the platter: the state a restart sees.
#[derive(Debug, Clone)]
pub struct DurableState<H, E, S> {
    /// The last hard state written, if any.
    pub hard_state: Option<H>,
    /// The latest snapshot and the index it covers.
    pub snapshot: Option<(u64, S)>,
    /// Index of `entries[0]` (snapshot index + 1, or 1).
    pub first_index: u64,
    /// The log after the snapshot, contiguous.
    pub entries: Vec<E>,
}

impl<H, E, S> Default for DurableState<H, E, S> {
    fn default() -> Self {
        DurableState {
            hard_state: None,
            snapshot: None,
            first_index: 1,
            entries: Vec::new(),
        }
    }
}

impl<H: Clone, E: Clone, S: Clone> DurableState<H, E, S> {
    /// Index of the last entry (or of the snapshot when the log after it is empty).
    #[must_use]
    pub fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }

    /// The entry at `index`, if stored.
    #[must_use]
    pub fn entry(&self, index: u64) -> Option<&E> {
        if index < self.first_index {
            return None;
        }
        self.entries
            .get(usize::try_from(index - self.first_index).ok()?)
    }

    fn apply(&mut self, op: DiskOp<H, E, S>) {
        match op {
            DiskOp::HardState(h) => self.hard_state = Some(h),
            DiskOp::Append { first, entries } => {
                assert!(
                    first >= self.first_index,
                    "append at {first} below the snapshot (log starts at {})",
                    self.first_index
                );
                assert!(
                    first <= self.last_index() + 1,
                    "append at {first} leaves a hole after last index {}",
                    self.last_index()
                );
                let keep = usize::try_from(first - self.first_index).unwrap_or(usize::MAX);
                self.entries.truncate(keep);
                self.entries.extend(entries);
            }
            DiskOp::InstallSnapshot { index, snapshot } => {
                self.snapshot = Some((index, snapshot));
                self.first_index = index + 1;
                self.entries.clear();
            }
            DiskOp::Compact { index, snapshot } => {
                if self.snapshot.as_ref().is_some_and(|(at, _)| *at >= index) {
                    return;
                }
                assert!(
                    index <= self.last_index(),
                    "compaction at {index} beyond the last index {}",
                    self.last_index()
                );
                let drop = usize::try_from(index + 1 - self.first_index).unwrap_or(0);
                self.entries.drain(..drop.min(self.entries.len()));
                self.first_index = index + 1;
                self.snapshot = Some((index, snapshot));
            }
        }
    }
}

/// One node's disk: the synced state plus the writes queued since the last sync.
#[derive(Debug, Clone)]
pub struct SimDisk<H, E, S> {
    synced: DurableState<H, E, S>,
    /// `synced` with every unsynced write applied: what the running process reads back.
    written: DurableState<H, E, S>,
    /// Written (visible to reads of this process) but not yet durable, batch by batch.
    unsynced: Vec<Vec<DiskOp<H, E, S>>>,
    syncs: u64,
}

impl<H, E, S> Default for SimDisk<H, E, S> {
    fn default() -> Self {
        SimDisk {
            synced: DurableState::default(),
            written: DurableState::default(),
            unsynced: Vec::new(),
            syncs: 0,
        }
    }
}

impl<H: Clone + Debug, E: Clone + Debug, S: Clone + Debug> SimDisk<H, E, S> {
    /// An empty disk.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a write; it survives a crash only once `sync` returns (or by luck).
    pub fn write(&mut self, op: DiskOp<H, E, S>) {
        self.write_batch(vec![op]);
    }

    /// Queues writes that reach the disk together or not at all.
    pub fn write_batch(&mut self, ops: Vec<DiskOp<H, E, S>>) {
        if ops.is_empty() {
            return;
        }
        for op in &ops {
            self.written.apply(op.clone());
        }
        self.unsynced.push(ops);
    }

    /// Whether writes are waiting for a sync.
    #[must_use]
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Makes every queued write durable.
    pub fn sync(&mut self) {
        for op in std::mem::take(&mut self.unsynced).into_iter().flatten() {
            self.synced.apply(op);
        }
        self.syncs += 1;
    }

    /// Number of completed syncs.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.syncs
    }

    /// The state including unsynced writes (what the running process reads back).
    #[must_use]
    pub fn written(&self) -> &DurableState<H, E, S> {
        &self.written
    }

    /// The durable state only.
    #[must_use]
    pub fn synced(&self) -> &DurableState<H, E, S> {
        &self.synced
    }

    /// Power loss: the first `surviving` unsynced batches reach the disk (clamped), the
    /// rest vanish. Returns the state a restart recovers.
    pub fn crash(&mut self, surviving: usize) -> DurableState<H, E, S> {
        let batches = std::mem::take(&mut self.unsynced);
        let keep = surviving.min(batches.len());
        for op in batches.into_iter().take(keep).flatten() {
            self.synced.apply(op);
        }
        self.written = self.synced.clone();
        self.synced.clone()
    }

    /// Number of unsynced batches (the upper bound for `crash`'s `surviving`).
    #[must_use]
    pub fn unsynced_len(&self) -> usize {
        self.unsynced.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Disk = SimDisk<u64, (u64, char), &'static str>;

    #[test]
    fn only_synced_writes_and_a_prefix_survive_a_crash() {
        let mut d = Disk::new();
        d.write(DiskOp::HardState(1));
        d.write(DiskOp::Append {
            first: 1,
            entries: vec![(1, 'a'), (1, 'b')],
        });
        d.sync();
        d.write(DiskOp::Append {
            first: 3,
            entries: vec![(1, 'c')],
        });
        d.write(DiskOp::HardState(2));
        assert_eq!(d.written().last_index(), 3);
        let after = d.crash(1);
        assert_eq!(after.last_index(), 3);
        assert_eq!(after.hard_state, Some(1));
        assert!(!d.has_unsynced());
    }

    #[test]
    fn append_overwrites_suffix_and_compaction_drops_prefix() {
        let mut d = Disk::new();
        d.write(DiskOp::Append {
            first: 1,
            entries: vec![(1, 'a'), (1, 'b'), (1, 'c')],
        });
        d.write(DiskOp::Append {
            first: 2,
            entries: vec![(2, 'x')],
        });
        d.write(DiskOp::Compact {
            index: 1,
            snapshot: "s1",
        });
        d.sync();
        let s = d.synced();
        assert_eq!((s.first_index, s.last_index()), (2, 2));
        assert_eq!(s.entry(2), Some(&(2, 'x')));
        assert_eq!(s.entry(1), None);
        d.write(DiskOp::InstallSnapshot {
            index: 10,
            snapshot: "s10",
        });
        assert_eq!(d.crash(0).last_index(), 2);
    }

    #[test]
    #[should_panic(expected = "leaves a hole")]
    fn a_hole_in_the_log_is_a_bug() {
        let mut d = Disk::new();
        d.write(DiskOp::Append {
            first: 3,
            entries: vec![(1, 'a')],
        });
        d.sync();
    }
}
