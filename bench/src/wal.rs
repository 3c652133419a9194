//! `quasar-bench wal` and `quasar-bench wal-recover` (issue #2).

use clap::Args;

/// Group-commit throughput of one shard's WAL.
#[derive(Args, Debug, Clone)]
pub struct WalArgs {}

/// Reopen time of a WAL holding about `--gib` GiB.
#[derive(Args, Debug, Clone)]
pub struct WalRecoverArgs {}

pub fn run(_args: WalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`quasar-bench wal` is not built yet (issue #2)")
}

pub fn run_recover(_args: WalRecoverArgs) -> anyhow::Result<()> {
    anyhow::bail!("`quasar-bench wal-recover` is not built yet (issue #2)")
}
