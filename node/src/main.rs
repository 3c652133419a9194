//! `quasar`: the Quasar storage node.
//!
//! - `quasar start ...`: run one node (see `quasar start --help`; every flag is also a
//!   `QUASAR_<FLAG>` environment variable and a key of `--config FILE.toml`);
//! - `quasar demo [--tls]`: a local 3-node cluster on loopback, for trying Quasar out;
//! - `quasar certs init|node|client`: a development CA and certificates for TLS.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use quasar_node::certs::CertsCommand;
use quasar_node::config::{NodeConfig, StartArgs};
use quasar_node::demo::{run_demo, DemoArgs};
use quasar_node::server::{run_node, stop_on_signals};

/// Quasar: a thread-per-core, sharded Multi-Raft storage node.
#[derive(Parser, Debug)]
#[command(name = "quasar", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Start(Box<StartArgs>),
    /// Run a local 3-node cluster on loopback until Ctrl-C.
    Demo(DemoArgs),
    /// Generate a development CA and node/client certificates (PEM) for TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: in a log file they are noise (and cost: a restart at
        // 100,000 ranges logs a line per election).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    let result = stop_on_signals(&stop).and_then(|()| match &cli.command {
        Command::Start(args) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cfg = NodeConfig::resolve(args, cores)?;
            quasar_wal::crash::setup();
            run_node(&cfg, stop)
        }
        Command::Demo(args) => run_demo(args, stop),
        Command::Certs { command } => quasar_node::certs::run(command),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quasar: {e:#}");
            ExitCode::FAILURE
        }
    }
}
