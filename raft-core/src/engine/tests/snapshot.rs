//! Snapshots: compaction after a locally built snapshot, the leader's chunked InstallSnapshot, and the
//! follower's assembling and installing it.

use super::*;

const DATA: &[u8] = b"0123456789";

fn snap_config(keep: u64) -> Config {
    Config {
        snapshot_keep_entries: keep,
        ..config()
    }
}

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

/// The leader, after compacting everything with a snapshot at 12, learns that node 3 holds nothing:
/// returns the first chunk it asks for.
fn leader_sending_snapshot(config: &Config) -> (Engine<u64>, SnapshotSend) {
    let mut e = leader_with_silent_follower(config);
    assert!(e.snapshot_built(LogId::new(2, 12), DATA.to_vec()));
    e.take_output();
    e.handle_append_entries_response(3, conflict(e.term(), 11, None, 1));
    let out = e.take_output();
    assert_eq!(out.snapshot_sends.len(), 1, "{out:?}");
    assert_eq!(progress_of(&e, 3).2, ReplicationState::Snapshot);
    (e, out.snapshot_sends[0].clone())
}

/// The chunk of `DATA` at `send.offset`, `len` bytes long at most, as the driver would read it.
fn chunk(send: &SnapshotSend, len: usize) -> InstallSnapshotRequest {
    let c = crate::storage::slice_chunk(DATA, send.offset, len);
    send.request(c.data, c.done)
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
    let (mut leader, mut send) = leader_sending_snapshot(&snap_config(0));
    let mut follower = empty_follower(3);
    assert_eq!((send.to, send.offset), (3, 0));
    assert_eq!(send.meta.last_log_id, LogId::new(2, 12));
    let mut chunks = 0;
    let installed = loop {
        let resp = follower.handle_install_snapshot(chunk(&send, 4));
        chunks += 1;
        let out = follower.take_output();
        leader.handle_install_snapshot_response(3, resp.clone());
        if let SnapshotResult::Installed { snapshot } = resp.result {
            break (snapshot, out);
        }
        assert!(
            out.snapshot.is_none(),
            "installed before the last chunk: {out:?}"
        );
        let next = leader.take_output();
        assert_eq!(next.snapshot_sends.len(), 1, "{next:?}");
        send = next.snapshot_sends[0].clone();
    };
    assert_eq!(chunks, 3, "10 bytes in chunks of 4");
    let (id, out) = installed;
    assert_eq!(id, LogId::new(2, 12));
    let snapshot = out.snapshot.expect("stored on the last chunk");
    assert!(out.restore_snapshot);
    assert_eq!(snapshot.data, DATA);
    assert_eq!(follower.last_log_id(), LogId::new(2, 12));
    assert_eq!(follower.commit_index(), 12);
    assert_eq!(follower.membership(), &Membership::new([1, 2, 3]));
    assert_eq!(follower.leader(), Some(1));

    assert_eq!(
        progress_of(&leader, 3),
        (12, 13, ReplicationState::Replicate)
    );
    leader.propose(77).unwrap();
    let out = leader.take_output();
    let to3 = appends_to(&out, 3);
    assert_eq!(to3.len(), 1);
    assert_eq!(to3[0].prev_log_id, LogId::new(2, 12));
    assert_eq!(indexes(&to3[0].entries), vec![13]);
}

#[test]
fn a_lost_chunk_is_resent_from_the_last_confirmed_offset() {
    let (mut leader, first) = leader_sending_snapshot(&snap_config(0));
    let mut follower = empty_follower(3);
    let resp = follower.handle_install_snapshot(chunk(&first, 4));
    leader.handle_install_snapshot_response(3, resp);
    let second = leader.take_output().snapshot_sends[0].clone();
    assert_eq!(second.offset, 4);
    // The second chunk is lost: no answer, the RPC times out.
    leader.handle_unreachable(3);
    assert!(leader.take_output().snapshot_sends.is_empty());
    let hb = leader.next_deadline();
    leader.tick(hb);
    let resent = leader.take_output().snapshot_sends;
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].offset, 4, "resumes, does not restart");
}

#[test]
fn while_a_chunk_is_in_flight_heartbeats_go_out_and_no_second_chunk() {
    let (mut leader, _first) = leader_sending_snapshot(&snap_config(0));
    let hb = leader.next_deadline();
    leader.tick(hb);
    let out = leader.take_output();
    assert!(out.snapshot_sends.is_empty(), "{out:?}");
    let beats = appends_to(&out, 3);
    assert_eq!(beats.len(), 1);
    assert!(beats[0].entries.is_empty());
    // The follower's answer to that heartbeat (it has nothing) does not disturb the transfer.
    leader.handle_append_entries_response(3, conflict(leader.term(), 12, None, 1));
    assert!(leader.take_output().snapshot_sends.is_empty());
    assert_eq!(progress_of(&leader, 3).2, ReplicationState::Snapshot);
}

#[test]
fn a_late_or_duplicated_answer_does_not_rewind_the_transfer() {
    let (mut leader, first) = leader_sending_snapshot(&snap_config(0));
    let mut follower = empty_follower(3);
    let resp = follower.handle_install_snapshot(chunk(&first, 4));
    leader.handle_install_snapshot_response(3, resp.clone());
    assert_eq!(leader.take_output().snapshot_sends[0].offset, 4);
    // The same answer again (a duplicated reply): the chunk at 4 is still in flight.
    leader.handle_install_snapshot_response(3, resp);
    assert!(leader.take_output().snapshot_sends.is_empty());
    // An answer about another snapshot is ignored too.
    let other = InstallSnapshotResponse {
        term: leader.term(),
        result: accepted((2, 11), 4, 0),
    };
    leader.handle_install_snapshot_response(3, other);
    assert!(leader.take_output().snapshot_sends.is_empty());
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
    let (mut leader, first) = leader_sending_snapshot(&snap_config(0));
    let mut follower = empty_follower(3);
    let resp = follower.handle_install_snapshot(chunk(&first, 4));
    leader.handle_install_snapshot_response(3, resp);
    let second = leader.take_output().snapshot_sends[0].clone();
    // Before the second chunk is answered, the leader commits more and snapshots again.
    let index = leader.propose(9).unwrap().index;
    leader.take_output();
    leader.log_persisted(LogId::new(2, index));
    leader.handle_append_entries_response(2, success(leader.term(), index));
    assert!(leader.snapshot_built(LogId::new(2, index), DATA.to_vec()));
    let out = leader.take_output();
    assert_eq!(out.snapshot_sends.len(), 1, "{out:?}");
    assert_eq!(out.snapshot_sends[0].meta.last_log_id, LogId::new(2, index));
    assert_eq!(out.snapshot_sends[0].offset, 0);
    // The answer about the old snapshot's chunk changes nothing.
    let resp = follower.handle_install_snapshot(chunk(&second, 4));
    leader.handle_install_snapshot_response(3, resp);
    assert!(leader.take_output().snapshot_sends.is_empty());
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
