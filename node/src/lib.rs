//! quasar-node: the Quasar storage node process.
//!
//! - [`config`]: flags, `QUASAR_*` environment variables and a TOML file, resolved into one
//!   validated [`config::NodeConfig`]; every error names the setting and the fix;
//! - [`manifest`]: the data directory's identity file (cluster, node, shards, members);
//! - [`memlock`]: the `RLIMIT_MEMLOCK` check glommio needs, run at start;
//! - [`server`]: `quasar start`: one glommio executor per shard running
//!   `quasar_shard::runtime::run_shard`, the admin port, signal handling;
//! - [`admin`]: the admin HTTP port (`/health`, `/ready`, `/status`, `/metrics`), hyper on
//!   a thread of its own, serving whatever an [`admin::AdminSource`] reports;
//! - [`http_api`]: the HTTP key-value API on the admin port (`/command`, `/v1/kv`,
//!   `/v1/txn`, `/openapi.json`), through quasar-rpc's client;
//! - [`metrics`]: the Prometheus metrics and the node's `AdminSource`;
//! - [`local_cluster`]: `quasar start` child processes on loopback (demo, benchmarks);
//! - [`demo`]: `quasar demo`, three child nodes on loopback;
//! - [`certs`]: `quasar certs`, a development CA and node/client certificates (rcgen);
//! - [`auth`]: the `[auth]` table (tokens, certificate identities, roles) and the HTTP
//!   authorization decision.

pub mod admin;
pub mod auth;
pub mod certs;
pub mod config;
pub mod demo;
pub mod http_api;
pub mod local_cluster;
pub mod manifest;
pub mod memlock;
pub mod metrics;
pub mod server;
