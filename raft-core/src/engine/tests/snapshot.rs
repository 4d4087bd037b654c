//! Snapshots: compaction after a locally built snapshot, the leader's chunked InstallSnapshot, and the
//! follower's assembling and installing it.
//!
//! Tests of a transfer run the leader (and the follower) on the reference [`Executor`], which stores
//! the snapshot and reads the chunks the engine asks for from its store.

use super::*;

/// Node 1 leading {1, 2, 3} in term 2 with commands at 2..=11 (term 1) and its blank at 12: node 2
/// acknowledged everything (so 12 is committed), node 3 never answered.
fn leader_with_silent_follower(config: &Config) -> Engine<u64> {
    let mut e = engine_with(1, config, &[1, 2, 3], &[1; 10], hs(1, None));
    let out = make_leader(&mut e);
    persist(&mut e, &out);
    e.handle_append_entries_response(2, success(e.term(), 12));
    assert_eq!(e.commit_index(), 12);
    e.take_output();
    e
}

/// Executes `node`'s outputs; a broken contract fails the test.
fn flush(node: &mut Executor<u64>) -> Executed<u64> {
    node.flush()
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `node` handles `req`; returns its reply (released once what it acknowledges is stored) and what
/// it did.
fn handle(node: &mut Executor<u64>, req: InstallSnapshotRequest) -> (Response, Executed<u64>) {
    let done = node
        .handle_request(Request::InstallSnapshot(req))
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()));
    let replies: Vec<Response> = done.replies().cloned().collect();
    assert_eq!(replies.len(), 1, "{done:?}");
    (replies[0].clone(), done)
}

/// The snapshot chunks sent to `to`, in order.
fn chunks_to(done: &Executed<u64>, to: NodeId) -> Vec<InstallSnapshotRequest> {
    done.sends()
        .filter_map(|(t, r)| match r {
            Request::InstallSnapshot(c) if t == to => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// The AppendEntries sent to `to`, in order.
fn appends_sent_to(done: &Executed<u64>, to: NodeId) -> Vec<AppendEntriesRequest<u64>> {
    done.sends()
        .filter_map(|(t, r)| match r {
            Request::AppendEntries(a) if t == to => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// Node 1 as [`leader_with_silent_follower`] builds it (snapshots kept with no trailing entries,
/// sent in chunks of 4 bytes), on the executor, after compacting everything with a snapshot of
/// `DATA` at 12; it learns that node 3 holds nothing. Returns it and the first chunk it sends.
fn leader_sending_snapshot() -> (Executor<u64>, InstallSnapshotRequest) {
    let config = Config {
        snapshot_chunk_size: 4,
        ..snap_config(0)
    };
    let mut leader = executor_with(1, &config, &[1, 2, 3], &[1; 10], hs(1, None));
    let deadline = leader.engine().next_deadline();
    leader.engine_mut().tick(deadline);
    flush(&mut leader);
    let term = leader.engine().term();
    leader.handle_response(2, Response::Vote(granted(term)));
    flush(&mut leader);
    leader.handle_response(2, Response::AppendEntries(success(term, 12)));
    flush(&mut leader);
    assert_eq!(leader.engine().commit_index(), 12);

    assert!(leader
        .engine_mut()
        .snapshot_built(LogId::new(2, 12), DATA.to_vec()));
    flush(&mut leader);
    leader.handle_response(3, Response::AppendEntries(conflict(term, 11, None, 1)));
    let chunks = chunks_to(&flush(&mut leader), 3);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_eq!(
        progress_of(leader.engine(), 3).2,
        ReplicationState::Snapshot
    );
    (leader, chunks[0].clone())
}

/// An empty node `id` on the executor.
fn empty_node(id: NodeId) -> Executor<u64> {
    Executor::new(id, &config(), DurableStore::new(), 0)
}

fn snapshot_request(
    term: Term,
    id: (Term, LogIndex),
    offset: u64,
    data: &[u8],
    done: bool,
) -> InstallSnapshotRequest {
    InstallSnapshotRequest {
        term,
        leader_id: 1,
        meta: SnapshotMeta {
            last_log_id: LogId::new(id.0, id.1),
            membership: Membership::new([1, 2, 3]),
        },
        offset,
        data: data.to_vec(),
        done,
    }
}

fn accepted(id: (Term, LogIndex), offset: u64, next_offset: u64) -> SnapshotResult {
    SnapshotResult::Accepted {
        snapshot: LogId::new(id.0, id.1),
        offset,
        next_offset,
    }
}

fn empty_follower(id: NodeId) -> Engine<u64> {
    Engine::new(id, &config(), RecoveredState::default(), 0)
}

#[test]
fn a_built_snapshot_is_stored_and_compacts_the_log_keeping_the_trailing_entries() {
    let mut e = leader_with_silent_follower(&snap_config(3));
    assert!(e.snapshot_built(LogId::new(2, 12), DATA.to_vec()));
    let out = e.take_output();
    let stored = out
        .snapshot
        .expect("the snapshot is handed out to be stored");
    assert_eq!(stored.meta.last_log_id, LogId::new(2, 12));
    assert_eq!(stored.meta.membership, Membership::new([1, 2, 3]));
    assert_eq!(stored.data, DATA);
    assert!(
        !out.restore_snapshot,
        "the state machine built it: nothing to restore"
    );
    assert_eq!(out.purge_upto, Some(9));
    assert_eq!(indexes(e.entries()), vec![10, 11, 12]);
    assert_eq!(e.snapshot_meta().last_log_id, LogId::new(2, 12));
    // The membership entry was compacted away; it is still in force.
    assert_eq!(e.membership(), &Membership::new([1, 2, 3]));
}

#[test]
fn a_snapshot_that_is_older_uncommitted_or_off_the_log_is_ignored() {
    let mut e = leader_with_silent_follower(&snap_config(0));
    assert!(e.snapshot_built(LogId::new(1, 8), DATA.to_vec()));
    e.take_output();
    assert!(!e.snapshot_built(LogId::new(1, 7), DATA.to_vec()), "older");
    assert!(
        !e.snapshot_built(LogId::new(1, 8), DATA.to_vec()),
        "the same"
    );
    assert!(
        !e.snapshot_built(LogId::new(1, 12), DATA.to_vec()),
        "wrong term"
    );
    let index = e.propose(5).unwrap().index;
    assert!(
        !e.snapshot_built(LogId::new(2, index), DATA.to_vec()),
        "not committed"
    );
    let out = e.take_output();
    assert_eq!((out.snapshot, out.purge_upto), (None, None));
    assert_eq!(e.snapshot_meta().last_log_id, LogId::new(1, 8));
}

#[test]
fn leader_sends_a_snapshot_in_chunks_and_then_replicates_after_it() {
    let (mut leader, mut request) = leader_sending_snapshot();
    let mut follower = empty_node(3);
    assert_eq!(request.offset, 0);
    assert_eq!(request.meta.last_log_id, LogId::new(2, 12));
    let mut chunks = 0;
    let installed = loop {
        let (reply, done) = handle(&mut follower, request);
        chunks += 1;
        leader.handle_response(3, reply.clone());
        let Response::InstallSnapshot(resp) = reply else {
            panic!("not a snapshot reply: {reply:?}");
        };
        if let SnapshotResult::Installed { snapshot } = resp.result {
            break (snapshot, done);
        }
        assert!(
            !done
                .effects
                .iter()
                .any(|e| matches!(e, Effect::InstallSnapshot { .. })),
            "installed before the last chunk: {done:?}"
        );
        let next = chunks_to(&flush(&mut leader), 3);
        assert_eq!(next.len(), 1, "{next:?}");
        request = next[0].clone();
    };
    assert_eq!(chunks, 3, "10 bytes in chunks of 4");
    let (id, done) = installed;
    assert_eq!(id, LogId::new(2, 12));
    let meta = SnapshotMeta {
        last_log_id: id,
        membership: Membership::new([1, 2, 3]),
    };
    // Stored on the last chunk, before the reply leaves; the state machine restored after it.
    let kinds: Vec<&Effect<u64>> = done
        .effects
        .iter()
        .filter(|e| !matches!(e, Effect::SaveHardState(_)))
        .collect();
    assert_eq!(
        kinds,
        [
            &Effect::InstallSnapshot {
                meta: meta.clone(),
                from_leader: true
            },
            &Effect::Reply(Response::InstallSnapshot(InstallSnapshotResponse {
                term: 2,
                result: SnapshotResult::Installed { snapshot: id }
            })),
            &Effect::Restore(meta.clone()),
        ]
    );
    assert_eq!(
        follower.durable().snapshot().map(|s| s.data.as_slice()),
        Some(DATA)
    );
    assert_eq!(follower.durable().log_base(), id);
    assert_eq!(follower.state_machine().restored(), Some(&meta));
    let follower = follower.engine();
    assert_eq!(follower.last_log_id(), LogId::new(2, 12));
    assert_eq!(follower.commit_index(), 12);
    assert_eq!(follower.membership(), &Membership::new([1, 2, 3]));
    assert_eq!(follower.leader(), Some(1));

    assert_eq!(
        progress_of(leader.engine(), 3),
        (12, 13, ReplicationState::Replicate)
    );
    leader.engine_mut().propose(77).unwrap();
    let to3 = appends_sent_to(&flush(&mut leader), 3);
    assert_eq!(to3.len(), 1);
    assert_eq!(to3[0].prev_log_id, LogId::new(2, 12));
    assert_eq!(indexes(&to3[0].entries), vec![13]);
}

#[test]
fn a_lost_chunk_is_resent_from_the_last_confirmed_offset() {
    let (mut leader, first) = leader_sending_snapshot();
    let mut follower = empty_node(3);
    let (reply, _) = handle(&mut follower, first);
    leader.handle_response(3, reply);
    let second = chunks_to(&flush(&mut leader), 3);
    assert_eq!(second[0].offset, 4);
    // The second chunk is lost: no answer, the RPC times out.
    leader.engine_mut().handle_unreachable(3);
    assert!(chunks_to(&flush(&mut leader), 3).is_empty());
    let hb = leader.engine().next_deadline();
    leader.engine_mut().tick(hb);
    let resent = chunks_to(&flush(&mut leader), 3);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].offset, 4, "resumes, does not restart");
    assert_eq!(resent[0].data, &DATA[4..8]);
}

#[test]
fn while_a_chunk_is_in_flight_heartbeats_go_out_and_no_second_chunk() {
    let (mut leader, _first) = leader_sending_snapshot();
    let hb = leader.engine().next_deadline();
    leader.engine_mut().tick(hb);
    let done = flush(&mut leader);
    assert!(chunks_to(&done, 3).is_empty(), "{done:?}");
    let beats = appends_sent_to(&done, 3);
    assert_eq!(beats.len(), 1);
    assert!(beats[0].entries.is_empty());
    // The follower's answer to that heartbeat (it has nothing) does not disturb the transfer.
    let term = leader.engine().term();
    leader.handle_response(3, Response::AppendEntries(conflict(term, 12, None, 1)));
    assert!(chunks_to(&flush(&mut leader), 3).is_empty());
    assert_eq!(
        progress_of(leader.engine(), 3).2,
        ReplicationState::Snapshot
    );
}

#[test]
fn a_late_or_duplicated_answer_does_not_rewind_the_transfer() {
    let (mut leader, first) = leader_sending_snapshot();
    let mut follower = empty_node(3);
    let (reply, _) = handle(&mut follower, first);
    leader.handle_response(3, reply.clone());
    assert_eq!(chunks_to(&flush(&mut leader), 3)[0].offset, 4);
    // The same answer again (a duplicated reply): the chunk at 4 is still in flight.
    leader.handle_response(3, reply);
    assert!(chunks_to(&flush(&mut leader), 3).is_empty());
    // An answer about another snapshot is ignored too.
    let other = InstallSnapshotResponse {
        term: leader.engine().term(),
        result: accepted((2, 11), 4, 0),
    };
    leader.handle_response(3, Response::InstallSnapshot(other));
    assert!(chunks_to(&flush(&mut leader), 3).is_empty());
}

#[test]
fn follower_answers_a_chunk_it_cannot_place_with_the_offset_it_wants() {
    let mut f = empty_follower(3);
    let id = (2, 12);
    // A chunk from the middle of a transfer it never saw (it restarted, say): start over.
    let r = f.handle_install_snapshot(snapshot_request(2, id, 4, b"4567", false));
    assert_eq!(r.result, accepted(id, 4, 0));
    let r = f.handle_install_snapshot(snapshot_request(2, id, 0, b"0123", false));
    assert_eq!(r.result, accepted(id, 0, 4));
    // A gap (the chunk at 4 was lost): ask for 4.
    let r = f.handle_install_snapshot(snapshot_request(2, id, 8, b"89", true));
    assert_eq!(r.result, accepted(id, 8, 4));
    // A duplicate of the first chunk is not appended twice.
    let r = f.handle_install_snapshot(snapshot_request(2, id, 0, b"0123", false));
    assert_eq!(r.result, accepted(id, 0, 4));
    let r = f.handle_install_snapshot(snapshot_request(2, id, 4, b"4567", false));
    assert_eq!(r.result, accepted(id, 4, 8));
    assert!(f.take_output().snapshot.is_none());
    let r = f.handle_install_snapshot(snapshot_request(2, id, 8, b"89", true));
    assert_eq!(
        r.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(2, 12)
        }
    );
    assert_eq!(
        f.take_output().snapshot.map(|s| s.data),
        Some(DATA.to_vec())
    );
}

#[test]
fn a_new_leader_term_abandons_a_partial_transfer() {
    let mut f = empty_follower(3);
    let id = (2, 12);
    f.handle_install_snapshot(snapshot_request(2, id, 0, b"0123", false));
    // The next chunk comes from the leader of term 3 (same snapshot id): it cannot continue the
    // old transfer, whose bytes the new leader's snapshot need not share.
    let r = f.handle_install_snapshot(snapshot_request(3, id, 4, b"4567", false));
    assert_eq!(r.result, accepted(id, 4, 0));
    assert_eq!(f.term(), 3);
    // A vote request of a higher term also drops it.
    f.handle_install_snapshot(snapshot_request(3, id, 0, b"0123", false));
    f.handle_vote_request(vote(4, 2, (2, 12)));
    let r = f.handle_install_snapshot(snapshot_request(4, id, 4, b"4567", false));
    assert_eq!(r.result, accepted(id, 4, 0));
}

#[test]
fn a_stale_or_malformed_chunk_is_refused_and_changes_nothing() {
    let mut f = follower(3, &[1, 1], 3);
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 12), 0, DATA, true));
    assert_eq!((r.term, r.result), (3, SnapshotResult::StaleTerm));
    // The snapshot claims an entry newer than the request's term.
    let r = f.handle_install_snapshot(snapshot_request(4, (5, 12), 0, DATA, true));
    assert_eq!(r.result, SnapshotResult::Invalid);
    let mut no_members = snapshot_request(4, (2, 12), 0, DATA, true);
    no_members.meta.membership = Membership::default();
    assert_eq!(
        f.handle_install_snapshot(no_members).result,
        SnapshotResult::Invalid
    );
    assert_eq!(f.term(), 3, "a malformed request does not move the term");
    assert_eq!(f.last_log_id(), LogId::new(1, 3));
    assert!(f.take_output().is_empty());
}

#[test]
fn follower_already_holding_the_snapshot_entry_commits_up_to_it_without_installing() {
    let mut f = follower(3, &[1; 11], 2);
    assert_eq!(f.last_log_id(), LogId::new(1, 12));
    let r = f.handle_install_snapshot(snapshot_request(2, (1, 12), 0, b"0123", false));
    assert_eq!(
        r.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(1, 12)
        }
    );
    assert_eq!(f.commit_index(), 12);
    let out = f.take_output();
    assert!(out.snapshot.is_none());
    assert_eq!(
        indexes(&out.apply),
        (1..=12).collect::<Vec<_>>(),
        "applied from its own log"
    );
}

#[test]
fn installing_from_the_leader_drops_unexecuted_appends_and_truncations() {
    let mut f = follower(3, &[1, 1], 1);
    // Entries 4..=5 arrive and a conflicting one truncates 3; nothing is executed yet.
    f.handle_append_entries(append(
        2,
        1,
        (1, 2),
        vec![cmd(2, 3), cmd(2, 4), cmd(2, 5)],
        0,
    ));
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 20), 0, DATA, true));
    assert_eq!(
        r.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(2, 20)
        }
    );
    let out = f.take_output();
    assert!(out.append.is_empty(), "{:?}", out.append);
    assert_eq!(out.truncate_from, None);
    assert!(
        out.apply.is_empty(),
        "the snapshot replaces applying up to 20"
    );
    assert!(out.snapshot.is_some() && out.restore_snapshot);
    assert_eq!(f.last_log_id(), LogId::new(2, 20));
    // The log continues after the snapshot.
    let r = f.handle_append_entries(append(2, 1, (2, 20), vec![cmd(2, 21)], 21));
    assert_eq!(r.result, AppendResult::Success { match_index: 21 });
    let out = f.take_output();
    assert_eq!(indexes(&out.append), vec![21]);
    assert_eq!(indexes(&out.apply), vec![21]);
}

#[test]
fn a_newer_local_snapshot_restarts_a_transfer_in_progress() {
    let (mut leader, first) = leader_sending_snapshot();
    let mut follower = empty_node(3);
    let (reply, _) = handle(&mut follower, first);
    leader.handle_response(3, reply);
    let second = chunks_to(&flush(&mut leader), 3)[0].clone();
    // Before the second chunk is answered, the leader commits more and snapshots again.
    let index = leader.engine_mut().propose(9).unwrap().index;
    flush(&mut leader);
    let term = leader.engine().term();
    leader.handle_response(2, Response::AppendEntries(success(term, index)));
    flush(&mut leader);
    assert_eq!(leader.state_machine().last_applied(), LogId::new(2, index));
    let newer = b"the state at 13".to_vec();
    assert!(leader
        .engine_mut()
        .snapshot_built(LogId::new(2, index), newer.clone()));
    // The chunk is read from the snapshot stored by the same flush.
    let restarted = chunks_to(&flush(&mut leader), 3);
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_eq!(restarted[0].meta.last_log_id, LogId::new(2, index));
    assert_eq!(restarted[0].offset, 0);
    assert_eq!(restarted[0].data, &newer[..4]);
    // The answer about the old snapshot's chunk changes nothing.
    let (reply, _) = handle(&mut follower, second);
    leader.handle_response(3, reply);
    assert!(chunks_to(&flush(&mut leader), 3).is_empty());
}

#[test]
fn a_follower_that_restarts_recovers_from_its_snapshot_and_log_tail() {
    let config = snap_config(2);
    let state = RecoveredState {
        hard_state: hs(2, None),
        log_base: LogId::new(1, 8),
        snapshot: Some(SnapshotMeta {
            last_log_id: LogId::new(1, 10),
            membership: Membership::new([1, 2, 3]),
        }),
        entries: vec![cmd(1, 9), cmd(1, 10), cmd(2, 11)],
        applied_index: 10,
        lost_entries: false,
    };
    let mut e = Engine::new(3, &config, state, 0);
    assert_eq!(e.last_log_id(), LogId::new(2, 11));
    assert_eq!(e.snapshot_meta().last_log_id, LogId::new(1, 10));
    assert_eq!(e.membership(), &Membership::new([1, 2, 3]));
    assert_eq!(e.commit_index(), 10);
    let r = e.handle_append_entries(append(2, 1, (2, 11), vec![], 11));
    assert_eq!(r.result, AppendResult::Success { match_index: 11 });
    assert_eq!(
        indexes(&e.take_output().apply),
        vec![11],
        "only the tail after the snapshot"
    );
}

#[test]
fn a_snapshot_the_state_machine_check_refuses_is_answered_invalid_and_changes_nothing() {
    let mut f = follower(3, &[1, 1], 2);
    f.set_snapshot_check(|meta, data| {
        if data.starts_with(b"v2") {
            Ok(())
        } else {
            Err(format!("unknown format for {}", meta.last_log_id))
        }
    });
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 20), 0, b"v1...", false));
    assert_eq!(
        r.result,
        accepted((2, 20), 0, 5),
        "chunks are taken as they come"
    );
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 20), 5, b"data", true));
    assert_eq!(r.result, SnapshotResult::Invalid);
    assert_eq!(f.last_log_id(), LogId::new(1, 3), "the log is untouched");
    assert_eq!(f.snapshot_meta().last_log_id, LogId::default());
    assert!(f.take_output().snapshot.is_none());
    // The leader tries again (a newer build, say): a transfer from 0 that passes installs.
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 20), 5, b"data", true));
    assert_eq!(
        r.result,
        accepted((2, 20), 5, 0),
        "the refused transfer was dropped"
    );
    let r = f.handle_install_snapshot(snapshot_request(2, (2, 20), 0, b"v2 data", true));
    assert_eq!(
        r.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(2, 20)
        }
    );
    assert_eq!(f.last_log_id(), LogId::new(2, 20));
}

#[test]
fn a_follower_cut_off_while_the_leader_compacts_catches_up_from_the_snapshot() {
    let config = Config {
        snapshot_chunk_size: 3,
        ..snap_config(0)
    };
    let mut c = Cluster::new(&[1, 2, 3], &config);
    c.elect(1);
    // Node 3 misses everything from here; node 2 and the leader commit without it.
    c.isolated.insert(3);
    for command in 10..15 {
        c.propose(1, command);
    }
    let applied = c.node(1).state_machine().last_applied();
    assert_eq!(applied.index, 7);
    assert!(c.engine_mut(1).snapshot_built(applied, DATA.to_vec()));
    c.run();
    assert_eq!(c.node(1).durable().log_base(), applied, "compacted to it");
    assert!(c.node(1).durable().entries().is_empty());

    // Healed; the requests lost on the way to node 3 time out, as the driver would report.
    c.isolated.clear();
    c.engine_mut(1).handle_unreachable(3);
    let t = c.now + HB;
    c.advance(t);
    let node3 = c.node(3);
    assert_eq!(
        node3
            .durable()
            .snapshot()
            .map(|s| (s.meta.last_log_id, s.data.as_slice())),
        Some((applied, DATA))
    );
    assert_eq!(node3.durable().log_base(), applied);
    assert_eq!(
        node3.state_machine().restored().map(|m| m.last_log_id),
        Some(applied)
    );
    let installs: Vec<&Executed<u64>> = c
        .trace
        .iter()
        .filter_map(|ev| match ev {
            Event::Executed(3, done) => Some(done),
            _ => None,
        })
        .filter(|done| {
            done.replies()
                .any(|r| matches!(r, Response::InstallSnapshot(_)))
        })
        .collect();
    assert_eq!(installs.len(), 4, "10 bytes in chunks of 3");

    // Replication goes on after the snapshot, and node 3 applies on top of it.
    let at = c.propose(1, 99);
    let t = c.now + HB;
    c.advance(t);
    assert_eq!(
        c.applied(3).iter().map(Entry::index).collect::<Vec<_>>(),
        [at.index]
    );
    assert_eq!(c.engine(3).entries(), c.engine(1).entries());
    c.assert_applied_consistent();
}
