//! **Durability**: what a storage acknowledged stays, and what a node promises rests on durable state.
//!
//! Checked exactly, from storage: a reopened storage holds exactly what it had acknowledged before
//! the crash (hard state, compaction point, entries, snapshot); no committed entry is ever truncated.
//! Checked exactly, from RPC answers as the sender sees them (ordering rules 1 and 2 of the driver):
//! a granted vote is durable on the voter by the time the answer arrives; so are the entries a
//! follower acknowledges, and the last entry of a snapshot it says it installed, while it stays in
//! that term. At the end of a run: every acknowledged write is committed, and in every node's final
//! log at its acknowledged index.
//!
//! ## Disk faults
//!
//! A node may restart with the tail of its log gone, as if its disk lost writes it had acknowledged
//! ([`Cluster::restart_with_lost_tail`](crate::Cluster::restart_with_lost_tail)), and its storage
//! reports the loss when it opens. That node legitimately lacks those entries: the reopened storage
//! must hold what it acknowledged *minus the lost tail*, and an answer it gave in the same term
//! before the loss (arriving late) is not held against its log. What may not happen is that the
//! *cluster* loses a committed entry: it is still on some other node when the fault strikes (else
//! the schedule destroyed the last copy, which no protocol survives, and that is reported as the
//! harness's fault); no node ever truncates it; every later leader holds it (`leader_completeness`);
//! and at the end it is back in every node's log, the damaged node's included.
use raft_core::{EntryPayload, LogId, LogIndex, NodeId, Term};

use crate::history::Outcome;
use crate::invariant::{Findings, Invariant, Opened};
use crate::record::Record;

/// The durability checker.
#[derive(Debug, Default)]
pub(crate) struct Durability;

impl Invariant for Durability {
    fn on_reopen(&mut self, record: &Record, id: NodeId, opened: &Opened<'_>) -> Findings {
        let Some(obs) = record.nodes.get(&id).filter(|obs| obs.incarnation > 0) else {
            return Vec::new(); // the first start: nothing acknowledged yet
        };
        let &Opened {
            hard_state,
            base,
            entries,
            snapshot,
        } = opened;
        let same_log = obs.base == base && obs.log == entries;
        if obs.hard_state == hard_state && same_log && obs.snapshot.as_ref() == snapshot {
            return Vec::new();
        }
        let snapshot_id = snapshot.map(|s| s.meta.last_log_id);
        vec![format!(
            "durability: node {id} reopened its storage with hard state {hard_state:?}, base {base}, \
             last entry {:?}, snapshot {:?}, but had acknowledged hard state {:?}, base {}, last entry \
             {:?}, snapshot {:?} ({} vs {} entries{})",
            entries.last().map(|e| e.log_id),
            snapshot_id,
            obs.hard_state,
            obs.base,
            obs.log.last().map(|e| e.log_id),
            obs.snapshot_id(),
            entries.len(),
            obs.log.len(),
            if obs.snapshot.as_ref() != snapshot && obs.snapshot_id() == snapshot_id {
                "; same snapshot id, different snapshot"
            } else {
                ""
            }
        )]
    }

    fn on_truncate(
        &mut self,
        record: &Record,
        id: NodeId,
        from: LogIndex,
        removed: &[LogId],
    ) -> Findings {
        removed
            .iter()
            .find(|l| record.committed.get(&l.index).is_some_and(|c| c.log_id == **l))
            .map(|l| {
                format!(
                    "committed entry lost: node {id} truncated committed entry {l} (truncate from {from})"
                )
            })
            .into_iter()
            .collect()
    }

    /// A disk fault may take entries the node acknowledged, but never the last copy of a committed
    /// entry: the schedule must leave it on another node, from which the damaged node gets it back.
    fn on_tail_lost(
        &mut self,
        record: &Record,
        id: NodeId,
        _from: LogIndex,
        removed: &[LogId],
    ) -> Findings {
        removed
            .iter()
            .filter(|l| record.committed.get(&l.index).is_some_and(|c| c.log_id == **l))
            .find(|l| {
                !record
                    .nodes
                    .iter()
                    .any(|(&other, obs)| other != id && record.holds_committed(obs, l.index))
            })
            .map(|l| {
                format!(
                    "harness: node {id}'s disk lost committed entry {l}, which no other node holds: the \
                     fault schedule destroyed its last copy (faults must leave one)"
                )
            })
            .into_iter()
            .collect()
    }

    /// Rule 2: a follower acknowledges only entries it holds durably. Within one term nothing can
    /// remove them again, so they must still be there if the follower is still in it. Entries it
    /// compacted since count if its compacted prefix is the committed one.
    fn on_entries_acknowledged(
        &mut self,
        record: &Record,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        sent: &[LogId],
        match_index: LogIndex,
    ) -> Findings {
        let problem = record.nodes.get(&follower).and_then(|obs| {
            if obs.hard_state.term != term {
                return None;
            }
            // An answer sent before a disk fault of the same term may arrive after it: what the
            // disk lost since is excused (the follower did hold it when it answered).
            sent.iter()
                .filter(|id| id.index <= match_index)
                .filter(|id| !obs.lost_to_disk_in(term, **id))
                .find(|id| record.id_at(obs, id.index) != Some(**id))
                .map(|id| (*id, record.id_at(obs, id.index)))
        });
        problem
            .map(|(id, held)| {
                format!(
                    "ordering rule 2: node {follower} acknowledged entries up to {match_index} in term {term} \
                     to node {leader}, but does not hold {id} durably (holds {held:?})"
                )
            })
            .into_iter()
            .collect()
    }

    /// Rule 1: a vote is durable before the answer granting it leaves the voter. The driver persists
    /// the last hard state of a batch, so a vote in term T may be superseded, in the same batch, by a
    /// later term T' that is persisted instead: that is as good (the voter can never vote in T
    /// again), provided it never durably voted for anyone else in T.
    fn on_vote_granted(
        &mut self,
        record: &Record,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
        answer_term: Term,
    ) -> Findings {
        let votes = record.durable_votes(term, voter);
        let durable = record.nodes.get(&voter).map(|obs| obs.hard_state);
        let superseded = votes.is_empty() && durable.is_some_and(|hs| hs.term > term);
        if answer_term == term && (votes.contains(&candidate) || superseded) {
            return Vec::new();
        }
        vec![format!(
            "ordering rule 1: node {voter} granted its vote in term {term} (answer term {answer_term}) to \
             {candidate}, but its durable votes in that term are {votes:?} (hard state now {durable:?})"
        )]
    }

    /// Like rule 2: the follower answers `Installed` only once its log holds the snapshot's last entry
    /// durably (installed, or held already); within one term nothing removes it again.
    fn on_snapshot_installed(
        &mut self,
        record: &Record,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        installed: LogId,
    ) -> Findings {
        let Some(obs) = record.nodes.get(&follower) else {
            return Vec::new();
        };
        let held = record.id_at(obs, installed.index);
        if obs.hard_state.term != term
            || held == Some(installed)
            || obs.lost_to_disk_in(term, installed)
        {
            return Vec::new();
        }
        vec![format!(
            "ordering rule 2: node {follower} answered node {leader} in term {term} that it installed the \
             snapshot of {installed}, but does not hold {installed} durably (holds {held:?}; snapshot {:?})",
            obs.snapshot_id()
        )]
    }

    /// Every acknowledged write is committed where it was acknowledged, and in every node's final log
    /// there (compacted into a committed prefix counts).
    fn check_final(&self, record: &Record) -> Result<(), String> {
        for (id, obs) in record.final_nodes() {
            for op in record.history.ops.values() {
                let Outcome::Acked(log_id) = &op.outcome else {
                    continue;
                };
                let is_committed = record.committed.get(&log_id.index).is_some_and(|c| {
                    c.log_id == *log_id && c.payload == EntryPayload::Command(op.value)
                });
                if !is_committed || !record.holds_committed(obs, log_id.index) {
                    return Err(format!(
                        "acknowledged write lost: value {} acknowledged at {log_id} is not in node {id}'s \
                         final log (holds {:?}; compacted up to {})",
                        op.value,
                        obs.entry(log_id.index).map(|e| (e.log_id, &*e.payload)),
                        obs.base
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use raft_core::{HardState, LogId};

    #[test]
    fn a_reopened_storage_must_hold_what_it_acknowledged() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_open(
            1,
            HardState::default(),
            LogId::default(),
            vec![membership(), cmd(1, 2, 5)],
            None,
        );
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // The storage lost the last entry it acknowledged.
        w.on_open(
            1,
            HardState::default(),
            LogId::default(),
            vec![membership()],
            None,
        );
        assert!(has(&w, "durability: node 1 reopened"), "{:?}", w.violations);
    }

    #[test]
    fn a_disk_fault_may_lose_a_tail_but_not_the_last_copy_of_a_committed_entry() {
        let log = three();
        let mut w = committed_world(&log);
        // Node 2's disk loses 1-3 (committed; node 1 still holds it), and it reopens without it.
        w.on_tail_lost(2, 3);
        w.on_open(
            2,
            HardState::default(),
            LogId::default(),
            log[..2].to_vec(),
            None,
        );
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert!(w.record.nodes[&2].lost_to_disk(LogId::new(1, 3)));
        // Now node 1's disk loses it too: no node holds it any more.
        w.on_tail_lost(1, 3);
        assert!(
            has(&w, "harness: node 1's disk lost committed entry 1-3"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn an_answer_sent_before_a_disk_fault_is_not_held_against_the_log() {
        let mut w = world(3);
        let term_1 = HardState {
            term: 1,
            voted_for: Some(1),
        };
        w.on_save_hard_state(2, term_1);
        w.on_append(2, &[membership(), cmd(1, 2, 5), cmd(1, 3, 6)]);
        w.on_tail_lost(2, 2);
        w.on_open(2, term_1, LogId::default(), vec![membership()], None);
        // The answer acknowledging 1-2 arrives after the loss, in the same term: excused.
        w.on_entries_acknowledged(1, 2, 1, &[LogId::new(1, 2)], 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // An entry the disk did not lose must still be held.
        w.on_entries_acknowledged(1, 2, 1, &[LogId::new(1, 4)], 4);
        assert!(
            has(&w, "ordering rule 2: node 2 acknowledged entries up to 4"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn a_reopened_storage_that_lost_more_than_its_disk_fault_is_a_violation() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_tail_lost(2, 3);
        w.on_open(
            2,
            HardState::default(),
            LogId::default(),
            log[..1].to_vec(),
            None,
        );
        assert!(has(&w, "durability: node 2 reopened"), "{:?}", w.violations);
    }

    #[test]
    fn answers_must_rest_on_durable_state() {
        let mut w = world(3);
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_vote_granted(2, 1, 1, 1);
        w.on_append(2, &[membership()]);
        w.on_entries_acknowledged(1, 2, 1, &[LogId::new(0, 1)], 1);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // A vote node 3 never made durable.
        w.on_vote_granted(3, 1, 1, 1);
        assert!(has(&w, "ordering rule 1: node 3"), "{:?}", w.violations);
        // Entries node 2 acknowledged but does not hold.
        w.on_entries_acknowledged(1, 2, 1, &[LogId::new(1, 2)], 2);
        assert!(
            has(&w, "ordering rule 2: node 2 acknowledged entries up to 2"),
            "{:?}",
            w.violations
        );
        // A snapshot node 2 says it installed, whose last entry it does not hold.
        w.on_snapshot_installed(1, 2, 1, LogId::new(1, 3));
        assert!(
            has(&w, "that it installed the snapshot of 1-3"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn acknowledged_writes_must_be_in_every_final_log() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_write_invoked(5);
        w.on_write_acknowledged(1, 5, LogId::new(1, 2), 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert_eq!(Durability.check_final(&w.record), Err(
            "acknowledged write lost: value 5 acknowledged at 1-2 is not in node 3's final log (holds None; \
             compacted up to 0-0)".to_string()
        ));
        w.on_append(3, &log[1..]);
        assert_eq!(Durability.check_final(&w.record), Ok(()));
        // An acknowledgement the history records at another index than the committed one.
        w.on_write_invoked(6);
        w.on_write_completed(6, Outcome::Acked(LogId::new(1, 2)));
        assert!(Durability.check_final(&w.record).is_err());
    }
}
