//! `quasar-bench kv` and `merge` end to end: the built binary against a `--spawn 3` cluster
//! of the built `quasar` binary, tiny sizes. No figure is asserted, only the shape of the
//! output (JSON fields, an SVG, an interval log whose merge adds the counts).
//!
//! Needs `target/<profile>/quasar` (`cargo build -p quasar-node`; `cargo test --workspace`
//! builds it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json_of, quasar, run};

/// One tiny run; returns its JSON and checks the outputs exist.
fn kv_run(dir: &Path, name: &str, workload: &str, client: &str) -> serde_json::Value {
    let quasar = quasar();
    let log = dir.join(format!("{name}.hlog"));
    let svg = dir.join(format!("{name}.svg"));
    let out = run(
        &[
            "kv",
            "--client",
            client,
            "--spawn",
            "3",
            "--shards",
            "1",
            "--quasar-bin",
            quasar.to_str().expect("utf-8 path"),
            "--workload",
            workload,
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
            "--concurrency",
            "2",
            "--keys",
            "50",
            "--json",
            "--hdr-log",
            log.to_str().expect("utf-8 path"),
            "--plot",
            svg.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(120),
    );
    let v = json_of(&out, &format!("kv --workload {workload}"));
    for field in [
        "ops_per_sec",
        "errors",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "nodes",
    ] {
        assert!(v[field].is_number(), "{field} missing in {v}");
    }
    assert_eq!(v["benchmark"], "kv");
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["config"]["workload"], workload);
    assert_eq!(v["config"]["client"], client);
    assert!(v["env"]["commit"].is_string() && v["env"]["cores"].is_number());
    assert!(
        v["ops"].as_u64().expect("ops") > 0,
        "no request succeeded: {v}"
    );
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(
        text.starts_with("<svg") || text.starts_with("<?xml"),
        "not an SVG: {}",
        &text[..text.len().min(80)]
    );
    assert!(log.is_file(), "the hdr log was written");
    v
}

#[test]
fn write_run_and_merge_of_two_logs_adds_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = kv_run(dir.path(), "a", "write", "async");
    let b = kv_run(dir.path(), "b", "write", "blocking");
    let out = run(
        &[
            "merge",
            dir.path().join("a.hlog").to_str().expect("utf-8"),
            dir.path().join("b.hlog").to_str().expect("utf-8"),
            "--json",
        ],
        Duration::from_secs(20),
    );
    let m = json_of(&out, "merge");
    let ops = |v: &serde_json::Value| v["ops"].as_u64().expect("ops");
    let errors = |v: &serde_json::Value| v["errors"].as_u64().expect("errors");
    assert_eq!(ops(&m), ops(&a) + ops(&b), "{m}");
    assert_eq!(errors(&m), errors(&a) + errors(&b), "{m}");
    assert!(m["p99_us"].is_number() && m["max_us"].is_number());
    assert_eq!(
        m["ops_by_kind"]["update"].as_u64(),
        Some(ops(&m)),
        "every write is an update: {m}"
    );
    assert!(m["max_us"].as_u64() >= a["max_us"].as_u64().max(b["max_us"].as_u64()));
}

#[test]
fn read_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    kv_run(dir.path(), "read", "read", "async");
}

#[test]
fn ycsb_f_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Read-modify-writes: a get, then a compare-and-set at the version read.
    let v = kv_run(dir.path(), "f", "ycsb-f", "async");
    assert!(v["ops_by_kind"].is_object(), "{v}");
    assert!(
        v["ops_by_kind"]["rmw"].as_u64() > Some(0),
        "no read-modify-write: {v}"
    );
    assert!(v["latency_by_kind"]["read"]["p99_us"].is_number(), "{v}");
}

#[test]
fn bad_flags_name_the_flag() {
    let out = run(
        &["kv", "--spawn", "3", "--read-ratio", "2"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--read-ratio"), "{err}");
    let out = run(
        &["kv", "--spawn", "3", "--workers-per-session", "65"],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers-per-session 65"), "{err}");
    let out = run(&["kv"], Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--endpoints") && err.contains("--spawn"),
        "{err}"
    );
}
