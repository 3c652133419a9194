//! Process-level tests of a 3-node cluster of real `quasar start` processes: a leader
//! killed with SIGKILL loses no acknowledged write and catches up after a restart; SIGTERM
//! stops a node cleanly (exit 0) and it recovers from its data directory.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, value, wait_until, Cluster, USER_RANGE};
use quasar_rpc::client::BlockingClient;
use quasar_rpc::message::{AdminOp, AdminReply, NodeId, RangeId, RangeSelector, ShardId};

/// Acknowledged writes: key index -> value.
type Acked = BTreeMap<usize, Vec<u8>>;

/// Writes keys `range` through `client`, returning the acknowledged ones (key index -> value)
/// and the failures (key index, error). Bounded by `budget` all together.
fn write_keys(
    client: &mut BlockingClient,
    tag: &str,
    range: std::ops::Range<usize>,
    budget: Duration,
) -> (Acked, Vec<(usize, String)>) {
    let deadline = Instant::now() + budget;
    let mut acked = BTreeMap::new();
    let mut failed = Vec::new();
    for i in range {
        assert!(
            Instant::now() < deadline,
            "writing {tag} keys took more than {budget:?}: {} acknowledged, {} failed, at key {i}",
            acked.len(),
            failed.len()
        );
        let v = value(tag, i);
        match client.put(&key(i), &v) {
            Ok(_version) => {
                acked.insert(i, v);
            }
            Err(e) => failed.push((i, e.to_string())),
        }
    }
    (acked, failed)
}

/// Reads back every acknowledged key and returns a description of each mismatch.
fn check_acked(client: &mut BlockingClient, acked: &Acked) -> Vec<String> {
    let mut wrong = Vec::new();
    for (&i, expected) in acked {
        match client.get(&key(i)) {
            Ok(Some(got)) if got.value == *expected => {}
            Ok(Some(got)) => wrong.push(format!(
                "key-{i:04}: read {:?}, acknowledged {:?}",
                String::from_utf8_lossy(&got.value),
                String::from_utf8_lossy(expected)
            )),
            Ok(None) => wrong.push(format!("key-{i:04}: acknowledged but absent")),
            Err(e) => wrong.push(format!("key-{i:04}: read failed: {e}")),
        }
    }
    wrong
}

fn assert_no_failures(what: &str, failed: &[(usize, String)]) {
    assert!(
        failed.is_empty(),
        "{what}: {} writes failed on a healthy cluster, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

#[test]
fn kill_leader_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, 2);
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));

    let mut client = cluster.client();
    let (mut acked, failed) = write_keys(&mut client, "a", 0..1000, Duration::from_secs(25));
    assert_no_failures("before the kill", &failed);
    drop(client);

    // The leader of the user range, as /status says now (it may have changed while writing).
    let leader = cluster.leader_of(USER_RANGE).unwrap_or(leader);

    // Kill it while a writer is busy: writes acknowledged just before the kill (and any
    // acknowledged after it) must survive too; ambiguous ones are not checked.
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let config = cluster.client_config(&cluster.nodes.iter().map(|n| n.id).collect::<Vec<_>>());
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut client = BlockingClient::new(config.clone());
            let mut acked = Acked::new();
            for i in 2000..2300 {
                if Instant::now() >= deadline {
                    break;
                }
                let v = value("c", i);
                match client.put(&key(i), &v) {
                    Ok(_) => {
                        acked.insert(i, v);
                    }
                    // NOTE: a fresh client, so that a range cache naming the dead leader
                    // does not hold the writer back (see the failover test below).
                    Err(_) => client = BlockingClient::new(config.clone()),
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
            acked
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || progress.load(Ordering::Relaxed)
            >= 50),
        "the concurrent writer made no progress"
    );
    cluster.node_mut(leader).kill9();
    assert_eq!(cluster.running().len(), 2, "only the leader was killed");

    // A new leader among the survivors within a few election timeouts (300-600 ms each), and
    // new writes through them. (A client that knows only the survivors: see
    // `a_client_whose_cached_leader_died_fails_over` for one that still knows the dead node.)
    let mut client = client_of_survivors(&mut cluster, leader);
    let mut first_write = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            match client.put(&key(1000), &value("a", 1000)) {
                Ok(_) => true,
                Err(e) => {
                    first_write = Some(e.to_string());
                    false
                }
            }
        }),
        "no write succeeded through the survivors within 10 s after the kill: {first_write:?}\n{}",
        cluster.statuses()
    );
    acked.insert(1000, value("a", 1000));
    let concurrent = writer.join().expect("the concurrent writer panicked");
    assert!(
        concurrent.len() >= 50,
        "only {} concurrent writes acknowledged",
        concurrent.len()
    );
    acked.extend(concurrent);
    let (more, failed) = write_keys(&mut client, "a", 1001..1200, Duration::from_secs(10));
    assert_no_failures("after the kill", &failed);
    acked.extend(more);

    let wrong = check_acked(&mut client, &acked);
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged keys do not read back after the kill; first: {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );

    // The killed node comes back from its data directory and catches up: the same applied
    // index and state hash as the leader.
    cluster.node_mut(leader).restart();
    if let Err(e) = cluster.wait_converged(USER_RANGE, Duration::from_secs(20)) {
        panic!("the restarted node did not catch up: {e}");
    }
    let restarted = cluster
        .node(leader)
        .range_status(USER_RANGE)
        .expect("range 2 on the restarted node");
    // Writes that failed ambiguously during the kill may have been applied too.
    assert!(
        restarted["keys"].as_u64() >= Some(acked.len() as u64),
        "keys on the restarted node: {restarted}, {} acknowledged",
        acked.len()
    );

    // The whole cluster serves every key again, through any node.
    let mut client = cluster.client();
    let wrong = check_acked(&mut client, &acked);
    assert!(
        wrong.is_empty(),
        "after the restart: {:?}",
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn sigterm_stops_cleanly_and_restart_recovers() {
    let mut cluster = Cluster::start(3, 2);
    cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    // Each node turned transparent huge pages off for itself (`--huge-pages` is false by
    // default); the kernel shows it per process (a kernel built without them has no line).
    for id in 1..=3 {
        let pid = cluster.node(id).pid().expect("node running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status of node {id}: {e}"));
        let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
        assert!(
            thp.is_none_or(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
            "node {id} (pid {pid}) left transparent huge pages on: {thp:?}"
        );
    }
    let mut client = cluster.client();
    let (mut acked, failed) = write_keys(&mut client, "t", 0..200, Duration::from_secs(10));
    assert_no_failures("before SIGTERM", &failed);
    drop(client);

    // Stop the leader: the harder case (it must hand over or just stop, and flush its log).
    let victim = cluster.wait_leader(USER_RANGE, Duration::from_secs(5));

    // The leader's metrics count what it just did, labelled per shard (never per range).
    // Shards publish their counters a few times a second: poll briefly.
    let admin = cluster.node(victim).admin_addr();
    let mut text = String::new();
    let complete = wait_until(Duration::from_secs(5), || {
        text = match common::http_get(admin, "/metrics") {
            Ok((200, t)) => t,
            _ => return false,
        };
        [
            "quasar_proposals_total",
            "quasar_committed_entries_total",
            "quasar_applied_entries_total",
            "quasar_wal_fsync_seconds_count",
            "quasar_wal_append_seconds_count",
            "quasar_requests_total",
            "quasar_request_seconds_count",
            "quasar_peer_messages_sent_total",
        ]
        .iter()
        .all(|name| metric_in(&text, name) > 0.0)
    });
    assert!(complete, "metrics incomplete:\n{text}");
    assert!(
        !text.contains("range="),
        "metrics must not be labelled per range"
    );
    cluster.node_mut(victim).terminate();
    let status = cluster
        .node_mut(victim)
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("node {victim} still running 10 s after SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "node {victim} exited with {status} after SIGTERM, not 0"
    );

    let mut client = client_of_survivors(&mut cluster, victim);
    let (more, failed) = write_keys(&mut client, "t", 200..300, Duration::from_secs(15));
    assert_no_failures("after SIGTERM", &failed);
    acked.extend(more);
    drop(client);

    cluster.node_mut(victim).restart();
    let applied = cluster
        .wait_converged(USER_RANGE, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("node {victim} did not catch up after restart: {e}"));
    assert!(
        applied >= acked.len() as u64,
        "applied {applied} < {} acknowledged writes",
        acked.len()
    );
    let mut client = cluster.client();
    let wrong = check_acked(&mut client, &acked);
    assert!(wrong.is_empty(), "{:?}", &wrong[..wrong.len().min(10)]);
}

/// Three nodes of one shard each, and keys 0..20 written (tagged `tag`) by the client
/// returned.
fn started_with_keys(tag: &str) -> (Cluster, BlockingClient, Acked) {
    let cluster = Cluster::start(3, 1);
    cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let mut client = cluster.client();
    let (acked, failed) = write_keys(&mut client, tag, 0..20, Duration::from_secs(10));
    assert_no_failures("before the test", &failed);
    (cluster, client, acked)
}

/// A client whose range cache names a leader that was then killed must move on to the
/// survivors (connection refused is a reason to try another replica), within a few election
/// timeouts; it must not spend every attempt on the dead node.
#[test]
fn a_client_whose_cached_leader_died_fails_over() {
    let (mut cluster, mut client, acked) = started_with_keys("f");
    // Make sure the client's cache holds the range and names its leader (a client learns
    // them from `KeyNotInRange` and `NotLeader` answers, which a node that serves or forwards
    // the request never sends), then kill exactly that node.
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(5));
    if client.cache().lookup(&key(0)).is_none() {
        match client.admin(
            NodeId(leader),
            ShardId(0),
            AdminOp::DescribeRange(RangeSelector::Id(RangeId(USER_RANGE))),
        ) {
            Ok(AdminReply::Range(info)) => client.cache_mut().insert(info.descriptor),
            other => panic!("DescribeRange of range {USER_RANGE}: {other:?}"),
        }
    }
    client
        .cache_mut()
        .set_leader(RangeId(USER_RANGE), Some(NodeId(leader)));
    cluster.node_mut(leader).kill9();

    let started = Instant::now();
    let result = client.put(&key(20), &value("f", 20));
    assert!(
        result.is_ok() && started.elapsed() < Duration::from_secs(10),
        "the client did not fail over from dead leader {leader} ({:?} after {:?})",
        result.err().map(|e| e.to_string()),
        started.elapsed()
    );
    let wrong = check_acked(&mut client, &acked);
    assert!(wrong.is_empty(), "{:?}", &wrong[..wrong.len().min(10)]);
}

/// After node `lost` stopped: waits (bounded) for a new leader of the user range among the
/// nodes still running, and returns a client that knows only those.
fn client_of_survivors(cluster: &mut Cluster, lost: u64) -> BlockingClient {
    let survivors = cluster.running();
    assert!(!survivors.contains(&lost), "node {lost} still runs");
    let new_leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    assert_ne!(new_leader, lost, "the stopped node cannot lead");
    cluster.client_of(&survivors)
}

/// The sum of `name`'s samples (every label) in a Prometheus text exposition.
fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of `name`'s samples in a node's `/metrics` (None if it cannot be read).
fn metric_sum(cluster: &Cluster, id: u64, name: &str) -> Option<f64> {
    match common::http_get(cluster.node(id).admin_addr(), "/metrics") {
        Ok((200, text)) => Some(metric_in(&text, name)),
        _ => None,
    }
}

/// An idle cluster sleeps: once every group is asleep, no group wakes while nothing asks
/// (the nodes' periodic membership checks used to wake the group at each node they asked,
/// ten times a second per node), leaders and terms stay as they are under the idle nodes'
/// rarer liveness beats, and the death of a leader's node is still noticed: the survivors
/// elect a new leader and take writes.
#[test]
fn an_idle_cluster_sleeps_keeps_its_leaders_and_still_fails_over() {
    let (mut cluster, client, acked) = started_with_keys("i");
    drop(client);
    let awake = |cluster: &Cluster| -> Option<f64> {
        [1, 2, 3]
            .iter()
            .map(|&id| metric_sum(cluster, id, "quasar_ranges_awake"))
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(20), || awake(&cluster) == Some(0.0)),
        "groups still awake 20 s after the last write: {:?}\n{}",
        awake(&cluster),
        cluster.statuses()
    );
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(5));
    let term = |cluster: &Cluster| {
        cluster
            .node(leader)
            .range_status(USER_RANGE)
            .map(|r| r["term"].as_u64())
    };
    let woken = |cluster: &Cluster| -> Option<f64> {
        [1, 2, 3]
            .iter()
            .map(|&id| metric_sum(cluster, id, "quasar_ranges_woken_total"))
            .sum()
    };
    let before = term(&cluster);
    let woken_before = woken(&cluster).expect("every node's /metrics");
    // Two seconds idle: each node checks a range's membership every 100 ms, 60 checks in
    // all (each woke the group at the node asked, before). A stall of a node on this busy
    // machine may rarely wake a few groups (its peers find it silent): not 60.
    std::thread::sleep(Duration::from_secs(2));
    let woke = woken(&cluster).expect("every node's /metrics") - woken_before;
    assert!(
        woke < 10.0,
        "{woke} groups woken in an idle cluster in 2 s:\n{}",
        cluster.statuses()
    );
    assert_eq!(term(&cluster), before, "the range's term moved while idle");
    assert_eq!(cluster.leader_of(USER_RANGE), Some(leader));

    cluster.node_mut(leader).kill9();
    let mut client = client_of_survivors(&mut cluster, leader);
    let (_, failed) = write_keys(&mut client, "i", 20..30, Duration::from_secs(15));
    assert_no_failures("after the idle leader's node died", &failed);
    let wrong = check_acked(&mut client, &acked);
    assert!(wrong.is_empty(), "{:?}", &wrong[..wrong.len().min(10)]);
}
