//! **Election Safety**: at most one leader per term.
//!
//! Checked three ways:
//! * by sampling, from metrics: two nodes seen leading one term. A task per node watches its metrics
//!   and the harness samples all nodes' metrics at every check, but metrics are a `watch`, so a
//!   leadership shorter than one batch of the driver can be missed;
//! * exactly, from durable hard states: a node's term never goes back, no node makes two different
//!   votes in one term, and no two candidates hold a quorum of durable votes in one term. Each
//!   candidate's votes are counted by the configuration its own durable log put in force when it
//!   voted for itself (a candidate campaigns by the latest membership in its log), with the
//!   harness's rule (`quorum`: majorities of both configurations while joint). Every node ever
//!   started is counted, members or not, so a removed node or a learner that won an election would be
//!   seen;
//! * exactly, from durable logs: no term has two leader no-op entries at different indexes (a leader
//!   appends one on taking office).

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, Term};

use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The Election Safety checker.
#[derive(Debug, Default)]
pub(crate) struct ElectionSafety {
    /// The index of the first no-op seen of each term.
    no_ops: BTreeMap<Term, LogIndex>,
    /// Each candidacy (a node's durable vote for itself), with the configuration its durable log
    /// put in force then (`None` if it held none).
    candidacies: BTreeMap<(Term, NodeId), Option<Membership>>,
}

impl Invariant for ElectionSafety {
    fn on_hard_state(
        &mut self,
        record: &Record,
        id: NodeId,
        old: HardState,
        new: HardState,
    ) -> Findings {
        let mut findings = Vec::new();
        if new.term < old.term {
            findings.push(format!(
                "hard state: node {id} saved term {} after term {} (terms must never go back)",
                new.term, old.term
            ));
        } else if new.term == old.term {
            if let Some(prev) = old.voted_for {
                if new.voted_for != Some(prev) {
                    findings.push(format!(
                        "election safety: node {id} changed its vote in term {} from {prev} to {:?}",
                        new.term, new.voted_for
                    ));
                }
            }
        }
        if new.voted_for.is_none() {
            return findings;
        }
        if new.voted_for == Some(id) {
            let config = record
                .nodes
                .get(&id)
                .and_then(|obs| crate::quorum::in_force(record, obs));
            self.candidacies.entry((new.term, id)).or_insert(config);
        }
        let votes = record.durable_votes(new.term, id);
        if votes.len() > 1 {
            findings.push(format!(
                "election safety: node {id} voted for each of {votes:?} in term {}",
                new.term
            ));
        }
        let mut tally: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
        for (&voter, candidates) in record.votes.get(&new.term).into_iter().flatten() {
            for &c in candidates {
                tally.entry(c).or_default().insert(voter);
            }
        }
        let winners: Vec<(NodeId, String)> = tally
            .iter()
            .filter_map(|(&c, voters)| {
                let config = self.candidacies.get(&(new.term, c))?.as_ref()?;
                crate::quorum::is_quorum(config, voters)
                    .then(|| (c, format!("{voters:?} of {config}")))
            })
            .collect();
        if winners.len() > 1 {
            findings.push(format!(
                "election safety: candidates {:?} each hold a quorum of durable votes in term {} ({})",
                winners.iter().map(|(c, _)| c).collect::<Vec<_>>(),
                new.term,
                winners
                    .iter()
                    .map(|(c, why)| format!("{c}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        findings
    }

    fn on_entry_appended(&mut self, _: &Record, _: NodeId, entry: &Entry<u64>) -> Findings {
        if *entry.payload != EntryPayload::Blank {
            return Vec::new();
        }
        let (term, index) = (entry.log_id.term, entry.log_id.index);
        let first = *self.no_ops.entry(term).or_insert(index);
        if first == index {
            return Vec::new();
        }
        vec![format!(
            "election safety: two no-op entries of term {term}, at indexes {first} and {index} \
             (two leaders in one term, or a leader that took office twice)"
        )]
    }

    fn on_leader(&mut self, record: &Record, _: NodeId, term: Term, first_time: bool) -> Findings {
        match record.leaders.get(&term) {
            Some(set) if first_time && set.len() > 1 => vec![format!(
                "election safety: nodes {set:?} were each leader in term {term}"
            )],
            _ => Vec::new(),
        }
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        for (term, leaders) in &record.leaders {
            if leaders.len() > 1 {
                return Err(format!(
                    "election safety: nodes {leaders:?} were each leader in term {term}"
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
    use raft_core::LogId;

    #[test]
    fn two_leaders_in_a_term() {
        let mut w = world(3);
        w.observe_leader(1, 2);
        w.observe_leader(2, 2);
        assert!(has(&w, "election safety"));
        assert!(ElectionSafety::default().check(&w.record).is_err());
    }

    #[test]
    fn a_changed_vote_and_two_majorities() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(2),
            },
        );
        assert!(has(&w, "changed its vote"));
        let mut w = world(3);
        for id in 1..=3 {
            w.on_append(id, &[membership()]);
        }
        // Node 2 "forgets" its vote across a restart and votes again.
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_open(
            2,
            HardState {
                term: 1,
                voted_for: None,
            },
            LogId::default(),
            vec![membership()],
            None,
        );
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(3),
            },
        );
        w.on_save_hard_state(
            3,
            HardState {
                term: 1,
                voted_for: Some(3),
            },
        );
        assert!(has(&w, "durability"), "{:?}", w.violations);
        assert!(has(&w, "node 2 voted for each of {1, 3} in term 1"));
        assert!(has(&w, "each hold a quorum"));
    }

    fn vote(w: &mut crate::world::World, voter: NodeId, term: Term, candidate: NodeId) {
        w.on_save_hard_state(
            voter,
            HardState {
                term,
                voted_for: Some(candidate),
            },
        );
    }

    /// Votes count by the configuration of the candidate's own log: with five voters, two votes do
    /// not elect; a candidate whose log still says three voters is elected by two, so two such
    /// candidates in one term are two leaders, whatever the configurations.
    #[test]
    fn votes_count_by_the_candidates_configuration() {
        let grown = Entry {
            log_id: LogId::new(1, 2),
            payload: EntryPayload::Membership(Box::new(Membership::new([1, 2, 3, 4, 5]))).into(),
        };
        let mut w = world(5);
        for id in 1..=5 {
            w.on_append(id, &[membership(), grown.clone()]);
        }
        vote(&mut w, 4, 2, 4);
        vote(&mut w, 5, 2, 4);
        vote(&mut w, 1, 2, 4);
        vote(&mut w, 2, 2, 2);
        vote(&mut w, 3, 2, 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // Node 3 never got the new configuration: its log says {1, 2, 3}.
        let mut w = world(5);
        for id in [1, 2, 4, 5] {
            w.on_append(id, &[membership(), grown.clone()]);
        }
        w.on_append(3, &[membership()]);
        vote(&mut w, 4, 2, 4);
        vote(&mut w, 5, 2, 4);
        vote(&mut w, 1, 2, 4);
        vote(&mut w, 3, 2, 3);
        vote(&mut w, 2, 2, 3);
        assert!(
            has(&w, "candidates [3, 4] each hold a quorum"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn two_no_ops_in_one_term() {
        let mut w = world(3);
        w.on_append(1, &[membership(), blank(2, 2)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5), blank(2, 3)]);
        assert!(has(&w, "two no-op entries of term 2"));
    }
}
