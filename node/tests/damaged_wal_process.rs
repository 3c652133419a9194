//! Process-level tests of a damaged WAL: on three real `quasar start` nodes under a steady
//! write load, one follower is killed with SIGKILL, its shard-0 WAL segments are damaged on
//! disk, and it is restarted. The verdicts (`wal/src/recovery.rs`):
//!
//! - a segment cut short inside its written data is a torn tail: the node starts, catches
//!   up to the same applied index and state hash as the others, and every acknowledged
//!   write reads back;
//! - one flipped bit either recovers to a correct state or is refused; while the node runs,
//!   follower reads served by it return only acknowledged values;
//! - a segment missing between others, or a data segment cut to zero bytes, is refused: the
//!   process exits non-zero within the start timeout and its log names the segment file.
//!
//! After a refusal the other two nodes keep serving writes. The random choices come from a
//! seed printed by each test; replay one with `QUASAR_DAMAGE_SEED=<seed>`.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    assert_readable, key, spawn_writer, stop_writer, value, wait_until, Cluster, Node, USER_RANGE,
};
use quasar_rpc::client::BlockingClient;
use quasar_rpc::message::ReadConsistency;
use quasar_wal::record::{self, Decoded, RecordKind, SEAL_RECORD_LEN, SEGMENT_HEADER_RECORD_LEN};
use quasar_wal::SegmentId;

/// Keys of the load that runs while the victim is down and restarting start here, apart
/// from the keys of the load before the kill.
const LATER_KEYS: usize = 200_000;

/// The applied index of the user range the load reaches before a follower is killed.
const LOAD_BEFORE_KILL: u64 = 150;

/// How long a damaged node has to either answer `/health` or exit.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);

/// The seed of one test: `QUASAR_DAMAGE_SEED` or a fresh one, printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("QUASAR_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with QUASAR_DAMAGE_SEED={seed})");
    seed
}

/// One segment file of a node's shard-0 WAL.
#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    len: u64,
    /// One past the last non-zero byte: the written part (header included).
    written: usize,
}

impl Segment {
    fn name(&self) -> String {
        SegmentId(self.id).file_name()
    }

    /// Whether records follow the header (a prepared segment holds only its header).
    fn holds_data(&self) -> bool {
        self.written > SEGMENT_HEADER_RECORD_LEN
    }
}

fn wal_dir(node: &Node) -> PathBuf {
    node.data_dir().join("shard-0").join("wal")
}

/// The segment files of `node`'s shard-0 WAL, by id.
fn segments(node: &Node) -> Vec<Segment> {
    let dir = wal_dir(node);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("list the WAL directory") {
        let entry = entry.expect("read a WAL directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = SegmentId::from_file_name(&name) else {
            continue;
        };
        let bytes = std::fs::read(entry.path()).expect("read a segment file");
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        out.push(Segment {
            id: id.0,
            path: entry.path(),
            len: bytes.len() as u64,
            written,
        });
    }
    out.sort_by_key(|s| s.id);
    out
}

fn describe(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| format!("{} ({} bytes, {} written)", s.name(), s.len, s.written))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flips bit `bit` of byte `at` of the file at `path` in place (rewriting a whole 64 MiB
/// segment would stall the fsyncs of the other tests' nodes).
fn flip_bit(path: &std::path::Path, at: usize, bit: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at as u64)
        .expect("read the byte to flip");
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, at as u64)
        .expect("write the flipped byte");
}

/// The newest segment that holds records.
fn newest_data_segment(segments: &[Segment]) -> &Segment {
    segments
        .iter()
        .rev()
        .find(|s| s.holds_data())
        .unwrap_or_else(|| panic!("no WAL segment holds data: {}", describe(segments)))
}

/// A write load on keys `key(from..)`, one write at a time, until `stop` (or 60 s).
fn spawn_keyed_writer(
    mut client: BlockingClient,
    tag: &'static str,
    from: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(BTreeMap<usize, Vec<u8>>, usize)> {
    std::thread::spawn(move || {
        let mut acked = BTreeMap::new();
        let mut failed = 0;
        let started = Instant::now();
        let mut k = from;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
            let v = value(tag, k);
            match client.put(&key(k), &v) {
                Ok(_) => {
                    acked.insert(k, v);
                }
                Err(_) => failed += 1,
            }
            k += 1;
        }
        (acked, failed)
    })
}

/// Stops a [`spawn_keyed_writer`] load and returns the writes it had acknowledged.
fn stop_keyed_writer(
    stop: &AtomicBool,
    writer: JoinHandle<(BTreeMap<usize, Vec<u8>>, usize)>,
) -> BTreeMap<usize, Vec<u8>> {
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.join().expect("the writer thread finished");
    assert!(
        !acked.is_empty(),
        "no write acknowledged while a node was down ({failed} failed)"
    );
    acked
}

/// A cluster under load whose follower `victim` was killed with SIGKILL mid-load.
struct Scenario {
    cluster: Cluster,
    victim: u64,
    /// Writes acknowledged before (and just after) the kill.
    acked: BTreeMap<usize, Vec<u8>>,
    /// The load that keeps running while the victim is down.
    stop: Arc<AtomicBool>,
    writer: JoinHandle<(BTreeMap<usize, Vec<u8>>, usize)>,
}

/// The applied index of the user range on node `id`, if it answers.
fn applied_of(cluster: &Cluster, id: u64) -> Option<u64> {
    cluster
        .node(id)
        .range_status(USER_RANGE)
        .ok()
        .and_then(|r| r["applied"].as_u64())
}

fn kill_a_follower_under_load() -> Scenario {
    let mut cluster = Cluster::start(3, 1);
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(cluster.client(), "a", 100_000, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(1500));
    // A busy machine (CI runs these tests side by side) can stall the first writes behind
    // an election: wait, bounded, until the load has gone well past the fixed pause.
    let progressed = wait_until(Duration::from_secs(30), || {
        cluster
            .leader_of(USER_RANGE)
            .and_then(|id| applied_of(&cluster, id))
            .is_some_and(|a| a >= LOAD_BEFORE_KILL)
    });
    assert!(
        progressed,
        "the load did not reach applied index {LOAD_BEFORE_KILL} of range {USER_RANGE} in 30 s\n{}",
        cluster.statuses()
    );
    let leader = cluster.leader_of(USER_RANGE).unwrap_or(leader);
    let victim = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.node_mut(victim).kill9();
    std::thread::sleep(Duration::from_millis(200));
    let (acked, _) = stop_writer(&stop, writer);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_keyed_writer(cluster.client(), "b", LATER_KEYS, Arc::clone(&stop));
    Scenario {
        cluster,
        victim,
        acked,
        stop,
        writer,
    }
}

enum Verdict {
    Started,
    Refused(ExitStatus),
}

/// Restarts `node` and says whether it started (answers `/health`) or exited.
fn restart_verdict(node: &mut Node) -> Verdict {
    // `restart` panics when the node exits (or is not healthy in time) before `/health`
    // answers 200: that panic is the "refused" outcome here.
    match catch_unwind(AssertUnwindSafe(|| node.restart())) {
        Ok(()) => Verdict::Started,
        Err(_) => match node.wait_exit(Duration::from_secs(1)) {
            Some(status) => Verdict::Refused(status),
            None => panic!(
                "node {} neither started nor exited within {VERDICT_TIMEOUT:?}\n{}",
                node.id,
                node.log_tail(40)
            ),
        },
    }
}

/// Asserts a refusal: non-zero exit, no panic, and a log naming `segment` and `words`.
fn assert_refused(node: &Node, status: ExitStatus, segment: &str, words: &[&str]) {
    let log = node.log_tail(30);
    assert!(
        !status.success(),
        "node {} exited with {status} on a damaged WAL\n{log}",
        node.id
    );
    assert!(
        !log.contains("panicked"),
        "node {} panicked instead of refusing with a clear error\n{log}",
        node.id
    );
    let refusal = log
        .lines()
        .rev()
        .find(|l| l.contains("quasar:"))
        .unwrap_or_else(|| panic!("no `quasar: ...` error line in the log\n{log}"));
    assert!(
        refusal.contains(segment) && words.iter().all(|w| refusal.contains(w)),
        "the refusal does not name {segment} and {words:?}: {refusal}"
    );
}

/// Follower reads pinned to `id` (for at most 2 s): every acknowledged key reads back with
/// its value (errors while the node catches up are allowed; a wrong or missing value is
/// not). Returns how many reads were answered.
fn check_reads_served_by(cluster: &Cluster, id: u64, acked: &BTreeMap<usize, Vec<u8>>) -> usize {
    let mut config = cluster.client_config(&[id]);
    config.consistency = ReadConsistency::Follower;
    config.max_attempts = 2;
    config.request_timeout = Duration::from_millis(500);
    let mut client = BlockingClient::new(config);
    let mut answered = 0;
    let budget = Instant::now() + Duration::from_secs(2);
    for (k, v) in acked.iter().step_by(3) {
        if Instant::now() >= budget {
            break;
        }
        match client.get(&key(*k)) {
            Ok(Some(got)) => {
                assert!(
                    got.value == *v,
                    "node {id} served key {k} = {:?}, acknowledged {:?}",
                    String::from_utf8_lossy(&got.value),
                    String::from_utf8_lossy(v)
                );
                answered += 1;
            }
            Ok(None) => panic!("node {id} served key {k} as absent; it was acknowledged"),
            Err(_) => {}
        }
    }
    answered
}

/// After the victim started again: it serves only acknowledged values while catching up,
/// converges with the others, and every acknowledged write reads back (through it, too).
/// Returns the cluster, for more checks.
fn assert_recovers(s: Scenario) -> Cluster {
    let Scenario {
        cluster,
        victim,
        acked,
        stop,
        writer,
    } = s;
    // Catch up (to what the leader had applied when the node came back) under the load,
    // serving follower reads meanwhile; then converge at rest.
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let target = applied_of(&cluster, leader).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = 0;
    loop {
        answered += check_reads_served_by(&cluster, victim, &acked);
        if applied_of(&cluster, victim) >= Some(target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} did not catch up to applied {target} in 20 s after a damaged WAL\n{}\n{}",
            cluster.statuses(),
            cluster.node(victim).log_tail(40)
        );
    }
    let later = stop_keyed_writer(&stop, writer);
    let applied = cluster
        .wait_converged(USER_RANGE, Duration::from_secs(15))
        .unwrap_or_else(|e| {
            panic!(
                "node {victim} did not converge after a damaged WAL: {e}\n{}",
                cluster.node(victim).log_tail(40)
            )
        });
    eprintln!(
        "node {victim} recovered: applied {applied}, {answered} follower reads answered, {} + {} writes acknowledged",
        acked.len(),
        later.len()
    );
    assert_readable(&mut cluster.client(), &acked);
    assert_readable(&mut cluster.client(), &later);
    assert!(
        check_reads_served_by(&cluster, victim, &acked) > 0,
        "node {victim} answered no follower read after catching up"
    );
    cluster
}

/// After the victim refused to start: the other two keep serving writes and reads.
fn assert_majority_serves(s: Scenario) {
    let Scenario {
        mut cluster,
        victim,
        acked,
        stop,
        writer,
    } = s;
    let survivors = cluster.running();
    assert!(!survivors.contains(&victim), "node {victim} still runs");
    // The load keeps going on the two survivors for a while.
    std::thread::sleep(Duration::from_millis(1000));
    let later = stop_keyed_writer(&stop, writer);
    let mut client = cluster.client_of(&survivors);
    for i in 0..20 {
        let k = 2 * LATER_KEYS + i;
        client
            .put(&key(k), &value("c", k))
            .unwrap_or_else(|e| panic!("a write through nodes {survivors:?} failed: {e}"));
    }
    assert_readable(&mut client, &acked);
    assert_readable(&mut client, &later);
}

/// Offsets of the `SyncMark` records (batch starts) of a segment file.
fn batch_starts(seg: &Segment) -> Vec<usize> {
    let bytes = std::fs::read(&seg.path).expect("read the segment");
    let seed = record::segment_seed(seg.id);
    let mut starts = Vec::new();
    let mut at = SEGMENT_HEADER_RECORD_LEN;
    while let Decoded::Record(r) = record::decode(&bytes, at, seed) {
        if r.kind == RecordKind::SyncMark {
            starts.push(at);
        }
        at = r.next;
    }
    starts
}

/// Case 0 cuts the newest data segment at a random offset in its written part; case 1 cuts
/// it a few bytes into a batch, leaving less room than a seal record after the end of the
/// log (the node must still be able to append and roll to the next segment).
#[test]
fn torn_tail_of_the_newest_segment_is_truncated_and_the_node_catches_up() {
    let mut rng = fastrand::Rng::with_seed(seed("torn_tail"));
    for case in 0..2 {
        let mut s = kill_a_follower_under_load();
        let node = s.cluster.node_mut(s.victim);
        let segs = segments(node);
        let newest = newest_data_segment(&segs);
        let cut = if case == 0 {
            rng.usize(SEGMENT_HEADER_RECORD_LEN..newest.written)
        } else {
            let starts = batch_starts(newest);
            assert!(starts.len() > 2, "too few batches in {}", newest.name());
            starts[rng.usize(starts.len() / 2..starts.len())] + rng.usize(1..SEAL_RECORD_LEN)
        };
        eprintln!(
            "case {case}: node {}: cutting {} at {cut} (segments: {})",
            node.id,
            newest.name(),
            describe(&segs)
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest.path)
            .expect("open the segment");
        file.set_len(cut as u64).expect("truncate the segment");
        drop(file);
        match restart_verdict(node) {
            Verdict::Started => {}
            Verdict::Refused(status) => panic!(
                "case {case}: a torn tail was refused ({status})\n{}",
                node.log_tail(30)
            ),
        }
        let victim = s.victim;
        let mut cluster = assert_recovers(s);
        // The log as recovery left it (and as the node then appended to it) opens again.
        cluster.node_mut(victim).kill9();
        cluster.node_mut(victim).restart();
        cluster
            .wait_converged(USER_RANGE, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("case {case}: not converged after a second restart: {e}"));
    }
}

#[test]
fn a_flipped_bit_recovers_correctly_or_is_refused() {
    let mut rng = fastrand::Rng::with_seed(seed("flipped_bit"));
    for case in 0..2 {
        let mut s = kill_a_follower_under_load();
        let node = s.cluster.node_mut(s.victim);
        let segs = segments(node);
        let data: Vec<&Segment> = segs.iter().filter(|s| s.holds_data()).collect();
        let seg = data[rng.usize(..data.len())];
        let at = rng.usize(..seg.written);
        let bit = rng.u8(..8);
        eprintln!(
            "case {case}: node {}: flipping bit {bit} of byte {at} of {} (segments: {})",
            node.id,
            seg.name(),
            describe(&segs)
        );
        flip_bit(&seg.path, at, bit);
        match restart_verdict(node) {
            Verdict::Started => {
                eprintln!("case {case}: started");
                drop(assert_recovers(s));
            }
            Verdict::Refused(status) => {
                eprintln!("case {case}: refused ({status})");
                assert_refused(node, status, &seg.name(), &["offset"]);
                assert_majority_serves(s);
            }
        }
    }
}

#[test]
fn a_missing_segment_between_others_is_refused() {
    let mut s = kill_a_follower_under_load();
    let node = s.cluster.node_mut(s.victim);
    let segs = segments(node);
    assert!(
        segs.len() >= 3,
        "expected a data segment and two prepared ones: {}",
        describe(&segs)
    );
    let gone = &segs[segs.len() - 2];
    eprintln!(
        "node {}: removing {} (segments: {})",
        node.id,
        gone.name(),
        describe(&segs)
    );
    std::fs::remove_file(&gone.path).expect("remove the segment");
    match restart_verdict(node) {
        Verdict::Started => panic!(
            "node started without segment {}\n{}",
            gone.name(),
            node.log_tail(30)
        ),
        Verdict::Refused(status) => assert_refused(node, status, &gone.name(), &["missing"]),
    }
    assert_majority_serves(s);
}

#[test]
fn a_data_segment_cut_to_zero_bytes_is_refused() {
    let mut s = kill_a_follower_under_load();
    let node = s.cluster.node_mut(s.victim);
    let segs = segments(node);
    let newest = newest_data_segment(&segs);
    eprintln!(
        "node {}: cutting {} to 0 bytes (segments: {})",
        node.id,
        newest.name(),
        describe(&segs)
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest.path)
        .expect("open the segment");
    file.set_len(0).expect("truncate the segment");
    drop(file);
    match restart_verdict(node) {
        Verdict::Started => panic!(
            "node started with an empty data segment {}\n{}",
            newest.name(),
            node.log_tail(30)
        ),
        Verdict::Refused(status) => {
            assert_refused(node, status, &newest.name(), &["offset", "empty"]);
        }
    }
    assert_majority_serves(s);
}
