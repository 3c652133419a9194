//! The cluster a command talks to: discovered from `--endpoints` by
//! `quasar_rpc::client::discover` (members, shard count), with a client for the command.

use std::time::Duration;

use quasar_rpc::client::{BlockingClient, ClientConfig};
use quasar_rpc::message::{ClusterId, Member, NodeId, NodeStatus};

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

pub use quasar_rpc::client::discover::reply_kind;

/// Finds the cluster through the first endpoint that answers
/// (`quasar_rpc::client::discover`).
pub fn discover(options: &Options) -> anyhow::Result<Cluster> {
    let found = quasar_rpc::client::discover(
        ClusterId::from_name(&options.cluster_name),
        &options.endpoints,
        options.timeout,
    )?;
    Ok(Cluster {
        name: options.cluster_name.clone(),
        client: BlockingClient::new(found.config.clone()),
        config: found.config,
        members: found.members,
        contact: found.contact_status.node,
        contact_status: found.contact_status,
    })
}
