//! `quasar-bench ranges` and `quasar-bench kv --ranges N` end to end: the built binary
//! against a `--spawn 3` cluster of the built `quasar` binary, tiny sizes. No figure is
//! asserted, only the shape of the output and that the rounds ran.
//!
//! Needs `target/<profile>/quasar` (`cargo build -p quasar-node`; `cargo test --workspace`
//! builds it) and range split, merge and leadership transfer on the server (issue #6).

mod common;

use std::time::Duration;

use common::{json_of, quasar, run};

#[test]
fn split_and_merge_rounds_under_writes() {
    let quasar = quasar();
    let out = run(
        &[
            "ranges",
            "--spawn",
            "3",
            "--shards",
            "2",
            "--quasar-bin",
            quasar.to_str().expect("utf-8 path"),
            "--keys",
            "200",
            "--rounds",
            "2",
            "--write-rate",
            "50",
            "--json",
        ],
        Duration::from_secs(180),
    );
    let v = json_of(&out, "ranges");
    assert_eq!(v["benchmark"], "ranges");
    assert_eq!(v["config"]["rounds"], 2);
    assert_eq!(v["rounds_done"], 2, "{v}");
    for field in [
        "split_p50_us",
        "split_p99_us",
        "split_max_us",
        "merge_p50_us",
        "merge_p99_us",
        "merge_max_us",
        "writes",
        "write_errors",
        "merge_leader_transfers",
    ] {
        assert!(v[field].is_number(), "{field} missing in {v}");
    }
    assert_eq!(v["split_samples"], 2, "{v}");
    assert_eq!(v["merge_samples"], 2, "{v}");
}

#[test]
fn kv_with_presplit_ranges() {
    let quasar = quasar();
    let out = run(
        &[
            "kv",
            "--spawn",
            "3",
            "--shards",
            "2",
            "--quasar-bin",
            quasar.to_str().expect("utf-8 path"),
            "--keys",
            "60",
            "--ranges",
            "3",
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
            "--concurrency",
            "2",
            "--json",
        ],
        Duration::from_secs(180),
    );
    let v = json_of(&out, "kv --ranges 3");
    assert_eq!(v["config"]["ranges"], 3);
    assert!(v["ops"].as_u64().expect("ops") > 0, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("split the key space into 3 ranges"), "{err}");
}

#[test]
fn bad_flags_name_the_flag() {
    let out = run(
        &["ranges", "--spawn", "3", "--keys", "1"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keys"));
    let out = run(
        &["kv", "--spawn", "3", "--keys", "5", "--ranges", "6"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ranges"));
}
