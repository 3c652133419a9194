//! quasar-node: the Quasar storage node process.
//!
//! Built so far:
//! - [`config`]: flags, `QUASAR_*` environment variables and a TOML file, resolved into one
//!   validated [`config::NodeConfig`]; every error names the setting and the fix;
//! - [`memlock`]: the `RLIMIT_MEMLOCK` check glommio needs, run at start;
//! - [`admin`]: the admin HTTP port (`/health`, `/ready`, `/status`, `/metrics`), hyper on
//!   a thread of its own, serving whatever an [`admin::AdminSource`] reports.
//!
//! The shards, the cluster bootstrap, `quasar start` and `quasar demo` are issue #5.

pub mod admin;
pub mod config;
pub mod memlock;
