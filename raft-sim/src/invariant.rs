//! [`Invariant`]: the interface between the recorder and the checkers.
//!
//! The recorder (`world`) keeps the shared [`Record`] up to date and calls every checker's hooks at
//! fixed points of each observation, always with the record as it is at that point (each hook says
//! whether that is before or after the record took the observation in). A hook returns what it
//! found wrong; the recorder reports it. Every hook does nothing by default: a checker implements
//! the ones its property needs, and keeps whatever state of its own it needs between them.
//!
//! Hooks run inside the nodes' tasks, where a panic would be lost: they never panic, they return
//! findings.

use raft_core::{
    Entry, HardState, LogId, LogIndex, LogState, NodeId, Snapshot, SnapshotChunk, SnapshotMeta,
    Term,
};

use crate::applied_state::AppliedState;
use crate::history::ReadOp;
use crate::record::{FirstHeld, Record};

/// What a hook found wrong: one message per violation, each starting with the property it breaks.
pub(crate) type Findings = Vec<String>;

/// The state a node read from its storage when it (re)started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opened<'a> {
    /// The hard state.
    pub(crate) hard_state: HardState,
    /// The compaction point (last purged entry).
    pub(crate) base: LogId,
    /// The entries after `base`.
    pub(crate) entries: &'a [Entry<u64>],
    /// The snapshot.
    pub(crate) snapshot: Option<&'a Snapshot>,
}

/// A snapshot chunk a node's storage served: `snapshot_chunk(snapshot, offset, max_len)` gave `got`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkRead<'a> {
    /// The snapshot asked for.
    pub(crate) snapshot: LogId,
    /// The offset asked for.
    pub(crate) offset: u64,
    /// The most bytes asked for.
    pub(crate) max_len: usize,
    /// What the storage answered.
    pub(crate) got: &'a Option<SnapshotChunk>,
}

/// A checker of one property, fed by the recorder. See the [module docs](self).
#[allow(unused_variables)] // the default hooks ignore their arguments
pub(crate) trait Invariant: Send {
    // ----- storage: what a node's storage acknowledged -----

    /// Node `id` read `opened` from its storage at a start, *before* the record takes it in (the
    /// record still holds what the storage acknowledged before; incarnation 0 at the first start).
    fn on_reopen(&mut self, record: &Record, id: NodeId, opened: &Opened<'_>) -> Findings {
        Vec::new()
    }

    /// Node `id`'s start is recorded (after [`on_reopen`](Self::on_reopen) and the
    /// [`on_entry_held`](Self::on_entry_held) of every entry it holds).
    fn on_opened(&mut self, record: &Record, id: NodeId) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage acknowledged a hard state; the record holds it (and its vote), `old` is
    /// the one before.
    fn on_hard_state(
        &mut self,
        record: &Record,
        id: NodeId,
        old: HardState,
        new: HardState,
    ) -> Findings {
        Vec::new()
    }

    /// Node `id` holds entry `log_id` durably on a log prefix hashing to `hash` (after an append, or
    /// as reopened; the record holds it). `first` is the first copy of that entry ever seen, on any
    /// node (this one, if it is the first).
    fn on_entry_held(
        &mut self,
        record: &Record,
        id: NodeId,
        log_id: LogId,
        hash: u64,
        first: FirstHeld,
    ) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage acknowledged appending `entry` (after
    /// [`on_entry_held`](Self::on_entry_held)).
    fn on_entry_appended(&mut self, record: &Record, id: NodeId, entry: &Entry<u64>) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage acknowledged truncating its log from `from`, removing `removed` (never
    /// empty); called *before* the record drops them.
    fn on_truncate(
        &mut self,
        record: &Record,
        id: NodeId,
        from: LogIndex,
        removed: &[LogId],
    ) -> Findings {
        Vec::new()
    }

    /// Node `id`'s disk lost the tail of its durable log while the node was down: `removed` (never
    /// empty), from index `from` on, are gone (see
    /// [`Cluster::restart_with_lost_tail`](crate::Cluster::restart_with_lost_tail)). Called *before*
    /// the record drops them and before the node reopens its storage. Unlike a truncation this is no
    /// step of the protocol: the node itself did not choose it, and its storage reports the loss when
    /// it opens (`lost_entries_on_open`).
    fn on_tail_lost(
        &mut self,
        record: &Record,
        id: NodeId,
        from: LogIndex,
        removed: &[LogId],
    ) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage acknowledged purging its log up to `upto`, which removed entries; the
    /// record has moved the compaction point.
    fn on_purged(&mut self, record: &Record, id: NodeId, upto: LogIndex) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage acknowledged storing `snapshot`, whose data decodes to `state` (or does
    /// not, and why); called *before* the record takes it.
    fn on_snapshot_stored(
        &mut self,
        record: &Record,
        id: NodeId,
        snapshot: &Snapshot,
        state: Result<&AppliedState, &str>,
    ) -> Findings {
        Vec::new()
    }

    /// A snapshot node `id` stored replaced its log (the record holds the new compaction point).
    fn on_log_replaced(&mut self, record: &Record, id: NodeId) -> Findings {
        Vec::new()
    }

    /// Node `id`'s storage served a snapshot chunk.
    fn on_snapshot_chunk_read(
        &mut self,
        record: &Record,
        id: NodeId,
        read: &ChunkRead<'_>,
    ) -> Findings {
        Vec::new()
    }

    /// After acknowledging `what`, node `id`'s storage reports log state `log` and snapshot
    /// `snapshot`.
    fn on_storage_readback(
        &mut self,
        record: &Record,
        id: NodeId,
        what: &str,
        log: &LogState,
        snapshot: Option<LogId>,
    ) -> Findings {
        Vec::new()
    }

    // ----- state machines -----

    /// Incarnation `incarnation` of node `id` restored a snapshot whose data decoded to `state`;
    /// called *before* the record takes it.
    fn on_restore(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        meta: &SnapshotMeta,
        state: &AppliedState,
    ) -> Findings {
        Vec::new()
    }

    /// Node `id` was asked to restore a snapshot of `data_len` bytes that does not decode (`reason`),
    /// and refused.
    fn on_restore_refused(
        &mut self,
        record: &Record,
        id: NodeId,
        meta: &SnapshotMeta,
        data_len: usize,
        reason: &str,
    ) -> Findings {
        Vec::new()
    }

    /// Incarnation `incarnation` of node `id` applied `entry`, right after the entry at index
    /// `previous` (the last applied or restored before it; 0 for none); called *before* the record
    /// takes it in (and, if no node applied its index before, before
    /// [`on_first_commit`](Self::on_first_commit)).
    fn on_apply_entry(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        entry: &Entry<u64>,
        previous: LogIndex,
    ) -> Findings {
        Vec::new()
    }

    /// Node `id` is the first to apply `entry` at its index; called *before* the record makes it a
    /// committed entry.
    fn on_first_commit(&mut self, record: &Record, id: NodeId, entry: &Entry<u64>) -> Findings {
        Vec::new()
    }

    /// Incarnation `incarnation` of node `id` finished applying a batch ending with `last` and
    /// reports state `after`; called *before* the record takes the state.
    fn on_applied(
        &mut self,
        record: &Record,
        id: NodeId,
        incarnation: u32,
        last: LogId,
        after: &AppliedState,
    ) -> Findings {
        Vec::new()
    }

    // ----- metrics -----

    /// Node `id` said in its metrics that it leads `term` (`first_time` unless seen before); the
    /// record holds it.
    fn on_leader(&mut self, record: &Record, id: NodeId, term: Term, first_time: bool) -> Findings {
        Vec::new()
    }

    /// Node `id` leads `term` and its durable state agrees (it runs, in that term): a moment to
    /// sample its durable log as a leader's. Follows [`on_leader`](Self::on_leader).
    fn on_leader_sample(&mut self, record: &Record, id: NodeId, term: Term) -> Findings {
        Vec::new()
    }

    // ----- RPC answers, as the sender saw them -----

    /// Node `follower` answered node `leader`'s AppendEntries of `term`, which carried `sent`, with
    /// success up to `match_index`, in the same term.
    fn on_entries_acknowledged(
        &mut self,
        record: &Record,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        sent: &[LogId],
        match_index: LogIndex,
    ) -> Findings {
        Vec::new()
    }

    /// Node `voter` granted its vote in `term` to `candidate`, in an answer of term `answer_term`.
    fn on_vote_granted(
        &mut self,
        record: &Record,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
        answer_term: Term,
    ) -> Findings {
        Vec::new()
    }

    /// Node `follower` answered node `leader`'s InstallSnapshot of `term` that it installed the
    /// snapshot of `installed`, in the same term.
    fn on_snapshot_installed(
        &mut self,
        record: &Record,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        installed: LogId,
    ) -> Findings {
        Vec::new()
    }

    // ----- clients -----

    /// Node `node` acknowledged the client write of `value` at `log_id`, with `response`; the record
    /// holds it in the history.
    fn on_write_acknowledged(
        &mut self,
        record: &Record,
        node: NodeId,
        value: u64,
        log_id: LogId,
        response: LogIndex,
    ) -> Findings {
        Vec::new()
    }

    /// A client read without a log entry was served (`read`, whose outcome is
    /// [`Served`](crate::history::ReadOutcome::Served)); the record holds it in the history.
    fn on_read_served(&mut self, record: &Record, read: &ReadOp) -> Findings {
        Vec::new()
    }

    // ----- on demand -----

    /// What must hold at any moment, over the whole record.
    ///
    /// # Errors
    /// The first violation found.
    fn check(&self, record: &Record) -> Result<(), String> {
        Ok(())
    }

    /// What must hold at the end of a run, once every node runs and the cluster has converged.
    ///
    /// # Errors
    /// The first violation found.
    fn check_final(&self, record: &Record) -> Result<(), String> {
        Ok(())
    }
}
