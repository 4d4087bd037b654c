//! The no-op state machine of an openraft node: it remembers only what openraft needs back (the
//! last applied log id, the membership, the latest snapshot's metadata); a snapshot has no data.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::RaftStateMachine;
use openraft::{
    EmptyNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership,
};

use super::NoopConfig;

#[derive(Debug, Default)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, EmptyNode>,
    snapshot: Option<SnapshotMeta<u64, EmptyNode>>,
    /// Snapshots built so far, to give each one a distinct id.
    snapshots_built: u64,
}

/// openraft's state machine for the bench: applies `()` commands by answering `()`. Clones share
/// the state (the snapshot builder is a clone).
#[derive(Clone, Debug, Default)]
pub struct NoopStateMachine {
    applied: Arc<Mutex<Applied>>,
}

impl NoopStateMachine {
    /// The state; no method panics while holding it, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A snapshot of no data: the metadata is the whole state.
fn empty_snapshot(meta: SnapshotMeta<u64, EmptyNode>) -> Snapshot<NoopConfig> {
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(Vec::new())),
    }
}

impl RaftSnapshotBuilder<NoopConfig> for NoopStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<NoopConfig>, StorageError<u64>> {
        let mut applied = self.lock();
        applied.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                applied.last_applied.map_or(0, |l| l.index),
                applied.snapshots_built
            ),
        };
        applied.snapshot = Some(meta.clone());
        Ok(empty_snapshot(meta))
    }
}

impl RaftStateMachine<NoopConfig> for NoopStateMachine {
    type SnapshotBuilder = NoopStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, EmptyNode>), StorageError<u64>> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<NoopConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            if let EntryPayload::Membership(membership) = entry.payload {
                applied.membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, EmptyNode>,
        _data: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let mut applied = self.lock();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<NoopConfig>>, StorageError<u64>> {
        Ok(self.lock().snapshot.clone().map(empty_snapshot))
    }
}
