//! When the driver builds a snapshot on its own: the [`SnapshotPolicy`] applied to the log
//! written since the last stored snapshot and to that snapshot's size.

use crate::config::SnapshotPolicy;
use crate::types::LogIndex;

/// The driver's account of the log since the latest stored snapshot, for its snapshot policy.
///
/// The log's bytes are counted as entries are applied (each entry once, by the engine's estimate),
/// so a check costs nothing more than the entries newly applied; they are counted only for a policy
/// that reads them.
#[derive(Debug)]
pub(crate) struct SnapshotTrigger {
    policy: SnapshotPolicy,
    /// The last index the latest stored snapshot covers (0: none).
    snapshot_index: LogIndex,
    /// The length of that snapshot's data in bytes (0: none).
    snapshot_bytes: u64,
    /// The last index whose entry `log_bytes` counts (at least `snapshot_index`).
    counted_upto: LogIndex,
    /// Estimated bytes of the entries in `snapshot_index + 1..=counted_upto`.
    log_bytes: u64,
}

impl SnapshotTrigger {
    /// A node whose storage holds a snapshot of `snapshot_bytes` bytes up to `snapshot_index` (0
    /// and 0 for none) when it starts.
    pub(crate) fn new(
        policy: SnapshotPolicy,
        snapshot_index: LogIndex,
        snapshot_bytes: u64,
    ) -> Self {
        SnapshotTrigger {
            policy,
            snapshot_index,
            snapshot_bytes,
            counted_upto: snapshot_index,
            log_bytes: 0,
        }
    }

    /// A snapshot of `bytes` bytes up to `index` was stored, built here or received from the
    /// leader: the log is counted again from the entry after it. `log_bytes(from, to)` estimates
    /// the entries in `from..=to` the log still holds (those already counted past `index`).
    pub(crate) fn snapshot_stored(
        &mut self,
        index: LogIndex,
        bytes: u64,
        log_bytes: impl FnOnce(LogIndex, LogIndex) -> u64,
    ) {
        self.snapshot_index = index;
        self.snapshot_bytes = bytes;
        if self.counted_upto <= index {
            self.counted_upto = index;
            self.log_bytes = 0;
        } else if self.policy.counts_bytes() {
            self.log_bytes = log_bytes(index.saturating_add(1), self.counted_upto);
        }
    }

    /// Every entry up to `applied` is applied: whether the policy wants a snapshot now.
    /// `engine_snapshot` is the last index of the engine's latest snapshot; `log_bytes(from, to)`
    /// estimates the entries in `from..=to`.
    ///
    /// Never due while the engine holds a newer snapshot than the last one stored (taken but not
    /// yet handed to storage): the count against the old one would ask at once for another.
    pub(crate) fn applied(
        &mut self,
        applied: LogIndex,
        engine_snapshot: LogIndex,
        log_bytes: impl FnOnce(LogIndex, LogIndex) -> u64,
    ) -> bool {
        if self.policy.counts_bytes() && applied > self.counted_upto {
            let new = log_bytes(self.counted_upto.saturating_add(1), applied);
            self.log_bytes = self.log_bytes.saturating_add(new);
            self.counted_upto = applied;
        }
        if engine_snapshot != self.snapshot_index {
            return false;
        }
        self.policy.due(
            applied.saturating_sub(self.snapshot_index),
            self.log_bytes,
            self.snapshot_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry estimated at 10 bytes.
    fn tens(from: LogIndex, to: LogIndex) -> u64 {
        (to + 1).saturating_sub(from) * 10
    }

    fn growth(factor: u64, min_entries: u64) -> SnapshotPolicy {
        SnapshotPolicy::LogGrowth {
            factor,
            min_entries,
            max_log_bytes: u64::MAX,
        }
    }

    impl SnapshotTrigger {
        /// `applied` with the engine's snapshot the one stored last.
        fn applied_at(
            &mut self,
            applied: LogIndex,
            log_bytes: impl FnOnce(LogIndex, LogIndex) -> u64,
        ) -> bool {
            self.applied(applied, self.snapshot_index, log_bytes)
        }
    }

    #[test]
    fn not_due_while_a_newer_snapshot_is_on_its_way_to_storage() {
        let mut t = SnapshotTrigger::new(growth(2, 1), 50, 100);
        // The engine took a snapshot at 60 (the count is against the one at 50: due) ...
        assert!(!t.applied(75, 60, tens));
        // ... until it is stored: then 150 bytes after 60 of the 200 due.
        t.snapshot_stored(60, 100, tens);
        assert!(!t.applied(75, 60, tens));
        assert!(t.applied(80, 60, tens));
    }

    #[test]
    fn counts_each_entry_once_across_reports() {
        // Snapshot of 100 bytes at 50, factor 2: due once 200 bytes (20 entries) follow it.
        let mut t = SnapshotTrigger::new(growth(2, 1), 50, 100);
        assert!(!t.applied_at(60, tens));
        assert!(
            !t.applied_at(60, tens),
            "a repeated report counts nothing new"
        );
        assert!(!t.applied_at(69, tens));
        assert!(t.applied_at(70, tens));
    }

    #[test]
    fn a_stored_snapshot_restarts_the_count_after_it() {
        let mut t = SnapshotTrigger::new(growth(2, 1), 0, 0);
        assert!(t.applied_at(5, tens), "no snapshot yet: min_entries alone");
        // Built at 5 while entries up to 8 were applied: those 3 stay counted (30 bytes).
        t.applied_at(8, tens);
        t.snapshot_stored(5, 50, tens);
        assert!(!t.applied_at(14, tens));
        assert!(t.applied_at(15, tens), "100 bytes after index 5");
        // A snapshot from the leader past everything counted: nothing counted after it.
        t.snapshot_stored(100, 10, tens);
        assert!(!t.applied_at(101, tens));
        assert!(t.applied_at(102, tens));
    }

    #[test]
    fn entry_count_policies_count_no_bytes() {
        let mut t = SnapshotTrigger::new(SnapshotPolicy::AfterAppliedEntries(3), 10, 1);
        let no_bytes = |_: LogIndex, _: LogIndex| -> u64 { panic!("bytes read") };
        assert!(!t.applied_at(12, no_bytes));
        assert!(t.applied_at(13, no_bytes));
        t.snapshot_stored(13, 1, no_bytes);
        assert!(!t.applied_at(15, no_bytes));
        let mut never = SnapshotTrigger::new(SnapshotPolicy::Never, 0, 0);
        assert!(!never.applied_at(u64::MAX, no_bytes));
    }
}
