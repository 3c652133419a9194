//! A cluster of `quasar start` child processes on loopback, for `quasar demo` and for
//! `quasar-bench --spawn`: ports, data directories, start, readiness, kill -9, restart and a
//! clean stop (SIGTERM, then SIGKILL after a grace period). Only the processes it started are
//! ever signalled, by PID.
//!
//! With `tls`, the certificates are generated (if missing) into that directory by
//! `crate::certs`: the CA, `node-i` for every node and a client `quasar-local` that this
//! module uses for the admin port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to lay out and start the cluster.
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// The `quasar` binary.
    pub exe: PathBuf,
    pub nodes: u64,
    pub shards: usize,
    /// Shard 0 of node i listens on `base_port + 10 * (i - 1)`, its admin port is
    /// `base_port + 80 + i`. `None`: a free block of ports is found.
    pub base_port: Option<u16>,
    /// Node i keeps its data in `root/node-i` (and logs to `root/node-i/quasar.log`).
    pub root: PathBuf,
    /// More `quasar start` flags for every node (e.g. timing).
    pub extra_args: Vec<String>,
    /// Run TLS with the certificates in this directory (generated when missing).
    pub tls: Option<PathBuf>,
    /// `(from, to) -> address`: node `from` reaches node `to` (its shard 0; shard `s` at
    /// port + `s`) at this address instead of `to`'s listen address, e.g. a fault-injecting
    /// proxy of `quasar-bench nemesis`. Each node gets its own `--initial-cluster`.
    pub peer_routes: std::collections::BTreeMap<(u64, u64), SocketAddr>,
    /// Environment variables for every node; `{dir}` in a value becomes the node's
    /// directory (e.g. libfaketime's `LD_PRELOAD` and a per-node control file).
    pub env: Vec<(String, String)>,
}

/// The client certificate a local cluster generates for itself (admin port, demo commands).
pub const LOCAL_CLIENT_NAME: &str = "quasar-local";

/// One node of the cluster.
#[derive(Debug)]
pub struct LocalNode {
    pub id: u64,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// How the process ended, once it has (`None` while it runs or when none was started).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running local cluster; dropping it stops every node.
#[derive(Debug)]
pub struct LocalCluster {
    cfg: LocalClusterConfig,
    /// Listen address of node `i` at `initial[i - 1]`.
    initial: Vec<SocketAddr>,
    pub nodes: Vec<LocalNode>,
    /// TLS to the admin ports (with the `quasar-local` client certificate).
    admin_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// `GET path` over HTTPS (checking the node certificate against the CA in `tls`).
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<(u16, String)> {
    https_request(addr, "GET", path, None, "", timeout, tls)
}

/// `METHOD path` with a JSON `body` (and `Authorization: Bearer <token>` when given) over
/// HTTPS; the answer's status code and body.
pub fn https_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(std::sync::Arc::clone(tls), name)
        .map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, s);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let len = body.len();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}"
    )?;
    s.flush()?;
    let mut bytes = Vec::new();
    // NOTE: a server that closes without a TLS close_notify ends the answer all the same.
    match s.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(parse_response(&String::from_utf8_lossy(&bytes)))
}

fn parse_response(text: &str) -> (u16, String) {
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

fn get_with(
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    match tls {
        Some(tls) => https_get(addr, path, timeout, tls),
        None => http_get(addr, path, timeout),
    }
}

/// Generates what a TLS local cluster of `nodes` nodes needs in `dir`, keeping what exists.
pub fn ensure_certs(dir: &Path, nodes: u64) -> anyhow::Result<()> {
    if !dir.join("ca.pem").exists() {
        crate::certs::init(dir, false)?;
    }
    for i in 1..=nodes {
        if !dir.join(format!("node-{i}.pem")).exists() {
            crate::certs::node(dir, i, &[])?;
        }
    }
    if !dir.join(format!("{LOCAL_CLIENT_NAME}.pem")).exists() {
        crate::certs::client(dir, LOCAL_CLIENT_NAME)?;
    }
    Ok(())
}

/// `GET path` on an admin port: the status code and body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(parse_response(&text))
}

/// The last `lines` lines of a node's log (for errors: the log may be in a temporary
/// directory that is removed with the cluster).
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Blocks of ports handed out by this process: clusters started concurrently (tests run in
/// parallel threads) never share a block.
static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A block of 100 ports below the ephemeral range, free now and not handed out before by
/// this process.
pub fn free_base_port() -> anyhow::Result<u16> {
    let mut rng = fastrand::Rng::new();
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let base = 20_000 + 100 * rng.u16(0..100);
        if taken.contains(&base) {
            continue;
        }
        let free = (0..100u16).all(|p| TcpListener::bind(("127.0.0.1", base + p)).is_ok());
        if free {
            taken.push(base);
            return Ok(base);
        }
    }
    bail!("no free block of 100 loopback ports between 20000 and 30000")
}

impl LocalCluster {
    /// Starts every node and waits (up to `timeout`) until each answers `/ready`.
    ///
    /// With `base_port: None`, a start whose nodes fail (another process may have taken a
    /// port of the block meanwhile) is retried on another block of ports, twice at most,
    /// each time in a fresh subfolder of `root`.
    pub fn start(cfg: LocalClusterConfig, timeout: Duration) -> anyhow::Result<LocalCluster> {
        if cfg.base_port.is_some() {
            return LocalCluster::start_once(cfg, timeout);
        }
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let mut c = cfg.clone();
            if attempt > 0 {
                c.root = cfg.root.join(format!("retry-{attempt}"));
            }
            match LocalCluster::start_once(c, timeout) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!(
            "the local cluster did not start (3 tries on other ports):\n{}",
            failures.join("\n")
        )
    }

    fn start_once(mut cfg: LocalClusterConfig, timeout: Duration) -> anyhow::Result<LocalCluster> {
        if cfg.nodes == 0 || cfg.nodes > 7 {
            bail!("a local cluster has 1 to 7 nodes, not {}", cfg.nodes);
        }
        if cfg.shards == 0 || cfg.shards > 8 {
            bail!(
                "a local cluster runs 1 to 8 shards per node, not {}",
                cfg.shards
            );
        }
        let base = match cfg.base_port {
            Some(p) if p > u16::MAX - 100 => {
                bail!("base port {p} is too high: the cluster needs 100 ports above it")
            }
            Some(p) => p,
            None => free_base_port()?,
        };
        cfg.base_port = Some(base);
        let listen = |i: u64| LocalCluster::listen_addr(base, i);
        let admin = |i: u64| SocketAddr::from(([127, 0, 0, 1], base + 80 + i as u16));
        let initial = (1..=cfg.nodes).map(listen).collect();
        let nodes = (1..=cfg.nodes)
            .map(|i| LocalNode {
                id: i,
                listen: listen(i),
                admin: admin(i),
                dir: cfg.root.join(format!("node-{i}")),
                child: None,
            })
            .collect();
        let admin_tls = match &cfg.tls {
            Some(dir) => {
                ensure_certs(dir, cfg.nodes)?;
                let (cert, key) = crate::certs::cert_paths(dir, LOCAL_CLIENT_NAME);
                let tls =
                    quasar_rpc::tls::ClientTls::load(&dir.join("ca.pem"), Some((&cert, &key)))
                        .context("cannot load the local cluster's client certificate")?;
                Some(tls.config)
            }
            None => None,
        };
        let mut cluster = LocalCluster {
            cfg,
            initial,
            nodes,
            admin_tls,
        };
        for i in 1..=cluster.cfg.nodes {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(timeout)?;
        Ok(cluster)
    }

    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    pub fn shards(&self) -> usize {
        self.cfg.shards
    }

    /// The certificate directory when the cluster runs TLS.
    pub fn tls_dir(&self) -> Option<&Path> {
        self.cfg.tls.as_deref()
    }

    /// `GET path` on an admin port, over HTTPS when the cluster runs TLS.
    pub fn admin_get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> std::io::Result<(u16, String)> {
        get_with(self.admin_tls.as_ref(), addr, path, timeout)
    }

    /// `(node id, shard-0 address)` of every node, for client configurations.
    pub fn endpoints(&self) -> Vec<(u64, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id, n.listen)).collect()
    }

    pub fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut LocalNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id} in this cluster"))
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn_with(id, &[])
    }

    /// Starts a stopped node with `env` added to its environment (e.g. `FAILPOINTS` for a
    /// failpoint build) and returns at once: the caller watches it (`LocalNode::is_running`)
    /// and stops it with [`LocalCluster::kill9`].
    pub fn start_with_env(&mut self, id: u64, env: &[(String, String)]) -> anyhow::Result<()> {
        if self.node_mut(id)?.is_running() {
            bail!("node {id} is still running");
        }
        self.spawn_with(id, env)
    }

    fn spawn_with(&mut self, id: u64, more_env: &[(String, String)]) -> anyhow::Result<()> {
        let exe = self.cfg.exe.clone();
        let shards = self.cfg.shards.to_string();
        let mut extra = self.cfg.extra_args.clone();
        if let Some(dir) = &self.cfg.tls {
            let (cert, key) = crate::certs::cert_paths(dir, &format!("node-{id}"));
            for (flag, path) in [
                ("--tls-cert", cert),
                ("--tls-key", key),
                ("--tls-ca", dir.join("ca.pem")),
            ] {
                extra.push(flag.into());
                extra.push(path.display().to_string());
            }
        }
        let initial = self
            .initial
            .iter()
            .zip(1u64..)
            .map(|(addr, to)| {
                let addr = self.cfg.peer_routes.get(&(id, to)).unwrap_or(addr);
                format!("{to}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut env = self.cfg.env.clone();
        env.extend(more_env.iter().cloned());
        let node = self.node_mut(id)?;
        let dir = node.dir.display().to_string();
        std::fs::create_dir_all(&node.dir)
            .with_context(|| format!("cannot create {}", node.dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("quasar.log"))
            .with_context(|| format!("cannot open the log of node {id}"))?;
        let child = Command::new(&exe)
            .arg("start")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(node.dir.join("data"))
            .args(["--listen", &node.listen.to_string()])
            .args(["--admin-listen", &node.admin.to_string()])
            .args(["--initial-cluster", &initial])
            .args(["--shards", &shards])
            .args(["--pin", "false"])
            .args(&extra)
            .envs(env.iter().map(|(k, v)| (k, v.replace("{dir}", &dir))))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {id} ({})", exe.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node answers `/ready` with 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let tls = self.admin_tls.clone();
        for n in &mut self.nodes {
            if n.child.is_none() {
                continue;
            }
            loop {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                    bail!(
                        "node {} exited ({status}); the end of {}:\n{}",
                        n.id,
                        n.dir.join("quasar.log").display(),
                        log_tail(&n.dir.join("quasar.log"), 8)
                    );
                }
                if matches!(
                    get_with(tls.as_ref(), n.admin, "/ready", Duration::from_millis(500)),
                    Ok((200, _))
                ) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} was not ready within {timeout:?}; see {}",
                        n.id,
                        n.dir.join("quasar.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The node that leads `range`, from the nodes' `/status`.
    pub fn leader_of(&mut self, range: u64) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        let tls = self.admin_tls.clone();
        for n in &mut self.nodes {
            if !n.is_running() {
                continue;
            }
            let status = get_with(tls.as_ref(), n.admin, "/status", Duration::from_millis(500));
            let Ok((200, body)) = status else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            for r in v["ranges"].as_array().into_iter().flatten() {
                if r["range_id"].as_u64() == Some(range) && r["role"] == "leader" {
                    let term = r["term"].as_u64().unwrap_or(0);
                    if best.is_none_or(|(t, _)| term > t) {
                        best = Some((term, n.id));
                    }
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Sends `signal` to the node's process (e.g. SIGSTOP and SIGCONT to pause it); nothing
    /// when it is not running.
    pub fn signal(&mut self, id: u64, signal: Signal) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(pid) = node.pid().and_then(|p| i32::try_from(p).ok()) {
            kill(Pid::from_raw(pid), signal)
                .with_context(|| format!("cannot send {signal} to node {id}"))?;
        }
        Ok(())
    }

    /// The listen address (shard 0) of node `i` of a cluster on ports from `base`.
    pub fn listen_addr(base: u16, i: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], base + 10 * (i as u16 - 1)))
    }

    /// SIGKILL: the node stops at once, losing nothing that was synced.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Starts a stopped node again with the same data dir (it recovers and rejoins).
    pub fn restart(&mut self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        if self.node_mut(id)?.is_running() {
            bail!("node {id} is still running");
        }
        self.spawn(id)?;
        self.wait_ready(timeout)
    }

    /// Starts several stopped nodes at once, then waits until every running node is ready
    /// (after a whole-cluster crash no node is ready before a majority is back).
    pub fn restart_many(&mut self, ids: &[u64], timeout: Duration) -> anyhow::Result<()> {
        for &id in ids {
            if self.node_mut(id)?.is_running() {
                bail!("node {id} is still running");
            }
            self.spawn(id)?;
        }
        self.wait_ready(timeout)
    }

    /// Stops every node: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for n in &mut self.nodes {
            if let Some(child) = &n.child {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
