//! Scenario tests named after the rules of the Raft thesis (D. Ongaro, 2014): figure 3.2's
//! properties, the §3.6 restrictions, §3.10 leadership transfer, §4 membership changes,
//! §5 snapshots, §6.2 check-quorum, §6.4 reads and leases, §9.6 pre-vote. Each reads as
//! documentation of one rule and fails if the rule is broken.

mod raft_support;

use bytes::Bytes;
use quasar_shard::raft::{
    Advanced, AppendOutcome, ConfState, EntryKind, LogId, LogIndex, Message, MessageBody, NodeId,
    ProposeError, RaftNode, ReadRequestId, Restored, Role, Term, TransferError, VoteKind,
};
use raft_support::{config, ids, Cluster};

fn elect(c: &mut Cluster, id: u64) {
    c.node_mut(id).campaign();
    c.stabilize_quiet();
    assert_eq!(c.node(id).role(), Role::Leader, "{}", c.state());
}

fn propose(c: &mut Cluster, id: u64, data: &str) -> LogIndex {
    c.node_mut(id)
        .propose(Bytes::from(data.to_owned()))
        .expect("leader accepts")
}

fn three() -> Cluster {
    Cluster::new(3, 1, |_| {})
}

#[test]
fn fig3_2_election_safety_two_candidates_same_term() {
    let mut c = Cluster::new(5, 3, |cfg| cfg.pre_vote = false);
    // Two candidates in the same term split the votes: at most one of them wins.
    c.node_mut(1).campaign();
    c.node_mut(2).campaign();
    c.stabilize_quiet();
    let leaders: Vec<u64> = (1..=5)
        .filter(|&i| c.node(i).role() == Role::Leader && c.node(i).term() == Term(1))
        .collect();
    assert!(leaders.len() <= 1, "two leaders in term 1: {leaders:?}");
}

#[test]
fn fig3_2_leader_append_only_and_log_matching() {
    let mut c = three();
    elect(&mut c, 1);
    let i = propose(&mut c, 1, "a");
    c.isolate(3);
    let j = propose(&mut c, 1, "b");
    c.stabilize_quiet();
    c.heal();
    c.tick_all(3);
    c.stabilize_quiet();
    for n in 1..=3 {
        assert_eq!(
            c.node(n).entry(i).map(|e| e.data.clone()),
            Some(Bytes::from("a"))
        );
        assert_eq!(
            c.node(n).entry(j).map(|e| e.data.clone()),
            Some(Bytes::from("b"))
        );
    }
    c.check_log_matching();
}

#[test]
fn s3_4_never_votes_twice_in_a_term_even_across_restart() {
    let mut c = Cluster::new(3, 5, |cfg| cfg.pre_vote = false);
    c.node_mut(1).campaign();
    c.process_ready(1);
    c.deliver(&[3]); // node 3 grants its vote for node 1 in term 1 (persisted)
    c.process_ready(3);
    c.queue.clear();
    c.crash_restart(3);
    // Node 2 asks for a vote in the same term: the restarted node remembers its vote.
    let ask = Message {
        from: NodeId(2),
        to: NodeId(3),
        term: Term(1),
        body: MessageBody::RequestVote {
            kind: VoteKind::Vote,
            last: LogId::default(),
            campaign: quasar_shard::raft::Campaign::Transfer,
        },
    };
    c.node_mut(3).step(ask).unwrap();
    let rd = c.node_mut(3).ready().expect("a response");
    let granted = rd
        .send_now
        .iter()
        .chain(&rd.send_after_sync)
        .any(|m| matches!(m.body, MessageBody::RequestVoteResp { granted: true, .. }));
    assert!(!granted, "voted twice in term 1");
    assert_eq!(c.node(3).hard_state().vote, Some(NodeId(1)));
}

#[test]
fn s3_4_votes_and_acks_leave_only_after_sync() {
    let mut c = Cluster::new(3, 5, |cfg| cfg.pre_vote = false);
    c.node_mut(1).campaign();
    c.process_ready(1);
    c.deliver(&[2]);
    let rd = c.node_mut(2).ready().expect("vote");
    assert!(rd.hard_state.is_some());
    assert!(
        rd.send_now.is_empty(),
        "a vote must wait for the sync: {:?}",
        rd.send_now
    );
    assert_eq!(rd.send_after_sync.len(), 1);
    c.node_mut(2).advance(rd.done());
}

#[test]
fn s3_5_fast_backtracking_skips_a_conflicting_term_at_once() {
    // Node 3 holds 20 entries of an old term that the new leader never had.
    let conf = ConfState::with_voters(ids(&[1, 2, 3]));
    let mut c = Cluster::new(3, 9, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg.lease_ticks = 0;
    });
    let mut stale = Restored::new_group(conf.clone());
    stale.hard_state.term = Term(2);
    stale.entries = (1..=20)
        .map(|i| quasar_shard::raft::Entry {
            term: Term(2),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"old"),
        })
        .collect();
    // Nodes 1 and 2 restart in term 2 with empty logs: they never saw node 3's entries,
    // and no term-2 leader among them can write other entries at those indexes.
    for id in 1..=3 {
        c.peers.remove(&id);
        let mut cfg = config(id);
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg.lease_ticks = 0;
        let restored = if id == 3 {
            stale.clone()
        } else {
            let mut r = Restored::new_group(conf.clone());
            r.hard_state.term = Term(2);
            r
        };
        c.add_peer(id, cfg, restored);
    }
    c.isolate(3);
    elect(&mut c, 1);
    let leader = c.leader().expect("a leader among 1 and 2");
    assert_eq!(c.node(leader).term(), Term(3));
    for k in 0..5 {
        propose(&mut c, leader, &format!("new{k}"));
    }
    c.stabilize_quiet();
    c.heal();
    let mut rejections = 0;
    for _ in 0..60 {
        for id in 1..=3 {
            while c.process_ready(id).is_some() {}
        }
        let queue = std::mem::take(&mut c.queue);
        for m in queue {
            if matches!(
                m.body,
                MessageBody::AppendResp {
                    outcome: AppendOutcome::Rejected { .. }
                }
            ) {
                rejections += 1;
            }
            c.deliver_one(m);
        }
        c.tick_all(1);
    }
    c.stabilize_quiet();
    assert_eq!(
        c.node(3).last_id(),
        c.node(leader).last_id(),
        "{}",
        c.state()
    );
    assert!(
        rejections <= 4,
        "backtracking took {rejections} rejections for 20 stale entries"
    );
}

#[test]
fn s3_6_1_election_restriction_stale_log_cannot_win() {
    let mut c = Cluster::new(3, 11, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg.lease_ticks = 0;
    });
    elect(&mut c, 1);
    c.isolate(3);
    propose(&mut c, 1, "x");
    c.stabilize_quiet();
    c.heal();
    c.isolate(1);
    // Node 3 lacks the committed entry: node 2 refuses it.
    c.node_mut(3).campaign();
    c.stabilize_quiet();
    assert_ne!(c.node(3).role(), Role::Leader, "{}", c.state());
    c.node_mut(2).campaign();
    c.stabilize_quiet();
    assert_eq!(c.node(2).role(), Role::Leader, "{}", c.state());
}

#[test]
fn s3_6_2_old_term_entries_are_not_committed_by_counting() {
    let conf = ConfState::with_voters(ids(&[1, 2, 3]));
    let mut restored = Restored::new_group(conf);
    restored.hard_state.term = Term(2);
    restored.entries = vec![quasar_shard::raft::Entry {
        term: Term(2),
        index: LogIndex(1),
        kind: EntryKind::Normal,
        data: Bytes::from_static(b"old"),
    }];
    let mut cfg = config(1);
    cfg.pre_vote = false;
    let mut n = RaftNode::new(&cfg, restored, 1).unwrap();
    // Win term 3 (the restart guard does not stop our own campaign).
    n.campaign();
    let rd = n.ready().unwrap();
    n.advance(rd.done());
    let vote = |from: u64| Message {
        from: NodeId(from),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::RequestVoteResp {
            kind: VoteKind::Vote,
            granted: true,
        },
    };
    n.step(vote(2)).unwrap();
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready().unwrap();
    n.advance(rd.done()); // the no-op of term 3 at index 2 is durable here
    let ack = |last: u64| Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(3),
        body: MessageBody::AppendResp {
            outcome: AppendOutcome::Accepted {
                last: LogIndex(last),
            },
        },
    };
    // A majority (1 and 2) holds index 1 of term 2: not committed by counting (§3.6.2).
    n.step(ack(1)).unwrap();
    assert_eq!(n.commit(), LogIndex(0));
    // Once the term-3 entry is on a majority, it and everything before it commit.
    n.step(ack(2)).unwrap();
    assert_eq!(n.commit(), LogIndex(2));
}

#[test]
fn leader_counts_its_own_entries_only_once_persisted() {
    let conf = ConfState::with_voters(ids(&[1]));
    let mut n = RaftNode::new(&config(1), Restored::new_group(conf), 1).unwrap();
    n.campaign();
    while let Some(rd) = n.ready() {
        n.advance(rd.done());
    }
    assert_eq!(n.role(), Role::Leader);
    let i = n.propose(Bytes::from_static(b"x")).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.append.last().map(|e| e.index), Some(i));
    // The runtime has not synced: report nothing durable.
    n.advance(Advanced {
        buffers: Some(rd),
        ..Advanced::default()
    });
    assert!(n.commit() < i, "committed before its own sync");
    // The entry is handed once; a later sync covering it is reported explicitly.
    let last = n.last_id();
    n.advance(Advanced {
        persisted: Some(last),
        ..Advanced::default()
    });
    assert_eq!(n.commit(), i);
}

#[test]
fn s3_5_a_moved_commit_index_reaches_followers_up_to_what_they_acknowledged_unanswered() {
    let mut c = three();
    elect(&mut c, 1);
    let i = propose(&mut c, 1, "a");
    c.process_ready(1);
    c.deliver(&[2, 3]);
    c.process_ready(2);
    c.process_ready(3);
    // Node 2's acknowledgement commits the entry; node 3's is still on its way.
    let from_3: Vec<Message> = c
        .queue
        .iter()
        .filter(|m| m.from == NodeId(3))
        .cloned()
        .collect();
    c.queue.retain(|m| m.from != NodeId(3));
    c.deliver(&[1]);
    c.process_ready(1);
    assert_eq!(c.node(1).commit(), i);
    // Only the commit index moved: node 2 gets it in a `Commit` (not an empty append),
    // and node 3, which has not acknowledged the entry, gets nothing yet.
    let commits = |c: &Cluster, to: u64| -> Vec<LogIndex> {
        c.queue
            .iter()
            .filter(|m| m.to == NodeId(to))
            .map(|m| match m.body {
                MessageBody::Commit { commit } => commit,
                _ => panic!("only a commit notice expected, got {m}"),
            })
            .collect()
    };
    assert_eq!(commits(&c, 2), vec![i]);
    assert!(commits(&c, 3).is_empty());
    c.deliver(&[2]);
    assert_eq!(c.node(2).commit(), i);
    c.process_ready(2);
    assert!(
        c.queue.is_empty(),
        "a commit notice is not answered: {:?}",
        c.queue
    );
    // Node 3's acknowledgement arrives: its commit notice follows.
    c.queue.extend(from_3);
    c.deliver(&[1]);
    c.process_ready(1);
    assert_eq!(commits(&c, 3), vec![i]);
    c.deliver(&[3]);
    assert_eq!(c.node(3).commit(), i);
    // A notice from a deposed leader's term is refused, and the sender told the newer term.
    let stale = Message {
        from: NodeId(1),
        to: NodeId(3),
        term: Term(0),
        body: MessageBody::Commit { commit: i },
    };
    c.node_mut(3).step(stale).unwrap();
    let rd = c
        .node_mut(3)
        .ready()
        .expect("an answer to the stale leader");
    assert!(rd
        .send_now
        .iter()
        .any(|m| m.to == NodeId(1) && m.term == c.node(3).term()));
}

#[test]
fn s3_10_transfer_waits_for_the_target_then_sends_timeout_now() {
    let mut c = three();
    elect(&mut c, 1);
    c.isolate(3);
    propose(&mut c, 1, "x");
    c.stabilize_quiet();
    c.node_mut(1).transfer_leader(NodeId(3)).unwrap();
    assert!(matches!(
        c.node_mut(1).propose(Bytes::from_static(b"y")),
        Err(ProposeError::ProposalDropped { .. })
    ));
    c.stabilize_quiet();
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "no TimeoutNow to a lagging target"
    );
    c.heal();
    c.tick_all(2);
    c.stabilize_quiet();
    assert_eq!(c.node(3).role(), Role::Leader, "{}", c.state());
}

#[test]
fn s3_10_transfer_times_out_and_refuses_non_voters() {
    let mut c = three();
    elect(&mut c, 1);
    c.isolate(3);
    c.node_mut(1).transfer_leader(NodeId(3)).unwrap();
    for _ in 0..12 {
        c.node_mut(1).tick();
        c.node_mut(2).tick();
        c.stabilize_quiet();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(
        c.node_mut(1).propose(Bytes::from_static(b"after")).is_ok(),
        "transfer abandoned"
    );
    assert_eq!(
        c.node_mut(1).transfer_leader(NodeId(9)),
        Err(TransferError::NotVoter { target: NodeId(9) })
    );
}

#[test]
fn s4_3_joint_consensus_needs_both_majorities() {
    let mut c = three();
    for id in [4, 5] {
        c.add_peer(id, config(id), Restored::joining());
    }
    elect(&mut c, 1);
    let target = ConfState::with_voters(ids(&[1, 4, 5]));
    c.node_mut(1).propose_conf_change(&target).unwrap();
    // Only the old majority answers: the change cannot leave the joint state.
    c.isolate(4);
    c.isolate(5);
    c.stabilize_quiet();
    assert!(c.node(1).conf_state().is_joint(), "{}", c.state());
    let i = propose(&mut c, 1, "needs-both");
    c.stabilize_quiet();
    assert!(c.node(1).commit() < i, "committed without the new majority");
    c.heal();
    for _ in 0..10 {
        c.tick_all(1);
        c.stabilize_quiet();
    }
    assert!(c.node(1).commit() >= i);
    // The leader is a voter of the new configuration: it stays leader.
    let leader = c.leader().unwrap();
    assert_eq!(c.node(leader).conf_state(), &target, "{}", c.state());
}

#[test]
fn s4_2_2_removed_leader_steps_down_after_commit() {
    let mut c = three();
    elect(&mut c, 1);
    c.node_mut(1)
        .propose_conf_change(&ConfState::with_voters(ids(&[2, 3])))
        .unwrap();
    c.stabilize_quiet();
    assert_ne!(c.node(1).role(), Role::Leader, "{}", c.state());
    assert_eq!(c.node(2).conf_state().voters, ids(&[2, 3]));
    for _ in 0..40 {
        c.tick_all(1);
        c.stabilize_quiet();
    }
    let leader = c.leader().expect("a new leader");
    assert!(leader == 2 || leader == 3);
}

/// A leader that commits its own removal while it holds entries its followers have not yet
/// acknowledged (a busy range) still hands over at once, to the new voter that holds the
/// most. Handing over only to a voter holding its whole log left such a range without a
/// leader for an election timeout and more (the followers still honoured the removed
/// leader's lease): clients gave up meanwhile (nemesis seed 81).
#[test]
fn s4_2_2_a_removed_leader_hands_over_even_with_entries_not_yet_acknowledged() {
    let mut c = three();
    elect(&mut c, 1);
    let joint = c
        .node_mut(1)
        .propose_conf_change(&ConfState::with_voters(ids(&[2, 3])))
        .unwrap();
    // Run until the leader has appended the configuration without itself (it leaves the
    // joint one on its own, in the entry after it) and sent it.
    for _ in 0..50 {
        while c.process_ready(1).is_some() {}
        if c.node(1).last_id().index > joint {
            break;
        }
        c.deliver(&[2, 3]);
        for id in [2, 3] {
            while c.process_ready(id).is_some() {}
        }
        c.deliver(&[1]);
    }
    assert_eq!(c.node(1).role(), Role::Leader, "{}", c.state());
    // The followers take it and acknowledge it...
    c.deliver(&[2, 3]);
    for id in [2, 3] {
        while c.process_ready(id).is_some() {}
    }
    // ... while the leader appends one more entry, which never reaches them.
    propose(&mut c, 1, "late");
    let acks: Vec<Message> = c.queue.drain(..).collect();
    while c.process_ready(1).is_some() {}
    c.queue.clear();
    c.queue.extend(acks);
    c.deliver(&[1]);
    assert_ne!(c.node(1).role(), Role::Leader, "{}", c.state());
    // No tick: the new leader comes from the handover, not from an election timeout.
    c.stabilize_quiet();
    let leader = c
        .leader()
        .expect("a leader without waiting for an election");
    assert!(leader == 2 || leader == 3, "{}", c.state());
}

/// Elections without pre-vote, check-quorum or leases: each vote request is plain.
fn plain_elections(cfg: &mut quasar_shard::raft::Config) {
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.lease_ticks = 0;
}

/// A member whose replica was removed with its log and later re-created empty (the group
/// added it back) still counts in the quorums of configurations older than its removal, as
/// seen by a member that missed the change. Its vote floor (the last entry it held) stands
/// for the log it dropped: a lagging candidate does not win its vote, and its own vote does
/// not count for itself until its log is back past the floor. Without the floor, node 2
/// below became leader with the empty replica's vote, without the committed entries.
#[test]
fn s4_a_replica_re_created_empty_keeps_the_vote_floor_of_the_log_it_dropped() {
    let mut c = Cluster::new(3, 13, plain_elections);
    elect(&mut c, 1);
    c.isolate(2);
    let x = propose(&mut c, 1, "x");
    c.stabilize_quiet();
    assert!(c.node(3).commit() >= x, "{}", c.state());
    // Node 3's replica goes and comes back empty, with its term, vote and floor.
    let floor = c.node(3).last_id();
    let mut restored = Restored::new_group(ConfState::with_voters(ids(&[1, 2, 3])));
    restored.hard_state = c.node(3).hard_state();
    restored.hard_state.commit = LogIndex(0);
    restored.vote_floor = floor;
    let mut cfg = config(3);
    plain_elections(&mut cfg);
    c.add_peer(3, cfg, restored);
    // The leader is gone; node 2 (which lacks `x`) asks node 3.
    c.heal();
    c.isolate(1);
    for _ in 0..60 {
        c.tick_all(1);
        c.stabilize_quiet();
        assert_ne!(c.node(2).role(), Role::Leader, "{}", c.state());
        assert_ne!(
            c.node(3).role(),
            Role::Leader,
            "node 3 won below its floor {floor}: {}",
            c.state()
        );
    }
    // The leader comes back: the group goes on, and node 3 gets `x` again.
    c.heal();
    for _ in 0..60 {
        c.tick_all(1);
        c.stabilize_quiet();
        if c.leader() == Some(1) && c.node(3).commit() >= x {
            break;
        }
    }
    let leader = c.leader().expect("a leader once node 1 is back");
    assert_ne!(leader, 2, "{}", c.state());
    assert!(c.node(3).last_id() >= floor, "{}", c.state());
    c.check_leader_completeness();
}

/// The floor also binds the node's vote for itself: below it, a replica still campaigns
/// (members answer a leftover replica that it was removed) but wins only with a majority of
/// other voters. Here node 2 would grant it (both logs empty), which without the rule makes
/// two votes of three.
#[test]
fn s4_a_replica_below_its_vote_floor_does_not_count_its_own_vote() {
    let mut c = Cluster::new(3, 17, plain_elections);
    let mut restored = Restored::new_group(ConfState::with_voters(ids(&[1, 2, 3])));
    restored.vote_floor = raft_support::lid(3, 40);
    let mut cfg = config(3);
    plain_elections(&mut cfg);
    c.add_peer(3, cfg, restored);
    c.isolate(1);
    c.node_mut(3).campaign();
    c.stabilize_quiet();
    assert_eq!(c.node(3).role(), Role::Candidate, "{}", c.state());
    c.node_mut(2).campaign();
    c.stabilize_quiet();
    for _ in 0..60 {
        c.tick_all(1);
        c.stabilize_quiet();
        for n in [2, 3] {
            assert_ne!(c.node(n).role(), Role::Leader, "{}", c.state());
        }
    }
}

#[test]
fn s4_2_1_learner_catches_up_without_voting() {
    let mut c = three();
    c.add_peer(4, config(4), Restored::joining());
    elect(&mut c, 1);
    let mut target = ConfState::with_voters(ids(&[1, 2, 3]));
    target.learners = ids(&[4]);
    c.node_mut(1).propose_conf_change(&target).unwrap();
    let i = propose(&mut c, 1, "to-learner");
    c.stabilize_quiet();
    assert!(c.node(4).commit() >= i);
    assert!(c.node(4).conf_state().is_learner(NodeId(4)));
    // A learner never campaigns.
    for _ in 0..50 {
        c.node_mut(4).tick();
    }
    assert_eq!(c.node(4).role(), Role::Follower);
}

#[test]
fn s5_follower_behind_the_compacted_log_gets_a_snapshot() {
    let mut c = three();
    elect(&mut c, 1);
    c.isolate(3);
    for k in 0..20 {
        propose(&mut c, 1, &format!("e{k}"));
    }
    c.stabilize_quiet();
    let applied = c.node(1).applied();
    c.compact(1, applied).unwrap();
    c.heal();
    c.tick_all(2);
    c.stabilize_quiet();
    assert_eq!(c.node(3).snapshot().last.index, applied, "{}", c.state());
    assert_eq!(c.node(3).commit(), c.node(1).commit());
    assert_eq!(
        c.peers[&3].applied, c.peers[&1].applied,
        "state machines differ"
    );
    // And the restarted follower rebuilds from its snapshot and log.
    c.crash_restart(3);
    c.tick_all(2);
    c.stabilize_quiet();
    assert_eq!(c.node(3).commit(), c.node(1).commit());
    assert_eq!(c.peers[&3].applied, c.peers[&1].applied);
}

#[test]
fn s6_2_check_quorum_leader_steps_down_alone() {
    let mut c = three();
    elect(&mut c, 1);
    c.isolate(1);
    for _ in 0..25 {
        c.node_mut(1).tick();
        c.stabilize_quiet();
    }
    assert_ne!(c.node(1).role(), Role::Leader);
}

#[test]
fn s6_4_read_index_confirms_leadership_with_a_heartbeat_round() {
    let mut c = Cluster::new(3, 2, |cfg| cfg.lease_ticks = 0);
    elect(&mut c, 1);
    let commit = c.node(1).commit();
    c.node_mut(1).read_index(ReadRequestId(7)).unwrap();
    c.isolate(1);
    c.stabilize_quiet();
    assert!(c.peers[&1].reads.is_empty(), "served without a quorum");
    c.heal();
    c.node_mut(1).read_index(ReadRequestId(8)).unwrap();
    c.stabilize_quiet();
    let reads: Vec<u64> = c.peers[&1].reads.iter().map(|r| r.request.0).collect();
    assert!(reads.contains(&8), "{reads:?}");
    assert!(c.peers[&1].reads.iter().all(|r| r.index >= commit));
}

#[test]
fn s6_4_follower_read_is_forwarded_to_the_leader() {
    let mut c = Cluster::new(3, 2, |cfg| cfg.lease_ticks = 0);
    elect(&mut c, 1);
    c.node_mut(2).read_index(ReadRequestId(42)).unwrap();
    c.stabilize_quiet();
    let r = c.peers[&2]
        .reads
        .iter()
        .find(|r| r.request == ReadRequestId(42))
        .copied();
    assert_eq!(r.map(|r| r.index), Some(c.node(1).commit()));
}

#[test]
fn s6_4_1_lease_serves_reads_without_a_round_trip_until_it_expires() {
    let mut c = three();
    elect(&mut c, 1);
    assert!(!c.node(1).has_lease(), "no lease before heartbeat acks");
    c.tick_all(2); // heartbeat round
    c.stabilize_quiet();
    assert!(c.node(1).has_lease());
    c.node_mut(1).read_index(ReadRequestId(1)).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert_eq!(rd.reads.len(), 1, "lease read served at once");
    assert!(rd.send_now.iter().all(|m| !m.is_heartbeat()));
    c.node_mut(1).advance(rd.done());
    // Without acks the lease runs out, well before followers may elect someone else.
    c.isolate(1);
    for _ in 0..8 {
        c.node_mut(1).tick();
    }
    assert!(!c.node(1).has_lease());
}

#[test]
fn s6_4_1_a_leader_stopped_past_its_lease_serves_no_read_from_it() {
    let mut c = three();
    elect(&mut c, 1);
    c.tick_all(2); // heartbeat round
    c.stabilize_quiet();
    assert!(c.node(1).has_lease());
    // The process was stopped (SIGSTOP) for a while: the runtime ticks once after it and
    // reports the gap instead of a burst of ticks.
    c.node_mut(1).tick();
    c.node_mut(1).clock_skipped(100);
    assert!(!c.node(1).has_lease(), "the gap voids the lease");
    c.node_mut(1).read_index(ReadRequestId(9)).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    assert!(rd.reads.is_empty(), "no read served from a stale lease");
    c.node_mut(1).advance(rd.done());
    // A fresh heartbeat round brings the lease back (and serves the read by ReadIndex).
    c.tick_all(2);
    c.stabilize_quiet();
    assert!(c.node(1).has_lease());
    assert!(c.peers[&1]
        .reads
        .iter()
        .any(|r| r.request == ReadRequestId(9)));
}

#[test]
fn s9_6_pre_vote_keeps_a_partitioned_node_from_disrupting() {
    let mut c = three();
    elect(&mut c, 1);
    let term = c.node(1).term();
    c.isolate(3);
    for _ in 0..100 {
        c.node_mut(3).tick();
        c.stabilize_quiet();
    }
    assert_eq!(
        c.node(3).term(),
        term,
        "pre-vote: an isolated node does not raise its term"
    );
    c.heal();
    c.tick_all(3);
    c.stabilize_quiet();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
}

#[test]
fn quiesced_group_ignores_ticks_and_wakes_on_traffic() {
    let mut c = three();
    elect(&mut c, 1);
    assert!(c.node(1).can_quiesce(), "{}", c.state());
    for id in 1..=3 {
        c.node_mut(id).quiesce();
    }
    c.tick_all(100);
    c.stabilize_quiet();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.queue.is_empty());
    propose(&mut c, 1, "wake");
    c.stabilize_quiet();
    assert!(!c.node(1).is_quiesced() && !c.node(2).is_quiesced());
}
