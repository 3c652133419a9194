//! `quasarctl range ...` and `quasarctl node list` against the fake cluster
//! (`common::FakeCluster`, whose range table splits, merges and moves leaders): JSON fields,
//! dry runs that change nothing, `--yes` required from a script, refusals on one line with
//! exit 1, and a merge that first moves the right range's leadership to the left's leader.

mod common;

use common::{quasarctl, FakeCluster, Run, FIRST_NODE};
use quasar_rpc::message::{
    GroupId, Member, MemberState, NodeId, RangeDescriptor, RangeEpoch, RangeId, RequestError,
};

fn ctl(fake: &FakeCluster, args: &[&str]) -> Run {
    let mut all = vec!["--endpoints", fake.endpoint(0), "--timeout", "2"];
    all.extend_from_slice(args);
    quasarctl(&all, &[])
}

/// Asserts a refusal: exit 1, one `quasarctl: ` line on stderr containing `needle`.
fn assert_refused(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.starts_with("quasarctl: "), "{run:?}");
    assert!(run.stderr.contains(needle), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn list_in_json_has_every_field_and_table_has_a_header() {
    let fake = FakeCluster::start("quasar", 3, 1);
    let run = ctl(&fake, &["-o", "json", "range", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    let ranges = v.as_array().expect("a JSON array");
    assert_eq!(ranges.len(), 2, "{v}");
    for r in ranges {
        for field in ["id", "group", "epoch", "leader"] {
            assert!(r[field].is_u64(), "{field} in {r}");
        }
        assert!(r["start"].is_string() && r["end"].is_string(), "{r}");
        let replicas = r["replicas"].as_array().expect("replicas");
        assert_eq!(replicas.len(), 3, "{r}");
        assert_eq!(replicas[0]["node"], FIRST_NODE);
        assert_eq!(replicas[0]["role"], "voter");
        assert_eq!(r["leader"], FIRST_NODE + 1);
    }
    assert_eq!(ranges[1]["id"], 2);
    assert_eq!(ranges[1]["start"], "\\x01");
    assert_eq!(ranges[1]["end"], "");

    let run = ctl(&fake, &["range", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(lines[0].starts_with("RANGE  GROUP  SPAN"), "{run:?}");

    let show = ctl(&fake, &["-o", "json", "range", "show", "2"]).json();
    assert_eq!(show["id"], 2);
    assert_eq!(show["group"], 2);
    let missing = ctl(&fake, &["range", "show", "99"]);
    assert_refused(&missing, "no range 99");
}

#[test]
fn dry_runs_print_the_plan_and_change_nothing() {
    let fake = FakeCluster::start("quasar", 3, 0);
    let before = fake.ranges();
    let split = ctl(&fake, &["range", "split", "2", "--at", "m", "--dry-run"]);
    assert_eq!(split.code, 0, "{split:?}");
    assert!(
        split.stdout.contains("new id assigned by the server"),
        "{split:?}"
    );
    assert!(split.stdout.contains("[\"\\x01\", \"m\")"), "{split:?}");
    assert!(
        split.stdout.ends_with("dry run: nothing changed\n"),
        "{split:?}"
    );

    let json = ctl(
        &fake,
        &["-o", "json", "range", "split", "--key", "q", "--dry-run"],
    );
    let v = json.json();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["predicted"]["left"]["id"], 2);
    assert_eq!(v["predicted"]["left"]["end"], "q");
    assert!(v["predicted"]["right"]["id"].is_null(), "{v}");
    assert_eq!(v["predicted"]["right"]["start"], "q");

    for args in [
        &["range", "merge", "1", "--dry-run"][..],
        &["range", "transfer-leader", "2", "--to", "8", "--dry-run"],
    ] {
        let run = ctl(&fake, args);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("dry run: nothing changed"), "{run:?}");
    }
    assert_eq!(fake.ranges(), before);
    assert!(fake.admin_log().is_empty(), "{:?}", fake.admin_log());
}

#[test]
fn changes_from_a_script_need_yes() {
    let fake = FakeCluster::start("quasar", 1, 0);
    for args in [
        &["range", "split", "2", "--at", "m"][..],
        &["range", "split", "--key", "m"],
        &["range", "merge", "1"],
        &["range", "transfer-leader", "2", "--to", "7"],
    ] {
        let run = ctl(&fake, args);
        run.assert_one_line_error();
        assert!(
            run.stderr
                .contains("add --yes to change ranges from a script"),
            "{run:?}"
        );
    }
    assert!(fake.admin_log().is_empty(), "{:?}", fake.admin_log());
    // Bad flag combinations are usage errors (exit 2), not requests.
    let run = ctl(&fake, &["range", "split", "2", "--key", "m", "--yes"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = ctl(&fake, &["range", "split", "2", "--yes"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn split_then_split_by_key() {
    let fake = FakeCluster::start("quasar", 3, 2);
    let run = ctl(&fake, &["range", "split", "2", "--at", "m", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("split: range 2"), "{run:?}");
    let run = ctl(
        &fake,
        &["-o", "json", "range", "split", "--key", "q", "--yes"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v["left"]["id"], 3);
    assert_eq!(v["right"]["start"], "q");
    let spans: Vec<(u64, Vec<u8>, Vec<u8>)> = fake
        .ranges()
        .into_iter()
        .map(|(id, s, e, _, _)| (id, s, e))
        .collect();
    assert_eq!(
        spans,
        vec![
            (1, b"".to_vec(), b"\x01".to_vec()),
            (2, b"\x01".to_vec(), b"m".to_vec()),
            (3, b"m".to_vec(), b"q".to_vec()),
            (4, b"q".to_vec(), Vec::new()),
        ]
    );
    // Each went to the range's leader (node 9), though node 7 was the endpoint.
    let log = fake.admin_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter().all(|l| l.starts_with("node 9: SplitRange")),
        "{log:?}"
    );
}

#[test]
fn refusals_are_one_line_and_exit_1() {
    let fake = FakeCluster::start("quasar", 2, 0);
    fake.refuse_next(RequestError::Refused {
        reason: "range 2 is being snapshotted; retry in a minute".into(),
    });
    let run = ctl(&fake, &["range", "split", "2", "--at", "m", "--yes"]);
    assert_refused(&run, "refused: range 2 is being snapshotted");

    // A stale epoch: the range changed between the plan and the request.
    fake.refuse_next(RequestError::RangeMoved {
        descriptor: RangeDescriptor {
            id: RangeId(2),
            group: GroupId(2),
            start: b"\x01".to_vec(),
            end: Vec::new(),
            replicas: Vec::new(),
            epoch: RangeEpoch(5),
        },
    });
    let run = ctl(&fake, &["range", "split", "2", "--at", "m", "--yes"]);
    assert_refused(&run, "range 2 changed (epoch 5 now): re-run");

    fake.refuse_next(RequestError::ChangeInProgress { range: RangeId(2) });
    let run = ctl(
        &fake,
        &["range", "transfer-leader", "2", "--to", "8", "--yes"],
    );
    assert_refused(&run, "change in progress");

    // Refused before sending: a split key at the boundary, a node without a replica, the
    // last range has nothing to merge with.
    let run = ctl(&fake, &["range", "split", "2", "--at", "\u{1}", "--yes"]);
    assert_refused(&run, "not strictly inside range 2");
    let run = ctl(
        &fake,
        &["range", "transfer-leader", "2", "--to", "42", "--yes"],
    );
    assert_refused(&run, "node 42 holds no voting replica");
    let run = ctl(&fake, &["range", "merge", "2", "--yes"]);
    assert_refused(&run, "range 2 is the last range");
    assert_eq!(fake.admin_log().len(), 3, "{:?}", fake.admin_log());
    assert_eq!(fake.ranges().len(), 2);
}

#[test]
fn merge_moves_the_right_leadership_first_when_leaders_differ() {
    let fake = FakeCluster::start("quasar", 3, 0);
    let run = ctl(&fake, &["range", "split", "2", "--at", "m", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    fake.set_range_leader(3, 1);

    let plan = ctl(&fake, &["range", "merge", "2", "--dry-run"]);
    assert!(
        plan.stdout
            .contains("first: move range 3's leadership to node 7"),
        "{plan:?}"
    );
    let run = ctl(&fake, &["-o", "json", "range", "merge", "2", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v = run.json();
    assert_eq!(v["merged"]["id"], 2);
    assert_eq!(v["merged"]["end"], "");
    assert_eq!(
        v["transferred"],
        serde_json::json!({"range": 3, "from": 8, "to": 7})
    );
    assert_eq!(
        fake.admin_log(),
        vec![
            "node 7: SplitRange 2 at m epoch 1".to_string(),
            "node 8: TransferLeader 3 to 7".to_string(),
            "node 7: MergeRanges 2 epoch 2".to_string(),
        ]
    );
    assert_eq!(fake.ranges().len(), 2);

    // Same leader: the transfer is a no-op the leader answers at once (leadership views
    // lag, so the client does not trust them to skip it), and nothing is reported moved.
    ctl(&fake, &["range", "split", "2", "--at", "m", "--yes"]);
    let run = ctl(&fake, &["range", "merge", "2", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("moved"), "{run:?}");
    assert!(run.stdout.starts_with("merged: range 2"), "{run:?}");
    let log = fake.admin_log();
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(log[4], "node 7: TransferLeader 3 to 7", "{log:?}");
    assert!(log[5].starts_with("node 7: MergeRanges 2"), "{log:?}");
}

#[test]
fn transfer_leader_goes_to_the_leader() {
    let fake = FakeCluster::start("quasar", 3, 0);
    let run = ctl(
        &fake,
        &["range", "transfer-leader", "2", "--to", "9", "--yes"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "range 2 is led by node 9\n");
    assert_eq!(fake.admin_log(), vec!["node 7: TransferLeader 2 to 9"]);
    assert_eq!(fake.ranges()[1].4, 9);
}

#[test]
fn node_list_reports_reachability() {
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let fake = FakeCluster::start_with(
        "quasar",
        2,
        0,
        vec![Member {
            node: NodeId(42),
            address: down.clone(),
            state: MemberState::Unreachable,
        }],
    );
    let run = ctl(&fake, &["-o", "json", "node", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    let v = run.json();
    let nodes = v.as_array().expect("array");
    assert_eq!(nodes.len(), 3, "{v}");
    assert_eq!(nodes[0]["id"], FIRST_NODE);
    assert_eq!(nodes[0]["address"], fake.endpoint(0));
    assert_eq!(nodes[0]["reachable"], true);
    assert_eq!(nodes[1]["reachable"], true);
    assert_eq!(nodes[2]["id"], 42);
    assert_eq!(nodes[2]["address"], down);
    assert_eq!(nodes[2]["reachable"], false);
    assert!(nodes[2]["error"].is_string(), "{v}");

    let fake = FakeCluster::start("quasar", 2, 0);
    let run = ctl(&fake, &["node", "list"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("NODE  ADDRESS"), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 3, "{run:?}");
}
