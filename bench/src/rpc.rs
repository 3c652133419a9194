//! `quasar-bench rpc` (issue #4).

use clap::Args;

/// Frame streaming and ping-pong over loopback TCP.
#[derive(Args, Debug, Clone)]
pub struct RpcArgs {}

pub fn run(_args: RpcArgs) -> anyhow::Result<()> {
    anyhow::bail!("`quasar-bench rpc` is not built yet (issue #4)")
}
