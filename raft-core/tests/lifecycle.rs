//! The `Raft` handle's lifecycle contract (raft-core/src/raft/mod.rs): `shutdown` is idempotent and
//! stops the node, and dropping every handle stops it too.

use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;

/// A volatile single-node storage: just enough for a node to start and commit.
#[derive(Default)]
struct VecStore {
    hard_state: HardState,
    log: Vec<Entry<u64>>,
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
        let last_log_id = self.log.last().map(|e| e.log_id).unwrap_or_default();
        Ok(LogState {
            last_purged: LogId::default(),
            last_log_id,
        })
    }
    async fn entries(&mut self, s: LogIndex, e: LogIndex) -> Result<Vec<Entry<u64>>, StorageError> {
        Ok(self.log[(s - 1) as usize..(e - 1) as usize].to_vec())
    }
    async fn append(&mut self, e: &[Entry<u64>]) -> Result<(), StorageError> {
        self.log.extend_from_slice(e);
        Ok(())
    }
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.log.truncate((from - 1) as usize);
        Ok(())
    }
    async fn purge(&mut self, _: LogIndex) -> Result<(), StorageError> {
        Ok(())
    }
    async fn install_snapshot(&mut self, _: Snapshot) -> Result<(), StorageError> {
        Ok(())
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(None)
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

/// Answers each command with itself.
struct Echo;

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
}

async fn single_node_leader() -> Raft<Echo> {
    let raft = Raft::start(1, Config::default(), VecStore::default(), NoPeers, Echo)
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
