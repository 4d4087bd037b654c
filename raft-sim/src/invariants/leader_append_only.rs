//! **Leader Append-Only**: a leader never overwrites or deletes entries in its log.
//!
//! Checked exactly, from durable truncations: a node never truncates its durable log while it is the
//! (observed) leader of its current term, and never removes an entry of its own current term (only
//! that term's leader creates those, and it never removes them). Checked by sampling, from metrics:
//! each time a node is seen leading term `T`, its durable log must still hold, unchanged (compared by
//! the hash of the whole prefix, compacted parts included), what it held at the previous sample in
//! `T`.

use std::collections::BTreeMap;

use raft_core::{LogId, LogIndex, NodeId, Term};

use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The Leader Append-Only checker.
#[derive(Debug, Default)]
pub(crate) struct LeaderAppendOnly {
    /// For each node and term it was sampled leading: the last entry of its durable log at the
    /// previous sample, with the hash of the prefix up to it.
    last_sampled: BTreeMap<(NodeId, Term), (LogId, u64)>,
}

impl Invariant for LeaderAppendOnly {
    fn on_truncate(
        &mut self,
        record: &Record,
        id: NodeId,
        from: LogIndex,
        removed: &[LogId],
    ) -> Findings {
        let Some(obs) = record.nodes.get(&id) else {
            return Vec::new();
        };
        let term = obs.hard_state.term;
        let mut findings = Vec::new();
        if record.was_leader(id, term) {
            findings.push(format!(
                "leader append-only: node {id}, leader of term {term}, truncated its log from index {from} \
                 (removing {} entries up to {})",
                removed.len(),
                removed.last().copied().unwrap_or_default()
            ));
        }
        if let Some(own) = removed.iter().find(|l| l.term == term) {
            findings.push(format!(
                "leader append-only: node {id} in term {term} removed entry {own} of its own current term \
                 (only the leader of term {term} creates such entries, and it never removes them)"
            ));
        }
        findings
    }

    fn on_leader_sample(&mut self, record: &Record, id: NodeId, term: Term) -> Findings {
        let Some(obs) = record.nodes.get(&id) else {
            return Vec::new();
        };
        let mut findings = Vec::new();
        // What the leader held at the previous sample is still there, unchanged (compacted since, if
        // so, into the committed prefix).
        if let Some(&(prev, prev_chain)) = self.last_sampled.get(&(id, term)) {
            let now = record.id_at(obs, prev.index);
            let now_chain = record.prefix_hash(obs, prev.index).unwrap_or(0);
            if now != Some(prev) || now_chain != prev_chain {
                findings.push(format!(
                    "leader append-only: node {id}, leader of term {term}, held {prev} (and its prefix) at an \
                     earlier sample, but now holds {now:?} there (or a different prefix)"
                ));
            }
        }
        let last = obs.last_log_id();
        let last_chain = record.prefix_hash(obs, last.index).unwrap_or(0);
        self.last_sampled.insert((id, term), (last, last_chain));
        findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use raft_core::HardState;

    #[test]
    fn truncations_that_break_leader_append_only_or_lose_commits() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 2,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 2);
        w.on_append(1, &[membership(), blank(2, 2), cmd(2, 3, 1)]);
        w.on_truncate(1, 3);
        assert!(has(&w, "leader append-only: node 1, leader of term 2"));
        assert!(has(&w, "of its own current term"));

        let mut w = world(3);
        for id in 1..=3 {
            w.on_append(id, &[membership(), cmd(1, 2, 5)]);
        }
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        w.on_save_hard_state(
            2,
            HardState {
                term: 3,
                voted_for: None,
            },
        );
        w.on_truncate(2, 2);
        assert!(has(&w, "committed entry lost"), "{:?}", w.violations);
    }

    #[test]
    fn leader_append_only_by_sampling() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 2,
                voted_for: Some(1),
            },
        );
        w.on_append(1, &[membership(), blank(2, 2)]);
        w.observe_leader(1, 2);
        // Rewritten behind the harness's back (same length, different entry).
        w.record.nodes.get_mut(&1).unwrap().set_log(
            LogId::default(),
            Some(0),
            vec![membership(), cmd(1, 2, 3)],
        );
        w.observe_leader(1, 2);
        assert!(has(&w, "leader append-only"), "{:?}", w.violations);
    }

    #[test]
    fn leader_append_only_sees_through_compaction() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 1);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        w.on_append(1, &[cmd(1, 4, 7)]);
        w.observe_leader(1, 1);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }
}
