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
//! Reads without a log entry (`Raft::read_index`, `Raft::read_lease`, on the leader or a follower)
//! return the state of the node's state machine once the call returned: the log up to some index
//! `p`. A read is placed after every committed write at or below `p` and before every one above
//! it, and must fit in real time like any operation: it sees every write acknowledged before it
//! was invoked, no write invoked after it completed, and never less than a read that completed
//! before it was invoked. What it saw must be the committed prefix up to `p`, and `p` at least the
//! read index the node returned. A read that failed read nothing and is not judged. (A local read
//! that asks no one, stale by design, must not be recorded here.)
//!
//! Checked exactly: a value committed twice, when it is committed the second time (from applies); an
//! acknowledgement that is not the committed entry at its index, or whose response is not that index,
//! when it arrives (from clients); a read's state and read index, when it is served; the whole history
//! (reads included) against the committed entries and every durable log, on demand. The history itself is recorded in the `history` module.

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Entry, EntryPayload, LogId, LogIndex, NodeId};

use crate::history::{History, Op, Outcome, ReadKind, ReadOp, ReadOutcome, ReadValue};
use crate::invariant::{Findings, Invariant};
use crate::record::Record;

/// The linearizability checker.
#[derive(Debug, Default)]
pub(crate) struct Linearizability;

impl Invariant for Linearizability {
    fn on_first_commit(&mut self, record: &Record, _: NodeId, entry: &Entry<u64>) -> Findings {
        let EntryPayload::Command(v) = *entry.payload else {
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

    fn on_read_served(&mut self, record: &Record, read: &ReadOp) -> Findings {
        check_read_served(record, read)
    }

    fn check(&self, record: &Record) -> Result<(), String> {
        let in_logs: BTreeSet<u64> = record
            .nodes
            .values()
            .flat_map(|o| o.log.iter())
            .filter_map(|e| match *e.payload {
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
/// (`anywhere`). The module docs of `invariants::linearizability` in the source give the model.
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
    check_real_time_order(history, positions, committed_id)
}

/// An operation in the order the log gives, for the real-time check: what it is (for messages)
/// and when it was invoked.
#[derive(Clone, Copy)]
enum Placed<'a> {
    Write(&'a Op, LogIndex),
    Read(&'a ReadOp, ReadValue),
}

impl Placed<'_> {
    fn invoked(&self) -> u64 {
        match self {
            Placed::Write(op, _) => op.invoked,
            Placed::Read(op, _) => op.invoked,
        }
    }

    fn describe(&self) -> String {
        match self {
            Placed::Write(op, index) => format!("value {} (index {index})", op.value),
            Placed::Read(op, v) => format!(
                "{} on node {} (it saw the log up to {}, read index {})",
                read_kind(op),
                op.node,
                v.seen,
                v.read_index
            ),
        }
    }
}

/// The real-time order of writes and served reads. The log fixes the order of the committed
/// writes; a read that saw the log up to index `p` goes after every write at or below `p` and
/// before every write above it (reads that saw the same writes may go in any order among
/// themselves). The history is linearizable iff each operation can be given a point in time
/// within its interval, in that order: given greedily, each at the latest invocation so far,
/// which fails exactly when an operation that completed comes after one invoked after it
/// completed. Writes without a response (unknown outcome) may take effect any time after their
/// invocation.
fn check_real_time_order(
    history: &History,
    positions: &BTreeMap<u64, LogIndex>,
    committed_id: impl Fn(LogIndex) -> Option<LogId>,
) -> Result<(), String> {
    let mut writes: Vec<(LogIndex, &Op)> = positions
        .iter()
        .filter_map(|(v, &i)| history.ops.get(v).map(|op| (i, op)))
        .collect();
    writes.sort_by_key(|(i, _)| *i);
    // Served reads, grouped by how many of the committed writes they saw.
    let mut reads: Vec<(usize, &ReadOp, ReadValue)> = Vec::new();
    for op in &history.reads {
        let ReadOutcome::Served(v) = op.outcome else {
            continue;
        };
        if v.seen.index > 0 && committed_id(v.seen.index) != Some(v.seen) {
            return Err(format!(
                "linearizability: {} on node {} saw the log up to {}, which is not the committed entry \
                 there ({:?})",
                read_kind(op),
                op.node,
                v.seen,
                committed_id(v.seen.index)
            ));
        }
        let seen = writes.partition_point(|(i, _)| *i <= v.seen.index);
        reads.push((seen, op, v));
    }
    reads.sort_by_key(|(seen, op, _)| (*seen, op.invoked));
    let mut reads = reads.into_iter().peekable();
    // The operation invoked last among those placed so far.
    let mut latest: Option<Placed<'_>> = None;
    for k in 0..=writes.len() {
        // The reads that saw exactly the first k writes.
        let mut group_latest: Option<Placed<'_>> = None;
        while let Some((_, op, v)) = reads.next_if(|(seen, _, _)| *seen == k) {
            if let (Some(done), Some(l)) = (op.completed, latest) {
                if done < l.invoked() {
                    let this = format!(
                        "{} on node {} (completed at logical time {done}) saw the log up to {} (read index {})",
                        read_kind(op),
                        op.node,
                        v.seen,
                        v.read_index
                    );
                    return Err(match l {
                        Placed::Write(..) => format!(
                            "linearizability: {this}, which holds {}, written by a write invoked only later \
                             (at logical time {})",
                            l.describe(),
                            l.invoked()
                        ),
                        Placed::Read(..) => format!(
                            "linearizability: stale read: {this}, but {}, invoked later (at logical time {}), \
                             saw less",
                            l.describe(),
                            l.invoked()
                        ),
                    });
                }
            }
            if group_latest.is_none_or(|g| g.invoked() < op.invoked) {
                group_latest = Some(Placed::Read(op, v));
            }
        }
        if let Some(g) = group_latest {
            if latest.is_none_or(|l| l.invoked() < g.invoked()) {
                latest = Some(g);
            }
        }
        let Some(&(index, op)) = writes.get(k) else {
            break;
        };
        if let (Some(done), Some(l)) = (op.completed, latest) {
            if matches!(op.outcome, Outcome::Acked(_)) && done < l.invoked() {
                return Err(match l {
                    Placed::Write(..) => format!(
                        "linearizability: value {} (acknowledged at logical time {done}, index {index}) was \
                         ordered after {} (invoked later, at logical time {})",
                        op.value,
                        l.describe(),
                        l.invoked()
                    ),
                    Placed::Read(..) => format!(
                        "linearizability: stale read: value {} was acknowledged at index {index} (logical time \
                         {done}), but {}, invoked later (at logical time {}), did not see it",
                        op.value,
                        l.describe(),
                        l.invoked()
                    ),
                });
            }
        }
        if latest.is_none_or(|l| l.invoked() < op.invoked) {
            latest = Some(Placed::Write(op, index));
        }
    }
    Ok(())
}

/// How a read was asked, for messages.
fn read_kind(op: &ReadOp) -> &'static str {
    match op.kind {
        ReadKind::Index => "a ReadIndex read",
        ReadKind::Lease => "a lease read",
    }
}

/// The checks of one served read at the moment it is served: the node's state machine had
/// applied its read index (the contract of `Raft::read_index`), and what it held is the committed
/// log prefix (same last entry, same digest).
fn check_read_served(record: &Record, read: &ReadOp) -> Findings {
    let ReadOutcome::Served(v) = read.outcome else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    if v.seen.index < v.read_index {
        findings.push(format!(
            "reads: node {} returned read index {} for {}, but its state machine had applied only up to {}",
            read.node,
            v.read_index,
            read_kind(read),
            v.seen
        ));
    }
    if v.seen.index > 0 {
        let committed = record.committed.get(&v.seen.index);
        if committed.is_none_or(|c| c.log_id != v.seen || c.digest != v.digest) {
            findings.push(format!(
                "reads: {} on node {} saw a state (up to {}, digest {:#x}) that is not the committed log \
                 prefix ({:?})",
                read_kind(read),
                read.node,
                v.seen,
                v.digest,
                committed.map(|c| (c.log_id, c.digest))
            ));
        }
    }
    findings
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

    /// Records a read served on node 1 that saw the log up to `seen` (term 1), invoked and
    /// completed now.
    fn read(h: &mut History, seen: LogIndex) {
        let r = h.invoke_read(1, ReadKind::Index, true, false);
        h.complete_read(r, served(seen));
    }

    fn served(seen: LogIndex) -> ReadOutcome {
        ReadOutcome::Served(ReadValue {
            read_index: seen,
            seen: LogId::new(1, seen),
            digest: 0,
        })
    }

    #[test]
    fn reads_see_every_write_acknowledged_before_them() {
        let mut h = History::default();
        acked(&mut h, 10, 2);
        read(&mut h, 2);
        read(&mut h, 5); // no-ops or membership entries may follow: still the same writes
        assert_eq!(check(&h, &[(10, 2)]), Ok(()));
        let mut h = History::default();
        acked(&mut h, 10, 2);
        read(&mut h, 1);
        let err = check(&h, &[(10, 2)]).unwrap_err();
        assert!(err.contains("stale read"), "{err}");
    }

    #[test]
    fn reads_never_see_writes_invoked_after_them() {
        let mut h = History::default();
        read(&mut h, 2);
        acked(&mut h, 10, 2);
        assert!(check(&h, &[(10, 2)]).is_err());
        // A write concurrent with the read may or may not be seen.
        let mut h = History::default();
        h.invoke(10).unwrap();
        read(&mut h, 2);
        h.complete(10, Outcome::Acked(LogId::new(1, 2)));
        read(&mut h, 2);
        assert_eq!(check(&h, &[(10, 2)]), Ok(()));
        let mut h = History::default();
        h.invoke(10).unwrap();
        read(&mut h, 1);
        h.complete(10, Outcome::Acked(LogId::new(1, 2)));
        assert_eq!(check(&h, &[(10, 2)]), Ok(()));
    }

    #[test]
    fn a_later_read_never_sees_less() {
        let mut h = History::default();
        h.invoke(10).unwrap(); // outcome unknown: committed at 2 some time after its invocation
        read(&mut h, 2);
        read(&mut h, 1);
        assert!(check(&h, &[(10, 2)]).is_err());
        // Concurrent reads may see different states.
        let mut h = History::default();
        h.invoke(10).unwrap();
        let a = h.invoke_read(1, ReadKind::Lease, true, false);
        let b = h.invoke_read(2, ReadKind::Index, false, false);
        h.complete_read(a, served(2));
        h.complete_read(b, served(1));
        assert_eq!(check(&h, &[(10, 2)]), Ok(()));
    }

    #[test]
    fn failed_reads_are_not_judged_and_reads_must_see_committed_entries() {
        let mut h = History::default();
        acked(&mut h, 10, 2);
        let r = h.invoke_read(1, ReadKind::Index, true, true);
        h.complete_read(r, ReadOutcome::Failed("leadership lost".into()));
        assert_eq!(check(&h, &[(10, 2)]), Ok(()));
        let mut h = History::default();
        read(&mut h, 3); // nothing committed at 3
        assert!(check_history(&h, &BTreeMap::new(), |_| None, |_| false).is_err());
    }
}
