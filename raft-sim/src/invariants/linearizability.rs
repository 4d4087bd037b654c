//! **Linearizability** of the client history, for the harness's append-only model.
//!
//! The model: the replicated log is an append-only sequence; `write(v)` appends the unique value `v`
//! and returns the index it landed at. A history of such writes is linearizable iff
//! * every value is in the log at most once, and only values some client wrote;
//! * an acknowledged write is in the log at exactly the index it was acknowledged with;
//! * a write that definitely was not proposed (every attempt answered `NotLeader`, or no leader was
//!   found) is nowhere;
//! * the log order respects real time: if write A was acknowledged before write B was invoked, and
//!   both are in the log, A's index is below B's. (A write whose outcome is unknown has no response,
//!   so it may take effect at any point after its invocation.)
//!
//! Checked exactly: a value committed twice, when it is committed the second time (from applies); an
//! acknowledgement that is not the committed entry at its index, or whose response is not that index,
//! when it arrives (from clients); the whole history against the committed entries and every durable
//! log, on demand. The history itself is recorded in the `history` module.

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Entry, EntryPayload, LogId, LogIndex, NodeId};

use crate::history::{History, Op, Outcome};
use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The linearizability checker.
#[derive(Debug, Default)]
pub(crate) struct Linearizability;

impl Invariant for Linearizability {
    fn on_first_commit(&mut self, record: &Record, _: NodeId, entry: &Entry<u64>) -> Findings {
        let EntryPayload::Command(v) = entry.payload else {
            return Vec::new();
        };
        match record.positions.get(&v) {
            Some(&other) => vec![format!(
                "linearizability: value {v} committed twice, at indexes {other} and {}",
                entry.log_id.index
            )],
            None => Vec::new(),
        }
    }

    fn on_write_acknowledged(
        &mut self,
        record: &Record,
        node: NodeId,
        value: u64,
        log_id: LogId,
        response: LogIndex,
    ) -> Findings {
        let mut findings = Vec::new();
        if response != log_id.index {
            findings.push(format!(
                "client: value {value} acknowledged at {log_id} with response {response} (the index it was \
                 applied at)"
            ));
        }
        let committed = record.committed.get(&log_id.index);
        let ok = committed
            .is_some_and(|c| c.log_id == log_id && c.payload == EntryPayload::Command(value));
        if !ok {
            findings.push(format!(
                "client: value {value} acknowledged at {log_id} by node {node}, but the entry committed there \
                 is {:?}",
                committed.map(|c| (c.log_id, &c.payload))
            ));
        }
        findings
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        let in_logs: BTreeSet<u64> = record
            .nodes
            .values()
            .flat_map(|o| o.log.iter())
            .filter_map(|e| match e.payload {
                EntryPayload::Command(v) => Some(v),
                _ => None,
            })
            .collect();
        check_history(
            &record.history,
            &record.positions,
            |i| record.committed.get(&i).map(|c| c.log_id),
            |v| in_logs.contains(&v),
        )
    }
}

/// Checks `history` against where values were committed (`positions`: value -> index), the id of
/// the committed entry at an index (`committed_id`), and which values are anywhere in any log
/// (`anywhere`). See the [module docs](self) for the model.
///
/// Public (re-exported at the crate root) so that other harnesses check their histories with this
/// same code: a history of any object whose operations are placed in one total order (positions)
/// maps onto the model, each operation as a unique value at its position; the check is then that
/// the order respects real time and that every acknowledged operation is where it was
/// acknowledged. Checking each response against a sequential replay of that order is the other
/// harness's part (it knows its object).
///
/// # Errors
/// The first violation found.
pub fn check_history(
    history: &History,
    positions: &BTreeMap<u64, LogIndex>,
    committed_id: impl Fn(LogIndex) -> Option<LogId>,
    anywhere: impl Fn(u64) -> bool,
) -> Result<(), String> {
    for (&value, &index) in positions {
        if !history.ops.contains_key(&value) {
            return Err(format!(
                "linearizability: value {value} committed at index {index} was never written by a client"
            ));
        }
    }
    for op in history.ops.values() {
        match &op.outcome {
            Outcome::Acked(log_id) => match positions.get(&op.value) {
                Some(&index) if index == log_id.index && committed_id(index) == Some(*log_id) => {}
                other => {
                    return Err(format!(
                        "acknowledged write lost: value {} was acknowledged at {log_id}, but is committed at \
                         {other:?} (entry there: {:?})",
                        op.value,
                        committed_id(log_id.index)
                    ))
                }
            },
            Outcome::NotProposed => {
                if positions.contains_key(&op.value) || anywhere(op.value) {
                    return Err(format!(
                        "linearizability: value {} was refused with NotLeader on every attempt (to {:?}), \
                         yet it is in a log",
                        op.value, op.attempts
                    ));
                }
            }
            Outcome::Pending | Outcome::Unknown(_) => {}
        }
    }
    // Real-time order. Walk the committed writes in log order, keeping the latest invocation seen;
    // an acknowledged write placed after a write invoked once it had completed is a violation.
    let mut placed: Vec<(LogIndex, &Op)> = positions
        .iter()
        .filter_map(|(v, &i)| history.ops.get(v).map(|op| (i, op)))
        .collect();
    placed.sort_by_key(|(i, _)| *i);
    let mut latest_invoked: Option<(u64, &Op, LogIndex)> = None;
    for &(index, op) in &placed {
        if let (Some(done), Some((inv, other, other_index))) = (op.completed, latest_invoked) {
            if matches!(op.outcome, Outcome::Acked(_)) && done < inv {
                return Err(format!(
                    "linearizability: value {} (acknowledged at logical time {done}, index {index}) was \
                     ordered after value {} (invoked later, at logical time {inv}, index {other_index})",
                    op.value, other.value
                ));
            }
        }
        if !matches!(latest_invoked, Some((inv, _, _)) if inv >= op.invoked) {
            latest_invoked = Some((op.invoked, op, index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(h: &mut History, v: u64, index: LogIndex) {
        h.invoke(v).unwrap();
        h.complete(v, Outcome::Acked(LogId::new(1, index)));
    }

    fn check(h: &History, positions: &[(u64, LogIndex)]) -> Result<(), String> {
        let positions: BTreeMap<u64, LogIndex> = positions.iter().copied().collect();
        check_history(
            h,
            &positions,
            |i| Some(LogId::new(1, i)),
            |v| positions.contains_key(&v),
        )
    }

    #[test]
    fn sequential_writes_in_order_pass() {
        let mut h = History::default();
        acked(&mut h, 10, 2);
        acked(&mut h, 11, 3);
        assert_eq!(check(&h, &[(10, 2), (11, 3)]), Ok(()));
    }

    #[test]
    fn real_time_order_is_enforced() {
        let mut h = History::default();
        acked(&mut h, 10, 3);
        acked(&mut h, 11, 2); // invoked after 10 was acknowledged, yet ordered before it
        assert!(check(&h, &[(10, 3), (11, 2)]).is_err());
    }

    #[test]
    fn concurrent_writes_may_go_either_way() {
        let mut h = History::default();
        h.invoke(10).unwrap();
        h.invoke(11).unwrap();
        h.complete(11, Outcome::Acked(LogId::new(1, 2)));
        h.complete(10, Outcome::Acked(LogId::new(1, 3)));
        assert_eq!(check(&h, &[(10, 3), (11, 2)]), Ok(()));
    }

    #[test]
    fn lost_ack_and_phantom_and_not_proposed() {
        let mut h = History::default();
        acked(&mut h, 10, 2);
        assert!(check(&h, &[]).is_err(), "acknowledged write missing");
        assert!(check(&h, &[(10, 2), (99, 3)]).is_err(), "phantom value");
        let mut h = History::default();
        h.invoke(5).unwrap();
        h.complete(5, Outcome::NotProposed);
        assert!(check(&h, &[(5, 2)]).is_err(), "NotLeader write committed");
        let mut h = History::default();
        h.invoke(5).unwrap();
        h.complete(5, Outcome::Unknown("timeout".into()));
        assert_eq!(check(&h, &[(5, 2)]), Ok(()));
        assert_eq!(check(&h, &[]), Ok(()));
        assert!(h.clone().invoke(5).is_err(), "values are unique");
    }

    #[test]
    fn unknown_write_must_follow_writes_acked_before_it_started() {
        let mut h = History::default();
        acked(&mut h, 10, 5);
        h.invoke(11).unwrap();
        h.complete(11, Outcome::Unknown("outcome unknown".into()));
        assert!(check(&h, &[(10, 5), (11, 4)]).is_err());
        assert_eq!(check(&h, &[(10, 5), (11, 6)]), Ok(()));
    }
}
