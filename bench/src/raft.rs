//! `quasar-bench raft`: committed entries per second through the pure Raft core.
//!
//! N `RaftNode`s run in this one thread with in-memory delivery; node 1 leads. Every loop
//! turn the leader gets a batch of proposals (one shared `Bytes` payload: the core never
//! copies it), then every node does its `Ready` (entries "persisted" at once, messages
//! queued for delivery, committed entries applied) and `advance`s with the Ready's own
//! buffers, then every queued message is stepped. Acknowledgements flow back while new
//! batches go out (pipelining, bounded by the in-flight window). An entry counts when the
//! leader applies it: propose -> append -> ack -> commit -> apply. Logs are compacted as
//! they are applied, so memory stays flat.
//!
//! Allocations are counted by the process-wide counting allocator (`alloc_count`) over the
//! measured span only (after a warm-up that grows every buffer to its steady size).

use crate::alloc_count::AllocCounter;
use crate::report::Report;
use bytes::Bytes;
use clap::Args;
use quasar_shard::raft::{ConfState, Config, Message, NodeId, RaftNode, Restored, Role};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Committed entries per second through the pure Raft core.
#[derive(Args, Debug, Clone, Serialize)]
pub struct RaftArgs {
    /// Nodes in the group (all in this thread).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Bytes of each proposed command.
    #[arg(long, default_value_t = 128)]
    pub payload_bytes: usize,
    /// Measured seconds (after a warm-up of a tenth of it, at least 0.2 s).
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Proposals per loop turn.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Most entries in one append message.
    #[arg(long, default_value_t = 4096)]
    pub max_entries_per_msg: usize,
    /// Appends in flight per follower.
    #[arg(long, default_value_t = 64)]
    pub max_inflight_msgs: usize,
    /// `shared`: one heap `Bytes` shared by every entry (each clone is an atomic
    /// reference count, as with payloads cut from a receive buffer); `static`: a
    /// `Bytes::from_static` payload (clones are free), to see the core's own cost.
    #[arg(long, value_enum, default_value_t = PayloadKind::Shared)]
    pub payload: PayloadKind,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// How the proposed payload is held (see `--payload`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    Shared,
    Static,
}

struct Group {
    nodes: Vec<RaftNode>,
    /// Messages waiting for delivery, per destination (index = id - 1).
    inbox: Vec<VecDeque<Message>>,
    applied_by_leader: u64,
    /// Spare queue swapped with an inbox while it is drained (no allocation per turn).
    draining: VecDeque<Message>,
}

impl Group {
    fn new(args: &RaftArgs) -> anyhow::Result<Group> {
        let voters = ConfState::with_voters((1..=args.nodes).map(NodeId));
        let mut nodes = Vec::new();
        for id in 1..=args.nodes {
            let cfg = Config {
                max_entries_per_msg: args.max_entries_per_msg,
                max_bytes_per_msg: 64 << 20,
                max_inflight_msgs: args.max_inflight_msgs,
                ..Config::new(NodeId(id))
            };
            nodes.push(RaftNode::new(
                &cfg,
                Restored::new_group(voters.clone()),
                id,
            )?);
        }
        let inbox = (0..args.nodes)
            .map(|_| VecDeque::with_capacity(1024))
            .collect();
        Ok(Group {
            nodes,
            inbox,
            applied_by_leader: 0,
            draining: VecDeque::with_capacity(1024),
        })
    }

    /// Every node does its Ready once; returns whether anything happened.
    fn process_readies(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.nodes.len() {
            let Some(mut rd) = self.nodes[i].ready() else {
                continue;
            };
            moved = true;
            // "Persist" (the core keeps the log in memory), send, then the sync is instant.
            for m in rd.send_now.drain(..).chain(rd.send_after_sync.drain(..)) {
                let to = (m.to.0 - 1) as usize;
                self.inbox[to].push_back(m);
            }
            if i == 0 {
                self.applied_by_leader += rd.apply.len() as u64;
            }
            // `done` reads the last appended/applied ids before handing the buffers back.
            let done = rd.done();
            self.nodes[i].advance(done);
        }
        moved
    }

    fn deliver(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.nodes.len() {
            std::mem::swap(&mut self.inbox[i], &mut self.draining);
            while let Some(m) = self.draining.pop_front() {
                moved = true;
                if let Err(e) = self.nodes[i].step(m) {
                    panic!("bench message refused: {e}");
                }
            }
        }
        moved
    }

    fn compact(&mut self) {
        for n in &mut self.nodes {
            let applied = n.applied();
            if applied.0 >= n.first_index().0 + 65_536 {
                // Ignored result: a node may lag; it is compacted on a later turn.
                let _ = n.compact(applied);
            }
        }
    }
}

fn thread_cpu_ns() -> Option<u64> {
    // 10 ms resolution (Linux's USER_HZ ticks in /proc), fine over a run of seconds.
    quasar_shard::cpu::this_thread().map(|t| t.total_micros() * 1000)
}

pub fn run(args: RaftArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let mut g = Group::new(&args)?;
    g.nodes[0].campaign();
    for _ in 0..100 {
        g.process_readies();
        g.deliver();
    }
    anyhow::ensure!(
        g.nodes[0].role() == Role::Leader,
        "node 1 did not become leader"
    );
    let payload = match args.payload {
        // A clone of a `Bytes` made from a Vec is in the shared (reference-counted) form,
        // like a slice of a receive buffer.
        PayloadKind::Shared => Bytes::from(vec![0xABu8; args.payload_bytes]).clone(),
        PayloadKind::Static => {
            let leaked: &'static [u8] =
                Box::leak(vec![0xABu8; args.payload_bytes].into_boxed_slice());
            Bytes::from_static(leaked)
        }
    };
    // Keep at most this many proposed-but-uncommitted entries (the window does the rest).
    let max_uncommitted = (args.batch * 8) as u64;

    let turn = |g: &mut Group| {
        let leader = &mut g.nodes[0];
        if leader.last_id().index.0 - leader.commit().0 < max_uncommitted {
            for _ in 0..args.batch {
                if let Err(e) = leader.propose(payload.clone()) {
                    panic!("proposal refused: {e}");
                }
            }
        }
        g.process_readies();
        g.deliver();
        g.compact();
    };

    let warmup = Duration::from_secs_f64((args.duration_secs / 10.0).max(0.2));
    let start = Instant::now();
    while start.elapsed() < warmup {
        turn(&mut g);
    }
    let applied0 = g.applied_by_leader;
    let cpu0 = thread_cpu_ns();
    let allocs = AllocCounter::start();
    let start = Instant::now();
    let measure = Duration::from_secs_f64(args.duration_secs);
    let mut turns = 0u64;
    while start.elapsed() < measure {
        for _ in 0..16 {
            turn(&mut g);
        }
        turns += 16;
    }
    let wall = start.elapsed();
    let delta = allocs.delta();
    let cpu_ns = thread_cpu_ns().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
    let entries = g.applied_by_leader - applied0;
    anyhow::ensure!(entries > 0, "nothing committed");
    let entries_per_sec = entries as f64 / wall.as_secs_f64();
    let mut report = Report::new("raft", &args);
    report
        .figure("entries", entries)
        .figure("turns", turns)
        .figure("entries_per_sec", entries_per_sec.round())
        .figure(
            "ns_per_entry",
            (wall.as_nanos() as f64 / entries as f64 * 10.0).round() / 10.0,
        )
        .figure(
            "cpu_ns_per_entry",
            cpu_ns.map(|c| (c as f64 / entries as f64 * 10.0).round() / 10.0),
        )
        .figure(
            "allocs_per_entry",
            delta.allocations as f64 / entries as f64,
        )
        .figure(
            "alloc_bytes_per_entry",
            delta.bytes_allocated as f64 / entries as f64,
        )
        .figure("leader_commit", g.nodes[0].commit().0);
    report.print(args.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "benchmark:" smoke test: the loop the benchmark times commits every proposal on
    /// every node (no assertion on time).
    #[test]
    fn benchmark_raft_smoke_commits_everything() {
        let args = RaftArgs {
            nodes: 3,
            payload_bytes: 16,
            duration_secs: 0.0,
            batch: 64,
            max_entries_per_msg: 100,
            max_inflight_msgs: 4,
            payload: PayloadKind::Shared,
            json: false,
        };
        let mut g = Group::new(&args).unwrap();
        g.nodes[0].campaign();
        for _ in 0..100 {
            g.process_readies();
            g.deliver();
        }
        assert_eq!(g.nodes[0].role(), Role::Leader);
        let payload = Bytes::from_static(b"0123456789abcdef");
        for _ in 0..50 {
            for _ in 0..args.batch {
                g.nodes[0].propose(payload.clone()).unwrap();
            }
            g.process_readies();
            g.deliver();
            g.compact();
        }
        while g.process_readies() | g.deliver() {}
        let last = g.nodes[0].last_id().index;
        assert_eq!(last.0, 1 + 50 * 64, "no-op plus every proposal");
        for n in &g.nodes {
            assert_eq!(n.commit(), last);
            assert_eq!(n.applied(), last);
        }
        assert_eq!(g.applied_by_leader, last.0);
    }
}
