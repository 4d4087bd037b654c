//! **Leader Completeness**: an entry committed in a term is in the log of every leader of every later
//! term.
//!
//! Each committed entry is recorded when first applied, with the highest durable term of any node at
//! that moment (the entry was committed by a leader of at most that term). Checked by sampling, from
//! metrics: each time a node is seen leading a higher term, its durable log must hold the entry (as an
//! entry, or compacted into a prefix that is the committed one). At the end of a run, exactly: every
//! node's log holds every committed entry (every node of the final cluster: those retired after
//! leaving it are not judged).

use std::collections::BTreeMap;

use raft_core::{LogIndex, NodeId, Term};

use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The Leader Completeness checker.
#[derive(Debug, Default)]
pub(crate) struct LeaderCompleteness {
    /// For each node and term it was sampled leading: committed entries up to this index are known
    /// to be in its log.
    complete_upto: BTreeMap<(NodeId, Term), LogIndex>,
}

impl Invariant for LeaderCompleteness {
    fn on_leader_sample(&mut self, record: &Record, id: NodeId, term: Term) -> Findings {
        let Some(obs) = record.nodes.get(&id) else {
            return Vec::new();
        };
        let from = self.complete_upto.get(&(id, term)).copied().unwrap_or(0);
        let mut upto = from;
        let mut findings = Vec::new();
        for (&index, c) in record.committed.range(from + 1..) {
            if c.max_term >= term {
                break;
            }
            if !record.holds_committed(obs, index) {
                findings.push(format!(
                    "leader completeness: node {id}, leader of term {term}, lacks committed entry {} \
                     (committed by term {} at the latest); it holds {:?} there (compacted up to {})",
                    c.log_id,
                    c.max_term,
                    obs.entry(index).map(|e| e.log_id),
                    obs.base
                ));
                break;
            }
            upto = index;
        }
        self.complete_upto.insert((id, term), upto);
        findings
    }

    fn check_final(&self, record: &Record) -> Result<(), String> {
        for (id, obs) in record.final_nodes() {
            for (&index, c) in &record.committed {
                if !record.holds_committed(obs, index) {
                    return Err(format!(
                        "leader completeness: committed entry {} is not in node {id}'s final log (holds {:?}; \
                         compacted up to {})",
                        c.log_id,
                        obs.entry(index).map(|e| e.log_id),
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
    use crate::testing::*;
    use raft_core::HardState;

    #[test]
    fn leader_completeness() {
        let mut w = world(3);
        for id in 1..=2 {
            w.on_append(id, &[membership(), cmd(1, 2, 5)]);
        }
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        // Node 3 lacks the committed entry, yet leads a later term.
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.on_append(3, &[membership()]);
        w.observe_leader(3, 2);
        assert!(has(&w, "leader completeness"), "{:?}", w.violations);
    }
}
