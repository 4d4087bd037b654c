//! Engine-level claims of `raft-core/docs/raft-by-questions.md` that the protocol tests in
//! `raft-core/src/engine/tests.rs` do not already show. Public API only: `Engine`, its inputs and
//! its `Output`; each test drives engines by hand, with explicit times.

use raft_core::{
    AppendEntriesRequest, Config, Engine, HardState, LogId, Membership, NodeId, RecoveredState,
    Request, Role, VoteRequest, VoteResponse,
};

const MIN: u64 = 150;
const MAX: u64 = 300;

/// The document explains the elections of the Raft paper: no pre-vote round before them (its
/// rules are tested in `raft-core/src/engine/tests/pre_vote.rs`).
fn config() -> Config {
    let c = Config {
        seed: 7,
        pre_vote: false,
        ..Config::default()
    };
    assert_eq!(c.election_timeout_min.as_millis() as u64, MIN);
    assert_eq!(c.election_timeout_max.as_millis() as u64, MAX);
    c
}

/// A fresh node of the cluster `voters`, initialized at time 0, its first output executed.
fn node(id: NodeId, voters: &[NodeId]) -> Engine<u64> {
    let mut e = Engine::new(id, &config(), RecoveredState::default(), 0);
    e.initialize(Membership::new(voters.iter().copied()))
        .unwrap();
    let out = e.take_output();
    e.log_persisted(out.append.last().unwrap().log_id);
    e
}

fn heartbeat(term: u64, leader_id: NodeId, commit: u64) -> AppendEntriesRequest<u64> {
    AppendEntriesRequest {
        term,
        leader_id,
        prev_log_id: LogId::new(0, 1),
        entries: vec![],
        leader_commit: commit,
        round: 0,
    }
}

/// The vote requests in `e`'s next output, by target.
fn vote_requests(e: &mut Engine<u64>) -> Vec<(NodeId, VoteRequest)> {
    e.take_output()
        .messages
        .into_iter()
        .filter_map(|(to, m)| match m {
            Request::Vote(v) => Some((to, v)),
            _ => None,
        })
        .collect()
}

/// Makes `e` campaign: ticks it to its own election deadline. Returns its vote requests.
fn time_out(e: &mut Engine<u64>) -> Vec<(NodeId, VoteRequest)> {
    let deadline = e.next_deadline();
    e.tick(deadline);
    assert_eq!(
        e.role(),
        Role::Candidate,
        "node {} did not campaign",
        e.id()
    );
    vote_requests(e)
}

// ===== question 1: what makes a follower a candidate =====

#[test]
fn heartbeats_from_the_current_leader_keep_a_follower_from_campaigning() {
    let mut e = node(1, &[1, 2, 3]);
    let mut last_heartbeat = 0;
    // Ten seconds of heartbeats every 50 ms from node 2, leader of term 1, while time passes in
    // 10 ms steps: the follower never campaigns.
    for t in (10..=10_000).step_by(10) {
        e.tick(t);
        if t % 50 == 0 {
            let r = e.handle_append_entries(heartbeat(1, 2, 1));
            assert_eq!(r.term, 1);
            last_heartbeat = t;
        }
        assert_eq!(
            e.role(),
            Role::Follower,
            "campaigned at {t} despite heartbeats"
        );
        assert_eq!(e.term(), u64::from(t >= 50));
        let _ = e.take_output();
    }
    // The heartbeats stop: the follower campaigns after its randomized timeout, no sooner.
    let mut t = last_heartbeat;
    while e.role() == Role::Follower {
        t += 1;
        e.tick(t);
    }
    let silence = t - last_heartbeat;
    assert!(
        (MIN..MAX).contains(&silence),
        "campaigned after {silence} ms of silence"
    );
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.term(), 2);
}

#[test]
fn append_entries_of_the_current_leader_resets_the_timer_even_when_the_log_does_not_match() {
    let mut e = node(1, &[1, 2, 3]);
    let deadline = e.next_deadline();
    e.tick(deadline - 1);
    // Node 2, leader of term 1, probes at an index this follower does not have: a Conflict reply,
    // but it is a live leader of the current term, so the election timer restarts.
    let r = e.handle_append_entries(AppendEntriesRequest {
        prev_log_id: LogId::new(1, 7),
        ..heartbeat(1, 2, 0)
    });
    assert!(
        matches!(r.result, raft_core::AppendResult::Conflict { .. }),
        "{r:?}"
    );
    assert!(e.next_deadline() >= deadline - 1 + MIN, "timer not reset");
    e.tick(deadline);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), Some(2));
}

#[test]
fn malformed_append_entries_does_not_reset_the_timer() {
    let mut e = node(1, &[1, 2, 3]);
    let deadline = e.next_deadline();
    e.tick(deadline - 1);
    // Entries that do not follow prev_log_id: refused as invalid, nothing changes.
    let r = e.handle_append_entries(AppendEntriesRequest {
        entries: vec![raft_core::Entry {
            log_id: LogId::new(1, 5),
            payload: raft_core::EntryPayload::Blank.into(),
        }],
        ..heartbeat(1, 2, 0)
    });
    assert_eq!(r.result, raft_core::AppendResult::Invalid);
    assert_eq!(
        e.next_deadline(),
        deadline,
        "a malformed request moved the timer"
    );
    e.tick(deadline);
    assert_eq!(e.role(), Role::Candidate);
}

#[test]
fn stepping_down_restarts_the_election_timer() {
    // A candidate that learns a higher term from a vote reply.
    let mut e = node(1, &[1, 2, 3]);
    let _ = time_out(&mut e);
    let t = e.next_deadline() - 1;
    e.tick(t);
    e.handle_vote_response(
        2,
        VoteResponse {
            term: 5,
            vote_granted: false,
        },
    );
    assert_eq!((e.role(), e.term()), (Role::Follower, 5));
    assert!((t + MIN..t + MAX).contains(&e.next_deadline()));

    // A leader that steps down by check-quorum (it hears from no one).
    let mut e = node(1, &[1, 2, 3]);
    let reqs = time_out(&mut e);
    for (to, _) in reqs {
        e.handle_vote_response(
            to,
            VoteResponse {
                term: 1,
                vote_granted: true,
            },
        );
    }
    assert_eq!(e.role(), Role::Leader);
    let mut t = e.now();
    while e.role() == Role::Leader {
        t += 1;
        e.tick(t);
        let _ = e.take_output();
    }
    assert!((t + MIN..t + MAX).contains(&e.next_deadline()));
}

// ===== question 2: one vote per term, first come first served =====

#[test]
fn first_request_of_a_term_wins_the_vote_even_against_a_better_log() {
    let mut voter = node(3, &[1, 2, 3]);
    let first = VoteRequest {
        term: 1,
        candidate_id: 1,
        last_log_id: LogId::new(0, 1),
        leadership_transfer: false,
    };
    assert!(voter.handle_vote_request(first).vote_granted);
    assert_eq!(
        voter.take_output().hard_state,
        Some(HardState {
            term: 1,
            voted_for: Some(1)
        }),
        "the vote is in the output to persist before the reply leaves"
    );
    // A second candidate of the same term, even with a longer log, is refused: the vote is spent.
    let second = VoteRequest {
        term: 1,
        candidate_id: 2,
        last_log_id: LogId::new(0, 9),
        leadership_transfer: false,
    };
    let r = voter.handle_vote_request(second);
    assert_eq!(
        r,
        VoteResponse {
            term: 1,
            vote_granted: false
        }
    );
    assert_eq!(voter.hard_state().voted_for, Some(1));
    assert_eq!(voter.take_output().hard_state, None, "nothing changed");
}

// ===== question 3: when every node is a candidate =====

#[test]
fn when_every_node_times_out_together_nobody_wins_and_the_next_timeout_elects() {
    let voters = [1, 2, 3];
    let mut nodes: Vec<Engine<u64>> = voters.iter().map(|&id| node(id, &voters)).collect();
    // Every node times out before any vote request arrives: three candidates of term 1, each with
    // its own vote.
    let mut requests = Vec::new();
    for e in &mut nodes {
        for (to, req) in time_out(e) {
            requests.push((e.id(), to, req));
        }
        assert_eq!(
            e.hard_state(),
            HardState {
                term: 1,
                voted_for: Some(e.id())
            }
        );
    }
    let at = |id: NodeId| (id - 1) as usize;
    // Each candidate refuses the others: it already voted for itself in term 1.
    for (from, to, req) in requests {
        let r = nodes[at(to)].handle_vote_request(req);
        assert_eq!(
            r,
            VoteResponse {
                term: 1,
                vote_granted: false
            },
            "node {to} voted for node {from}"
        );
        nodes[at(from)].handle_vote_response(to, r);
    }
    for e in &mut nodes {
        assert_eq!(
            (e.role(), e.term()),
            (Role::Candidate, 1),
            "node {}",
            e.id()
        );
        assert_eq!(e.hard_state().voted_for, Some(e.id()));
    }

    // Their timers were drawn at random when they campaigned: the first to fire again starts term 2.
    let deadlines: Vec<u64> = nodes.iter().map(|e| e.next_deadline()).collect();
    let first = *deadlines.iter().min().unwrap();
    assert_eq!(
        deadlines.iter().filter(|&&d| d == first).count(),
        1,
        "two timers fire at once: {deadlines:?}"
    );
    let winner = voters[deadlines.iter().position(|&d| d == first).unwrap()];
    for e in &mut nodes {
        e.tick(first);
    }
    let requests = vote_requests(&mut nodes[at(winner)]);
    assert_eq!(nodes[at(winner)].term(), 2);
    for (to, req) in requests {
        // A higher term frees the vote: the other candidates step down and grant it.
        let r = nodes[at(to)].handle_vote_request(req);
        assert!(r.vote_granted, "node {to} refused the term-2 candidate");
        assert_eq!(nodes[at(to)].role(), Role::Follower);
        assert_eq!(
            nodes[at(to)].hard_state(),
            HardState {
                term: 2,
                voted_for: Some(winner)
            }
        );
        nodes[at(winner)].handle_vote_response(to, r);
    }
    assert_eq!(nodes[at(winner)].role(), Role::Leader);
}

#[test]
fn candidate_steps_down_when_it_learns_a_higher_term_even_from_a_refusal() {
    // Node 1 has campaigned twice (term 2), node 2 once (term 1).
    let mut one = node(1, &[1, 2, 3]);
    let mut two = node(2, &[1, 2, 3]);
    let _ = time_out(&mut one);
    let to_two = time_out(&mut one);
    assert_eq!((one.role(), one.term()), (Role::Candidate, 2));
    let to_one = time_out(&mut two);
    assert_eq!((two.role(), two.term()), (Role::Candidate, 1));

    // Node 1 refuses node 2's request of term 1 (stale term) and stays a candidate.
    let (_, req) = to_one.into_iter().find(|(to, _)| *to == 1).unwrap();
    let r = one.handle_vote_request(req);
    assert_eq!(
        r,
        VoteResponse {
            term: 2,
            vote_granted: false
        }
    );
    assert_eq!(one.role(), Role::Candidate);
    // The refusal carries term 2: node 2 steps down to follower of term 2, its vote free again...
    two.handle_vote_response(1, r);
    assert_eq!((two.role(), two.term()), (Role::Follower, 2));
    assert_eq!(two.hard_state().voted_for, None);
    // ...so it grants node 1's request of term 2 (their logs are equal).
    let (_, req) = to_two.into_iter().find(|(to, _)| *to == 2).unwrap();
    assert!(two.handle_vote_request(req).vote_granted);
    assert_eq!(two.hard_state().voted_for, Some(1));
}

// ===== question 4: a split vote =====

#[test]
fn two_candidates_can_split_four_voters_two_to_two() {
    let voters = [1, 2, 3, 4];
    let mut n: Vec<Engine<u64>> = voters.iter().map(|&id| node(id, &voters)).collect();
    let req_of = |reqs: &[(NodeId, VoteRequest)], to: NodeId| {
        reqs.iter().find(|(t, _)| *t == to).unwrap().1.clone()
    };
    // Nodes 1 and 2 time out before hearing from each other.
    let from1 = time_out(&mut n[0]);
    let from2 = time_out(&mut n[1]);
    // Node 3 hears from 1 first, node 4 from 2 first.
    let grants = [
        (3, 1, n[2].handle_vote_request(req_of(&from1, 3))),
        (4, 2, n[3].handle_vote_request(req_of(&from2, 4))),
    ];
    for (voter, candidate, r) in grants {
        assert!(r.vote_granted, "node {voter} refused node {candidate}");
        n[(candidate - 1) as usize].handle_vote_response(voter, r);
    }
    // Every later request of term 1 is refused: each voter has spent its vote.
    let refusals = [
        (3, 2, n[2].handle_vote_request(req_of(&from2, 3))),
        (4, 1, n[3].handle_vote_request(req_of(&from1, 4))),
        (2, 1, n[1].handle_vote_request(req_of(&from1, 2))),
        (1, 2, n[0].handle_vote_request(req_of(&from2, 1))),
    ];
    for (voter, candidate, r) in refusals {
        assert!(
            !r.vote_granted,
            "node {voter} granted node {candidate} a second vote"
        );
        n[(candidate - 1) as usize].handle_vote_response(voter, r);
    }
    // Two votes each; a majority of 4 is 3: nobody wins term 1.
    assert_eq!(Membership::new(voters).quorum(), 3);
    for e in &n[..2] {
        assert_eq!((e.role(), e.term()), (Role::Candidate, 1));
    }
    assert!(n.iter().all(|e| e.role() != Role::Leader));
    // The candidates wait for their own, different, timers; the first to fire starts term 2.
    assert_ne!(n[0].next_deadline(), n[1].next_deadline());
}

// ===== question 5: no majority =====

#[test]
fn a_node_without_a_majority_campaigns_forever_and_commits_nothing() {
    let mut e = node(1, &[1, 2, 3]);
    let mut elections = 0;
    // Ten seconds alone: every vote request goes unanswered.
    for t in 1..=10_000 {
        let term = e.term();
        e.tick(t);
        let out = e.take_output();
        assert!(
            out.messages
                .iter()
                .all(|(_, m)| matches!(m, Request::Vote(_))),
            "sent something other than vote requests: {out:?}"
        );
        assert!(out.apply.is_empty() && out.append.is_empty());
        if e.term() > term {
            elections += 1;
        }
        assert_ne!(e.role(), Role::Leader, "leader without a majority at {t}");
        assert_eq!(e.commit_index(), 0);
        assert!(e.propose(t).is_err(), "a proposal was accepted at {t}");
    }
    // One new term per timeout, each 150..300 ms.
    assert!(
        (10_000 / MAX..=10_000 / MIN).contains(&elections),
        "{elections} elections in 10 s"
    );
    assert_eq!(e.term(), elections);
}
