//! The in-memory log of an openraft node: the entries after the last purged one in a `Vec`, the
//! vote, behind one mutex shared with the log readers openraft asks for (as `MemStorage` keeps ours).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};

use super::NoopConfig;

/// What a [`NoopLogStore`] holds.
#[derive(Debug, Default)]
struct Log {
    vote: Option<Vote<u64>>,
    last_purged: Option<LogId<u64>>,
    /// The entries after `last_purged`, in index order, without gaps.
    entries: Vec<Entry<NoopConfig>>,
}

impl Log {
    /// The index of `entries[0]` (openraft's first entry has index 0).
    fn first_index(&self) -> u64 {
        self.last_purged.map_or(0, |l| l.index + 1)
    }

    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.entries.last().map(|e| e.log_id).or(self.last_purged)
    }

    /// The position in `entries` of the entry at `index`, clamped to `0..=entries.len()`.
    fn position(&self, index: u64) -> usize {
        let offset = index.saturating_sub(self.first_index());
        usize::try_from(offset).map_or(self.entries.len(), |o| o.min(self.entries.len()))
    }
}

/// openraft's log storage (and log reader) for the bench: memory only, every call takes effect
/// before it returns, so an append is "flushed" at once. Clones share the log.
#[derive(Clone, Debug, Default)]
pub struct NoopLogStore {
    log: Arc<Mutex<Log>>,
}

impl NoopLogStore {
    /// The log; a panic while it was held (none of the methods panics with it) cannot leave it
    /// half-updated, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<NoopConfig> for NoopLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<NoopConfig>>, StorageError<u64>> {
        let log = self.lock();
        let start = match range.start_bound() {
            Bound::Included(&i) => log.position(i),
            Bound::Excluded(&i) => log.position(i.saturating_add(1)),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => log.position(i.saturating_add(1)),
            Bound::Excluded(&i) => log.position(i),
            Bound::Unbounded => log.entries.len(),
        };
        Ok(log.entries[start..end.max(start)].to_vec())
    }
}

impl RaftLogStorage<NoopConfig> for NoopLogStore {
    type LogReader = NoopLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<NoopConfig>, StorageError<u64>> {
        let log = self.lock();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.lock().vote)
    }

    /// Appends `entries`, which must follow the last entry without a gap (openraft truncates
    /// before it overwrites); an entry out of place is refused and nothing is appended.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<NoopConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<NoopConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut log = self.lock();
            let before = log.entries.len();
            let first_new = log.last_log_id().map_or(0, |l| l.index + 1);
            for (expected, entry) in (first_new..).zip(entries) {
                let index = entry.get_log_id().index;
                if index != expected {
                    log.entries.truncate(before);
                    return Err(StorageIOError::write_logs(&std::io::Error::other(format!(
                        "entry {index} appended where entry {expected} belongs"
                    )))
                    .into());
                }
                log.entries.push(entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// Deletes the entries from `log_id` on (a conflicting suffix).
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut log = self.lock();
        let keep = log.position(log_id.index);
        log.entries.truncate(keep);
        Ok(())
    }

    /// Deletes the entries up to and including `log_id` (covered by a snapshot).
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut log = self.lock();
        if log.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        let purged = log.position(log_id.index.saturating_add(1));
        log.entries.drain(..purged);
        log.last_purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// A store holding entries 0..10.
    fn store_of_ten() -> NoopLogStore {
        let store = NoopLogStore::default();
        store.lock().entries = (0..10)
            .map(|i| Entry {
                log_id: log_id(i),
                payload: EntryPayload::Normal(()),
            })
            .collect();
        store
    }

    async fn indexes(
        store: &mut NoopLogStore,
        range: impl RangeBounds<u64> + Clone + Debug + Send,
    ) -> Vec<u64> {
        let entries = store.try_get_log_entries(range).await.expect("read");
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn reads_purge_and_truncate_keep_indexes_in_place() {
        let mut store = store_of_ten();
        assert_eq!(indexes(&mut store, 3..6).await, [3, 4, 5]);
        assert_eq!(indexes(&mut store, 8..=20).await, [8, 9]);

        store.purge(log_id(4)).await.expect("purge");
        assert_eq!(indexes(&mut store, ..).await, [5, 6, 7, 8, 9]);
        assert_eq!(indexes(&mut store, 0..7).await, [5, 6]);
        assert_eq!(indexes(&mut store, 6..=6).await, [6]);
        store
            .purge(log_id(2))
            .await
            .expect("an older purge is a no-op");
        assert_eq!(indexes(&mut store, ..).await, [5, 6, 7, 8, 9]);

        store.truncate(log_id(8)).await.expect("truncate");
        assert_eq!(indexes(&mut store, ..).await, [5, 6, 7]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(4)));
        assert_eq!(state.last_log_id, Some(log_id(7)));

        store.purge(log_id(7)).await.expect("purge all");
        assert!(indexes(&mut store, ..).await.is_empty());
        let state = store.get_log_state().await.expect("state");
        assert_eq!(
            state.last_log_id,
            Some(log_id(7)),
            "the last purged id stands in"
        );
    }
}
