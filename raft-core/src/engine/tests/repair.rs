//! A follower that lost entries it had acknowledged (its disk lost them, or it came back from an old
//! copy) is repaired by its leader: a fresh answer showing its log ends below its match index resets
//! its progress, so the leader replicates the entries again (instead of never sending below the
//! match index). A stale answer never moves progress backwards.

use super::*;

/// Node 1 leading {1, 2, 3} in term 2 with entries 2, 3 (term 1) and its blank at 4, every follower
/// caught up (match 4, Replicate), nothing in flight.
fn leader() -> Engine<u64> {
    let e = replicating_leader(&config(), &[1, 2, 3], &[1, 1], hs(1, None));
    assert_eq!(progress_of(&e, 2), (4, 5, ReplicationState::Replicate));
    e
}

/// The heartbeat node 1 sends node 2 at its next heartbeat.
fn next_heartbeat_to_2(e: &mut Engine<u64>) -> AppendEntriesRequest<u64> {
    let deadline = e.next_deadline();
    e.tick(deadline);
    let out = e.take_output();
    let hb = appends_to(&out, 2);
    assert_eq!(hb.len(), 1, "{out:?}");
    hb[0].clone()
}

#[test]
fn a_heartbeat_answer_showing_a_shorter_log_than_acknowledged_resets_the_follower() {
    let mut e = leader();
    let hb = next_heartbeat_to_2(&mut e);
    assert_eq!(hb.prev_log_id.index, 4, "anchored at the match index");
    // Node 2 restarted with only entries 1 and 2.
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 3));
    assert_eq!(progress_of(&e, 2), (0, 3, ReplicationState::Probe));
    assert_eq!(e.followers_repaired(), 1);
    let out = e.take_output();
    let resend = appends_to(&out, 2);
    assert_eq!(resend.len(), 1, "{out:?}");
    assert_eq!(resend[0].prev_log_id, LogId::new(1, 2));
    assert_eq!(indexes(&resend[0].entries), vec![3, 4]);
    // Node 2 acknowledges them again: its match climbs back.
    e.handle_append_entries_response(2, success(e.term(), 4));
    assert_eq!(progress_of(&e, 2).0, 4);
    assert_eq!(e.commit_index(), 4, "the commit index never went back");
}

#[test]
fn a_probe_answer_showing_a_shorter_log_than_acknowledged_resets_the_follower() {
    let mut e = leader();
    e.handle_unreachable(2);
    assert_eq!(progress_of(&e, 2), (4, 5, ReplicationState::Probe));
    let hb = next_heartbeat_to_2(&mut e);
    assert_eq!(hb.prev_log_id.index, 4);
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 2));
    assert_eq!(progress_of(&e, 2), (0, 2, ReplicationState::Probe));
    assert_eq!(e.followers_repaired(), 1);
}

#[test]
fn a_stale_answer_never_moves_progress_back() {
    let mut e = leader();
    // Entries 5 and 6 are in flight to node 2.
    e.propose(50).unwrap();
    e.propose(60).unwrap();
    e.take_output();
    assert_eq!(progress_of(&e, 2), (4, 7, ReplicationState::Replicate));
    // An answer about an index below the match changes nothing.
    e.handle_append_entries_response(2, conflict(e.term(), 3, None, 2));
    assert_eq!(progress_of(&e, 2), (4, 7, ReplicationState::Replicate));
    // Nor does an answer of an older term.
    e.handle_append_entries_response(2, conflict(e.term() - 1, 4, None, 1));
    assert_eq!(progress_of(&e, 2), (4, 7, ReplicationState::Replicate));
    assert!(e.take_output().messages.is_empty());
    // A late answer to an older request that was anchored at 4 (sent before node 2 held it): with
    // requests in flight it cannot be told apart from a follower that lost entry 4, so the leader
    // probes at 4; the match index stays.
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 3));
    assert_eq!(progress_of(&e, 2), (4, 5, ReplicationState::Probe));
    let out = e.take_output();
    let probe = appends_to(&out, 2);
    assert_eq!(probe.len(), 1, "{out:?}");
    assert_eq!(probe[0].prev_log_id.index, 4);
    // Node 2 holds 4: it was a late answer, and replication resumes where it was.
    e.handle_append_entries_response(2, success(e.term(), 6));
    assert_eq!(progress_of(&e, 2), (6, 7, ReplicationState::Replicate));
    assert_eq!(e.followers_repaired(), 0);
}

#[test]
fn a_follower_that_lost_entries_while_requests_were_in_flight_is_repaired() {
    let mut e = leader();
    e.propose(50).unwrap();
    e.propose(60).unwrap();
    e.take_output();
    // Node 2 restarted with entries 1 and 2 only, and answers every request, those in flight
    // included, with a conflict: the leader probes at its match index...
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 3));
    assert_eq!(progress_of(&e, 2), (4, 5, ReplicationState::Probe));
    e.take_output();
    // ...and the fresh answer to the probe shows the loss: the entries are sent again.
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 3));
    assert_eq!(progress_of(&e, 2), (0, 3, ReplicationState::Probe));
    assert_eq!(e.followers_repaired(), 1);
    let out = e.take_output();
    let resend = appends_to(&out, 2);
    assert_eq!(resend[0].prev_log_id.index, 2);
}

#[test]
fn a_conflict_past_the_match_index_is_ordinary_backtracking_not_a_repair() {
    let mut e = leader();
    e.handle_unreachable(2);
    let _ = next_heartbeat_to_2(&mut e);
    // Node 2 holds entry 4 (its log ends at 4): a conflict hint at 5 is not a loss.
    e.handle_append_entries_response(2, conflict(e.term(), 4, None, 5));
    assert_eq!(e.followers_repaired(), 0);
    assert_eq!(progress_of(&e, 2).0, 4);
}
