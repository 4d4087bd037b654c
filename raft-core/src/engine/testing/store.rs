//! The executor's durable storage: the hard state, the log after its compaction base, and the latest
//! snapshot, changed only by the operations of [`RaftStorage`](crate::RaftStorage), with the same
//! semantics.

use super::ContractViolation;
use crate::engine::RecoveredState;
use crate::storage::{slice_chunk, SnapshotChunk};
use crate::types::{Entry, HardState, LogId, LogIndex, Snapshot};

/// What survives a crash of a node run by the [`Executor`](super::Executor): a synchronous,
/// in-memory storage. Each operation has the semantics the [`RaftStorage`](crate::RaftStorage)
/// documentation gives its namesake; a request that storage would refuse as invalid is a
/// [`ContractViolation`] and changes nothing.
///
/// Invariant: `entries` are consecutive and start at `log_base().index + 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct DurableStore<C> {
    hard_state: HardState,
    log_base: LogId,
    entries: Vec<Entry<C>>,
    snapshot: Option<Snapshot>,
}

impl<C> Default for DurableStore<C> {
    fn default() -> Self {
        DurableStore {
            hard_state: HardState::default(),
            log_base: LogId::default(),
            entries: Vec::new(),
            snapshot: None,
        }
    }
}

impl<C: Clone> DurableStore<C> {
    /// An empty store: default hard state, no log, no snapshot (a node never started).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `hard_state` and the log `entries` from index 1, no snapshot.
    ///
    /// # Errors
    /// [`ContractViolation::AppendNotContiguous`] if `entries` do not start at 1 or are not
    /// consecutive.
    pub fn from_log(
        hard_state: HardState,
        entries: Vec<Entry<C>>,
    ) -> Result<Self, ContractViolation> {
        let mut store = DurableStore {
            hard_state,
            ..Self::default()
        };
        store.append(&entries)?;
        Ok(store)
    }

    // ----- reading -----

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The id of the last entry compacted away (or covered by a snapshot from the leader); the
    /// default id if none was.
    pub fn log_base(&self) -> LogId {
        self.log_base
    }

    /// The stored entries after [`log_base`](Self::log_base), in order.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// The stored entry at `index`, if the log holds it (not compacted, not past the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        let offset = index.checked_sub(self.log_base.index + 1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The id of the last stored entry, or [`log_base`](Self::log_base) if the log is empty.
    pub fn last_log_id(&self) -> LogId {
        self.entries.last().map_or(self.log_base, |e| e.log_id)
    }

    /// The latest stored snapshot.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// What an engine starting on this store is given (as `Raft::start` reads it from storage), for a
    /// state machine that holds everything up to `applied_index`.
    pub fn recovered_state(&self, applied_index: LogIndex) -> RecoveredState<C> {
        RecoveredState {
            hard_state: self.hard_state,
            log_base: self.log_base,
            snapshot: self.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: self.entries.clone(),
            applied_index,
            lost_entries: false,
        }
    }

    /// Up to `max_len` bytes of the stored snapshot's data from byte `offset`; `None` if the stored
    /// snapshot is not the one whose last log id is `snapshot` (or there is none). As
    /// [`RaftStorage::snapshot_chunk`](crate::RaftStorage::snapshot_chunk).
    pub fn snapshot_chunk(
        &self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Option<SnapshotChunk> {
        self.snapshot
            .as_ref()
            .filter(|stored| stored.meta.last_log_id == snapshot)
            .map(|stored| slice_chunk(&stored.data, offset, max_len))
    }

    // ----- writing -----

    /// Replaces the hard state.
    pub fn save_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Appends `entries` after the last stored entry. An empty slice is a no-op.
    ///
    /// # Errors
    /// [`ContractViolation::AppendNotContiguous`] unless the first entry has the index after the last
    /// stored one and the entries are consecutive; nothing is written then.
    pub fn append(&mut self, entries: &[Entry<C>]) -> Result<(), ContractViolation> {
        let first = self.last_log_id().index + 1;
        for (expected, e) in (first..).zip(entries) {
            if e.log_id.index != expected {
                return Err(ContractViolation::AppendNotContiguous {
                    expected,
                    got: e.log_id.index,
                });
            }
        }
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Deletes the entries at `from` and after (a no-op past the end); returns the ids of those
    /// deleted, in order.
    ///
    /// # Errors
    /// [`ContractViolation::TruncateIntoCompacted`] if `from` is at or below the log base.
    pub fn truncate(&mut self, from: LogIndex) -> Result<Vec<LogId>, ContractViolation> {
        if from <= self.log_base.index {
            return Err(ContractViolation::TruncateIntoCompacted {
                from,
                log_base: self.log_base.index,
            });
        }
        let keep = usize::try_from(from - self.log_base.index - 1)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        Ok(self.entries.drain(keep..).map(|e| e.log_id).collect())
    }

    /// Deletes the entries up to and including `upto` (log compaction); the log base becomes that
    /// entry's id. A no-op at or below the log base.
    ///
    /// # Errors
    /// [`ContractViolation::PurgePastLastEntry`] if `upto` is past the last stored entry.
    pub fn purge(&mut self, upto: LogIndex) -> Result<(), ContractViolation> {
        if upto <= self.log_base.index {
            return Ok(());
        }
        let Some(new_base) = self.entry(upto).map(|e| e.log_id) else {
            return Err(ContractViolation::PurgePastLastEntry {
                upto,
                last: self.last_log_id().index,
            });
        };
        let purged = (upto - self.log_base.index) as usize;
        self.entries.drain(..purged);
        self.log_base = new_base;
        Ok(())
    }

    /// Stores `snapshot`, replacing the stored one, unless it is not newer (its last index at or
    /// below the stored snapshot's): then nothing changes. If the log holds neither the snapshot's
    /// last entry nor has it as its base, the snapshot is ahead of (or conflicts with) the log, and
    /// the whole log is discarded: the base becomes the snapshot's last log id.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let id = snapshot.meta.last_log_id;
        if let Some(stored) = &self.snapshot {
            if id.index <= stored.meta.last_log_id.index {
                return;
            }
        }
        let holds_it = self.entry(id.index).map(|e| e.log_id) == Some(id) || id == self.log_base;
        if !holds_it && id.index >= self.log_base.index {
            self.entries.clear();
            self.log_base = id;
        }
        self.snapshot = Some(snapshot);
    }
}
