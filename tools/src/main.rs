//! `quasarctl`: the Quasar operator CLI.
//!
//! Key, range and member commands arrive with the node (issues #5 and #6); until then this
//! binary only describes itself.

use clap::Parser;

/// quasarctl: operate a Quasar cluster (keys, ranges, members, WAL inspection).
#[derive(Parser, Debug)]
#[command(name = "quasarctl", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("quasarctl commands are not built yet (issues #5, #6); see `quasarctl --help`")
}
