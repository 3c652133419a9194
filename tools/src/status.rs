//! `quasarctl status`: every member's `Status` (asked of that node, shard 0) and the range
//! table (`ListRanges`, paged, asked of the node that answered discovery).
//!
//! A member that does not answer gets a row with the reason and makes the command exit 1;
//! the rest of the report is still printed.

use anyhow::{bail, Context};
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{
    AdminOp, AdminReply, MemberState, NodeStatus, RangeInfo, ReplicaRole, ShardId,
};
use serde_json::{json, Value};

use crate::cluster::{reply_kind, Cluster};
use crate::{escaped, table, Outcome, Output, Report};

/// Attempts per member: a node that is down is reported, not waited for.
const STATUS_ATTEMPTS: u32 = 2;
/// Ranges per `ListRanges` page.
const RANGES_PAGE: u32 = 256;
/// Bound on pages (a server that never ends the listing is a bug, not a reason to hang).
const MAX_PAGES: usize = 10_000;

/// One member's row.
struct NodeRow {
    node: u64,
    address: String,
    state: MemberState,
    status: Result<NodeStatus, String>,
}

/// Runs `quasarctl status`.
pub fn run(cluster: &mut Cluster, output: Output) -> anyhow::Result<Report> {
    let mut config: ClientConfig = cluster.config.clone();
    config.max_attempts = STATUS_ATTEMPTS;
    let mut client = BlockingClient::new(config);
    let mut rows = Vec::new();
    for member in &cluster.members {
        let status = if member.node == cluster.contact {
            Ok(cluster.contact_status.clone())
        } else if !cluster.config.nodes.iter().any(|(n, _)| *n == member.node) {
            Err(format!("address {:?} does not resolve", member.address))
        } else {
            match client.admin(member.node, ShardId(0), AdminOp::Status) {
                Ok(AdminReply::Status(s)) => Ok(s),
                Ok(other) => Err(format!("answered Status with {}", reply_kind(&other))),
                Err(e) => Err(e.to_string()),
            }
        };
        rows.push(NodeRow {
            node: member.node.get(),
            address: member.address.clone(),
            state: member.state,
            status,
        });
    }
    let ranges = list_ranges(cluster)?;
    let outcome = if rows.iter().all(|r| r.status.is_ok()) {
        Outcome::Success
    } else {
        Outcome::Negative
    };
    let text = match output {
        Output::Table => render_table(cluster, &rows, &ranges),
        Output::Json => format!("{}\n", render_json(cluster, &rows, &ranges)),
    };
    Ok(Report::new(text, outcome))
}

fn list_ranges(cluster: &mut Cluster) -> anyhow::Result<Vec<RangeInfo>> {
    let mut ranges = Vec::new();
    let mut start = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = cluster
            .client
            .admin(
                cluster.contact,
                ShardId(0),
                AdminOp::ListRanges {
                    start_key: start.clone(),
                    limit: RANGES_PAGE,
                },
            )
            .with_context(|| format!("list ranges from node {}", cluster.contact))?;
        let AdminReply::Ranges {
            ranges: page,
            resume_key,
        } = reply
        else {
            bail!("ListRanges answered with {}", reply_kind(&reply));
        };
        ranges.extend(page);
        match resume_key {
            Some(next) if next > start => start = next,
            Some(next) => bail!(
                "ListRanges made no progress (resume key {} after {})",
                escaped(&next),
                escaped(&start)
            ),
            None => return Ok(ranges),
        }
    }
    bail!("ListRanges did not finish within {MAX_PAGES} pages")
}

pub(crate) fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Active => "active",
        MemberState::Joining => "joining",
        MemberState::Unreachable => "unreachable",
    }
}

pub(crate) fn role_name(role: ReplicaRole) -> &'static str {
    match role {
        ReplicaRole::Voter => "voter",
        ReplicaRole::Learner => "learner",
        ReplicaRole::Joining => "joining",
        ReplicaRole::Leaving => "leaving",
    }
}

/// `1h02m03s`-style uptime.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m{s:02}s"),
        _ => format!("{d}d{h:02}h{m:02}m"),
    }
}

fn render_table(cluster: &Cluster, rows: &[NodeRow], ranges: &[RangeInfo]) -> String {
    let nodes: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.node.to_string(),
                r.address.clone(),
                state_name(r.state).to_string(),
            ];
            match &r.status {
                Ok(s) => row.extend([
                    s.shards.len().to_string(),
                    s.shards
                        .iter()
                        .map(|x| u64::from(x.groups))
                        .sum::<u64>()
                        .to_string(),
                    s.shards
                        .iter()
                        .map(|x| u64::from(x.leaders))
                        .sum::<u64>()
                        .to_string(),
                    uptime(s.uptime_secs),
                    format!(
                        "{:.1}",
                        s.cpu_user_micros.saturating_add(s.cpu_system_micros) as f64 / 1e6
                    ),
                ]),
                Err(e) => row.push(format!("error: {e}")),
            }
            row
        })
        .collect();
    let mut text = format!(
        "cluster {} ({} members, {} ranges)\n\n",
        cluster.name,
        rows.len(),
        ranges.len()
    );
    text.push_str(&table(
        &[
            "NODE", "ADDRESS", "STATE", "SHARDS", "GROUPS", "LEADERS", "UPTIME", "CPU_S",
        ],
        &nodes,
    ));
    text.push('\n');
    text.push_str(&crate::range::ranges_table(ranges));
    text
}

fn render_json(cluster: &Cluster, rows: &[NodeRow], ranges: &[RangeInfo]) -> Value {
    let nodes: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "node_id": r.node,
                "address": r.address,
                "state": state_name(r.state),
            });
            match &r.status {
                Ok(s) => {
                    v["uptime_secs"] = json!(s.uptime_secs);
                    v["cpu_user_micros"] = json!(s.cpu_user_micros);
                    v["cpu_system_micros"] = json!(s.cpu_system_micros);
                    v["groups"] = json!(s.shards.iter().map(|x| u64::from(x.groups)).sum::<u64>());
                    v["leaders"] =
                        json!(s.shards.iter().map(|x| u64::from(x.leaders)).sum::<u64>());
                    v["shards"] = json!(s
                        .shards
                        .iter()
                        .map(|x| json!({"shard": x.shard.get(), "groups": x.groups,
                                        "leaders": x.leaders, "wal_bytes": x.wal_bytes,
                                        "cpu_micros": x.cpu_micros}))
                        .collect::<Vec<_>>());
                }
                Err(e) => v["error"] = json!(e),
            }
            v
        })
        .collect();
    let ranges: Vec<Value> = ranges
        .iter()
        .map(|r| {
            let d = &r.descriptor;
            json!({
                "range_id": d.id.get(),
                "group": d.group.get(),
                // As the node's HTTP /status writes them.
                "start": escaped(&d.start),
                "end": escaped(&d.end),
                "epoch": d.epoch.get(),
                "replicas": d.replicas.iter()
                    .map(|x| json!({"node": x.node.get(), "role": role_name(x.role)}))
                    .collect::<Vec<_>>(),
                "leader": r.leader.map(|l| l.get()),
                "commit": r.commit.map(|c| c.get()),
            })
        })
        .collect();
    json!({"cluster_id": cluster.name, "nodes": nodes, "ranges": ranges})
}
