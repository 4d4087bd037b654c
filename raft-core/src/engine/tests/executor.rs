//! The reference executor ([`Executor`]): the order of its effects, its store's semantics, crash and
//! restart, and the contract violations it reports.

use super::testing::{AppliedLog, ContractViolation, Crashed};
use super::*;

fn flush(node: &mut Executor<u64>) -> Executed<u64> {
    node.flush()
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// The effects with their payloads dropped, to compare orders.
fn steps(done: &Executed<u64>) -> Vec<&'static str> {
    done.effects
        .iter()
        .map(|e| match e {
            Effect::SaveHardState(_) => "save_hard_state",
            Effect::Send { .. } => "send",
            Effect::InstallSnapshot { .. } => "install_snapshot",
            Effect::Purge(_) => "purge",
            Effect::Truncate { .. } => "truncate",
            Effect::Append(_) => "append",
            Effect::Reply(_) => "reply",
            Effect::SnapshotSendFailed { .. } => "snapshot_send_failed",
            Effect::Restore(_) => "restore",
            Effect::Apply(_) => "apply",
            Effect::ReadReady(_) => "read_ready",
            Effect::ReadFailed(_) => "read_failed",
        })
        .collect()
}

/// A single-node cluster's leader, its blank entry (2) committed and applied.
fn single_leader(config: &Config) -> Executor<u64> {
    let mut node = executor_with(1, config, &[1], &[], hs(0, None));
    let deadline = node.engine().next_deadline();
    node.engine_mut().tick(deadline);
    flush(&mut node);
    assert_eq!(node.engine().role(), Role::Leader);
    assert_eq!(node.state_machine().last_applied(), LogId::new(1, 2));
    node
}

// ----- the order of the steps -----

#[test]
fn a_follower_stores_the_term_and_entries_before_it_replies_and_applies_after() {
    // Log 1:t0 2..4:t1, none committed. The leader of term 3 replaces 4 and commits up to 5.
    let mut node = executor_with(1, &config(), &[1, 2, 3], &[1, 1, 1], hs(1, None));
    let req = append(3, 2, (1, 3), vec![cmd(3, 4), cmd(3, 5)], 5);
    let done = node.handle_request(Request::AppendEntries(req)).unwrap();
    assert_eq!(
        steps(&done),
        ["save_hard_state", "truncate", "append", "reply", "apply"]
    );
    assert_eq!(done.effects[0], Effect::SaveHardState(hs(3, None)));
    assert_eq!(
        done.effects[1],
        Effect::Truncate {
            from: 4,
            removed: vec![LogId::new(1, 4)]
        }
    );
    assert_eq!(
        done.replies().collect::<Vec<_>>(),
        [&Response::AppendEntries(success(3, 5))]
    );
    assert_eq!(
        indexes(&done.applied().cloned().collect::<Vec<_>>()),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(node.durable().hard_state(), hs(3, None));
    assert_eq!(node.durable().last_log_id(), LogId::new(3, 5));
}

#[test]
fn a_vote_is_stored_before_the_reply_leaves() {
    let mut node = executor_with(1, &config(), &[1, 2, 3], &[1], hs(1, None));
    let done = node
        .handle_request(Request::Vote(vote(2, 3, (1, 2))))
        .unwrap();
    assert_eq!(steps(&done), ["save_hard_state", "reply"]);
    assert_eq!(node.durable().hard_state(), hs(2, Some(3)));
}

#[test]
fn a_leader_sends_before_its_own_append_and_applies_once_it_is_durable() {
    let mut node = replicating_leader_node();
    node.engine_mut().propose(7).unwrap();
    let done = flush(&mut node);
    assert_eq!(steps(&done), ["send", "send", "append"]);
    // Node 2 acknowledges: committed (the leader's copy is durable), applied.
    let term = node.engine().term();
    node.handle_response(2, Response::AppendEntries(success(term, 3)));
    let done = flush(&mut node);
    assert_eq!(steps(&done), ["apply"]);
    assert_eq!(node.state_machine().last_applied(), LogId::new(1, 3));
}

/// Node 1 leading {1, 2, 3} in term 1, both followers acknowledged its blank entry (2).
fn replicating_leader_node() -> Executor<u64> {
    let mut node = executor_with(1, &config(), &[1, 2, 3], &[], hs(0, None));
    let deadline = node.engine().next_deadline();
    node.engine_mut().tick(deadline);
    flush(&mut node);
    node.handle_response(2, Response::Vote(granted(1)));
    flush(&mut node);
    for p in [2, 3] {
        node.handle_response(p, Response::AppendEntries(success(1, 2)));
    }
    flush(&mut node);
    assert_eq!(node.state_machine().last_applied(), LogId::new(1, 2));
    node
}

#[test]
fn a_built_snapshot_is_stored_then_the_log_purged_keeping_the_trailing_entries() {
    let mut node = single_leader(&snap_config(2));
    for command in 0..5 {
        node.engine_mut().propose(command).unwrap();
    }
    flush(&mut node);
    let applied = node.state_machine().last_applied();
    assert_eq!(applied, LogId::new(1, 7));
    assert!(node.engine_mut().snapshot_built(applied, DATA.to_vec()));
    let done = flush(&mut node);
    assert_eq!(steps(&done), ["install_snapshot", "purge"]);
    assert_eq!(done.effects[1], Effect::Purge(5));
    let store = node.durable();
    assert_eq!(store.log_base(), LogId::new(1, 5));
    assert_eq!(indexes(store.entries()), [6, 7]);
    assert_eq!(store.snapshot().map(|s| s.meta.last_log_id), Some(applied));
    assert!(
        node.state_machine().restored().is_none(),
        "nothing to restore"
    );
}

#[test]
fn a_flush_with_nothing_to_do_does_nothing() {
    let mut node = single_leader(&config());
    assert!(flush(&mut node).is_empty());
}

// ----- crash and restart -----

/// A single-node leader with a snapshot at 7 (log kept from 6), then entries 8 and 9: crashed.
fn crashed_with_snapshot_and_tail() -> Crashed<u64> {
    let mut node = single_leader(&snap_config(2));
    for command in 0..5 {
        node.engine_mut().propose(command).unwrap();
    }
    flush(&mut node);
    assert!(node
        .engine_mut()
        .snapshot_built(LogId::new(1, 7), DATA.to_vec()));
    flush(&mut node);
    for command in 5..7 {
        node.engine_mut().propose(command).unwrap();
    }
    flush(&mut node);
    assert_eq!(node.state_machine().last_applied(), LogId::new(1, 9));
    node.crash()
}

#[test]
fn a_restarted_node_restores_its_snapshot_and_applies_the_rest_again() {
    let crashed = crashed_with_snapshot_and_tail();
    let before = crashed.durable().clone();
    let mut node = crashed.restart(1000);
    assert_eq!(node.durable(), &before, "the store survives");
    assert_eq!(
        node.state_machine().restored().map(|m| m.last_log_id),
        Some(LogId::new(1, 7))
    );
    assert!(node.state_machine().entries().is_empty());
    assert_eq!(node.engine().last_log_id(), LogId::new(1, 9));
    assert_eq!(node.engine().hard_state(), hs(1, Some(1)));
    // It elects itself again and commits; everything after the snapshot is applied once more.
    let deadline = node.engine().next_deadline();
    node.engine_mut().tick(deadline);
    flush(&mut node);
    assert_eq!(node.engine().term(), 2);
    assert_eq!(indexes(node.state_machine().entries()), [8, 9, 10]);
}

#[test]
fn a_restarted_node_that_kept_its_state_machine_applies_nothing_twice() {
    let mut node = crashed_with_snapshot_and_tail().restart_keeping_state_machine(1000);
    assert!(
        node.state_machine().restored().is_none(),
        "it never needed the snapshot"
    );
    assert_eq!(node.state_machine().last_applied(), LogId::new(1, 9));
    let deadline = node.engine().next_deadline();
    node.engine_mut().tick(deadline);
    let done = flush(&mut node);
    assert_eq!(indexes(&done.applied().cloned().collect::<Vec<_>>()), [10]);
    assert_eq!(
        indexes(node.state_machine().entries()),
        (1..=10).collect::<Vec<_>>()
    );
}

#[test]
fn a_crash_loses_the_replies_still_held_and_what_was_not_flushed() {
    let mut node = executor_with(1, &config(), &[1, 2, 3], &[1], hs(1, None));
    let held = node.receive(Request::Vote(vote(2, 3, (1, 2))));
    assert_eq!(held, Some(Response::Vote(granted(2))));
    let crashed = node.crash();
    assert_eq!(
        crashed.durable().hard_state(),
        hs(1, None),
        "the vote was never stored (nor its reply sent)"
    );
    let mut node = crashed.restart(0);
    assert!(flush(&mut node).is_empty(), "no reply left over");
    // So the node is free to vote for another candidate of term 2.
    let done = node
        .handle_request(Request::Vote(vote(2, 2, (1, 2))))
        .unwrap();
    assert_eq!(
        done.replies().collect::<Vec<_>>(),
        [&Response::Vote(granted(2))]
    );
}

// ----- violations -----

#[test]
fn an_output_taken_behind_the_executors_back_is_reported() {
    let mut node = single_leader(&config());
    node.engine_mut().propose(1).unwrap();
    let lost = node.engine_mut().take_output();
    assert_eq!(indexes(&lost.append), [3]);
    assert_eq!(
        node.flush(),
        Err(ContractViolation::LogDiverged {
            engine_last: LogId::new(1, 3),
            engine_len: 3,
            stored_last: LogId::new(1, 2),
            stored_len: 2,
        })
    );
}

#[test]
fn the_state_machine_refuses_entries_out_of_order_or_twice_and_restores_that_go_back() {
    let mut sm = AppliedLog::default();
    assert_eq!(
        sm.apply(&[cmd(1, 2)]),
        Err(ContractViolation::AppliedOutOfOrder {
            expected: 1,
            got: LogId::new(1, 2)
        })
    );
    sm.apply(&[membership_entry(&[1]), cmd(1, 2)]).unwrap();
    assert_eq!(
        sm.apply(&[cmd(1, 2)]),
        Err(ContractViolation::AppliedOutOfOrder {
            expected: 3,
            got: LogId::new(1, 2)
        })
    );
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 2),
        membership: Membership::new([1]),
    };
    assert_eq!(
        sm.restore(meta),
        Err(ContractViolation::RestoreNotAhead {
            snapshot: LogId::new(1, 2),
            applied: 2
        })
    );
    assert_eq!(sm.last_applied(), LogId::new(1, 2));
}

#[test]
fn the_store_refuses_what_storage_would_refuse_and_changes_nothing() {
    let mut store = DurableStore::from_log(hs(1, None), log_with(&[1], &[1, 1, 1])).unwrap();
    let before = store.clone();
    assert_eq!(
        store.append(&[cmd(1, 6)]),
        Err(ContractViolation::AppendNotContiguous {
            expected: 5,
            got: 6
        })
    );
    assert_eq!(
        store.purge(5),
        Err(ContractViolation::PurgePastLastEntry { upto: 5, last: 4 })
    );
    assert_eq!(store, before);
    store.purge(2).unwrap();
    assert_eq!(
        store.truncate(2),
        Err(ContractViolation::TruncateIntoCompacted {
            from: 2,
            log_base: 2
        })
    );
    assert_eq!(store.truncate(4).unwrap(), [LogId::new(1, 4)]);
    assert_eq!(store.truncate(9).unwrap(), [], "past the end: a no-op");
    assert_eq!(store.last_log_id(), LogId::new(1, 3));
}

#[test]
fn the_store_keeps_its_log_under_a_snapshot_it_holds_and_drops_it_under_one_ahead() {
    let snapshot = |term, index| Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: Membership::new([1]),
        },
        data: DATA.to_vec(),
    };
    let mut store = DurableStore::from_log(hs(2, None), log_with(&[1], &[1, 1, 2])).unwrap();
    store.install_snapshot(snapshot(1, 3));
    assert_eq!(
        indexes(store.entries()),
        [1, 2, 3, 4],
        "holds 3: the log stays"
    );
    store.install_snapshot(snapshot(1, 2));
    assert_eq!(
        store.snapshot().map(|s| s.meta.last_log_id),
        Some(LogId::new(1, 3)),
        "an older one is ignored"
    );
    store.install_snapshot(snapshot(2, 9));
    assert!(
        store.entries().is_empty(),
        "ahead of the log: it replaces it"
    );
    assert_eq!(store.log_base(), LogId::new(2, 9));
    assert_eq!(
        store
            .snapshot_chunk(LogId::new(2, 9), 8, 4)
            .map(|c| (c.data, c.done)),
        Some((b"89".to_vec(), true))
    );
    assert_eq!(
        store.snapshot_chunk(LogId::new(1, 3), 0, 4),
        None,
        "replaced"
    );
}
