//! Process-level range operations on a 3-node cluster of real `quasar start` processes,
//! under a steady write load: the user range is split 20 times and merged back; every
//! acknowledged write is still readable, and every node ends with the same ranges in the
//! same state. Prints split and merge latency (request to answer, which comes once both
//! ranges serve) without asserting on it.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_readable, key, spawn_writer, stop_writer, wait_until, Cluster, USER_RANGE};
use quasar_rpc::client::BlockingClient;
use quasar_rpc::message::{
    AdminOp, AdminReply, NodeId, RangeDescriptor, RangeId, RangeInfo, RangeSelector, ShardId,
};
use quasar_rpc::transport::shard_for_group;

const SPLITS: usize = 20;
/// Keys the writer spreads over (`key-0000` .. `key-9999`); split points every 476 keys.
const KEYS: usize = 10_000;
const SPLIT_EVERY: usize = 476;

fn describe(client: &mut BlockingClient, sel: RangeSelector) -> RangeInfo {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for node in 1..=3 {
            if let Ok(AdminReply::Range(info)) = client.admin(
                NodeId(node),
                ShardId(0),
                AdminOp::DescribeRange(sel.clone()),
            ) {
                if info.leader.is_some() {
                    return info;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader for {sel:?} in 20 s");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `op` (built from the range's current descriptor) to the range's leader, on the
/// shard that holds the range; retries with fresh descriptors while the range is busy.
fn at_leader(
    client: &mut BlockingClient,
    shards: u32,
    range: RangeId,
    op: impl Fn(&RangeDescriptor) -> AdminOp,
) -> (AdminReply, Duration) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let info = describe(client, RangeSelector::Id(range));
        let Some(leader) = info.leader else { continue };
        let shard = shard_for_group(info.descriptor.group, shards);
        let t = Instant::now();
        match client.admin(leader, shard, op(&info.descriptor)) {
            Ok(reply) => return (reply, t.elapsed()),
            Err(e) => {
                eprintln!("range {range}: {e}; retrying");
                last = e.to_string();
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("admin op on range {range} failed for 30 s: {last}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn twenty_splits_and_merges_under_load_lose_no_acknowledged_write() {
    let cluster = Cluster::start(3, 2);
    cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let shards = cluster.shards;

    // The load: unique keys spread over the whole key space, one write at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cluster.client(), "load", KEYS, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(300));

    let mut admin = cluster.client();
    let mut split_times = Vec::new();
    let mut ranges: Vec<RangeDescriptor> = Vec::new();
    for j in 1..=SPLITS {
        let at = key(j * SPLIT_EVERY);
        // Each split cuts the last range (the right half of the previous split).
        let holder = ranges.last().map_or(RangeId(USER_RANGE), |d| d.id);
        let (reply, took) = at_leader(&mut admin, shards, holder, |d| AdminOp::SplitRange {
            range: d.id,
            split_key: at.clone(),
            expected_epoch: d.epoch,
        });
        split_times.push(took);
        match reply {
            AdminReply::Split { left, right } => {
                assert_eq!(left.end, at);
                assert_eq!(right.start, at);
                ranges.push(right);
            }
            other => panic!("split {j} answered {other:?}"),
        }
    }

    // Merge back from the right end: each range's left neighbour absorbs it.
    let mut merge_times = Vec::new();
    for (i, right) in ranges.iter().enumerate().rev() {
        let left_id = if i == 0 {
            RangeId(USER_RANGE)
        } else {
            ranges[i - 1].id
        };
        let left = describe(&mut admin, RangeSelector::Id(left_id)).descriptor;
        // Both ranges must be led by one node: move the right one's leadership if needed.
        let wanted = describe(&mut admin, RangeSelector::Id(left.id)).leader;
        let right_info = describe(&mut admin, RangeSelector::Id(right.id));
        if let (Some(to), Some(now)) = (wanted, right_info.leader) {
            if to != now {
                at_leader(&mut admin, shards, right.id, |d| AdminOp::TransferLeader {
                    range: d.id,
                    to,
                });
            }
        }
        let (reply, took) = at_leader(&mut admin, shards, left.id, |d| AdminOp::MergeRanges {
            left: d.id,
            expected_epoch: d.epoch,
        });
        merge_times.push(took);
        match reply {
            AdminReply::Merged { merged } => assert_eq!(merged.end, right.end),
            other => panic!("merge of {} answered {other:?}", right.id),
        }
    }

    let (acked, failed) = stop_writer(&stop, writer);

    // One range again, the same everywhere.
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = (1..=3)
                .map(|n| {
                    admin.admin(
                        NodeId(n),
                        ShardId(0),
                        AdminOp::DescribeRange(RangeSelector::Key(key(KEYS - 1))),
                    )
                })
                .collect();
            seen.iter().all(|r| {
                matches!(r, Ok(AdminReply::Range(info))
                    if info.descriptor.id == RangeId(USER_RANGE) && info.descriptor.end.is_empty())
            })
        }),
        "every node sees one user range again: {seen:?}"
    );
    cluster
        .wait_converged(USER_RANGE, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.statuses()));
    assert_readable(&mut cluster.client(), &acked);
    assert!(
        wait_until(Duration::from_secs(10), || {
            cluster.nodes.iter().all(|n| {
                n.status()
                    .is_ok_and(|s| s["ranges"].as_array().is_some_and(|r| r.len() == 2))
            })
        }),
        "every node holds the meta range and one user range again:\n{}",
        cluster.statuses()
    );

    split_times.sort();
    merge_times.sort();
    eprintln!(
        "{SPLITS} splits: p50 {:?} p99 {:?} max {:?}; merges: p50 {:?} p99 {:?} max {:?}; \
         {} writes acknowledged, {failed} failed during the run",
        percentile(&split_times, 0.5),
        percentile(&split_times, 0.99),
        split_times.last(),
        percentile(&merge_times, 0.5),
        percentile(&merge_times, 0.99),
        merge_times.last(),
        acked.len()
    );
}
