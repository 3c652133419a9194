//! `quasar-bench nemesis` at CI size: three real nodes under random kills (one, a minority,
//! all at once), pauses and partitions for 40 s, with splits, merges and leadership
//! transfers meanwhile. The run must pass its own checks (linearizable history, no lost
//! acknowledged write, monotonic versions, equal state hashes on every node); the test reads
//! its JSON line and checks that faults really happened and work really got done. Timings
//! are never asserted.

mod common;

use std::time::Duration;

use common::quasar;
use serde_json::Value;

#[test]
fn nemesis_finds_no_violation_on_three_nodes() {
    let seed = std::env::var("QUASAR_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let quasar = quasar();
    let seed_text = seed.to_string();
    let args = [
        "nemesis",
        "--nodes",
        "3",
        "--duration-secs",
        "40",
        "--seed",
        &seed_text,
        "--quasar-bin",
        quasar.to_str().expect("a UTF-8 path"),
        "--json",
    ];
    let out = common::run(&args, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nemesis failed (replay with QUASAR_NEMESIS_SEED={seed}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line:\n{stdout}\n{stderr}"));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON ({e}): {line}"));
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["seed"], seed, "{v}");
    assert!(
        v["kill_cycles"].as_u64().is_some_and(|k| k >= 1),
        "no kill happened: {v}"
    );
    assert!(
        v["fault_log"].as_array().is_some_and(|f| f.len() >= 5),
        "too few faults: {v}"
    );
    assert!(
        v["ops"]["writes_acked"].as_u64().is_some_and(|w| w >= 100),
        "too little work: {v}"
    );
    assert_eq!(
        v["final_reads"], v["keys"],
        "every key is read at the end: {v}"
    );
    for empty in [
        "linearizability_violations",
        "version_regressions",
        "invented_values",
    ] {
        assert_eq!(v[empty], serde_json::json!([]), "{empty}: {v}");
    }
    assert!(
        v["replicas_converged"]
            .as_str()
            .is_some_and(|s| s.starts_with("yes")),
        "{v}"
    );
}
