//! Pre-vote, leader stickiness and check-quorum, with the defaults on: whole-cluster scenarios on the
//! synchronous [`Cluster`], time moving in steps of 5 ms, and single-engine checks of the rules.

use super::*;
use crate::message::{PreVoteRequest, PreVoteResponse};

const STEP: u64 = 5;

/// The defaults (pre-vote and check-quorum on), with a fixed seed.
fn defaults() -> Config {
    let c = Config {
        seed: 7,
        ..Config::default()
    };
    assert!(c.pre_vote && c.check_quorum);
    c
}

/// What happened while time moved: the terms and leaders seen at each step.
#[derive(Debug, Default)]
struct Watch {
    /// Every (node, term) change seen, in order, with its time.
    term_changes: Vec<(u64, NodeId, Term)>,
    /// Every node that was leader at some step, with its term.
    leaders: BTreeSet<(NodeId, Term)>,
}

/// Moves time by `ms` in steps of [`STEP`], recording term changes and leaders.
fn run_for(c: &mut Cluster, ms: u64) -> Watch {
    let mut watch = Watch::default();
    let mut terms: BTreeMap<NodeId, Term> = c
        .ids()
        .into_iter()
        .map(|id| (id, c.engine(id).term()))
        .collect();
    let end = c.now + ms;
    while c.now < end {
        let t = c.now + STEP;
        c.advance(t);
        for id in c.ids() {
            let e = c.engine(id);
            if terms[&id] != e.term() {
                watch.term_changes.push((c.now, id, e.term()));
                terms.insert(id, e.term());
            }
            if e.role() == Role::Leader {
                watch.leaders.insert((id, e.term()));
            }
        }
    }
    watch
}

/// A cluster of `voters` on `config` that elected a leader which every node follows; returns it.
fn settled(voters: &[NodeId], config: &Config) -> (Cluster, NodeId) {
    let mut c = Cluster::new(voters, config);
    while c.leader().is_none() || voters.iter().any(|&id| c.engine(id).leader() != c.leader()) {
        assert!(c.now < 10 * MAX, "no leader every node follows");
        let t = c.now + STEP;
        c.advance(t);
    }
    // A few heartbeats, so every follower heard from the leader just now.
    run_for(&mut c, 2 * HB);
    let leader = c.leader().expect("a leader");
    (c, leader)
}

fn followers(voters: &[NodeId], leader: NodeId) -> Vec<NodeId> {
    voters.iter().copied().filter(|&id| id != leader).collect()
}

#[test]
fn a_partitioned_node_that_rejoins_does_not_change_the_leaders_term() {
    let voters = [1, 2, 3];
    let (mut c, leader) = settled(&voters, &defaults());
    let term = c.engine(leader).term();
    let away = followers(&voters, leader)[0];

    // Cut off for many election timeouts: it asks for pre-votes again and again, in vain, and
    // never raises its term.
    c.isolated.insert(away);
    let cut_off = run_for(&mut c, 20 * MAX);
    assert_eq!(c.engine(away).term(), term, "{cut_off:?}");
    let stats = c.engine(away).election_stats();
    assert!(stats.pre_votes_lost >= 5, "{stats:?}");
    assert_eq!(stats.elections_started, 0, "{stats:?}");

    // Back: the leader keeps its office and its term, and the node follows it again.
    c.isolated.clear();
    let back = run_for(&mut c, 10 * MAX);
    assert!(back.term_changes.is_empty(), "{back:?}");
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.engine(away).leader(), Some(leader));
    assert_eq!(c.engine(leader).term(), term);
    c.assert_applied_consistent();
}

#[test]
fn without_pre_vote_the_rejoining_node_deposes_the_leader() {
    // The scenario above with pre-vote off: what pre-vote prevents (and what makes the test above
    // fail when pre-vote is broken).
    let voters = [1, 2, 3];
    let config = Config {
        pre_vote: false,
        ..defaults()
    };
    let (mut c, leader) = settled(&voters, &config);
    let term = c.engine(leader).term();
    let away = followers(&voters, leader)[0];
    c.isolated.insert(away);
    run_for(&mut c, 20 * MAX);
    assert!(c.engine(away).term() > term + 5);
    c.isolated.clear();
    run_for(&mut c, 10 * MAX);
    assert!(
        c.engine(leader).term() > term,
        "the leader's term should have moved"
    );
}

#[test]
fn a_node_outside_the_membership_cannot_disrupt_a_healthy_leader() {
    let voters = [1, 2, 3];
    let (mut c, leader) = settled(&voters, &defaults());
    let term = c.engine(leader).term();
    let last = c.engine(leader).last_log_id();
    // Node 9, not a member (removed, or never added), with a log as long as anyone's and a term far
    // ahead: the cluster neither adopts the term nor gives a vote or a pre-vote.
    for id in voters {
        let e = c.engine_mut(id);
        let vote = VoteRequest {
            term: term + 50,
            candidate_id: 9,
            last_log_id: LogId::new(term + 10, last.index + 100),
            leadership_transfer: false,
        };
        assert_eq!(
            e.vote_refusal(&vote),
            Some(VoteRefusal::LeaderAlive { leader }),
            "node {id}"
        );
        let resp = e.handle_vote_request(vote);
        assert!(
            !resp.vote_granted && resp.term == term,
            "node {id}: {resp:?}"
        );
        let pre = e.handle_pre_vote_request(PreVoteRequest {
            term: term + 50,
            candidate_id: 9,
            last_log_id: LogId::new(term + 10, last.index + 100),
        });
        assert_eq!(
            pre,
            PreVoteResponse {
                term,
                vote_granted: false
            },
            "node {id}"
        );
        assert_eq!(e.term(), term, "node {id}");
    }
    c.run();
    let after = run_for(&mut c, 5 * MAX);
    assert!(after.term_changes.is_empty(), "{after:?}");
    assert_eq!(c.leader(), Some(leader));
}

#[test]
fn a_follower_that_lost_its_leader_grants_pre_votes_and_votes() {
    // Stickiness lasts only as long as the leader is heard from: a minimum election timeout.
    let voters = [1, 2, 3];
    let (mut c, leader) = settled(&voters, &defaults());
    let term = c.engine(leader).term();
    let voter = followers(&voters, leader)[0];
    let candidate = followers(&voters, leader)[1];
    let last = c.engine(voter).last_log_id();
    let pre = PreVoteRequest {
        term: term + 1,
        candidate_id: candidate,
        last_log_id: last,
    };
    assert!(c.engine(voter).pre_vote_refusal(&pre).is_some());
    // Nothing from the leader for a minimum election timeout (the voter's own timer has not fired:
    // the engine's clock moves without a tick).
    let heard = c.engine(voter).now();
    let hard_state = c.engine(voter).hard_state();
    c.engine_mut(voter).advance_clock(heard + MIN);
    assert_eq!(c.engine(voter).leader_alive(), None);
    assert_eq!(c.engine(voter).pre_vote_refusal(&pre), None);
    let resp = c.engine_mut(voter).handle_pre_vote_request(pre);
    assert!(resp.vote_granted);
    // Granting a pre-vote changes nothing: not the term, not the vote.
    assert_eq!(c.engine(voter).hard_state(), hard_state);
    assert_eq!(c.engine(voter).term(), term);
    // And the real vote of that term is free too.
    let vote = VoteRequest {
        term: term + 1,
        candidate_id: candidate,
        last_log_id: last,
        leadership_transfer: false,
    };
    assert_eq!(c.engine(voter).vote_refusal(&vote), None);
}

#[test]
fn pre_vote_does_not_block_an_election_when_the_leader_is_really_gone() {
    // Bound: the survivors stop hearing the leader; the first timer fires within
    // election_timeout_max, its pre-vote round and election take a few message round trips (here
    // instant), and a split costs one more timeout. Two election timeouts bound it here.
    for seed in 0..20 {
        let config = Config { seed, ..defaults() };
        let voters = [1, 2, 3, 4, 5];
        let (mut c, leader) = settled(&voters, &config);
        let term = c.engine(leader).term();
        c.isolated.insert(leader);
        let crashed_at = c.now;
        while c.leader().is_none_or(|l| l == leader) {
            assert!(
                c.now < crashed_at + 2 * MAX + MIN,
                "seed {seed}: no new leader within the bound"
            );
            let t = c.now + STEP;
            c.advance(t);
        }
        let new_leader = c.leader().expect("a new leader");
        // Pre-votes keep losers from raising their terms: only real elections count.
        assert!(
            c.engine(new_leader).term() <= term + 2,
            "seed {seed}: term {} after one lost leader",
            c.engine(new_leader).term()
        );
    }
}

#[test]
fn check_quorum_steps_a_minority_leader_down_within_its_stated_bound() {
    // Config::check_quorum: a cut-off leader stops leading within 2 x election_timeout_max of the
    // last answer it had from a majority.
    let voters = [1, 2, 3];
    let (mut c, leader) = settled(&voters, &defaults());
    c.isolated.insert(leader);
    let cut_at = c.now;
    while c.engine(leader).role() == Role::Leader {
        assert!(
            c.now <= cut_at + 2 * MAX,
            "still leading {} ms after the cut",
            c.now - cut_at
        );
        let t = c.now + STEP;
        c.advance(t);
    }
}

#[test]
fn a_bridge_partition_keeps_one_stable_leader_and_no_term_changes() {
    // Nodes at both ends of a bridge (they cannot reach each other; both reach the middle). Each
    // case puts the leader at a different place; while the bridge lasts there is one leader and
    // no term changes after the first election timeout.
    for leader_at in ["end", "middle"] {
        let voters = [1, 2, 3];
        let (mut c, leader) = settled(&voters, &defaults());
        let others = followers(&voters, leader);
        let (a, b) = match leader_at {
            "end" => (leader, others[0]),
            _ => (others[0], others[1]),
        };
        for (x, y) in [(a, b), (b, a)] {
            c.cut.insert((x, y));
        }
        let settle = run_for(&mut c, 2 * MAX);
        let steady = run_for(&mut c, 30 * MAX);
        assert!(
            steady.term_changes.is_empty(),
            "leader at the {leader_at}: terms changed while the bridge lasted: {steady:?} (settling: {settle:?})"
        );
        assert_eq!(
            steady.leaders.len(),
            1,
            "leader at the {leader_at}: {steady:?}"
        );
        assert!(
            settle.term_changes.is_empty(),
            "leader at the {leader_at}: a healthy leader was deposed: {settle:?}"
        );
    }
}

#[test]
fn a_one_way_cut_from_the_followers_moves_leadership_once() {
    // The leader still reaches its followers but hears nothing back. Check-quorum makes it step
    // down; the followers then elect one of themselves, and that leader stays.
    let voters = [1, 2, 3];
    let (mut c, leader) = settled(&voters, &defaults());
    let term = c.engine(leader).term();
    for f in followers(&voters, leader) {
        c.cut.insert((f, leader));
    }
    let watch = run_for(&mut c, 30 * MAX);
    let new_leaders: BTreeSet<NodeId> = watch
        .leaders
        .iter()
        .filter(|&&(_, t)| t > term)
        .map(|&(id, _)| id)
        .collect();
    assert_eq!(new_leaders.len(), 1, "{watch:?}");
    assert!(!new_leaders.contains(&leader), "{watch:?}");
    let new_leader = *new_leaders.first().unwrap();
    assert_eq!(c.leader(), Some(new_leader));
}

#[test]
fn a_pre_candidate_without_a_majority_stays_in_its_term_and_counts_the_loss() {
    let voters = [1, 2, 3];
    let mut c = Cluster::new(&voters, &defaults());
    c.isolated.insert(2);
    c.isolated.insert(3);
    run_for(&mut c, 10 * MAX);
    let e = c.engine(1);
    assert_eq!(e.term(), 0);
    assert_eq!(e.role(), Role::PreCandidate);
    assert!(e.election_stats().pre_votes_lost >= 3);
    assert_eq!(e.election_stats().elections_started, 0);
}

#[test]
fn a_refused_pre_vote_from_a_higher_term_makes_the_node_adopt_it() {
    let mut e = initialized(1, &[1, 2, 3], &defaults(), 0);
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::PreCandidate);
    let _ = e.take_output();
    e.handle_pre_vote_response(
        2,
        PreVoteResponse {
            term: 7,
            vote_granted: false,
        },
    );
    assert_eq!((e.role(), e.term()), (Role::Follower, 7));
}
