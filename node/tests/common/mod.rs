//! Harness of the process-level tests: a cluster of real `quasar start` processes on
//! loopback, each with its own temporary data directory and log file.
//!
//! - [`Cluster::start`] reserves ports, spawns the nodes and waits (bounded) until every
//!   `/health` answers 200; a node that exits or never gets healthy fails the test with the
//!   tail of its log.
//! - [`Node`] owns its child process: [`Node::kill9`], [`Node::terminate`],
//!   [`Node::restart`]; dropping a node SIGKILLs the child it started (by its PID, through
//!   `Child::kill`), so a panicking test leaves nothing running. When the test panics, each
//!   node prints the tail of its log as it is dropped.
//! - [`Node::status`] reads `GET /status` of the admin port over a plain `std` socket
//!   (HTTP/1.0, every socket call bounded by a timeout).
//! - [`Cluster::client`] is an rpc `BlockingClient` over the nodes' shard-0 ports.
//!
//! The clusters of one test binary run one at a time ([`Cluster`] holds a process-wide lock):
//! several clusters of busy shard loops on a 2-core CI box would starve each other's Raft
//! ticks and turn every test into an election storm.
//!
//! Set `QUASAR_TEST_KEEP_DIRS=1` to keep the data directories and logs of a failed test.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{ClusterId, NodeId};
use serde_json::Value;
use tempfile::TempDir;

/// The cluster name every harness node runs with (`--cluster-id`, the default).
pub const CLUSTER_NAME: &str = "quasar";
/// The user range at bootstrap (keys `[\x01, ..)`), served by group 2.
pub const USER_RANGE: u64 = 2;
/// How long a (re)started node has to answer `/health` with 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Raft timing of every harness node: 10 ms ticks, elections after 300-600 ms, heartbeats
/// every 30 ms.
pub const TIMING_FLAGS: [&str; 10] = [
    // Small snapshots, so that a node restarted after a few hundred writes catches up
    // through a snapshot transfer.
    "--snapshot-entries",
    "200",
    "--tick-ms",
    "10",
    "--election-ticks",
    "30",
    "--heartbeat-ticks",
    "3",
    "--pin",
    "false",
];

/// The WAL segments of every harness node: 8 MiB (the smallest allowed) instead of 64. A
/// shard writes its active segment and two prepared ones in zeros at its first start, and
/// a test binary starts its clusters at once: with 64 MiB segments the eight clusters of
/// `bad_input` wrote 9 GiB of zeros (and synced them) before their first request, and a
/// shard now and then could not open its WAL within the 20 s start timeout.
pub const SMALL_WAL_FLAGS: [&str; 2] = ["--wal-segment-bytes", "8388608"];

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET path` to `addr` over HTTP/1.0 (so the answer is never chunked and the server
/// closes after it), bounded by timeouts; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("GET {path} to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("GET {path} from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path} from {addr}: no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path} from {addr}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The process-wide lock that runs the clusters of one test binary one at a time.
fn cluster_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked while holding it leaves nothing behind (its nodes are dropped).
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

/// The lowest ephemeral port of this host: ports below it are never handed out to outgoing
/// connections, so a node dialing a peer cannot take a port reserved for another node.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Reserves `count` consecutive free loopback ports and returns the first. The ports are
/// checked by binding all of them (then released, for the nodes to bind); a base is picked
/// at random below the ephemeral range, falling back to one near a port the kernel hands out.
fn reserve_ports(count: usize) -> u16 {
    let count = u16::try_from(count).expect("port count fits in u16");
    let low = ephemeral_low();
    for attempt in 0..200u32 {
        let base = if low > 12_000 && attempt < 150 {
            let span = u64::from(low - 10_000 - count);
            10_000 + (random_u64() % span) as u16
        } else {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(addr) if addr.port() < u16::MAX - count => addr.port(),
                _ => continue,
            }
        };
        let held: Result<Vec<TcpListener>, _> = (0..count)
            .map(|i| TcpListener::bind((Ipv4Addr::LOCALHOST, base + i)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("found no {count} consecutive free ports on 127.0.0.1 in 200 tries");
}

/// One `quasar start` process and its data directory.
pub struct Node {
    pub id: u64,
    /// Shard 0's port; shard i listens on `base_port + i`.
    pub base_port: u16,
    pub admin_port: u16,
    pub shards: u32,
    args: Vec<String>,
    dir: Option<TempDir>,
    child: Option<Child>,
    /// The exit status of the last process, once reaped.
    last_exit: Option<ExitStatus>,
}

impl Node {
    fn new(
        id: u64,
        base_port: u16,
        admin_port: u16,
        shards: u32,
        initial: &str,
        extra: &[&str],
    ) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("quasar-node{id}-"))
            .tempdir()
            .expect("create a temp dir");
        let data = dir.path().join("data");
        let mut args: Vec<String> = vec![
            "start".into(),
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{base_port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
            "--initial-cluster".into(),
            initial.into(),
            "--cluster-id".into(),
            CLUSTER_NAME.into(),
            "--shards".into(),
            shards.to_string(),
        ];
        args.extend(TIMING_FLAGS.iter().map(|s| s.to_string()));
        args.extend(SMALL_WAL_FLAGS.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        Node {
            id,
            base_port,
            admin_port,
            shards,
            args,
            dir: Some(dir),
            child: None,
            last_exit: None,
        }
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// stdout and stderr of every run of this node, appended.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("node.log")
    }

    /// Shard 0's address (the one clients and peers are given).
    pub fn addr(&self) -> SocketAddr {
        self.shard_addr(0)
    }

    pub fn shard_addr(&self, shard: u32) -> SocketAddr {
        let port = self.base_port + u16::try_from(shard).expect("shard fits in u16");
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.admin_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process this node started is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// The exit status of the last run, once it ended and was reaped.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node log");
        let err = log.try_clone().expect("clone the log handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_quasar"));
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", self.id));
        self.last_exit = None;
        self.child = Some(child);
    }

    /// Waits until `/health` answers 200; fails if the process exits first or time runs out.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return Err(format!(
                    "node {} exited ({:?}) before answering /health",
                    self.id, self.last_exit
                ));
            }
            let last = match http_get(self.admin_addr(), "/health") {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} not healthy after {timeout:?}: last /health: {last}",
                    self.id
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (through `Child::kill`, by the PID this harness started) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // NOTE: an error means the process already exited; wait() reaps it either way.
            let _ = child.kill();
            self.last_exit = child.wait().ok();
        }
    }

    /// Sends SIGTERM and returns at once; see [`Node::wait_exit`].
    pub fn terminate(&mut self) {
        let pid = self.pid().expect("terminate: the node is not running");
        // The child is not reaped yet, so its PID cannot have been reused.
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Waits (bounded) for the process to exit and returns its status; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if wait_until(timeout, || !self.is_running()) {
            self.last_exit
        } else {
            None
        }
    }

    /// Starts the node again with the same flags and data directory and waits until healthy.
    pub fn restart(&mut self) {
        if self.is_running() {
            panic!("restart: node {} is still running", self.id);
        }
        self.spawn();
        if let Err(e) = self.wait_healthy(START_TIMEOUT) {
            panic!("{e}\n{}", self.log_tail(60));
        }
    }

    /// `GET /health`: the status code, or why there was none.
    pub fn health(&self) -> Result<u16, String> {
        http_get(self.admin_addr(), "/health").map(|(code, _)| code)
    }

    /// `GET /status`, parsed.
    pub fn status(&self) -> Result<Value, String> {
        let (code, body) = http_get(self.admin_addr(), "/status")?;
        if code != 200 {
            return Err(format!("node {}: /status answered {code}: {body}", self.id));
        }
        serde_json::from_str(&body).map_err(|e| format!("node {}: /status: {e}: {body}", self.id))
    }

    /// The entry of `range_id` in `/status`'s `ranges`.
    pub fn range_status(&self, range_id: u64) -> Result<Value, String> {
        let status = self.status()?;
        status["ranges"]
            .as_array()
            .and_then(|ranges| {
                ranges
                    .iter()
                    .find(|r| r["range_id"].as_u64() == Some(range_id))
            })
            .cloned()
            .ok_or_else(|| format!("node {}: no range {range_id} in /status: {status}", self.id))
    }

    /// The last `lines` lines of the node's log, with a heading.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            // NOTE: a log that cannot be read shows as empty; this is diagnostics only.
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!(
            "----- node {} log ({}), last {lines} lines -----\n{tail}\n----- end of node {} log -----",
            self.id,
            self.log_path().display(),
            self.id
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
            if std::env::var_os("QUASAR_TEST_KEEP_DIRS").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept {}", dir.keep().display());
                }
            }
        }
    }
}

/// A cluster of `quasar start` processes on loopback.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub shards: u32,
    // Declared last: released after every node is dropped (killed).
    _lock: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) with `shards` shards each and waits until every node's
    /// `/health` answers 200 (within [`START_TIMEOUT`] all together).
    pub fn start(n: u64, shards: u32) -> Cluster {
        Cluster::start_with(n, shards, &[])
    }

    /// As [`Cluster::start`], with `extra` flags for every node's `quasar start`.
    pub fn start_with(n: u64, shards: u32, extra: &[&str]) -> Cluster {
        assert!(n >= 1 && shards >= 1);
        let lock = cluster_lock();
        // The reserved ports are free when checked but not held: another process may bind
        // one before a node does. Such a start is retried on other ports (twice at most).
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Cluster::try_start(n, shards, extra) {
                Ok(nodes) => {
                    return Cluster {
                        nodes,
                        shards,
                        _lock: lock,
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "cluster start failed, ports taken three times: {}",
            failures.join("; then ")
        );
    }

    /// One start on freshly reserved ports: the nodes, or why not when a port was taken by
    /// another process meanwhile (any other failure panics here, with every node's log).
    fn try_start(n: u64, shards: u32, extra: &[&str]) -> Result<Vec<Node>, String> {
        // Per node: `shards` consecutive shard ports, then its admin port.
        let stride = shards as usize + 1;
        let base = reserve_ports(n as usize * stride);
        let port = |i: u64, offset: usize| base + (i as usize * stride + offset) as u16;
        let initial = (0..n)
            .map(|i| format!("{}=127.0.0.1:{}", i + 1, port(i, 0)))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| {
                Node::new(
                    i + 1,
                    port(i, 0),
                    port(i, shards as usize),
                    shards,
                    &initial,
                    extra,
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for i in 0..nodes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = nodes[i].wait_healthy(left.max(Duration::from_millis(100))) {
                let port_taken = nodes
                    .iter()
                    .any(|x| x.log_tail(40).contains("Address already in use"));
                if !port_taken {
                    // Dropping `nodes` kills every child and prints every log tail.
                    panic!("cluster start failed: {e}");
                }
                eprintln!("cluster start: a port was taken meanwhile, retrying: {e}");
                // Dropping `nodes` kills every child.
                return Err(e);
            }
        }
        Ok(nodes)
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Ids of the nodes whose process this harness has running.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// The node that reports itself leader of `range_id` in `/status` (the one with the
    /// highest term if several do), asking only running nodes.
    pub fn leader_of(&self, range_id: u64) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| {
                let r = n.range_status(range_id).ok()?;
                (r["role"] == "leader").then(|| (r["term"].as_u64().unwrap_or(0), n.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Waits (bounded) until some running node leads `range_id`.
    pub fn wait_leader(&self, range_id: u64, timeout: Duration) -> u64 {
        let mut leader = None;
        if wait_until(timeout, || {
            leader = self.leader_of(range_id);
            leader.is_some()
        }) {
            return leader.expect("set when found");
        }
        panic!(
            "no leader of range {range_id} after {timeout:?}; /status of each node:\n{}",
            self.statuses()
        );
    }

    /// Waits (bounded) until every running node reports the same `applied` index and
    /// `state_hash` for `range_id` and one of them leads it; returns the common `applied`.
    pub fn wait_converged(&self, range_id: u64, timeout: Duration) -> Result<u64, String> {
        let mut last = String::new();
        let mut applied = 0;
        let done = wait_until(timeout, || {
            let seen: Result<Vec<(u64, Value)>, String> = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some())
                .map(|n| Ok((n.id, n.range_status(range_id)?)))
                .collect();
            let seen = match seen {
                Ok(seen) => seen,
                Err(e) => {
                    last = e;
                    return false;
                }
            };
            last = seen
                .iter()
                .map(|(id, r)| {
                    format!(
                        "node {id}: role {} term {} commit {} applied {} state_hash {}",
                        r["role"], r["term"], r["commit"], r["applied"], r["state_hash"]
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let Some((_, first)) = seen.first() else {
                return false;
            };
            let same = seen.iter().all(|(_, r)| {
                r["applied"].as_u64().is_some()
                    && r["applied"] == first["applied"]
                    && r["state_hash"].is_string()
                    && r["state_hash"] == first["state_hash"]
            });
            let led = seen.iter().any(|(_, r)| r["role"] == "leader");
            applied = first["applied"].as_u64().unwrap_or(0);
            same && led
        });
        if done {
            Ok(applied)
        } else {
            Err(format!(
                "range {range_id} did not converge in {timeout:?}: {last}"
            ))
        }
    }

    /// `/status` of every running node, for failure messages.
    pub fn statuses(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| match n.status() {
                Ok(v) => format!("node {}: {v}", n.id),
                Err(e) => format!("node {}: {e}", n.id),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client configuration over the given nodes: 2 s per attempt, 20 attempts.
    pub fn client_config(&self, ids: &[u64]) -> ClientConfig {
        let nodes = ids
            .iter()
            .map(|&id| (NodeId(id), self.node(id).addr()))
            .collect();
        let mut config = ClientConfig::new(ClusterId::from_name(CLUSTER_NAME), nodes, self.shards);
        config.request_timeout = Duration::from_secs(2);
        config.io_timeout = Duration::from_secs(1);
        config.max_attempts = 20;
        config
    }

    /// A client that knows every node of the cluster.
    pub fn client(&self) -> BlockingClient {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        BlockingClient::new(self.client_config(&ids))
    }

    /// A client that knows only the nodes `ids`.
    pub fn client_of(&self, ids: &[u64]) -> BlockingClient {
        BlockingClient::new(self.client_config(ids))
    }
}

/// `key-0042`: the keys the tests write (all in the user range).
pub fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// The value written under [`key`]`(i)` by the test tagged `tag`.
pub fn value(tag: &str, i: usize) -> Vec<u8> {
    format!("{tag}-value-{i}").into_bytes()
}

/// What a [`spawn_writer`] thread did: the values acknowledged per key index, and how many
/// writes failed.
pub type Written = (BTreeMap<usize, Vec<u8>>, usize);

/// A steady write load until `stop` (or 2 minutes, or `keys` writes): unique keys
/// `key(0..keys)` in a scattered order, one write at a time, values tagged `tag`.
pub fn spawn_writer(
    mut client: BlockingClient,
    tag: &'static str,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Written> {
    std::thread::spawn(move || {
        let mut acked: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut failed = 0usize;
        let started = Instant::now();
        for i in 0..keys {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                break;
            }
            let k = i * 7919 % keys;
            let v = value(tag, k);
            match client.put(&key(k), &v) {
                Ok(_) => {
                    acked.insert(k, v);
                }
                Err(_) => failed += 1,
            }
        }
        (acked, failed)
    })
}

/// Stops the [`spawn_writer`] load and returns what it did, checking it made progress.
pub fn stop_writer(stop: &AtomicBool, writer: JoinHandle<Written>) -> Written {
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().expect("the writer thread finished");
    assert!(
        acked.len() > 50,
        "the load made too little progress: {} acknowledged, {failed} failed",
        acked.len()
    );
    (acked, failed)
}

/// Reads back every acknowledged write of `acked` and panics listing the first that do
/// not read back.
pub fn assert_readable(client: &mut BlockingClient, acked: &BTreeMap<usize, Vec<u8>>) {
    let mut wrong = Vec::new();
    for (k, v) in acked {
        match client.get(&key(*k)) {
            Ok(Some(got)) if got.value == *v => {}
            Ok(Some(got)) => wrong.push(format!(
                "key {k}: another value ({} bytes, version {})",
                got.value.len(),
                got.version.0
            )),
            other => wrong.push(format!("key {k}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes not readable: {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
}
