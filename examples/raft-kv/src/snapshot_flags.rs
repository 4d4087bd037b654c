//! The snapshot flags `serve` and `cluster` share.

use clap::Args;
use raft_core::{Config, SnapshotPolicy};

/// The snapshot flags of `serve` and `cluster`. Their defaults are raft-core's ([`Config::default`]):
/// a snapshot once the log written since the last one is `--snapshot-log-factor` times its size
/// (and at least `--snapshot-min-entries` entries); `--snapshot-after` replaces that with a fixed
/// entry count.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct SnapshotArgs {
    /// Snapshot the hash table once this many entries were applied since the last snapshot, then
    /// compact the log, whatever the table's size; 0 = never (the log grows without bound).
    /// Replaces the log-growth policy of `--snapshot-log-factor`.
    #[arg(long, value_name = "N", conflicts_with_all = ["snapshot_log_factor", "snapshot_min_entries", "snapshot_max_log_bytes"])]
    pub snapshot_after: Option<u64>,
    /// Snapshot once the log written since the last snapshot is this many times that snapshot's
    /// size in bytes (1 to 1024): snapshots then cost at most 1/F of what is written, and the log
    /// stays within about F times the table.
    #[arg(long, value_name = "F", default_value_t = SnapshotPolicy::DEFAULT_LOG_GROWTH_FACTOR)]
    pub snapshot_log_factor: u64,
    /// The fewest entries between two snapshots under `--snapshot-log-factor` (the pace of a node
    /// without a snapshot yet, or with a tiny table).
    #[arg(long, value_name = "N", default_value_t = SnapshotPolicy::DEFAULT_MIN_ENTRIES)]
    pub snapshot_min_entries: u64,
    /// The most bytes of log (estimated) between two snapshots under `--snapshot-log-factor`,
    /// whatever the table's size: the bound on the log every node holds in memory. Raise it for a
    /// table over a quarter of it on nodes with the memory, or snapshots come more often than the
    /// factor asks.
    #[arg(long, value_name = "BYTES", default_value_t = SnapshotPolicy::DEFAULT_MAX_LOG_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_max_log_bytes: u64,
    /// Entries kept in the log before the snapshot point when compacting, so that a follower just
    /// behind catches up from the log instead of receiving the whole snapshot.
    #[arg(long, value_name = "N", default_value_t = Config::default().snapshot_keep_entries)]
    pub snapshot_keep_entries: u64,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        SnapshotArgs {
            snapshot_after: None,
            snapshot_log_factor: SnapshotPolicy::DEFAULT_LOG_GROWTH_FACTOR,
            snapshot_min_entries: SnapshotPolicy::DEFAULT_MIN_ENTRIES,
            snapshot_max_log_bytes: SnapshotPolicy::DEFAULT_MAX_LOG_BYTES,
            snapshot_keep_entries: Config::default().snapshot_keep_entries,
        }
    }
}

impl SnapshotArgs {
    /// The snapshot policy the flags ask for.
    pub fn policy(&self) -> SnapshotPolicy {
        match self.snapshot_after {
            Some(n) => SnapshotPolicy::from_threshold(n),
            None => SnapshotPolicy::LogGrowth {
                factor: self.snapshot_log_factor,
                min_entries: self.snapshot_min_entries,
                max_log_bytes: self.snapshot_max_log_bytes,
            },
        }
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
        let mut args = match self.snapshot_after {
            Some(n) => vec!["--snapshot-after".into(), n.to_string()],
            None => vec![
                "--snapshot-log-factor".into(),
                self.snapshot_log_factor.to_string(),
                "--snapshot-min-entries".into(),
                self.snapshot_min_entries.to_string(),
                "--snapshot-max-log-bytes".into(),
                self.snapshot_max_log_bytes.to_string(),
            ],
        };
        args.extend([
            "--snapshot-keep-entries".into(),
            self.snapshot_keep_entries.to_string(),
        ]);
        args
    }
}
