//! Data-driven transcripts of the Raft core (`testdata/raft/*.txt`): each command drives the
//! in-process cluster and prints what the nodes did. `REWRITE=1` regenerates the expected
//! output; review the diff like code.
//!
//! Commands: `add-nodes n= [pre-vote=] [check-quorum=] [lease=] [inflight=] [max-entries=]
//! [snapshot-after=]`, `add-joining id=`, `campaign id=`, `tick id= [n=]`, `tick-all n=`,
//! `propose id= data=`, `conf-change id= voters=(..) [learners=(..)]`, `transfer id= target=`,
//! `read-index id= request=`, `process-ready id=(..)`, `deliver [to=(..)] [drop=true]`,
//! `stabilize`, `state`, `log id=`, `isolate id=`, `cut from= to=`, `heal`,
//! `crash-restart id=`, `compact id= index=`, `quiesce id=`, `wake id=`, `lease id=`.

mod raft_support;

use bytes::Bytes;
use datadriven::TestCase;
use quasar_shard::raft::{ConfState, LogIndex, NodeId, ReadRequestId, Restored};
use raft_support::{config, Cluster};
use std::fmt::Write;

fn run(cluster: &mut Option<Cluster>, tc: &mut TestCase) -> Result<String, String> {
    let e = |err: datadriven::DataDrivenError| err.to_string();
    if tc.directive == "add-nodes" {
        let n: u64 = tc.take_arg("n").map_err(e)?;
        let pre_vote = tc.try_take_arg::<bool>("pre-vote").map_err(e)?;
        let check_quorum = tc.try_take_arg::<bool>("check-quorum").map_err(e)?;
        let lease = tc.try_take_arg::<u32>("lease").map_err(e)?;
        let inflight = tc.try_take_arg::<usize>("inflight").map_err(e)?;
        let max_entries = tc.try_take_arg::<usize>("max-entries").map_err(e)?;
        let snapshot_after = tc.try_take_arg::<u64>("snapshot-after").map_err(e)?;
        let c = Cluster::new(n, 42, |cfg| {
            if let Some(v) = pre_vote {
                cfg.pre_vote = v;
            }
            if let Some(v) = check_quorum {
                cfg.check_quorum = v;
                if !v {
                    cfg.lease_ticks = 0;
                }
            }
            if let Some(v) = lease {
                cfg.lease_ticks = v;
            }
            if let Some(v) = inflight {
                cfg.max_inflight_msgs = v;
            }
            if let Some(v) = max_entries {
                cfg.max_entries_per_msg = v;
            }
            if let Some(v) = snapshot_after {
                cfg.snapshot_after_entries = v;
            }
        });
        let out = c.state();
        *cluster = Some(c);
        return Ok(out);
    }
    let c = cluster.as_mut().ok_or("add-nodes first")?;
    let mut out = String::new();
    match tc.directive.as_str() {
        "add-joining" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.add_peer(id, config(id), Restored::joining());
            out = c.state();
        }
        "campaign" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.node_mut(id).campaign();
            out = c.state();
        }
        "tick" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let n: u32 = tc.try_take_arg("n").map_err(e)?.unwrap_or(1);
            for _ in 0..n {
                c.node_mut(id).tick();
            }
            out = c.state();
        }
        "tick-all" => {
            let n: u32 = tc.take_arg("n").map_err(e)?;
            c.tick_all(n);
            out = c.state();
        }
        "propose" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let data: String = tc.take_arg("data").map_err(e)?;
            match c.node_mut(id).propose(Bytes::from(data)) {
                Ok(i) => writeln!(out, "index {}", i.0).map_err(|e| e.to_string())?,
                Err(err) => writeln!(out, "error: {err}").map_err(|e| e.to_string())?,
            }
        }
        "conf-change" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let voters: Vec<u64> = tc.take_args("voters").map_err(e)?;
            let learners: Vec<u64> = tc.try_take_args("learners").map_err(e)?.unwrap_or_default();
            let mut target = ConfState::with_voters(voters.into_iter().map(NodeId));
            target.learners = learners.into_iter().map(NodeId).collect();
            match c.node_mut(id).propose_conf_change(&target) {
                Ok(i) => writeln!(out, "index {}", i.0).map_err(|e| e.to_string())?,
                Err(err) => writeln!(out, "error: {err}").map_err(|e| e.to_string())?,
            }
        }
        "transfer" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let target: u64 = tc.take_arg("target").map_err(e)?;
            match c.node_mut(id).transfer_leader(NodeId(target)) {
                Ok(()) => out.push_str("ok\n"),
                Err(err) => writeln!(out, "error: {err}").map_err(|e| e.to_string())?,
            }
        }
        "read-index" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let request: u64 = tc.take_arg("request").map_err(e)?;
            match c.node_mut(id).read_index(ReadRequestId(request)) {
                Ok(()) => out.push_str("ok\n"),
                Err(err) => writeln!(out, "error: {err}").map_err(|e| e.to_string())?,
            }
        }
        "process-ready" => {
            let ids: Vec<u64> = tc.take_args("id").map_err(e)?;
            for id in ids {
                match c.process_ready(id) {
                    Some(text) => out.push_str(&text),
                    None => writeln!(out, "n{id}: nothing").map_err(|e| e.to_string())?,
                }
            }
        }
        "deliver" => {
            let to: Vec<u64> = tc.try_take_args("to").map_err(e)?.unwrap_or_default();
            let drop = tc.try_take_arg::<bool>("drop").map_err(e)?.unwrap_or(false);
            if drop {
                let before = c.queue.len();
                c.queue.retain(|m| !(to.is_empty() || to.contains(&m.to.0)));
                writeln!(out, "dropped {}", before - c.queue.len()).map_err(|e| e.to_string())?;
            } else {
                for line in c.deliver(&to) {
                    writeln!(out, "deliver {line}").map_err(|e| e.to_string())?;
                }
            }
        }
        "stabilize" => {
            c.stabilize(&mut out);
            out.push_str(&c.state());
        }
        "state" => out = c.state(),
        "log" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let n = c.node(id);
            writeln!(out, "snapshot {}", n.snapshot().last).map_err(|e| e.to_string())?;
            let mut i = n.first_index();
            while let Some(entry) = n.entry(i) {
                writeln!(out, "{} {:?} {:?}", entry.id(), entry.kind, entry.data)
                    .map_err(|e| e.to_string())?;
                i = i.next();
            }
        }
        "isolate" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.isolate(id);
            out.push_str("ok\n");
        }
        "cut" => {
            let from: u64 = tc.take_arg("from").map_err(e)?;
            let to: u64 = tc.take_arg("to").map_err(e)?;
            c.cut.insert((from, to));
            out.push_str("ok\n");
        }
        "heal" => {
            c.heal();
            out.push_str("ok\n");
        }
        "crash-restart" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.crash_restart(id);
            out = c.state();
        }
        "compact" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            let index: u64 = tc.take_arg("index").map_err(e)?;
            match c.compact(id, LogIndex(index)) {
                Ok(()) => out.push_str("ok\n"),
                Err(err) => writeln!(out, "error: {err}").map_err(|e| e.to_string())?,
            }
        }
        "quiesce" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.node_mut(id).quiesce();
            out.push_str("ok\n");
        }
        "wake" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            c.node_mut(id).wake();
            out.push_str("ok\n");
        }
        "lease" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            writeln!(out, "{}", c.node(id).has_lease()).map_err(|e| e.to_string())?;
        }
        "reads" => {
            let id: u64 = tc.take_arg("id").map_err(e)?;
            for r in &c.peers[&id].reads {
                writeln!(out, "request={} index={}", r.request.0, r.index.0)
                    .map_err(|e| e.to_string())?;
            }
        }
        other => return Err(format!("unknown command {other}")),
    }
    if out.is_empty() {
        out.push_str("ok\n");
    }
    Ok(out)
}

#[test]
fn raft_transcripts() {
    datadriven::walk("tests/testdata/raft", |f| {
        let mut cluster = None;
        f.run(|tc| -> Result<String, String> {
            let out = run(&mut cluster, tc);
            if let Some(c) = &cluster {
                c.check_log_matching();
                c.check_leader_completeness();
            }
            out
        });
    });
}
