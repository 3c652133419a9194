//! Discovery: from endpoints (shard-0 `HOST:PORT` of nodes whose ids are unknown) to a client
//! configuration with every member and the cluster's shard count. Used by `quasarctl` and
//! `quasar-bench`.
//!
//! A temporary `BlockingClient` knows the endpoints under placeholder node ids
//! (`u64::MAX - i`); the first endpoint that answers `ListMembers` and `Status` on shard 0
//! gives the members (node id -> address) and `shards_per_node = NodeStatus.shards.len()`.
//! Admin requests carry no node id, so the placeholders never reach a server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{BlockingClient, ClientConfig};
use crate::error::ClientError;
use crate::message::{AdminOp, AdminReply, ClusterId, Member, NodeId, NodeStatus, ShardId};

/// Attempts per discovery request and endpoint: an endpoint that does not answer is left
/// quickly for the next one.
const DISCOVERY_ATTEMPTS: u32 = 2;

/// A discovered cluster.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// Every member with a usable address; per-attempt bounds set to the discovery timeout.
    pub config: ClientConfig,
    /// The members as the contacted node lists them.
    pub members: Vec<Member>,
    /// The contacted node's status (its real id is `contact_status.node`).
    pub contact_status: NodeStatus,
}

/// Why no cluster was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DiscoveryError {
    pub reason: String,
}

/// Resolves `HOST:PORT` to its first socket address.
pub fn resolve(address: &str) -> Result<SocketAddr, String> {
    match address.trim().to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address} resolves to no address")),
        Err(e) => Err(format!("bad address {address:?}: {e}")),
    }
}

/// The reason behind a failed request, without the client's advice about writes.
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

/// Finds the cluster named by `cluster` through the first of `endpoints` that answers;
/// `timeout` bounds each attempt (connect, handshake, one answer).
pub fn discover(
    cluster: ClusterId,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Discovered, DiscoveryError> {
    discover_secure(cluster, endpoints, timeout, None, None)
}

/// [`discover`] over TLS and/or with a bearer token; the discovered configuration keeps
/// both. Seeds are checked by their IP address (their node ids are not known yet), the
/// discovered members by `node-<id>`.
pub fn discover_secure(
    cluster: ClusterId,
    endpoints: &[String],
    timeout: Duration,
    tls: Option<crate::tls::ClientTls>,
    token: Option<crate::auth::Secret>,
) -> Result<Discovered, DiscoveryError> {
    let fail = |reason: String| DiscoveryError { reason };
    let listed = endpoints.join(",");
    if endpoints.is_empty() {
        return Err(fail(
            "no endpoint given: pass --endpoints HOST:PORT[,HOST:PORT...]".into(),
        ));
    }
    let mut last = String::new();
    let mut seeds = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        match resolve(endpoint) {
            Ok(addr) => seeds.push((NodeId(u64::MAX - i as u64), addr)),
            Err(reason) => last = reason,
        }
    }
    if seeds.is_empty() {
        return Err(fail(format!("no endpoint answered ({listed}): {last}")));
    }
    let mut probe_config = ClientConfig::new(cluster, seeds.clone(), 1);
    probe_config.request_timeout = timeout;
    probe_config.io_timeout = timeout;
    probe_config.max_attempts = DISCOVERY_ATTEMPTS;
    probe_config.tls = tls.clone();
    probe_config.token = token.clone();
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
        return build(cluster, timeout, addr, members, status)
            .map(|mut found| {
                found.config.tls = tls;
                found.config.token = token;
                found
            })
            .map_err(fail);
    }
    Err(fail(format!("no endpoint answered ({listed}): {last}")))
}

fn build(
    cluster: ClusterId,
    timeout: Duration,
    contacted: SocketAddr,
    members: Vec<Member>,
    status: NodeStatus,
) -> Result<Discovered, String> {
    let shards = u32::try_from(status.shards.len()).unwrap_or(0);
    if shards == 0 {
        return Err(format!(
            "{contacted} (node {}) reports no shard: is it still starting?",
            status.node
        ));
    }
    if members.is_empty() {
        return Err(format!(
            "{contacted} (node {}) lists no cluster member: is it bootstrapped?",
            status.node
        ));
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
    config.request_timeout = timeout;
    config.io_timeout = timeout;
    Ok(Discovered {
        config,
        members,
        contact_status: status,
    })
}
