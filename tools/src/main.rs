//! `quasarctl`: the Quasar operator CLI.
//!
//! Built so far: `quasarctl wal check|dump`, offline inspection of a shard's write-ahead log
//! directory. Key, range and member commands arrive with the node (issues #5 and #6).
//!
//! Exit status: 0 success (a sound log), 1 damaged data found, 2 the command could not run
//! (bad flags, unreadable directory); the reason is printed on one line.

use clap::{Parser, Subcommand};

mod wal;

/// quasarctl: operate a Quasar cluster (keys, ranges and members arrive with issues #5/#6;
/// WAL inspection works today).
#[derive(Parser, Debug)]
#[command(name = "quasarctl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect a shard's write-ahead log directory offline (read-only).
    #[command(subcommand)]
    Wal(wal::WalCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Wal(wal::WalCommand::Check(args)) => wal::check(args),
        Command::Wal(wal::WalCommand::Dump(args)) => wal::dump(args),
    };
    match result {
        Ok(wal::Verdict::Sound) => {}
        Ok(wal::Verdict::Damaged) => std::process::exit(1),
        Err(e) => {
            eprintln!("quasarctl: {e:#}");
            std::process::exit(2);
        }
    }
}
