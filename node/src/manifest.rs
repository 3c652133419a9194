//! The node's identity file, `DATA_DIR/quasar.json`: written once on the first start (from
//! `--initial-cluster`, `--cluster-id`, `--node-id`, `--shards`) and read on every restart,
//! so a restarted node never needs the bootstrap flags and can never join another cluster or
//! change its shard count by mistake.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const FILE_NAME: &str = "quasar.json";

/// Replicas of each range of a new cluster unless `--replicas` says otherwise.
pub const DEFAULT_REPLICAS: usize = 3;

/// What a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: u64,
    pub shards: usize,
    /// Every member and the address of its shard 0.
    pub members: BTreeMap<u64, SocketAddr>,
    /// Replicas of each range of the new cluster (on the members with the lowest ids);
    /// absent in manifests written before the setting existed: every member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
}

/// Why the data directory cannot be used with these settings.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {reason}; restore the file or start with an empty --data-dir")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}; check the permissions and free space of --data-dir")]
    Write { path: PathBuf, reason: String },
    #[error("--data-dir {dir} is new and --initial-cluster is not given: name every member on the first start, e.g. --initial-cluster 1=10.0.0.1:7100,2=10.0.0.2:7100,3=10.0.0.3:7100")]
    NoInitialCluster { dir: PathBuf },
    #[error(
        "--initial-cluster does not name this node ({node_id}): add {node_id}=HOST:PORT to it"
    )]
    NotAMember { node_id: u64 },
    #[error("--{setting} is {given} but {path} belongs to {stored}: use {stored}, or a fresh --data-dir for a new node")]
    Mismatch {
        setting: &'static str,
        given: String,
        stored: String,
        path: PathBuf,
    },
}

impl Manifest {
    /// Reads the manifest of `dir`, or creates it from the bootstrap settings. Settings
    /// given on a restart must agree with the stored ones.
    pub fn load_or_create(
        dir: &Path,
        cluster_id: &str,
        node_id: u64,
        shards: usize,
        initial_cluster: &BTreeMap<u64, SocketAddr>,
        replicas: Option<usize>,
    ) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => {
                let m: Manifest =
                    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Read {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let mismatch = |setting, given: String, stored: String| ManifestError::Mismatch {
                    setting,
                    given,
                    stored,
                    path: path.clone(),
                };
                if m.node_id != node_id {
                    return Err(mismatch(
                        "node-id",
                        node_id.to_string(),
                        m.node_id.to_string(),
                    ));
                }
                if m.cluster_id != cluster_id {
                    return Err(mismatch(
                        "cluster-id",
                        cluster_id.to_string(),
                        m.cluster_id.clone(),
                    ));
                }
                if m.shards != shards {
                    return Err(mismatch("shards", shards.to_string(), m.shards.to_string()));
                }
                if let Some(given) = replicas.filter(|&r| r != m.bootstrap_replicas()) {
                    return Err(mismatch(
                        "replicas",
                        given.to_string(),
                        m.bootstrap_replicas().to_string(),
                    ));
                }
                Ok(m)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if initial_cluster.is_empty() {
                    return Err(ManifestError::NoInitialCluster {
                        dir: dir.to_path_buf(),
                    });
                }
                if !initial_cluster.contains_key(&node_id) {
                    return Err(ManifestError::NotAMember { node_id });
                }
                let m = Manifest {
                    format: 1,
                    cluster_id: cluster_id.to_string(),
                    node_id,
                    shards,
                    members: initial_cluster.clone(),
                    replicas: Some(
                        replicas
                            .unwrap_or(DEFAULT_REPLICAS)
                            .min(initial_cluster.len()),
                    ),
                };
                m.write(dir)?;
                Ok(m)
            }
            Err(e) => Err(ManifestError::Read {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// How many members hold each range of the new cluster.
    pub fn bootstrap_replicas(&self) -> usize {
        self.replicas.unwrap_or(self.members.len())
    }

    fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(FILE_NAME);
        let err = |e: std::io::Error| ManifestError::Write {
            path: path.clone(),
            reason: e.to_string(),
        };
        fs::create_dir_all(dir).map_err(err)?;
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        {
            let mut f = fs::File::create(&tmp).map_err(err)?;
            f.write_all(&text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        fs::rename(&tmp, &path).map_err(err)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> BTreeMap<u64, SocketAddr> {
        [(1, "127.0.0.1:7100"), (2, "127.0.0.1:7110")]
            .into_iter()
            .map(|(n, a)| (n, a.parse().expect("addr")))
            .collect()
    }

    #[test]
    fn first_start_writes_and_restarts_must_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Manifest::load_or_create(dir.path(), "c", 1, 2, &members(), None).expect("create");
        assert_eq!(m.members.len(), 2);
        let again = Manifest::load_or_create(dir.path(), "c", 1, 2, &BTreeMap::new(), None)
            .expect("reload");
        assert_eq!(again, m);
        let err = Manifest::load_or_create(dir.path(), "c", 1, 4, &BTreeMap::new(), None)
            .expect_err("shards changed");
        assert!(err.to_string().contains("--shards is 4"), "{err}");
        let err = Manifest::load_or_create(dir.path(), "other", 1, 2, &BTreeMap::new(), None)
            .expect_err("cluster changed");
        assert!(err.to_string().contains("--cluster-id"), "{err}");
        // Two members: each range on both (the default of 3 capped), and a restart naming
        // another count is refused.
        assert_eq!(m.bootstrap_replicas(), 2);
        let err = Manifest::load_or_create(dir.path(), "c", 1, 2, &BTreeMap::new(), Some(1))
            .expect_err("replicas changed");
        assert!(err.to_string().contains("--replicas is 1"), "{err}");
    }

    #[test]
    fn a_new_dir_needs_the_initial_cluster_naming_this_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Manifest::load_or_create(dir.path(), "c", 1, 2, &BTreeMap::new(), None)
            .expect_err("no members");
        assert!(err.to_string().contains("--initial-cluster"), "{err}");
        let err = Manifest::load_or_create(dir.path(), "c", 3, 2, &members(), None)
            .expect_err("not a member");
        assert!(err.to_string().contains("3=HOST:PORT"), "{err}");
    }
}
