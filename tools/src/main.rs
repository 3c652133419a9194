//! `quasarctl`: the Quasar operator CLI.
//!
//! Online commands (they talk the rpc protocol to a running cluster):
//!
//! - `quasarctl kv get KEY`, `kv put KEY VALUE`, `kv delete KEY`, `kv incr KEY [--by N]`;
//! - `quasarctl kv scan [START] [END] [--limit N] [--page-size N] [--include-system]`: keys in
//!   order, page by page (following each page's resume key and each range's end);
//! - `quasarctl kv cas KEY NEW_VALUE --expect-version V | --expect-value X | --expect-absent`;
//! - `quasarctl kv txn --if 'KEY = VALUE' --if 'KEY version > N' --then put:K:V --then del:K
//!   --else get:K`: one atomic transaction (compares `=`, `!=`, `<`, `>` on the value or on
//!   `version`; ops `put:K:V`, `del:K`, `get:K`, each flag repeatable);
//! - `quasarctl status`: every member's `Status` (node, address, shards, groups, leaders,
//!   uptime) and the range table (`ListRanges`).
//! - `quasarctl range list` (`-o json`: an array of `{id, group, start, end, epoch,
//!   replicas: [{node, role}], leader, commit}`), `range show ID`;
//! - `quasarctl range split ID --at KEY` or `range split --key KEY` (the range holding KEY,
//!   at KEY), `range merge LEFT_ID` (with the range right after it; its leadership moves to
//!   the left range's leader first when they differ), `range move ID --from NODE --to NODE`
//!   (learner, catch-up by snapshot, joint consensus, the old copy deleted),
//!   `range transfer-leader ID --to NODE`.
//!   Each prints its plan and predicted result; `--dry-run` stops there and changes
//!   nothing; `--yes` skips the confirmation and is required when stdin is not a terminal.
//!   Changes go to the range's leader and name the epoch shown in the plan, so a range that
//!   changed in between is refused, never changed blindly (`range.rs`);
//! - `quasarctl node list`: the members (id, address, state) and whether each answers.
//!
//! Global flags: `--endpoints HOST:PORT[,...]` (env `QUASAR_ENDPOINTS`, default
//! `127.0.0.1:7100`: shard-0 addresses of any nodes, whose ids need not be known),
//! `--cluster-id NAME` (env `QUASAR_CLUSTER_ID`, default `quasar`), `-o table|json`,
//! `--timeout SECS` (per attempt: connecting and waiting for one answer). The cluster's
//! members and shard count are discovered from the first endpoint that answers
//! (`cluster.rs`). Keys and values are UTF-8 arguments; tables print bytes with
//! `escape_ascii`, JSON prints UTF-8 text as is and anything else escaped the same way.
//!
//! Offline: `quasarctl wal check|dump`, inspection of a shard's write-ahead log directory.
//!
//! Exit status: 0 success; 1 a negative answer (`kv get` of a missing key, a CAS or txn whose
//! condition did not hold, `status` or `node list` with an unreachable member, `wal check` of
//! a damaged log, a refused range change: stale epoch, the server's refusal, a bad split key,
//! a change in progress, a confirmation not given; the refusal on one line of stderr:
//! `quasarctl: <reason>`); 2 the command could not run (bad flags, a change from a script
//! without `--yes`, no endpoint answered, a request failed), with the reason on one line of
//! stderr: `quasarctl: <reason>`.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod cluster;
mod kv;
mod range;
mod status;
mod wal;

pub use wal::Output;

/// quasarctl: operate a Quasar cluster (keys, status) and inspect WAL directories.
#[derive(Parser, Debug)]
#[command(name = "quasarctl", version, about, long_about = None)]
struct Cli {
    /// Shard-0 addresses (HOST:PORT) of one or more nodes, comma-separated.
    #[arg(
        long,
        global = true,
        env = "QUASAR_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7100"
    )]
    endpoints: Vec<String>,
    /// The cluster's name (as given to `quasar start --cluster-id`).
    #[arg(
        long = "cluster-id",
        global = true,
        env = "QUASAR_CLUSTER_ID",
        default_value = "quasar"
    )]
    cluster_id: String,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// Seconds one attempt may take (connect, send, answer).
    #[arg(long, global = true, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// The cluster CA (PEM): talk TLS and check the nodes' certificates against it.
    // NOTE: the TLS flags go before the subcommand (not `global`): `range split` has a
    // `--key` of its own, and `kv get KEY` an argument with the id `key`.
    #[arg(long = "cacert", env = "QUASAR_CACERT", value_name = "FILE.pem")]
    tls_cacert: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for mutual TLS (with --key).
    #[arg(long = "cert", env = "QUASAR_CERT", value_name = "FILE.pem")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long = "key", env = "QUASAR_KEY", value_name = "FILE.key")]
    tls_key: Option<std::path::PathBuf>,
    /// A bearer token configured on the nodes (`[[auth.tokens]]`); prefer the environment
    /// variable, which stays out of the process list.
    #[arg(
        long = "token",
        env = "QUASAR_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    auth_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read and write keys.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Members' status and the range table.
    Status,
    /// List, show, split, merge ranges and move their leadership.
    #[command(subcommand)]
    Range(range::RangeCommand),
    /// The cluster's members.
    #[command(subcommand)]
    Node(range::NodeCommand),
    /// Inspect a shard's write-ahead log directory offline (read-only).
    #[command(subcommand)]
    Wal(wal::WalCommand),
}

/// How a command that ran ended: the exit status tells scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: a negative answer (missing key, condition failed, damaged log).
    Negative,
}

/// A definite "no" from the cluster (a refused range change): exit 1, the reason on one
/// line of stderr.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// What an online command prints on stdout, and how it ended.
pub struct Report {
    pub text: String,
    pub outcome: Outcome,
}

impl Report {
    pub fn new(text: String, outcome: Outcome) -> Report {
        Report { text, outcome }
    }
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("quasarctl: internal error: {}{at}", one_line(&msg));
        std::process::exit(2);
    }));
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Wal(wal::WalCommand::Check(args)) => wal::check(args).map(|v| match v {
            wal::Verdict::Sound => Outcome::Success,
            wal::Verdict::Damaged => Outcome::Negative,
        }),
        Command::Wal(wal::WalCommand::Dump(args)) => wal::dump(args).map(|_| Outcome::Success),
        Command::Kv(cmd) => online(&cli, |c| kv::run(c, cmd, cli.output)),
        Command::Status => online(&cli, |c| status::run(c, cli.output)),
        Command::Range(cmd) => match cmd.change().map(range::check_confirmation) {
            Some(Err(e)) => Err(e),
            _ => online(&cli, |c| range::run(c, cmd, cli.output)),
        },
        Command::Node(range::NodeCommand::List) => {
            online(&cli, |c| range::node_list(c, cli.output))
        }
    };
    match result {
        Ok(Outcome::Success) => {}
        Ok(Outcome::Negative) => std::process::exit(1),
        Err(e) if e.downcast_ref::<Refusal>().is_some() => {
            eprintln!("quasarctl: {}", one_line(&e.to_string()));
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("quasarctl: {}", one_line(&format!("{e:#}")));
            std::process::exit(2);
        }
    }
}

/// Discovers the cluster, runs `f`, and prints its report.
fn online(
    cli: &Cli,
    f: impl FnOnce(&mut cluster::Cluster) -> anyhow::Result<Report>,
) -> anyhow::Result<Outcome> {
    let options = cluster::Options {
        endpoints: cli.endpoints.clone(),
        cluster_name: cli.cluster_id.clone(),
        timeout: Duration::from_secs(cli.timeout),
        tls: cluster::client_tls(
            cli.tls_cacert.as_deref(),
            cli.tls_cert.as_deref(),
            cli.tls_key.as_deref(),
        )?,
        token: cli.auth_token.clone().map(quasar_rpc::auth::Secret),
    };
    let mut cluster = cluster::discover(&options)?;
    let report = f(&mut cluster)?;
    let mut out = std::io::stdout().lock();
    match out
        .write_all(report.text.as_bytes())
        .and_then(|()| out.flush())
    {
        // A reader that went away (`| head`) is not an error of the command.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(anyhow::anyhow!("cannot write to stdout: {e}"))
        }
        _ => {}
    }
    Ok(report.outcome)
}

/// `s` on one line (the error contract: one line on stderr).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Bytes for a table cell: `escape_ascii`, so control and non-ASCII bytes stay visible.
pub fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Bytes for JSON: UTF-8 text as is, anything else `escape_ascii`d.
pub fn json_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => escaped(bytes),
    }
}

/// A plain text table: a header row and aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}
