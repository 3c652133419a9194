//! CPU time of this process and of one of its threads, as Linux accounts it in `/proc`
//! (user and system time in `USER_HZ` ticks, which Linux fixes at 100 per second for
//! `/proc`: 10 ms resolution, fine over a benchmark of seconds).
//!
//! A node reports both in its `Status` answer (the process, and each shard's thread), so
//! `quasar-bench` can print the CPU seconds every node used during a run and the CPU per
//! committed write, on loopback or on remote hosts alike.

use std::path::{Path, PathBuf};

/// Microseconds per `USER_HZ` tick in `/proc/*/stat`.
const MICROS_PER_TICK: u64 = 10_000;

/// User and system CPU time in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user_micros: u64,
    pub system_micros: u64,
}

impl CpuTime {
    /// User plus system time.
    pub fn total_micros(&self) -> u64 {
        self.user_micros.saturating_add(self.system_micros)
    }
}

/// Parses `utime` and `stime` (fields 14 and 15) of a `/proc/*/stat` line. Fields are
/// counted after the `(comm)` field, which may itself hold spaces and parentheses.
pub fn parse_stat(stat: &str) -> Option<CpuTime> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After `comm`: state (3), ppid (4), ... utime is field 14, the 12th after `comm`.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(CpuTime {
        user_micros: utime.saturating_mul(MICROS_PER_TICK),
        system_micros: stime.saturating_mul(MICROS_PER_TICK),
    })
}

/// The CPU time of a `/proc/*/stat` file; `None` where it cannot be read (not Linux, or
/// the thread is gone).
pub fn read_stat(path: &Path) -> Option<CpuTime> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// The CPU time of this whole process: every thread, live or exited (io_uring's worker
/// threads included).
pub fn process() -> Option<CpuTime> {
    read_stat(Path::new("/proc/self/stat"))
}

/// The CPU time of the calling thread.
pub fn this_thread() -> Option<CpuTime> {
    read_stat(Path::new("/proc/thread-self/stat"))
}

/// Where another thread of this process can read the calling thread's CPU time later:
/// `/proc/self/task/<tid>/stat`.
pub fn this_thread_stat_path() -> Option<PathBuf> {
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid = link.file_name()?;
    Some(Path::new("/proc/self/task").join(tid).join("stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_system_ticks_after_a_command_with_spaces() {
        let line = "4242 (shard 0) (x) S 1 4242 4242 0 -1 4194560 2630 0 0 0 1234 56 0 0 20 0 \
                    9 0 1 0 0 0";
        let t = parse_stat(line).unwrap();
        assert_eq!(t.user_micros, 12_340_000);
        assert_eq!(t.system_micros, 560_000);
        assert_eq!(t.total_micros(), 12_900_000);
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_thread_is_found_under_the_process_and_counts_work() {
        let path = this_thread_stat_path().unwrap();
        let before = read_stat(&path).unwrap();
        // Burn CPU until the tick-granular counter moves (bounded: a few seconds at most).
        let began = std::time::Instant::now();
        let mut x = 1u64;
        while read_stat(&path).unwrap().total_micros() == before.total_micros() {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            assert!(
                began.elapsed() < std::time::Duration::from_secs(20),
                "the thread's CPU time never moved ({x})"
            );
        }
        let after = this_thread().unwrap();
        assert!(after.total_micros() > before.total_micros());
        assert!(process().unwrap().total_micros() >= after.total_micros());
    }
}
