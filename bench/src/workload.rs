//! What `quasar-bench kv` asks of the cluster: the operation mix of each workload (the six
//! YCSB core workloads among them), the key distribution and the key names.
//!
//! Keys are `user` followed by a 12-digit index (`user000000000042`): they sort by index and
//! start with `u`, far from the reserved meta range (keys starting with `0x00`).

use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use serde::Serialize;

/// The operation mix.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Puts only.
    Write,
    /// Gets only.
    Read,
    /// Gets with probability `--read-ratio`, puts otherwise.
    Mixed,
    /// YCSB A: 50% reads, 50% updates (zipfian).
    YcsbA,
    /// YCSB B: 95% reads, 5% updates (zipfian).
    YcsbB,
    /// YCSB C: reads only (zipfian).
    YcsbC,
    /// YCSB D: 95% reads, 5% inserts, reads favour recent inserts (latest).
    YcsbD,
    /// YCSB E: 95% short scans, 5% inserts (zipfian start key).
    YcsbE,
    /// YCSB F: 50% reads, 50% read-modify-writes (get, then compare-and-set) (zipfian).
    YcsbF,
}

/// How keys are chosen among the existing ones.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian (theta 0.99) over key indices, hottest first, scattered by a hash (YCSB's
    /// scrambled zipfian).
    Zipfian,
    /// Zipfian over recency: the most recently inserted keys are the hottest.
    Latest,
}

/// One operation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
        }
    }
}

impl Workload {
    /// The distribution a preset uses unless `--distribution` says otherwise.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::Write | Workload::Read | Workload::Mixed => Distribution::Uniform,
            Workload::YcsbD => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// Whether the workload reads keys (so they should exist first).
    pub fn reads(self) -> bool {
        self != Workload::Write
    }

    /// The next operation; `read_ratio` only matters for `mixed`.
    pub fn next_op(self, rng: &mut fastrand::Rng, read_ratio: f64) -> OpKind {
        let p = rng.f64();
        match self {
            Workload::Write => OpKind::Update,
            Workload::Read | Workload::YcsbC => OpKind::Read,
            Workload::Mixed => pick(p < read_ratio, OpKind::Read, OpKind::Update),
            Workload::YcsbA => pick(p < 0.5, OpKind::Read, OpKind::Update),
            Workload::YcsbB => pick(p < 0.95, OpKind::Read, OpKind::Update),
            Workload::YcsbD => pick(p < 0.95, OpKind::Read, OpKind::Insert),
            Workload::YcsbE => pick(p < 0.95, OpKind::Scan, OpKind::Insert),
            Workload::YcsbF => pick(p < 0.5, OpKind::Read, OpKind::ReadModifyWrite),
        }
    }
}

fn pick(first: bool, a: OpKind, b: OpKind) -> OpKind {
    if first {
        a
    } else {
        b
    }
}

/// The name of key `index` under `prefix` (`--key-prefix`, `user` by default).
pub fn key_name(prefix: &str, index: u64) -> Vec<u8> {
    // On every request of `kv`: `itoa` and a zero fill, not the formatting machinery (4 % of
    // the bench's CPU at 300,000 reads/s).
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(index).as_bytes();
    let mut key = Vec::with_capacity(prefix.len() + digits.len().max(KEY_DIGITS));
    key.extend_from_slice(prefix.as_bytes());
    key.resize(key.len() + KEY_DIGITS.saturating_sub(digits.len()), b'0');
    key.extend_from_slice(digits);
    key
}

/// The digits of a key's index, zero-filled (`key_name`).
const KEY_DIGITS: usize = 12;

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): items `0..n`, item 0 the most popular. `zeta(n)` is computed once.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    pub const THETA: f64 = 0.99;

    pub fn new(n: u64) -> Zipfian {
        let n = n.max(1);
        let theta = Self::THETA;
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    pub fn next(&self, rng: &mut fastrand::Rng) -> u64 {
        let u = rng.f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let v = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.n - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// FNV-1a of the index: scatters zipfian ranks over the key space.
fn fnv64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Chooses existing keys and hands out new ones (inserts), shared by every worker.
#[derive(Debug)]
pub struct KeySpace {
    distribution: Distribution,
    /// Keys `0..initial` exist after the preload.
    initial: u64,
    zipf: Zipfian,
    /// The next key index an insert creates.
    next_insert: AtomicU64,
}

impl KeySpace {
    pub fn new(distribution: Distribution, keys: u64) -> KeySpace {
        let keys = keys.max(1);
        KeySpace {
            distribution,
            initial: keys,
            zipf: Zipfian::new(keys),
            next_insert: AtomicU64::new(keys),
        }
    }

    /// A key index for a read, update or scan start.
    pub fn choose(&self, rng: &mut fastrand::Rng) -> u64 {
        match self.distribution {
            Distribution::Uniform => rng.u64(0..self.initial),
            Distribution::Zipfian => fnv64(self.zipf.next(rng)) % self.initial,
            Distribution::Latest => {
                // The zipfian's item count stays at the initial keys (recomputing zeta per
                // insert is too slow); recency is counted back from the newest key.
                let newest = self.next_insert.load(Ordering::Relaxed).saturating_sub(1);
                newest.saturating_sub(self.zipf.next(rng))
            }
        }
    }

    /// The index of a new key (inserts).
    pub fn insert(&self) -> u64 {
        self.next_insert.fetch_add(1, Ordering::Relaxed)
    }

    /// How many keys the run inserted.
    pub fn inserted(&self) -> u64 {
        self.next_insert.load(Ordering::Relaxed) - self.initial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_the_prefix_and_twelve_digits() {
        for i in [0, 7, 42, 999_999_999_999, 1_000_000_000_000, u64::MAX] {
            assert_eq!(key_name("k/", i), format!("k/{i:012}").into_bytes());
        }
        assert_eq!(key_name("", 5), b"000000000005");
    }

    #[test]
    fn zipfian_favours_low_ranks_and_stays_in_bounds() {
        let z = Zipfian::new(1000);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut zero = 0;
        for _ in 0..10_000 {
            let v = z.next(&mut rng);
            assert!(v < 1000);
            if v == 0 {
                zero += 1;
            }
        }
        // Item 0 has probability 1 / zeta(1000) ~ 0.13.
        assert!(zero > 800 && zero < 2000, "{zero}");
    }

    #[test]
    fn keys_sort_by_index_and_avoid_the_meta_range() {
        assert!(key_name("user", 9) < key_name("user", 10));
        assert!(key_name("user", 0)[0] >= 0x01);
        assert!(key_name("a/", 5).starts_with(b"a/"));
        let ks = KeySpace::new(Distribution::Latest, 10);
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(ks.insert(), 10);
        for _ in 0..100 {
            assert!(ks.choose(&mut rng) <= 10);
        }
        assert_eq!(ks.inserted(), 1);
    }

    #[test]
    fn presets_mix() {
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(Workload::Write.next_op(&mut rng, 0.0), OpKind::Update);
        assert_eq!(Workload::YcsbC.next_op(&mut rng, 0.0), OpKind::Read);
        assert_eq!(Workload::Mixed.next_op(&mut rng, 1.0), OpKind::Read);
    }
}
