//! Discovery: from `--endpoints` (shard-0 addresses of nodes whose ids are unknown) to a
//! client configured with every member and the cluster's shard count.
//!
//! A temporary `BlockingClient` knows the endpoints under placeholder node ids
//! (`u64::MAX - i`); the first endpoint that answers `ListMembers` and `Status` on shard 0
//! gives the members (node id -> address) and `shards_per_node = NodeStatus.shards.len()`.
//! Admin requests carry no node id, so the placeholders never reach a server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{AdminOp, AdminReply, ClusterId, Member, NodeId, NodeStatus, ShardId};

/// What discovery needs from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub endpoints: Vec<String>,
    pub cluster_name: String,
    /// Bound on one attempt (connect, handshake, one answer).
    pub timeout: Duration,
}

/// A discovered cluster and a client for it.
pub struct Cluster {
    /// The name given with `--cluster-id`.
    pub name: String,
    /// The client's configuration: every member with a usable address.
    pub config: ClientConfig,
    /// The members as the contacted node lists them.
    pub members: Vec<Member>,
    /// The node that answered discovery (its real id).
    pub contact: NodeId,
    /// The contacted node's status, taken during discovery.
    pub contact_status: NodeStatus,
    /// The client that runs the command's requests.
    pub client: BlockingClient,
}

/// Attempts per discovery request and endpoint: an endpoint that does not answer is left
/// quickly for the next one.
const DISCOVERY_ATTEMPTS: u32 = 2;

/// Resolves `HOST:PORT` to its first socket address.
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    match address.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address} resolves to no address")),
        Err(e) => Err(format!("bad address {address:?}: {e}")),
    }
}

/// Sets the per-attempt bounds from `--timeout`.
pub fn apply_timeout(config: &mut ClientConfig, timeout: Duration) {
    config.request_timeout = timeout;
    config.io_timeout = timeout;
}

/// Finds the cluster through the first endpoint that answers.
pub fn discover(options: &Options) -> anyhow::Result<Cluster> {
    let cluster = ClusterId::from_name(&options.cluster_name);
    let endpoints = options.endpoints.join(",");
    if options.endpoints.is_empty() {
        bail!("no endpoint given: pass --endpoints HOST:PORT[,HOST:PORT...]");
    }
    let mut last = String::new();
    let mut seeds = Vec::new();
    for (i, endpoint) in options.endpoints.iter().enumerate() {
        match resolve(endpoint.trim()) {
            Ok(addr) => seeds.push((NodeId(u64::MAX - i as u64), addr)),
            Err(reason) => last = reason,
        }
    }
    if seeds.is_empty() {
        bail!("no endpoint answered ({endpoints}): {last}");
    }
    let mut probe_config = ClientConfig::new(cluster, seeds.clone(), 1);
    apply_timeout(&mut probe_config, options.timeout);
    probe_config.max_attempts = DISCOVERY_ATTEMPTS;
    let mut probe = BlockingClient::new(probe_config);
    for (placeholder, addr) in seeds {
        let members = match probe.admin(placeholder, ShardId(0), AdminOp::ListMembers) {
            Ok(AdminReply::Members(members)) => members,
            Ok(other) => {
                last = format!("{addr} answered ListMembers with {}", reply_kind(&other));
                continue;
            }
            Err(e) => {
                last = format!("{addr}: {}", why(&e));
                continue;
            }
        };
        let status = match probe.admin(placeholder, ShardId(0), AdminOp::Status) {
            Ok(AdminReply::Status(status)) => status,
            Ok(other) => {
                last = format!("{addr} answered Status with {}", reply_kind(&other));
                continue;
            }
            Err(e) => {
                last = format!("{addr}: {}", why(&e));
                continue;
            }
        };
        return build(options, cluster, addr, members, status);
    }
    bail!("no endpoint answered ({endpoints}): {last}")
}

fn build(
    options: &Options,
    cluster: ClusterId,
    contacted: SocketAddr,
    members: Vec<Member>,
    status: NodeStatus,
) -> anyhow::Result<Cluster> {
    let shards = u32::try_from(status.shards.len()).context("node reports too many shards")?;
    if shards == 0 {
        bail!(
            "{contacted} (node {}) reports no shard: is it still starting?",
            status.node
        );
    }
    if members.is_empty() {
        bail!(
            "{contacted} (node {}) lists no cluster member: is it bootstrapped?",
            status.node
        );
    }
    let mut nodes = Vec::new();
    for member in &members {
        let Ok(mut addr) = resolve(&member.address) else {
            continue;
        };
        // A node bound to a wildcard address advertises it; we reached it at `contacted`.
        if addr.ip().is_unspecified() {
            addr.set_ip(contacted.ip());
        }
        nodes.push((member.node, addr));
    }
    if !nodes.iter().any(|(n, _)| *n == status.node) {
        // The contacted node always answers where we reached it.
        nodes.push((status.node, contacted));
    }
    let mut config = ClientConfig::new(cluster, nodes, shards);
    apply_timeout(&mut config, options.timeout);
    Ok(Cluster {
        name: options.cluster_name.clone(),
        client: BlockingClient::new(config.clone()),
        config,
        members,
        contact: status.node,
        contact_status: status,
    })
}

/// The reason behind a failed discovery request, without the client's advice about writes.
fn why(e: &ClientError) -> String {
    match e {
        ClientError::Unavailable { last, .. } | ClientError::Ambiguous { last, .. } => last.clone(),
        other => other.to_string(),
    }
}

/// The name of an admin reply's kind, for "unexpected answer" errors (never the whole Debug).
pub fn reply_kind(reply: &AdminReply) -> &'static str {
    match reply {
        AdminReply::Split { .. } => "Split",
        AdminReply::Merged { .. } => "Merged",
        AdminReply::ReplicasChanged { .. } => "ReplicasChanged",
        AdminReply::LeaderTransferred { .. } => "LeaderTransferred",
        AdminReply::Ranges { .. } => "Ranges",
        AdminReply::Range(_) => "Range",
        AdminReply::Members(_) => "Members",
        AdminReply::MemberAdded(_) => "MemberAdded",
        AdminReply::MemberRemoved { .. } => "MemberRemoved",
        AdminReply::Status(_) => "Status",
    }
}
