//! The `Raft` handle's contract on one node (raft-core/src/raft/mod.rs): `shutdown` is idempotent and
//! stops the node, dropping every handle stops it too, and building a snapshot does not stop the node
//! from applying and answering writes.

use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;

/// A volatile single-node storage: just enough for a node to start, commit and compact.
#[derive(Default)]
struct VecStore {
    hard_state: HardState,
    /// The last purged entry; `log` starts right after it.
    base: LogId,
    log: Vec<Entry<u64>>,
    snapshot: Option<Snapshot>,
}

impl VecStore {
    fn pos(&self, index: LogIndex) -> usize {
        (index - self.base.index - 1) as usize
    }
}

#[async_trait]
impl RaftStorage<u64> for VecStore {
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }
    async fn save_hard_state(&mut self, s: &HardState) -> Result<(), StorageError> {
        self.hard_state = *s;
        Ok(())
    }
    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        let last_log_id = self.log.last().map_or(self.base, |e| e.log_id);
        Ok(LogState {
            last_purged: self.base,
            last_log_id,
        })
    }
    async fn entries(&mut self, s: LogIndex, e: LogIndex) -> Result<Vec<Entry<u64>>, StorageError> {
        Ok(self.log[self.pos(s)..self.pos(e)].to_vec())
    }
    async fn append(&mut self, e: &[Entry<u64>]) -> Result<(), StorageError> {
        self.log.extend_from_slice(e);
        Ok(())
    }
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let keep = self.pos(from);
        self.log.truncate(keep);
        Ok(())
    }
    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        if upto > self.base.index {
            let n = self.pos(upto) + 1;
            self.base = self.log[n - 1].log_id;
            self.log.drain(..n);
        }
        Ok(())
    }
    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        // Single node: snapshots are always built locally, inside the log.
        self.snapshot = Some(snapshot);
        Ok(())
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot.clone())
    }
}

struct NoPeers;

#[async_trait]
impl RaftNetwork<u64> for NoPeers {
    async fn append_entries(
        &self,
        target: NodeId,
        _: AppendEntriesRequest<u64>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
    async fn vote(&self, target: NodeId, _: VoteRequest) -> Result<VoteResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        _: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
}

/// Answers each command with itself. Its snapshot build waits for `release` (if set), so a test can
/// hold a build in progress.
#[derive(Default)]
struct Echo {
    release: Option<std::sync::Arc<tokio::sync::Notify>>,
}

#[async_trait]
impl StateMachine for Echo {
    type Command = u64;
    type Response = u64;
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        Ok(entries
            .iter()
            .map(|e| match e.payload {
                EntryPayload::Command(n) => n,
                _ => 0,
            })
            .collect())
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
    async fn begin_snapshot(&mut self) -> Result<SnapshotBuild, StateMachineError> {
        let release = self.release.clone();
        Ok(Box::pin(async move {
            if let Some(r) = release {
                r.notified().await;
            }
            Ok(Vec::new())
        }))
    }
}

async fn single_node_leader() -> Raft<Echo> {
    leader_with(Echo::default()).await
}

async fn leader_with(sm: Echo) -> Raft<Echo> {
    let config = Config {
        snapshot_policy: SnapshotPolicy::Never,
        snapshot_keep_entries: 2,
        ..Config::default()
    };
    let raft = Raft::start(1, config, VecStore::default(), NoPeers, sm)
        .await
        .expect("start");
    raft.initialize([1]).await.expect("initialize");
    raft.wait_for_leader(Duration::from_secs(2))
        .await
        .expect("leader");
    assert_eq!(raft.client_write(7).await.expect("write").data, 7);
    raft
}

async fn wait_stopped(metrics: &mut tokio::sync::watch::Receiver<Metrics>) -> String {
    let stopped = metrics.wait_for(|m| matches!(m.status, NodeStatus::Stopped(_)));
    let m = tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the node did not stop")
        .expect("metrics sender dropped without reporting Stopped");
    match &m.status {
        NodeStatus::Stopped(reason) => reason.clone(),
        NodeStatus::Running => unreachable!("waited for Stopped"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_node_and_is_idempotent() {
    let raft = single_node_leader().await;
    let mut metrics = raft.metrics();
    raft.shutdown().await;
    assert_eq!(wait_stopped(&mut metrics).await, "node was shut down");
    raft.shutdown().await; // a second call returns at once
    let err = raft
        .client_write(8)
        .await
        .expect_err("a stopped node accepts no writes");
    assert!(matches!(err, ClientWriteError::Stopped(_)), "{err:?}");
    assert!(raft
        .vote(VoteRequest {
            term: 9,
            candidate_id: 2,
            last_log_id: LogId::default()
        })
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_node() {
    let raft = single_node_leader().await;
    let other = raft.clone();
    let mut metrics = raft.metrics();
    drop(raft);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metrics.borrow().status,
        NodeStatus::Running,
        "one handle is still alive"
    );
    drop(other);
    assert_eq!(wait_stopped(&mut metrics).await, "node was shut down");
}

#[tokio::test(start_paused = true)]
async fn writes_are_applied_and_answered_while_a_snapshot_is_being_built() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let raft = leader_with(Echo {
        release: Some(release.clone()),
    })
    .await;
    let trigger = tokio::spawn({
        let raft = raft.clone();
        async move { raft.trigger_snapshot().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!trigger.is_finished(), "the build is held");
    // The build is in progress: writes still commit, apply and get their answers.
    for n in 100..110 {
        let reply = tokio::time::timeout(Duration::from_secs(1), raft.client_write(n))
            .await
            .expect("a write is answered while the snapshot is built")
            .expect("write");
        assert_eq!(reply.data, n);
    }
    assert_eq!(raft.metrics().borrow().snapshot, LogId::default());
    release.notify_one();
    let id = trigger
        .await
        .expect("trigger task")
        .expect("the node runs")
        .expect("something was applied");
    // The snapshot is of the state when the build began (the initialization entries and the first
    // write), not of the writes made meanwhile.
    assert!(id.index < 12, "{id}");
    let m = raft.metrics().borrow().clone();
    assert_eq!(m.snapshot, id);
    assert_eq!(m.last_applied, 13);
    assert_eq!(
        m.log_entries,
        13 - id.index + 2,
        "compacted to 2 entries before the snapshot"
    );
    raft.shutdown().await;
}
