//! `quasar start`: one node process. Reads (or on the first start writes) the data dir's
//! manifest, checks `RLIMIT_MEMLOCK`, starts one glommio executor per shard (each running
//! `quasar_shard::runtime::run_shard`), the admin HTTP port, and waits for SIGTERM/SIGINT
//! or a shard failure.
//!
//! ```text
//!  DATA_DIR/quasar.json         cluster id, node id, shards, members
//!  DATA_DIR/shard-N/wal/        the shard's WAL segments
//!  DATA_DIR/shard-N/snapshots/  the latest snapshot of each of its groups
//! ```
//!
//! Stopping: the stop flag is set; every shard finishes the turn in flight (its fdatasync
//! included), stops accepting and closes its connections; the process exits 0. A shard that
//! fails (failed fsync, damaged log) stops the whole process with exit status 1: the
//! supervisor restarts it and recovery starts from what is durable.
//!
//! Security: with `--tls-*` every shard's listener, its peer connections and the admin port
//! run TLS with the node's certificate; the `[auth]` policy goes to the shards and the
//! admin port. Without TLS, a node listening beyond loopback logs a warning at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use glommio::{LocalExecutorBuilder, Placement};
use quasar_rpc::message::ClusterId;
use quasar_shard::raft::NodeId;
use quasar_shard::runtime::{run_shard, NodeShared, ShardReport, ShardSpec};
use quasar_shard::store::{Directory, StoreConfig};
use quasar_wal::WalConfig;
use tracing::{error, info};

use crate::admin::{AdminSecurity, AdminServer};
use crate::config::NodeConfig;
use crate::manifest::Manifest;
use crate::memlock;
use crate::metrics::{Metrics, NodeAdmin};

/// Memory glommio may lock per executor for its io_uring buffers (the machine's
/// RLIMIT_MEMLOCK must allow `memlock::PER_SHARD_BYTES` per shard).
const IO_MEMORY_BYTES: usize = 512 << 10;

/// Installs SIGTERM and SIGINT handlers that set `flag`.
pub fn stop_on_signals(flag: &Arc<AtomicBool>) -> anyhow::Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .with_context(|| format!("cannot install the handler of signal {sig}"))?;
    }
    Ok(())
}

/// Runs a node until `stop` is set (or a shard fails). Returns an error when a shard failed.
pub fn run_node(cfg: &NodeConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    memlock::ensure(cfg.shards)?;
    if !cfg.huge_pages {
        // NOTE: the flag is the process's and checked at each page fault, so it covers
        // the heap the allocator reserved before `main` too.
        if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
            tracing::warn!(error = %e, "cannot turn transparent huge pages off (--huge-pages)");
        }
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", cfg.data_dir.display()))?;
    let manifest = Manifest::load_or_create(
        &cfg.data_dir,
        &cfg.cluster_id,
        cfg.node_id,
        cfg.shards,
        &cfg.initial_cluster,
        cfg.replicas,
    )?;
    let mut members: Vec<(NodeId, SocketAddr)> = manifest
        .members
        .iter()
        .map(|(n, a)| (NodeId(*n), *a))
        .collect();
    // This node is reached at its advertised address (the manifest holds the bootstrap one).
    for m in &mut members {
        if m.0 .0 == cfg.node_id {
            m.1 = cfg.advertise;
        }
    }
    let member_ids: Vec<NodeId> = members.iter().map(|m| m.0).collect();
    let tls = match &cfg.tls {
        Some(files) => Some(
            quasar_rpc::tls::NodeTls::load(files)
                .context("cannot load the TLS files (--tls-cert, --tls-key, --tls-ca)")?,
        ),
        None => None,
    };
    warn_if_exposed(cfg);
    let access = Arc::new(cfg.access.clone());
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(NodeShared {
        node: NodeId(cfg.node_id),
        cluster_name: cfg.cluster_id.clone(),
        cluster: ClusterId::from_name(&cfg.cluster_id),
        shards: cfg.shards as u32,
        members,
        started: Instant::now(),
        directory: Arc::new(RwLock::new(Directory::bootstrap(
            &member_ids[..manifest.bootstrap_replicas().min(member_ids.len())],
        ))),
        reports: (0..cfg.shards)
            .map(|_| Mutex::new(ShardReport::default()))
            .collect(),
        stop: AtomicBool::new(false),
        observer: Arc::clone(&metrics) as Arc<dyn quasar_shard::runtime::ShardObserver>,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(cfg.shards);
    for i in 0..cfg.shards {
        let dir = cfg.data_dir.join(format!("shard-{i}"));
        let mut store = StoreConfig::new(
            NodeId(cfg.node_id),
            quasar_rpc::message::ShardId(i as u32),
            cfg.shards as u32,
        );
        store.election_ticks = cfg.election_ticks;
        store.heartbeat_ticks = cfg.heartbeat_ticks;
        store.lease_reads = cfg.lease_reads;
        store.pipelined_turns = cfg.pipelined_turns;
        store.tick_ms = cfg.tick_ms;
        store.snapshot_after_entries = cfg.snapshot_entries;
        store.snapshot_after_bytes = cfg.snapshot_bytes;
        store.split_after_bytes = cfg.split_bytes;
        store.split_after_keys = cfg.split_keys;
        store.split_after_writes_per_sec = cfg.split_writes_per_sec;
        // An idle group quiesces after two election timeouts without traffic.
        store.quiesce_after_ticks = u64::from(cfg.election_ticks) * 2;
        // Requests wait at most ~5 election timeouts before an error answer.
        store.request_timeout_ticks = u64::from(cfg.election_ticks) * 5;
        let spec = ShardSpec {
            store,
            wal_dir: dir.join("wal"),
            snapshot_dir: dir.join("snapshots"),
            wal: WalConfig {
                segment_size_bytes: usize::try_from(cfg.wal_segment_bytes)
                    .context("--wal-segment-bytes does not fit this machine's address space")?,
                syncs_in_flight: cfg.wal_syncs_in_flight,
                ..WalConfig::default()
            },
            listen: quasar_rpc::transport::shard_addr(
                cfg.listen,
                quasar_rpc::message::ShardId(i as u32),
            ),
            tick: Duration::from_millis(cfg.tick_ms),
            shared: Arc::clone(&shared),
            tls: tls.clone(),
            access: Arc::clone(&access),
        };
        std::fs::create_dir_all(&spec.wal_dir)
            .with_context(|| format!("cannot create {}", spec.wal_dir.display()))?;
        let placement = if cfg.pin {
            Placement::Fixed(i % cores)
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY_BYTES)
            .preempt_timer(Duration::from_millis(5))
            .spawn(move || async move { run_shard(spec).await })
            .map_err(|e| anyhow::anyhow!("cannot start the executor of shard {i}: {e}"))?;
        handles.push(handle);
    }
    // The HTTP key-value gateway reaches the client ports as this node (see `NodeAdmin`).
    let gateway_tls = match &cfg.tls {
        Some(files) => Some(
            quasar_rpc::tls::ClientTls::load(&files.ca, Some((&files.cert, &files.key)))
                .context("cannot load the TLS files for the HTTP gateway")?,
        ),
        None => None,
    };
    let gateway_token = cfg
        .access
        .tokens
        .iter()
        .find(|t| t.role == quasar_rpc::auth::Role::Admin)
        .map(|t| t.token.clone());
    let admin = AdminServer::start_with(
        cfg.admin_listen,
        Arc::new(NodeAdmin {
            shared: Arc::clone(&shared),
            metrics,
            gateway_tls,
            gateway_token,
        }),
        AdminSecurity {
            tls: tls.as_ref().map(|t| Arc::clone(&t.server_config)),
            access: Arc::clone(&access),
        },
    )
    .with_context(|| format!("cannot serve --admin-listen {}", cfg.admin_listen))?;
    info!(
        node = cfg.node_id,
        listen = %cfg.listen,
        admin = %admin.local_addr(),
        shards = cfg.shards,
        tls = cfg.tls.is_some(),
        auth = !cfg.access.is_open(),
        "quasar node started"
    );
    let mut failed = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            info!("stop requested: finishing in-flight work");
            break;
        }
        // Checked 20 times a second: only the failure is copied, not the report (with
        // thousands of ranges, copying their statuses was a tenth of an idle node's CPU).
        if let Some(f) = (0..shared.shards).find_map(|s| shared.failure(s).map(|f| (s, f))) {
            failed = Some(f);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(shard = i, error = %e, "shard failed");
                failed.get_or_insert((i as u32, e.to_string()));
            }
            Err(e) => {
                error!(shard = i, error = %e, "shard executor failed");
                failed.get_or_insert((i as u32, e.to_string()));
            }
        }
    }
    admin.stop();
    match failed {
        Some((shard, reason)) => anyhow::bail!("shard {shard} failed: {reason}"),
        None => {
            info!("quasar node stopped cleanly");
            Ok(())
        }
    }
}

/// Plaintext is for loopback development: say so when a port is reachable from elsewhere,
/// and when tokens would travel in clear.
fn warn_if_exposed(cfg: &NodeConfig) {
    if cfg.tls.is_some() {
        return;
    }
    for (what, addr) in [
        ("--listen", cfg.listen),
        ("--admin-listen", cfg.admin_listen),
    ] {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                setting = what,
                %addr,
                "listening beyond loopback without TLS: anyone on the network can read and \
                 write; pass --tls-cert, --tls-key and --tls-ca (see `quasar certs`)"
            );
        }
    }
    if !cfg.access.tokens.is_empty() {
        tracing::warn!("bearer tokens are configured without TLS: they travel in clear");
    }
}

/// Whether `dir` holds a node's data (its manifest).
pub fn is_initialized(dir: &Path) -> bool {
    dir.join(crate::manifest::FILE_NAME).exists()
}
