//! **Snapshots and compaction**: a snapshot holds the committed state, compaction removes only what a
//! snapshot holds, and the storage keeps its contract for both.
//!
//! All checked exactly, from storage and state machine observations:
//! * every snapshot stored or restored carries the committed state up to its last entry (digest,
//!   recent commands) and the membership in force there; a snapshot whose data does not decode
//!   (chunks lost, duplicated or reordered into the wrong bytes) is a violation, stored or restored;
//! * a purge never goes past the durable snapshot, and a compacted prefix (whenever a node's
//!   compaction point moves: a purge, a snapshot replacing the log, a restart) is the committed one:
//!   every entry up to a compaction point went into a snapshot, so it was applied, so it is committed;
//! * storage contract: after each purge and snapshot the storage's log state and snapshot id, read
//!   back, are what the acknowledged calls imply (a stored snapshot is ignored when not newer than the
//!   stored one, and replaces the log unless the log holds its last entry); each snapshot chunk read
//!   is the right slice of the acknowledged snapshot, or nothing if that is another one.

use raft_core::slice_chunk;
use raft_core::{EntryPayload, LogId, LogIndex, LogState, NodeId, Snapshot, SnapshotMeta};

use crate::applied_state::AppliedState;
use crate::invariant::{ChunkRead, Findings, Invariant};
use crate::record::Record;

/// The snapshot and compaction checker.
#[derive(Debug, Default)]
pub(crate) struct Snapshots;

impl Invariant for Snapshots {
    fn on_opened(&mut self, record: &Record, id: NodeId) -> Findings {
        compaction_findings(record, id, "as reopened")
    }

    fn on_purged(&mut self, record: &Record, id: NodeId, upto: LogIndex) -> Findings {
        let mut findings = Vec::new();
        let snapshot = record.nodes.get(&id).and_then(|obs| obs.snapshot_id());
        if snapshot.is_none_or(|s| s.index < upto) {
            findings.push(format!(
                "compaction: node {id} purged its log up to {upto}, past its durable snapshot ({snapshot:?}): \
                 entries no snapshot holds are gone"
            ));
        }
        findings.extend(compaction_findings(record, id, "after a purge"));
        findings
    }

    fn on_snapshot_stored(
        &mut self,
        record: &Record,
        id: NodeId,
        snapshot: &Snapshot,
        state: Result<&AppliedState, &str>,
    ) -> Findings {
        match state {
            Ok(state) => state_findings(record, id, "a snapshot it stored", &snapshot.meta, state),
            Err(e) => vec![format!(
                "snapshot: node {id} stored a snapshot of {} whose data is not a state machine state: {e}",
                snapshot.meta.last_log_id
            )],
        }
    }

    fn on_log_replaced(&mut self, record: &Record, id: NodeId) -> Findings {
        compaction_findings(record, id, "after a snapshot replaced the log")
    }

    fn on_snapshot_chunk_read(
        &mut self,
        record: &Record,
        id: NodeId,
        read: &ChunkRead<'_>,
    ) -> Findings {
        let Some(obs) = record.nodes.get(&id) else {
            return Vec::new();
        };
        let &ChunkRead {
            snapshot,
            offset,
            max_len,
            got,
        } = read;
        let expected = obs
            .snapshot
            .as_ref()
            .filter(|s| s.meta.last_log_id == snapshot)
            .map(|s| slice_chunk(&s.data, offset, max_len));
        if *got == expected {
            return Vec::new();
        }
        let brief =
            |c: &Option<raft_core::SnapshotChunk>| c.as_ref().map(|c| (c.data.len(), c.done));
        let same_shape = brief(got) == brief(&expected);
        vec![format!(
            "storage: node {id} read snapshot_chunk({snapshot}, offset {offset}, max {max_len}) as {:?} \
             (length, done), but the snapshot it acknowledged is {:?}, which gives {:?}{}",
            brief(got),
            obs.snapshot_id(),
            brief(&expected),
            if same_shape { " with other bytes" } else { "" }
        )]
    }

    fn on_storage_readback(
        &mut self,
        record: &Record,
        id: NodeId,
        what: &str,
        log: &LogState,
        snapshot: Option<LogId>,
    ) -> Findings {
        let Some(obs) = record.nodes.get(&id) else {
            return Vec::new();
        };
        if log.last_purged == obs.base
            && log.last_log_id == obs.last_log_id()
            && snapshot == obs.snapshot_id()
        {
            return Vec::new();
        }
        vec![format!(
            "storage contract: after {what}, node {id}'s storage reports last purged {}, last entry {}, \
             snapshot {snapshot:?}; what it acknowledged implies {}, {}, {:?}",
            log.last_purged,
            log.last_log_id,
            obs.base,
            obs.last_log_id(),
            obs.snapshot_id()
        )]
    }

    fn on_restore(
        &mut self,
        record: &Record,
        id: NodeId,
        _: u32,
        meta: &SnapshotMeta,
        state: &AppliedState,
    ) -> Findings {
        state_findings(record, id, "a snapshot it restored", meta, state)
    }

    fn on_restore_refused(
        &mut self,
        _: &Record,
        id: NodeId,
        meta: &SnapshotMeta,
        data_len: usize,
        reason: &str,
    ) -> Findings {
        vec![format!(
            "snapshot transfer: node {id} was asked to restore a snapshot of {} ({data_len} bytes) that is not \
             a state machine state: {reason}",
            meta.last_log_id
        )]
    }
}

/// A violation if node `id`'s compacted prefix is not the committed one (`when` says which move of
/// its compaction point this follows).
fn compaction_findings(record: &Record, id: NodeId, when: &str) -> Findings {
    let Some(obs) = record.nodes.get(&id) else {
        return Vec::new();
    };
    if record.compacted_prefix_committed(obs) {
        return Vec::new();
    }
    vec![format!(
        "compaction: node {id}'s log is compacted up to {} ({when}), but that prefix (hash {:?}) is not the \
         committed one (committed there: {:?})",
        obs.base,
        obs.base_chain(),
        record
            .committed
            .get(&obs.base.index)
            .map(|c| (c.log_id, c.digest))
    )]
}

/// Checks a state machine state carried by a snapshot (`what`) of node `id` against the committed
/// log: the state as of the snapshot's last entry, with the committed prefix's hash, recent commands
/// and membership.
fn state_findings(
    record: &Record,
    id: NodeId,
    what: &str,
    meta: &SnapshotMeta,
    state: &AppliedState,
) -> Findings {
    let last = meta.last_log_id;
    let mut findings = Vec::new();
    if state.last != last {
        findings.push(format!(
            "snapshot: {what} (node {id}) is of {last}, but its data is the state as of {}",
            state.last
        ));
    }
    match record.committed.get(&last.index) {
        Some(c) if c.log_id == last && c.digest == state.digest => {}
        None if last.index == 0 && state.digest == 0 => {}
        Some(c) => findings.push(format!(
            "state machine safety: {what} (node {id}, of {last}) is not the committed log prefix: its \
             digest is {:#x}; the committed prefix ends with {} and hashes to {:#x}",
            state.digest, c.log_id, c.digest
        )),
        None => findings.push(format!(
            "snapshot: {what} (node {id}) covers {last}, which no node has applied"
        )),
    }
    for &(index, value) in &state.recent {
        let ok = index <= last.index
            && record
                .committed
                .get(&index)
                .is_some_and(|c| c.payload == EntryPayload::Command(value));
        if !ok {
            findings.push(format!(
                "state machine safety: {what} (node {id}, of {last}) says value {value} was applied at index \
                 {index}; committed there: {:?}",
                record.committed.get(&index).map(|c| (c.log_id, &c.payload))
            ));
        }
    }
    if last.index > 0 {
        let in_force = record.memberships.range(..=last.index).next_back();
        if in_force.map(|(_, m)| m) != Some(&meta.membership) {
            findings.push(format!(
                "snapshot: {what} (node {id}, of {last}) carries membership {:?}, but the membership in \
                 force there is {in_force:?}",
                meta.membership
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::log_matching::LogMatching;
    use crate::testing::*;
    use raft_core::HardState;
    use raft_core::Membership;

    #[test]
    fn compaction_by_snapshot_and_purge_is_clean_and_compacted_entries_are_held() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        // Node 3's log is replaced by the leader's snapshot (it held nothing but the membership).
        w.on_install_snapshot(3, &snapshot_of(&log));
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        for id in [1, 3] {
            let obs = &w.record.nodes[&id];
            assert_eq!((obs.base, obs.log.len()), (LogId::new(1, 3), 0));
            assert!(
                (1..=3).all(|i| w.record.holds_committed(obs, i)),
                "node {id}"
            );
            assert_eq!(w.record.id_at(obs, 2), Some(LogId::new(1, 2)));
        }
        assert!(LogMatching.check(&w.record).is_ok());
        // A leader of a later term with a compacted log is complete.
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.observe_leader(3, 2);
        w.on_append(3, &[blank(2, 4)]);
        w.observe_leader(3, 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn a_snapshot_must_carry_the_committed_state() {
        let log = three();
        let mut w = committed_world(&log);
        // Same last id, another history.
        let forged = snapshot_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_install_snapshot(2, &forged);
        assert!(
            has(&w, "is not the committed log prefix"),
            "{:?}",
            w.violations
        );
        assert!(
            has(&w, "says value 9 was applied at index 2"),
            "{:?}",
            w.violations
        );

        let mut w = committed_world(&log);
        let mut other_members = snapshot_of(&log);
        other_members.meta.membership = Membership::new([1, 2]);
        w.on_install_snapshot(1, &other_members);
        assert!(has(&w, "carries membership"), "{:?}", w.violations);

        let mut w = committed_world(&log);
        let mut garbled = snapshot_of(&log);
        garbled.data.truncate(20);
        w.on_install_snapshot(1, &garbled);
        assert!(has(&w, "not a state machine state"), "{:?}", w.violations);

        let mut w = committed_world(&log);
        w.on_install_snapshot(
            1,
            &snapshot_of(&[membership(), cmd(1, 2, 5), cmd(1, 3, 6), cmd(1, 4, 7)]),
        );
        assert!(has(&w, "which no node has applied"), "{:?}", w.violations);
    }

    #[test]
    fn a_log_replaced_by_a_forged_snapshot_lacks_the_committed_entries() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(3, &snapshot_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]));
        assert!(
            has(&w, "compaction: node 3's log is compacted up to 1-3"),
            "{:?}",
            w.violations
        );
        assert!(!w.record.holds_committed(&w.record.nodes[&3], 2));
        w.violations.clear();
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.observe_leader(3, 2);
        assert!(has(&w, "leader completeness: node 3"), "{:?}", w.violations);
    }

    #[test]
    fn purging_past_the_snapshot() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log[..2]));
        w.on_purge(1, 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.on_purge(1, 3);
        assert!(has(&w, "past its durable snapshot"), "{:?}", w.violations);
        let mut w = committed_world(&log);
        w.on_purge(2, 1);
        assert!(
            has(&w, "past its durable snapshot (None)"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn storage_contract_older_snapshots_are_ignored_and_read_back() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_install_snapshot(1, &snapshot_of(&log[..2]));
        assert_eq!(w.record.nodes[&1].snapshot_id(), Some(LogId::new(1, 3)));
        let agrees = LogState {
            last_purged: LogId::default(),
            last_log_id: LogId::new(1, 3),
        };
        w.on_storage_readback(1, "install", agrees.clone(), Some(LogId::new(1, 3)));
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // A storage that replaced its snapshot with the older one.
        w.on_storage_readback(1, "install", agrees, Some(LogId::new(1, 2)));
        assert!(has(&w, "storage contract"), "{:?}", w.violations);
        // A storage that kept its log when the snapshot said to discard it.
        let mut w = committed_world(&log);
        w.on_install_snapshot(3, &snapshot_of(&log));
        let kept = LogState {
            last_purged: LogId::default(),
            last_log_id: LogId::new(0, 1),
        };
        w.on_storage_readback(3, "install", kept, Some(LogId::new(1, 3)));
        assert!(has(&w, "storage contract"), "{:?}", w.violations);
    }

    #[test]
    fn snapshot_chunks_must_be_slices_of_the_acknowledged_snapshot() {
        let log = three();
        let mut w = committed_world(&log);
        let snap = snapshot_of(&log);
        w.on_install_snapshot(1, &snap);
        let id = LogId::new(1, 3);
        w.on_snapshot_chunk(1, id, 16, 16, &Some(slice_chunk(&snap.data, 16, 16)));
        w.on_snapshot_chunk(1, LogId::new(1, 2), 0, 16, &None);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.on_snapshot_chunk(1, id, 16, 16, &Some(slice_chunk(&snap.data, 0, 16)));
        assert!(
            has(&w, "snapshot_chunk(1-3, offset 16"),
            "{:?}",
            w.violations
        );
        w.violations.clear();
        w.on_snapshot_chunk(
            1,
            LogId::new(1, 2),
            0,
            16,
            &Some(slice_chunk(&snap.data, 0, 16)),
        );
        assert!(has(&w, "storage: node 1 read"), "{:?}", w.violations);
    }
}
