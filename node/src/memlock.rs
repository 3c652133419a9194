//! The locked-memory limit glommio needs: every executor locks its io_uring buffers, so a
//! node with N shards needs about N x [`PER_SHARD_BYTES`] of `RLIMIT_MEMLOCK`. The check runs
//! at start, raises the soft limit when the hard limit allows, and otherwise fails with the
//! fix instead of letting an executor die later with `ENOMEM`.

use rlimit::Resource;

/// Locked memory one shard's executor uses: its io_uring rings plus `io_memory`.
pub const PER_SHARD_BYTES: u64 = 1 << 20;

/// Why the node cannot lock the memory its shards need.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "RLIMIT_MEMLOCK allows {hard_kib} KiB of locked memory but {shards} shard(s) need \
     {needed_kib} KiB (glommio locks each executor's io_uring buffers): raise it with \
     `ulimit -l unlimited` (as root) or `LimitMEMLOCK=infinity` in the systemd unit, \
     or start fewer --shards"
)]
pub struct MemlockError {
    pub shards: usize,
    pub needed_kib: u64,
    pub hard_kib: u64,
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    /// The soft limit already allowed it.
    Enough,
    /// The soft limit was raised to this many bytes.
    Raised(u64),
}

/// Decides from the current limits; pure, so it is tested without touching the process.
pub fn plan(shards: usize, soft: u64, hard: u64) -> Result<Option<u64>, MemlockError> {
    let needed = PER_SHARD_BYTES.saturating_mul(shards as u64);
    if soft >= needed {
        Ok(None)
    } else if hard >= needed {
        Ok(Some(needed))
    } else {
        Err(MemlockError {
            shards,
            needed_kib: needed / 1024,
            hard_kib: hard / 1024,
        })
    }
}

/// Checks `RLIMIT_MEMLOCK` for `shards` executors and raises the soft limit if needed.
pub fn ensure(shards: usize) -> Result<Memlock, MemlockError> {
    let (soft, hard) = Resource::MEMLOCK.get().unwrap_or((0, 0));
    match plan(shards, soft, hard)? {
        None => Ok(Memlock::Enough),
        Some(bytes) => match Resource::MEMLOCK.set(bytes, hard) {
            Ok(()) => Ok(Memlock::Raised(bytes)),
            Err(_) => Err(MemlockError {
                shards,
                needed_kib: bytes / 1024,
                hard_kib: soft / 1024,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_soft_limit_changes_nothing() {
        assert_eq!(plan(2, 8 << 20, 8 << 20), Ok(None));
    }

    #[test]
    fn soft_limit_is_raised_up_to_the_need() {
        assert_eq!(plan(4, 64 << 10, 8 << 20), Ok(Some(4 << 20)));
    }

    #[test]
    fn too_low_hard_limit_explains_the_fix() {
        let err = plan(16, 8 << 20, 8 << 20).unwrap_err();
        assert_eq!(err.needed_kib, 16 * 1024);
        let text = err.to_string();
        assert!(text.contains("8192 KiB"), "{text}");
        assert!(text.contains("ulimit -l unlimited"), "{text}");
        assert!(text.contains("--shards"), "{text}");
    }

    #[test]
    fn the_current_process_can_run_one_shard() {
        // Every machine that runs the test suite runs glommio executors, so one shard's
        // worth must be available (raising the soft limit if needed).
        assert!(ensure(1).is_ok());
    }
}
