//! `quasar-bench fsmeta` and `failover` against three spawned `quasar` nodes, at tiny sizes.
//! Counts are checked (every created file found by stat and readdir, gone after unlink; each
//! kill followed by a new leader and successful writes), never timing.
//!
//! Needs the `quasar` binary next to `quasar-bench` (`cargo build -p quasar-node`, or
//! `cargo test --workspace`, which builds it).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{bench, quasar};

use serde_json::Value;

/// Runs `quasar-bench ARGS --spawn 3 --shards 1 --quasar-bin ...`, killing it after
/// `limit`. The limit is generous and only guards against a hang: the bench stops its nodes
/// itself when it ends, but a SIGKILLed bench cannot (its nodes would outlive it).
fn run(args: &[&str], limit: Duration) -> Output {
    let quasar = quasar();
    let quasar = quasar.to_str().expect("a UTF-8 path");
    let mut all = args.to_vec();
    all.extend(["--spawn", "3", "--shards", "1", "--quasar-bin", quasar]);
    common::run(&all, limit)
}

fn json_line(args: &[&str], limit: Duration) -> Value {
    let out = run(args, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quasar-bench {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in the output of {args:?}:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"))
}

#[test]
fn fsmeta_creates_finds_renames_and_removes_every_file() {
    let v = json_line(
        &[
            "fsmeta",
            "--dirs",
            "2",
            "--files-per-dir",
            "5",
            "--concurrency",
            "2",
            "--json",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(v["benchmark"], "fsmeta");
    assert_eq!(v["config"]["dirs"], 2);
    assert!(v["env"]["commit"].is_string(), "{v}");
    let phases = v["phases"].as_array().expect("a phases array");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["mkdir", "create", "stat", "readdir", "rename", "unlink"]
    );
    for p in phases {
        for field in [
            "ops",
            "failed",
            "ops_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(p[field].is_number(), "phase lacks {field}: {p}");
        }
        assert_eq!(p["failed"], 0, "{p}");
    }
    let ops = |name: &str| {
        phases
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["ops"].as_u64())
    };
    assert_eq!(ops("create"), Some(10));
    assert_eq!(ops("stat"), Some(10));
    assert_eq!(ops("readdir"), Some(2));
    assert_eq!(ops("unlink"), Some(10));
    let check = &v["check"];
    assert_eq!(check["created"], 10, "{check}");
    assert_eq!(check["stat_found"], 10, "{check}");
    assert_eq!(check["readdir_entries"], 10, "{check}");
    assert_eq!(check["renamed"], 10, "{check}");
    assert_eq!(check["unlinked"], 10, "{check}");
    assert_eq!(check["remaining_entries"], 0, "{check}");
    assert_eq!(check["consistent"], true, "{check}");
}

#[test]
fn failover_kills_the_leader_and_writes_resume() {
    let v = json_line(
        &[
            "failover",
            "--kills",
            "1",
            "--rate",
            "50",
            "--interval-secs",
            "1",
            "--down-secs",
            "1",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(v["benchmark"], "failover");
    let kills = v["kills"].as_array().expect("a kills array");
    assert_eq!(kills.len(), 1, "{v}");
    let k = &kills[0];
    assert!(k["killed"].is_u64(), "{k}");
    assert!(
        k["new_leader"].is_u64() && k["new_leader"] != k["killed"],
        "{k}"
    );
    assert!(k["time_to_leader_ms"].is_number(), "{k}");
    assert!(k["unavailable_ms"].is_number(), "{k}");
    for field in [
        "unavailable_p50_us",
        "unavailable_p99_us",
        "unavailable_max_us",
        "time_to_leader_p50_us",
        "time_to_leader_max_us",
    ] {
        assert!(v[field].is_number(), "no {field}: {v}");
    }
    assert_eq!(v["unavailable_samples"], 1, "{v}");
    assert!(v["writes_ok"].as_u64().is_some_and(|n| n > 0), "{v}");
}

#[test]
fn failover_refuses_endpoints() {
    let out = Command::new(bench())
        .args(["failover", "--endpoints", "127.0.0.1:1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("quasar-bench runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--spawn 3"), "{stderr}");
}
