//! quasar-node: the Quasar storage node process.
//!
//! Built so far: [`config`] (flags, `QUASAR_*` environment variables and a TOML file,
//! resolved into one validated configuration) and [`memlock`] (the locked-memory check
//! glommio needs). The shards, the cluster bootstrap, `quasar start`, `quasar demo` and the
//! admin HTTP port are issue #5.

pub mod config;
pub mod memlock;
