//! [`Figures`]: the counters and latencies the driver accumulates between two publications of
//! [`Metrics`]. Every figure is a plain field of the driver task (no lock, no atomic), updated once
//! per proposal, batch or event, and copied into the published `Metrics` after each batch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::metrics::{LatencyStats, Metrics, ProposalStats, SnapshotStats};
use crate::error::ClientWriteError;
use crate::types::{Entry, LogId, NodeId, Term};

/// What the driver counts and times (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct Figures {
    proposals: ProposalStats,
    snapshots: SnapshotStats,
    latency: LatencyStats,
    leader_changes: u64,
    /// The last `(term, leader)` counted in `leader_changes`.
    leader_seen: Option<(Term, NodeId)>,
    /// This node's accepted proposals not yet seen committed, in log order, with when they were
    /// accepted. Entries leave once the commit point passes them (committed or overwritten), so
    /// it holds no more than the driver's own queue of pending writes did at its longest.
    proposed_at: VecDeque<(LogId, Instant)>,
    /// The clock read of the current turn of the driver's loop, shared by the proposals accepted in
    /// it (a turn lasts microseconds; one read per proposal was a visible share of a write's cost).
    turn_clock: Option<Instant>,
}

impl Figures {
    /// A new turn of the driver's loop begins: the next proposal reads the clock again.
    pub(crate) fn new_turn(&mut self) {
        self.turn_clock = None;
    }

    /// The leader appended a client's proposal as `log_id`, timed from this turn's clock read.
    pub(crate) fn proposal_accepted(&mut self, log_id: LogId) {
        self.proposals.accepted = self.proposals.accepted.saturating_add(1);
        let now = *self.turn_clock.get_or_insert_with(Instant::now);
        self.proposed_at.push_back((log_id, now));
    }

    /// A proposal was refused before anything was appended.
    pub(crate) fn proposal_refused(&mut self, why: &ClientWriteError) {
        let slot = match why {
            ClientWriteError::TooLarge { .. } => &mut self.proposals.too_large,
            _ => &mut self.proposals.not_leader,
        };
        *slot = slot.saturating_add(1);
    }

    /// `n` accepted proposals were failed with `OutcomeUnknown`.
    pub(crate) fn outcome_unknown(&mut self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.proposals.outcome_unknown = self.proposals.outcome_unknown.saturating_add(n);
    }

    /// `entries` (one contiguous run of the log) are committed and go to the state machine: the
    /// proposals of this node among them are timed from acceptance to now (one clock read per batch).
    pub(crate) fn committed<C>(&mut self, entries: &[Entry<C>]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (first, last) = (first.log_id.index, last.log_id.index);
        let mut now = None;
        while let Some(&(log_id, at)) = self.proposed_at.front() {
            if log_id.index > last {
                break;
            }
            self.proposed_at.pop_front();
            let slot = log_id.index.checked_sub(first).map(|pos| pos as usize);
            // Below the batch (covered by a snapshot) or overwritten: not this proposal's commit.
            if slot.is_some_and(|pos| entries[pos].log_id == log_id) {
                let now = *now.get_or_insert_with(Instant::now);
                self.latency
                    .commit
                    .record(now.saturating_duration_since(at));
            }
        }
    }

    /// One `RaftStorage::append` call (which makes the entries durable) took `took`.
    pub(crate) fn appended(&mut self, took: Duration) {
        self.latency.append.record(took);
    }

    /// One `StateMachine::apply` call took `took`.
    pub(crate) fn applied(&mut self, took: Duration) {
        self.latency.apply.record(took);
    }

    /// The node built a snapshot of its state machine and the engine took it.
    pub(crate) fn snapshot_built(&mut self) {
        self.snapshots.built = self.snapshots.built.saturating_add(1);
    }

    /// The node installed a snapshot received from the leader.
    pub(crate) fn snapshot_installed(&mut self) {
        self.snapshots.installed = self.snapshots.installed.saturating_add(1);
    }

    /// Copies the figures into `m`, counting a leadership change if `leader` is a leader of `term`
    /// not counted yet; returns whether `m` changed.
    pub(crate) fn publish(&mut self, m: &mut Metrics, term: Term, leader: Option<NodeId>) -> bool {
        if let Some(leader) = leader {
            if self.leader_seen != Some((term, leader)) {
                self.leader_seen = Some((term, leader));
                self.leader_changes = self.leader_changes.saturating_add(1);
            }
        }
        let mut changed = false;
        changed |= super::driver::update(&mut m.leader_changes, self.leader_changes);
        changed |= super::driver::update(&mut m.proposals, self.proposals);
        changed |= super::driver::update(&mut m.snapshots, self.snapshots);
        changed |= super::driver::update(&mut m.latency, self.latency);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn entry(term: Term, index: u64) -> Entry<()> {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank.into(),
        }
    }

    #[test]
    fn a_leader_counts_once_per_term() {
        let mut f = Figures::default();
        let mut m = Metrics::default();
        assert!(!f.publish(&mut m, 1, None));
        assert!(f.publish(&mut m, 1, Some(2)));
        assert!(!f.publish(&mut m, 1, Some(2)), "the same leader again");
        f.publish(&mut m, 2, None);
        f.publish(&mut m, 3, Some(2)); // re-elected in a later term: a change
        f.publish(&mut m, 4, Some(3));
        assert_eq!(m.leader_changes, 3);
    }

    #[test]
    fn only_proposals_committed_at_their_own_id_are_timed() {
        let mut f = Figures::default();
        f.proposal_accepted(LogId::new(1, 1));
        f.proposal_accepted(LogId::new(1, 2)); // overwritten by term 2's entry at 2
        f.proposal_accepted(LogId::new(1, 4)); // not committed yet
        f.committed(&[entry(1, 1), entry(2, 2), entry(2, 3)]);
        assert_eq!(f.latency.commit.count(), 1);
        assert_eq!(f.proposed_at.len(), 1, "index 4 still waits");
        f.committed(&[entry(1, 4)]);
        assert_eq!(f.latency.commit.count(), 2);
        assert!(f.proposed_at.is_empty());
        assert_eq!(f.proposals.accepted, 3);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut f = Figures::default();
        f.proposal_refused(&ClientWriteError::NotLeader { leader_hint: None });
        f.proposal_refused(&ClientWriteError::TooLarge { size: 2, max: 1 });
        f.outcome_unknown(3);
        assert_eq!(
            f.proposals,
            ProposalStats {
                accepted: 0,
                not_leader: 1,
                too_large: 1,
                outcome_unknown: 3,
            }
        );
    }
}
