//! Replica moves on 4 real `quasar start` processes (`--replicas 3`: every range starts on
//! nodes 1-3, node 4 holds nothing) under a steady write load: the user range's replica
//! moves from node 3 (made its leader first, so the leader itself leaves) to node 4, then
//! back. After each move the node that lost its replica has deleted the replica's files
//! (a `.gone` mark remains), the new replica holds the same state as the others, and at
//! the end every acknowledged write is still readable. Prints each move's duration
//! without asserting on it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_readable, spawn_writer, stop_writer, wait_until, Cluster, USER_RANGE};
use quasar_rpc::client::admin::AdminClient;
use quasar_rpc::message::{NodeId, RangeDescriptor, RangeId, ReplicaRole};
use serde_json::Value;

const KEYS: usize = 4_000;

/// Every `*{suffix}` file under `dir` (recursively).
fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_with(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

fn group_file(group: u64, suffix: &str) -> String {
    format!("{group:016x}{suffix}")
}

fn has_file(cluster: &Cluster, node: u64, name: &str) -> bool {
    files_with(&cluster.node(node).data_dir(), "")
        .iter()
        .any(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == name))
}

/// Waits until `nodes` all report `range` with one applied index and state hash, and
/// `absent` no longer reports it.
fn wait_moved(cluster: &Cluster, nodes: &[u64], absent: u64) -> Result<(), String> {
    let mut last = String::new();
    let done = wait_until(Duration::from_secs(30), || {
        let gone = cluster
            .node(absent)
            .range_status(USER_RANGE)
            .is_err_and(|e| e.contains("no range"));
        let seen: Vec<Value> = nodes
            .iter()
            .filter_map(|&n| cluster.node(n).range_status(USER_RANGE).ok())
            .collect();
        last = format!("node {absent} gone: {gone}; {seen:?}");
        gone && seen.len() == nodes.len()
            && seen.iter().all(|r| {
                r["state_hash"].is_string()
                    && r["state_hash"] == seen[0]["state_hash"]
                    && r["applied"] == seen[0]["applied"]
            })
    });
    if done {
        Ok(())
    } else {
        Err(format!("the move did not settle in 30 s: {last}"))
    }
}

/// Runs an admin operation up to three times while the cluster refuses it for a reason a
/// retry can clear (a transfer or catch-up that timed out on a busy machine, a plan made
/// from a descriptor that was already stale), as an operator would on that message.
fn with_retries<T>(
    what: &str,
    mut op: impl FnMut() -> Result<T, quasar_rpc::client::admin::AdminError>,
) -> Result<T, quasar_rpc::client::admin::AdminError> {
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if attempt < 3 && e.is_refusal() => {
                eprintln!("{what}: attempt {attempt} refused ({e}); retrying");
                attempt += 1;
                thread::sleep(Duration::from_millis(500));
            }
            result => return result,
        }
    }
}

fn voters(d: &RangeDescriptor) -> Vec<u64> {
    assert!(
        d.replicas.iter().all(|r| r.role == ReplicaRole::Voter),
        "a finished move leaves voters only: {d:?}"
    );
    d.replicas.iter().map(|r| r.node.get()).collect()
}

#[test]
fn a_replica_moves_away_and_back_under_load_losing_no_acknowledged_write() {
    let cluster = Cluster::start_with(4, 2, &["--replicas", "3"]);
    cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    assert!(
        cluster.node(4).range_status(USER_RANGE).is_err(),
        "node 4 starts without replicas"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cluster.client(), "move", KEYS, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(500));

    let mut admin = AdminClient::new(cluster.client_config(&[1, 2, 3, 4]))
        .with_total_timeout(Duration::from_secs(60));
    let range = RangeId(USER_RANGE);
    // The leaving replica leads: it hands over once the new configuration is in force.
    with_retries("transfer to node 3", || {
        admin.transfer_leader(range, NodeId(3))
    })
    .expect("node 3 takes the lead");
    let group = admin
        .describe(range)
        .expect("describe")
        .descriptor
        .group
        .get();

    let t = Instant::now();
    let moved = with_retries("move 3 -> 4", || {
        admin.move_replica(range, NodeId(3), NodeId(4))
    })
    .unwrap_or_else(|e| panic!("move 3 -> 4: {e}\n{}", cluster.statuses()));
    eprintln!("move 3 -> 4 took {:?}: {moved:?}", t.elapsed());
    assert_eq!(voters(&moved), vec![1, 2, 4]);
    wait_moved(&cluster, &[1, 2, 4], 3).unwrap_or_else(|e| panic!("{e}\n{}", cluster.statuses()));
    assert!(
        wait_until(Duration::from_secs(10), || {
            has_file(&cluster, 3, &group_file(group, ".gone"))
                && !has_file(&cluster, 3, &group_file(group, ".snap"))
        }),
        "node 3 deleted its copy of group {group} and marked it removed"
    );
    assert!(has_file(&cluster, 4, &group_file(group, ".snap")));

    // A stale plan (the epoch before the move) is refused.
    let stale = admin.move_seen(
        quasar_rpc::message::RangeInfo {
            descriptor: RangeDescriptor {
                epoch: quasar_rpc::message::RangeEpoch(moved.epoch.get() - 1),
                ..moved.clone()
            },
            leader: None,
            commit: None,
        },
        NodeId(4),
        NodeId(3),
    );
    assert!(
        matches!(stale, Err(ref e) if e.is_refusal()),
        "a move naming an old epoch is refused: {stale:?}"
    );

    let t = Instant::now();
    let back = with_retries("move 4 -> 3", || {
        admin.move_replica(range, NodeId(4), NodeId(3))
    })
    .unwrap_or_else(|e| panic!("move 4 -> 3: {e}\n{}", cluster.statuses()));
    eprintln!("move 4 -> 3 took {:?}: {back:?}", t.elapsed());
    assert_eq!(voters(&back), vec![1, 2, 3]);
    wait_moved(&cluster, &[1, 2, 3], 4).unwrap_or_else(|e| panic!("{e}\n{}", cluster.statuses()));
    assert!(
        wait_until(Duration::from_secs(10), || {
            !has_file(&cluster, 3, &group_file(group, ".gone"))
                && has_file(&cluster, 4, &group_file(group, ".gone"))
                && !has_file(&cluster, 4, &group_file(group, ".snap"))
        }),
        "node 3 holds the group again, node 4 deleted its copy"
    );

    let (acked, failed) = stop_writer(&stop, writer);
    assert_readable(&mut cluster.client(), &acked);
    eprintln!(
        "{} writes acknowledged, {failed} failed during the moves",
        acked.len()
    );
}
