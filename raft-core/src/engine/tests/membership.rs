//! Membership changes: learners, joint consensus, one change at a time, the leader's first commit in
//! its term, reversion on truncation, and the removed leader's step-down.

use super::*;
use crate::error::MembershipError;
use crate::types::Node;

/// The defaults (pre-vote, check-quorum), a fixed seed.
fn defaults() -> Config {
    Config {
        seed: 5,
        ..Config::default()
    }
}

/// A three-node cluster {1, 2, 3} with node 1 leading and its blank entry committed everywhere.
fn led_by_1() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], &defaults());
    c.elect(1);
    let t = c.now + HB;
    c.advance(t);
    c
}

/// Adds empty (uninitialized) nodes to the cluster: they wait for a leader to contact them.
fn add_empty(c: &mut Cluster, ids: &[NodeId]) {
    for &id in ids {
        let node = Executor::new(id, &defaults(), DurableStore::new(), c.now);
        c.nodes.insert(id, node);
    }
}

/// Moves time in heartbeat steps, `rounds` times.
fn heartbeats(c: &mut Cluster, rounds: u64) {
    for _ in 0..rounds {
        let t = c.now + HB;
        c.advance(t);
    }
}

/// Adds learners `ids` through leader `leader`, one change each, and lets them catch up.
fn add_learners(c: &mut Cluster, leader: NodeId, ids: &[NodeId]) {
    add_empty(c, ids);
    for &id in ids {
        let node = Node::new(format!("10.0.0.{id}:7000"));
        c.engine_mut(leader)
            .change_membership(MembershipChange::AddLearner { id, node })
            .expect("learner added")
            .expect("an entry appended");
        c.run();
        heartbeats(c, 1);
    }
    heartbeats(c, 2);
    for &id in ids {
        assert!(c.engine(leader).membership().is_learner(id));
        assert_eq!(c.engine(id).last_log_id(), c.engine(leader).last_log_id());
    }
}

/// Reconnects every node. Messages dropped meanwhile went unanswered: like the driver's RPC
/// timeouts, each leader is told its followers were unreachable, so it probes them again.
fn heal(c: &mut Cluster) {
    c.isolated.clear();
    for id in c.ids() {
        let peers: Vec<NodeId> = c.engine(id).progress().keys().copied().collect();
        for peer in peers {
            c.engine_mut(id).handle_unreachable(peer);
        }
    }
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

#[test]
fn quorums_of_a_joint_configuration_need_majorities_of_both() {
    let joint = Membership {
        voters: set(&[1, 4, 5]),
        old_voters: Some(set(&[1, 2, 3])),
        ..Membership::default()
    };
    // A majority of the new voters alone, or of the old alone, is not enough.
    assert!(!joint.is_quorum(&set(&[1, 4, 5])));
    assert!(!joint.is_quorum(&set(&[1, 2, 3])));
    assert!(joint.is_quorum(&set(&[1, 2, 4])));
    assert!(joint.is_quorum(&set(&[2, 3, 4, 5])));
    // Commitment: the lower of the two majorities' indexes.
    let matched = |id: NodeId| match id {
        1 => 10,
        2 | 3 => 4,
        _ => 9,
    };
    assert_eq!(joint.committed_index(matched), 4);
    assert_eq!(joint.leave_joint().committed_index(matched), 9);
    // Learners count for nothing.
    let with_learners = Membership {
        learners: set(&[7, 8, 9]),
        ..Membership::new([1, 2, 3])
    };
    assert!(!with_learners.is_quorum(&set(&[1, 7, 8, 9])));
    assert_eq!(
        with_learners.committed_index(|id| if id >= 7 { 100 } else { u64::from(id == 1) }),
        0
    );
}

#[test]
fn a_learner_gets_the_log_but_never_votes_and_never_counts() {
    let mut c = led_by_1();
    add_learners(&mut c, 1, &[4]);
    let term = c.engine(1).term();
    assert_eq!(c.engine(4).role(), Role::Follower);
    assert!(
        c.node(4).state_machine().entries().len() > 1,
        "the learner applies"
    );

    // With voters 2 and 3 cut off, the leader and its learner are no majority: nothing commits.
    c.isolated.extend([2, 3]);
    let before = c.engine(1).commit_index();
    let id = c.propose(1, 42);
    heartbeats(&mut c, 2);
    assert_eq!(c.engine(4).last_log_id(), id, "the learner holds the entry");
    assert_eq!(
        c.engine(1).commit_index(),
        before,
        "the learner was counted"
    );

    // Cut from the leader for many election timeouts, the learner never campaigns.
    c.isolated.clear();
    c.isolated.insert(1);
    for _ in 0..20 {
        let t = c.now + MAX;
        c.advance(t);
    }
    assert_eq!(c.engine(4).election_stats().elections_started, 0);
    assert_eq!(c.engine(4).role(), Role::Follower);
    let leader = c.leader().expect("voters 2 and 3 elect a leader");
    assert!(leader == 2 || leader == 3);
    assert!(c.engine(leader).term() > term);
}

#[test]
fn a_change_of_voters_goes_through_the_joint_configuration_and_needs_both_majorities() {
    let mut c = led_by_1();
    add_learners(&mut c, 1, &[4, 5]);
    // The old voters 2 and 3 are cut off: C_old,new cannot commit (only 1 of {1, 2, 3}).
    c.isolated.extend([2, 3]);
    let joint_at = c
        .engine_mut(1)
        .change_membership(MembershipChange::SetVoters {
            voters: set(&[1, 4, 5]),
        })
        .unwrap()
        .unwrap();
    assert!(c.engine(1).membership().is_joint());
    heartbeats(&mut c, 3);
    assert!(c.engine(1).commit_index() < joint_at.index);
    assert!(
        c.engine(4).membership().is_joint(),
        "in force once in the log"
    );
    // A second change while one is under way is refused.
    assert_eq!(
        c.engine_mut(1)
            .change_membership(MembershipChange::Remove { id: 5 }),
        Err(MembershipError::ChangeInProgress)
    );

    // Once the old majority answers, C_old,new commits and the leader moves on to C_new alone.
    heal(&mut c);
    heartbeats(&mut c, 3);
    for id in [1, 4, 5] {
        let m = c.engine(id).membership();
        assert!(!m.is_joint(), "node {id}: {m}");
        assert_eq!(m.voters, set(&[1, 4, 5]));
        assert!(c.engine(id).membership_index() <= c.engine(id).commit_index());
    }
    assert_eq!(c.leader(), Some(1));
    // Nodes 2 and 3 are no longer replicated to and never campaign: they know they are out.
    let term = c.engine(1).term();
    heartbeats(&mut c, 20);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.engine(1).term(), term);
    c.assert_applied_consistent();
}

#[test]
fn a_new_majority_alone_does_not_commit_a_joint_configuration_either() {
    let mut c = led_by_1();
    add_learners(&mut c, 1, &[4, 5]);
    c.isolated.extend([4, 5]);
    let joint_at = c
        .engine_mut(1)
        .change_membership(MembershipChange::SetVoters {
            voters: set(&[1, 4, 5]),
        })
        .unwrap()
        .unwrap();
    heartbeats(&mut c, 3);
    assert!(
        c.engine(1).commit_index() < joint_at.index,
        "committed by the old voters alone"
    );
}

#[test]
fn a_joint_election_needs_majorities_of_both_configurations() {
    let joint = Membership {
        voters: set(&[1, 4, 5]),
        old_voters: Some(set(&[1, 2, 3])),
        ..Membership::default()
    };
    let state = RecoveredState {
        hard_state: hs(1, None),
        log_base: LogId::default(),
        snapshot: None,
        entries: vec![Entry {
            log_id: LogId::new(1, 1),
            payload: EntryPayload::Membership(Box::new(joint)).into(),
        }],
        applied_index: 0,
        lost_entries: false,
    };
    let mut e: Engine<u64> = Engine::new(1, &config(), state, 0);
    let deadline = e.next_deadline();
    e.tick(deadline);
    let asked: BTreeSet<NodeId> = vote_requests(&e.take_output())
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(asked, set(&[2, 3, 4, 5]), "both configurations are asked");
    let term = e.term();
    e.handle_vote_response(4, granted(term));
    e.handle_vote_response(5, granted(term));
    assert_eq!(
        e.role(),
        Role::Candidate,
        "won with a majority of the new voters alone"
    );
    e.handle_vote_response(2, granted(term));
    assert_eq!(e.role(), Role::Leader);
}

#[test]
fn a_new_leader_changes_nothing_before_it_commits_an_entry_of_its_term() {
    let mut c = led_by_1();
    c.engine_mut(2).start_election(true);
    c.flush(2);
    // Deliver only the vote exchange: the new leader's blank entry is still in flight.
    while c.engine(2).role() != Role::Leader {
        assert!(c.deliver_one(), "node 2 did not win");
    }
    assert_eq!(
        c.engine_mut(2)
            .change_membership(MembershipChange::Remove { id: 3 }),
        Err(MembershipError::LeaderNotReady)
    );
    c.run();
    assert!(c
        .engine_mut(2)
        .change_membership(MembershipChange::Remove { id: 3 })
        .unwrap()
        .is_some());
}

#[test]
fn truncating_a_membership_entry_reverts_to_the_one_before() {
    let mut e = follower(2, &[1], 1);
    assert_eq!(e.membership().voters, set(&[1, 2, 3]));
    // A leader of term 2 sends a membership adding learner 4, not committed.
    let mut with_learner = Membership::new([1, 2, 3]);
    with_learner.learners.insert(4);
    let entry = Entry {
        log_id: LogId::new(2, 3),
        payload: EntryPayload::Membership(Box::new(with_learner.clone())).into(),
    };
    let resp = e.handle_append_entries(append(2, 1, (1, 2), vec![entry], 2));
    assert!(matches!(resp.result, AppendResult::Success { .. }));
    assert_eq!(e.membership(), &with_learner, "in force once in the log");
    assert_eq!(e.membership_index(), 3);
    // A leader of term 3 replaces index 3 with a command: the earlier membership is back.
    let resp = e.handle_append_entries(append(3, 3, (1, 2), vec![cmd(3, 3)], 2));
    assert!(matches!(resp.result, AppendResult::Success { .. }));
    assert_eq!(e.membership(), &Membership::new([1, 2, 3]));
    assert_eq!(e.membership_index(), 1);
}

#[test]
fn a_removed_leader_manages_the_change_then_hands_over_and_never_campaigns() {
    let mut c = led_by_1();
    let term = c.engine(1).term();
    let elections = c.engine(1).election_stats().elections_started;
    c.engine_mut(1)
        .change_membership(MembershipChange::Remove { id: 1 })
        .unwrap()
        .unwrap();
    // Without moving time: C_old,new commits, C_new is appended and commits (by 2 and 3 alone,
    // node 1 not counting itself), node 1 steps down and sends TimeoutNow; the target wins.
    c.run();
    let leader = c.leader().expect("a new leader at once");
    assert!(leader == 2 || leader == 3, "leader {leader}");
    assert_eq!(c.engine(leader).term(), term + 1);
    assert_eq!(c.engine(1).role(), Role::Follower);
    for id in [2, 3] {
        let m = c.engine(id).membership();
        assert_eq!(m.voters, set(&[2, 3]), "node {id}: {m}");
        assert!(!m.is_joint());
    }
    // Node 1 never campaigns again, however long it waits, and the cluster's term stays.
    heartbeats(&mut c, 40);
    assert_eq!(c.engine(1).election_stats().elections_started, elections);
    assert_eq!(c.engine(leader).term(), term + 1);
    assert_eq!(c.leader(), Some(leader));
    c.assert_applied_consistent();
}

#[test]
fn the_removed_leaders_new_majority_does_not_count_it() {
    let mut c = led_by_1();
    c.engine_mut(1)
        .change_membership(MembershipChange::Remove { id: 1 })
        .unwrap()
        .unwrap();
    // Step by step until C_old,new is committed and C_new appended on the leader.
    while c.engine(1).membership().is_joint() {
        c.flush_all();
        assert!(c.deliver_one(), "the joint configuration did not commit");
    }
    // Voter 3 is cut off now: C_new = {2, 3} needs both; node 1 and node 2 are no majority of it.
    c.isolated.insert(3);
    heartbeats(&mut c, 2);
    assert!(c.engine(1).membership_index() > c.engine(1).commit_index());
    assert_eq!(
        c.engine(1).role(),
        Role::Leader,
        "still managing the change"
    );
    heal(&mut c);
    heartbeats(&mut c, 2);
    let leader = c.leader().expect("a leader");
    assert_ne!(leader, 1);
    assert!(c.engine(leader).membership_index() <= c.engine(leader).commit_index());
}

#[test]
fn a_promotion_needs_a_caught_up_learner() {
    let mut c = led_by_1();
    assert_eq!(
        c.engine_mut(1)
            .change_membership(MembershipChange::Promote { id: 4 }),
        Err(MembershipError::NotALearner { id: 4 })
    );
    // A learner that never answered is not caught up.
    add_empty(&mut c, &[4]);
    c.isolated.insert(4);
    c.engine_mut(1)
        .change_membership(MembershipChange::AddLearner {
            id: 4,
            node: Node::default(),
        })
        .unwrap();
    c.run();
    assert!(matches!(
        c.engine_mut(1)
            .change_membership(MembershipChange::Promote { id: 4 }),
        Err(MembershipError::LearnerBehind { id: 4, .. })
    ));
    // Once it answers with the log, it can be promoted.
    heal(&mut c);
    heartbeats(&mut c, 3);
    assert!(c
        .engine_mut(1)
        .change_membership(MembershipChange::Promote { id: 4 })
        .unwrap()
        .is_some());
    heartbeats(&mut c, 2);
    assert_eq!(c.engine(4).membership().voters, set(&[1, 2, 3, 4]));
    assert!(!c.engine(4).membership().is_joint());
}

#[test]
fn changes_already_in_force_append_nothing_and_bad_ones_are_refused() {
    let mut c = led_by_1();
    let last = c.engine(1).last_log_id();
    for change in [
        MembershipChange::Promote { id: 2 },
        MembershipChange::Remove { id: 9 },
        MembershipChange::SetVoters {
            voters: set(&[1, 2, 3]),
        },
    ] {
        assert_eq!(c.engine_mut(1).change_membership(change), Ok(None));
    }
    assert_eq!(c.engine(1).last_log_id(), last);
    assert_eq!(
        c.engine_mut(1)
            .change_membership(MembershipChange::AddLearner {
                id: 2,
                node: Node::default()
            }),
        Err(MembershipError::AlreadyAVoter { id: 2 })
    );
    assert!(matches!(
        c.engine_mut(1)
            .change_membership(MembershipChange::SetVoters { voters: set(&[]) }),
        Err(MembershipError::Invalid(_))
    ));
    assert_eq!(
        c.engine_mut(2)
            .change_membership(MembershipChange::Remove { id: 3 }),
        Err(MembershipError::NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn a_removed_follower_that_missed_the_change_cannot_disrupt_the_cluster() {
    let mut c = led_by_1();
    // Node 3 is cut off before the change reaches it; it never learns it was removed.
    c.isolated.insert(3);
    c.engine_mut(1)
        .change_membership(MembershipChange::Remove { id: 3 })
        .unwrap()
        .unwrap();
    heartbeats(&mut c, 3);
    assert_eq!(c.engine(1).membership().voters, set(&[1, 2]));
    let term = c.engine(1).term();
    // It times out again and again; once back, its pre-votes are refused (its log is behind and
    // the voters hear from their leader): the term of the cluster does not move.
    heartbeats(&mut c, 30);
    assert!(
        c.engine(3).election_stats().pre_votes_lost > 0,
        "node 3 kept trying"
    );
    heal(&mut c);
    heartbeats(&mut c, 30);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.engine(1).term(), term);
    assert_eq!(c.engine(2).term(), term);
}

#[test]
fn a_membership_entry_that_breaks_the_invariants_is_refused() {
    let mut e = follower(2, &[1], 1);
    let bad = Membership {
        voters: set(&[1, 2]),
        learners: set(&[2]),
        ..Membership::default()
    };
    let entry = Entry {
        log_id: LogId::new(1, 3),
        payload: EntryPayload::Membership(Box::new(bad)).into(),
    };
    let resp = e.handle_append_entries(append(1, 1, (1, 2), vec![entry], 2));
    assert_eq!(resp.result, AppendResult::Invalid);
    assert_eq!(e.membership().voters, set(&[1, 2, 3]));
}

#[test]
fn a_removed_leader_whose_hand_over_fails_steps_down_anyway() {
    let mut c = led_by_1();
    c.engine_mut(1)
        .change_membership(MembershipChange::Remove { id: 1 })
        .unwrap()
        .unwrap();
    // Step by step until C_new is committed on node 1: its hand-over has just begun.
    loop {
        let e = c.engine(1);
        if !e.membership().is_joint() && e.membership_index() <= e.commit_index() {
            break;
        }
        c.flush_all();
        assert!(c.deliver_one(), "C_new did not commit");
    }
    let target = c
        .engine(1)
        .transferring_to()
        .expect("a hand-over under way");
    assert!(target == 2 || target == 3);
    // Node 1 is cut off before its TimeoutNow arrives: the hand-over is abandoned after an
    // election timeout, and node 1 steps down instead of leading on.
    c.queue.clear();
    c.isolated.insert(1);
    let t = c.now + MAX + 1;
    c.advance(t);
    assert_eq!(c.engine(1).role(), Role::Follower);
    assert_eq!(c.engine(1).election_stats().transfers_abandoned, 1);
    heartbeats(&mut c, 20);
    let leader = c.leader().expect("voters 2 and 3 elect a leader");
    assert_ne!(leader, 1);
}

/// `membership_at` answers from the latest configuration at and after its index, and walks the log
/// only below it: the same answers as a walk over the whole log, for every index, with the log
/// compacted past some changes and after a truncation that reverts one.
#[test]
fn membership_at_agrees_with_a_walk_over_the_log() {
    let with = |voters: &[NodeId], term: Term, index: LogIndex| Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Membership(Box::new(Membership::new(voters.iter().copied()))).into(),
    };
    let mut entries = vec![with(&[1, 2, 3], 1, 1)];
    entries.extend((2..=4).map(|i| cmd(1, i)));
    entries.push(with(&[1, 2, 3, 4], 1, 5));
    entries.extend((6..=8).map(|i| cmd(1, i)));
    entries.push(with(&[1, 2, 4], 1, 9));
    entries.extend((10..=12).map(|i| cmd(1, i)));
    let state = RecoveredState {
        hard_state: hs(1, None),
        log_base: LogId::default(),
        snapshot: None,
        entries,
        applied_index: 0,
        lost_entries: false,
    };
    let mut e = Engine::new(1, &config(), state, 0);
    let walk = |e: &Engine<u64>, index: LogIndex| {
        e.log
            .slice(e.log.base_index() + 1, index)
            .iter()
            .rev()
            .find_map(|x| match &*x.payload {
                EntryPayload::Membership(m) => Some(Membership::clone(m)),
                _ => None,
            })
            .unwrap_or_else(|| e.base_membership.clone())
    };
    let check = |e: &Engine<u64>| {
        for index in e.log.base_index()..=e.log.last_index() {
            assert_eq!(e.membership_at(index), walk(e, index), "index {index}");
        }
    };
    assert_eq!(e.membership_index(), 9);
    check(&e);
    assert_eq!(e.membership_at(12).voters, [1, 2, 4].into());
    assert_eq!(e.membership_at(8).voters, [1, 2, 3, 4].into());
    // Compacted past the first two changes: the base holds the second.
    e.base_membership = e.membership_at(6);
    e.log.compact(6);
    check(&e);
    assert_eq!(e.membership_at(6).voters, [1, 2, 3, 4].into());
    // A truncation that removes the latest change reverts to the one before.
    e.truncate_local(9);
    assert_eq!(e.membership_index(), 6);
    check(&e);
    assert_eq!(e.membership_at(8).voters, [1, 2, 3, 4].into());
}
