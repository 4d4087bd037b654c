//! A node whose storage lost entries it may have acknowledged neither votes nor campaigns until its
//! log holds the commit index its leader reports (protocol-aware recovery): otherwise its vote could
//! help elect a leader lacking an entry this node had helped commit.

use super::*;

/// Node 3 of {1, 2, 3} in term 2, restarted with entries up to 3 after its storage cut what followed.
fn after_loss() -> Engine<u64> {
    let state = RecoveredState {
        hard_state: hs(2, None),
        entries: log_with(&[1, 2, 3], &[1, 1]),
        lost_entries: true,
        ..RecoveredState::default()
    };
    let mut e = Engine::new(3, &config(), state, 0);
    e.take_output();
    assert!(e.catching_up());
    e
}

#[test]
fn it_refuses_every_vote_and_does_not_campaign_while_catching_up() {
    let mut e = after_loss();
    let req = vote(3, 1, (2, 10));
    assert_eq!(e.vote_refusal(&req), Some(VoteRefusal::CatchingUp));
    assert!(!e.handle_vote_request(req).vote_granted);
    assert_eq!(e.hard_state().voted_for, None);
    for _ in 0..5 {
        let deadline = e.next_deadline();
        e.tick(deadline);
        assert_eq!(e.role(), Role::Follower);
        assert!(vote_requests(&e.take_output()).is_empty());
    }
}

#[test]
fn it_votes_again_once_its_log_holds_the_leaders_commit_index() {
    let mut e = after_loss();
    // The leader of term 3 has committed up to 5; its first AppendEntries brings only entry 4.
    let first = e.handle_append_entries(append(3, 1, (1, 3), vec![cmd(3, 4)], 5));
    assert_eq!(first.result, AppendResult::Success { match_index: 4 });
    assert!(e.catching_up(), "it holds 4 of the 5 committed entries");
    let second = e.handle_append_entries(append(3, 1, (3, 4), vec![cmd(3, 5)], 5));
    assert_eq!(second.result, AppendResult::Success { match_index: 5 });
    assert!(!e.catching_up());
    // Now it campaigns when its leader falls silent, and grants votes.
    e.take_output();
    let deadline = e.next_deadline();
    e.tick(deadline);
    assert_eq!(e.role(), Role::Candidate);
}

#[test]
fn a_new_leaders_commit_index_counts_only_once_it_covers_an_entry_of_its_term() {
    let mut e = after_loss();
    // A new leader of term 4 that has not yet committed anything of its own: its commit index (3)
    // may be behind what was committed before it, entries this node may have lost.
    let first = e.handle_append_entries(append(4, 1, (1, 3), vec![cmd(4, 4)], 3));
    assert_eq!(first.result, AppendResult::Success { match_index: 4 });
    assert!(
        e.catching_up(),
        "the leader's commit index is of an older term"
    );
    // Once the leader commits its own entry, holding it is proof enough.
    let second = e.handle_append_entries(append(4, 1, (4, 4), vec![], 4));
    assert_eq!(second.result, AppendResult::Success { match_index: 4 });
    assert!(!e.catching_up());
}

#[test]
fn a_node_that_lost_nothing_votes_as_usual() {
    let mut e = follower(3, &[1, 1], 2);
    assert!(!e.catching_up());
    assert!(e.handle_vote_request(vote(3, 1, (1, 3))).vote_granted);
}
