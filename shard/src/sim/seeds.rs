//! Which seeds a simulation test runs. By default a fixed list derived from the test's
//! name (CI is reproducible); `QUASAR_SIM_SEEDS=N` runs N seeds instead;
//! `QUASAR_SIM_SEED_BASE=B` explores a different list; `QUASAR_SIM_SEED=S` replays one.

use super::rng::mix64;

/// Environment variable replaying exactly one seed.
pub const SEED_VAR: &str = "QUASAR_SIM_SEED";
/// Environment variable setting how many seeds to run.
pub const SEEDS_VAR: &str = "QUASAR_SIM_SEEDS";
/// Environment variable changing the seed list.
pub const BASE_VAR: &str = "QUASAR_SIM_SEED_BASE";

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let parsed = match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse::<u64>(),
    };
    match parsed {
        Ok(v) => Some(v),
        Err(e) => panic!("{name}={raw} is not a u64 ({e}); set it to a decimal or 0x-hex number"),
    }
}

/// A stable 64-bit hash of a test name (FNV-1a), so each test has its own seed list.
#[must_use]
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The seeds `test` runs: the replay seed alone, or `QUASAR_SIM_SEEDS` (else
/// `default_count`) seeds from the test's list.
#[must_use]
pub fn seeds_for(test: &str, default_count: u64) -> Vec<u64> {
    if let Some(seed) = env_u64(SEED_VAR) {
        return vec![seed];
    }
    let count = env_u64(SEEDS_VAR).unwrap_or(default_count);
    let base = env_u64(BASE_VAR).unwrap_or(0) ^ name_hash(test);
    (0..count)
        .map(|i| mix64(base.wrapping_add(i)) >> 1)
        .collect()
}

/// The one-line command that replays `seed` of `test` in the integration test `file`.
#[must_use]
pub fn replay_command(file: &str, test: &str, seed: u64) -> String {
    let filter = format!("--include-ignored --exact {test}");
    format!("{SEED_VAR}={seed} cargo test -p quasar-shard --test {file} -- {filter}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lists_are_stable_distinct_and_sized() {
        // The env vars are not set when the unit tests run under CI.
        if std::env::var(SEED_VAR).is_ok() || std::env::var(SEEDS_VAR).is_ok() {
            return;
        }
        let a = seeds_for("x", 5);
        assert_eq!(a, seeds_for("x", 5));
        assert_ne!(a, seeds_for("y", 5));
        assert_eq!(a.len(), 5);
        assert!(replay_command("sim_calm", "t", 42).starts_with("QUASAR_SIM_SEED=42 cargo test"));
    }
}
