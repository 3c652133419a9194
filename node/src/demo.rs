//! `quasar demo`: a local 3-node cluster on loopback (`crate::local_cluster`), each node a
//! child `quasar start` process, with its data in a temporary folder (or `--data-dir`). Prints the endpoints and
//! example `quasarctl` commands, and stops every node cleanly (SIGTERM) on Ctrl-C.
//! With `--tls`, a development CA and certificates are generated into `DATA/certs` and
//! every port runs TLS (clients need the CA and the generated client certificate).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::local_cluster::{LocalCluster, LocalClusterConfig};

/// Settings of the demo cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the nodes' data here (default: a temporary folder removed on exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shard 0 of node i listens on BASE + 10 * (i - 1); admin ports are BASE + 80 + i.
    #[arg(long, default_value_t = 7100, value_name = "PORT")]
    pub base_port: u16,
    /// Shards per node (at most 8).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub shards: usize,
    /// Run TLS on every port, with certificates generated into DATA/certs.
    #[arg(long)]
    pub tls: bool,
}

pub fn run_demo(args: &DemoArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let temp;
    let root: PathBuf = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("quasar-demo-")
                .tempdir()
                .context("cannot create a temporary folder for the demo's data")?;
            temp.path().to_path_buf()
        }
    };
    let exe = std::env::current_exe().context("cannot find the quasar binary")?;
    let mut cluster = LocalCluster::start(
        LocalClusterConfig {
            exe,
            nodes: 3,
            shards: args.shards,
            base_port: Some(args.base_port),
            root: root.clone(),
            extra_args: Vec::new(),
            tls: args.tls.then(|| root.join("certs")),
            peer_routes: Default::default(),
            env: Default::default(),
        },
        Duration::from_secs(30),
    )?;
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|(_, a)| a.to_string())
        .collect();
    let endpoints = endpoints.join(",");
    let (scheme, tls_flags) = match cluster.tls_dir() {
        Some(dir) => {
            let (cert, key) =
                crate::certs::cert_paths(dir, crate::local_cluster::LOCAL_CLIENT_NAME);
            let ca = dir.join("ca.pem");
            (
                "https",
                format!(
                    " --cacert {} --cert {} --key {}",
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
            )
        }
        None => ("http", String::new()),
    };
    println!(
        "Quasar demo: a 3-node cluster on loopback ({} shards per node)",
        args.shards
    );
    println!("data: {}", root.display());
    for n in &cluster.nodes {
        println!(
            "  node {}: client/peer port {} (shard i on port + i), admin {scheme}://{}/status",
            n.id, n.listen, n.admin
        );
    }
    println!();
    println!("Try:");
    println!("  quasarctl --endpoints {endpoints}{tls_flags} kv put greeting hello");
    println!("  quasarctl --endpoints {endpoints}{tls_flags} kv get greeting");
    println!("  quasarctl --endpoints {endpoints}{tls_flags} status");
    println!();
    println!("Press Ctrl-C to stop.");
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let exited = cluster
            .nodes
            .iter_mut()
            .find_map(|n| (!n.is_running()).then_some(&*n));
        if let Some(n) = exited {
            break Err(anyhow::anyhow!(
                "node {} exited unexpectedly; see {}",
                n.id,
                n.dir.join("quasar.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("stopping the demo cluster");
    cluster.stop(Duration::from_secs(10));
    result
}
