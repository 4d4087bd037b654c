//! Leadership transfer: the leader hands over to an up-to-date voter with no election timeout of
//! unavailability, or gives up after one and leads on.

use super::*;
use crate::error::TransferError;
use crate::message::TimeoutNowRequest;

/// The defaults (pre-vote, check-quorum), a fixed seed.
fn defaults() -> Config {
    Config {
        seed: 11,
        ..Config::default()
    }
}

/// A three-node cluster with node 1 leading, every node following it.
fn led_by_1() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3], &defaults());
    c.elect(1);
    let t = c.now + HB;
    c.advance(t);
    c
}

/// Runs the cluster without moving time, then moves it in small steps until `done` or `limit` ms.
fn advance_until(c: &mut Cluster, limit: u64, done: impl Fn(&Cluster) -> bool) -> bool {
    c.run();
    let end = c.now + limit;
    while !done(c) {
        if c.now >= end {
            return false;
        }
        let t = c.now + 5;
        c.advance(t);
    }
    true
}

#[test]
fn a_transfer_hands_leadership_over_at_once_and_refuses_proposals_meanwhile() {
    let mut c = led_by_1();
    let term = c.engine(1).term();
    c.engine_mut(1).transfer_leadership(2).unwrap();
    assert_eq!(c.engine(1).transferring_to(), Some(2));
    // Proposals go to the target from now on.
    assert_eq!(
        c.engine_mut(1).propose(5),
        Err(NotLeader {
            leader_hint: Some(2)
        })
    );
    // Without moving time: TimeoutNow, the target's election (granted although every voter still
    // hears from node 1: it is marked as a transfer), and node 1 steps down.
    c.run();
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.engine(2).term(), term + 1);
    assert_eq!(c.engine(1).role(), Role::Follower);
    assert_eq!(c.engine(1).transferring_to(), None);
    assert_eq!(c.engine(1).election_stats().transfers_started, 1);
    assert_eq!(c.engine(2).election_stats().elections_started, 1);
    c.propose(2, 7);
    let t = c.now + HB;
    c.advance(t);
    c.assert_applied_consistent();
}

#[test]
fn a_lagging_target_is_brought_up_to_date_before_it_is_told_to_campaign() {
    let mut c = led_by_1();
    c.isolated.insert(3);
    for n in 0..5 {
        c.propose(1, n);
    }
    let last = c.engine(1).last_log_id();
    assert!(c.engine(3).last_log_id() < last);
    c.isolated.clear();
    // The AppendEntries lost while node 3 was away time out (the driver reports each one).
    c.engine_mut(1).handle_unreachable(3);
    c.engine_mut(1).transfer_leadership(3).unwrap();
    assert!(
        advance_until(&mut c, MAX, |c| c.leader() == Some(3)),
        "node 3 did not take over"
    );
    // It campaigned only with every entry of the old leader: none is lost.
    assert!(c.engine(3).last_log_id() > last);
    assert_eq!(c.engine(3).entry(last.index).map(|e| e.log_id), Some(last));
    let t = c.now + HB;
    c.advance(t);
    c.assert_applied_consistent();
}

#[test]
fn a_transfer_to_an_unreachable_target_is_abandoned_after_an_election_timeout() {
    let mut c = led_by_1();
    let term = c.engine(1).term();
    c.isolated.insert(3);
    c.engine_mut(1).transfer_leadership(3).unwrap();
    let started = c.now;
    assert!(
        advance_until(&mut c, 2 * MAX, |c| c.engine(1).transferring_to().is_none()),
        "the transfer never ended"
    );
    assert!(
        c.now - started >= MAX,
        "abandoned early, after {} ms",
        c.now - started
    );
    assert!(
        c.now - started <= MAX + HB,
        "abandoned late, after {} ms",
        c.now - started
    );
    // Node 1 leads on in its term and takes proposals again.
    assert_eq!(
        (c.engine(1).role(), c.engine(1).term()),
        (Role::Leader, term)
    );
    assert_eq!(c.engine(1).election_stats().transfers_abandoned, 1);
    c.propose(1, 9);
    let t = c.now + HB;
    c.advance(t);
    assert_eq!(c.engine(2).commit_index(), c.engine(1).commit_index());
}

#[test]
fn a_target_that_refuses_to_campaign_ends_the_transfer_at_once() {
    let mut c = led_by_1();
    // Node 2 lost entries it may have acknowledged: it may not campaign.
    c.engine_mut(2).catching_up = true;
    c.engine_mut(1).transfer_leadership(2).unwrap();
    c.run();
    assert_eq!(c.engine(1).role(), Role::Leader);
    assert_eq!(c.engine(1).transferring_to(), None);
    assert_eq!(c.engine(1).election_stats().transfers_abandoned, 1);
}

#[test]
fn transfers_that_cannot_start_are_refused() {
    let mut c = led_by_1();
    assert_eq!(
        c.engine_mut(2).transfer_leadership(3),
        Err(TransferError::NotLeader {
            leader_hint: Some(1)
        })
    );
    for target in [1, 4] {
        assert_eq!(
            c.engine_mut(1).transfer_leadership(target),
            Err(TransferError::NotAVoter { target })
        );
    }
    assert_eq!(c.engine(1).transferring_to(), None);
}

#[test]
fn the_default_target_is_the_follower_with_the_most_of_the_log() {
    let mut c = led_by_1();
    c.isolated.insert(2);
    c.propose(1, 1);
    assert_eq!(c.engine(1).transfer_target(), Some(3));
    c.isolated.clear();
    c.isolated.insert(3);
    c.propose(1, 2);
    c.propose(1, 3);
    let t = c.now + HB;
    c.advance(t);
    assert_eq!(c.engine(1).transfer_target(), Some(2));
    assert_eq!(c.engine(2).transfer_target(), None, "not the leader");
    // Node 2 down as well: nobody answered for a minimum election timeout, nobody could take over.
    c.isolated.insert(2);
    let t = c.now + MIN;
    c.advance(t);
    assert_eq!(c.engine(1).transfer_target(), None);
}

#[test]
fn a_time_out_now_from_a_newer_term_or_to_a_leader_starts_no_election() {
    let mut c = led_by_1();
    let term = c.engine(1).term();
    let resp = c.engine_mut(2).handle_timeout_now(TimeoutNowRequest {
        term: term + 3,
        leader_id: 3,
    });
    assert!(!resp.campaigning);
    assert_eq!(c.engine(2).role(), Role::Follower);
    let resp = c
        .engine_mut(1)
        .handle_timeout_now(TimeoutNowRequest { term, leader_id: 3 });
    assert!(!resp.campaigning);
    assert_eq!(c.engine(1).role(), Role::Leader);
}

#[test]
fn a_removed_leader_with_writes_after_c_new_hands_over_without_an_election_timeout() {
    let mut c = led_by_1();
    let term = c.engine(1).term();
    c.engine_mut(1)
        .change_membership(MembershipChange::Remove { id: 1 })
        .unwrap();
    c.flush(1);
    // Deliver until the joint configuration commits and node 1 appends C_new, then write once more
    // before C_new's acknowledgements come back: when C_new commits, no voter holds the whole log.
    while c.engine(1).membership().is_joint() {
        assert!(c.deliver_one(), "the joint configuration did not commit");
    }
    let write = c.engine_mut(1).propose(99).unwrap();
    c.run();
    // Without moving time (no election timeout): a remaining voter leads the next term, by
    // TimeoutNow, and holds the write; node 1 is a follower.
    let leader = c.leader().expect("a leader without an election timeout");
    assert!([2, 3].contains(&leader), "leader {leader}");
    assert_eq!(c.engine(leader).term(), term + 1);
    assert_eq!(c.engine(1).role(), Role::Follower);
    assert!(c.engine(leader).last_log_id().index >= write.index);
    assert_eq!(c.engine(leader).membership().voters, [2, 3].into());
    c.propose(leader, 7);
    c.assert_applied_consistent();
}

/// A TimeoutNow that left may elect its target after the transfer was abandoned (it, or the
/// target's vote requests, can arrive late, and the transfer's votes ignore stickiness): the old
/// leader's lease must not come back with the rounds it confirms after the abandonment, or it
/// would serve reads on it while the target leads a newer term.
#[test]
fn no_lease_after_a_transfer_whose_timeout_now_left() {
    let config = Config {
        read_policy: crate::ReadPolicy::Lease {
            clock_drift_bound: std::time::Duration::ZERO,
        },
        ..defaults()
    };
    let mut c = Cluster::new(&[1, 2, 3], &config);
    // With leases, a node that just started refuses votes for a minimum election timeout.
    c.advance(config.election_timeout_min.as_millis() as u64);
    c.elect(1);
    let t = c.now + HB;
    c.advance(t);
    assert!(
        c.engine(1).lease_valid(),
        "rounds confirmed: the lease holds"
    );
    let term = c.engine(1).term();
    // The TimeoutNow to node 2 is lost (late, as far as anyone can tell); the transfer is
    // abandoned, and node 3 keeps answering node 1's rounds.
    c.cut.insert((1, 2));
    c.engine_mut(1).transfer_leadership(2).unwrap();
    assert!(advance_until(&mut c, 2 * MAX, |c| c
        .engine(1)
        .transferring_to()
        .is_none()));
    let t = c.now + 2 * HB;
    c.advance(t);
    assert_eq!(c.engine(1).role(), Role::Leader);
    assert!(
        !c.engine(1).lease_valid(),
        "no lease in the term of a TimeoutNow that left"
    );
    // Why: the late TimeoutNow arrives, node 2 campaigns as a transfer and node 3 votes for it,
    // although it heard from node 1 a moment ago.
    c.isolated.insert(1);
    let resp = c
        .engine_mut(2)
        .handle_timeout_now(TimeoutNowRequest { term, leader_id: 1 });
    assert!(resp.campaigning);
    c.flush(2);
    c.run();
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.engine(1).role(), Role::Leader, "node 1 does not know yet");
    assert!(!c.engine(1).lease_valid());
}
