//! `quasar-bench fsmeta`: an mdtest-like filesystem metadata workload, mapped onto keys the
//! way a metadata service would store a namespace:
//!
//! - `i/<inode:016x>` -> the inode's attributes (kind, mode, size, times: 64 bytes);
//! - `d/<parent:016x>/<name>` -> the child's inode number (8 bytes, big-endian);
//! - `meta/next-inode`: a counter; each client takes a block of numbers with one
//!   `Increment`, so the counter is not a hot key.
//!
//! A run makes its own directory under the root inode (`run-<hex>`), `--dirs` directories in
//! it, then runs the phases over `--dirs` x `--files-per-dir` files with `--concurrency`
//! threads (one `BlockingClient` each):
//!
//! - create: allocate an inode; txn: dentry absent -> put dentry, put inode;
//! - stat: get dentry, get inode;
//! - readdir: scan each directory's `d/<dir>/` prefix, one page of `--page-size` at a time
//!   (one op = one whole listing);
//! - rename: get the dentry; txn: old dentry version unchanged and new name absent -> delete
//!   old, put new;
//! - unlink: txn: dentry still names the inode -> delete dentry, delete inode.
//!
//! Then (not timed) the directories are removed and every directory is scanned once more: a
//! correctness check that each created file was seen by stat and readdir and is gone.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use quasar_rpc::client::BlockingClient;
use quasar_rpc::error::ClientError;
use quasar_rpc::message::{
    Compare, CompareOp, CompareTarget, KeyVersion, Operation, Reply, Txn, TxnBranch, TxnOp,
    TxnOpResult, TxnReply,
};
use serde::Serialize;

use crate::report::{latency_histogram, Percentiles, Report};
use crate::target::{self, TargetArgs};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct FsmetaArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Directories in the tree.
    #[arg(long, default_value_t = 16)]
    pub dirs: u64,
    /// Files created in each directory.
    #[arg(long, default_value_t = 1000)]
    pub files_per_dir: u64,
    /// Client threads (one connection set each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Directory entries per readdir page.
    #[arg(long, default_value_t = 256)]
    pub page_size: u32,
    /// Inode numbers each client takes per `Increment` of the counter.
    #[arg(long, default_value_t = 1024)]
    pub inode_block: u64,
    /// One JSON line instead of the human report.
    #[arg(long)]
    pub json: bool,
}

/// The root directory's inode (never handed out by the allocator).
const ROOT_INODE: u64 = 1;
const COUNTER_KEY: &[u8] = b"meta/next-inode";

fn inode_key(ino: u64) -> Vec<u8> {
    format!("i/{ino:016x}").into_bytes()
}

fn dentry_prefix(parent: u64) -> Vec<u8> {
    format!("d/{parent:016x}/").into_bytes()
}

fn dentry_key(parent: u64, name: &str) -> Vec<u8> {
    let mut k = dentry_prefix(parent);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The end of a prefix scan: the prefix with its last byte (`/`) incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// 64 bytes of attributes: kind, mode, uid, gid, size, ctime (ns), mtime (ns), nlink.
fn attributes(dir: bool) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut a = Vec::with_capacity(64);
    a.extend_from_slice(&(if dir { 2u64 } else { 1 }).to_le_bytes());
    a.extend_from_slice(&(if dir { 0o755u64 } else { 0o644 }).to_le_bytes());
    a.extend_from_slice(&1000u64.to_le_bytes());
    a.extend_from_slice(&1000u64.to_le_bytes());
    a.extend_from_slice(&0u64.to_le_bytes());
    a.extend_from_slice(&now.to_le_bytes());
    a.extend_from_slice(&now.to_le_bytes());
    a.extend_from_slice(&(if dir { 2u64 } else { 1 }).to_le_bytes());
    a
}

/// One client: its connection and its block of inode numbers.
struct Worker {
    client: BlockingClient,
    next_ino: u64,
    end_ino: u64,
    block: u64,
}

impl Worker {
    fn alloc_inode(&mut self) -> Result<u64, ClientError> {
        loop {
            if self.next_ino >= self.end_ino {
                let reply = self.client.execute(Operation::Increment {
                    key: COUNTER_KEY.to_vec(),
                    delta: self.block as i64,
                })?;
                let Reply::Incremented { value, .. } = reply else {
                    return Err(unexpected("Increment"));
                };
                let end = value as u64 + 1;
                self.next_ino = end - self.block;
                self.end_ino = end;
            }
            let ino = self.next_ino;
            self.next_ino += 1;
            if ino > ROOT_INODE {
                return Ok(ino);
            }
        }
    }

    fn txn(&mut self, txn: Txn) -> Result<TxnReply, ClientError> {
        match self.client.execute(Operation::Txn(txn))? {
            Reply::Txn(r) => Ok(r),
            _ => Err(unexpected("Txn")),
        }
    }

    /// Creates `name` in `parent`; `Ok(None)` when the name exists.
    fn create(&mut self, parent: u64, name: &str, dir: bool) -> Result<Option<u64>, ClientError> {
        let ino = self.alloc_inode()?;
        let dentry = dentry_key(parent, name);
        let reply = self.txn(Txn {
            compares: vec![Compare {
                key: dentry.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(KeyVersion::ABSENT),
            }],
            success: vec![
                TxnOp::Put {
                    key: dentry,
                    value: ino.to_be_bytes().to_vec(),
                },
                TxnOp::Put {
                    key: inode_key(ino),
                    value: attributes(dir),
                },
            ],
            failure: vec![],
        })?;
        Ok((reply.branch == TxnBranch::Success).then_some(ino))
    }

    /// Looks up `name` in `parent` and reads its inode: whether both exist.
    fn stat(&mut self, parent: u64, name: &str) -> Result<bool, ClientError> {
        let Some(d) = self.client.get(&dentry_key(parent, name))? else {
            return Ok(false);
        };
        let Ok(bytes) = <[u8; 8]>::try_from(d.value.as_slice()) else {
            return Ok(false);
        };
        Ok(self
            .client
            .get(&inode_key(u64::from_be_bytes(bytes)))?
            .is_some())
    }

    /// Lists `parent`: the number of entries.
    fn readdir(&mut self, parent: u64, page: u32) -> Result<u64, ClientError> {
        let prefix = dentry_prefix(parent);
        let end = prefix_end(&prefix);
        let mut start = prefix;
        let mut count = 0;
        loop {
            let p = self.client.scan(&start, &end, page.max(1), 1 << 20)?;
            count += p.entries.len() as u64;
            match p.resume_key {
                Some(k) => start = k,
                None => return Ok(count),
            }
        }
    }

    /// Renames `old` to `new` in `parent`: whether it happened.
    fn rename(&mut self, parent: u64, old: &str, new: &str) -> Result<bool, ClientError> {
        let old_key = dentry_key(parent, old);
        let Some(d) = self.client.get(&old_key)? else {
            return Ok(false);
        };
        let new_key = dentry_key(parent, new);
        let reply = self.txn(Txn {
            compares: vec![
                Compare {
                    key: old_key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(d.version),
                },
                Compare {
                    key: new_key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Version(KeyVersion::ABSENT),
                },
            ],
            success: vec![
                TxnOp::Delete { key: old_key },
                TxnOp::Put {
                    key: new_key,
                    value: d.value,
                },
            ],
            failure: vec![],
        })?;
        Ok(reply.branch == TxnBranch::Success)
    }

    /// Removes `name` (naming `ino`) from `parent` with its inode: whether both existed.
    fn unlink(&mut self, parent: u64, name: &str, ino: u64) -> Result<bool, ClientError> {
        let dentry = dentry_key(parent, name);
        let reply = self.txn(Txn {
            compares: vec![Compare {
                key: dentry.clone(),
                op: CompareOp::Equal,
                target: CompareTarget::Value(ino.to_be_bytes().to_vec()),
            }],
            success: vec![
                TxnOp::Delete { key: dentry },
                TxnOp::Delete {
                    key: inode_key(ino),
                },
            ],
            failure: vec![],
        })?;
        Ok(reply.branch == TxnBranch::Success
            && reply
                .results
                .iter()
                .all(|r| matches!(r, TxnOpResult::Delete { found: true })))
    }
}

fn unexpected(what: &str) -> ClientError {
    ClientError::Protocol {
        reason: format!("unexpected reply kind to {what}"),
    }
}

/// One file of the tree.
#[derive(Debug, Clone)]
struct File {
    dir: u64,
    name: String,
    ino: u64,
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
struct Phase {
    name: &'static str,
    ops: u64,
    /// Operations that did not do what they should (client error, or a name found missing
    /// or taken).
    failed: u64,
    secs: f64,
    ops_per_sec: f64,
    #[serde(flatten)]
    latency: Percentiles,
}

impl Phase {
    fn human(&self) -> String {
        format!(
            "{:>10.0} ops/s  {} ops  {} failed  {}",
            self.ops_per_sec,
            self.ops,
            self.failed,
            self.latency.human()
        )
    }
}

/// What one thread did in one phase.
struct Part<T> {
    hist: Histogram<u64>,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    out: Vec<T>,
}

impl<T> Part<T> {
    fn new() -> Part<T> {
        Part {
            hist: latency_histogram(),
            ok: 0,
            failed: 0,
            first_error: None,
            out: Vec::new(),
        }
    }

    /// Times one operation; `Ok(Some(v))` is a success keeping `v`, `Ok(None)` a failure.
    fn time(&mut self, op: impl FnOnce() -> Result<Option<T>, ClientError>) {
        let start = Instant::now();
        let result = op();
        let us = start.elapsed().as_micros().max(1) as u64;
        let _ = self.hist.record(us.min(60_000_000));
        match result {
            Ok(Some(v)) => {
                self.ok += 1;
                self.out.push(v);
            }
            Ok(None) => self.failed += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Runs `op` over `items` split round-robin across the workers; returns the phase and what
/// the successful operations produced.
fn phase<I: Sync, T: Send>(
    name: &'static str,
    workers: &mut [Worker],
    items: &[I],
    errors: &mut Vec<String>,
    op: impl Fn(&mut Worker, &I) -> Result<Option<T>, ClientError> + Sync,
) -> (Phase, Vec<T>) {
    let n = workers.len().max(1);
    let start = Instant::now();
    let parts: Vec<Part<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .enumerate()
            .map(|(t, w)| {
                let op = &op;
                s.spawn(move || {
                    let mut part = Part::new();
                    for item in items.iter().skip(t).step_by(n) {
                        part.time(|| op(w, item));
                    }
                    part
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut p = Part::new();
                    p.first_error = Some("a client thread panicked".into());
                    p
                })
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut hist = latency_histogram();
    let (mut ok, mut failed, mut out) = (0, 0, Vec::new());
    for p in parts {
        let _ = hist.add(&p.hist);
        ok += p.ok;
        failed += p.failed;
        if let Some(e) = p.first_error {
            errors.push(format!("{name}: {e}"));
        }
        out.extend(p.out);
    }
    let ops = ok + failed;
    let phase = Phase {
        name,
        ops,
        failed,
        secs,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        latency: Percentiles::from_histogram(&hist),
    };
    (phase, out)
}

/// Figures checked at the end (counts, not timing).
#[derive(Debug, Clone, Serialize)]
struct Check {
    files: u64,
    created: u64,
    stat_found: u64,
    readdir_entries: u64,
    renamed: u64,
    unlinked: u64,
    /// Directory entries left in the run's tree after unlink and rmdir (0 when correct).
    remaining_entries: u64,
    consistent: bool,
}

pub fn run(args: FsmetaArgs) -> anyhow::Result<()> {
    if args.dirs == 0 || args.files_per_dir == 0 || args.concurrency == 0 {
        bail!("--dirs, --files-per-dir and --concurrency must be at least 1");
    }
    if args.inode_block == 0 || args.inode_block > (1 << 30) {
        bail!("--inode-block must be between 1 and 2^30");
    }
    let target = target::resolve(&args.target)?;
    if !args.json {
        eprintln!("fsmeta: target {}", target.describe());
    }
    let mut workers: Vec<Worker> = (0..args.concurrency)
        .map(|_| Worker {
            client: target.client(),
            next_ino: 0,
            end_ino: 0,
            block: args.inode_block,
        })
        .collect();
    let mut errors = Vec::new();

    // The run's own directory under the root, then its directories (the "mkdir" phase).
    let run_name = format!("run-{:016x}", fastrand::u64(..));
    let run_dir = workers[0]
        .create(ROOT_INODE, &run_name, true)
        .context("cannot create the run's directory (is the cluster up?)")?
        .context("the run's directory exists already")?;
    let dir_names: Vec<String> = (0..args.dirs).map(|d| format!("dir{d:06}")).collect();
    let (mkdir, dirs) = phase("mkdir", &mut workers, &dir_names, &mut errors, |w, name| {
        Ok(w.create(run_dir, name, true)?
            .map(|ino| (name.clone(), ino)))
    });
    if dirs.len() as u64 != args.dirs {
        bail!(
            "mkdir: {} of {} directories created: {}",
            dirs.len(),
            args.dirs,
            errors.join("; ")
        );
    }

    let wanted: Vec<File> = dirs
        .iter()
        .flat_map(|(_, dir)| {
            (0..args.files_per_dir).map(move |f| File {
                dir: *dir,
                name: format!("file{f:08}"),
                ino: 0,
            })
        })
        .collect();
    let (create, files) = phase("create", &mut workers, &wanted, &mut errors, |w, f| {
        Ok(w.create(f.dir, &f.name, false)?
            .map(|ino| File { ino, ..f.clone() }))
    });
    let (stat, found) = phase("stat", &mut workers, &files, &mut errors, |w, f| {
        Ok(w.stat(f.dir, &f.name)?.then_some(()))
    });
    let dir_inos: Vec<u64> = dirs.iter().map(|(_, ino)| *ino).collect();
    let page = args.page_size;
    let (readdir, listed) = phase("readdir", &mut workers, &dir_inos, &mut errors, |w, d| {
        w.readdir(*d, page).map(Some)
    });
    let (rename, renamed) = phase("rename", &mut workers, &files, &mut errors, |w, f| {
        let new = format!("{}.renamed", f.name);
        Ok(w.rename(f.dir, &f.name, &new)?.then(|| File {
            name: new,
            ..f.clone()
        }))
    });
    let (unlink, unlinked) = phase("unlink", &mut workers, &renamed, &mut errors, |w, f| {
        Ok(w.unlink(f.dir, &f.name, f.ino)?.then_some(()))
    });

    // Not timed: rmdir, then the check that nothing is left.
    let w = &mut workers[0];
    for (name, ino) in &dirs {
        if let Err(e) = w.unlink(run_dir, name, *ino) {
            errors.push(format!("rmdir: {e}"));
        }
    }
    let mut remaining = 0;
    for d in dir_inos.iter().chain([&run_dir]) {
        remaining += w
            .readdir(*d, page)
            .context("the final scan of the tree failed")?;
    }
    if let Err(e) = w.unlink(ROOT_INODE, &run_name, run_dir) {
        errors.push(format!("rmdir {run_name}: {e}"));
    }

    let total = args.dirs * args.files_per_dir;
    let readdir_entries: u64 = listed.iter().sum();
    let check = Check {
        files: total,
        created: files.len() as u64,
        stat_found: found.len() as u64,
        readdir_entries,
        renamed: renamed.len() as u64,
        unlinked: unlinked.len() as u64,
        remaining_entries: remaining,
        consistent: files.len() as u64 == total
            && found.len() as u64 == total
            && readdir_entries == total
            && renamed.len() as u64 == total
            && unlinked.len() as u64 == total
            && remaining == 0,
    };

    let phases = [mkdir, create, stat, readdir, rename, unlink];
    let mut report = Report::new("fsmeta", &args);
    if args.json {
        report.figure("phases", &phases);
    } else {
        report.figure("target", target.describe());
    }
    report.figure("check", &check).figure("errors", &errors);
    report.print(args.json);
    if !args.json {
        // In phase order (the report's figures print sorted by name).
        for p in &phases {
            println!("  {:<8} {}", p.name, p.human());
        }
    }
    drop(workers);
    if let Some(mut cluster) = target.cluster {
        cluster.stop(Duration::from_secs(10));
    }
    if !check.consistent {
        bail!("fsmeta: the tree is not what the operations should have left: {check:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_parent_and_prefix_end_bounds_them() {
        let a = dentry_key(7, "a");
        let prefix = dentry_prefix(7);
        let end = prefix_end(&prefix);
        assert!(a.starts_with(&prefix) && a < end);
        assert!(dentry_key(8, "") >= end);
        assert!(inode_key(1)[0] >= 1 && a[0] >= 1 && COUNTER_KEY[0] >= 1);
        assert_eq!(attributes(true).len(), 64);
    }
}
