//! The simulator's only source of randomness: a seeded PRNG, and the derivation of
//! independent sub-streams (one per node, one for the network, one for faults) from the
//! run seed, so that changing how often one component draws does not perturb the others.

/// A seeded, deterministic random stream. Never seeded from the environment.
#[derive(Debug, Clone)]
pub struct SimRng {
    inner: fastrand::Rng,
}

/// One step of SplitMix64: a good mixer for deriving independent seeds.
#[must_use]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimRng {
    /// A stream from an explicit seed.
    #[must_use]
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            inner: fastrand::Rng::with_seed(seed),
        }
    }

    /// A stream derived from `seed` and a label (e.g. "net", or a node id): the same
    /// (seed, label) always gives the same stream, different labels unrelated ones.
    #[must_use]
    pub fn derive(seed: u64, label: u64) -> SimRng {
        SimRng::new(Self::derive_seed(seed, label))
    }

    /// The seed `derive` would use; handed to components that own their own PRNG
    /// (the Raft core's election timer).
    #[must_use]
    pub fn derive_seed(seed: u64, label: u64) -> u64 {
        mix64(mix64(seed) ^ mix64(label.wrapping_add(0x5151)))
    }

    /// True with probability `p` (0.0 never draws true, 1.0 always does).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.inner.f64() < p
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        self.inner.u64(lo..=hi)
    }

    /// Uniform index in `0..len`; `len` must be non-zero.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "SimRng::index on an empty range");
        self.inner.usize(0..len)
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A raw 64-bit draw.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.u64(..)
    }

    /// Shuffles a slice in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        self.inner.shuffle(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_labels_separate_streams() {
        let mut a = SimRng::derive(7, 1);
        let mut b = SimRng::derive(7, 1);
        let mut c = SimRng::derive(7, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn chance_edges_and_between_bounds() {
        let mut r = SimRng::new(3);
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        for _ in 0..100 {
            let v = r.between(5, 9);
            assert!((5..=9).contains(&v));
        }
        assert_eq!(r.between(4, 2), 4);
    }
}
