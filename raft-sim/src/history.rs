//! The client history: every write and every read without a log entry the clients of a cluster
//! made, when it was invoked and how it ended. The linearizability check that reads it is in
//! `invariants::linearizability`.
//!
//! Real time is a logical clock: one counter, bumped at every invocation and every response, so the
//! order of events on the test's single thread is exact.
//!
//! [`History`] and the checker `check_history` are public so that other harnesses (raft-kv's
//! multi-process tests) record their clients' operations in the same form and check them with the
//! same code, rather than with a second checker. A harness with concurrent clients records through
//! one lock, the invocation before the request leaves and the response after it arrived: every
//! interval then contains the real one, which can only make the check more permissive, never
//! report a violation that did not happen.

use std::collections::BTreeMap;

use raft_core::{LogId, LogIndex, NodeId};

/// How a client write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (or abandoned: the task was cancelled). Treated as unknown.
    Pending,
    /// Acknowledged: committed and applied at this log position.
    Acked(LogId),
    /// Definitely not proposed (`NotLeader` on every attempt, or no leader found).
    NotProposed,
    /// Proposed, or possibly proposed, with no acknowledgement: `OutcomeUnknown`, `Stopped`, or a
    /// timeout. The value may or may not be in the log, at most once.
    Unknown(String),
}

/// One client write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The unique value written.
    pub value: u64,
    /// The nodes it was sent to, in order.
    pub attempts: Vec<NodeId>,
    /// Logical time of the invocation.
    pub invoked: u64,
    /// Logical time of the response, if any.
    pub completed: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a read asked the node to confirm it may serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// [`Raft::read_index`](raft_core::Raft::read_index): a round of heartbeats answered by a
    /// majority (on a follower: the leader's, asked with a `ReadIndex` RPC).
    Index,
    /// [`Raft::read_lease`](raft_core::Raft::read_lease): served on the leader's lease when one is
    /// configured and holds, else as [`Index`](Self::Index).
    Lease,
}

/// What a served read saw: the state of the node's state machine right after the read returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadValue {
    /// The read index the node returned.
    pub read_index: LogIndex,
    /// The last entry the state machine had applied (or restored): the read saw the log up to it.
    pub seen: LogId,
    /// The state machine's digest (the hash of the log prefix up to `seen`).
    pub digest: u64,
}

/// How a read ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Still running (or abandoned).
    Pending,
    /// Refused, timed out or lost: nothing was read, and the checker ignores it.
    Failed(String),
    /// Served.
    Served(ReadValue),
}

/// One client read without a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOp {
    /// The node asked (a follower forwards it to its leader, and serves it itself).
    pub node: NodeId,
    /// Whether the node asked said it led (its metrics) when the read was invoked.
    pub on_leader: bool,
    /// How it was asked.
    pub kind: ReadKind,
    /// Whether the node asked said it led a term for which a newer leader had already been seen
    /// (a leader cut off from the cluster that does not know it was replaced).
    pub on_deposed_leader: bool,
    /// Logical time of the invocation.
    pub invoked: u64,
    /// Logical time of the response, if any.
    pub completed: Option<u64>,
    /// How it ended.
    pub outcome: ReadOutcome,
}

/// Every client write of a run, by value, and every read, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    clock: u64,
    pub(crate) ops: BTreeMap<u64, Op>,
    pub(crate) reads: Vec<ReadOp>,
}

impl History {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Every operation recorded, by value.
    pub fn ops(&self) -> &BTreeMap<u64, Op> {
        &self.ops
    }

    /// Records the invocation of a write of `value`. Values must be unique.
    ///
    /// # Errors
    /// `value` was recorded before.
    pub fn invoke(&mut self, value: u64) -> Result<(), String> {
        let invoked = self.tick();
        if self.ops.contains_key(&value) {
            return Err(format!(
                "harness misuse: value {value} was written twice (client values must be unique)"
            ));
        }
        self.ops.insert(
            value,
            Op {
                value,
                attempts: Vec::new(),
                invoked,
                completed: None,
                outcome: Outcome::Pending,
            },
        );
        Ok(())
    }

    /// Records that the write of `value` was sent to `node`.
    pub fn attempt(&mut self, value: u64, node: NodeId) {
        if let Some(op) = self.ops.get_mut(&value) {
            op.attempts.push(node);
        }
    }

    /// Records the response to the write of `value` (the latest one counts).
    pub fn complete(&mut self, value: u64, outcome: Outcome) {
        let now = self.tick();
        if let Some(op) = self.ops.get_mut(&value) {
            op.completed = Some(now);
            op.outcome = outcome;
        }
    }

    /// Records the invocation of a read on `node`; returns its number (for
    /// [`complete_read`](Self::complete_read)).
    pub(crate) fn invoke_read(
        &mut self,
        node: NodeId,
        kind: ReadKind,
        on_leader: bool,
        on_deposed_leader: bool,
    ) -> usize {
        let invoked = self.tick();
        self.reads.push(ReadOp {
            node,
            on_leader,
            kind,
            on_deposed_leader,
            invoked,
            completed: None,
            outcome: ReadOutcome::Pending,
        });
        self.reads.len() - 1
    }

    /// Records how read number `read` ended.
    pub(crate) fn complete_read(&mut self, read: usize, outcome: ReadOutcome) {
        let now = self.tick();
        if let Some(op) = self.reads.get_mut(read) {
            op.completed = Some(now);
            op.outcome = outcome;
        }
    }
}
