//! Model test: random appends, truncations, compactions, snapshot marks and hard states
//! across many groups on a `MemDisk`, with syncs, garbage collection and crashes at random
//! points; after every reopen each group must equal the model of some state between the
//! last completed sync and the last append (exactly the synced one when unsynced bytes are
//! dropped).

use std::collections::BTreeMap;

use futures_lite::future::block_on;
use proptest::prelude::*;
use quasar_wal::{Batch, Crash, GroupId, HardState, LogIndex, MemDisk, Term, Wal, WalConfig};

const GROUPS: u64 = 6;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupModel {
    base: (u64, u64),
    /// Entries after `base`: (term, payload).
    entries: Vec<(u64, Vec<u8>)>,
    hard_state: Option<(u64, u64, u64)>,
}

impl GroupModel {
    fn last(&self) -> u64 {
        self.base.0 + self.entries.len() as u64
    }
    fn term_at(&self, index: u64) -> u64 {
        if index == self.base.0 {
            self.base.1
        } else {
            self.entries[(index - self.base.0 - 1) as usize].0
        }
    }
}

type Model = BTreeMap<u64, GroupModel>;

#[derive(Debug, Clone)]
enum Step {
    Append {
        group: u64,
        back: u64,
        count: usize,
        len: usize,
        bump: bool,
    },
    Truncate {
        group: u64,
        back: u64,
    },
    Compact {
        group: u64,
        frac: u8,
    },
    Snapshot {
        group: u64,
        ahead: u64,
    },
    HardState {
        group: u64,
    },
    Multi {
        groups: Vec<u64>,
        len: usize,
    },
    Sync,
    Gc,
    /// `release_group_buffers`: the group's cache is dropped, its entries still read back.
    Release {
        group: u64,
    },
    Crash {
        how: u8,
        seed: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let g = 0..GROUPS;
    prop_oneof![
        6 => (g.clone(), 0u64..3, 1usize..5, 0usize..300, any::<bool>())
            .prop_map(|(group, back, count, len, bump)| Step::Append { group, back, count, len, bump }),
        1 => (g.clone(), 0u64..4).prop_map(|(group, back)| Step::Truncate { group, back }),
        1 => (g.clone(), any::<u8>()).prop_map(|(group, frac)| Step::Compact { group, frac }),
        1 => (g.clone(), 0u64..5).prop_map(|(group, ahead)| Step::Snapshot { group, ahead }),
        2 => g.clone().prop_map(|group| Step::HardState { group }),
        2 => (proptest::collection::vec(g.clone(), 1..6), 0usize..100).prop_map(|(groups, len)| Step::Multi { groups, len }),
        4 => Just(Step::Sync),
        2 => Just(Step::Gc),
        1 => g.prop_map(|group| Step::Release { group }),
        1 => (0u8..3, any::<u64>()).prop_map(|(how, seed)| Step::Crash { how, seed }),
    ]
}

fn config() -> WalConfig {
    WalConfig {
        segment_size_bytes: 8 << 10,
        prepared_segments: 1,
        cache_bytes: 1 << 10,
        max_old_segments: 2,
        rewrite_budget_bytes: 4 << 10,
        ..WalConfig::default()
    }
}

fn payload(group: u64, index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (group as usize * 31 + index as usize * 7 + i) as u8)
        .collect()
}

/// Applies a step to the model and builds the matching batch (None: nothing to do).
fn plan(model: &mut Model, step: &Step) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    match *step {
        Step::Append {
            group,
            back,
            count,
            len,
            bump,
        } => {
            let g = model.entry(group).or_default();
            let first = (g.last() + 1).saturating_sub(back).max(g.base.0 + 1);
            g.entries.truncate((first - g.base.0 - 1) as usize);
            let mut term = g.entries.last().map_or(g.base.1, |e| e.0).max(1);
            if bump {
                term += 1;
            }
            let new: Vec<(u64, Vec<u8>)> = (0..count as u64)
                .map(|i| (term, payload(group, first + i, len)))
                .collect();
            g.entries.extend(new.iter().cloned());
            ops.push(Op::Entries(group, first, new));
        }
        Step::Multi { ref groups, len } => {
            for &group in groups {
                let g = model.entry(group).or_default();
                let first = g.last() + 1;
                let term = g.entries.last().map_or(g.base.1, |e| e.0).max(1);
                let e = (term, payload(group, first, len));
                g.entries.push(e.clone());
                ops.push(Op::Entries(group, first, vec![e]));
            }
        }
        Step::Truncate { group, back } => {
            let g = model.entry(group).or_default();
            let from = (g.last() + 1).saturating_sub(back).max(g.base.0 + 1);
            g.entries.truncate((from - g.base.0 - 1) as usize);
            ops.push(Op::Truncate(group, from));
        }
        Step::Compact { group, frac } => {
            let g = model.entry(group).or_default();
            let span = g.last() + 1 - (g.base.0 + 1);
            let below = g.base.0 + 1 + span * u64::from(frac) / 255;
            if below > g.base.0 + 1 {
                let term = g.term_at(below - 1);
                g.entries.drain(..(below - g.base.0 - 1) as usize);
                g.base = (below - 1, term);
            }
            ops.push(Op::Compact(group, below));
        }
        Step::Snapshot { group, ahead } => {
            let g = model.entry(group).or_default();
            let index = g.last() + ahead;
            if index == 0 {
                return None;
            }
            let term = g.entries.last().map_or(g.base.1, |e| e.0).max(1);
            g.entries.clear();
            g.base = (index, term);
            ops.push(Op::Snapshot(group, index, term));
        }
        Step::HardState { group } => {
            let g = model.entry(group).or_default();
            let hs = (g.entries.last().map_or(1, |e| e.0), group + 1, g.last() / 2);
            g.hard_state = Some(hs);
            ops.push(Op::HardState(group, hs));
        }
        Step::Sync | Step::Gc | Step::Release { .. } | Step::Crash { .. } => return None,
    }
    Some(ops)
}

#[derive(Debug)]
enum Op {
    Entries(u64, u64, Vec<(u64, Vec<u8>)>),
    Truncate(u64, u64),
    Compact(u64, u64),
    Snapshot(u64, u64, u64),
    HardState(u64, (u64, u64, u64)),
}

fn to_batch(ops: &[Op]) -> Batch<'_> {
    let mut b = Batch::with_capacity(8);
    for op in ops {
        match op {
            Op::Entries(g, first, es) => {
                b.entries(
                    GroupId(*g),
                    LogIndex(*first),
                    es.iter().map(|(t, p)| (Term(*t), p.as_slice())),
                );
            }
            Op::Truncate(g, from) => {
                b.truncate_suffix(GroupId(*g), LogIndex(*from));
            }
            Op::Compact(g, below) => {
                b.compact(GroupId(*g), LogIndex(*below));
            }
            Op::Snapshot(g, i, t) => {
                b.snapshot_mark(GroupId(*g), LogIndex(*i), Term(*t));
            }
            Op::HardState(g, (t, v, c)) => {
                b.hard_state(
                    GroupId(*g),
                    HardState {
                        term: Term(*t),
                        vote: *v,
                        commit: LogIndex(*c),
                    },
                );
            }
        }
    }
    b
}

/// The WAL's view of every group, in the model's shape.
fn observe(wal: &Wal<MemDisk>) -> Model {
    let mut out = Model::new();
    for group in 0..GROUPS {
        let id = GroupId(group);
        let first = wal.first_index(id);
        let last = wal.last_index(id);
        let base = wal.base(id);
        assert_eq!(base.index.0 + 1, first.0);
        let mut entries = Vec::new();
        wal.entries(id, first..LogIndex(last.0 + 1), &mut entries)
            .expect("live entries read back");
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(e.index.0, first.0 + k as u64);
            assert_eq!(wal.term(id, e.index).expect("term of a live entry"), e.term);
        }
        let g = GroupModel {
            base: (base.index.0, base.term.0),
            entries: entries.into_iter().map(|e| (e.term.0, e.payload)).collect(),
            hard_state: wal.hard_state(id).map(|h| (h.term.0, h.vote, h.commit.0)),
        };
        if g != GroupModel::default() {
            out.insert(group, g);
        }
    }
    out
}

fn normalize(model: &Model) -> Model {
    model
        .iter()
        .filter(|(_, g)| **g != GroupModel::default())
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovered_groups_match_the_synced_model(steps in proptest::collection::vec(step(), 1..80)) {
        let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
        // States after each append since the last completed sync; [0] is the synced one.
        let mut model = Model::new();
        let mut since_sync: Vec<Model> = vec![Model::new()];
        for step in &steps {
            match step {
                Step::Sync => {
                    block_on(wal.sync()).unwrap();
                    since_sync = vec![model.clone()];
                }
                Step::Gc => {
                    wal.collect_garbage().unwrap();
                    wal.check_invariants();
                    prop_assert_eq!(observe(&wal), normalize(&model));
                }
                Step::Release { group } => {
                    wal.release_group_buffers(GroupId(*group));
                    wal.check_invariants();
                    prop_assert_eq!(observe(&wal), normalize(&model));
                }
                Step::Crash { how, seed } => {
                    let how = match how {
                        0 => Crash::DropUnsynced,
                        1 => Crash::RandomSectors { seed: *seed },
                        _ => Crash::TearUnsynced { keep_bytes: (*seed % 4096) as usize },
                    };
                    let disk = wal.into_disk().crash(how);
                    // The parallel recovery (verify every segment, then replay by group
                    // share) must find exactly what the one-pass scan finds.
                    let parallel = Wal::open(
                        disk.clone(),
                        WalConfig { recovery_threads: 3, ..config() },
                    )
                    .unwrap();
                    wal = Wal::open(disk, WalConfig { recovery_threads: 1, ..config() }).unwrap();
                    wal.check_invariants();
                    let got = observe(&wal);
                    prop_assert_eq!(observe(&parallel), got.clone());
                    prop_assert_eq!(
                        format!("{:?}", parallel.recovery_report()),
                        format!("{:?}", wal.recovery_report())
                    );
                    let candidates: Vec<Model> = match how {
                        Crash::DropUnsynced => vec![normalize(&since_sync[0])],
                        _ => since_sync.iter().map(normalize).collect(),
                    };
                    let found = candidates.iter().position(|c| *c == got);
                    prop_assert!(found.is_some(), "recovered {got:?}\nnone of {candidates:?}");
                    let k = found.unwrap_or(0);
                    model = since_sync[k].clone();
                    since_sync = vec![model.clone()];
                }
                _ => {
                    let Some(ops) = plan(&mut model, step) else { continue };
                    let batch = to_batch(&ops);
                    wal.append(&batch).unwrap();
                    since_sync.push(model.clone());
                }
            }
        }
        wal.check_invariants();
        prop_assert_eq!(observe(&wal), normalize(&model));
    }
}

#[test]
fn cold_group_is_rewritten_and_old_segments_are_deleted() {
    let mut wal = Wal::open(MemDisk::new(), config()).unwrap();
    let cold = GroupId(1);
    let hot = GroupId(2);
    let mut b = Batch::with_capacity(1);
    b.entries(cold, LogIndex(1), [(Term(1), &b"cold entry"[..])]);
    b.hard_state(
        cold,
        HardState {
            term: Term(1),
            vote: 1,
            commit: LogIndex(1),
        },
    );
    wal.append(&b).unwrap();
    let payload = vec![7u8; 500];
    for i in 1..=200u64 {
        let mut b = Batch::with_capacity(1);
        b.entries(hot, LogIndex(i), [(Term(1), payload.as_slice())]);
        if i > 2 {
            b.compact(hot, LogIndex(i - 1));
        }
        wal.append(&b).unwrap();
        block_on(wal.sync()).unwrap();
        wal.collect_garbage().unwrap();
        wal.check_invariants();
    }
    let segments = wal.disk().segment_ids().len();
    // 200 x ~560 bytes = ~110 KiB written into 8 KiB segments: without reclamation there
    // would be ~14 segments.
    assert!(
        segments <= config().max_old_segments + 4,
        "{segments} segments kept"
    );
    let disk = wal.into_disk().crash(Crash::DropUnsynced);
    let wal = Wal::open(disk, config()).unwrap();
    let mut out = Vec::new();
    wal.entries(cold, LogIndex(1)..LogIndex(2), &mut out)
        .unwrap();
    assert_eq!(out[0].payload, b"cold entry");
    assert_eq!(wal.hard_state(cold).unwrap().commit, LogIndex(1));
    assert_eq!(wal.last_index(hot), LogIndex(200));
}
