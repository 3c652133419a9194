//! ENOSPC on the data directory, on real processes: three `quasar start` nodes, each with
//! its data directory on its own small tmpfs. The test fills each tmpfs (a filler file)
//! once the nodes have prepared their WAL segments, then writes until the leader refuses
//! writes with the disk-full error; every acknowledged write must read back meanwhile.
//! Then it gives space back (`mount -o remount,size=...`) and checks that writes succeed
//! again by themselves, every acknowledged write still reads back and the nodes converge.
//!
//! Needs root (it mounts tmpfs); without it the test fails saying so.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_readable, http_get, key, wait_until, CLUSTER_NAME, TIMING_FLAGS, USER_RANGE};
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{ClusterId, NodeId};
use serde_json::Value;

const NODES: u64 = 3;
/// Each node's tmpfs: room for its three 64 MiB WAL segments (active + 2 prepared) and
/// a little more, which the filler then takes.
const SMALL: &str = "size=256m";
/// The size given back.
const LARGE: &str = "size=1g";
/// Free bytes the filler leaves on each tmpfs: less than one snapshot of the data
/// written, far less than a segment.
const LEFT_FREE: u64 = 2 << 20;
const VALUE_LEN: usize = 64 << 10;
const SEGMENT_BYTES: u64 = 64 << 20;

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd} {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One node: its process, its tmpfs mount point and its log (outside the tmpfs).
struct Node {
    id: u64,
    port: u16,
    admin: u16,
    mount: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn admin_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.admin))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    fn wal_dir(&self) -> PathBuf {
        self.mount.join("data/shard-0/wal")
    }

    fn range_status(&self, range: u64) -> Result<Value, String> {
        let (code, body) = http_get(self.admin_addr(), "/status")?;
        if code != 200 {
            return Err(format!("node {}: /status answered {code}", self.id));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        v["ranges"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["range_id"].as_u64() == Some(range)))
            .cloned()
            .ok_or_else(|| format!("node {}: no range {range}", self.id))
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            // NOTE: diagnostics only.
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        format!(
            "----- node {} log, last {lines} lines -----\n{}",
            self.id,
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

/// Owns the nodes and the mounts: dropping it (even on a panic) kills the nodes it
/// started, unmounts every tmpfs (lazily if busy) and removes the directory.
struct Rig {
    root: PathBuf,
    nodes: Vec<Node>,
    mounted: Vec<PathBuf>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Never `eprintln!` here: a closed stderr would panic again and abort before the
        // mounts are gone.
        let mut err = std::io::stderr();
        let panicking = std::thread::panicking();
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // NOTE: the child may have exited already.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &self.mounted {
            let m = m.display().to_string();
            if run("umount", &[&m]).is_err() {
                if let Err(e) = run("umount", &["-l", &m]) {
                    let _ = writeln!(err, "cannot unmount {m}: {e}");
                }
            }
        }
        if panicking {
            for n in &self.nodes {
                let _ = writeln!(err, "{}", n.log_tail(40));
                if std::env::var_os("QUASAR_TEST_KEEP_DIRS").is_some() {
                    let kept = std::env::temp_dir().join(format!(
                        "quasar-enospc-node{}-{}.log",
                        n.id,
                        std::process::id()
                    ));
                    if std::fs::copy(&n.log, &kept).is_ok() {
                        let _ = writeln!(err, "kept {}", kept.display());
                    }
                }
            }
        }
        // NOTE: best effort; nothing is mounted below any more.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn start_rig() -> Rig {
    let root = tempfile::Builder::new()
        .prefix("quasar-enospc-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let mut rig = Rig {
        root: root.clone(),
        nodes: Vec::new(),
        mounted: Vec::new(),
    };
    let ports = free_ports(2 * NODES as usize);
    for i in 0..NODES {
        let mount = root.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&mount).expect("mount point");
        if let Err(e) = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                SMALL,
                "tmpfs",
                &mount.display().to_string(),
            ],
        ) {
            panic!("this test needs root to mount tmpfs (run it as root, as CI does): {e}");
        }
        rig.mounted.push(mount.clone());
        rig.nodes.push(Node {
            id: i + 1,
            port: ports[2 * i as usize],
            admin: ports[2 * i as usize + 1],
            log: root.join(format!("node{}.log", i + 1)),
            mount,
            child: None,
        });
    }
    let initial = rig
        .nodes
        .iter()
        .map(|n| format!("{}=127.0.0.1:{}", n.id, n.port))
        .collect::<Vec<_>>()
        .join(",");
    for n in &mut rig.nodes {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("node log");
        let err = log.try_clone().expect("log handle");
        let data = n.mount.join("data").display().to_string();
        let args = [
            "start",
            "--node-id",
            &n.id.to_string(),
            "--data-dir",
            &data,
            "--listen",
            &format!("127.0.0.1:{}", n.port),
            "--admin-listen",
            &format!("127.0.0.1:{}", n.admin),
            "--initial-cluster",
            &initial,
            "--cluster-id",
            CLUSTER_NAME,
            "--shards",
            "1",
        ]
        .map(String::from);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quasar"));
        cmd.args(&args)
            .args(TIMING_FLAGS)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        n.child = Some(cmd.spawn().expect("spawn quasar"));
    }
    for n in &rig.nodes {
        let healthy = wait_until(Duration::from_secs(20), || {
            matches!(http_get(n.admin_addr(), "/health"), Ok((200, _)))
        });
        assert!(healthy, "node {} never answered /health with 200", n.id);
    }
    rig
}

fn client(rig: &Rig, attempts: u32) -> BlockingClient {
    let nodes = rig.nodes.iter().map(|n| (NodeId(n.id), n.addr())).collect();
    let mut config = ClientConfig::new(ClusterId::from_name(CLUSTER_NAME), nodes, 1);
    config.request_timeout = Duration::from_secs(2);
    config.io_timeout = Duration::from_secs(1);
    config.max_attempts = attempts;
    BlockingClient::new(config)
}

/// Waits until the three segments of `dir` (active + 2 prepared) exist at full size.
fn wait_segments(n: &Node) {
    let ok = wait_until(Duration::from_secs(20), || {
        std::fs::read_dir(n.wal_dir())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                    .filter(|e| e.metadata().map(|m| m.len()).unwrap_or(0) >= SEGMENT_BYTES)
                    .count()
                    >= 3
            })
            .unwrap_or(false)
    });
    assert!(ok, "node {}: WAL segments never prepared", n.id);
}

/// Fills `mount` with a filler file until ENOSPC, then gives `LEFT_FREE` back.
fn fill(mount: &Path) {
    let path = mount.join("filler");
    let mut f = File::create(&path).expect("filler");
    let chunk = vec![0xAAu8; 1 << 20];
    let mut len = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => len += n as u64,
            Err(_) => break,
        }
    }
    f.set_len(len.saturating_sub(LEFT_FREE))
        .expect("shrink the filler");
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("v{i}-").into_bytes();
    v.resize(VALUE_LEN, b'a' + (i % 26) as u8);
    v
}

/// `/status` of every node, for failure messages.
fn statuses(rig: &Rig) -> String {
    rig.nodes
        .iter()
        .map(|n| match http_get(n.admin_addr(), "/status") {
            Ok((_, body)) => format!("node {}: {body}", n.id),
            Err(e) => format!("node {}: {e}", n.id),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_converged(rig: &Rig, timeout: Duration) -> Result<u64, String> {
    let mut last = String::new();
    let mut applied = 0;
    let done = wait_until(timeout, || {
        let seen: Result<Vec<Value>, String> = rig
            .nodes
            .iter()
            .map(|n| n.range_status(USER_RANGE))
            .collect();
        let seen = match seen {
            Ok(s) => s,
            Err(e) => {
                last = e;
                return false;
            }
        };
        last = seen
            .iter()
            .map(|r| {
                format!(
                    "{} applied {} hash {}",
                    r["role"], r["applied"], r["state_hash"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        applied = seen[0]["applied"].as_u64().unwrap_or(0);
        seen.iter().all(|r| {
            r["applied"].as_u64().is_some()
                && r["applied"] == seen[0]["applied"]
                && r["state_hash"] == seen[0]["state_hash"]
        }) && seen.iter().any(|r| r["role"] == "leader")
    });
    if done {
        Ok(applied)
    } else {
        Err(format!("range did not converge in {timeout:?}: {last}"))
    }
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers() {
    let started = Instant::now();
    let mut rig = start_rig();
    for n in &rig.nodes {
        wait_segments(n);
    }
    for n in &rig.nodes {
        fill(&n.mount);
    }
    // Writers: unique keys, until one sees the disk-full refusal (bounded).
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let full = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4usize)
        .map(|t| {
            let mut c = client(&rig, 3);
            let (acked, full) = (Arc::clone(&acked), Arc::clone(&full));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut errors = Vec::new();
                for i in (t..4000).step_by(4) {
                    if full.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    match c.put(&key(i), &value(i)) {
                        Ok(_) => {
                            acked.lock().expect("acked").insert(i, value(i));
                        }
                        Err(e) if e.to_string().contains("DiskFull") => {
                            full.store(true, Ordering::Relaxed);
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    eprintln!(
        "{} writes acknowledged before the disks were full ({:?}); other errors: {:?}",
        acked.len(),
        started.elapsed(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        full.load(Ordering::Relaxed),
        "writes never failed with the disk-full error ({} acknowledged); /status:\n{}",
        acked.len(),
        statuses(&rig)
    );
    assert!(
        acked.len() > 100,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for n in &mut rig.nodes {
        let running = n
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        assert!(running, "node {} exited on a full disk", n.id);
    }
    // Reads are served while the disks are full.
    let mut reader = client(&rig, 20);
    assert_readable(&mut reader, &acked); // while the disks are full

    // A fresh client finds the leader (a redirect or two), which refuses the write.
    let mut probe = client(&rig, 6);
    match probe.put(b"enospc-probe", b"x") {
        Err(e) if e.to_string().contains("DiskFull") => {}
        other => panic!("a write on full disks should be refused as DiskFull: {other:?}"),
    }
    // Space returns: writes succeed again by themselves.
    for m in &rig.mounted {
        run(
            "mount",
            &["-o", &format!("remount,{LARGE}"), &m.display().to_string()],
        )
        .expect("remount bigger");
    }
    // Enough attempts to ride out a leader change: the range may split by
    // size as soon as snapshots fit again, and the new right range elects.
    let mut writer = client(&rig, 20);
    let resumed = wait_until(Duration::from_secs(15), || {
        writer.put(b"enospc-probe", b"after").is_ok()
    });
    assert!(
        resumed,
        "writes did not resume within 15 s of space returning"
    );
    let mut acked = acked;
    for i in 5000..5050 {
        writer
            .put(&key(i), &value(i))
            .expect("write after space returned");
        acked.insert(i, value(i));
    }
    assert_readable(&mut reader, &acked); // after space returned
    wait_converged(&rig, Duration::from_secs(20)).expect("the nodes converge");
    eprintln!("done in {:?}", started.elapsed());
}
