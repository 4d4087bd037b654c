//! Linearizable reads without log writes: ReadIndex rounds, the leader's first commit, deposed
//! leaders, batching, leases and their expiry.

use super::*;
use crate::config::ReadPolicy;
use crate::engine::{ReadFailed, ReadReady};

/// The defaults (pre-vote, check-quorum), a fixed seed.
fn defaults() -> Config {
    Config {
        seed: 3,
        ..Config::default()
    }
}

/// [`defaults`] with leader leases, less 20 ms of drift: a lease of 130 ms.
fn with_lease() -> Config {
    Config {
        read_policy: ReadPolicy::Lease {
            clock_drift_bound: std::time::Duration::from_millis(20),
        },
        ..defaults()
    }
}
const LEASE: u64 = MIN - 20;

/// A three-node cluster with node 1 leading and its blank entry committed everywhere.
fn led_by_1(config: &Config) -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], config);
    // With leases, nodes refuse votes for a minimum election timeout after they start.
    c.now = MIN;
    for id in c.ids() {
        c.engine_mut(id).advance_clock(MIN);
    }
    c.elect(1);
    let t = c.now + HB;
    c.advance(t);
    c
}

/// The reads node `id` reported ready, in order, since the cluster was built.
fn ready(c: &Cluster, id: NodeId) -> Vec<ReadReady> {
    effects_of(c, id, |e| match e {
        Effect::ReadReady(r) => Some(*r),
        _ => None,
    })
}

/// The reads node `id` reported failed.
fn failed(c: &Cluster, id: NodeId) -> Vec<ReadFailed> {
    effects_of(c, id, |e| match e {
        Effect::ReadFailed(r) => Some(*r),
        _ => None,
    })
}

fn effects_of<T>(c: &Cluster, id: NodeId, pick: impl Fn(&Effect<u64>) -> Option<T>) -> Vec<T> {
    c.trace
        .iter()
        .filter_map(|ev| match ev {
            Event::Executed(node, done) if *node == id => Some(done),
            _ => None,
        })
        .flat_map(|done| done.effects.iter().filter_map(&pick))
        .collect()
}

/// AppendEntries node 1 sent to anyone so far.
fn appends_from_1(c: &Cluster) -> usize {
    c.append_requests
        .iter()
        .filter(|((from, _), _)| *from == 1)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn a_read_is_ready_at_the_commit_index_once_a_majority_answers_a_round() {
    let mut c = led_by_1(&defaults());
    let id = c.propose(1, 7);
    c.node_mut(1).read(1, false).unwrap();
    c.flush(1);
    assert!(
        ready(&c, 1).is_empty(),
        "ready before any follower answered"
    );
    c.run();
    assert_eq!(
        ready(&c, 1),
        vec![ReadReady {
            id: 1,
            index: id.index
        }]
    );
}

#[test]
fn a_follower_does_not_serve_reads_itself() {
    let mut c = led_by_1(&defaults());
    assert_eq!(
        c.node_mut(2).read(1, false),
        Err(NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn no_read_before_the_leaders_first_commit_in_its_term() {
    let mut c = led_by_1(&defaults());
    c.propose(1, 7);
    // Node 2 wins the next term; its blank entry has not reached anyone yet.
    c.engine_mut(2).start_election(true);
    c.flush(2);
    while c.engine(2).role() != Role::Leader {
        assert!(c.deliver_one(), "node 2 did not win");
    }
    c.queue.clear();
    c.node_mut(2).read(9, false).unwrap();
    c.flush(2);
    assert!(
        ready(&c, 2).is_empty(),
        "a read served at a commit index the new leader cannot vouch for"
    );
    // Its heartbeat carries the blank entry; once that commits, the read is registered and
    // confirmed, at the new commit index (the blank's).
    let t = c.now + HB;
    c.advance(t);
    let blank = c.engine(2).last_log_id();
    assert_eq!(c.engine(2).commit_index(), blank.index);
    assert_eq!(
        ready(&c, 2),
        vec![ReadReady {
            id: 9,
            index: blank.index
        }]
    );
}

#[test]
fn a_deposed_leader_cannot_complete_a_read_index() {
    let mut c = led_by_1(&defaults());
    c.propose(1, 7);
    // Node 1 is cut off; nodes 2 and 3 elect node 2 once their leader is silent, and commit.
    c.isolated.insert(1);
    let mut t = c.now;
    while c.leader() != Some(2) && c.leader() != Some(3) {
        t += HB;
        c.advance(t);
        assert!(t < 10 * MAX, "no new leader");
    }
    let new_leader = c.leader().unwrap();
    let write = c.propose(new_leader, 8);
    assert_eq!(c.engine(new_leader).commit_index(), write.index);
    // Node 1 still believes it leads (check-quorum has not yet deposed it): its read is
    // registered, but no round can be confirmed.
    assert_eq!(c.engine(1).role(), Role::Leader);
    c.node_mut(1).read(5, false).unwrap();
    c.run();
    for _ in 0..3 {
        t += HB;
        c.advance(t);
    }
    assert!(ready(&c, 1).is_empty(), "a deposed leader served a read");
    // Check-quorum deposes it within an election timeout; the read fails (nothing was read).
    t += MAX;
    c.advance(t);
    assert_ne!(c.engine(1).role(), Role::Leader);
    assert_eq!(failed(&c, 1).len(), 1);
    assert_eq!(failed(&c, 1)[0].id, 5);
    assert!(ready(&c, 1).is_empty());
}

#[test]
fn a_leader_that_meets_a_higher_term_fails_its_reads() {
    let mut c = led_by_1(&defaults());
    c.isolated.extend([2, 3]);
    c.node_mut(1).read(1, false).unwrap();
    c.run();
    let term = c.engine(1).term();
    c.engine_mut(1).handle_append_entries_response(
        2,
        AppendEntriesResponse {
            term: term + 1,
            result: AppendResult::StaleTerm,
            round: 0,
        },
    );
    c.flush(1);
    assert_eq!(
        failed(&c, 1),
        vec![ReadFailed {
            id: 1,
            leader_hint: None
        }]
    );
}

#[test]
fn reads_registered_together_share_one_round() {
    let mut c = led_by_1(&defaults());
    let before = appends_from_1(&c);
    for id in 0..10 {
        c.node_mut(1).read(id, false).unwrap();
    }
    c.run();
    assert_eq!(ready(&c, 1).len(), 10);
    assert_eq!(
        appends_from_1(&c) - before,
        2,
        "ten reads cost one heartbeat per follower"
    );
}

#[test]
fn a_round_a_follower_never_started_confirms_nothing() {
    let mut c = led_by_1(&defaults());
    c.isolated.extend([2, 3]);
    c.node_mut(1).read(1, false).unwrap();
    c.run();
    let term = c.engine(1).term();
    let last = c.engine(1).last_log_id().index;
    // A hostile (or buggy) peer answers with a round far ahead: ignored, even by two peers.
    for from in [2, 3] {
        c.engine_mut(1).handle_append_entries_response(
            from,
            AppendEntriesResponse {
                term,
                result: AppendResult::Success { match_index: last },
                round: u64::MAX,
            },
        );
    }
    c.flush(1);
    assert!(ready(&c, 1).is_empty());
}

#[test]
fn a_lease_read_is_served_at_once_while_the_lease_holds_and_not_after() {
    let mut c = led_by_1(&with_lease());
    assert!(
        c.engine(1).lease_valid(),
        "the last heartbeat's round renewed it"
    );
    // Served without a message.
    let before = appends_from_1(&c);
    c.node_mut(1).read(1, true).unwrap();
    c.flush(1);
    assert_eq!(ready(&c, 1).len(), 1);
    assert_eq!(appends_from_1(&c), before);
    // A read not asked for in lease mode still takes a round.
    c.node_mut(1).read(2, false).unwrap();
    c.flush(1);
    assert_eq!(ready(&c, 1).len(), 1);
    c.run();
    assert_eq!(ready(&c, 1).len(), 2);

    // Followers cut off: once the lease (from the start of the last confirmed round) runs out,
    // a lease read waits for a round, which nobody answers.
    c.isolated.extend([2, 3]);
    let confirmed_at = c.now;
    let t = confirmed_at + LEASE - 1;
    c.advance(t);
    assert!(c.engine(1).lease_valid());
    let t = confirmed_at + LEASE;
    c.advance(t);
    assert!(!c.engine(1).lease_valid(), "the lease outlived its bound");
    c.node_mut(1).read(3, true).unwrap();
    c.run();
    assert_eq!(ready(&c, 1).len(), 2, "served on an expired lease");
}

#[test]
fn a_transfer_suspends_the_lease() {
    let mut c = led_by_1(&with_lease());
    assert!(c.engine(1).lease_valid());
    c.isolated.insert(2);
    c.engine_mut(1).transfer_leadership(2).unwrap();
    assert!(
        !c.engine(1).lease_valid(),
        "voters grant a transfer's election despite the lease"
    );
}

#[test]
fn leases_need_check_quorum_and_a_drift_below_the_minimum_election_timeout() {
    let no_check_quorum = Config {
        check_quorum: false,
        ..with_lease()
    };
    assert_eq!(
        no_check_quorum.validate(),
        Err(crate::ConfigError::LeaseWithoutCheckQuorum)
    );
    let all_drift = Config {
        read_policy: ReadPolicy::Lease {
            clock_drift_bound: std::time::Duration::from_millis(MIN),
        },
        ..defaults()
    };
    assert!(matches!(
        all_drift.validate(),
        Err(crate::ConfigError::LeaseDriftBound { .. })
    ));
    assert_eq!(with_lease().validate(), Ok(()));
}

#[test]
fn with_leases_a_node_that_just_started_refuses_votes_for_a_minimum_election_timeout() {
    let mut e = engine_with(2, &with_lease(), &[1, 2, 3], &[1], hs(1, None));
    let ask = vote(2, 3, (1, 2));
    assert_eq!(e.vote_refusal(&ask), Some(VoteRefusal::JustStarted));
    assert!(!e.handle_vote_request(ask.clone()).vote_granted);
    e.advance_clock(MIN);
    assert!(e.handle_vote_request(ask).vote_granted);
    // Without leases, at once.
    let mut e = engine_with(2, &defaults(), &[1, 2, 3], &[1], hs(1, None));
    assert!(e.handle_vote_request(vote(2, 3, (1, 2))).vote_granted);
}
