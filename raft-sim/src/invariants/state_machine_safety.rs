//! **State Machine Safety**: if a node has applied an entry at an index, no node ever applies a
//! different entry at that index.
//!
//! Checked exactly, at every apply reported by a `LogStateMachine`: no two nodes or incarnations apply
//! different entries at one index; each incarnation applies in order, once, without gaps (continuing
//! after the snapshot it restored last), and never restores a snapshot older than what it applied;
//! the entry applied is the one in the node's own durable log; an entry is durable on a quorum when
//! first applied (commitment; a node whose disk lost the entry since it acknowledged it counts): a
//! quorum, by the harness's own rule (majorities of both configurations while joint), of one of the
//! configurations a leader could have counted by (`quorum::commit_configs`: the last committed before
//! the entry, or one any node holds at or after it); and
//! the first entry applied at an index follows one applied at the index before; the state reached is the committed prefix's. On demand, everything applied and
//! restored so far against the committed entries. At the end of a run, every node's state machine
//! reflects exactly its durable log. (That a restored state is the committed one is checked in
//! `snapshots`.)

use std::collections::BTreeSet;

use raft_core::{Entry, LogId, LogIndex, NodeId, SnapshotMeta};

use crate::applied_state::AppliedState;
use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The State Machine Safety checker.
#[derive(Debug, Default)]
pub(crate) struct StateMachineSafety;

impl Invariant for StateMachineSafety {
    fn on_restore(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        meta: &SnapshotMeta,
        _: &AppliedState,
    ) -> Findings {
        let last = meta.last_log_id;
        let before = record
            .nodes
            .get(&id)
            .and_then(|obs| obs.sms.get(incarnation as usize - 1))
            .map(|sm| sm.state.last);
        match before {
            Some(before) if last.index < before.index => vec![format!(
                "state machine safety: node {id} (incarnation {incarnation}) restored a snapshot of {last} after \
                 applying up to {before} (a state machine never goes back)"
            )],
            _ => Vec::new(),
        }
    }

    fn on_apply_entry(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        entry: &Entry<u64>,
        previous: LogIndex,
    ) -> Findings {
        let index = entry.log_id.index;
        let mut findings = Vec::new();
        let expected = previous + 1;
        if index != expected {
            findings.push(format!(
                "state machine safety: node {id} (incarnation {incarnation}) applied index {index}, \
                 expected {expected} (entries are applied once, in order, without gaps, after the last \
                 snapshot restored)"
            ));
        }
        // The node's own durable log holds what it applies (unless compacted since: then it is
        // compared with the committed entry below).
        if let Some(obs) = record.nodes.get(&id).filter(|obs| index > obs.base.index) {
            let own = obs.entry(index);
            if own != Some(entry) {
                findings.push(format!(
                    "state machine safety: node {id} applied {} ({:?}) but its durable log holds {:?} there",
                    entry.log_id,
                    entry.payload,
                    own.map(|e| (e.log_id, &*e.payload))
                ));
            }
        }
        if let Some(c) = record.committed.get(&index) {
            if c.log_id != entry.log_id || c.payload != *entry.payload {
                findings.push(format!(
                    "state machine safety: node {id} applied {} ({:?}) at index {index}, but node {} \
                     applied {} ({:?}) there",
                    entry.log_id, entry.payload, c.first_node, c.log_id, c.payload
                ));
            }
        }
        findings
    }

    fn on_first_commit(&mut self, record: &Record, id: NodeId, entry: &Entry<u64>) -> Findings {
        let index = entry.log_id.index;
        let mut findings = Vec::new();
        // A node that compacted the index does not count: compacting needs a snapshot, which needs the
        // entry applied first, so the entry would be committed already. A node whose disk lost the
        // entry since does count: it held the entry durably when it acknowledged it.
        let holders: BTreeSet<NodeId> = record
            .nodes
            .iter()
            .filter(|(_, o)| {
                o.entry(index).is_some_and(|e| e.log_id == entry.log_id)
                    || o.lost_to_disk(entry.log_id)
            })
            .map(|(&n, _)| n)
            .collect();
        let configs = crate::quorum::commit_configs(record, index);
        if !configs
            .iter()
            .any(|m| crate::quorum::is_quorum(m, &holders))
        {
            findings.push(format!(
                "commitment: node {id} applied {} while only nodes {holders:?} held it durably, or \
                 had until a disk fault: a quorum of none of the configurations a leader could have \
                 counted by ({})",
                entry.log_id,
                configs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        if index > 1 && !record.committed.contains_key(&(index - 1)) {
            findings.push(format!(
                "state machine safety: node {id} applied {} first, but no node ever applied index {}",
                entry.log_id,
                index - 1
            ));
        }
        findings
    }

    fn on_applied(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        last: LogId,
        after: &AppliedState,
    ) -> Findings {
        let committed = record
            .committed
            .get(&last.index)
            .map(|c| (c.log_id, c.digest));
        if committed == Some((after.last, after.digest)) {
            return Vec::new();
        }
        vec![format!(
            "state machine safety: node {id} (incarnation {incarnation}) reached state {} / {:#x} by \
             applying up to {last}, but the committed prefix there is {committed:?} (last id, hash)",
            after.last, after.digest
        )]
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        for (&id, obs) in &record.nodes {
            for (inc, sm) in obs.sms.iter().enumerate() {
                for (log_id, payload) in &sm.applied {
                    match record.committed.get(&log_id.index) {
                        Some(c) if c.log_id == *log_id && c.payload == *payload => {}
                        other => {
                            return Err(format!(
                                "state machine safety: node {id} (incarnation {}) applied {log_id} ({payload:?}); \
                                 the entry committed there is {:?}",
                                inc + 1,
                                other.map(|c| (c.log_id, &c.payload))
                            ))
                        }
                    }
                }
                for &(_, to) in &sm.restores {
                    let committed = record.committed.get(&to.index).map(|c| c.log_id);
                    if to.index > 0 && committed != Some(to) {
                        return Err(format!(
                            "state machine safety: node {id} (incarnation {}) restored a snapshot of {to}; the \
                             entry committed there is {committed:?}",
                            inc + 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The current state machine of every node reflects exactly its log: same last entry, digest
    /// equal to the log's prefix hash.
    fn check_final(&self, record: &Record) -> Result<(), String> {
        for (id, obs) in record.final_nodes() {
            let last = obs.last_log_id();
            let log_hash = record.prefix_hash(obs, last.index);
            let state = obs.current_sm().map(|sm| &sm.state);
            if state.map(|s| (s.last, Some(s.digest))) != Some((last, log_hash)) {
                return Err(format!(
                    "state machine safety: node {id}'s state machine (incarnation {}) is at {:?} with digest \
                     {:?}; its log ends at {last} with prefix hash {log_hash:?}",
                    obs.incarnation,
                    state.map(|s| s.last),
                    state.map(|s| s.digest)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn state_machine_safety_and_order() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        w.on_append(3, &[membership(), cmd(2, 2, 6)]);
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        apply(&mut w, 3, 1, &[membership(), cmd(2, 2, 6)]);
        assert!(has(&w, "node 3 applied 2-2"), "{:?}", w.violations);
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        apply(&mut w, 1, 1, &[cmd(1, 2, 5)]);
        assert!(has(&w, "expected 1"), "gap: {:?}", w.violations);
    }

    #[test]
    fn applying_what_a_majority_does_not_hold() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership()]);
        w.on_append(3, &[membership()]);
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        assert!(
            has(&w, "commitment: node 1 applied 1-2"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn a_holder_whose_disk_lost_the_entry_still_counts_for_commitment() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        w.on_append(3, &[membership()]);
        // Node 2 acknowledged 1-2, then its disk lost it before node 1 applied it.
        w.on_tail_lost(2, 2);
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn restores_continue_the_sequence_and_never_go_back() {
        let log = three();
        let mut w = committed_world(&log);
        let snap = snapshot_of(&log);
        // Node 2 restores the snapshot, then applies the next entry.
        w.on_restore(2, 1, &snap.meta, &state_of(&log));
        let next = [cmd(1, 4, 7)];
        w.on_append(1, &next);
        w.on_append(2, &next);
        apply(&mut w, 2, 1, &next);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert_eq!(
            w.record.nodes[&2].sms[0].restores,
            vec![(0, LogId::new(1, 3))]
        );
        assert!(StateMachineSafety.check(&w.record).is_ok());
        // Going back to the snapshot after applying past it.
        w.on_restore(2, 1, &snap.meta, &state_of(&log));
        assert!(has(&w, "never goes back"), "{:?}", w.violations);
        // After a restore at 3, applying 5 skips 4.
        let mut w = committed_world(&log);
        w.on_restore(3, 1, &snap.meta, &state_of(&log));
        let mut state = state_of(&log);
        let skip = [cmd(1, 5, 8)];
        state.apply(&skip[0]);
        w.on_apply(3, 1, &skip, &state);
        assert!(has(&w, "applied index 5, expected 4"), "{:?}", w.violations);
        // A restored state that is not the committed one.
        let mut w = committed_world(&log);
        let forged = state_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_restore(3, 1, &snap.meta, &forged);
        assert!(has(&w, "a snapshot it restored"), "{:?}", w.violations);
    }

    #[test]
    fn a_state_machine_state_that_is_not_the_committed_prefix() {
        let log = three();
        let mut w = committed_world(&log);
        // Node 2 applies the right entries but reports a wrong state (a restore gone wrong earlier).
        let wrong = state_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_apply(2, 1, &log, &wrong);
        assert!(has(&w, "reached state 1-3"), "{:?}", w.violations);
    }
}
