//! The snapshot flags `serve` and `cluster` share.

use clap::Args;
use raft_core::{Config, SnapshotPolicy};

/// The snapshot flags of `serve` and `cluster`. Their defaults are raft-core's ([`Config::default`]).
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct SnapshotArgs {
    /// Snapshot the hash table once this many entries were applied since the last snapshot, then
    /// compact the log; 0 = never (the log grows without bound).
    #[arg(long, value_name = "N", default_value_t = default_snapshot_after())]
    pub snapshot_after: u64,
    /// Entries kept in the log before the snapshot point when compacting, so that a follower just
    /// behind catches up from the log instead of receiving the whole snapshot.
    #[arg(long, value_name = "N", default_value_t = Config::default().snapshot_keep_entries)]
    pub snapshot_keep_entries: u64,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        SnapshotArgs {
            snapshot_after: default_snapshot_after(),
            snapshot_keep_entries: Config::default().snapshot_keep_entries,
        }
    }
}

/// raft-core's default snapshot threshold, as `--snapshot-after` spells it (0 = never).
fn default_snapshot_after() -> u64 {
    Config::default().snapshot_policy.threshold()
}

impl SnapshotArgs {
    /// The snapshot policy `--snapshot-after` asks for.
    pub fn policy(&self) -> SnapshotPolicy {
        SnapshotPolicy::from_threshold(self.snapshot_after)
    }

    /// `base` with these snapshot settings.
    pub fn apply_to(&self, base: Config) -> Config {
        Config {
            snapshot_policy: self.policy(),
            snapshot_keep_entries: self.snapshot_keep_entries,
            ..base
        }
    }

    /// The same flags for a child `serve` process.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--snapshot-after".into(),
            self.snapshot_after.to_string(),
            "--snapshot-keep-entries".into(),
            self.snapshot_keep_entries.to_string(),
        ]
    }
}
