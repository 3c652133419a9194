//! The HTTP key-value API against a 3-node cluster of real `quasar start` processes on
//! loopback: every route, every error status, scans and transactions around a split, and a
//! follower forwarding to the leader ([`every_route_and_error_through_a_follower`]); then schemathesis, driven by
//! `node/openapi.json`, against the live server
//! ([`schemathesis_finds_no_server_error_or_schema_violation`], see
//! `node/tests/schemathesis.sh`). Every wait is bounded; the harness kills only the
//! processes it started.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, Cluster, USER_RANGE};
use quasar_rpc::client::AdminClient;
use quasar_rpc::message::RangeId;
use serde_json::{json, Value};

/// One HTTP answer: status, headers (names lower-cased), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request over a fresh connection (`Connection: close`), every socket call bounded.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Answer {
    http_raw(addr, method, path, body.map(str::as_bytes), None)
}

fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    declared_len: Option<u64>,
) -> Answer {
    let timeout = Duration::from_secs(30);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .expect("socket timeouts");
    let body = body.unwrap_or_default();
    let len = declared_len.unwrap_or(body.len() as u64);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let mut raw = Vec::new();
    // NOTE: a server that answers before reading a refused body may reset the connection
    // after its answer; what arrived before the reset is the answer.
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no end of headers in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Asserts the status and returns the JSON body.
#[track_caller]
fn expect(answer: Answer, status: u16) -> Value {
    assert_eq!(
        answer.status, status,
        "expected {status}, got {}: {}",
        answer.status, answer.body
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.json()
}

fn version(v: &Value) -> u64 {
    v["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {v}"))
}

#[test]
fn every_route_and_error_through_a_follower() {
    let mut cluster = Cluster::start(3, 2);
    let leader = cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let follower = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != leader)
        .expect("a follower");
    let f = cluster.node(follower).admin_addr();
    let l = cluster.node(leader).admin_addr();

    // The OpenAPI document.
    let doc = expect(http(f, "GET", "/openapi.json", None), 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')));

    // POST /command: SET, GET, DELETE, and their errors.
    let set = expect(
        http(
            f,
            "POST",
            "/command",
            Some(r#"{"type":"SET","key":"greeting","value":"hello"}"#),
        ),
        200,
    );
    assert_eq!(set["success"], true);
    assert_eq!(set["result"], "OK");
    let get = expect(
        http(
            f,
            "POST",
            "/command",
            Some(r#"{"type":"GET","key":"greeting"}"#),
        ),
        200,
    );
    assert_eq!(
        (&get["success"], &get["result"], &get["error"]),
        (&json!(true), &json!("hello"), &Value::Null)
    );
    assert_eq!(version(&get), version(&set));
    let del = expect(
        http(
            f,
            "POST",
            "/command",
            Some(r#"{"type":"DELETE","key":"greeting"}"#),
        ),
        200,
    );
    assert_eq!(del["success"], true);
    let missing = expect(
        http(
            f,
            "POST",
            "/command",
            Some(r#"{"type":"GET","key":"greeting"}"#),
        ),
        404,
    );
    assert_eq!(
        (&missing["success"], &missing["result"]),
        (&json!(false), &Value::Null)
    );
    assert!(missing["error"].as_str().is_some());
    let bad = expect(
        http(f, "POST", "/command", Some(r#"{"type":"SET","key":"k"}"#)),
        400,
    );
    assert_eq!(bad["success"], false);
    expect(http(f, "POST", "/command", Some("{not json")), 400);

    // PUT / GET / DELETE with versions and compare-and-set, sent to a follower: it forwards.
    let v1 = version(&expect(
        http(f, "PUT", "/v1/kv/dir/file", Some(r#"{"value":"one"}"#)),
        200,
    ));
    let got = expect(http(l, "GET", "/v1/kv/dir/file", None), 200);
    assert_eq!(
        (&got["key"], &got["value"]),
        (&json!("dir/file"), &json!("one"))
    );
    assert_eq!(version(&got), v1);
    let v2 = version(&expect(
        http(
            f,
            "PUT",
            &format!("/v1/kv/dir/file?if-version={v1}"),
            Some(r#"{"value":"two"}"#),
        ),
        200,
    ));
    assert!(v2 > v1);
    let conflict = expect(
        http(
            f,
            "PUT",
            &format!("/v1/kv/dir/file?if-version={v1}"),
            Some(r#"{"value":"x"}"#),
        ),
        409,
    );
    assert_eq!(conflict["current_version"], v2);
    assert_eq!(conflict["code"], "condition_failed");
    let conflict = expect(
        http(
            f,
            "PUT",
            "/v1/kv/dir/file?if-absent",
            Some(r#"{"value":"x"}"#),
        ),
        409,
    );
    assert_eq!(conflict["current_version"], v2);
    let conflict = expect(
        http(
            f,
            "DELETE",
            &format!("/v1/kv/dir/file?if-version={v1}"),
            None,
        ),
        409,
    );
    assert_eq!(conflict["current_version"], v2);
    let deleted = expect(
        http(
            f,
            "DELETE",
            &format!("/v1/kv/dir/file?if-version={v2}"),
            None,
        ),
        200,
    );
    assert_eq!(deleted["deleted"], true);
    assert!(version(&deleted) > v2);
    expect(http(f, "DELETE", "/v1/kv/dir/file", None), 404);
    let gone = expect(http(f, "GET", "/v1/kv/dir/file", None), 404);
    assert_eq!(gone["code"], "not_found");
    let created = expect(
        http(
            f,
            "PUT",
            "/v1/kv/dir/file?if-absent",
            Some(r#"{"value":"three"}"#),
        ),
        200,
    );
    assert!(version(&created) > version(&deleted));

    // Percent-encoded keys, and base64 keys and values (bytes that are not UTF-8).
    expect(
        http(f, "PUT", "/v1/kv/a%20b%3Fc", Some(r#"{"value":"sp"}"#)),
        200,
    );
    assert_eq!(
        expect(http(f, "GET", "/v1/kv/a%20b%3Fc", None), 200)["value"],
        "sp"
    );
    // key [0x01, 0xff], value [0xfe, 0x00]
    expect(
        http(
            f,
            "PUT",
            "/v1/kv/Af8%3D?encoding=base64",
            Some(r#"{"value":"/gA="}"#),
        ),
        200,
    );
    let binary = expect(http(f, "GET", "/v1/kv/Af8=?encoding=base64", None), 200);
    assert_eq!(
        (&binary["key"], &binary["value"]),
        (&json!("Af8="), &json!("/gA="))
    );
    // A value that is not UTF-8 is refused in the default encoding, with the fix named.
    expect(
        http(
            f,
            "PUT",
            "/v1/kv/Ymlu?encoding=base64",
            Some(r#"{"value":"/gA="}"#),
        ),
        200,
    );
    let not_utf8 = expect(http(f, "GET", "/v1/kv/bin", None), 400);
    assert!(not_utf8["error"]
        .as_str()
        .is_some_and(|e| e.contains("encoding=base64")));
    expect(http(f, "GET", "/v1/kv/%01%FF", None), 400);
    let cmd = expect(
        http(
            f,
            "POST",
            "/command?encoding=base64",
            Some(r#"{"type":"GET","key":"Af8="}"#),
        ),
        200,
    );
    assert_eq!(cmd["result"], "/gA=");

    // Read consistency: a follower read and a stale read on the follower see the write.
    let v = version(&expect(
        http(f, "PUT", "/v1/kv/fresh", Some(r#"{"value":"v"}"#)),
        200,
    ));
    let follower_read = expect(
        http(f, "GET", "/v1/kv/fresh?consistency=follower", None),
        200,
    );
    assert_eq!(version(&follower_read), v);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let a = http(f, "GET", "/v1/kv/fresh?consistency=stale", None);
            a.status == 200 && a.json()["version"] == v
        }),
        "a stale read on the follower never saw version {v}"
    );
    expect(
        http(f, "GET", "/v1/kv/fresh?consistency=eventual", None),
        400,
    );

    // Scans, page by page with the continue token.
    for i in 0..5 {
        expect(
            http(
                f,
                "PUT",
                &format!("/v1/kv/scan/{i}"),
                Some(&format!(r#"{{"value":"v{i}"}}"#)),
            ),
            200,
        );
    }
    let mut keys = Vec::new();
    let mut path = "/v1/kv?start=scan/&end=scan0&limit=2".to_owned();
    for _ in 0..10 {
        let page = expect(http(f, "GET", &path, None), 200);
        let entries = page["entries"].as_array().expect("entries");
        assert!(entries.len() <= 2, "{page}");
        assert_eq!(page["count"], entries.len());
        keys.extend(
            entries
                .iter()
                .map(|e| e["key"].as_str().expect("key").to_owned()),
        );
        match page["continue"].as_str() {
            Some(token) => path = format!("/v1/kv?end=scan0&limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(keys, ["scan/0", "scan/1", "scan/2", "scan/3", "scan/4"]);
    // Every key: the binary ones need base64.
    expect(http(f, "GET", "/v1/kv?limit=1000", None), 400);
    let all = expect(
        http(
            f,
            "GET",
            "/v1/kv?consistency=follower&limit=1000&encoding=base64",
            None,
        ),
        200,
    );
    assert_eq!(all["continue"], Value::Null);
    assert_eq!(all["count"], 10, "{all}");
    expect(http(f, "GET", "/v1/kv?limit=0", None), 400);
    expect(http(f, "GET", "/v1/kv?start=b&end=a", None), 400);
    expect(http(f, "GET", "/v1/kv?continue=not*base64", None), 400);

    // Split the user range at scan/2: scans cross the boundary, transactions may not.
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut admin = AdminClient::new(cluster.client_config(&ids));
    let (left, right) = admin
        .split(RangeId(USER_RANGE), b"scan/2")
        .unwrap_or_else(|e| panic!("split at scan/2: {e}"));
    assert_eq!(left.end, right.start);
    let mut keys = Vec::new();
    let mut path = "/v1/kv?start=scan/&end=scan0&limit=2".to_owned();
    for _ in 0..10 {
        let page = expect(http(f, "GET", &path, None), 200);
        let entries = page["entries"].as_array().expect("entries");
        keys.extend(
            entries
                .iter()
                .map(|e| e["key"].as_str().expect("key").to_owned()),
        );
        match page["continue"].as_str() {
            Some(token) => path = format!("/v1/kv?end=scan0&limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(keys, ["scan/0", "scan/1", "scan/2", "scan/3", "scan/4"]);
    let one_page = expect(http(f, "GET", "/v1/kv?start=scan/&end=scan0", None), 200);
    assert_eq!(one_page["count"], 5, "{one_page}");
    assert_eq!(one_page["continue"], Value::Null);
    let spans = expect(
        http(
            f,
            "POST",
            "/v1/txn",
            Some(
                r#"{"compares":[{"key":"scan/0","value":"v0"}],"then":[{"op":"put","key":"scan/3","value":"x"}]}"#,
            ),
        ),
        400,
    );
    assert!(
        spans["error"]
            .as_str()
            .is_some_and(|e| e.contains("spans ranges")),
        "{spans}"
    );

    // Transactions: the then branch, the else branch, and refusals.
    let txn = r#"{"compares":[{"key":"scan/2","value":"v2"},{"key":"txn/new","version":0}],
        "then":[{"op":"put","key":"txn/new","value":"made"},{"op":"get","key":"scan/3"},
                {"op":"delete","key":"scan/4"}],
        "else":[{"op":"get","key":"txn/new"}]}"#;
    let ran = expect(http(f, "POST", "/v1/txn", Some(txn)), 200);
    assert_eq!(ran["succeeded"], true, "{ran}");
    let results = ran["results"].as_array().expect("results");
    assert_eq!(results[1]["value"], "v3");
    assert_eq!(results[2]["found"], true);
    let made = expect(http(f, "GET", "/v1/kv/txn/new", None), 200);
    assert_eq!(version(&made), version(&ran));
    let other = expect(http(f, "POST", "/v1/txn", Some(txn)), 200);
    assert_eq!(other["succeeded"], false);
    assert_eq!(other["results"][0]["value"], "made");
    expect(http(f, "POST", "/v1/txn", Some("{}")), 400);
    expect(
        http(
            f,
            "POST",
            "/v1/txn",
            Some(r#"{"compares":[{"key":"a","version":1,"value":"v"}]}"#),
        ),
        400,
    );
    // A write to the node's system key space (keys starting with 0x00) is refused.
    expect(
        http(
            f,
            "PUT",
            "/v1/kv/AA==?encoding=base64",
            Some(r#"{"value":"x"}"#),
        ),
        400,
    );

    // 400, 405, 404 for the shape of the request.
    expect(
        http(f, "PUT", "/v1/kv/k?if_version=3", Some(r#"{"value":"x"}"#)),
        400,
    );
    expect(
        http(f, "PUT", "/v1/kv/k", Some(r#"{"value":"x","extra":1}"#)),
        400,
    );
    expect(http(f, "GET", "/v1/kv/", None), 400);
    let not_allowed = http(f, "POST", "/v1/kv/k", Some("{}"));
    assert_eq!(not_allowed.header("allow"), Some("GET, PUT, DELETE"));
    expect(not_allowed, 405);
    expect(http(f, "GET", "/v1/nothing", None), 404);
    // The admin routes are still there.
    assert_eq!(http(f, "GET", "/health", None).status, 200);

    // 413 with the limit: a value over 1 MiB, a key over 8 KiB, a body over 16 MiB.
    let big = format!(r#"{{"value":"{}"}}"#, "v".repeat((1 << 20) + 1));
    let too_large = expect(http(f, "PUT", "/v1/kv/big", Some(&big)), 413);
    assert_eq!(too_large["limit"], 1 << 20);
    assert_eq!(too_large["code"], "too_large");
    let long_key = format!(
        r#"{{"type":"SET","key":"{}","value":"v"}}"#,
        "k".repeat(9000)
    );
    let too_long = expect(http(f, "POST", "/command", Some(&long_key)), 413);
    assert_eq!(too_long["limit"], 8 << 10);
    let huge = expect(
        http_raw(f, "PUT", "/v1/kv/huge", Some(b""), Some(20 << 20)),
        413,
    );
    assert_eq!(huge["limit"], 16 << 20);

    // 503 with Retry-After: the two other nodes are gone, so no quorum is left.
    for id in [1, 2, 3] {
        if id != follower {
            cluster.node_mut(id).kill9();
        }
    }
    // A read is never ambiguous: 503, nothing done, come back later.
    let started = Instant::now();
    let unavailable = http(f, "GET", "/v1/kv/fresh", None);
    assert_eq!(
        unavailable.header("retry-after"),
        Some("1"),
        "{}",
        unavailable.body
    );
    let body = expect(unavailable, 503);
    assert_eq!(body["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "503 took {:?}",
        started.elapsed()
    );
    // A write sent to the dead leader over an open connection may have been applied before
    // it died: 504 (outcome unknown); one that surely never left answers 503.
    let write = http(f, "PUT", "/v1/kv/after", Some(r#"{"value":"x"}"#));
    assert!(
        matches!(write.status, 503 | 504),
        "{} {}",
        write.status,
        write.body
    );
    let code = write.json()["code"].clone();
    assert!(code == "unavailable" || code == "outcome_unknown", "{code}");
}

/// `node/tests/schemathesis.sh`.
fn schemathesis_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.sh")
}

#[test]
fn schemathesis_finds_no_server_error_or_schema_violation() {
    let script = schemathesis_script();
    // First: is schemathesis there at all? (No silent skip: the message says how to install.)
    let found = Command::new(&script)
        .arg("--find")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );

    let cluster = Cluster::start(3, 2);
    cluster.wait_leader(USER_RANGE, Duration::from_secs(10));
    let url = format!("http://{}", cluster.node(1).admin_addr());
    // Its reports and Hypothesis's database go to a temporary folder, not the repository.
    let work = tempfile::tempdir().expect("a temp dir");
    let log_path = work.path().join("schemathesis.log");
    let log = std::fs::File::create(&log_path).expect("create the log");
    let mut child = Command::new(&script)
        .arg(&url)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    // The script bounds itself (150 s); this bound only guards against a wedged script.
    let deadline = Instant::now() + Duration::from_secs(200);
    let status = loop {
        match child.try_wait().expect("wait for schemathesis") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                // NOTE: kills the child this test started, by its PID; it may have just exited.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(120).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    match status {
        Some(s) if s.success() => eprintln!("{tail}"),
        Some(s) => panic!(
            "schemathesis found problems ({s}) against {url}; reproduce with \
             node/tests/schemathesis.sh against a running node:\n{tail}"
        ),
        None => panic!("schemathesis did not finish in 200 s:\n{tail}"),
    }
}
