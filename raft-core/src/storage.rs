//! The storage trait: the durable half of a node (hard state, log, snapshot).

use async_trait::async_trait;

use crate::error::StorageError;
use crate::types::{Entry, HardState, LogId, LogIndex, Snapshot};

/// A piece of a stored snapshot's data, read to be sent to a follower.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The bytes at the requested offset (at most the requested length; empty at the end).
    pub data: Vec<u8>,
    /// Whether `data` reaches the end of the snapshot's data.
    pub done: bool,
}

/// What a storage holds when a node starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The id of the last entry removed by compaction (or covered by the snapshot); the default id when
    /// nothing was ever compacted. The log's first entry is at `last_purged.index + 1`.
    pub last_purged: LogId,
    /// The id of the last entry in the log, or `last_purged` if the log is empty.
    pub last_log_id: LogId,
}

/// Durable storage of one node's hard state, log and latest snapshot.
///
/// # Contract
/// * **Durability:** every mutating method returns `Ok` only once its effect survives a crash of the
///   process and of the machine (for a file system: after `fsync`). The driver relies on this to keep
///   the ordering rules: a vote is durable before the reply leaves, a follower's entries are durable
///   before it acknowledges them.
/// * **Atomicity:** after a crash, each call has taken effect entirely or not at all, except `append`,
///   which may keep a prefix of its entries (never a gap, never a damaged entry).
/// * **Ordering and concurrency:** the driver owns the storage and calls one method at a time (hence
///   `&mut self`), in the order the protocol needs them.
/// * **Errors:** any `Err` stops the node (the driver cannot know what is on disk). Implementations
///   must not return `Ok` for data they could not verify (checksums) or did not write.
///
/// Run the conformance suite (`raft_core::testing`, feature `testing`) against an implementation.
#[async_trait]
pub trait RaftStorage<C>: Send + 'static
where
    C: Send + Sync + 'static,
{
    /// The saved hard state; the default (term 0, no vote) for a fresh storage.
    async fn hard_state(&mut self) -> Result<HardState, StorageError>;

    /// Replaces the hard state, durably and atomically: after a crash either the old or the new value is
    /// read back, never a mix.
    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError>;

    /// Where the log starts and ends.
    async fn log_state(&mut self) -> Result<LogState, StorageError>;

    /// The entries with indexes in `start..end`, in order.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] if `start` is at or below the last purged index;
    /// [`StorageError::InvalidRequest`] if `end` is past the last index plus one.
    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError>;

    /// Appends entries after the last one, durably.
    ///
    /// `entries` are consecutive and the first has index `last_log_id.index + 1`; anything else is
    /// refused with [`StorageError::InvalidRequest`] and nothing is written. An empty slice is a no-op.
    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError>;

    /// Deletes the entries at `from` and after, durably. A no-op if `from` is past the last index.
    ///
    /// The driver calls it only on a real conflict, never for committed entries.
    ///
    /// # Errors
    /// [`StorageError::InvalidRequest`] if `from` is at or below the last purged index.
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError>;

    /// Deletes the entries up to and including `upto` (log compaction), durably. `last_purged` becomes
    /// the id of that entry. A no-op if `upto` is at or below the last purged index.
    ///
    /// # Errors
    /// [`StorageError::InvalidRequest`] if `upto` is past the last index.
    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError>;

    /// Stores a snapshot, durably and atomically, replacing the stored one. Log entries it covers may
    /// then be purged by the caller; entries after it are kept. If the log does not hold the snapshot's
    /// last entry (the snapshot came from a leader and is ahead), the whole log is discarded and
    /// `last_purged` becomes the snapshot's last log id.
    ///
    /// A snapshot whose last log index is at or below the stored snapshot's is ignored (`Ok`, nothing
    /// written): a snapshot never moves backwards. After a crash, either the old snapshot (with the old
    /// log) or the new one (with the log as described above) is read back, never a mix.
    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;

    /// The latest stored snapshot, if any.
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError>;

    /// Whether opening this storage cut entries off its log that it may have acknowledged (a damaged
    /// end of the log it chose to cut rather than refuse). The driver asks once, at start: the node
    /// then neither votes nor campaigns until its log holds the commit index its leader reports, so
    /// its vote cannot help elect a leader that lacks an entry this node had helped commit.
    ///
    /// The default is `false`: a storage that never cuts acknowledged entries (it refuses damage
    /// instead) need not implement it.
    async fn lost_entries_on_open(&mut self) -> Result<bool, StorageError> {
        Ok(false)
    }

    /// Reads up to `max_len` bytes of the stored snapshot's data from byte `offset`, for sending to a
    /// follower in chunks; `Ok(None)` if the stored snapshot is not the one whose last log id is
    /// `snapshot` (it was replaced since, or there is none). An `offset` past the end gives an empty
    /// chunk with `done` set.
    ///
    /// The default reads the whole snapshot with [`snapshot`](Self::snapshot) and slices it: correct,
    /// but it reads everything for every chunk. Storages that keep snapshots out of memory should
    /// read just the requested range.
    async fn snapshot_chunk(
        &mut self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        let Some(stored) = self.snapshot().await? else {
            return Ok(None);
        };
        if stored.meta.last_log_id != snapshot {
            return Ok(None);
        }
        Ok(Some(slice_chunk(&stored.data, offset, max_len)))
    }
}

/// The chunk of `data` at `offset`, at most `max_len` bytes long: the helper behind the default
/// [`RaftStorage::snapshot_chunk`], public for storages that hold their snapshot in memory.
pub fn slice_chunk(data: &[u8], offset: u64, max_len: usize) -> SnapshotChunk {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(max_len).min(data.len());
    SnapshotChunk {
        data: data[start..end].to_vec(),
        done: end == data.len(),
    }
}
