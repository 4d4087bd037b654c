//! The driver's snapshot policy, node by node in virtual time: a log-growth policy snapshots once
//! the log written since the last snapshot reaches `factor` times that snapshot's size, and not one
//! entry before, whether the last snapshot was built here, read back from storage at a restart, or
//! received from the leader; `max_log_bytes` caps the log whatever the snapshot's size; an entry
//! count still counts entries.
//!
//! Every command is estimated at [`COMMAND_BYTES`] (plus the engine's 32 bytes per entry:
//! [`ENTRY_BYTES`]), and every snapshot is [`SNAPSHOT_BYTES`] long, so each test names the exact
//! index at which a snapshot is due.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::{lone_leader, NoPeers, VecStore};
use raft_core::*;

/// What the test state machine estimates every command at.
const COMMAND_BYTES: usize = 100;
/// An entry's estimated size: its command and the engine's overhead per entry.
const ENTRY_BYTES: u64 = COMMAND_BYTES as u64 + 32;
/// The size of every snapshot: 10 entries' worth.
const SNAPSHOT_BYTES: u64 = 10 * ENTRY_BYTES;
/// The policy under test: a snapshot once the log is twice the last one (20 entries here), and
/// never fewer than 5 entries apart.
const POLICY: SnapshotPolicy = SnapshotPolicy::LogGrowth {
    factor: 2,
    min_entries: 5,
    max_log_bytes: u64::MAX,
};

/// A state machine of [`COMMAND_BYTES`] per command and snapshots of [`SNAPSHOT_BYTES`].
struct Sized;

#[async_trait]
impl StateMachine for Sized {
    type Command = u64;
    type Response = ();

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<()>, StateMachineError> {
        Ok(vec![(); entries.len()])
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(vec![0; SNAPSHOT_BYTES as usize])
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
    fn command_size(_: &u64) -> usize {
        COMMAND_BYTES
    }
}

fn config(policy: SnapshotPolicy) -> Config {
    Config {
        snapshot_policy: policy,
        snapshot_keep_entries: 2,
        ..Config::default()
    }
}

fn command(term: Term, index: LogIndex) -> Entry<u64> {
    Entry::new(LogId::new(term, index), EntryPayload::Command(index))
}

/// Lets the node finish what it started (a snapshot build included): virtual time, so this only
/// runs every task until all wait.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn snapshot_index(raft: &Raft<Sized>) -> LogIndex {
    raft.metrics().borrow().snapshot.index
}

/// Writes on a single-node leader until its last applied index is `upto`, and returns, for each
/// index applied by a write, the snapshot index the node has once it settled.
async fn write_until(raft: &Raft<Sized>, upto: LogIndex) -> Vec<(LogIndex, LogIndex)> {
    let mut seen = Vec::new();
    loop {
        let written = raft.client_write(0).await.expect("write").log_id.index;
        settle().await;
        seen.push((written, snapshot_index(raft)));
        if written >= upto {
            return seen;
        }
    }
}

/// For each index in `seen`, the snapshot index expected when snapshots are due at `due`.
fn expected(
    seen: &[(LogIndex, LogIndex)],
    start: LogIndex,
    due: &[LogIndex],
) -> Vec<(LogIndex, LogIndex)> {
    seen.iter()
        .map(|&(index, _)| {
            let snapshot = due
                .iter()
                .copied()
                .filter(|&d| d <= index)
                .max()
                .unwrap_or(start);
            (index, snapshot)
        })
        .collect()
}

/// A single node with empty storage, initialized and leading, under `policy`.
async fn fresh_leader(policy: SnapshotPolicy) -> Raft<Sized> {
    lone_leader(config(policy), Sized).await
}

#[tokio::test(start_paused = true)]
async fn log_growth_snapshots_once_the_log_is_factor_times_the_last_snapshot() {
    let raft = fresh_leader(POLICY).await;
    // Index 1 is the membership, 2 the leader's blank entry, writes from 3 on. No snapshot yet:
    // min_entries alone (at 5). Then 20 entries of 132 bytes after each snapshot of 1,320: at 25
    // and 45; with a fixed count of 5 entries they would come at 10, 15, ...
    let seen = write_until(&raft, 50).await;
    assert_eq!(seen, expected(&seen, 0, &[5, 25, 45]));
    assert_eq!(raft.metrics().borrow().snapshots.built, 3);
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_log_bytes_caps_the_log_when_the_snapshot_would_allow_more() {
    // Factor 1,000 would allow 10,000 entries after each snapshot; the cap of 8 entries' bytes
    // (1,056) comes first: at 5 (min_entries, no snapshot yet), then every 8 entries.
    let capped = SnapshotPolicy::LogGrowth {
        factor: 1000,
        min_entries: 5,
        max_log_bytes: 8 * ENTRY_BYTES,
    };
    let raft = fresh_leader(capped).await;
    let seen = write_until(&raft, 30).await;
    assert_eq!(seen, expected(&seen, 0, &[5, 13, 21, 29]));
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_the_stored_snapshot_and_the_replayed_log_count() {
    // Storage as a node left it: a snapshot of 1,320 bytes at 10, entries 11..=25 after it.
    let membership = Membership::new([1]);
    let store = VecStore {
        hard_state: HardState {
            term: 1,
            voted_for: Some(1),
        },
        base: LogId::new(1, 10),
        log: (11..=25).map(|i| command(1, i)).collect(),
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(1, 10),
                membership,
            },
            data: vec![0; SNAPSHOT_BYTES as usize],
        }),
    };
    let raft = Raft::start(1, config(POLICY), store, NoPeers, Sized)
        .await
        .expect("start");
    raft.wait_for_leader(Duration::from_secs(2))
        .await
        .expect("leader");
    // The replayed entries 11..=25 (1,980 bytes) and the new leader's blank entry at 26 (32) count:
    // 2,012 of the 2,640 due. Writes of 132 bytes reach it at 31 (2,672), not at 30 (2,540).
    // Forgetting the stored snapshot's size would snapshot at once (min_entries alone); counting
    // only entries applied after the restart would wait until 46.
    let seen = write_until(&raft, 35).await;
    assert_eq!(seen.first().map(|s| s.0), Some(27));
    assert_eq!(seen, expected(&seen, 10, &[31]));
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn after_installing_the_leaders_snapshot_its_size_counts() {
    let raft = Raft::start(1, config(POLICY), VecStore::default(), NoPeers, Sized)
        .await
        .expect("start");
    let installed = raft
        .install_snapshot(InstallSnapshotRequest {
            term: 2,
            leader_id: 2,
            meta: SnapshotMeta {
                last_log_id: LogId::new(2, 10),
                membership: Membership::new([1, 2, 3]),
            },
            offset: 0,
            data: vec![0; SNAPSHOT_BYTES as usize],
            done: true,
        })
        .await
        .expect("the node answers");
    assert_eq!(
        installed.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(2, 10)
        }
    );
    // The leader sends entries 11.. one at a time, each committed at once: 20 entries after the
    // received snapshot of 1,320 bytes make 2,640, at 30. Without the received snapshot's size
    // the follower would snapshot after min_entries, at 15.
    let mut seen = Vec::new();
    for index in 11..=34 {
        let reply = raft
            .append_entries(AppendEntriesRequest {
                term: 2,
                leader_id: 2,
                prev_log_id: LogId::new(2, index - 1),
                entries: vec![command(2, index)],
                leader_commit: index,
                round: 0,
            })
            .await
            .expect("the node answers");
        assert_eq!(reply.result, AppendResult::Success { match_index: index });
        let mut metrics = raft.metrics();
        tokio::time::timeout(
            Duration::from_secs(5),
            metrics.wait_for(|m| m.last_applied == index),
        )
        .await
        .expect("the entry is applied")
        .expect("the node runs");
        settle().await;
        seen.push((index, snapshot_index(&raft)));
    }
    assert_eq!(seen, expected(&seen, 10, &[30]));
    let snapshots = raft.metrics().borrow().snapshots;
    assert_eq!((snapshots.installed, snapshots.built), (1, 1));
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_entry_count_ignores_the_snapshots_size() {
    let raft = fresh_leader(SnapshotPolicy::AfterAppliedEntries(7)).await;
    let seen = write_until(&raft, 30).await;
    assert_eq!(seen, expected(&seen, 0, &[7, 14, 21, 28]));
    raft.shutdown().await;
}
