//! Single-node store tests over the in-memory disk: the turn protocol, routing answers,
//! snapshots and recovery. Multi-node behaviour is the whole-node simulator's
//! (`shard::sim::node`, `tests/sim_node.rs`).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};

use quasar_rpc::frame::{access_body, encode_frame};
use quasar_rpc::message::{
    ClientRequest, ClientResponse, InvalidReason, Operation, ReadConsistency, Reply, RequestError,
    RequestId, Sequence, SessionId, ShardId,
};
use quasar_wal::{Crash, MemDisk, Wal, WalConfig};
use rkyv::util::AlignedVec;

use super::snapfile::MemSnapshots;
use super::snapfile::SnapshotStore;
use super::{Directory, Store, StoreConfig};
use crate::raft::NodeId;

fn wal_config() -> WalConfig {
    WalConfig {
        segment_size_bytes: 256 << 10,
        cache_bytes: 1 << 20,
        ..WalConfig::default()
    }
}

struct One {
    store: Store<MemDisk, MemSnapshots>,
    next: u64,
}

fn config(shards: u32) -> StoreConfig {
    let mut cfg = StoreConfig::new(NodeId(1), ShardId(0), shards);
    cfg.snapshot_after_entries = 20;
    cfg
}

fn open(disk: MemDisk, snaps: MemSnapshots, cfg: StoreConfig) -> One {
    open_with_wal(disk, snaps, cfg, wal_config())
}

fn open_with_wal(disk: MemDisk, snaps: MemSnapshots, cfg: StoreConfig, wal: WalConfig) -> One {
    let wal = Wal::open(disk, wal).expect("wal opens");
    let dir = Arc::new(RwLock::new(Directory::bootstrap(&[NodeId(1)])));
    let store = Store::open(cfg, wal, snaps, dir, 7).expect("store opens");
    One { store, next: 1 }
}

impl One {
    /// One turn as the runtime runs it; `MemDisk` syncs complete at once.
    fn turn(&mut self) {
        let appended = self.store.process().expect("process");
        self.sync_and_finish(appended);
    }

    /// The rest of a turn after `process`: the sync (if it appended) and `finish`.
    fn sync_and_finish(&mut self, appended: bool) {
        self.store.recycle_outbox();
        if appended {
            if let Some((target, result)) = self.begin_sync() {
                self.store
                    .wal_mut()
                    .on_sync_done(target, result)
                    .expect("sync done");
            }
        }
        self.store.finish().expect("finish");
    }

    /// Begins a WAL sync and runs it (a `MemDisk` sync completes at once); the store is
    /// not told yet. Returns its target and result.
    fn begin_sync(&mut self) -> Option<(quasar_wal::Lsn, std::io::Result<()>)> {
        let job = self.store.wal_mut().begin_sync().expect("begin sync")?;
        let target = job.target();
        let mut fut = std::pin::pin!(job.run());
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(result) = fut.as_mut().poll(&mut cx) else {
            panic!("a MemDisk sync completes at once")
        };
        Some((target, result))
    }

    /// Reports a sync begun with `begin_sync` + `sync_started` complete (the oldest in
    /// flight) and finishes the `Ready`s it covered.
    fn complete_sync(&mut self, target: quasar_wal::Lsn, result: std::io::Result<()>) {
        self.store
            .wal_mut()
            .on_sync_done(target, result)
            .expect("sync done");
        self.store.finish_synced().expect("finish synced");
    }

    fn settle(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.store.tick();
            self.turn();
        }
    }

    fn request(&mut self, op: Operation, consistency: ReadConsistency) -> ClientResponse {
        self.request_routed(op, consistency, None)
    }

    /// Hands the store a request; returns its id.
    fn submit(
        &mut self,
        op: Operation,
        consistency: ReadConsistency,
        route: Option<quasar_rpc::message::Route>,
    ) -> u64 {
        let (id, body) = self.encode(op, consistency, route);
        let archived = access_body::<ClientRequest>(&body).expect("valid");
        self.store.on_client_request(5, archived, &body);
        id
    }

    /// A request's frame body, as the runtime hands it to the store, and its id.
    fn encode(
        &mut self,
        op: Operation,
        consistency: ReadConsistency,
        route: Option<quasar_rpc::message::Route>,
    ) -> (u64, AlignedVec<16>) {
        let id = self.next;
        self.next += 1;
        let req = ClientRequest {
            request_id: RequestId(id),
            session: SessionId(99),
            sequence: Sequence(id),
            consistency,
            route,
            op,
        };
        let mut frame = AlignedVec::new();
        let encoded = encode_frame(&req, &mut frame).expect("encodes");
        let start = encoded.frame.start + quasar_rpc::frame::HEADER_LEN;
        let mut body = AlignedVec::<16>::new();
        body.extend_from_slice(&frame[start..start + encoded.body_len as usize]);
        (id, body)
    }

    /// Hands the store a request as the runtime does; returns the answer given at once.
    fn answer_now(
        &mut self,
        op: Operation,
        consistency: ReadConsistency,
    ) -> Option<ClientResponse> {
        let (_, body) = self.encode(op, consistency, None);
        let archived = access_body::<ClientRequest>(&body).expect("valid");
        self.store.answer_client_request(5, archived, &body)
    }

    /// Hands the store a write of `key` (value `v`) without running a turn; returns its id.
    fn submit_put(&mut self, key: &[u8]) -> u64 {
        let op = Operation::Put {
            key: key.to_vec(),
            value: b"v".to_vec(),
        };
        self.submit(op, ReadConsistency::Linearizable, None)
    }

    /// The turn after the sync that covers the second of two puts (`a`, then `b`, both
    /// `v`): it is answered, and both are applied.
    fn second_put_lands(&mut self, second: u64) {
        let appended = self.store.process().expect("process");
        assert!(self.answered(second));
        self.sync_and_finish(appended);
        assert_eq!(self.get(b"a").as_deref(), Some(&b"v"[..]));
        assert_eq!(self.get(b"b").as_deref(), Some(&b"v"[..]));
        self.store.check_invariants();
    }

    fn answered(&self, id: u64) -> bool {
        self.store
            .responses
            .iter()
            .any(|(_, r)| r.request_id.0 == id)
    }

    fn request_routed(
        &mut self,
        op: Operation,
        consistency: ReadConsistency,
        route: Option<quasar_rpc::message::Route>,
    ) -> ClientResponse {
        let id = self.submit(op, consistency, route);
        for _ in 0..50 {
            if let Some(pos) = self
                .store
                .responses
                .iter()
                .position(|(_, r)| r.request_id.0 == id)
            {
                return self.store.responses.remove(pos).1;
            }
            self.turn();
            self.store.tick();
        }
        panic!("request {id} never answered");
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> ClientResponse {
        self.request(
            Operation::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            ReadConsistency::Linearizable,
        )
    }

    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        match self
            .request(
                Operation::Get { key: key.to_vec() },
                ReadConsistency::Linearizable,
            )
            .result
        {
            Ok(Reply::Get(v)) => v.map(|v| v.value),
            other => panic!("get answered {other:?}"),
        }
    }
}

fn leader() -> One {
    leader_with(config(1))
}

/// A single voter with `cfg` that leads both ranges.
fn leader_with(cfg: StoreConfig) -> One {
    leader_with_wal(cfg, wal_config())
}

/// `leader_with` over a WAL configured as `wal`.
fn leader_with_wal(cfg: StoreConfig, wal: WalConfig) -> One {
    let mut one = open_with_wal(MemDisk::new(), MemSnapshots::default(), cfg, wal);
    one.settle(40);
    assert_eq!(
        one.store.leader_count(),
        2,
        "a single voter leads both ranges"
    );
    one
}

#[test]
fn idle_groups_sleep_and_a_request_wakes_its_group_only() {
    let mut one = leader();
    // Quiesced after `quiesce_after_ticks` without traffic, asleep at the next tick.
    one.settle(30);
    assert_eq!(one.store.metrics().awake_groups, 0, "both ranges asleep");
    assert!(!one.store.has_work());
    let mut published = std::collections::BTreeMap::new();
    let mut publish = |one: &mut One| {
        let changes = one.store.status_changes(&published);
        for (g, st) in &changes {
            match st {
                Some(st) => published.insert(*g, st.clone()),
                None => published.remove(g),
            };
        }
        changes
    };
    assert_eq!(publish(&mut one).len(), 2, "every status at first");
    one.settle(10);
    assert!(
        publish(&mut one).is_empty(),
        "ticks leave sleeping groups alone"
    );
    one.store.check_invariants();

    assert!(matches!(
        one.put(b"k", b"v").result,
        Ok(Reply::Written { .. })
    ));
    assert_eq!(
        one.store.metrics().awake_groups,
        1,
        "only the user range woke"
    );
    let changed = publish(&mut one);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].1.as_ref().map(|s| s.keys), Some(1));
    one.store.check_invariants();
    // Awake but unchanged: nothing to publish.
    one.store.tick();
    assert_eq!(one.store.metrics().awake_groups, 1);
    assert!(publish(&mut one).is_empty(), "an unchanged status again");
    one.settle(30);
    assert_eq!(
        publish(&mut one).len(),
        1,
        "quiesced: the user range's status changed"
    );
    for (g, st) in &published {
        let live = one
            .store
            .statuses()
            .into_iter()
            .find(|s| s.descriptor.group == *g);
        assert_eq!(live.as_ref(), Some(st), "group {} published as it is", g.0);
    }
    assert_eq!(one.store.metrics().awake_groups, 0, "asleep again");
    assert_eq!(one.get(b"k").as_deref(), Some(&b"v"[..]));
    one.store.check_invariants();
}

#[test]
fn a_committed_write_is_answered_before_the_sync_of_the_turn_that_applies_it() {
    let mut one = leader();
    let first = one.submit_put(b"a");
    // The turn that appends the write: nothing is answered before its sync.
    let appended = one.store.process().expect("process");
    assert!(appended);
    assert!(
        !one.answered(first),
        "answered before its entry was durable"
    );
    one.sync_and_finish(appended);
    // A second write arrives; the next turn appends it and, before syncing it, applies and
    // answers the first (durable and, on a single voter, committed).
    let second = one.submit_put(b"b");
    let appended = one.store.process().expect("process");
    assert!(appended, "the second write is appended in this turn");
    assert!(
        one.answered(first),
        "the committed write waits for the sync of a later entry"
    );
    assert!(!one.answered(second), "the second is not durable yet");
    one.sync_and_finish(appended);
    one.second_put_lands(second);
}

#[test]
fn without_pipelined_turns_nothing_is_processed_while_a_sync_is_in_flight() {
    let mut cfg = config(1);
    cfg.pipelined_turns = false;
    let mut one = leader_with(cfg);
    one.submit_put(b"a");
    assert!(one.store.process().expect("process"));
    let (target, result) = one.begin_sync().expect("something to sync");
    one.store.sync_started();
    assert!(
        !one.store.may_process(),
        "the default turn waits for its sync"
    );
    one.complete_sync(target, result);
    assert!(one.store.may_process());
}

#[test]
fn a_turn_runs_while_the_previous_sync_is_in_flight_and_its_writes_wait_for_their_own_sync() {
    let mut cfg = config(1);
    cfg.pipelined_turns = true;
    let mut one = leader_with(cfg);
    let first = one.submit_put(b"a");
    assert!(one.store.process().expect("process"));
    // The runtime begins the sync; the store is told only once it completes.
    let (target, result) = one.begin_sync().expect("something to sync");
    one.store.sync_started();
    assert!(one.store.is_syncing());
    assert!(
        one.store.may_process(),
        "a plain write's sync holds nothing back"
    );
    // A second write arrives during the sync: it is appended at once, beyond the target.
    let second = one.submit_put(b"b");
    let pipelined = one.store.metrics().pipelined_turns;
    assert!(
        one.store.process().expect("process"),
        "the second write needs a sync"
    );
    assert_eq!(one.store.metrics().pipelined_turns, pipelined + 1);
    assert!(one.store.wal.appended_lsn() > target);
    assert!(!one.answered(first), "answered before its sync completed");
    assert!(!one.answered(second));
    one.complete_sync(target, result);
    assert!(!one.store.is_syncing());
    // The next turn commits and answers the first write (durable now); the second still
    // waits for the sync that covers it.
    assert!(
        one.store.process().expect("process"),
        "the second write still needs a sync"
    );
    assert!(one.answered(first));
    assert!(!one.answered(second), "answered before its own sync");
    // A crash now loses the second write (never synced, never answered), not the first.
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let mut again = open(crashed, snaps, config(1));
    again.settle(40);
    assert_eq!(again.get(b"a").as_deref(), Some(&b"v"[..]));
    assert_eq!(again.get(b"b"), None);
    again.store.check_invariants();
}

#[test]
fn a_second_sync_begins_while_the_first_is_in_flight_and_they_finish_in_order() {
    let mut cfg = config(1);
    cfg.pipelined_turns = true;
    let wal = WalConfig {
        syncs_in_flight: 2,
        ..wal_config()
    };
    let mut one = leader_with_wal(cfg, wal);
    let first = one.submit_put(b"a");
    assert!(one.store.process().expect("process"));
    let (target1, result1) = one.begin_sync().expect("something to sync");
    one.store.sync_started();
    // A write arrives while the first sync runs: its turn begins a sync of its own.
    let second = one.submit_put(b"b");
    assert!(one.store.process().expect("process"));
    let (target2, result2) = one
        .begin_sync()
        .expect("a second sync begins while the first is in flight");
    one.store.sync_started();
    assert!(target2 > target1);
    assert!(!one.answered(first) && !one.answered(second));
    one.complete_sync(target1, result1);
    assert!(one.store.is_syncing(), "the second sync is still in flight");
    // The first write is durable and committed: the next turn answers it, not the second.
    one.store.process().expect("process");
    assert!(one.answered(first));
    assert!(
        !one.answered(second),
        "answered before its own sync completed"
    );
    one.complete_sync(target2, result2);
    assert!(!one.store.is_syncing());
    one.second_put_lands(second);
}

#[test]
fn a_turn_that_only_moves_commit_indexes_does_not_sync_and_a_crash_after_it_loses_nothing() {
    let mut one = leader();
    let id = one.submit_put(b"a");
    assert!(
        one.store.process().expect("process"),
        "an entry needs a sync"
    );
    one.sync_and_finish(true);
    // The next turn learns the commit: it applies and answers the write and writes the new
    // commit index, but asks for no sync.
    let lazy = one.store.metrics().lazy_turns;
    assert!(
        !one.store.process().expect("process"),
        "a commit alone synced"
    );
    assert!(one.answered(id));
    assert_eq!(one.store.metrics().lazy_turns, lazy + 1);
    assert!(one.store.wal.appended_lsn() > one.store.wal.durable_lsn());
    one.sync_and_finish(false);
    // Unsynced commit records do not make an idle turn sync either.
    assert!(!one.store.process().expect("process"));
    one.sync_and_finish(false);
    // A crash loses the commit record, not the write: the restart commits it again.
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let mut again = open(crashed, snaps, config(1));
    again.settle(40);
    assert_eq!(again.get(b"a").as_deref(), Some(&b"v"[..]));
    // The next entry's sync covers what was left lazily.
    assert!(matches!(
        again.put(b"b", b"v").result,
        Ok(Reply::Written { .. })
    ));
    again.store.check_invariants();
}

#[test]
fn a_single_node_writes_reads_and_refuses_the_meta_range() {
    let mut one = leader();
    assert!(matches!(
        one.put(b"k", b"v").result,
        Ok(Reply::Written { .. })
    ));
    assert_eq!(one.get(b"k"), Some(b"v".to_vec()));
    assert_eq!(one.get(b"missing"), None);
    let meta = one.put(b"\x00system", b"x");
    assert_eq!(
        meta.result,
        Err(RequestError::InvalidRequest {
            reason: InvalidReason::ReservedKey
        })
    );
    let stale = one.request(
        Operation::Get { key: b"k".to_vec() },
        ReadConsistency::Stale {
            max_staleness_ms: 0,
        },
    );
    assert!(matches!(stale.result, Ok(Reply::Get(Some(_)))), "{stale:?}");
}

#[test]
fn a_lease_read_is_answered_at_once_and_a_read_index_read_by_a_turn() {
    let mut one = leader();
    assert!(matches!(
        one.put(b"k", b"v").result,
        Ok(Reply::Written { .. })
    ));
    let get = || Operation::Get { key: b"k".to_vec() };
    let now = one
        .answer_now(get(), ReadConsistency::Linearizable)
        .expect("a lease read needs no turn");
    match now.result {
        Ok(Reply::Get(Some(v))) => assert_eq!(v.value, b"v"),
        other => panic!("lease read answered {other:?}"),
    }
    assert!(one.store.reads.is_empty(), "nothing left pending");
    assert!(
        one.store.responses.is_empty(),
        "nothing queued for the turn"
    );
    // A write proposed but not yet applied: a lease read still answers at once (the write
    // is not acknowledged, so the read may come before it) from the applied state.
    let w = one.submit_put(b"k2");
    let before = one
        .answer_now(
            Operation::Get {
                key: b"k2".to_vec(),
            },
            ReadConsistency::Linearizable,
        )
        .expect("answered at once");
    assert!(matches!(before.result, Ok(Reply::Get(None))), "{before:?}");
    for _ in 0..50 {
        if one.answered(w) {
            break;
        }
        one.turn();
    }
    assert!(one.answered(w), "the write is answered");

    let mut cfg = config(1);
    cfg.lease_reads = false;
    let mut one = open(MemDisk::new(), MemSnapshots::default(), cfg);
    one.settle(40);
    assert!(
        one.answer_now(get(), ReadConsistency::Linearizable)
            .is_none(),
        "a ReadIndex read waits for a turn"
    );
    assert_eq!(one.store.reads.len(), 1);
}

#[test]
fn without_lease_reads_a_linearizable_read_takes_the_read_index_path() {
    let mut cfg = config(1);
    cfg.lease_reads = false;
    assert_eq!(cfg.raft(quasar_rpc::message::GroupId(1)).lease_ticks, 0);
    let mut one = open(MemDisk::new(), MemSnapshots::default(), cfg);
    one.settle(40);
    assert!(matches!(
        one.put(b"k", b"v").result,
        Ok(Reply::Written { .. })
    ));
    assert_eq!(one.get(b"k"), Some(b"v".to_vec()));
    assert!(
        config(1).raft(quasar_rpc::message::GroupId(1)).lease_ticks > 0,
        "lease reads are the default"
    );
}

#[test]
fn a_range_on_another_shard_is_answered_with_its_descriptor() {
    // With two shards, groups 1 and 2 may land on different shards; the shard that does not
    // own the user range answers with the range's descriptor.
    let mut cfg = config(2);
    let owner = quasar_rpc::transport::shard_for_group(quasar_rpc::message::GroupId(2), 2);
    cfg.shard = ShardId(1 - owner.0);
    let mut other = open(MemDisk::new(), MemSnapshots::default(), cfg);
    other.settle(5);
    match other.put(b"k", b"v").result {
        Err(RequestError::KeyNotInRange { descriptor }) => {
            assert_eq!(descriptor.id.0, 2);
            assert!(descriptor.contains(b"k"));
        }
        other => panic!("expected KeyNotInRange, got {other:?}"),
    }
}

#[test]
fn a_follower_gives_an_unrouted_request_the_descriptor_and_a_routed_one_the_leader() {
    // One voter of three that hears from no one: it never leads. A client that asked it by
    // key (no route) must learn the range's descriptor, or it would come back here first on
    // every request; a client that routed to the range learns that this is not the leader.
    let wal = Wal::open(MemDisk::new(), wal_config()).expect("wal opens");
    let dir = Arc::new(RwLock::new(Directory::bootstrap(&[
        NodeId(1),
        NodeId(2),
        NodeId(3),
    ])));
    let store = Store::open(config(1), wal, MemSnapshots::default(), dir, 7).expect("opens");
    let mut one = One { store, next: 1 };
    one.settle(5);
    let descriptor = match one.put(b"k", b"v").result {
        Err(RequestError::RangeMoved { descriptor }) => descriptor,
        other => panic!("expected RangeMoved, got {other:?}"),
    };
    assert_eq!(descriptor.id.0, 2);
    assert!(descriptor.contains(b"k"));
    let read = one.request(
        Operation::Get { key: b"k".to_vec() },
        ReadConsistency::Linearizable,
    );
    assert!(
        matches!(&read.result, Err(RequestError::RangeMoved { descriptor: d }) if *d == descriptor),
        "{read:?}"
    );
    let routed = one.request_routed(
        Operation::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
        ReadConsistency::Linearizable,
        Some(quasar_rpc::message::Route {
            range: descriptor.id,
            epoch: descriptor.epoch,
        }),
    );
    assert!(
        matches!(routed.result, Err(RequestError::NotLeader { range, .. }) if range == descriptor.id),
        "{routed:?}"
    );
}

#[test]
fn snapshots_compact_the_log_and_a_crash_recovers_every_acknowledged_write() {
    let mut one = leader();
    for i in 0..70u32 {
        let key = format!("key-{i:03}");
        assert!(
            matches!(
                one.put(key.as_bytes(), b"v").result,
                Ok(Reply::Written { .. })
            ),
            "put {key}"
        );
    }
    assert!(
        one.store.metrics().snapshots_taken >= 2,
        "{:?}",
        one.store.metrics()
    );
    let before = one.store.statuses();
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let mut again = open(crashed, snaps, config(1));
    again.settle(40);
    let after = again.store.statuses();
    let user = |s: &Vec<super::ReplicaStatus>| {
        s.iter()
            .find(|r| r.descriptor.id.0 == 2)
            .map(|r| (r.applied, r.state_hash, r.keys))
    };
    let (applied, hash, keys) = user(&before).expect("user range before");
    let (applied2, hash2, keys2) = user(&after).expect("user range after");
    assert_eq!(keys2, keys);
    assert!(applied2 >= applied);
    if applied2 == applied {
        assert_eq!(hash2, hash);
    }
    for i in 0..70u32 {
        let key = format!("key-{i:03}");
        assert_eq!(again.get(key.as_bytes()), Some(b"v".to_vec()), "{key}");
    }
    again.store.check_invariants();
}

impl One {
    fn admin(&mut self, op: quasar_rpc::message::AdminOp) -> quasar_rpc::message::AdminResponse {
        use quasar_rpc::message::AdminRequest;
        let id = self.next;
        self.next += 1;
        let req = AdminRequest {
            request_id: RequestId(id),
            op,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&req).expect("encodes");
        let archived = access_body::<AdminRequest>(&bytes).expect("valid");
        self.store.on_admin_request(6, RequestId(id), &archived.op);
        for _ in 0..200 {
            if let Some(pos) = self
                .store
                .admin_responses
                .iter()
                .position(|(_, r)| r.request_id.0 == id)
            {
                return self.store.admin_responses.remove(pos).1;
            }
            self.turn();
            self.store.tick();
        }
        panic!("admin request {id} never answered");
    }

    fn user_ranges(&self) -> Vec<quasar_rpc::message::RangeDescriptor> {
        let mut v: Vec<_> = self
            .store
            .statuses()
            .into_iter()
            .map(|s| s.descriptor)
            .filter(|d| d.id.0 != 1)
            .collect();
        v.sort_by(|a, b| a.start.cmp(&b.start));
        v
    }
}

fn put_ok(one: &mut One, key: &str) {
    let r = one.put(key.as_bytes(), key.as_bytes());
    assert!(
        matches!(r.result, Ok(Reply::Written { .. })),
        "put {key}: {r:?}"
    );
}

#[test]
fn a_split_and_a_merge_keep_every_key_across_crashes() {
    use quasar_rpc::message::{AdminOp, AdminReply, RangeEpoch, RangeId};
    let mut one = leader();
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i:03}")).collect();
    for k in &keys[..40] {
        put_ok(&mut one, k);
    }
    let split = one.admin(AdminOp::SplitRange {
        range: RangeId(2),
        split_key: b"key-020".to_vec(),
        expected_epoch: RangeEpoch(1),
    });
    let (left, right) = match split.result {
        Ok(AdminReply::Split { left, right }) => (left, right),
        other => panic!("split answered {other:?}"),
    };
    assert_eq!(left.end, b"key-020".to_vec());
    assert_eq!(right.start, b"key-020".to_vec());
    assert_eq!((left.epoch, right.epoch), (RangeEpoch(2), RangeEpoch(2)));
    assert_eq!(one.user_ranges(), vec![left.clone(), right.clone()]);
    // Stale plans and bad keys are refused; nothing changes.
    let stale = one.admin(AdminOp::SplitRange {
        range: RangeId(2),
        split_key: b"key-010".to_vec(),
        expected_epoch: RangeEpoch(1),
    });
    assert!(
        matches!(stale.result, Err(RequestError::RangeMoved { .. })),
        "{stale:?}"
    );
    let outside = one.admin(AdminOp::SplitRange {
        range: RangeId(2),
        split_key: b"key-030".to_vec(),
        expected_epoch: RangeEpoch(2),
    });
    assert_eq!(
        outside.result,
        Err(RequestError::InvalidRequest {
            reason: InvalidReason::BadSplitKey
        })
    );
    for k in &keys[40..50] {
        put_ok(&mut one, k);
    }
    for k in &keys[..50] {
        assert_eq!(one.get(k.as_bytes()), Some(k.as_bytes().to_vec()), "{k}");
    }
    // A crash before the new range wrote its first snapshot: the split replays from the
    // parent's log.
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let next = one.next;
    let mut one = open(crashed, snaps, config(1));
    // The same client session goes on: its sequence numbers must not restart.
    one.next = next;
    one.settle(60);
    assert_eq!(one.user_ranges(), vec![left.clone(), right.clone()]);
    for k in &keys[..50] {
        assert_eq!(one.get(k.as_bytes()), Some(k.as_bytes().to_vec()), "{k}");
    }
    // Merge back: the right range is frozen, absorbed and gone.
    let last = one.admin(AdminOp::MergeRanges {
        left: right.id,
        expected_epoch: right.epoch,
    });
    assert!(
        matches!(last.result, Err(RequestError::Refused { .. })),
        "{last:?}"
    );
    let merged = match one
        .admin(AdminOp::MergeRanges {
            left: RangeId(2),
            expected_epoch: RangeEpoch(2),
        })
        .result
    {
        Ok(AdminReply::Merged { merged }) => merged,
        other => panic!("merge answered {other:?}"),
    };
    assert_eq!(
        (merged.start.as_slice(), merged.end.as_slice()),
        (&b"\x01"[..], &b""[..])
    );
    assert_eq!(merged.epoch, RangeEpoch(3));
    assert_eq!(one.user_ranges(), vec![merged.clone()]);
    for k in &keys[50..] {
        put_ok(&mut one, k);
    }
    for k in &keys {
        assert_eq!(one.get(k.as_bytes()), Some(k.as_bytes().to_vec()), "{k}");
    }
    // Crash right away (the merge replays against the absorbed range's own files), then
    // again after the survivor's snapshot removed them.
    for round in 0..2 {
        let snaps = one.store.snaps.clone();
        let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
        let next = one.next;
        one = open(crashed, snaps, config(1));
        one.next = next;
        one.settle(60);
        assert_eq!(one.user_ranges(), vec![merged.clone()], "round {round}");
        for k in &keys {
            assert_eq!(one.get(k.as_bytes()), Some(k.as_bytes().to_vec()), "{k}");
        }
        one.store.check_invariants();
    }
    assert!(
        !one.store
            .snaps
            .groups()
            .expect("list")
            .contains(&right.group),
        "the merged-away range's file is gone"
    );
}

#[test]
fn leadership_transfer_to_the_leader_itself_answers_at_once() {
    use quasar_rpc::message::{AdminOp, AdminReply, RangeId};
    let mut one = leader();
    let r = one.admin(AdminOp::TransferLeader {
        range: RangeId(2),
        to: quasar_rpc::message::NodeId(1),
    });
    assert!(
        matches!(r.result, Ok(AdminReply::LeaderTransferred { leader, .. }) if leader.0 == 1),
        "{r:?}"
    );
    let unknown = one.admin(AdminOp::TransferLeader {
        range: RangeId(77),
        to: quasar_rpc::message::NodeId(1),
    });
    assert_eq!(
        unknown.result,
        Err(RequestError::UnknownRange { range: RangeId(77) })
    );
}

#[test]
fn a_route_newer_than_the_replica_is_a_retry_and_an_older_one_gets_the_descriptor() {
    use quasar_rpc::message::{RangeEpoch, RangeId, Route, UnavailableReason};
    let mut one = leader();
    put_ok(&mut one, "k");
    let put = |epoch| Operation::Put {
        key: b"k".to_vec(),
        value: format!("{epoch}").into_bytes(),
    };
    let route = |epoch| {
        Some(Route {
            range: RangeId(2),
            epoch: RangeEpoch(epoch),
        })
    };
    // The client saw epoch 7 somewhere; this leader has applied epoch 1 only: it lags, and
    // must not send the client back to its older view.
    let newer = one.request_routed(put(7), ReadConsistency::Linearizable, route(7));
    assert_eq!(
        newer.result,
        Err(RequestError::Unavailable {
            reason: UnavailableReason::CatchingUp
        })
    );
    // An older route is answered with the current descriptor.
    let older = one.request_routed(put(0), ReadConsistency::Linearizable, route(0));
    assert!(
        matches!(&older.result, Err(RequestError::RangeMoved { descriptor }) if descriptor.epoch == RangeEpoch(1)),
        "{older:?}"
    );
    let current = one.request_routed(put(1), ReadConsistency::Linearizable, route(1));
    assert!(
        matches!(current.result, Ok(Reply::Written { .. })),
        "{current:?}"
    );
}

/// The sweep that finds superseded ranges at open agrees with the definition (every pair)
/// on random sets of overlapping ranges of mixed epochs.
#[test]
fn the_superseded_sweep_agrees_with_checking_every_pair() {
    use quasar_rpc::message::{GroupId, RangeDescriptor, RangeEpoch, RangeId};
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed = quasar_rpc::transport::splitmix64(seed);
        seed % n
    };
    for round in 0..300 {
        let count = 1 + next(12) as usize;
        let descriptors: Vec<RangeDescriptor> = (0..count)
            .map(|i| {
                let start = next(20) as u8;
                let end = if next(4) == 0 {
                    Vec::new()
                } else {
                    vec![start + 1 + next(8) as u8]
                };
                RangeDescriptor {
                    id: RangeId(i as u64 + 1),
                    group: GroupId(i as u64 + 1),
                    start: if start == 0 { Vec::new() } else { vec![start] },
                    end,
                    replicas: Vec::new(),
                    epoch: RangeEpoch(next(5)),
                }
            })
            .collect();
        let mut expected: Vec<GroupId> = descriptors
            .iter()
            .filter(|d| {
                descriptors
                    .iter()
                    .any(|n| n.group != d.group && super::supersedes(n, d))
            })
            .map(|d| d.group)
            .collect();
        expected.sort_unstable();
        let mut refs: Vec<&RangeDescriptor> = descriptors.iter().collect();
        let mut got = super::superseded_among(&mut refs);
        got.sort_unstable();
        assert_eq!(got, expected, "round {round}: {descriptors:?}");
    }
}

/// Thousands of replicas sit idle in a shard: what each holds inline is paid for every one
/// of them (rare parts, a received snapshot or the core's recycled `Ready`, are boxed).
#[test]
fn a_replica_holds_its_rare_parts_out_of_line() {
    let size = std::mem::size_of::<super::Replica>();
    assert!(
        size <= 1500,
        "a Replica is {size} bytes inline; box what most replicas never use"
    );
}

/// Under steady writes, overlapping syncs (`WalConfig::syncs_in_flight` 2) would always
/// leave one in flight when `process` runs, and a forced snapshot file is written only by
/// a turn with none in flight: the store stops the overlap while one waits.
#[test]
fn overlapping_syncs_under_steady_writes_leave_a_turn_for_a_forced_snapshot() {
    use quasar_rpc::message::{AdminOp, AdminReply};
    use std::collections::VecDeque;
    /// One runtime turn with a write: a sync completes only when two are in flight or the
    /// store forbids the overlap, and a new one begins whenever allowed.
    fn turn(one: &mut One, syncs: &mut VecDeque<(quasar_wal::Lsn, std::io::Result<()>)>) {
        one.submit_put(format!("key-{:03}", one.next).as_bytes());
        one.store.tick();
        if syncs.len() == 2 || (!syncs.is_empty() && !one.store.may_overlap_syncs()) {
            if let Some((target, result)) = syncs.pop_front() {
                one.complete_sync(target, result);
            }
        }
        if !one.store.may_process() {
            return;
        }
        let needs_sync = one.store.process().expect("process");
        one.store.recycle_outbox();
        if needs_sync && (syncs.is_empty() || one.store.may_overlap_syncs()) {
            if let Some(sync) = one.begin_sync() {
                one.store.sync_started();
                syncs.push_back(sync);
                return;
            }
        }
        if syncs.is_empty() {
            one.store.finish().expect("finish");
        }
    }
    let mut cfg = config(1);
    cfg.pipelined_turns = true;
    // Not due before the writes below keep syncs in flight.
    cfg.forced_snapshot_delay_ticks = 100_000;
    let wal = WalConfig {
        syncs_in_flight: 2,
        ..wal_config()
    };
    let mut one = leader_with_wal(cfg, wal);
    assert!(one.store.may_overlap_syncs());
    let range = one.user_ranges()[0].clone();
    put_ok(&mut one, "key-a");
    let split = one.admin(AdminOp::SplitRange {
        range: range.id,
        split_key: b"key-m".to_vec(),
        expected_epoch: range.epoch,
    });
    let child = match split.result {
        Ok(AdminReply::Split { right, .. }) => right.group,
        other => panic!("split answered {other:?}"),
    };
    assert!(
        !one.store.may_overlap_syncs(),
        "the child's file is scheduled"
    );
    let mut syncs = VecDeque::new();
    for _ in 0..10 {
        turn(&mut one, &mut syncs);
    }
    let now = one.store.ticks;
    for (_, due) in &mut one.store.forced_snapshots {
        *due = now;
    }
    for _ in 0..200 {
        if one.store.snaps.groups().expect("list").contains(&child) {
            one.store.check_invariants();
            return;
        }
        turn(&mut one, &mut syncs);
    }
    panic!("the split child's file was never written while writes kept syncs in flight");
}

#[test]
fn a_chain_of_split_children_writes_its_files_last_child_first_and_survives_a_crash() {
    use quasar_rpc::message::{AdminOp, AdminReply};
    // Each child is split again before its first file is due: child i pins the log of
    // child i-1, so only the last child may write at first, and each file landing frees
    // the one before it (without a pass over the waiting ones).
    const CHAIN: usize = 40;
    let mut cfg = config(1);
    // Not due while the chain grows (each split takes a few ticks)...
    cfg.forced_snapshot_delay_ticks = 100_000;
    cfg.snapshot_after_entries = 1_000;
    let mut one = leader_with(cfg.clone());
    let mut range = one.user_ranges()[0].clone();
    let mut children = Vec::new();
    for i in 0..CHAIN {
        let key = format!("key-{i:03}");
        put_ok(&mut one, &key);
        let split = one.admin(AdminOp::SplitRange {
            range: range.id,
            split_key: format!("key-{i:03}x").into_bytes(),
            expected_epoch: range.epoch,
        });
        range = match split.result {
            Ok(AdminReply::Split { right, .. }) => right,
            other => panic!("split {i} answered {other:?}"),
        };
        children.push(range.group);
    }
    let files = |one: &One| {
        let on_disk = one.store.snaps.groups().expect("list");
        children.iter().filter(|g| on_disk.contains(g)).count()
    };
    assert_eq!(files(&one), 0);
    // ... then all at once.
    let now = one.store.ticks;
    for (_, due) in &mut one.store.forced_snapshots {
        *due = now;
    }
    // Ticks, checking the invariants, until `want` children have their file: one a turn.
    let tick_until = |one: &mut One, want: usize| {
        let mut ticks = 0;
        while files(one) < want {
            assert!(
                ticks < 4 * CHAIN + 100,
                "{} files after {ticks} ticks",
                files(one)
            );
            one.store.tick();
            one.turn();
            one.store.check_invariants();
            ticks += 1;
        }
    };
    // Half the chain's files, then a crash: the children without a file replay from
    // their parents' logs.
    tick_until(&mut one, CHAIN / 2);
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let next = one.next;
    cfg.forced_snapshot_delay_ticks = 5;
    let mut one = open(crashed, snaps, cfg);
    one.next = next;
    one.settle(40);
    for i in 0..CHAIN {
        let key = format!("key-{i:03}");
        assert_eq!(
            one.get(key.as_bytes()),
            Some(key.clone().into_bytes()),
            "{key}"
        );
    }
    tick_until(&mut one, CHAIN);
    for g in &children {
        assert!(
            !one.store.has_unsaved_child(*g),
            "group {} still pinned",
            g.0
        );
    }
    assert_eq!(one.user_ranges().len(), CHAIN + 1);
}

#[test]
fn an_outbox_grown_by_a_burst_is_halved_after_a_run_of_quiet_turns_and_kept_under_load() {
    use super::{OUTBOX_KEEP, OUTBOX_SHRINK_AFTER};
    use quasar_rpc::message::{GroupId, Heartbeat, LogIndex, Term};
    let mut one = open(MemDisk::new(), MemSnapshots::default(), config(1));
    let beat = Heartbeat {
        group: GroupId(9),
        term: Term(1),
        commit: LogIndex(0),
        seq: 0,
        tick: 0,
    };
    let store = &mut one.store;
    let batch = store.batch_for(NodeId(2));
    batch.heartbeats.extend(std::iter::repeat_n(beat, 100_000));
    let grown = batch.heartbeats.capacity();
    let cap = |store: &Store<MemDisk, MemSnapshots>| store.outbox[0].heartbeats.capacity();
    let turn = |store: &mut Store<MemDisk, MemSnapshots>, n: usize| {
        let b = store.batch_for(NodeId(2));
        b.heartbeats.extend(std::iter::repeat_n(beat, n));
        store.recycle_outbox();
    };
    store.recycle_outbox();
    assert_eq!(cap(store), grown, "a full turn keeps it");
    // Quiet turns and busy ones in turn: never shrunk.
    for i in 0..4 * OUTBOX_SHRINK_AFTER {
        turn(store, if i % 2 == 0 { 1 } else { grown / 2 });
        assert_eq!(cap(store), grown, "turn {i}");
    }
    // A run of quiet turns halves it, and each further run halves it again, down to the
    // floor.
    for _ in 0..OUTBOX_SHRINK_AFTER - 1 {
        turn(store, 1);
    }
    assert_eq!(cap(store), grown, "one turn short of the run");
    turn(store, 1);
    assert!(cap(store) >= grown / 2 && cap(store) <= grown / 2 + 1);
    for _ in 0..64 * OUTBOX_SHRINK_AFTER {
        turn(store, 1);
    }
    assert_eq!(cap(store), OUTBOX_KEEP);
    assert!(store.outbox[0].heartbeats.is_empty());
}

/// A restart leaves every restored group asleep, dormant and leaderless (`restarting`, so
/// `/ready` does not wait for it), and nothing wakes it before the vote guard is over. A
/// request wakes its own group only, which campaigns and answers; the restart pacer elects
/// the others. The time a group slept counts once on its clock (the vote guard ends on
/// time, not early).
#[test]
fn a_restart_leaves_groups_dormant_until_a_request_or_the_pacer_elects_them() {
    let mut one = leader();
    assert!(matches!(
        one.put(b"k", b"v").result,
        Ok(Reply::Written { .. })
    ));
    let snaps = one.store.snaps.clone();
    let crashed = one.store.wal.disk().crash(Crash::DropUnsynced);
    let mut again = open(crashed, snaps, config(1));
    let election = u64::from(again.store.cfg.election_ticks);
    for t in 1..election {
        again.store.tick();
        again.turn();
        again.store.check_invariants();
        // Asleep from the second tick: the first found the restored log still to apply.
        if t > 1 {
            assert_eq!(again.store.groups.awake_len(), 0, "a dormant group woke");
        }
    }
    let statuses = again.store.statuses();
    assert_eq!(statuses.len(), 2);
    for s in &statuses {
        assert!(
            s.restarting && s.quiesced && s.leader.is_none(),
            "range {} is not dormant: {s:?}",
            s.descriptor.id.0
        );
    }
    // A request for the user range wakes its group alone (before the vote guard is over
    // it does not campaign yet: its election timer does); the meta range sleeps on.
    let status = |one: &One, id: u64| {
        one.store
            .statuses()
            .into_iter()
            .find(|s| s.descriptor.id.0 == id)
            .expect("range")
    };
    let first = again.request(
        Operation::Get { key: b"k".to_vec() },
        ReadConsistency::Linearizable,
    );
    assert!(
        matches!(first.result, Err(RequestError::RangeMoved { .. })),
        "{first:?}"
    );
    let user = status(&again, 2);
    assert!(!user.quiesced && user.leader.is_none(), "{user:?}");
    let g = user.descriptor.group;
    let r = again.store.groups.get(&g).expect("user replica");
    assert_eq!(
        r.raft.clock(),
        again.store.ticks,
        "slept ticks counted once"
    );
    let meta = status(&again, 1);
    assert!(
        meta.restarting && meta.quiesced && meta.leader.is_none(),
        "{meta:?}"
    );
    again.settle(2 * election as usize);
    assert_eq!(again.get(b"k"), Some(b"v".to_vec()));
    let user = status(&again, 2);
    assert!(user.leader == Some(1) && !user.restarting, "{user:?}");
    // The pacer elects the meta range.
    again.settle(3 * election as usize);
    again.store.check_invariants();
    let meta = status(&again, 1);
    assert!(meta.leader == Some(1) && !meta.restarting, "{meta:?}");
    assert!(again.store.restart_leads.is_empty() && again.store.restart_waits.is_empty());
}

#[test]
fn an_idle_store_lets_the_loop_sleep_until_its_next_liveness_beat() {
    // The beat interval of an idle store: two heartbeats, but at least five beats an
    // election timeout, and never under a heartbeat.
    for (election, heartbeat, idle_beat) in [(30, 3, 6), (10, 2, 2), (15, 3, 3), (100, 10, 20)] {
        let mut cfg = config(1);
        cfg.election_ticks = election;
        cfg.heartbeat_ticks = heartbeat;
        let one = open(MemDisk::new(), MemSnapshots::default(), cfg);
        assert_eq!(
            one.store.idle_beat_ticks(),
            idle_beat,
            "election {election}, heartbeat {heartbeat}"
        );
    }
    let mut cfg = config(1);
    cfg.election_ticks = 30;
    cfg.heartbeat_ticks = 3;
    cfg.quiesce_after_ticks = 60;
    let mut one = open(MemDisk::new(), MemSnapshots::default(), cfg);
    assert!(!one.store.is_idle(), "leaderless groups: awake");
    assert_eq!(
        one.store.idle_ticks(),
        1,
        "awake groups are ticked every tick"
    );
    one.settle(200);
    assert_eq!(one.store.leader_count(), 2);
    assert!(one.store.is_idle(), "every group asleep");
    assert!(!one.store.has_work());
    // The loop may sleep until the tick of the next beat, never past it.
    for _ in 0..20 {
        let n = one.store.idle_ticks();
        assert!((1..=6).contains(&n), "{n}");
        assert_eq!(
            (one.store.ticks() + n) % 6,
            0,
            "{n} ticks from {}",
            one.store.ticks()
        );
        for _ in 0..n {
            one.store.tick();
        }
        one.turn();
        assert!(one.store.is_idle());
    }
    // A write wakes its group: the loop ticks every tick again.
    let id = one.submit_put(b"k");
    assert!(!one.store.is_idle());
    assert_eq!(one.store.idle_ticks(), 1);
    one.settle(5);
    assert!(one.answered(id));
    assert_eq!(one.get(b"k").as_deref(), Some(&b"v"[..]));
}
