//! The executor's state machine: a record of the snapshot it was restored from and of every entry
//! applied after it, checked to arrive in order and exactly once.

use super::ContractViolation;
use crate::types::{Entry, LogId, LogIndex, SnapshotMeta};

/// What the [`Executor`](super::Executor)'s state machine holds: the snapshot it was last restored
/// from, if any, and the entries applied after it, consecutive from the snapshot's next index (or
/// from index 1).
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedLog<C> {
    restored: Option<SnapshotMeta>,
    entries: Vec<Entry<C>>,
}

impl<C> Default for AppliedLog<C> {
    fn default() -> Self {
        AppliedLog {
            restored: None,
            entries: Vec::new(),
        }
    }
}

impl<C: Clone> AppliedLog<C> {
    /// The snapshot the state was last restored from (`None`: it started empty).
    pub fn restored(&self) -> Option<&SnapshotMeta> {
        self.restored.as_ref()
    }

    /// The entries applied since the last restore (or since the start), in order.
    pub fn entries(&self) -> &[Entry<C>] {
        &self.entries
    }

    /// The applied entry at `index`, if it was applied after the last restore.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        let first = self.entries.first()?.log_id.index;
        let offset = index.checked_sub(first)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The id of the last entry the state holds: the last applied one, else the restored snapshot's
    /// last entry, else the default id.
    pub fn last_applied(&self) -> LogId {
        match (self.entries.last(), &self.restored) {
            (Some(e), _) => e.log_id,
            (None, Some(meta)) => meta.last_log_id,
            (None, None) => LogId::default(),
        }
    }

    /// Replaces the state with `meta`'s snapshot (step 7, a snapshot received from the leader).
    ///
    /// # Errors
    /// [`ContractViolation::RestoreNotAhead`] if the snapshot is not after the last applied entry:
    /// the engine never moves a state machine backwards.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) -> Result<(), ContractViolation> {
        let applied = self.last_applied().index;
        if meta.last_log_id.index <= applied {
            return Err(ContractViolation::RestoreNotAhead {
                snapshot: meta.last_log_id,
                applied,
            });
        }
        self.restore_on_start(meta);
        Ok(())
    }

    /// Replaces the state with `meta`'s snapshot, unconditionally (a node starting from its stored
    /// snapshot).
    pub(crate) fn restore_on_start(&mut self, meta: SnapshotMeta) {
        self.restored = Some(meta);
        self.entries.clear();
    }

    /// Applies `entries` (step 7).
    ///
    /// # Errors
    /// [`ContractViolation::AppliedOutOfOrder`] unless each entry's index follows the last applied
    /// one; the entries before the offending one stay applied.
    pub(crate) fn apply(&mut self, entries: &[Entry<C>]) -> Result<(), ContractViolation> {
        for e in entries {
            let expected = self.last_applied().index + 1;
            if e.log_id.index != expected {
                return Err(ContractViolation::AppliedOutOfOrder {
                    expected,
                    got: e.log_id,
                });
            }
            self.entries.push(e.clone());
        }
        Ok(())
    }
}
