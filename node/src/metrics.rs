//! The node's metrics (Prometheus text format, `prometheus-client`) and what the admin port
//! serves (`AdminSource` over the shards' published reports). Labels are per shard (and per
//! operation for client requests), never per range: thousands of ranges must not become
//! thousands of series.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use quasar_shard::raft::Role;
use quasar_shard::runtime::{NodeShared, ShardObserver};
use serde_json::json;

use crate::admin::{AdminSource, Probe};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    shard: u32,
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    shard: u32,
    op: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(50e-6, 2.0, 16))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the node.
pub struct Metrics {
    registry: Registry,
    proposals: Family<ShardLabel, Counter>,
    applied: Family<ShardLabel, Counter>,
    committed: Family<ShardLabel, Counter>,
    leader_changes: Family<ShardLabel, Counter>,
    wal_bytes_written: Family<ShardLabel, Counter>,
    wal_lazy_appends: Family<ShardLabel, Counter>,
    pipelined_turns: Family<ShardLabel, Counter>,
    snapshots_taken: Family<ShardLabel, Counter>,
    snapshots_sent: Family<ShardLabel, Counter>,
    peer_messages_sent: Family<ShardLabel, Counter>,
    peer_messages_received: Family<ShardLabel, Counter>,
    peer_errors: Family<ShardLabel, Counter>,
    ranges: Family<ShardLabel, Gauge>,
    leaders: Family<ShardLabel, Gauge>,
    ranges_awake: Family<ShardLabel, Gauge>,
    ranges_woken: Family<ShardLabel, Counter>,
    wal_disk_bytes: Family<ShardLabel, Gauge>,
    wal_fsync: HistogramFamily<ShardLabel>,
    wal_append: HistogramFamily<ShardLabel>,
    requests: Family<RequestLabel, Counter>,
    request_seconds: HistogramFamily<OpLabel>,
    /// Counter values already exported, so that published totals become increments.
    exported: Mutex<HashMap<(u32, &'static str), u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quasar");
        let m = Metrics {
            proposals: Family::default(),
            applied: Family::default(),
            committed: Family::default(),
            leader_changes: Family::default(),
            wal_bytes_written: Family::default(),
            wal_lazy_appends: Family::default(),
            pipelined_turns: Family::default(),
            snapshots_taken: Family::default(),
            snapshots_sent: Family::default(),
            peer_messages_sent: Family::default(),
            peer_messages_received: Family::default(),
            peer_errors: Family::default(),
            ranges: Family::default(),
            leaders: Family::default(),
            ranges_awake: Family::default(),
            ranges_woken: Family::default(),
            wal_disk_bytes: Family::default(),
            wal_fsync: Family::new_with_constructor(latency_histogram),
            wal_append: Family::new_with_constructor(latency_histogram),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            exported: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "proposals",
            "Client writes proposed to Raft",
            m.proposals.clone(),
        );
        registry.register(
            "applied_entries",
            "Committed entries applied",
            m.applied.clone(),
        );
        registry.register(
            "committed_entries",
            "Entries learned committed (commit index advances)",
            m.committed.clone(),
        );
        registry.register(
            "leader_changes",
            "Times a local replica saw its group's leader change",
            m.leader_changes.clone(),
        );
        registry.register(
            "wal_written_bytes",
            "Bytes appended to the WAL",
            m.wal_bytes_written.clone(),
        );
        registry.register(
            "wal_lazy_appends",
            "Turns whose WAL append held only commit indexes, left for a later sync",
            m.wal_lazy_appends.clone(),
        );
        registry.register(
            "pipelined_turns",
            "Turns that appended and replicated while the previous turn's sync was in flight",
            m.pipelined_turns.clone(),
        );
        registry.register(
            "snapshots_taken",
            "Range snapshots taken",
            m.snapshots_taken.clone(),
        );
        registry.register(
            "snapshots_sent",
            "Snapshot transfers started to lagging replicas",
            m.snapshots_sent.clone(),
        );
        registry.register(
            "peer_messages_sent",
            "Raft messages sent to peers",
            m.peer_messages_sent.clone(),
        );
        registry.register(
            "peer_messages_received",
            "Raft messages received from peers",
            m.peer_messages_received.clone(),
        );
        registry.register(
            "peer_errors",
            "Raft batches dropped (peer down or slow) and bad messages",
            m.peer_errors.clone(),
        );
        registry.register("ranges", "Range replicas on this shard", m.ranges.clone());
        registry.register("leaders", "Ranges this shard leads", m.leaders.clone());
        registry.register(
            "ranges_awake",
            "Range replicas this shard visits every tick (the others are quiesced and asleep)",
            m.ranges_awake.clone(),
        );
        registry.register(
            "ranges_woken",
            "Times a sleeping range replica was woken (a request, a message, its leader's node falling silent)",
            m.ranges_woken.clone(),
        );
        registry.register(
            "wal_disk_bytes",
            "Bytes of WAL segments on disk",
            m.wal_disk_bytes.clone(),
        );
        registry.register(
            "wal_fsync_seconds",
            "Duration of one WAL fdatasync",
            m.wal_fsync.clone(),
        );
        registry.register(
            "wal_append_seconds",
            "Duration of gathering and appending one turn's WAL batch",
            m.wal_append.clone(),
        );
        registry.register("requests", "Client requests answered", m.requests.clone());
        registry.register(
            "request_seconds",
            "Client request latency inside the node",
            m.request_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    fn bump(
        &self,
        family: &Family<ShardLabel, Counter>,
        shard: u32,
        name: &'static str,
        total: u64,
    ) {
        let mut exported = self.exported.lock().unwrap_or_else(|e| e.into_inner());
        let last = exported.entry((shard, name)).or_insert(0);
        if total > *last {
            family
                .get_or_create(&ShardLabel { shard })
                .inc_by(total - *last);
            *last = total;
        }
    }

    /// Brings the counters and gauges up to the shards' latest reports, then encodes.
    pub fn encode(&self, shared: &NodeShared, out: &mut String) -> std::fmt::Result {
        for shard in 0..shared.shards {
            let r = shared.report(shard);
            let m = r.metrics;
            self.bump(&self.proposals, shard, "proposals", m.proposals);
            self.bump(&self.applied, shard, "applied", m.applied_entries);
            self.bump(&self.committed, shard, "committed", m.committed_entries);
            self.bump(
                &self.leader_changes,
                shard,
                "leader_changes",
                m.leader_changes,
            );
            self.bump(&self.wal_bytes_written, shard, "wal_bytes", m.wal_bytes);
            self.bump(
                &self.wal_lazy_appends,
                shard,
                "wal_lazy_appends",
                m.lazy_turns,
            );
            self.bump(
                &self.pipelined_turns,
                shard,
                "pipelined_turns",
                m.pipelined_turns,
            );
            self.bump(
                &self.snapshots_taken,
                shard,
                "snapshots_taken",
                m.snapshots_taken,
            );
            self.bump(
                &self.snapshots_sent,
                shard,
                "snapshots_sent",
                m.snapshots_sent,
            );
            self.bump(&self.peer_messages_sent, shard, "sent", m.raft_messages_out);
            self.bump(
                &self.peer_messages_received,
                shard,
                "received",
                m.raft_messages_in,
            );
            self.bump(&self.ranges_woken, shard, "ranges_woken", m.groups_woken);
            self.bump(
                &self.peer_errors,
                shard,
                "errors",
                m.raft_messages_bad + r.transport.raft_dropped + r.transport.frames_closed_bad,
            );
            let label = ShardLabel { shard };
            self.ranges
                .get_or_create(&label)
                .set(r.replicas.len() as i64);
            self.leaders.get_or_create(&label).set(
                r.replicas
                    .values()
                    .filter(|x| x.role == Role::Leader)
                    .count() as i64,
            );
            self.ranges_awake
                .get_or_create(&label)
                .set(m.awake_groups as i64);
            self.wal_disk_bytes
                .get_or_create(&label)
                .set(r.wal_bytes as i64);
        }
        prometheus_client::encoding::text::encode(out, &self.registry)
    }
}

impl ShardObserver for Metrics {
    fn wal_append(&self, shard: u32, seconds: f64) {
        self.wal_append
            .get_or_create(&ShardLabel { shard })
            .observe(seconds);
    }

    fn wal_fsync(&self, shard: u32, seconds: f64) {
        self.wal_fsync
            .get_or_create(&ShardLabel { shard })
            .observe(seconds);
    }

    fn request(&self, shard: u32, op: &'static str, seconds: f64, ok: bool) {
        self.requests
            .get_or_create(&RequestLabel {
                shard,
                op,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.request_seconds
            .get_or_create(&OpLabel { shard, op })
            .observe(seconds);
    }
}

/// What the admin port serves for a running node.
pub struct NodeAdmin {
    pub shared: Arc<NodeShared>,
    pub metrics: Arc<Metrics>,
    /// How the HTTP key-value gateway authenticates to the client ports: with TLS, this
    /// node's own certificate (a member's certificate is `admin` on a client connection);
    /// without TLS but with tokens, an `admin` token of the `[auth]` table.
    pub gateway_tls: Option<quasar_rpc::tls::ClientTls>,
    pub gateway_token: Option<quasar_rpc::auth::Secret>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
    }
}

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

impl AdminSource for NodeAdmin {
    fn health(&self) -> Probe {
        for shard in 0..self.shared.shards {
            let r = self.shared.report(shard);
            if let Some(f) = r.failure {
                return Probe::Failing(format!("shard {shard} stopped: {f}"));
            }
            if !r.running {
                return Probe::Failing(format!("shard {shard} is not running yet"));
            }
        }
        Probe::Ok
    }

    fn ready(&self) -> Probe {
        if let Probe::Failing(reason) = self.health() {
            return Probe::Failing(reason);
        }
        for shard in 0..self.shared.shards {
            for r in self.shared.report(shard).replicas.values() {
                // A replica restored without a leader (dormant, or in its first election
                // since the restart) is not waited for: its first request or message
                // elects a leader, and the store's restart pacer gets to it meanwhile.
                if r.leader.is_none() && !r.restarting {
                    return Probe::Failing(format!(
                        "range {} has no known leader yet",
                        r.descriptor.id
                    ));
                }
            }
        }
        Probe::Ok
    }

    fn status(&self) -> serde_json::Value {
        let mut ranges = Vec::new();
        for shard in 0..self.shared.shards {
            for r in self.shared.report(shard).replicas.values() {
                let d = &r.descriptor;
                ranges.push(json!({
                    "range_id": d.id.0,
                    "group": d.group.0,
                    "shard": shard,
                    "start": escaped(&d.start),
                    "end": escaped(&d.end),
                    "epoch": d.epoch.0,
                    "replicas": d.replicas.iter().map(|x| json!({
                        "node": x.node.0,
                        "role": match x.role {
                            quasar_rpc::message::ReplicaRole::Voter => "voter",
                            quasar_rpc::message::ReplicaRole::Learner => "learner",
                            quasar_rpc::message::ReplicaRole::Joining => "joining",
                            quasar_rpc::message::ReplicaRole::Leaving => "leaving",
                        },
                    })).collect::<Vec<_>>(),
                    "role": role_name(r.role),
                    "term": r.term,
                    "leader": r.leader,
                    "commit": r.commit,
                    "applied": r.applied,
                    "state_hash": format!("{:08x}", r.state_hash),
                    "keys": r.keys,
                    "quiesced": r.quiesced,
                    "restarting": r.restarting,
                }));
            }
        }
        ranges.sort_by_key(|r| r["range_id"].as_u64());
        json!({
            "node_id": self.shared.node.0,
            "cluster_id": self.shared.cluster_name,
            "shards": self.shared.shards,
            "uptime_secs": self.shared.started.elapsed().as_secs(),
            "ranges": ranges,
        })
    }

    fn encode_metrics(&self, out: &mut String) -> std::fmt::Result {
        self.metrics.encode(&self.shared, out)
    }

    /// Every member, this node first: requests without a cached route go to its own client
    /// port, and the client's redirects lead to the leaders.
    fn kv_client(&self) -> Option<quasar_rpc::client::ClientConfig> {
        let mut nodes: Vec<(quasar_rpc::message::NodeId, std::net::SocketAddr)> = self
            .shared
            .members
            .iter()
            .map(|(node, addr)| (quasar_rpc::message::NodeId(node.0), *addr))
            .collect();
        nodes.sort_by_key(|(node, _)| node.0 != self.shared.node.0);
        let mut config =
            quasar_rpc::client::ClientConfig::new(self.shared.cluster, nodes, self.shared.shards);
        config.tls = self.gateway_tls.clone();
        config.token = self.gateway_token.clone();
        Some(config)
    }
}
