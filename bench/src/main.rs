//! `quasar-bench`: programs that print figures. One module per subcommand; `report` holds
//! the shared header, percentile and JSON output.

use clap::{Parser, Subcommand};

mod alloc_count;
mod cpu;
mod failover;
mod fsmeta;
mod hdrlog;
mod kv;
mod nemesis;
mod plot;
mod raft;
mod ranges;
mod report;
mod rpc;
mod target;
mod wal;
mod workload;

/// quasar-bench: load generator and micro-benchmarks for Quasar. Prints figures (one JSON
/// line with `--json`); never asserts on them.
#[derive(Parser, Debug)]
#[command(name = "quasar-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Group-commit throughput and latency of one shard's write-ahead log.
    Wal(wal::WalArgs),
    /// Reopen (recovery) time of a write-ahead log holding about a GiB.
    WalRecover(wal::WalRecoverArgs),
    /// Committed entries/s through the pure Raft core (in-memory delivery, one thread).
    Raft(raft::RaftArgs),
    /// Frame streaming and ping-pong between two executors over loopback TCP.
    Rpc(rpc::RpcArgs),
    /// mdtest-like filesystem metadata workload (create, stat, readdir, rename, unlink).
    Fsmeta(fsmeta::FsmetaArgs),
    /// Client-observed unavailability when the leader is killed (spawned clusters only).
    Failover(failover::FailoverArgs),
    /// Cluster load generator: closed or open loop, YCSB presets, HdrHistogram logs, plots.
    Kv(kv::KvArgs),
    /// Split and merge latency under a light write load (needs range split, issue #6).
    Ranges(ranges::RangesArgs),
    /// Faults on real processes (kill -9, pauses, partitions) with a checked client history.
    Nemesis(nemesis::NemesisArgs),
    /// Add interval HdrHistogram logs of `kv --hdr-log` and print one summary.
    Merge(hdrlog::MergeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Wal(args) => wal::run(args),
        Command::WalRecover(args) => wal::run_recover(args),
        Command::Raft(args) => raft::run(args),
        Command::Rpc(args) => rpc::run(args),
        Command::Fsmeta(args) => fsmeta::run(args),
        Command::Failover(args) => failover::run(args),
        Command::Kv(args) => kv::run(args),
        Command::Merge(args) => hdrlog::run(args),
        Command::Ranges(args) => ranges::run(args),
        Command::Nemesis(args) => nemesis::run(args),
    }
}
