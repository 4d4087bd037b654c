//! Node configuration and its validation.

use std::time::Duration;

use crate::error::ConfigError;

/// Tuning of one Raft node. Build with [`Config::default`] and adjust fields, then call
/// [`Config::validate`] (the node does so on start and refuses an invalid configuration).
///
/// All timing is logical for the [`Engine`](crate::Engine) (milliseconds passed to `tick`), and real
/// time (tokio's clock, so virtual time in tests) for the async driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Lower bound of the randomized election timeout. Default 150 ms.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout. Default 300 ms.
    pub election_timeout_max: Duration,
    /// How often a leader sends heartbeats. Must be below `election_timeout_min`. Default 50 ms.
    pub heartbeat_interval: Duration,
    /// How long the driver waits for the answer to one RPC before it treats the peer as unreachable.
    /// Default 250 ms.
    pub rpc_timeout: Duration,
    /// The most entries one AppendEntries carries. Default 512.
    pub max_entries_per_append: usize,
    /// The most bytes of entries one AppendEntries carries, by the state machine's
    /// [`command_size`](crate::StateMachine::command_size) estimate: a request is filled until the
    /// next entry would pass this budget, and an entry bigger than the budget travels alone. Keeps
    /// every AppendEntries (heartbeat probes included) under the transport's frame limit and within
    /// `rpc_timeout` on the network. Default 4 MiB.
    pub max_append_bytes: usize,
    /// The largest command a client may propose, by the same estimate. A bigger one is refused with
    /// [`ClientWriteError::TooLarge`](crate::ClientWriteError::TooLarge) before it enters the log: a
    /// log entry that could never cross the transport would stop replication to every follower behind
    /// it. Keep it, like `max_append_bytes`, below the transport's frame limit. Default 16 MiB.
    pub max_entry_bytes: usize,
    /// The most AppendEntries with entries in flight to one follower at once (pipelining). Default 16.
    pub max_in_flight: usize,
    /// The most client proposals the driver folds into one batch (one storage append, one
    /// AppendEntries per follower). Default 4096.
    pub max_batch_proposals: usize,
    /// When the node snapshots its state machine on its own (a manual trigger is
    /// [`Raft::trigger_snapshot`](crate::Raft::trigger_snapshot)). Default:
    /// [`SnapshotPolicy::LogGrowth`] with factor 4, at least 100,000 entries and at most 512 MiB
    /// of log: once the log written since the last snapshot is 4 times that snapshot's size, or
    /// 512 MiB, whichever comes first. A snapshot costs time
    /// proportional to the state machine's size, so a threshold that grows with the snapshot keeps
    /// its cost per written byte bounded whatever the state's size (see [`SnapshotPolicy`]).
    pub snapshot_policy: SnapshotPolicy,
    /// How many entries before the snapshot point stay in the log after a snapshot, so that a follower
    /// just behind still catches up by AppendEntries rather than a whole snapshot. Default 10,000,
    /// above what the default pipeline keeps in flight to one follower (`max_in_flight` *
    /// `max_entries_per_append` = 8,192), so a follower whose in-flight requests were lost catches up
    /// from the log.
    pub snapshot_keep_entries: u64,
    /// The most bytes of snapshot data one InstallSnapshot request carries. Keep it well under the
    /// transport's frame limit and small enough to cross the network within `rpc_timeout`.
    /// Default 1 MiB.
    pub snapshot_chunk_size: usize,
    /// Whether a leader checks that a majority still answers it, and steps down when none did during
    /// a whole `election_timeout_max`: a leader cut off from the majority then stops taking writes
    /// (they could never commit) within **2 × `election_timeout_max`** of the last answer it had from a
    /// majority, and clients go to the new leader. Its cost is nothing on the wire (it counts the
    /// answers to heartbeats already sent); turn it off only to study a minority leader's behaviour.
    /// Default on.
    pub check_quorum: bool,
    /// Whether an election timeout starts a pre-vote round (Raft thesis, section 9.6) rather than an
    /// election: the node asks whether the voters would vote for it, without raising its term, and
    /// campaigns only if a majority would. Voters refuse while they hear from a leader, so a node
    /// that was cut off, or restarted, cannot depose a healthy leader when it comes back (without
    /// pre-vote, its higher term makes the leader step down and costs an election). Its cost is one
    /// extra round trip before each real election, i.e. a leader that really died is replaced about
    /// one network round trip later. Turn it off only for peers that do not implement pre-votes.
    /// Default on.
    pub pre_vote: bool,
    /// How far behind the leader (in entries) a learner may be and still be promoted to voter; it
    /// must also have answered within `election_timeout_min`. A voter far behind would hold up
    /// commitment until it caught up (it may be needed for a majority), so a promotion waits until
    /// the learner has the log, less what is in flight. Default 10,000 entries.
    pub max_learner_lag: u64,
    /// How the leader confirms it still leads before it serves a linearizable read (see
    /// [`ReadPolicy`]). Default [`ReadPolicy::ReadIndex`]: one heartbeat round per batch of reads,
    /// no clock assumption.
    pub read_policy: ReadPolicy,
    /// Seed of the engine's random number generator (election timeouts). Mixed with the node id, so the
    /// same seed on every node still gives each its own timeouts. Same seed, same inputs: same outputs.
    pub seed: u64,
}

/// How a leader confirms, before serving a linearizable read, that no other leader can have
/// committed anything it has not (Raft thesis, section 6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadPolicy {
    /// ReadIndex: the leader records its commit index, then confirms it still leads with one round
    /// of heartbeats answered by a majority (reads that arrive together share one round). Safe
    /// whatever the clocks do; costs a round trip, never a disk write.
    #[default]
    ReadIndex,
    /// Leader leases: a read asked for in lease mode is served without a round while the leader
    /// heard from a majority, in a round it started less than `election_timeout_min -
    /// clock_drift_bound` ago; otherwise it falls back to a round.
    ///
    /// **The clock assumption:** followers refuse to vote for anyone else for `election_timeout_min`
    /// after they last heard from their leader (stickiness, which needs `check_quorum`), measured
    /// on their own clocks; the leader counts its lease on its own clock from the moment it sent the
    /// round. Safe only if no clock runs slower than another by more than `clock_drift_bound` over
    /// an `election_timeout_min` (clock *rates*, not offsets: NTP steps do not matter, a paused
    /// VM or a stopped process does not either, since its clock keeps running). A leadership
    /// transfer suspends the lease (the transfer's votes ignore stickiness), and once its
    /// TimeoutNow has left, ends it for the rest of the leader's term (the target's election may
    /// come after the transfer was abandoned); a node that just started refuses votes for
    /// `election_timeout_min` too (it has forgotten whom it heard from).
    /// [`Config::validate`] refuses it without `check_quorum`, or with a drift bound that leaves no
    /// lease.
    Lease {
        /// The largest difference in clock rate over an `election_timeout_min` between any two
        /// nodes, subtracted from the lease.
        clock_drift_bound: Duration,
    },
}

/// When a node builds a snapshot of its state machine on its own.
///
/// A snapshot costs work proportional to the state machine's size (serializing it, storing it, and
/// for a state machine that shares its state with the snapshot, copying on write what the writes
/// meanwhile touch), while the log it lets the node discard grows with the writes. A fixed number
/// of entries between snapshots therefore makes the snapshot's cost per write grow with the state;
/// [`LogGrowth`](Self::LogGrowth) scales the interval with the state instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Only when asked ([`Raft::trigger_snapshot`](crate::Raft::trigger_snapshot)); the log grows
    /// until then.
    Never,
    /// Once this many entries were applied since the last snapshot (or since the start).
    AfterAppliedEntries(u64),
    /// Once the log written since the last snapshot holds at least `factor` times that snapshot's
    /// size in bytes, and at least `min_entries` entries (Raft thesis, section 5.1.1, "When to
    /// snapshot"; LogCabin's `snapshotRatio`), or at least `max_log_bytes` (and `min_entries`)
    /// whatever the snapshot's size.
    ///
    /// * **Snapshot work per written byte is at most `1 / factor`** of the bytes written: a snapshot
    ///   of `S` bytes is built only after `factor * S` bytes of log, so its cost is spread over
    ///   those bytes whatever `S` is. (The thesis's example, factor 4: about a fifth of the disk's
    ///   write bandwidth goes to snapshots.)
    /// * **The log stays bounded** by about `min(factor * S, max_log_bytes)` bytes, or
    ///   `min_entries` entries if that is more, plus [`Config::snapshot_keep_entries`] kept before
    ///   the snapshot point and what is written while a snapshot is built. The engine holds that
    ///   log in memory, which is what `max_log_bytes` bounds: without it, a state of 10 GB would
    ///   let 40 GB of log pile up in memory at factor 4. On disk, a node holds the old snapshot,
    ///   that log and the new snapshot.
    /// * **Past `max_log_bytes / factor` of state**, the cap decides, and snapshot work per
    ///   written byte grows again, as `S / max_log_bytes`: raise the cap for a large state on a
    ///   node with the memory for it.
    /// * **`min_entries`** sets the pace when the snapshot is small or absent: a node with no
    ///   snapshot yet (size 0) snapshots after `min_entries` entries, and a tiny state is not
    ///   snapshotted every few writes.
    ///
    /// The log's size is the entries' estimated encoded size: the state machine's
    /// [`command_size`](crate::StateMachine::command_size) plus a fixed overhead per entry, as for
    /// [`Config::max_append_bytes`]; counted from the entry after the snapshot's last one. The
    /// snapshot's size is the length of its data, as built, received from the leader, or read from
    /// storage at start.
    LogGrowth {
        /// How many times the last snapshot's size the log written since may grow to (1 to
        /// [`SnapshotPolicy::MAX_LOG_GROWTH_FACTOR`]).
        factor: u64,
        /// The fewest entries applied since the last snapshot before the next one (above 0).
        min_entries: u64,
        /// The most bytes of log written since the last snapshot before the next one is due,
        /// whatever the snapshot's size (above 0): the bound on the log held in memory.
        max_log_bytes: u64,
    },
}

impl SnapshotPolicy {
    /// The largest [`LogGrowth`](Self::LogGrowth) factor [`Config::validate`] accepts: beyond it
    /// the log would dwarf the state it stands for.
    pub const MAX_LOG_GROWTH_FACTOR: u64 = 1024;

    /// The [`LogGrowth`](Self::LogGrowth) factor of the default policy: the thesis's example, a
    /// fifth of what is written goes to snapshots.
    pub const DEFAULT_LOG_GROWTH_FACTOR: u64 = 4;

    /// The [`LogGrowth`](Self::LogGrowth) `min_entries` of the default policy: the entry count of
    /// the former default (`AfterAppliedEntries(100_000)`), so a small state snapshots as often as
    /// it did.
    pub const DEFAULT_MIN_ENTRIES: u64 = 100_000;

    /// The [`LogGrowth`](Self::LogGrowth) `max_log_bytes` of the default policy: 512 MiB, so a
    /// node's in-memory log stays well under a gigabyte whatever the state's size (a state under
    /// 128 MiB never reaches it at factor 4).
    pub const DEFAULT_MAX_LOG_BYTES: u64 = 512 * 1024 * 1024;

    /// The policy written as one number of entries, `0` meaning never (as a command-line flag or an
    /// environment variable spells it).
    pub fn from_threshold(entries: u64) -> Self {
        match entries {
            0 => SnapshotPolicy::Never,
            n => SnapshotPolicy::AfterAppliedEntries(n),
        }
    }

    /// The policy as one number of entries, `0` for never: the inverse of
    /// [`from_threshold`](Self::from_threshold); `None` for [`LogGrowth`](Self::LogGrowth), which
    /// one number does not spell.
    pub fn threshold(self) -> Option<u64> {
        match self {
            SnapshotPolicy::Never => Some(0),
            SnapshotPolicy::AfterAppliedEntries(n) => Some(n),
            SnapshotPolicy::LogGrowth { .. } => None,
        }
    }

    /// Whether a node should start building a snapshot, `entries_since` entries and `log_bytes`
    /// estimated bytes after its last snapshot of `snapshot_bytes` bytes (0 if it has none).
    /// Products that overflow a `u64` are never reached.
    pub fn due(self, entries_since: u64, log_bytes: u64, snapshot_bytes: u64) -> bool {
        match self {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::AfterAppliedEntries(n) => entries_since >= n,
            SnapshotPolicy::LogGrowth {
                factor,
                min_entries,
                max_log_bytes,
            } => {
                entries_since >= min_entries
                    && (log_bytes >= max_log_bytes
                        || factor
                            .checked_mul(snapshot_bytes)
                            .is_some_and(|growth| log_bytes >= growth))
            }
        }
    }

    /// Whether [`due`](Self::due) reads the log's size (else the driver does not count it).
    pub(crate) fn counts_bytes(self) -> bool {
        matches!(self, SnapshotPolicy::LogGrowth { .. })
    }
}

impl Default for SnapshotPolicy {
    /// [`LogGrowth`](Self::LogGrowth) with [`DEFAULT_LOG_GROWTH_FACTOR`](Self::DEFAULT_LOG_GROWTH_FACTOR)
    /// (4), [`DEFAULT_MIN_ENTRIES`](Self::DEFAULT_MIN_ENTRIES) (100,000) and
    /// [`DEFAULT_MAX_LOG_BYTES`](Self::DEFAULT_MAX_LOG_BYTES) (512 MiB).
    fn default() -> Self {
        SnapshotPolicy::LogGrowth {
            factor: Self::DEFAULT_LOG_GROWTH_FACTOR,
            min_entries: Self::DEFAULT_MIN_ENTRIES,
            max_log_bytes: Self::DEFAULT_MAX_LOG_BYTES,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_millis(250),
            max_entries_per_append: 512,
            max_append_bytes: 4 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            max_in_flight: 16,
            max_batch_proposals: 4096,
            snapshot_policy: SnapshotPolicy::default(),
            snapshot_keep_entries: 10_000,
            snapshot_chunk_size: 1024 * 1024,
            check_quorum: true,
            pre_vote: true,
            max_learner_lag: 10_000,
            read_policy: ReadPolicy::ReadIndex,
            seed: 0,
        }
    }
}

impl Config {
    /// Checks that the settings make sense together.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = self.election_timeout_min.as_millis();
        let max = self.election_timeout_max.as_millis();
        let heartbeat = self.heartbeat_interval.as_millis();
        if min == 0 {
            return Err(ConfigError::ZeroElectionTimeout);
        }
        if max <= min {
            return Err(ConfigError::ElectionTimeoutRange { min, max });
        }
        if heartbeat == 0 || heartbeat >= min {
            return Err(ConfigError::HeartbeatInterval {
                heartbeat,
                election_timeout_min: min,
            });
        }
        if self.rpc_timeout.as_millis() == 0 {
            return Err(ConfigError::ZeroSetting("rpc_timeout"));
        }
        if self.max_entries_per_append == 0 {
            return Err(ConfigError::ZeroSetting("max_entries_per_append"));
        }
        if self.max_append_bytes == 0 {
            return Err(ConfigError::ZeroSetting("max_append_bytes"));
        }
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::ZeroSetting("max_entry_bytes"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::ZeroSetting("max_in_flight"));
        }
        if self.max_batch_proposals == 0 {
            return Err(ConfigError::ZeroSetting("max_batch_proposals"));
        }
        if self.snapshot_chunk_size == 0 {
            return Err(ConfigError::ZeroSetting("snapshot_chunk_size"));
        }
        match self.snapshot_policy {
            SnapshotPolicy::Never => {}
            SnapshotPolicy::AfterAppliedEntries(n) => {
                if n == 0 {
                    return Err(ConfigError::ZeroSetting("snapshot_policy"));
                }
            }
            SnapshotPolicy::LogGrowth {
                factor,
                min_entries,
                max_log_bytes,
            } => {
                if min_entries == 0 {
                    return Err(ConfigError::ZeroSetting("snapshot_policy min_entries"));
                }
                if max_log_bytes == 0 {
                    return Err(ConfigError::ZeroSetting("snapshot_policy max_log_bytes"));
                }
                if factor == 0 || factor > SnapshotPolicy::MAX_LOG_GROWTH_FACTOR {
                    return Err(ConfigError::LogGrowthFactor {
                        factor,
                        max: SnapshotPolicy::MAX_LOG_GROWTH_FACTOR,
                    });
                }
            }
        }
        if let ReadPolicy::Lease { clock_drift_bound } = self.read_policy {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if clock_drift_bound >= self.election_timeout_min {
                return Err(ConfigError::LeaseDriftBound {
                    drift: clock_drift_bound.as_millis(),
                    election_timeout_min: min,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn election_timeout_range_ms(&self) -> (u64, u64) {
        (
            millis(self.election_timeout_min),
            millis(self.election_timeout_max),
        )
    }

    /// How long after a confirmed round's start a lease read may be served (0: no leases).
    pub(crate) fn lease_ms(&self) -> u64 {
        match self.read_policy {
            ReadPolicy::ReadIndex => 0,
            ReadPolicy::Lease { clock_drift_bound } => {
                millis(self.election_timeout_min).saturating_sub(millis(clock_drift_bound))
            }
        }
    }

    pub(crate) fn heartbeat_ms(&self) -> u64 {
        millis(self.heartbeat_interval)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn snapshot_policy_as_one_number() {
        assert_eq!(SnapshotPolicy::from_threshold(0), SnapshotPolicy::Never);
        assert_eq!(
            SnapshotPolicy::from_threshold(7),
            SnapshotPolicy::AfterAppliedEntries(7)
        );
        for p in [
            SnapshotPolicy::Never,
            SnapshotPolicy::AfterAppliedEntries(9),
        ] {
            assert_eq!(p.threshold().map(SnapshotPolicy::from_threshold), Some(p));
        }
        assert_eq!(SnapshotPolicy::default().threshold(), None);
    }

    #[test]
    fn entry_count_policies_are_due_by_entries_alone() {
        let after = SnapshotPolicy::AfterAppliedEntries(10);
        assert!(!after.due(9, u64::MAX, 0));
        assert!(after.due(10, 0, u64::MAX));
        assert!(!SnapshotPolicy::Never.due(u64::MAX, u64::MAX, 0));
    }

    #[test]
    fn log_growth_is_due_at_factor_times_the_snapshot_and_min_entries() {
        let p = SnapshotPolicy::LogGrowth {
            factor: 4,
            min_entries: 100,
            max_log_bytes: u64::MAX,
        };
        // Both conditions, each at its boundary.
        assert!(p.due(100, 4_000, 1_000));
        assert!(!p.due(100, 3_999, 1_000));
        assert!(!p.due(99, 4_000, 1_000));
        assert!(!p.due(99, u64::MAX, 1_000));
        // No snapshot yet: min_entries alone.
        assert!(!p.due(99, 0, 0));
        assert!(p.due(100, 0, 0));
        // A product past u64::MAX is never reached, rather than wrapping to a small threshold.
        assert!(!p.due(u64::MAX, u64::MAX - 1, u64::MAX / 2));
        assert!(p.due(u64::MAX, u64::MAX - 1, u64::MAX / 4));
    }

    #[test]
    fn log_growth_is_due_at_max_log_bytes_whatever_the_snapshot() {
        let p = SnapshotPolicy::LogGrowth {
            factor: 4,
            min_entries: 100,
            max_log_bytes: 10_000,
        };
        // A snapshot of 1 MB would allow 4 MB of log: the cap comes first.
        assert!(p.due(100, 10_000, 1_000_000));
        assert!(!p.due(100, 9_999, 1_000_000));
        assert!(!p.due(99, 10_000, 1_000_000), "min_entries still holds");
        // A small snapshot: the factor comes first.
        assert!(p.due(100, 4_000, 1_000));
        // A snapshot so large its product overflows: the cap still applies.
        assert!(p.due(100, 10_000, u64::MAX));
        // The default bounds the log at 512 MiB.
        assert!(SnapshotPolicy::default().due(100_000, 512 << 20, 1 << 30));
        assert!(!SnapshotPolicy::default().due(100_000, (512 << 20) - 1, 1 << 30));
    }

    #[test]
    fn rejects_absurd_log_growth() {
        let with = |factor, min_entries| Config {
            snapshot_policy: SnapshotPolicy::LogGrowth {
                factor,
                min_entries,
                max_log_bytes: SnapshotPolicy::DEFAULT_MAX_LOG_BYTES,
            },
            ..Config::default()
        };
        assert!(matches!(
            with(0, 10).validate(),
            Err(ConfigError::LogGrowthFactor { factor: 0, .. })
        ));
        let too_big = SnapshotPolicy::MAX_LOG_GROWTH_FACTOR + 1;
        assert!(matches!(
            with(too_big, 10).validate(),
            Err(ConfigError::LogGrowthFactor { .. })
        ));
        assert_eq!(
            with(4, 0).validate(),
            Err(ConfigError::ZeroSetting("snapshot_policy min_entries"))
        );
        assert_eq!(
            with(SnapshotPolicy::MAX_LOG_GROWTH_FACTOR, 1).validate(),
            Ok(())
        );
        assert_eq!(with(1, 1).validate(), Ok(()));
        let no_cap = Config {
            snapshot_policy: SnapshotPolicy::LogGrowth {
                factor: 4,
                min_entries: 1,
                max_log_bytes: 0,
            },
            ..Config::default()
        };
        assert_eq!(
            no_cap.validate(),
            Err(ConfigError::ZeroSetting("snapshot_policy max_log_bytes"))
        );
    }

    #[test]
    fn rejects_inverted_election_range() {
        let c = Config {
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(300),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTimeoutRange { .. })
        ));
    }

    #[test]
    fn rejects_heartbeat_not_below_election_timeout() {
        let c = Config {
            heartbeat_interval: Duration::from_millis(150),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::HeartbeatInterval { .. })
        ));
    }

    #[test]
    fn rejects_zero_limits() {
        for c in [
            Config {
                max_in_flight: 0,
                ..Config::default()
            },
            Config {
                max_entries_per_append: 0,
                ..Config::default()
            },
            Config {
                election_timeout_min: Duration::ZERO,
                ..Config::default()
            },
            Config {
                snapshot_chunk_size: 0,
                ..Config::default()
            },
            Config {
                snapshot_policy: SnapshotPolicy::AfterAppliedEntries(0),
                ..Config::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
