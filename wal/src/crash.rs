//! Crash points: named places in the persistence path (WAL appends, syncs, segment
//! creation and deletion, snapshot files, range splits and merges) where a failpoint build
//! (`--features failpoints`, the `fail` crate) can abort the process, to prove that a crash
//! at every step recovers to a correct state. In normal builds `crash_point!` compiles to
//! nothing.
//!
//! A point fires when the `FAILPOINTS` environment variable gives it the `return` action,
//! e.g. `FAILPOINTS='wal-after-sync=20*off->return'` aborts on the 21st pass. The action
//! aborts at once (no destructor runs, no clean WAL close): like `kill -9` at that line.
//! `quasar-bench nemesis --failpoints` walks through [`POINTS`] in turn.

/// Every crash point, in the order the nemesis visits them.
pub const POINTS: &[&str] = &[
    "wal-append",
    "wal-appended",
    "wal-before-sync",
    "wal-after-sync",
    "wal-segment-before-rename",
    "wal-segment-after-rename",
    "wal-gc-before-remove",
    "wal-segment-retire",
    "wal-rewrite",
    "snapshot-before-rename",
    "snapshot-after-rename",
    "replica-gone-mark",
    "split-apply",
    "merge-apply",
];

#[cfg(feature = "failpoints")]
pub use fail;

/// Reads `FAILPOINTS` (a failpoint build; nothing otherwise). Call once at start.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    {
        let scenario = fail::FailScenario::setup();
        // NOTE: the configuration lives for the whole process; tearing it down would
        // switch every point off.
        std::mem::forget(scenario);
        tracing::warn!("failpoint build: crash points armed from FAILPOINTS");
    }
}

/// Aborts the process at crash point `name` (a failpoint build, `return` action).
pub fn abort_at(name: &str) -> ! {
    eprintln!("quasar: crash point {name} fired: aborting (failpoint build)");
    std::process::abort()
}

/// A crash point named `$name` (one of [`POINTS`]).
#[cfg(feature = "failpoints")]
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {{
        let _: Option<()> = $crate::crash::fail::eval($name, |_| $crate::crash::abort_at($name));
    }};
}

/// A crash point named `$name` (one of [`POINTS`]): nothing in this build.
#[cfg(not(feature = "failpoints"))]
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {{}};
}
