//! `quasar`: the Quasar storage node.
//!
//! The node (shards, ranges, cluster bootstrap, admin HTTP) is built in issue #5; until then
//! this binary only describes itself.

use clap::Parser;

/// Quasar: a thread-per-core, sharded Multi-Raft storage node.
///
/// The node itself is not built yet (issue #5): `quasar start` and `quasar demo` arrive with it.
#[derive(Parser, Debug)]
#[command(name = "quasar", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("the quasar node is not built yet (issue #5); see `quasar --help`")
}
