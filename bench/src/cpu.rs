//! CPU seconds the nodes (and this bench process) used during a measured span, so figures
//! per core can be compared across machines: each node's `Status` answer carries its
//! process CPU time (user, system) and each shard thread's, read from `/proc` on the node
//! itself, so this works for `--spawn` and for remote `--endpoints` alike.
//!
//! `CpuProbe::sample` at the start and at the end of the span; `CpuUse::between` gives the
//! difference, which `fill` adds to a report (per node, per shard thread, the rest of each
//! node's threads, and CPU microseconds per operation).

use std::collections::BTreeMap;

use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{AdminOp, AdminReply, NodeId, NodeStatus, SessionId, ShardId};
use quasar_shard::cpu::CpuTime;
use serde::Serialize;

use crate::report::Report;

/// Asks every node for its CPU times.
pub struct CpuProbe {
    client: BlockingClient,
    nodes: Vec<NodeId>,
}

/// CPU times at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// Per node: its status, or why it did not answer.
    nodes: BTreeMap<u64, Result<NodeStatus, String>>,
    bench: Option<CpuTime>,
}

/// One node's CPU over the span, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCpu {
    pub node: u64,
    pub user_secs: f64,
    pub system_secs: f64,
    pub total_secs: f64,
    /// Each shard's event-loop thread.
    pub shard_thread_secs: Vec<f64>,
    /// Every other thread of the node (io_uring workers running fdatasync, TLS and admin
    /// threads, the snapshot writer ...).
    pub other_thread_secs: f64,
    /// `total_secs` over the span's seconds: how many cores the node kept busy.
    pub cores_busy: f64,
}

/// The CPU used between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub nodes: Vec<NodeCpu>,
    /// Nodes whose status could not be read at both ends (left out of the totals).
    pub missing: Vec<String>,
    /// The sum over the nodes.
    pub cluster_secs: f64,
    /// This bench process (the clients), when it runs on the same machine as the nodes.
    pub bench_secs: Option<f64>,
}

fn secs(micros: u64) -> f64 {
    (micros as f64 / 1e4).round() / 100.0
}

impl CpuProbe {
    pub fn new(base: &ClientConfig) -> CpuProbe {
        let mut config = base.clone();
        config.session = SessionId(fastrand::u64(1..));
        config.max_attempts = config.max_attempts.min(3);
        CpuProbe {
            nodes: config.nodes.iter().map(|(n, _)| *n).collect(),
            client: BlockingClient::new(config),
        }
    }

    pub fn sample(&mut self) -> CpuSample {
        let mut nodes = BTreeMap::new();
        for &node in &self.nodes {
            let status = match self.client.admin(node, ShardId(0), AdminOp::Status) {
                Ok(AdminReply::Status(s)) => Ok(s),
                Ok(_) => Err("answered Status with another reply".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            nodes.insert(node.0, status);
        }
        CpuSample {
            nodes,
            bench: quasar_shard::cpu::process(),
        }
    }
}

impl CpuUse {
    /// The CPU used from `a` to `b`, over `span_secs` seconds.
    pub fn between(a: &CpuSample, b: &CpuSample, span_secs: f64) -> CpuUse {
        let mut nodes = Vec::new();
        let mut missing = Vec::new();
        for (id, before) in &a.nodes {
            let after = b.nodes.get(id);
            let (before, after) = match (before, after) {
                (Ok(x), Some(Ok(y))) => (x, y),
                (Err(e), _) | (_, Some(Err(e))) => {
                    missing.push(format!("node {id}: {e}"));
                    continue;
                }
                (_, None) => {
                    missing.push(format!("node {id}: not sampled at the end"));
                    continue;
                }
            };
            let user = after.cpu_user_micros.saturating_sub(before.cpu_user_micros);
            let system = after
                .cpu_system_micros
                .saturating_sub(before.cpu_system_micros);
            let shard_threads: Vec<u64> = after
                .shards
                .iter()
                .map(|s| {
                    let was = before
                        .shards
                        .iter()
                        .find(|x| x.shard == s.shard)
                        .map_or(0, |x| x.cpu_micros);
                    s.cpu_micros.saturating_sub(was)
                })
                .collect();
            let total = user + system;
            let shards_total: u64 = shard_threads.iter().sum();
            nodes.push(NodeCpu {
                node: *id,
                user_secs: secs(user),
                system_secs: secs(system),
                total_secs: secs(total),
                shard_thread_secs: shard_threads.into_iter().map(secs).collect(),
                other_thread_secs: secs(total.saturating_sub(shards_total)),
                cores_busy: (total as f64 / 1e6 / span_secs.max(1e-9) * 100.0).round() / 100.0,
            });
        }
        let cluster_secs =
            (nodes.iter().map(|n| n.total_secs).sum::<f64>() * 100.0).round() / 100.0;
        CpuUse {
            nodes,
            missing,
            cluster_secs,
            bench_secs: a
                .bench
                .zip(b.bench)
                .map(|(x, y)| secs(y.total_micros().saturating_sub(x.total_micros()))),
        }
    }

    /// Adds `cpu` (the whole breakdown), `cluster_cpu_secs` and, with `ops` done in the
    /// span, `cpu_us_per_op` (every node's CPU, leader and followers, per operation).
    pub fn fill(&self, report: &mut Report, ops: u64) {
        report
            .figure("cpu", self)
            .figure("cluster_cpu_secs", self.cluster_secs);
        if ops > 0 && self.missing.is_empty() {
            report.figure(
                "cpu_us_per_op",
                (self.cluster_secs * 1e6 / ops as f64 * 10.0).round() / 10.0,
            );
        }
    }

    /// Human lines: one per node, then the totals.
    pub fn human(&self, ops: u64) -> String {
        let mut out = String::from("cpu        (seconds during the measured span)");
        for n in &self.nodes {
            out.push_str(&format!(
                "\n  node {:<4} {:.2} s ({:.2} cores busy): user {:.2}, system {:.2}; shard \
                 threads {:?}, other threads {:.2}",
                n.node,
                n.total_secs,
                n.cores_busy,
                n.user_secs,
                n.system_secs,
                n.shard_thread_secs,
                n.other_thread_secs
            ));
        }
        for m in &self.missing {
            out.push_str(&format!("\n  {m}"));
        }
        out.push_str(&format!("\n  all nodes {:.2} s", self.cluster_secs));
        if ops > 0 && self.missing.is_empty() {
            out.push_str(&format!(
                ", {:.1} us per operation",
                self.cluster_secs * 1e6 / ops as f64
            ));
        }
        if let Some(b) = self.bench_secs {
            out.push_str(&format!("; this bench process {b:.2} s"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quasar_rpc::message::{ClusterId, ShardStatus};

    fn status(node: u64, user: u64, system: u64, shards: &[u64]) -> Result<NodeStatus, String> {
        Ok(NodeStatus {
            cluster: ClusterId(1),
            node: NodeId(node),
            uptime_secs: 10,
            cpu_user_micros: user,
            cpu_system_micros: system,
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, c)| ShardStatus {
                    shard: ShardId(i as u32),
                    groups: 1,
                    leaders: 0,
                    wal_bytes: 0,
                    cpu_micros: *c,
                })
                .collect(),
        })
    }

    #[test]
    fn differences_per_node_with_shard_threads_and_the_rest() {
        let a = CpuSample {
            nodes: [
                (1, status(1, 1_000_000, 500_000, &[800_000, 100_000])),
                (2, status(2, 0, 0, &[0])),
                (3, status(3, 0, 0, &[0])),
            ]
            .into_iter()
            .collect(),
            bench: Some(CpuTime {
                user_micros: 100_000,
                system_micros: 0,
            }),
        };
        let b = CpuSample {
            nodes: [
                (1, status(1, 3_000_000, 1_500_000, &[2_800_000, 600_000])),
                (2, status(2, 1_000_000, 1_000_000, &[1_500_000])),
                (3, Err("connection refused".to_owned())),
            ]
            .into_iter()
            .collect(),
            bench: Some(CpuTime {
                user_micros: 600_000,
                system_micros: 250_000,
            }),
        };
        let u = CpuUse::between(&a, &b, 2.0);
        assert_eq!(u.nodes.len(), 2);
        let n1 = &u.nodes[0];
        assert_eq!(
            (n1.user_secs, n1.system_secs, n1.total_secs),
            (2.0, 1.0, 3.0)
        );
        assert_eq!(n1.shard_thread_secs, vec![2.0, 0.5]);
        assert_eq!(n1.other_thread_secs, 0.5);
        assert_eq!(n1.cores_busy, 1.5);
        assert_eq!(u.nodes[1].other_thread_secs, 0.5);
        assert_eq!(u.cluster_secs, 5.0);
        assert_eq!(u.bench_secs, Some(0.75));
        assert_eq!(u.missing, vec!["node 3: connection refused".to_owned()]);
        let mut r = Report::new("t", serde_json::json!({}));
        u.fill(&mut r, 1000);
        assert!(
            !r.figures.contains_key("cpu_us_per_op"),
            "a node is missing"
        );
        let whole = CpuUse {
            missing: Vec::new(),
            ..u
        };
        whole.fill(&mut r, 1000);
        assert_eq!(r.figures["cpu_us_per_op"], serde_json::json!(5000.0));
        assert!(whole.human(1000).contains("5000.0 us per operation"));
    }
}
