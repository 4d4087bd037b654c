#![doc = include_str!("../README.md")]
//!
//! ## Snapshots
//! [`install_snapshot`](RaftStorage::install_snapshot) keeps the newest snapshot only: one whose last
//! log index is at or below the stored one's is ignored (a snapshot never moves backwards), as the
//! trait's contract says. [`snapshot_chunk`](RaftStorage::snapshot_chunk) copies just the requested
//! range out of the stored snapshot (not the whole snapshot per chunk), under the same lock as every
//! other call, so a snapshot replaced between two chunk reads gives `Ok(None)`, never bytes of the
//! newer one.
//!
//! ## Durability, and crashing on purpose
//! Every method takes effect atomically before it returns, so everything a call has returned for is
//! "durable" for as long as the [`MemStorageHandle`] lives. A test crashes a node by dropping (or
//! aborting) it and reopens its storage with [`MemStorageHandle::open`]: the new storage sees exactly
//! what had been made durable, nothing more, as in the example above.
#![warn(missing_docs)]

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use raft_core::{slice_chunk, SnapshotChunk};
use raft_core::{Entry, HardState, LogId, LogIndex, LogState, RaftStorage, Snapshot, StorageError};

/// Everything a [`MemStorage`] holds.
#[derive(Debug, Clone)]
pub struct MemState<C> {
    /// The saved hard state.
    pub hard_state: HardState,
    /// The id of the last purged entry.
    pub last_purged: LogId,
    /// The entries after `last_purged`, in order.
    pub log: Vec<Entry<C>>,
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
}

impl<C> Default for MemState<C> {
    fn default() -> Self {
        MemState {
            hard_state: HardState::default(),
            last_purged: LogId::default(),
            log: Vec::new(),
            snapshot: None,
        }
    }
}

impl<C> MemState<C> {
    fn last_log_id(&self) -> LogId {
        self.log.last().map_or(self.last_purged, |e| e.log_id)
    }

    fn offset(&self, index: LogIndex) -> usize {
        (index - self.last_purged.index - 1) as usize
    }
}

/// A shared reference to a [`MemStorage`]'s durable state: outlives the storage, so a test can
/// reopen it after a simulated crash, or inspect it.
#[derive(Debug)]
pub struct MemStorageHandle<C> {
    state: Arc<Mutex<MemState<C>>>,
}

impl<C> Clone for MemStorageHandle<C> {
    fn clone(&self) -> Self {
        MemStorageHandle {
            state: Arc::clone(&self.state),
        }
    }
}

impl<C: Clone> MemStorageHandle<C> {
    /// A storage over this durable state, as a restarted node would open it.
    pub fn open(&self) -> MemStorage<C> {
        MemStorage {
            state: Arc::clone(&self.state),
        }
    }

    /// A copy of the durable state, for inspection.
    pub fn state(&self) -> MemState<C> {
        lock(&self.state).clone()
    }

    /// The log entries held (after the last purge).
    pub fn log(&self) -> Vec<Entry<C>> {
        lock(&self.state).log.clone()
    }
}

/// An in-memory [`RaftStorage`]. See the [crate docs](crate).
#[derive(Debug)]
pub struct MemStorage<C> {
    state: Arc<Mutex<MemState<C>>>,
}

impl<C> Default for MemStorage<C> {
    fn default() -> Self {
        MemStorage {
            state: Arc::new(Mutex::new(MemState::default())),
        }
    }
}

impl<C: Clone> MemStorage<C> {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to this storage's durable state (see [`MemStorageHandle::open`]).
    pub fn handle(&self) -> MemStorageHandle<C> {
        MemStorageHandle {
            state: Arc::clone(&self.state),
        }
    }

    fn state(&self) -> MutexGuard<'_, MemState<C>> {
        lock(&self.state)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-changed: every method validates
    // before it mutates. So a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl<C> RaftStorage<C> for MemStorage<C>
where
    C: Clone + Send + Sync + 'static,
{
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        Ok(self.state().hard_state)
    }

    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        self.state().hard_state = *state;
        Ok(())
    }

    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        let s = self.state();
        Ok(LogState {
            last_purged: s.last_purged,
            last_log_id: s.last_log_id(),
        })
    }

    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let s = self.state();
        if start <= s.last_purged.index {
            return Err(StorageError::Compacted {
                compacted_upto: s.last_purged.index,
                requested: start,
            });
        }
        let last = s.last_log_id().index;
        if end > last + 1 {
            return Err(StorageError::InvalidRequest(format!(
                "entries {start}..{end} requested but the log ends at {last}"
            )));
        }
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(s.log[s.offset(start)..s.offset(end)].to_vec())
    }

    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError> {
        let mut s = self.state();
        let first = s.last_log_id().index + 1;
        for (expected, e) in (first..).zip(entries) {
            if e.log_id.index != expected {
                return Err(StorageError::InvalidRequest(format!(
                    "append expected index {expected}, got {}",
                    e.log_id.index
                )));
            }
        }
        s.log.extend_from_slice(entries);
        Ok(())
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let mut s = self.state();
        if from <= s.last_purged.index {
            return Err(StorageError::InvalidRequest(format!(
                "truncate from {from} reaches into the purged prefix (up to {})",
                s.last_purged.index
            )));
        }
        if from <= s.last_log_id().index {
            let keep = s.offset(from);
            s.log.truncate(keep);
        }
        Ok(())
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        let mut s = self.state();
        if upto <= s.last_purged.index {
            return Ok(());
        }
        let last = s.last_log_id().index;
        if upto > last {
            return Err(StorageError::InvalidRequest(format!(
                "purge up to {upto} is past the last index {last}"
            )));
        }
        let n = s.offset(upto) + 1;
        let new_base = s.log[n - 1].log_id;
        s.log.drain(..n);
        s.last_purged = new_base;
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut s = self.state();
        let snap_id = snapshot.meta.last_log_id;
        if let Some(stored) = &s.snapshot {
            if snap_id.index <= stored.meta.last_log_id.index {
                // Not newer than the stored snapshot: a snapshot never moves backwards.
                return Ok(());
            }
        }
        let holds_it = snap_id.index > s.last_purged.index
            && snap_id.index <= s.last_log_id().index
            && s.log[s.offset(snap_id.index)].log_id == snap_id;
        let at_base = snap_id == s.last_purged;
        if !holds_it && !at_base && snap_id.index >= s.last_purged.index {
            // The snapshot is ahead of (or conflicts with) our log: it replaces the whole log.
            s.log.clear();
            s.last_purged = snap_id;
        }
        s.snapshot = Some(snapshot);
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.state().snapshot.clone())
    }

    async fn snapshot_chunk(
        &mut self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        let s = self.state();
        Ok(s.snapshot
            .as_ref()
            .filter(|stored| stored.meta.last_log_id == snapshot)
            .map(|stored| slice_chunk(&stored.data, offset, max_len)))
    }
}
