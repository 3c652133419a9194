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
    /// TLS to the nodes (`--cacert`, optionally `--cert`/`--key`).
    pub tls: Option<quasar_rpc::tls::ClientTls>,
    /// A bearer token (`--token`).
    pub token: Option<quasar_rpc::auth::Secret>,
}

/// The TLS settings of `--cacert`, `--cert` and `--key`: none, the CA alone (server checked,
/// no client certificate), or all three.
pub fn client_tls(
    cacert: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<quasar_rpc::tls::ClientTls>> {
    use anyhow::Context;
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("--cert and --key go together"),
    };
    match cacert {
        None if identity.is_some() => {
            anyhow::bail!("--cert/--key need --cacert (the cluster CA) to verify the nodes")
        }
        None => Ok(None),
        Some(ca) => Ok(Some(
            quasar_rpc::tls::ClientTls::load(ca, identity)
                .context("cannot load --cacert/--cert/--key")?,
        )),
    }
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
    let found = quasar_rpc::client::discover::discover_secure(
        ClusterId::from_name(&options.cluster_name),
        &options.endpoints,
        options.timeout,
        options.tls.clone(),
        options.token.clone(),
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
