//! [`Engine::vote_refusal`]: each reason a vote is refused, the vote a higher term frees, and that the
//! reason given is the decision [`Engine::handle_vote_request`] takes, on every state and request.

use super::*;
use crate::engine::validate::MAX_TERM;

/// A follower of {1, 2, 3} whose log ends at (3, 5) (commands of terms 1, 2, 3, 3 after the
/// membership entry), in `term`, having voted for `voted_for`.
fn voter(term: Term, voted_for: Option<NodeId>) -> Engine<u64> {
    engine_with(1, &config(), &[1, 2, 3], &[1, 2, 3, 3], hs(term, voted_for))
}

#[test]
fn a_malformed_request_is_refused_with_what_is_wrong_and_changes_nothing() {
    for req in [
        vote(MAX_TERM + 1, 2, (3, 5)),
        vote(5, 2, (6, 9)),
        vote(5, 2, (3, u64::MAX)),
    ] {
        let mut e = voter(4, None);
        let refusal = e.vote_refusal(&req);
        assert!(
            matches!(&refusal, Some(VoteRefusal::Malformed { reason }) if !reason.is_empty()),
            "{req:?}: {refusal:?}"
        );
        let resp = e.handle_vote_request(req.clone());
        assert_eq!(
            resp,
            VoteResponse {
                term: 4,
                vote_granted: false
            },
            "{req:?}"
        );
        assert_eq!(
            e.hard_state(),
            hs(4, None),
            "{req:?}: the term is not adopted"
        );
        assert!(e.take_output().is_empty(), "{req:?}");
    }
}

#[test]
fn a_request_of_an_older_term_is_refused_as_stale_whatever_its_log() {
    let e = voter(5, None);
    assert_eq!(
        e.vote_refusal(&vote(4, 2, (4, 9))),
        Some(VoteRefusal::StaleTerm { voter_term: 5 })
    );
}

#[test]
fn a_vote_cast_in_the_term_is_the_reason_for_another_candidate() {
    let e = voter(5, Some(2));
    assert_eq!(
        e.vote_refusal(&vote(5, 3, (4, 9))),
        Some(VoteRefusal::AlreadyVoted { voted_for: 2 })
    );
    // The candidate it voted for, asking again, is granted the same vote.
    assert_eq!(e.vote_refusal(&vote(5, 2, (3, 5))), None);
}

#[test]
fn a_candidate_refuses_its_rivals_of_its_term_having_voted_for_itself() {
    let mut e = voter(5, None);
    e.tick(e.next_deadline());
    assert_eq!((e.role(), e.term()), (Role::Candidate, 6));
    assert_eq!(
        e.vote_refusal(&vote(6, 2, (6, 9))),
        Some(VoteRefusal::AlreadyVoted { voted_for: 1 })
    );
}

#[test]
fn a_higher_term_frees_the_vote_so_only_the_log_can_refuse() {
    let e = voter(5, Some(2));
    assert_eq!(e.vote_refusal(&vote(6, 3, (3, 5))), None);
    assert_eq!(
        e.vote_refusal(&vote(6, 3, (3, 4))),
        Some(VoteRefusal::LogNotUpToDate {
            candidate_last: LogId::new(3, 4),
            voter_last: LogId::new(3, 5),
        })
    );
}

#[test]
fn a_log_that_is_older_by_term_or_shorter_in_the_same_term_is_not_up_to_date() {
    let e = voter(4, None);
    for last in [(2, 9), (3, 4), (0, 1)] {
        assert_eq!(
            e.vote_refusal(&vote(4, 2, last)),
            Some(VoteRefusal::LogNotUpToDate {
                candidate_last: LogId::new(last.0, last.1),
                voter_last: LogId::new(3, 5),
            }),
            "{last:?}"
        );
    }
    for last in [(3, 5), (3, 9), (4, 2)] {
        assert_eq!(e.vote_refusal(&vote(4, 2, last)), None, "{last:?}");
    }
}

#[test]
fn the_reasons_read_as_the_voter_would_say_them() {
    let said: Vec<String> = [
        VoteRefusal::StaleTerm { voter_term: 5 },
        VoteRefusal::AlreadyVoted { voted_for: 2 },
        VoteRefusal::LogNotUpToDate {
            candidate_last: LogId::new(1, 3),
            voter_last: LogId::new(1, 5),
        },
        VoteRefusal::Malformed {
            reason: "term 9 is above the largest term".to_string(),
        },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        said,
        [
            "stale term (the voter is already in term 5)",
            "already voted for node 2 in this term",
            "log not up to date (candidate's last entry 1-3 is older than the voter's 1-5)",
            "malformed request (term 9 is above the largest term)",
        ]
    );
}

/// Voters in every role the rules distinguish: no vote, a vote for 2, a candidate (its vote for
/// itself), a leader, each in term 5 or after an election in term 5.
fn voters() -> Vec<(&'static str, Engine<u64>)> {
    let mut candidate = voter(4, None);
    candidate.tick(candidate.next_deadline());
    let leader = replicating_leader(&config(), &[1, 2, 3], &[1, 2, 3, 3], hs(4, None));
    vec![
        ("follower, no vote", voter(5, None)),
        ("follower, voted for 2", voter(5, Some(2))),
        ("candidate of term 5", candidate),
        ("leader of term 5", leader),
    ]
}

#[test]
fn the_reason_given_is_the_decision_taken_and_asking_changes_nothing() {
    let mut refused = [0usize; 5];
    let mut granted = 0;
    for term in [4, 5, 6, MAX_TERM + 1] {
        for candidate in [2, 3] {
            for last in [(3, 4), (3, 5), (5, 9), (5, 6), (7, 9)] {
                let req = vote(term, candidate, last);
                for (name, mut e) in voters() {
                    let before = format!("{e:?}");
                    let refusal = e.vote_refusal(&req);
                    assert_eq!(
                        format!("{e:?}"),
                        before,
                        "{name}, {req:?}: asking changed it"
                    );
                    let resp = e.handle_vote_request(req.clone());
                    assert_eq!(
                        resp.vote_granted,
                        refusal.is_none(),
                        "{name}, {req:?}: the engine's decision and its reason {refusal:?} differ"
                    );
                    match refusal {
                        None => granted += 1,
                        Some(reason) => {
                            refused[match reason {
                                VoteRefusal::Malformed { .. } => 0,
                                VoteRefusal::StaleTerm { .. } => 1,
                                VoteRefusal::AlreadyVoted { .. } => 2,
                                VoteRefusal::LogNotUpToDate { .. } => 3,
                                VoteRefusal::LeaderAlive { .. } => 4,
                                VoteRefusal::CatchingUp => {
                                    panic!("{name}: no engine of this grid lost entries")
                                }
                                VoteRefusal::JustStarted => {
                                    panic!("{name}: no engine of this grid uses leases")
                                }
                            }] += 1
                        }
                    }
                }
            }
        }
    }
    assert!(
        granted > 0 && refused.iter().all(|&n| n > 0),
        "the grid misses a case: {granted} granted, refused {refused:?}"
    );
}
