//! The configuration of `quasar start`: flags, `QUASAR_*` environment variables and an
//! optional TOML file, resolved into one validated [`NodeConfig`].
//!
//! Every setting has one name in three spellings: the flag `--node-id`, the environment
//! variable `QUASAR_NODE_ID` and the file key `node-id`. A flag wins over the environment
//! (clap reads both into [`StartArgs`]), which wins over the file, which wins over the
//! default. Every error names the setting, the value, what is wrong with it and how to fix
//! it; nothing is guessed.
//!
//! TLS: `--tls-cert`, `--tls-key` and `--tls-ca` (`QUASAR_TLS_CERT` ..., file keys
//! `tls-cert` ...) come together or not at all. Authentication lives in the file only, in
//! its `[auth]` table (see `crate::auth`): tokens are secrets, kept out of command lines.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Flags of `quasar start` (each also read from `QUASAR_<FLAG>`). All optional here: the
/// file and the defaults fill what is missing, and [`NodeConfig::resolve`] says what is
/// still required.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StartArgs {
    /// A TOML file whose keys are the flag names without dashes (`node-id = 1`).
    #[arg(long, env = "QUASAR_CONFIG", value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// This node's id, a positive integer unique in the cluster.
    #[arg(long, env = "QUASAR_NODE_ID", value_name = "N")]
    pub node_id: Option<u64>,
    /// Directory holding this node's write-ahead logs and snapshots.
    #[arg(long, env = "QUASAR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address shard 0 listens on; shard i listens on port + i.
    #[arg(long, env = "QUASAR_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address other nodes and clients use to reach shard 0 (default: --listen).
    #[arg(long, env = "QUASAR_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Address of the admin HTTP port (/health, /ready, /status, /metrics).
    #[arg(long, env = "QUASAR_ADMIN_LISTEN", value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,
    /// Members of a new cluster, `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`; read on first
    /// start only, restarts read the data directory.
    #[arg(long, env = "QUASAR_INITIAL_CLUSTER", value_name = "ID=HOST:PORT,...")]
    pub initial_cluster: Option<String>,
    /// Name of the cluster; a peer with another name is refused.
    #[arg(long, env = "QUASAR_CLUSTER_ID", value_name = "NAME")]
    pub cluster_id: Option<String>,
    /// Number of shards (one per core; default: every core).
    #[arg(long, env = "QUASAR_SHARDS", value_name = "N")]
    pub shards: Option<usize>,
    /// Pin shard i to core i (default: true).
    #[arg(long, env = "QUASAR_PIN", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub pin: Option<bool>,
    /// Length of one Raft tick in milliseconds.
    #[arg(long, env = "QUASAR_TICK_MS", value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks (randomized in [N, 2N)).
    #[arg(long, env = "QUASAR_ELECTION_TICKS", value_name = "N")]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval in ticks.
    #[arg(long, env = "QUASAR_HEARTBEAT_TICKS", value_name = "N")]
    pub heartbeat_ticks: Option<u32>,
    /// Serve linearizable reads under the leader's lease (no round trip; relies on bounded
    /// clock drift between nodes). `false`: every linearizable read takes a ReadIndex round
    /// to a majority (default: true).
    #[arg(long, env = "QUASAR_LEASE_READS", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub lease_reads: Option<bool>,
    /// Pipeline turns: let a shard's loop go on processing (a leader appends and
    /// replicates new proposals, commits and answers writes already synced) while the WAL
    /// fdatasync of the previous turn runs. `false`: each turn waits for its sync
    /// (default: true).
    #[arg(long, env = "QUASAR_PIPELINED_TURNS", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub pipelined_turns: Option<bool>,
    /// Let the kernel back this node's heap with transparent huge pages where the system
    /// allows them (`/sys/kernel/mm/transparent_hugepage/enabled`). Off by default, as
    /// most databases advise: a fault on a fresh huge page zeroes 2 MiB, and a node that
    /// opens 100,000 ranges spent most of its start doing that (default: false).
    #[arg(long, env = "QUASAR_HUGE_PAGES", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    pub huge_pages: Option<bool>,
    /// Snapshot a range (and truncate its log) every N applied entries; 0: never by count.
    #[arg(long, env = "QUASAR_SNAPSHOT_ENTRIES", value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// ... or every N applied payload bytes; 0: never by size.
    #[arg(long, env = "QUASAR_SNAPSHOT_BYTES", value_name = "BYTES")]
    pub snapshot_bytes: Option<u64>,
    /// Size of each write-ahead log segment file (8 MiB to 4 GiB; default 64 MiB). Small
    /// segments roll, get collected and rewritten often: for tests.
    #[arg(long, env = "QUASAR_WAL_SEGMENT_BYTES", value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,
    /// How many WAL fdatasyncs a shard may have in flight at once (1 to 8; default 2).
    /// With more than one, what a turn appends while a sync runs gets a sync of its own at
    /// once instead of waiting for the running one to end; they complete in order.
    #[arg(long, env = "QUASAR_WAL_SYNCS_IN_FLIGHT", value_name = "N")]
    pub wal_syncs_in_flight: Option<usize>,
    /// Split a range in the middle once it holds this many key and value bytes (also the
    /// largest range a merge may produce); 0: never by size.
    #[arg(long, env = "QUASAR_SPLIT_BYTES", value_name = "BYTES")]
    pub split_bytes: Option<u64>,
    /// ... or once it holds this many keys; 0: never by key count.
    #[arg(long, env = "QUASAR_SPLIT_KEYS", value_name = "N")]
    pub split_keys: Option<u64>,
    /// ... or once it applies more than this many writes per second (over a second);
    /// 0: never by load.
    #[arg(long, env = "QUASAR_SPLIT_WRITES_PER_SEC", value_name = "N")]
    pub split_writes_per_sec: Option<u64>,
    /// Replicas of each range of a NEW cluster, on the members with the lowest ids (default
    /// 3, at most the members); the other members start empty and receive replicas by
    /// `quasarctl range move`. Stored in the data dir at the first start.
    #[arg(long, env = "QUASAR_REPLICAS", value_name = "N")]
    pub replicas: Option<usize>,
    /// This node's TLS certificate (PEM, naming `node-<id>`; `quasar certs node`). With
    /// --tls-key and --tls-ca, every port (client, peer, admin HTTP) runs TLS.
    #[arg(long, env = "QUASAR_TLS_CERT", value_name = "FILE.pem")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "QUASAR_TLS_KEY", value_name = "FILE.key")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA certificate (PEM): peers and client certificates must be signed by it.
    #[arg(long, env = "QUASAR_TLS_CA", value_name = "FILE.pem")]
    pub tls_ca: Option<PathBuf>,
}

/// The same settings as read from a TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    admin_listen: Option<String>,
    initial_cluster: Option<String>,
    cluster_id: Option<String>,
    shards: Option<usize>,
    pin: Option<bool>,
    tick_ms: Option<u64>,
    election_ticks: Option<u32>,
    heartbeat_ticks: Option<u32>,
    lease_reads: Option<bool>,
    pipelined_turns: Option<bool>,
    huge_pages: Option<bool>,
    snapshot_entries: Option<u64>,
    snapshot_bytes: Option<u64>,
    wal_segment_bytes: Option<u64>,
    wal_syncs_in_flight: Option<usize>,
    split_bytes: Option<u64>,
    split_keys: Option<u64>,
    split_writes_per_sec: Option<u64>,
    replicas: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    auth: Option<crate::auth::AuthFile>,
}

/// Defaults: etcd-like timing (100 ms heartbeats, 1 s elections) with a 10 ms tick.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7100";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7180";
pub const DEFAULT_CLUSTER_ID: &str = "quasar";
pub const DEFAULT_TICK_MS: u64 = 10;
pub const DEFAULT_ELECTION_TICKS: u32 = 100;
pub const DEFAULT_HEARTBEAT_TICKS: u32 = 10;
/// More shards than this is a typo, not a machine.
pub const MAX_SHARDS: usize = 1024;
/// Snapshot every 10,000 applied entries ...
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 10_000;
/// ... or every 64 MiB of applied payload, whichever comes first.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 64 << 20;
/// `--wal-segment-bytes` by default, and its bounds.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 << 20;
const MIN_WAL_SEGMENT_BYTES: u64 = 8 << 20;
const MAX_WAL_SEGMENT_BYTES: u64 = (4 << 30) - 4096;
/// `--wal-syncs-in-flight` by default, and its bound.
pub const DEFAULT_WAL_SYNCS_IN_FLIGHT: usize = 2;
const MAX_WAL_SYNCS_IN_FLIGHT: usize = 8;
/// Ranges split at 64 MiB of keys and values; not by key count or load unless asked.
pub const DEFAULT_SPLIT_BYTES: u64 = 64 << 20;

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Empty when not given (a restart, or a node joining an existing cluster).
    pub initial_cluster: BTreeMap<u64, SocketAddr>,
    pub cluster_id: String,
    pub shards: usize,
    pub pin: bool,
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub lease_reads: bool,
    pub pipelined_turns: bool,
    pub huge_pages: bool,
    pub snapshot_entries: u64,
    pub snapshot_bytes: u64,
    pub wal_segment_bytes: u64,
    pub wal_syncs_in_flight: usize,
    pub split_bytes: u64,
    pub split_keys: u64,
    pub split_writes_per_sec: u64,
    /// `--replicas`, when given.
    pub replicas: Option<usize>,
    /// TLS on every port (`None`: plaintext).
    pub tls: Option<quasar_rpc::tls::TlsFiles>,
    /// Tokens and certificate identities with their roles (empty: everything allowed).
    pub access: quasar_rpc::auth::AccessPolicy,
}

/// A setting that cannot be used, with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--{setting} is required: {fix}")]
    Missing { setting: &'static str, fix: String },
    #[error("invalid --{setting} `{value}`: {reason}; {fix}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
        fix: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(
    setting: &'static str,
    value: impl ToString,
    reason: impl ToString,
    fix: impl ToString,
) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
        fix: fix.to_string(),
    }
}

impl NodeConfig {
    /// Resolves flags (and their environment variables) over the file named by `--config`,
    /// over the defaults. `cores` is the default for `--shards`.
    pub fn resolve(args: &StartArgs, cores: usize) -> Result<NodeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file, cores)
    }

    /// Resolves flags over the TOML text `file`; for tests and `--config` alike.
    pub fn resolve_with_file_text(
        args: &StartArgs,
        file: &str,
        cores: usize,
    ) -> Result<NodeConfig, ConfigError> {
        let file = toml::from_str(file).map_err(|e| ConfigError::File {
            path: PathBuf::from("<text>"),
            reason: e.to_string(),
        })?;
        Self::merge(args, file, cores)
    }

    fn merge(args: &StartArgs, file: FileConfig, cores: usize) -> Result<NodeConfig, ConfigError> {
        let node_id = args
            .node_id
            .or(file.node_id)
            .ok_or_else(|| ConfigError::Missing {
                setting: "node-id",
                fix: "give every node a unique positive id, e.g. --node-id 1 (or QUASAR_NODE_ID)"
                    .into(),
            })?;
        if node_id == 0 {
            return Err(invalid(
                "node-id",
                0,
                "0 means \"no node\" in Raft",
                "use 1 or higher",
            ));
        }
        let data_dir =
            args.data_dir
                .clone()
                .or(file.data_dir)
                .ok_or_else(|| ConfigError::Missing {
                    setting: "data-dir",
                    fix: "name a directory for the logs, e.g. --data-dir /var/lib/quasar".into(),
                })?;

        let wal_segment_bytes = args
            .wal_segment_bytes
            .or(file.wal_segment_bytes)
            .unwrap_or(DEFAULT_WAL_SEGMENT_BYTES);
        if !(MIN_WAL_SEGMENT_BYTES..=MAX_WAL_SEGMENT_BYTES).contains(&wal_segment_bytes)
            || wal_segment_bytes % 4096 != 0
        {
            return Err(invalid(
                "wal-segment-bytes",
                wal_segment_bytes,
                format!(
                    "must be a multiple of 4096 from {MIN_WAL_SEGMENT_BYTES} (8 MiB, room for the \
                     largest batch) to {MAX_WAL_SEGMENT_BYTES}"
                ),
                "leave it at the default (64 MiB) unless a test wants segments to roll often",
            ));
        }
        let wal_syncs_in_flight = args
            .wal_syncs_in_flight
            .or(file.wal_syncs_in_flight)
            .unwrap_or(DEFAULT_WAL_SYNCS_IN_FLIGHT);
        if !(1..=MAX_WAL_SYNCS_IN_FLIGHT).contains(&wal_syncs_in_flight) {
            return Err(invalid(
                "wal-syncs-in-flight",
                wal_syncs_in_flight,
                format!("must be from 1 (one sync at a time) to {MAX_WAL_SYNCS_IN_FLIGHT}"),
                "leave it at the default (2)",
            ));
        }
        let shards = args.shards.or(file.shards).unwrap_or(cores.max(1));
        if shards == 0 || shards > MAX_SHARDS {
            return Err(invalid(
                "shards",
                shards,
                format!("must be between 1 and {MAX_SHARDS}"),
                "use one shard per core you want Quasar to own",
            ));
        }

        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or(DEFAULT_LISTEN.into());
        let listen = parse_addr("listen", &listen_text)?;
        if u32::from(listen.port()) + shards as u32 - 1 > u32::from(u16::MAX) {
            return Err(invalid(
                "listen",
                &listen_text,
                format!("shards 0..{shards} listen on consecutive ports and would pass 65535"),
                "choose a lower base port or fewer --shards",
            ));
        }
        let advertise = match args.advertise.clone().or(file.advertise) {
            Some(text) => parse_addr("advertise", &text)?,
            None if listen.ip().is_unspecified() => {
                return Err(ConfigError::Missing {
                    setting: "advertise",
                    fix: format!(
                        "--listen {listen_text} binds every interface, so peers need an \
                         address to reach this node: pass --advertise HOST:{}",
                        listen.port()
                    ),
                })
            }
            None => listen,
        };
        if advertise.port() == 0 || advertise.ip().is_unspecified() {
            return Err(invalid(
                "advertise",
                advertise,
                "peers cannot connect to an unspecified address or port 0",
                "pass the address peers use to reach this node",
            ));
        }
        let admin_text = args
            .admin_listen
            .clone()
            .or(file.admin_listen)
            .unwrap_or(DEFAULT_ADMIN_LISTEN.into());
        let admin_listen = parse_addr("admin-listen", &admin_text)?;

        let initial_cluster = match args.initial_cluster.clone().or(file.initial_cluster) {
            Some(text) => parse_initial_cluster(&text, node_id, advertise)?,
            None => BTreeMap::new(),
        };
        let replicas = args.replicas.or(file.replicas);
        match replicas {
            Some(0) => {
                return Err(invalid(
                    "replicas",
                    0,
                    "a range needs at least one replica",
                    "pass 3 (the default) for a cluster that survives one failure",
                ))
            }
            Some(n) if !initial_cluster.is_empty() && n > initial_cluster.len() => {
                return Err(invalid(
                    "replicas",
                    n,
                    format!(
                        "--initial-cluster names only {} members",
                        initial_cluster.len()
                    ),
                    "pass at most the number of members",
                ))
            }
            _ => {}
        }

        let cluster_id = args
            .cluster_id
            .clone()
            .or(file.cluster_id)
            .unwrap_or(DEFAULT_CLUSTER_ID.into());
        let id_ok = !cluster_id.is_empty()
            && cluster_id.len() <= 64
            && cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok {
            return Err(invalid(
                "cluster-id",
                &cluster_id,
                "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
                "pick a short name such as prod-meta-1",
            ));
        }

        let tick_ms = args.tick_ms.or(file.tick_ms).unwrap_or(DEFAULT_TICK_MS);
        if !(1..=1000).contains(&tick_ms) {
            return Err(invalid(
                "tick-ms",
                tick_ms,
                "must be 1 to 1000",
                "the default is 10",
            ));
        }
        let heartbeat_ticks = args
            .heartbeat_ticks
            .or(file.heartbeat_ticks)
            .unwrap_or(DEFAULT_HEARTBEAT_TICKS);
        if heartbeat_ticks == 0 {
            return Err(invalid(
                "heartbeat-ticks",
                0,
                "must be at least 1",
                "the default is 10",
            ));
        }
        let election_ticks = args
            .election_ticks
            .or(file.election_ticks)
            .unwrap_or(DEFAULT_ELECTION_TICKS);
        // Raft §3.4: elections must not fire between two heartbeats of a live leader; keep a
        // margin for a lost heartbeat and scheduling delays.
        if election_ticks < heartbeat_ticks.saturating_mul(3) {
            return Err(invalid(
                "election-ticks",
                election_ticks,
                format!("must be at least 3 x --heartbeat-ticks ({heartbeat_ticks})"),
                format!(
                    "use --election-ticks {} or more",
                    heartbeat_ticks.saturating_mul(10)
                ),
            ));
        }

        let tls = resolve_tls(
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
            args.tls_ca.clone().or(file.tls_ca),
        )?;
        let access = file.auth.unwrap_or_default().into_policy()?;

        Ok(NodeConfig {
            tls,
            access,
            node_id,
            data_dir,
            listen,
            advertise,
            admin_listen,
            initial_cluster,
            cluster_id,
            shards,
            pin: args.pin.or(file.pin).unwrap_or(true),
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            lease_reads: args.lease_reads.or(file.lease_reads).unwrap_or(true),
            pipelined_turns: args
                .pipelined_turns
                .or(file.pipelined_turns)
                .unwrap_or(true),
            huge_pages: args.huge_pages.or(file.huge_pages).unwrap_or(false),
            snapshot_entries: args
                .snapshot_entries
                .or(file.snapshot_entries)
                .unwrap_or(DEFAULT_SNAPSHOT_ENTRIES),
            snapshot_bytes: args
                .snapshot_bytes
                .or(file.snapshot_bytes)
                .unwrap_or(DEFAULT_SNAPSHOT_BYTES),
            wal_segment_bytes,
            wal_syncs_in_flight,
            split_bytes: args
                .split_bytes
                .or(file.split_bytes)
                .unwrap_or(DEFAULT_SPLIT_BYTES),
            split_keys: args.split_keys.or(file.split_keys).unwrap_or(0),
            split_writes_per_sec: args
                .split_writes_per_sec
                .or(file.split_writes_per_sec)
                .unwrap_or(0),
            replicas,
        })
    }
}

/// All three TLS files, or none.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<quasar_rpc::tls::TlsFiles>, ConfigError> {
    const FIX: &str = "pass all three of --tls-cert, --tls-key and --tls-ca (e.g. from \
                       `quasar certs init` and `quasar certs node`), or none for plaintext";
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(quasar_rpc::tls::TlsFiles { cert, key, ca })),
        (cert, key, _) => {
            let setting = if cert.is_none() {
                "tls-cert"
            } else if key.is_none() {
                "tls-key"
            } else {
                "tls-ca"
            };
            Err(ConfigError::Missing {
                setting,
                fix: FIX.into(),
            })
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// `HOST:PORT`, resolving a host name once at start.
fn parse_addr(setting: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let fix = format!("write HOST:PORT, e.g. --{setting} 127.0.0.1:7100");
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| invalid(setting, text, "the host name has no address", &fix)),
        Err(e) => Err(invalid(setting, text, e, fix)),
    }
}

fn parse_initial_cluster(
    text: &str,
    node_id: u64,
    advertise: SocketAddr,
) -> Result<BTreeMap<u64, SocketAddr>, ConfigError> {
    const FIX: &str = "write ID=HOST:PORT pairs separated by commas, e.g. \
                       --initial-cluster 1=10.0.0.1:7100,2=10.0.0.2:7100,3=10.0.0.3:7100";
    let mut members = BTreeMap::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (id, addr) = member
            .split_once('=')
            .ok_or_else(|| invalid("initial-cluster", member, "missing `=`", FIX))?;
        let id: u64 = id.trim().parse().ok().filter(|&id| id > 0).ok_or_else(|| {
            invalid(
                "initial-cluster",
                member,
                "the id is not a positive integer",
                FIX,
            )
        })?;
        let addr = parse_addr("initial-cluster", addr.trim())?;
        if members.insert(id, addr).is_some() {
            return Err(invalid(
                "initial-cluster",
                text,
                format!("node {id} appears twice"),
                FIX,
            ));
        }
    }
    if members.is_empty() {
        return Err(invalid("initial-cluster", text, "names no member", FIX));
    }
    match members.get(&node_id) {
        None => Err(invalid(
            "initial-cluster",
            text,
            format!("does not name this node (--node-id {node_id})"),
            "list every initial member, this node included",
        )),
        Some(addr) if *addr != advertise => Err(invalid(
            "initial-cluster",
            text,
            format!("gives node {node_id} the address {addr}, but it advertises {advertise}"),
            "make the entry match --advertise (or --listen)",
        )),
        Some(_) => Ok(members),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(node_id: u64) -> StartArgs {
        StartArgs {
            node_id: Some(node_id),
            data_dir: Some("/tmp/q".into()),
            ..StartArgs::default()
        }
    }

    #[test]
    fn defaults_fill_everything_but_id_and_data_dir() {
        let config = NodeConfig::resolve(&args(1), 4).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse::<SocketAddr>().unwrap());
        assert_eq!(config.advertise, config.listen);
        assert_eq!(config.shards, 4);
        assert!(config.pin);
        assert!(config.lease_reads);
        assert!(!config.huge_pages);
        let read_index_only = StartArgs {
            lease_reads: Some(false),
            ..args(1)
        };
        assert!(
            !NodeConfig::resolve(&read_index_only, 4)
                .unwrap()
                .lease_reads
        );
        assert!(config.initial_cluster.is_empty());
        assert_eq!(
            (
                config.tick_ms,
                config.election_ticks,
                config.heartbeat_ticks
            ),
            (10, 100, 10)
        );
        assert_eq!(
            (config.snapshot_entries, config.snapshot_bytes),
            (10_000, 64 << 20)
        );
    }

    #[test]
    fn missing_required_settings_name_the_flag() {
        let err = NodeConfig::resolve(&StartArgs::default(), 2).unwrap_err();
        assert!(
            err.to_string().starts_with("--node-id is required"),
            "{err}"
        );
        let a = StartArgs {
            node_id: Some(1),
            ..StartArgs::default()
        };
        let err = NodeConfig::resolve(&a, 2).unwrap_err();
        assert!(
            err.to_string().starts_with("--data-dir is required"),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let mut a = args(2);
        a.shards = Some(3);
        let file = "node-id = 9\nshards = 8\ntick-ms = 20\ncluster-id = \"meta\"\n\
                    snapshot-entries = 500\n";
        let config = NodeConfig::resolve_with_file_text(&a, file, 2).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.shards, 3);
        assert_eq!(config.snapshot_entries, 500);
        assert_eq!(config.tick_ms, 20);
        assert_eq!(config.cluster_id, "meta");
    }

    #[test]
    fn tls_files_come_together_from_flags_or_file() {
        let config = NodeConfig::resolve(&args(1), 1).unwrap();
        assert_eq!(config.tls, None);
        assert!(config.access.is_open());
        let mut a = args(1);
        a.tls_cert = Some("/c/node-1.pem".into());
        a.tls_key = Some("/c/node-1.key".into());
        let err = NodeConfig::resolve(&a, 1).unwrap_err();
        assert!(err.to_string().starts_with("--tls-ca is required"), "{err}");
        let file = "tls-ca = \"/c/ca.pem\"\ntls-key = \"/file/key\"\n";
        let config = NodeConfig::resolve_with_file_text(&a, file, 1).unwrap();
        assert_eq!(
            config.tls,
            Some(quasar_rpc::tls::TlsFiles {
                cert: "/c/node-1.pem".into(),
                key: "/c/node-1.key".into(),
                ca: "/c/ca.pem".into(),
            })
        );
        let err =
            NodeConfig::resolve_with_file_text(&args(1), "tls-cert = \"/x\"\n", 1).unwrap_err();
        assert!(
            err.to_string().starts_with("--tls-key is required"),
            "{err}"
        );
    }

    #[test]
    fn the_auth_table_resolves_into_a_policy() {
        let file = "node-id = 1\n[[auth.tokens]]\nname = \"ci\"\n\
                    token = \"0123456789abcdef0\"\nrole = \"read\"\n";
        let config = NodeConfig::resolve_with_file_text(&args(1), file, 1).unwrap();
        assert_eq!(config.access.tokens.len(), 1);
        assert_eq!(config.access.tokens[0].role, quasar_rpc::auth::Role::Read);
        let bad = "[auth]\ntokenz = []\n";
        let err = NodeConfig::resolve_with_file_text(&args(1), bad, 1).unwrap_err();
        assert!(err.to_string().contains("unknown field `tokenz`"), "{err}");
    }

    #[test]
    fn tls_flags_parse_through_clap() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            start: StartArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "quasar",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
            "--tls-ca",
            "ca.pem",
        ])
        .unwrap();
        assert_eq!(cli.start.tls_cert, Some(PathBuf::from("a.pem")));
        assert_eq!(cli.start.tls_key, Some(PathBuf::from("a.key")));
        assert_eq!(cli.start.tls_ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let err = NodeConfig::resolve_with_file_text(&args(1), "node_idd = 1\n", 2).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `node_idd`"),
            "{err}"
        );
    }

    #[test]
    fn initial_cluster_must_include_this_node_at_its_address() {
        let mut a = args(2);
        a.listen = Some("127.0.0.1:7200".into());
        a.initial_cluster = Some("1=127.0.0.1:7100, 2=127.0.0.1:7200,3=127.0.0.1:7300".into());
        let config = NodeConfig::resolve(&a, 1).unwrap();
        assert_eq!(config.initial_cluster.len(), 3);

        a.initial_cluster = Some("1=127.0.0.1:7100,3=127.0.0.1:7300".into());
        let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
        assert!(
            err.contains("does not name this node (--node-id 2)"),
            "{err}"
        );

        a.initial_cluster = Some("1=127.0.0.1:7100,2=127.0.0.1:7999".into());
        let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
        assert!(err.contains("but it advertises 127.0.0.1:7200"), "{err}");

        for bad in [
            "1=127.0.0.1:7100,1=127.0.0.1:7200",
            "x=127.0.0.1:1",
            "2127.0.0.1:7200",
            ",",
        ] {
            a.initial_cluster = Some(bad.into());
            let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
            assert!(err.starts_with("invalid --initial-cluster"), "{bad}: {err}");
        }
    }

    #[test]
    fn wal_segment_size_is_bounded_and_named_when_refused() {
        let mut a = args(1);
        assert_eq!(
            NodeConfig::resolve(&a, 1).unwrap().wal_segment_bytes,
            DEFAULT_WAL_SEGMENT_BYTES
        );
        a.wal_segment_bytes = Some(8 << 20);
        assert_eq!(
            NodeConfig::resolve(&a, 1).unwrap().wal_segment_bytes,
            8 << 20
        );
        for bad in [4096, (8 << 20) + 1, 1 << 40] {
            a.wal_segment_bytes = Some(bad);
            let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
            assert!(err.contains("wal-segment-bytes"), "{err}");
        }
    }

    #[test]
    fn wal_syncs_in_flight_is_bounded_and_named_when_refused() {
        let mut a = args(1);
        assert_eq!(
            NodeConfig::resolve(&a, 1).unwrap().wal_syncs_in_flight,
            DEFAULT_WAL_SYNCS_IN_FLIGHT
        );
        a.wal_syncs_in_flight = Some(1);
        assert_eq!(NodeConfig::resolve(&a, 1).unwrap().wal_syncs_in_flight, 1);
        for bad in [0, MAX_WAL_SYNCS_IN_FLIGHT + 1] {
            a.wal_syncs_in_flight = Some(bad);
            let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
            assert!(err.contains("wal-syncs-in-flight"), "{err}");
        }
    }

    #[test]
    fn unspecified_listen_needs_an_advertised_address() {
        let mut a = args(1);
        a.listen = Some("0.0.0.0:7100".into());
        let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
        assert!(err.contains("--advertise is required"), "{err}");
        a.advertise = Some("10.1.2.3:7100".into());
        assert_eq!(
            NodeConfig::resolve(&a, 1).unwrap().advertise,
            "10.1.2.3:7100".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        type Edit = Box<dyn Fn(&mut StartArgs)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|a| a.node_id = Some(0)), "invalid --node-id `0`"),
            (
                Box::new(|a| a.listen = Some("localhost".into())),
                "invalid --listen `localhost`",
            ),
            (Box::new(|a| a.shards = Some(0)), "invalid --shards `0`"),
            (
                Box::new(|a| {
                    a.listen = Some("127.0.0.1:65535".into());
                    a.shards = Some(2);
                }),
                "would pass 65535",
            ),
            (
                Box::new(|a| a.cluster_id = Some("no spaces".into())),
                "invalid --cluster-id",
            ),
            (Box::new(|a| a.tick_ms = Some(0)), "invalid --tick-ms `0`"),
            (
                Box::new(|a| a.heartbeat_ticks = Some(0)),
                "invalid --heartbeat-ticks `0`",
            ),
            (
                Box::new(|a| a.election_ticks = Some(20)),
                "invalid --election-ticks `20`: must be at least 3 x --heartbeat-ticks (10)",
            ),
        ];
        for (edit, expected) in cases {
            let mut a = args(1);
            edit(&mut a);
            let err = NodeConfig::resolve(&a, 1).unwrap_err().to_string();
            assert!(err.contains(expected), "expected `{expected}` in `{err}`");
        }
    }

    #[test]
    fn flags_parse_through_clap() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            start: StartArgs,
        }
        let cli = Cli::try_parse_from([
            "quasar",
            "--node-id",
            "3",
            "--data-dir",
            "/d",
            "--pin",
            "false",
        ])
        .unwrap();
        let config = NodeConfig::resolve(&cli.start, 2).unwrap();
        assert_eq!(config.node_id, 3);
        assert!(!config.pin);
        let cli =
            Cli::try_parse_from(["quasar", "--node-id", "3", "--data-dir", "/d", "--pin"]).unwrap();
        assert!(NodeConfig::resolve(&cli.start, 2).unwrap().pin);
        assert!(Cli::try_parse_from(["quasar", "--node-id", "three"]).is_err());
    }
}
