//! Messages no correct peer sends: terms and indexes at the end of the `u64` range, and answers that
//! carry them. Each is refused (a request) or ignored (an answer), and changes nothing: no term, no
//! vote, no log entry, no role change, nothing to persist or send.

use super::*;
use crate::engine::validate::{MAX_INDEX, MAX_TERM};

/// Takes the output and asserts it has nothing to do.
fn assert_nothing_to_do(e: &mut Engine<u64>) {
    let out = e.take_output();
    assert!(out.is_empty(), "expected no effect, got {out:?}");
}

/// A follower of term 3 with a log 1 (membership), 2, 3 (term 1).
fn settled_follower() -> Engine<u64> {
    let mut e = follower(1, &[1, 1], 3);
    e.take_output();
    e
}

fn unchanged(e: &Engine<u64>, term: Term, last: LogId, role: Role) {
    assert_eq!(e.term(), term);
    assert_eq!(e.hard_state().voted_for, None);
    assert_eq!(e.last_log_id(), last);
    assert_eq!(e.role(), role);
}

#[test]
fn vote_request_with_a_term_that_cannot_grow_is_refused_and_changes_nothing() {
    for term in [u64::MAX, u64::MAX - 1, MAX_TERM + 1] {
        let mut e = settled_follower();
        let last = e.last_log_id();
        let resp = e.handle_vote_request(vote(term, 2, (1, 3)));
        assert_eq!(
            resp,
            VoteResponse {
                term: 3,
                vote_granted: false
            }
        );
        unchanged(&e, 3, last, Role::Follower);
        assert_nothing_to_do(&mut e);
    }
}

#[test]
fn vote_request_at_the_largest_term_is_a_normal_request() {
    let mut e = settled_follower();
    let resp = e.handle_vote_request(vote(MAX_TERM, 2, (1, 3)));
    assert_eq!(
        resp,
        VoteResponse {
            term: MAX_TERM,
            vote_granted: true
        }
    );
}

#[test]
fn vote_request_with_an_impossible_last_log_id_is_refused() {
    for last in [(1, u64::MAX), (1, MAX_INDEX + 1), (9, 3)] {
        let mut e = settled_follower();
        let before = e.last_log_id();
        let resp = e.handle_vote_request(vote(5, 2, last));
        assert!(!resp.vote_granted, "{last:?}");
        unchanged(&e, 3, before, Role::Follower);
        assert_nothing_to_do(&mut e);
    }
}

#[test]
fn append_entries_with_out_of_range_terms_or_indexes_is_invalid_and_changes_nothing() {
    let requests = [
        append(u64::MAX, 2, (1, 3), vec![cmd(1, 4)], 3),
        append(4, 2, (1, u64::MAX), Vec::new(), 3),
        append(4, 2, (1, MAX_INDEX), vec![blank(1, MAX_INDEX + 1)], 3),
        append(4, 2, (1, 3), Vec::new(), u64::MAX),
    ];
    for req in requests {
        let mut e = settled_follower();
        let last = e.last_log_id();
        let resp = e.handle_append_entries(req.clone());
        assert_eq!(resp.result, AppendResult::Invalid, "{req:?}");
        assert_eq!(resp.term, 3);
        unchanged(&e, 3, last, Role::Follower);
        assert_eq!(e.leader(), None);
        assert_nothing_to_do(&mut e);
    }
}

#[test]
fn install_snapshot_with_out_of_range_terms_indexes_or_offsets_is_invalid() {
    let base = InstallSnapshotRequest {
        term: 4,
        leader_id: 2,
        meta: SnapshotMeta {
            last_log_id: LogId::new(4, 10),
            membership: Membership::new([1, 2, 3]),
        },
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
    };
    let mut max_term = base.clone();
    max_term.term = u64::MAX;
    let mut max_index = base.clone();
    max_index.meta.last_log_id = LogId::new(4, u64::MAX);
    let mut past_the_end = base.clone();
    past_the_end.offset = u64::MAX - 1;
    for req in [max_term, max_index, past_the_end] {
        let mut e = settled_follower();
        let last = e.last_log_id();
        let resp = e.handle_install_snapshot(req.clone());
        assert_eq!(resp.result, SnapshotResult::Invalid, "{req:?}");
        unchanged(&e, 3, last, Role::Follower);
        assert_nothing_to_do(&mut e);
    }
}

/// Node 1 campaigning in term 4 of {1, 2, 3}: its output (the hard state, the vote requests) taken.
fn candidate() -> Engine<u64> {
    let mut e = settled_follower();
    let deadline = e.next_deadline();
    e.tick(deadline);
    assert_eq!((e.role(), e.term()), (Role::Candidate, 4));
    e.take_output();
    e
}

#[test]
fn vote_answer_with_a_term_that_cannot_grow_is_ignored() {
    let mut e = candidate();
    let resp = VoteResponse {
        term: u64::MAX,
        vote_granted: false,
    };
    e.handle_vote_response(2, resp);
    assert_eq!((e.role(), e.term()), (Role::Candidate, 4));
    assert_nothing_to_do(&mut e);
    // A granted vote with that term does not count either.
    e.handle_vote_response(
        2,
        VoteResponse {
            term: u64::MAX,
            vote_granted: true,
        },
    );
    assert_eq!(e.role(), Role::Candidate);
}

#[test]
fn replication_answers_with_out_of_range_values_are_ignored_by_the_leader() {
    let answers = [
        success(u64::MAX, 3),
        success(3, u64::MAX),
        conflict(3, u64::MAX, None, 1),
        conflict(3, 3, Some(u64::MAX), 1),
        conflict(3, 3, None, u64::MAX),
    ];
    for resp in answers {
        let mut e = replicating_leader(&config(), &[1, 2, 3], &[1, 1], hs(2, None));
        let (term, last) = (e.term(), e.last_log_id());
        let before = progress_of(&e, 2);
        e.handle_append_entries_response(2, resp.clone());
        assert_eq!(
            (e.role(), e.term(), e.last_log_id()),
            (Role::Leader, term, last),
            "{resp:?}"
        );
        assert_eq!(progress_of(&e, 2), before, "{resp:?}");
        assert_nothing_to_do(&mut e);
    }
    for result in [
        SnapshotResult::Installed {
            snapshot: LogId::new(1, u64::MAX),
        },
        SnapshotResult::StaleTerm,
    ] {
        let mut e = replicating_leader(&config(), &[1, 2, 3], &[1, 1], hs(2, None));
        let term = e.term();
        let term_of_answer = if result == SnapshotResult::StaleTerm {
            u64::MAX
        } else {
            term
        };
        e.handle_install_snapshot_response(
            2,
            InstallSnapshotResponse {
                term: term_of_answer,
                result,
            },
        );
        assert_eq!((e.role(), e.term()), (Role::Leader, term), "{result:?}");
        assert_nothing_to_do(&mut e);
    }
}

#[test]
fn a_node_at_the_largest_term_does_not_campaign_past_it() {
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[1], hs(MAX_TERM, None));
    let deadline = e.next_deadline();
    e.tick(deadline);
    assert_eq!((e.role(), e.term()), (Role::Follower, MAX_TERM));
    assert_nothing_to_do(&mut e);
    // It still times out again later rather than spinning at one instant.
    assert!(e.next_deadline() > deadline);
}

#[test]
fn pre_vote_and_timeout_now_with_a_term_that_cannot_grow_are_refused_and_change_nothing() {
    use crate::message::{PreVoteRequest, TimeoutNowRequest};
    for term in [u64::MAX, u64::MAX - 1, MAX_TERM + 1] {
        let mut e = settled_follower();
        let last = e.last_log_id();
        let pre = e.handle_pre_vote_request(PreVoteRequest {
            term,
            candidate_id: 2,
            last_log_id: LogId::new(1, 3),
        });
        assert!(!pre.vote_granted && pre.term == 3, "{pre:?}");
        let now = e.handle_timeout_now(TimeoutNowRequest { term, leader_id: 2 });
        assert!(!now.campaigning && now.term == 3, "{now:?}");
        unchanged(&e, 3, last, Role::Follower);
        assert_nothing_to_do(&mut e);
    }
}

#[test]
fn pre_vote_and_timeout_now_answers_with_a_term_that_cannot_grow_are_ignored() {
    use crate::message::{PreVoteResponse, TimeoutNowResponse};
    let mut e = initialized(1, &[1, 2, 3], &Config::default(), 0);
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::PreCandidate);
    let _ = e.take_output();
    for term in [u64::MAX, MAX_TERM + 1] {
        for granted in [false, true] {
            e.handle_pre_vote_response(
                2,
                PreVoteResponse {
                    term,
                    vote_granted: granted,
                },
            );
        }
        e.handle_timeout_now_response(
            2,
            TimeoutNowResponse {
                term,
                campaigning: false,
            },
        );
        assert_eq!((e.role(), e.term()), (Role::PreCandidate, 0));
        assert_nothing_to_do(&mut e);
    }
}
