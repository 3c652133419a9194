//! `quasar demo`: a local 3-node cluster on loopback, each node a child `quasar start`
//! process, with its data in a temporary folder (or `--data-dir`). Prints the endpoints and
//! example `quasarctl` commands, and stops every node cleanly (SIGTERM) on Ctrl-C.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Settings of the demo cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the nodes' data here (default: a temporary folder removed on exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shard 0 of node i listens on BASE + 10 * (i - 1); admin ports are BASE + 80 + i.
    #[arg(long, default_value_t = 7100, value_name = "PORT")]
    pub base_port: u16,
    /// Shards per node (at most 8).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub shards: usize,
}

struct DemoNode {
    id: u64,
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

/// Sends SIGTERM to `child` and waits up to `grace` before killing it.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `GET path` on the admin port; the status code, or an error.
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
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

pub fn run_demo(args: &DemoArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    if args.shards == 0 || args.shards > 8 {
        bail!(
            "--shards {} is out of range: the demo runs 1 to 8 shards per node",
            args.shards
        );
    }
    if args.base_port > u16::MAX - 100 {
        bail!(
            "--base-port {} is too high: the demo needs 100 ports above it",
            args.base_port
        );
    }
    let temp;
    let root: &Path = match &args.data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("quasar-demo-")
                .tempdir()
                .context("cannot create a temporary folder for the demo's data")?;
            temp.path()
        }
    };
    let exe = std::env::current_exe().context("cannot find the quasar binary")?;
    let listen = |i: u64| -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], args.base_port + 10 * (i as u16 - 1)))
    };
    let admin = |i: u64| -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], args.base_port + 80 + i as u16))
    };
    let initial: Vec<String> = (1..=3).map(|i| format!("{i}={}", listen(i))).collect();
    let initial = initial.join(",");
    let mut nodes: Vec<DemoNode> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for i in 1..=3u64 {
            let dir = root.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let log = std::fs::File::create(dir.join("quasar.log"))
                .with_context(|| format!("cannot create the log of node {i}"))?;
            let child = Command::new(&exe)
                .arg("start")
                .args(["--node-id", &i.to_string()])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--listen", &listen(i).to_string()])
                .args(["--admin-listen", &admin(i).to_string()])
                .args(["--initial-cluster", &initial])
                .args(["--shards", &args.shards.to_string()])
                .args(["--pin", "false"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start node {i}"))?;
            nodes.push(DemoNode {
                id: i,
                child,
                listen: listen(i),
                admin: admin(i),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &mut nodes {
            loop {
                if let Ok(Some(status)) = n.child.try_wait() {
                    bail!(
                        "node {} exited at start ({status}); see {}",
                        n.id,
                        root.join(format!("node-{}/quasar.log", n.id)).display()
                    );
                }
                if matches!(
                    http_get(n.admin, "/ready", Duration::from_millis(500)),
                    Ok((200, _))
                ) {
                    break;
                }
                if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                    bail!("node {} did not become ready within 30 s", n.id);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let endpoints: Vec<String> = nodes.iter().map(|n| n.listen.to_string()).collect();
        let endpoints = endpoints.join(",");
        println!(
            "Quasar demo: a 3-node cluster on loopback ({} shards per node)",
            args.shards
        );
        println!("data: {}", root.display());
        for n in &nodes {
            println!(
                "  node {}: client/peer port {} (shard i on port + i), admin http://{}/status",
                n.id, n.listen, n.admin
            );
        }
        println!();
        println!("Try:");
        println!("  quasarctl --endpoints {endpoints} kv put greeting hello");
        println!("  quasarctl --endpoints {endpoints} kv get greeting");
        println!("  quasarctl --endpoints {endpoints} status");
        println!();
        println!("Press Ctrl-C to stop.");
        while !stop.load(Ordering::Relaxed) {
            for n in &mut nodes {
                if let Ok(Some(status)) = n.child.try_wait() {
                    bail!("node {} exited unexpectedly ({status})", n.id);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })();
    eprintln!("stopping the demo cluster");
    for n in &mut nodes {
        stop_child(&mut n.child, Duration::from_secs(10));
    }
    result
}
