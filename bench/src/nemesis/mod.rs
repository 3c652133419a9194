//! `quasar-bench nemesis` (issue #9): real `quasar start` processes on loopback under faults
//! chosen at random, with a client history checked at the end (Jepsen's method).
//!
//! ```text
//!   clients (threads) --get/put/cas--> nodes (client ports, direct)
//!   node i --peer link i->j--> proxy(i->j) --> node j          (one proxy per link, shard)
//!   nemesis: calm, fault, hold, heal, calm, ...               (seeded schedule)
//!   range operator: split / merge / transfer-leader           (during faults)
//!   end: heal, restart, wait for equal state hashes, read every key, check the history
//! ```
//!
//! Faults: `kill` (kill -9 of one node, the leader of the hot range half of the time, then a
//! restart), `kill-minority`, `kill-all` (every node at once), `pause` (SIGSTOP/SIGCONT of one
//! node, the leader half of the time), `partition` (a minority cut off both ways), `one-way`
//! (a node's outgoing or incoming links cut), `bridge` (two halves that cannot talk and one
//! node that sees both), `clock-jump` (the wall clock of some nodes jumps by hours or days,
//! through libfaketime with the monotonic clock left alone: leases must not care). Links are cut by the proxies (`proxy`), which Quasar's nodes dial
//! for each other (`LocalClusterConfig::peer_routes`); clients reach every node directly.
//!
//! After a leader kill, a probe writes to the hot key until it succeeds: the time from the
//! kill to that first successful write is reported against the election timeout.
//!
//! Verdicts (`history`): linearizability per key, versions monotonic, no invented value; the
//! final reads make a lost acknowledged write a violation; every range ends with the same
//! applied index and state hash on every node (`/status`). Any failed check makes the
//! program exit non-zero and keeps the data directory (its path is printed).

mod history;
mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use quasar_node::local_cluster::{self, LocalCluster, LocalClusterConfig};
use quasar_rpc::client::{AdminClient, BlockingClient, ClientConfig};
use quasar_rpc::message::{ClusterId, NodeId, RangeInfo, SessionId};
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};
use history::{Call, History, Outcome};
use proxy::{Link, Proxies};

/// The cluster's name.
const CLUSTER: &str = "nemesis";
/// Bound on nodes becoming ready after a (re)start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the probe's first successful write after a leader kill.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every range reaching one state on every node at the end.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Attempts of a final read.
const FINAL_READ_ATTEMPTS: u32 = 20;
/// Where Debian's package `faketime` puts the library.
const FAKETIME_DEBIAN: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// libfaketime's control file in each node's directory: the offset of its wall clock.
const CLOCK_FILE: &str = "faketime";
/// How long a node armed at a crash point gets to reach it.
const CRASH_POINT_WAIT: Duration = Duration::from_secs(6);
/// ... a point that only segment rolls, garbage collection, snapshots, splits, merges or
/// replica removals reach.
const RARE_CRASH_POINT_WAIT: Duration = Duration::from_secs(15);
/// The meta range (never merged).
const META_RANGE: u64 = 1;
/// The node's Raft tick (`quasar start --tick-ms` default).
const TICK_MS: u64 = 10;

/// A fault the nemesis can inject.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    KillMinority,
    KillAll,
    Pause,
    Partition,
    OneWay,
    Bridge,
    ClockJump,
    CrashPoint,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillMinority => "kill-minority",
            Fault::KillAll => "kill-all",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::OneWay => "one-way",
            Fault::Bridge => "bridge",
            Fault::ClockJump => "clock-jump",
            Fault::CrashPoint => "crash-point",
        }
    }
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct NemesisArgs {
    /// Nodes (3 to 7); every range has a replica on each.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Replicas of each range (default: every node); below `--nodes`, the range operator
    /// also moves replicas between nodes.
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Seconds of faults (the final checks come after).
    #[arg(long, default_value_t = 60.0)]
    pub duration_secs: f64,
    /// Seed of the fault schedule and the clients' choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The faults to choose from.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,kill-minority,kill-all,pause,partition,one-way,bridge,clock-jump"
    )]
    pub faults: Vec<Fault>,
    /// Shortest time a fault is held, in seconds.
    #[arg(long, default_value_t = 0.5)]
    pub fault_min_secs: f64,
    /// Longest time a fault is held (a bridge partition of 60 s: `--faults bridge
    /// --fault-min-secs 60 --fault-max-secs 60`).
    #[arg(long, default_value_t = 3.0)]
    pub fault_max_secs: f64,
    /// Longest calm between two faults, in seconds (0.2 s at least).
    #[arg(long, default_value_t = 1.5)]
    pub calm_secs: f64,
    /// libfaketime (`libfaketime.so.1`, Debian package `faketime`): the nodes run under it
    /// with only their wall clock faked, and the `clock-jump` fault becomes possible. Default:
    /// the Debian path when it exists.
    #[arg(long, value_name = "PATH")]
    pub faketime_lib: Option<PathBuf>,
    /// The `quasar` binary is a failpoint build (`cargo build -p quasar-node --features
    /// failpoints`): adds the `crash-point` fault, which restarts a node armed to abort at
    /// one persistence step (`quasar_wal::crash::POINTS`, each in turn).
    #[arg(long)]
    pub failpoints: bool,
    /// One more `quasar start` flag for every node, e.g. `--node-arg=--snapshot-entries=500`
    /// (repeatable).
    #[arg(long = "node-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// No splits, merges and leadership transfers during the faults.
    #[arg(long)]
    pub no_range_ops: bool,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Keys in the window the clients share.
    #[arg(long, default_value_t = 6)]
    pub keys: u64,
    /// Operations per key before the window moves to fresh keys.
    #[arg(long, default_value_t = 80)]
    pub ops_per_key: u64,
    /// Bytes per written value (a unique prefix, padded): larger values fill WAL segments
    /// sooner (with `--node-arg=--wal-segment-bytes=...`, segments roll and get collected).
    #[arg(long, default_value_t = 0)]
    pub value_bytes: usize,
    /// Milliseconds a client sleeps between operations.
    #[arg(long, default_value_t = 2)]
    pub pause_ms: u64,
    /// `--election-ticks` of the nodes (10 ms ticks).
    #[arg(long, default_value_t = 30)]
    pub election_ticks: u32,
    /// `--heartbeat-ticks` of the nodes.
    #[arg(long, default_value_t = 3)]
    pub heartbeat_ticks: u32,
    /// The `quasar` binary (default: next to this executable).
    #[arg(long, env = "QUASAR_BIN", value_name = "PATH")]
    pub quasar_bin: Option<PathBuf>,
    /// Keep the data directory (and node logs) even when every check passes.
    #[arg(long)]
    pub keep_dir: bool,
    /// One JSON line instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
struct FaultRecord {
    fault: &'static str,
    /// What it did, e.g. `kill 2 (leader)`, `cut 1<->2 1<->3`.
    what: String,
    at_ms: u64,
    held_ms: u64,
    /// Writes acknowledged while it was held.
    acked_during: u64,
}

/// Counts of the range operator's attempts.
#[derive(Debug, Default, Clone, Serialize)]
struct RangeOps {
    splits_ok: u64,
    splits_failed: u64,
    merges_ok: u64,
    merges_failed: u64,
    transfers_ok: u64,
    transfers_failed: u64,
    moves_ok: u64,
    moves_failed: u64,
}

fn secs(s: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{flag} must be >= 0, not {s}"))
}

pub fn run(args: NemesisArgs) -> anyhow::Result<()> {
    if !(3..=7).contains(&args.nodes) {
        bail!("--nodes must be 3 to 7, not {}", args.nodes);
    }
    let links = args.nodes * (args.nodes - 1) * u64::from(args.shards);
    if args.shards == 0 || links > 100 {
        bail!(
            "--shards {} with --nodes {} needs {links} proxy ports; at most 100 (use fewer shards)",
            args.shards,
            args.nodes
        );
    }
    if args.faults.is_empty() {
        bail!("--faults names no fault; e.g. --faults kill,partition");
    }
    if args.clients == 0 || args.keys == 0 || args.ops_per_key == 0 {
        bail!("--clients, --keys and --ops-per-key must be at least 1");
    }
    let faketime = args
        .faketime_lib
        .clone()
        .or_else(|| Some(PathBuf::from(FAKETIME_DEBIAN)).filter(|p| p.is_file()));
    let mut faults = args.faults.clone();
    if args.failpoints && !faults.contains(&Fault::CrashPoint) {
        faults.push(Fault::CrashPoint);
    }
    if !args.failpoints && faults.contains(&Fault::CrashPoint) {
        bail!("the crash-point fault needs a failpoint build of quasar: pass --failpoints");
    }
    match &faketime {
        Some(lib) if !lib.is_file() => bail!(
            "--faketime-lib {}: no such file (install the Debian package faketime)",
            lib.display()
        ),
        Some(_) => {}
        None if args.faketime_lib.is_none() && faults.len() > 1 => {
            // The default set without libfaketime: every fault but the clock jump.
            faults.retain(|f| *f != Fault::ClockJump);
        }
        None if faults.contains(&Fault::ClockJump) => bail!(
            "the clock-jump fault needs libfaketime: install the Debian package faketime or \
             pass --faketime-lib PATH"
        ),
        None => {}
    }
    let replicas = args.replicas.unwrap_or(args.nodes);
    if !(3..=args.nodes).contains(&replicas) {
        bail!(
            "--replicas must be 3 to --nodes ({}), not {replicas}",
            args.nodes
        );
    }
    let duration = secs(args.duration_secs, "--duration-secs")?;
    let fault_min = secs(args.fault_min_secs, "--fault-min-secs")?;
    let fault_max = secs(args.fault_max_secs, "--fault-max-secs")?;
    if fault_max < fault_min {
        bail!("--fault-max-secs must be at least --fault-min-secs");
    }
    let calm = secs(args.calm_secs, "--calm-secs")?.max(Duration::from_millis(200));
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let exe = crate::target::quasar_binary(args.quasar_bin.as_deref())?;
    let dir = tempfile::Builder::new()
        .prefix("quasar-nemesis-")
        .tempdir()
        .context("cannot create a temporary directory for the nodes")?;
    if !args.json {
        eprintln!(
            "nemesis: seed {seed}, {} nodes, {:?} of faults, data in {}",
            args.nodes,
            duration,
            dir.path().display()
        );
    }

    let interrupted = crate::target::interrupt_flag()?;
    let start = |base: u16, root: PathBuf, routes| -> anyhow::Result<LocalCluster> {
        if faketime.is_some() {
            for id in 1..=args.nodes {
                let node_dir = root.join(format!("node-{id}"));
                std::fs::create_dir_all(&node_dir)?;
                std::fs::write(node_dir.join(CLOCK_FILE), "+0\n")?;
            }
        }
        LocalCluster::start(
            LocalClusterConfig {
                exe: exe.clone(),
                nodes: args.nodes,
                shards: usize::from(args.shards),
                base_port: Some(base),
                root,
                extra_args: [
                    "--cluster-id".to_string(),
                    CLUSTER.into(),
                    "--election-ticks".into(),
                    args.election_ticks.to_string(),
                    "--heartbeat-ticks".into(),
                    args.heartbeat_ticks.to_string(),
                    "--tick-ms".into(),
                    TICK_MS.to_string(),
                    "--replicas".into(),
                    replicas.to_string(),
                ]
                .into_iter()
                .chain(args.node_args.iter().cloned())
                .collect(),
                tls: None,
                peer_routes: routes,
                env: match &faketime {
                    Some(lib) => vec![
                        ("LD_PRELOAD".into(), lib.display().to_string()),
                        (
                            "FAKETIME_TIMESTAMP_FILE".into(),
                            format!("{{dir}}/{CLOCK_FILE}"),
                        ),
                        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
                    ],
                    None => Vec::new(),
                },
            },
            READY_TIMEOUT,
        )
    };
    // The ports were free when picked; another process may take one before the nodes bind
    // it (CI runs other clusters beside this one): try other ports, three times at most.
    let mut failures = Vec::new();
    let mut started = None;
    for attempt in 0..3 {
        let base = local_cluster::free_base_port()?;
        let proxy_base = local_cluster::free_base_port()?;
        let proxies = Proxies::start(args.nodes, args.shards, proxy_base, |i| {
            LocalCluster::listen_addr(base, i)
        })?;
        let root = match attempt {
            0 => dir.path().join("cluster"),
            n => dir.path().join(format!("cluster-retry-{n}")),
        };
        match start(base, root, proxies.routes.clone()) {
            Ok(cluster) => {
                started = Some((cluster, proxies));
                break;
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let Some((mut cluster, proxies)) = started else {
        bail!(
            "cannot start the cluster (3 tries on other ports):\n{}",
            failures.join("\n")
        );
    };

    let mut config = ClientConfig::new(
        ClusterId::from_name(CLUSTER),
        cluster
            .endpoints()
            .into_iter()
            .map(|(id, a)| (NodeId(id), a))
            .collect(),
        u32::from(args.shards),
    );
    config.request_timeout = Duration::from_millis(1000);
    config.io_timeout = Duration::from_millis(500);
    let client = |config: &ClientConfig| {
        let mut c = config.clone();
        c.session = SessionId(fastrand::u64(1..));
        BlockingClient::new(c)
    };

    let history = Arc::new(History::new(args.keys, args.ops_per_key));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for id in 1..=args.clients {
        let (c, h, s) = (client(&config), history.clone(), stop.clone());
        let (pause, seed) = (Duration::from_millis(args.pause_ms), seed ^ id);
        let value_bytes = args.value_bytes;
        threads.push(std::thread::spawn(move || {
            history::client_loop(id, c, &h, &s, pause, seed, value_bytes)
        }));
    }
    let range_ops = Arc::new(Mutex::new(RangeOps::default()));
    if !args.no_range_ops {
        let (h, s, ops) = (history.clone(), stop.clone(), range_ops.clone());
        let admin = AdminClient::new(config.clone()).with_total_timeout(Duration::from_secs(5));
        let seed = seed.rotate_left(17);
        let members: Vec<NodeId> = (1..=args.nodes).map(NodeId).collect();
        threads.push(std::thread::spawn(move || {
            range_operator(admin, &h, &s, &ops, seed, &members)
        }));
    }

    let mut probe = client(&config);
    let mut admin = AdminClient::new(config.clone()).with_total_timeout(Duration::from_secs(5));
    let mut records = Vec::new();
    let mut first_writes = Vec::new();
    let mut crash_points: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut outcome: anyhow::Result<()> = Ok(());
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if interrupted.load(Ordering::Relaxed) {
            outcome = Err(anyhow::anyhow!("interrupted (SIGINT or SIGTERM)"));
            break;
        }
        std::thread::sleep(calm.mul_f64(0.2 + 0.8 * rng.f64()));
        let fault = faults[rng.usize(0..faults.len())];
        let hold = fault_min + (fault_max - fault_min).mul_f64(rng.f64());
        let started = history.now();
        let mut ctx = FaultCtx {
            cluster: &mut cluster,
            proxies: &proxies,
            history: &history,
            probe: &mut probe,
            admin: &mut admin,
            rng: &mut rng,
            nodes: args.nodes,
            crash_points: &mut crash_points,
        };
        match ctx.inject(fault, hold) {
            Ok((what, first_write)) => {
                let ended = history.now();
                if let Some(ms) = first_write {
                    first_writes.push(ms);
                }
                records.push(FaultRecord {
                    fault: fault.name(),
                    what,
                    at_ms: started / 1_000_000,
                    held_ms: (ended - started) / 1_000_000,
                    acked_during: history::acked_writes(&history.ops(), started, ended),
                });
            }
            Err(e) => {
                outcome = Err(e.context(format!("during the {} fault", fault.name())));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }

    // Heal everything, bring every node back, and wait for one state everywhere.
    proxies.heal();
    for id in 1..=args.nodes {
        let _ = cluster.signal(id, Signal::SIGCONT);
    }
    let down: Vec<u64> = (1..=args.nodes)
        .filter(|&id| cluster.node_mut(id).is_ok_and(|n| !n.is_running()))
        .collect();
    if outcome.is_ok() && !down.is_empty() {
        outcome = cluster
            .restart_many(&down, READY_TIMEOUT)
            .context("restarting the nodes down at the end");
    }
    let converged = match &outcome {
        Ok(()) => converge(&mut cluster, args.nodes),
        Err(_) => Err("not checked (the run stopped early)".to_string()),
    };
    let final_reads = match &outcome {
        Ok(()) => final_reads(&history, &config),
        Err(_) => 0,
    };
    let verdicts = history::check(&history.ops());
    drop(cluster);
    drop(proxies);

    // The report.
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &records {
        *counts.entry(r.fault).or_default() += 1;
    }
    let kill_cycles = counts.get("kill").copied().unwrap_or(0)
        + counts.get("kill-minority").copied().unwrap_or(0)
        + counts.get("kill-all").copied().unwrap_or(0);
    let mut fw = latency_histogram();
    for ms in &first_writes {
        let _ = fw.record((ms * 1000).clamp(1, 60_000_000));
    }
    let fw = Percentiles::from_histogram(&fw);
    let election_ms = u64::from(args.election_ticks) * TICK_MS;
    let fired: u64 = crash_points.values().map(|c| c.1).sum();
    if args.failpoints && outcome.is_ok() && counts.contains_key("crash-point") && fired == 0 {
        outcome = Err(anyhow::anyhow!(
            "no crash point ever fired: is {} a failpoint build (cargo build -p quasar-node \
             --features failpoints)?",
            args.quasar_bin
                .as_ref()
                .map_or("the quasar binary".into(), |p| p.display().to_string())
        ));
    }
    let passed = outcome.is_ok() && converged.is_ok() && verdicts.ok();
    let mut report = Report::new("nemesis", &args);
    report
        .figure("seed", seed)
        .figure("passed", passed)
        .figure("faults", &counts)
        .figure("kill_cycles", kill_cycles)
        .figure(
            "all_node_kills",
            counts.get("kill-all").copied().unwrap_or(0),
        )
        .figure("leader_kills", first_writes.len())
        .figure("election_timeout_ms", election_ms)
        .figure("first_write_after_leader_kill_p50_ms", fw.p50_us / 1000)
        .figure("first_write_after_leader_kill_max_ms", fw.max_us / 1000)
        .figure("ops", &verdicts.ops)
        .figure("keys", verdicts.keys)
        .figure("final_reads", final_reads)
        .figure(
            "linearizability_violations",
            &verdicts.linearizability_violations,
        )
        .figure("unknown_keys", verdicts.unknown_keys)
        .figure("version_regressions", &verdicts.version_regressions)
        .figure("invented_values", &verdicts.invented_values)
        .figure(
            "replicas_converged",
            match &converged {
                Ok(ranges) => format!("yes ({ranges} ranges, equal state hashes)"),
                Err(e) => format!("NO: {e}"),
            },
        )
        .figure(
            "crash_points",
            crash_points
                .iter()
                .map(|(p, (armed, fired))| {
                    (*p, serde_json::json!({"armed": armed, "fired": fired}))
                })
                .collect::<BTreeMap<_, _>>(),
        )
        .figure(
            "range_ops",
            &*range_ops.lock().unwrap_or_else(|e| e.into_inner()),
        );
    if !args.json {
        for r in &records {
            report.figure(
                &format!("fault @{:>6} ms", r.at_ms),
                format!(
                    "{:<13} {} (held {} ms, {} writes acknowledged meanwhile)",
                    r.fault, r.what, r.held_ms, r.acked_during
                ),
            );
        }
    } else {
        report.figure("fault_log", &records);
    }
    report.print(args.json);
    if let Err(e) = outcome {
        let kept = dir.keep();
        bail!(
            "nemesis stopped early: {e:#}; node logs kept in {}",
            kept.display()
        );
    }
    if !passed {
        let kept = dir.keep();
        bail!(
            "nemesis FAILED (seed {seed}): see the violations above; node logs kept in {}",
            kept.display()
        );
    }
    if args.keep_dir {
        eprintln!("nemesis: data kept in {}", dir.keep().display());
    }
    Ok(())
}

struct FaultCtx<'a> {
    cluster: &'a mut LocalCluster,
    proxies: &'a Proxies,
    history: &'a History,
    probe: &'a mut BlockingClient,
    admin: &'a mut AdminClient,
    rng: &'a mut fastrand::Rng,
    nodes: u64,
    /// Per crash point: (armed, fired).
    crash_points: &'a mut BTreeMap<&'static str, (u64, u64)>,
}

impl FaultCtx<'_> {
    /// Injects `fault`, holds it for `hold` and heals it. Returns what it did and, after a
    /// leader kill, the milliseconds from the kill to the first successful write.
    fn inject(&mut self, fault: Fault, hold: Duration) -> anyhow::Result<(String, Option<u64>)> {
        let all: Vec<u64> = (1..=self.nodes).collect();
        let minority = (self.nodes - 1) / 2;
        match fault {
            Fault::Kill | Fault::KillMinority | Fault::KillAll => {
                let (victims, hot) = match fault {
                    Fault::Kill => {
                        let leader = if self.rng.bool() {
                            self.hot_leader()
                        } else {
                            None
                        };
                        match leader {
                            Some((l, key)) => (vec![l], Some(key)),
                            None => (vec![self.pick(&all)], None),
                        }
                    }
                    Fault::KillMinority => (self.pick_many(&all, minority as usize), None),
                    _ => (all.clone(), None),
                };
                let killed_at = Instant::now();
                for &v in &victims {
                    self.cluster.kill9(v)?;
                }
                let first_write = match hot {
                    Some(key) => Some(self.probe_write(key, killed_at)?),
                    None => None,
                };
                std::thread::sleep(hold.saturating_sub(killed_at.elapsed()));
                self.cluster
                    .restart_many(&victims, READY_TIMEOUT)
                    .with_context(|| format!("restart of nodes {victims:?}"))?;
                let what = match first_write {
                    Some(ms) => format!(
                        "kill -9 node {} (leader of the hot key), first write after {ms} ms",
                        victims[0]
                    ),
                    None => format!("kill -9 nodes {victims:?}"),
                };
                Ok((what, first_write))
            }
            Fault::Pause => {
                let victim = match self.rng.bool().then(|| self.hot_leader()).flatten() {
                    Some((l, _)) => l,
                    None => self.pick(&all),
                };
                self.cluster.signal(victim, Signal::SIGSTOP)?;
                std::thread::sleep(hold);
                self.cluster.signal(victim, Signal::SIGCONT)?;
                Ok((format!("SIGSTOP node {victim}, then SIGCONT"), None))
            }
            Fault::CrashPoint => {
                // Each point in turn, on a random node, at a random pass.
                let points = quasar_wal::crash::POINTS;
                let armed: u64 = self.crash_points.values().map(|c| c.0).sum();
                let point = points[armed as usize % points.len()];
                let victim = self.pick(&all);
                // The points of every write fire at a random pass; the rarer ones (segments,
                // snapshots, garbage collection, splits, merges) at the first.
                let passes = if point.starts_with("wal-") && point.contains("sync")
                    || point.starts_with("wal-append")
                {
                    self.rng.u32(0..20)
                } else {
                    0
                };
                self.cluster.kill9(victim)?;
                let spec = format!("{point}={passes}*off->return");
                self.cluster
                    .start_with_env(victim, &[("FAILPOINTS".into(), spec)])?;
                let frequent = passes > 0 || point.starts_with("wal-append");
                let wait = if frequent || point.contains("sync") {
                    CRASH_POINT_WAIT
                } else {
                    RARE_CRASH_POINT_WAIT
                };
                let deadline = Instant::now() + hold.max(wait);
                // A removal, split or merge reaches the armed node only if the range
                // operator happens to pick one of its ranges: make one instead.
                let moved = match point {
                    "replica-gone-mark" => self.move_replica_off(victim, deadline),
                    "split-apply" | "merge-apply" => {
                        self.split_or_merge_at(victim, point == "merge-apply", deadline)
                    }
                    _ => None,
                };
                let mut fired = false;
                while Instant::now() < deadline {
                    if let Some(status) = self.cluster.node_mut(victim)?.exit_status() {
                        use std::os::unix::process::ExitStatusExt;
                        if status.signal() != Some(libc::SIGABRT) {
                            bail!(
                                "node {victim} armed at crash point {point} exited with {status} \
                                 instead of aborting there (see its log)"
                            );
                        }
                        fired = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let entry = self.crash_points.entry(point).or_default();
                entry.0 += 1;
                entry.1 += u64::from(fired);
                self.cluster.kill9(victim)?;
                self.cluster
                    .restart_many(&[victim], READY_TIMEOUT)
                    .with_context(|| {
                        format!("restart of node {victim} after crash point {point}")
                    })?;
                let moved = moved.map_or(String::new(), |m| format!(" after {m}"));
                let what = if fired {
                    format!(
                        "node {victim} aborted at {point} (pass {}){moved}",
                        passes + 1
                    )
                } else {
                    format!(
                        "node {victim} armed at {point} (pass {}), not reached{moved}",
                        passes + 1
                    )
                };
                Ok((what, None))
            }
            Fault::ClockJump => {
                // Wall clocks of some nodes jump by hours or days, forward or back; the
                // monotonic clock (ticks, leases, timeouts) is untouched.
                let size = 1 + self.rng.usize(0..self.nodes as usize);
                let victims = self.pick_many(&all, size);
                let jumps = ["+1h", "-1h", "+7d", "-30d", "+365d", "-2h"];
                let mut what = Vec::new();
                for &v in &victims {
                    let jump = jumps[self.rng.usize(0..jumps.len())];
                    self.set_clock(v, jump)?;
                    what.push(format!("node {v} {jump}"));
                }
                std::thread::sleep(hold);
                for &v in &victims {
                    self.set_clock(v, "+0")?;
                }
                Ok((format!("wall clock {}", what.join(", ")), None))
            }
            Fault::Partition | Fault::OneWay | Fault::Bridge => {
                let (cut, what) = match fault {
                    Fault::Partition => {
                        let size = 1 + self.rng.usize(0..minority as usize);
                        let side = self.pick_many(&all, size);
                        let other: Vec<u64> =
                            all.iter().copied().filter(|n| !side.contains(n)).collect();
                        (both_ways(&side, &other), format!("{side:?} | {other:?}"))
                    }
                    Fault::OneWay => {
                        let x = self.pick(&all);
                        let others: Vec<u64> = all.iter().copied().filter(|&n| n != x).collect();
                        if self.rng.bool() {
                            let cut = others.iter().map(|&o| (x, o)).collect();
                            (cut, format!("node {x} cannot send"))
                        } else {
                            let cut = others.iter().map(|&o| (o, x)).collect();
                            (cut, format!("node {x} cannot receive"))
                        }
                    }
                    _ => {
                        let bridge = self.pick(&all);
                        let mut rest: Vec<u64> =
                            all.iter().copied().filter(|&n| n != bridge).collect();
                        self.rng.shuffle(&mut rest);
                        let (a, b) = rest.split_at(rest.len() / 2);
                        (
                            both_ways(a, b),
                            format!("{a:?} | {b:?}, node {bridge} sees both"),
                        )
                    }
                };
                self.proxies.cut(&cut);
                std::thread::sleep(hold);
                self.proxies.heal();
                Ok((what, None))
            }
        }
    }

    /// Sets node `id`'s wall clock offset (libfaketime re-reads the file within a second).
    fn set_clock(&mut self, id: u64, offset: &str) -> anyhow::Result<()> {
        let path = self.cluster.node_mut(id)?.dir.join(CLOCK_FILE);
        std::fs::write(&path, format!("{offset}\n"))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn pick(&mut self, from: &[u64]) -> u64 {
        from[self.rng.usize(0..from.len())]
    }

    fn pick_many(&mut self, from: &[u64], n: usize) -> Vec<u64> {
        let mut all = from.to_vec();
        self.rng.shuffle(&mut all);
        all.truncate(n);
        all.sort_unstable();
        all
    }

    /// Moves one replica of a range from `node` to a member that holds none (possible only
    /// with `--replicas` below `--nodes`), retrying until `deadline`; what it moved.
    fn move_replica_off(&mut self, node: u64, deadline: Instant) -> Option<String> {
        let from = NodeId(node);
        while Instant::now() < deadline {
            let Ok(ranges) = self.admin.list_ranges() else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let candidates: Vec<(RangeInfo, NodeId)> = ranges
                .into_iter()
                .filter(|r| r.descriptor.replica(from).is_some())
                .filter_map(|r| {
                    let to = (1..=self.nodes)
                        .map(NodeId)
                        .find(|&m| r.descriptor.replica(m).is_none())?;
                    Some((r, to))
                })
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let (info, to) = candidates[self.rng.usize(0..candidates.len())].clone();
            let range = info.descriptor.id.0;
            if self.admin.move_seen(info, from, to).is_ok() {
                return Some(format!(
                    "moving range {range} from node {node} to node {}",
                    to.0
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Splits a range with a replica on `node` at a key of the clients' window, or merges
    /// two neighbours that both have one, retrying until `deadline`; what it did.
    fn split_or_merge_at(&mut self, node: u64, merge: bool, deadline: Instant) -> Option<String> {
        let on = |r: &RangeInfo| r.descriptor.replica(NodeId(node)).is_some();
        while Instant::now() < deadline {
            let done = if merge {
                let Ok(ranges) = self.admin.list_ranges() else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                // Neighbours on the same nodes, the left one a user range.
                let lefts: Vec<RangeInfo> = ranges
                    .windows(2)
                    .filter(|w| w[0].descriptor.id.0 != META_RANGE && on(&w[0]) && on(&w[1]))
                    .filter(|w| {
                        let nodes = |r: &RangeInfo| {
                            let mut n: Vec<NodeId> =
                                r.descriptor.replicas.iter().map(|x| x.node).collect();
                            n.sort_unstable();
                            n
                        };
                        nodes(&w[0]) == nodes(&w[1])
                    })
                    .map(|w| w[0].clone())
                    .collect();
                if lefts.is_empty() {
                    return None;
                }
                let left = lefts[self.rng.usize(0..lefts.len())].clone();
                let range = left.descriptor.id.0;
                self.admin
                    .merge_seen(left)
                    .ok()
                    .map(|_| format!("merging range {range} with its right neighbour"))
            } else {
                let key = history::key_name(self.history.current_key(self.rng));
                match self.admin.describe_key(&key) {
                    Ok(info) if on(&info) && info.descriptor.start != key => {
                        let range = info.descriptor.id.0;
                        self.admin.split_seen(info, &key).ok().map(|_| {
                            format!(
                                "splitting range {range} at {}",
                                String::from_utf8_lossy(&key)
                            )
                        })
                    }
                    _ => None,
                }
            };
            if done.is_some() {
                return done;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// The leader of the range holding a key of the clients' window, and that key.
    fn hot_leader(&mut self) -> Option<(u64, u64)> {
        let key = self.history.current_key(self.rng);
        let info = self.admin.describe_key(&history::key_name(key)).ok()?;
        let leader = self.cluster.leader_of(info.descriptor.id.0)?;
        Some((leader, key))
    }

    /// Puts to `key` until a put succeeds; the milliseconds since `since`.
    fn probe_write(&mut self, key: u64, since: Instant) -> anyhow::Result<u64> {
        let mut n = 0;
        while since.elapsed() < PROBE_TIMEOUT {
            n += 1;
            let value = format!("probe-{}-{n}", self.history.now()).into_bytes();
            if let Outcome::Written(_) = self.history.run(0, self.probe, key, Call::Put(value)) {
                return Ok(since.elapsed().as_millis() as u64);
            }
        }
        bail!("no write succeeded within {PROBE_TIMEOUT:?} of killing the leader")
    }
}

/// Every link between `a` and `b`, both ways.
fn both_ways(a: &[u64], b: &[u64]) -> Vec<Link> {
    let mut cut = Vec::new();
    for &x in a {
        for &y in b {
            cut.push((x, y));
            cut.push((y, x));
        }
    }
    cut
}

/// Splits, merges, leadership transfers and (when some member holds no replica of a range)
/// replica moves at random until `stop`.
fn range_operator(
    mut admin: AdminClient,
    history: &History,
    stop: &AtomicBool,
    counts: &Mutex<RangeOps>,
    seed: u64,
    members: &[NodeId],
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.u64(500..2000)));
        let key = history::key_name(history.current_key(&mut rng));
        let info = match admin.describe_key(&key) {
            Ok(info) => info,
            Err(_) => continue,
        };
        let choice = rng.u32(0..4);
        let ok = match choice {
            0 if info.descriptor.start != key => admin.split_seen(info, &key).is_ok(),
            0 => continue,
            1 => {
                // A user range (not the meta range 1) that has a right neighbour.
                let Ok(all) = admin.list_ranges() else {
                    continue;
                };
                let lefts: Vec<_> = all
                    .into_iter()
                    .filter(|r| r.descriptor.id.0 != META_RANGE && !r.descriptor.end.is_empty())
                    .collect();
                if lefts.is_empty() {
                    continue;
                }
                let left = lefts[rng.usize(0..lefts.len())].clone();
                admin.merge_seen(left).is_ok()
            }
            3 => {
                let holders: Vec<NodeId> =
                    info.descriptor.replicas.iter().map(|r| r.node).collect();
                let free: Vec<NodeId> = members
                    .iter()
                    .copied()
                    .filter(|m| !holders.contains(m))
                    .collect();
                if free.is_empty() {
                    continue;
                }
                let from = holders[rng.usize(0..holders.len())];
                let to = free[rng.usize(0..free.len())];
                admin.move_seen(info, from, to).is_ok()
            }
            _ => {
                let voters: Vec<NodeId> = info
                    .descriptor
                    .voters()
                    .filter(|&n| Some(n) != info.leader)
                    .collect();
                if voters.is_empty() {
                    continue;
                }
                let to = voters[rng.usize(0..voters.len())];
                admin.transfer_seen(info, to).is_ok()
            }
        };
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        match (choice, ok) {
            (0, true) => c.splits_ok += 1,
            (0, false) => c.splits_failed += 1,
            (1, true) => c.merges_ok += 1,
            (1, false) => c.merges_failed += 1,
            (3, true) => c.moves_ok += 1,
            (3, false) => c.moves_failed += 1,
            (_, true) => c.transfers_ok += 1,
            (_, false) => c.transfers_failed += 1,
        }
    }
}

/// Waits until every range is held by exactly the nodes its newest descriptor names (a
/// replica moved away deleted itself), all with the same applied index and state hash, and
/// led by one of them. Returns the number of ranges.
fn converge(cluster: &mut LocalCluster, nodes: u64) -> Result<usize, String> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut seen: BTreeMap<u64, Vec<(u64, serde_json::Value)>> = BTreeMap::new();
        let mut complete = true;
        for id in 1..=nodes {
            let Ok(node) = cluster.node_mut(id) else {
                return Err(format!("no node {id}"));
            };
            let admin = node.admin;
            match cluster.admin_get(admin, "/status", Duration::from_secs(1)) {
                Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(v) => {
                        for r in v["ranges"].as_array().into_iter().flatten() {
                            if let Some(range) = r["range_id"].as_u64() {
                                seen.entry(range).or_default().push((id, r.clone()));
                            }
                        }
                    }
                    Err(_) => complete = false,
                },
                _ => complete = false,
            }
        }
        let mut problems = Vec::new();
        for (range, holders) in &seen {
            let first = &holders[0].1;
            let same = holders.iter().all(|(_, r)| {
                r["applied"] == first["applied"]
                    && r["state_hash"].is_string()
                    && r["state_hash"] == first["state_hash"]
            });
            let led = holders.iter().any(|(_, r)| r["role"] == "leader");
            let newest = holders
                .iter()
                .map(|(_, r)| r)
                .max_by_key(|r| r["epoch"].as_u64().unwrap_or(0));
            let mut named: Vec<u64> = newest
                .and_then(|r| r["replicas"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|x| x["node"].as_u64())
                .collect();
            named.sort_unstable();
            let held: Vec<u64> = holders.iter().map(|(id, _)| *id).collect();
            if held != named || !same || !led {
                problems.push(format!(
                    "range {range}: {}",
                    holders
                        .iter()
                        .map(|(id, r)| format!(
                            "node {id} {} applied {} hash {}",
                            r["role"], r["applied"], r["state_hash"]
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if complete && problems.is_empty() && !seen.is_empty() {
            return Ok(seen.len());
        }
        last = problems.join("; ");
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("ranges differ after {CONVERGE_TIMEOUT:?}: {last}"))
}

/// Reads every key used once more (recorded in the history). Returns how many succeeded.
fn final_reads(history: &History, config: &ClientConfig) -> u64 {
    let mut c = config.clone();
    c.session = SessionId(fastrand::u64(1..));
    let mut client = BlockingClient::new(c);
    let mut ok = 0;
    for key in history.keys_used() {
        for _ in 0..FINAL_READ_ATTEMPTS {
            if let Outcome::Read(_) = history.run(u64::MAX, &mut client, key, Call::Get) {
                ok += 1;
                break;
            }
        }
    }
    ok
}
