//! `quasar-bench raft` (issue #3).

use clap::Args;

/// Committed entries per second through the pure Raft core.
#[derive(Args, Debug, Clone)]
pub struct RaftArgs {}

pub fn run(_args: RaftArgs) -> anyhow::Result<()> {
    anyhow::bail!("`quasar-bench raft` is not built yet (issue #3)")
}
