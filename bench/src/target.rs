//! Where a cluster benchmark sends its load: `--endpoints` of a running cluster (discovered
//! through `ListMembers` and `Status` on shard 0, as `quasarctl` does), or `--spawn N`
//! `quasar start` children on loopback (a `LocalCluster` in a temporary directory, with fast
//! election timing). Shared by `fsmeta`, `failover` and the cluster load subcommands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use quasar_node::local_cluster::{LocalCluster, LocalClusterConfig};
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{ClusterId, NodeId, SessionId};
use serde::Serialize;

/// The target flags every cluster benchmark takes.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct TargetArgs {
    /// Shard-0 addresses (HOST:PORT) of nodes of a running cluster.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "spawn",
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Vec<String>,
    /// Start this many `quasar start` nodes on loopback (in a temporary directory) and load
    /// them instead; they are stopped when the benchmark ends.
    #[arg(long, value_name = "N")]
    pub spawn: Option<u64>,
    /// Shards per spawned node.
    #[arg(long, default_value_t = 2, value_name = "S")]
    pub shards: usize,
    /// The `quasar` binary for `--spawn` (default: next to this executable).
    #[arg(long, env = "QUASAR_BIN", value_name = "PATH")]
    pub quasar_bin: Option<PathBuf>,
    /// The cluster's name (`quasar start --cluster-id`).
    #[arg(long, default_value = "quasar", value_name = "NAME")]
    pub cluster_id: String,
    /// `--election-ticks` for spawned nodes (10 ms ticks): fast elections on loopback.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub election_ticks: u32,
    /// `--heartbeat-ticks` for spawned nodes.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub heartbeat_ticks: u32,
    /// One more `quasar start` flag for spawned nodes, e.g. `--node-arg=--split-bytes=0`
    /// (repeatable).
    #[arg(long = "node-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// With --spawn: run the nodes with TLS (certificates generated into the temporary
    /// directory; the bench clients use the generated client certificate).
    #[arg(long)]
    pub tls: bool,
    /// The cluster CA (PEM): talk TLS to --endpoints and check the nodes against it.
    #[arg(long, env = "QUASAR_CACERT", value_name = "FILE.pem")]
    pub cacert: Option<PathBuf>,
    /// The client certificate (PEM) for mutual TLS (with --key).
    #[arg(long, env = "QUASAR_CERT", value_name = "FILE.pem")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "QUASAR_KEY", value_name = "FILE.key")]
    pub key: Option<PathBuf>,
    /// A bearer token configured on the nodes.
    #[arg(
        long,
        env = "QUASAR_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(skip)]
    pub token: Option<String>,
}

/// The client TLS of `--cacert`/`--cert`/`--key`.
fn client_tls(args: &TargetArgs) -> anyhow::Result<Option<quasar_rpc::tls::ClientTls>> {
    let identity = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (None, None) => None,
        _ => bail!("--cert and --key go together"),
    };
    match &args.cacert {
        None if identity.is_some() => bail!("--cert/--key need --cacert (the cluster CA)"),
        None => Ok(None),
        Some(ca) => Ok(Some(
            quasar_rpc::tls::ClientTls::load(ca, identity)
                .context("cannot load --cacert/--cert/--key")?,
        )),
    }
}

/// A resolved target: the client configuration and, with `--spawn`, the running cluster.
pub struct Target {
    pub config: ClientConfig,
    /// Dropped before `dir`: the nodes stop before their data is removed.
    pub cluster: Option<LocalCluster>,
    dir: Option<tempfile::TempDir>,
}

impl Target {
    /// One line naming the target, for the human report.
    pub fn describe(&self) -> String {
        let nodes = self
            .config
            .nodes
            .iter()
            .map(|(n, a)| format!("{}={a}", n.0))
            .collect::<Vec<_>>()
            .join(",");
        match &self.dir {
            Some(d) => format!(
                "spawned {} nodes x {} shards in {} ({nodes})",
                self.config.nodes.len(),
                self.config.shards_per_node,
                d.path().display()
            ),
            None => format!(
                "{} nodes x {} shards ({nodes})",
                self.config.nodes.len(),
                self.config.shards_per_node
            ),
        }
    }
}

impl Target {
    /// A client with a session of its own: clients sharing a session would have their
    /// writes taken for retries of each other's (exactly-once by session and sequence).
    pub fn client(&self) -> BlockingClient {
        let mut config = self.config.clone();
        config.session = SessionId(fastrand::u64(1..));
        BlockingClient::new(config)
    }
}

/// How long spawned nodes may take to answer `/ready`.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Resolves the flags: starts the local cluster or discovers the remote one.
pub fn resolve(args: &TargetArgs) -> anyhow::Result<Target> {
    let cluster_id = ClusterId::from_name(&args.cluster_id);
    match (args.spawn, args.endpoints.is_empty()) {
        (Some(nodes), _) => {
            let exe = quasar_binary(args.quasar_bin.as_deref())?;
            let dir = tempfile::Builder::new()
                .prefix("quasar-bench-")
                .tempdir()
                .context("cannot create a temporary directory for the spawned nodes")?;
            let cluster = LocalCluster::start(
                LocalClusterConfig {
                    exe,
                    nodes,
                    shards: args.shards,
                    base_port: None,
                    root: dir.path().to_path_buf(),
                    extra_args: [
                        "--cluster-id".into(),
                        args.cluster_id.clone(),
                        "--election-ticks".into(),
                        args.election_ticks.to_string(),
                        "--heartbeat-ticks".into(),
                        args.heartbeat_ticks.to_string(),
                    ]
                    .into_iter()
                    .chain(args.node_args.iter().cloned())
                    .collect(),
                    tls: args.tls.then(|| dir.path().join("certs")),
                    peer_routes: Default::default(),
                    env: Default::default(),
                },
                SPAWN_TIMEOUT,
            )
            .context("cannot start the local cluster (--spawn)")?;
            let shards = u32::try_from(args.shards).context("too many shards")?;
            let endpoints = cluster
                .endpoints()
                .into_iter()
                .map(|(id, addr)| (NodeId(id), addr))
                .collect();
            let mut config = ClientConfig::new(cluster_id, endpoints, shards);
            config.tls = match cluster.tls_dir() {
                Some(certs) => {
                    let (cert, key) = quasar_node::certs::cert_paths(
                        certs,
                        quasar_node::local_cluster::LOCAL_CLIENT_NAME,
                    );
                    let tls = quasar_rpc::tls::ClientTls::load(
                        &certs.join("ca.pem"),
                        Some((&cert, &key)),
                    )
                    .context("cannot load the spawned cluster's client certificate")?;
                    Some(tls)
                }
                None => client_tls(args)?,
            };
            config.token = args.token.clone().map(quasar_rpc::auth::Secret);
            Ok(Target {
                config,
                cluster: Some(cluster),
                dir: Some(dir),
            })
        }
        (None, false) => Ok(Target {
            config: quasar_rpc::client::discover::discover_secure(
                cluster_id,
                &args.endpoints,
                Duration::from_secs(3),
                client_tls(args)?,
                args.token.clone().map(quasar_rpc::auth::Secret),
            )?
            .config,
            cluster: None,
            dir: None,
        }),
        (None, true) => bail!(
            "no target: pass --endpoints HOST:PORT[,HOST:PORT...] of a running cluster, or \
             --spawn 3 to start nodes on loopback"
        ),
    }
}

/// The `quasar` binary: `explicit` (flag or `QUASAR_BIN`), else next to this executable (or
/// one directory up when this one runs from `target/*/deps`).
pub fn quasar_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!(
            "--quasar-bin/QUASAR_BIN {} is not a file: build it with `cargo build -p quasar-node`",
            path.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let mut tried = Vec::new();
    if let Some(dir) = exe.parent() {
        tried.push(dir.join("quasar"));
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                tried.push(up.join("quasar"));
            }
        }
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried = tried
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    bail!(
        "no `quasar` binary found (tried {tried}): build it with `cargo build -p quasar-node` \
         or pass --quasar-bin PATH"
    )
}

/// Runs `work(t)` for `t` in `0..threads`, one thread each, and returns the first error
/// (a panicking thread is an error naming `what`).
pub fn on_threads(
    threads: u64,
    what: &str,
    work: impl Fn(u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    let work = &work;
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || work(t))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a {what} thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// A flag that SIGINT and SIGTERM set: a run ends early but cleanly (spawned nodes are
/// stopped, what was measured is reported).
pub fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use anyhow::Context as _;
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&flag))
            .context("cannot install the SIGINT/SIGTERM handler")?;
    }
    Ok(flag)
}
