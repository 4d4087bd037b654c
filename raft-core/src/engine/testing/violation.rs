//! What the executor reports when an output, or the engine's state after executing it, breaks the
//! executor contract or the storage contract.

use crate::types::{HardState, LogId, LogIndex};

/// A broken contract, found while executing the engine's output. Each names what was expected and
/// what happened; none of them can occur while the engine keeps its side of the contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractViolation {
    /// An append did not start right after the stored log's last entry, or its entries were not
    /// consecutive.
    #[error("append expected index {expected}, got {got}")]
    AppendNotContiguous {
        /// The index the next entry must have.
        expected: LogIndex,
        /// The index it had.
        got: LogIndex,
    },
    /// A truncation reached into the compacted prefix of the log.
    #[error("truncate from {from} reaches into the compacted prefix (up to {log_base})")]
    TruncateIntoCompacted {
        /// Where the truncation was to start.
        from: LogIndex,
        /// The last compacted index.
        log_base: LogIndex,
    },
    /// A purge went past the stored log's last entry.
    #[error("purge up to {upto} is past the last stored index {last}")]
    PurgePastLastEntry {
        /// Where the purge was to end.
        upto: LogIndex,
        /// The stored log's last index.
        last: LogIndex,
    },
    /// An entry was handed out for applying out of order, twice, or after a gap.
    #[error("applied {got} where the state machine expected index {expected}")]
    AppliedOutOfOrder {
        /// The index the next applied entry must have.
        expected: LogIndex,
        /// The entry handed out.
        got: LogId,
    },
    /// The state machine was to be restored from a snapshot that is not ahead of what it applied.
    #[error(
        "restore from snapshot {snapshot}, but the state machine already applied up to {applied}"
    )]
    RestoreNotAhead {
        /// The snapshot's last log id.
        snapshot: LogId,
        /// The last index the state machine applied.
        applied: LogIndex,
    },
    /// After everything was executed, the engine's log and the stored log differ.
    #[error(
        "the engine's log ({engine_len} entries up to {engine_last}) differs from the stored log \
         ({stored_len} entries up to {stored_last})"
    )]
    LogDiverged {
        /// The engine's last log id.
        engine_last: LogId,
        /// How many entries the engine holds in memory.
        engine_len: usize,
        /// The stored log's last id.
        stored_last: LogId,
        /// How many entries the store holds.
        stored_len: usize,
    },
    /// After everything was executed, the engine's hard state differs from the stored one.
    #[error("the engine's hard state {engine:?} differs from the stored {stored:?}")]
    HardStateDiverged {
        /// The engine's hard state.
        engine: HardState,
        /// The stored hard state.
        stored: HardState,
    },
    /// After everything was executed, the engine's latest snapshot is not the stored one.
    #[error("the engine's latest snapshot is {engine} but the store holds {stored}")]
    SnapshotDiverged {
        /// The engine's latest snapshot (the default id for none).
        engine: LogId,
        /// The stored snapshot (the default id for none).
        stored: LogId,
    },
}
