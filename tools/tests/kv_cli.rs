//! `quasarctl kv ...` and `quasarctl status` against a fake cluster that speaks the real rpc
//! protocol (`common::FakeCluster`): output in both modes, exit statuses, discovery, the
//! `NotLeader` redirect, and the one-line error contract.

mod common;

use common::{quasarctl, FakeCluster, Run, FIRST_NODE};
use quasar_rpc::message::{Member, MemberState, NodeId};

/// A loopback address that was just free: nothing listens there.
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs quasarctl against `endpoint` with a short per-attempt timeout.
fn ctl(endpoint: &str, args: &[&str]) -> Run {
    let mut all = vec!["--endpoints", endpoint, "--timeout", "2"];
    all.extend_from_slice(args);
    quasarctl(&all, &[])
}

#[test]
fn put_get_delete_in_table_mode() {
    let fake = FakeCluster::start("quasar", 1, 0);
    let ep = fake.endpoint(0);

    let put = ctl(ep, &["kv", "put", "greeting", "hello world"]);
    assert_eq!(put.code, 0, "{put:?}");
    assert_eq!(put.stdout, "OK (version 1)\n");
    assert!(put.stderr.is_empty(), "{put:?}");

    let get = ctl(ep, &["kv", "get", "greeting"]);
    assert_eq!(get.code, 0, "{get:?}");
    let lines: Vec<&str> = get.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{get:?}");
    assert!(lines[0].starts_with("KEY"), "{get:?}");
    assert!(lines[1].starts_with("greeting  hello world  1"), "{get:?}");

    // Non-ASCII bytes print escaped in a table.
    let put = ctl(ep, &["kv", "put", "k\u{e9}", "v\u{e9}"]);
    assert_eq!(put.code, 0, "{put:?}");
    let get = ctl(ep, &["kv", "get", "k\u{e9}"]);
    assert!(get.stdout.contains("k\\xc3\\xa9  v\\xc3\\xa9"), "{get:?}");

    let del = ctl(ep, &["kv", "delete", "greeting"]);
    assert_eq!(del.code, 0, "{del:?}");
    assert!(del.stdout.starts_with("deleted (version"), "{del:?}");

    let missing = ctl(ep, &["kv", "get", "greeting"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(missing.stdout, "(not found)\n");
    assert!(missing.stderr.is_empty(), "{missing:?}");

    // Deleting a missing key is not an error.
    let del = ctl(ep, &["kv", "del", "greeting"]);
    assert_eq!(del.code, 0, "{del:?}");
    assert!(del.stdout.starts_with("(not found)"), "{del:?}");
}

#[test]
fn put_get_delete_in_json_mode() {
    let fake = FakeCluster::start("quasar", 1, 0);
    let ep = fake.endpoint(0);

    let put = ctl(ep, &["-o", "json", "kv", "put", "k", "v\u{e9}"]).json();
    assert_eq!(put, serde_json::json!({"key": "k", "version": 1}));

    let get = ctl(ep, &["kv", "get", "k", "-o", "json"]);
    assert_eq!(get.code, 0, "{get:?}");
    assert_eq!(
        get.json(),
        serde_json::json!({"key": "k", "found": true, "value": "v\u{e9}", "version": 1})
    );

    let del = ctl(ep, &["kv", "delete", "k", "-o", "json"]).json();
    assert_eq!(del["found"], true);
    assert_eq!(del["version"], 2);

    let missing = ctl(ep, &["kv", "get", "k", "-o", "json"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(missing.json()["found"], false);
}

#[test]
fn scan_pages_limits_and_bounds() {
    let fake = FakeCluster::start("quasar", 1, 0);
    let ep = fake.endpoint(0);
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(ctl(ep, &["kv", "put", k, &format!("v{k}")]).code, 0);
    }

    // Pages of 2, followed through resume keys.
    let all = ctl(ep, &["kv", "scan", "--page-size", "2"]);
    assert_eq!(all.code, 0, "{all:?}");
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{all:?}");
    assert_eq!(words(lines[1]), ["a", "va", "1"], "{all:?}");
    assert_eq!(words(lines[5]), ["e", "ve", "5"], "{all:?}");
    assert_eq!(lines[6], "(5 keys)");

    let bounded = ctl(ep, &["kv", "scan", "b", "d", "-o", "json"]).json();
    assert_eq!(bounded["count"], 2);
    assert_eq!(bounded["entries"][0]["key"], "b");
    assert_eq!(bounded["entries"][1]["key"], "c");
    assert_eq!(bounded["resume_key"], serde_json::Value::Null);

    let limited = ctl(
        ep,
        &[
            "kv",
            "scan",
            "--limit",
            "3",
            "--page-size",
            "2",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(limited["count"], 3);
    assert_eq!(limited["resume_key"], "d");

    let limited = ctl(ep, &["kv", "scan", "--limit", "3"]);
    assert!(
        limited
            .stdout
            .ends_with("(3 keys; limit reached, more from d)\n"),
        "{limited:?}"
    );

    let bad = ctl(ep, &["kv", "scan", "d", "b"]);
    bad.assert_one_line_error();
}

#[test]
fn cas_txn_and_incr() {
    let fake = FakeCluster::start("quasar", 1, 0);
    let ep = fake.endpoint(0);

    let first = ctl(ep, &["kv", "cas", "lock", "owner-1", "--expect-absent"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "OK (version 1)\n");

    let second = ctl(ep, &["kv", "cas", "lock", "owner-2", "--expect-absent"]);
    assert_eq!(second.code, 1, "{second:?}");
    assert_eq!(second.stdout, "condition failed: lock is at version 1\n");

    let by_version = ctl(
        ep,
        &[
            "kv",
            "cas",
            "lock",
            "owner-2",
            "--expect-version",
            "1",
            "-o",
            "json",
        ],
    );
    assert_eq!(by_version.code, 0, "{by_version:?}");
    assert_eq!(by_version.json()["succeeded"], true);

    let by_value = ctl(
        ep,
        &[
            "kv",
            "cas",
            "lock",
            "x",
            "--expect-value",
            "owner-1",
            "-o",
            "json",
        ],
    );
    assert_eq!(by_value.code, 1, "{by_value:?}");
    assert_eq!(by_value.json()["current_version"], 2);

    let txn = ctl(
        ep,
        &[
            "kv",
            "txn",
            "--if",
            "lock = owner-2",
            "--if",
            "lock version = 2",
            "--then",
            "put:a:1",
            "--then",
            "get:lock",
            "--else",
            "del:lock",
        ],
    );
    assert_eq!(txn.code, 0, "{txn:?}");
    assert_eq!(
        txn.stdout,
        "SUCCESS (version 3)\nput a: OK\nget lock: owner-2 (version 2)\n"
    );

    let txn = ctl(
        ep,
        &[
            "-o",
            "json",
            "kv",
            "txn",
            "--if",
            "lock = nobody",
            "--then",
            "del:lock",
            "--else",
            "get:a",
        ],
    );
    assert_eq!(txn.code, 1, "{txn:?}");
    let doc = txn.json();
    assert_eq!(doc["succeeded"], false);
    assert_eq!(doc["results"][0]["value"], "1");

    let bad = ctl(ep, &["kv", "txn", "--if", "lock ~ x", "--then", "get:a"]);
    bad.assert_one_line_error();

    assert_eq!(ctl(ep, &["kv", "incr", "n"]).stdout, "1 (version 4)\n");
    let n = ctl(ep, &["kv", "incr", "n", "--by", "-5", "-o", "json"]).json();
    assert_eq!(n["value"], -4);
}

#[test]
fn status_in_both_modes() {
    let fake = FakeCluster::start("quasar", 2, 0);
    let both = format!("{},{}", fake.endpoint(0), fake.endpoint(1));
    assert_eq!(ctl(&both, &["kv", "put", "k", "v"]).code, 0);

    let table = ctl(&both, &["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    let text = &table.stdout;
    assert!(
        text.starts_with("cluster quasar (2 members, 2 ranges)"),
        "{table:?}"
    );
    let lines: Vec<Vec<&str>> = text.lines().map(words).collect();
    let node7 = [
        "7",
        fake.endpoint(0),
        "active",
        "1",
        "2",
        "2",
        "1h02m05s",
        "2.5",
    ];
    assert!(lines.iter().any(|l| *l == node7), "{table:?}");
    let range2 = ["2", "2", "[\"\\x01\",", "+inf)", "1", "7,8", "7", "1"];
    assert!(lines.iter().any(|l| *l == range2), "{table:?}");

    let doc = ctl(&both, &["status", "-o", "json"]);
    assert_eq!(doc.code, 0, "{doc:?}");
    let doc = doc.json();
    assert_eq!(doc["cluster_id"], "quasar");
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(2));
    assert_eq!(doc["nodes"][0]["node_id"], FIRST_NODE);
    assert_eq!(doc["nodes"][0]["leaders"], 2);
    assert_eq!(doc["nodes"][1]["leaders"], 0);
    assert_eq!(doc["nodes"][1]["shards"][0]["wal_bytes"], 4096);
    assert_eq!(doc["nodes"][1]["shards"][0]["cpu_micros"], 2_100_000);
    assert_eq!(doc["nodes"][1]["cpu_user_micros"], 2_000_000);
    assert_eq!(doc["ranges"][1]["start"], "\\x01");
    assert_eq!(doc["ranges"][1]["end"], "");
    assert_eq!(doc["ranges"][1]["leader"], FIRST_NODE);
    assert_eq!(doc["ranges"][1]["replicas"][1]["role"], "voter");
}

#[test]
fn status_reports_a_member_that_is_down() {
    let fake = FakeCluster::start_with(
        "quasar",
        1,
        0,
        vec![Member {
            node: NodeId(99),
            address: free_addr(),
            state: MemberState::Unreachable,
        }],
    );
    let table = ctl(fake.endpoint(0), &["status"]);
    assert_eq!(table.code, 1, "{table:?}");
    let down = table
        .stdout
        .lines()
        .find(|l| l.starts_with("99 "))
        .unwrap_or_else(|| panic!("no row for node 99: {table:?}"));
    assert!(down.contains("unreachable  error: "), "{table:?}");
    assert!(table.stdout.contains("RANGE"), "{table:?}");

    let doc = ctl(fake.endpoint(0), &["-o", "json", "status"]);
    assert_eq!(doc.code, 1, "{doc:?}");
    let doc = doc.json();
    assert_eq!(doc["nodes"][1]["node_id"], 99);
    assert!(doc["nodes"][1]["error"].is_string(), "{doc}");
    assert_eq!(doc["nodes"][0]["groups"], 2);
}

#[test]
fn a_follower_endpoint_redirects_to_the_leader() {
    // Node 7 follows, node 8 leads; only the follower is named.
    let fake = FakeCluster::start("quasar", 2, 1);
    let follower = fake.endpoint(0);
    let put = ctl(follower, &["kv", "put", "k", "v"]);
    assert_eq!(put.code, 0, "{put:?}");
    let get = ctl(follower, &["-o", "json", "kv", "get", "k"]);
    assert_eq!(get.json()["value"], "v");
    assert!(fake.hits(FIRST_NODE) >= 1, "the follower was asked first");
    assert!(fake.hits(FIRST_NODE + 1) >= 2);
}

#[test]
fn endpoints_and_cluster_from_the_environment() {
    let fake = FakeCluster::start("prod", 1, 0);
    let run = quasarctl(
        &["kv", "put", "k", "v"],
        &[
            ("QUASAR_ENDPOINTS", fake.endpoint(0)),
            ("QUASAR_CLUSTER_ID", "prod"),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");

    // The wrong cluster name is refused at the handshake: one line, exit 2.
    let wrong = ctl(fake.endpoint(0), &["kv", "get", "k"]);
    wrong.assert_one_line_error();
    assert!(wrong.stderr.contains("refused"), "{wrong:?}");
}

#[test]
fn unreachable_endpoints_fail_with_one_line() {
    let dead = free_addr();
    let run = ctl(&format!("{dead},not-an-address"), &["kv", "get", "k"]);
    run.assert_one_line_error();
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.starts_with(&format!(
            "quasarctl: no endpoint answered ({dead},not-an-address)"
        )),
        "{run:?}"
    );

    // A live endpoint after a dead one is found.
    let fake = FakeCluster::start("quasar", 1, 0);
    let run = ctl(&format!("{dead},{}", fake.endpoint(0)), &["status"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn bad_flags_exit_2() {
    let run = quasarctl(&["kv", "get", "k", "--no-such-flag"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = quasarctl(&["kv", "cas", "k", "v"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = quasarctl(&["-o", "yaml", "status"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    // The offline `wal` commands keep their own `-o`.
    let run = quasarctl(
        &["wal", "check", "--dir", "/nonexistent/quasar", "-o", "json"],
        &[],
    );
    run.assert_one_line_error();
}
