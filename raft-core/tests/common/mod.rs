//! What several test binaries of raft-core share: a volatile single-node storage, a network to
//! nobody, and a state machine that echoes its commands.
#![allow(dead_code)]

use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;

/// A volatile single-node storage: just enough for a node to start, commit and compact.
#[derive(Default)]
pub struct VecStore {
    pub hard_state: HardState,
    /// The last purged entry; `log` starts right after it.
    pub base: LogId,
    pub log: Vec<Entry<u64>>,
    pub snapshot: Option<Snapshot>,
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
        let last = snapshot.meta.last_log_id;
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_log_id.index >= last.index)
        {
            return Ok(());
        }
        let holds = last.index <= self.base.index
            || self
                .log
                .get(self.pos(last.index))
                .is_some_and(|e| e.log_id == last);
        if !holds {
            // A snapshot from a leader, ahead of this log: it replaces the log.
            self.log.clear();
            self.base = last;
        }
        self.snapshot = Some(snapshot);
        Ok(())
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot.clone())
    }
}

pub struct NoPeers;

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
    async fn pre_vote(
        &self,
        target: NodeId,
        _: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
    async fn timeout_now(
        &self,
        target: NodeId,
        _: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        _: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
    async fn read_index(
        &self,
        target: NodeId,
        _: raft_core::ReadIndexRequest,
    ) -> Result<raft_core::ReadIndexResponse, NetworkError> {
        Err(NetworkError::Timeout { target })
    }
}

/// What [`Echo`] answers to `entries`: each command itself, 0 for an entry without one.
pub fn echoed(entries: &[Entry<u64>]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| match *e.payload {
            EntryPayload::Command(n) => n,
            _ => 0,
        })
        .collect()
}

/// Answers each command with itself. Its snapshot build waits for `release` (if set), so a test can
/// hold a build in progress.
#[derive(Default)]
pub struct Echo {
    pub release: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// What `last_applied` reports (a state machine that keeps its state across restarts).
    pub holds: Option<LogId>,
    /// The snapshots restored, by last log id.
    pub restored: std::sync::Arc<std::sync::Mutex<Vec<LogId>>>,
}

#[async_trait]
impl StateMachine for Echo {
    type Command = u64;
    type Response = u64;
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(self.holds)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        Ok(echoed(entries))
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }
    async fn restore(&mut self, meta: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        self.restored.lock().unwrap().push(meta.last_log_id);
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

pub async fn single_node_leader() -> Raft<Echo> {
    leader_with(Echo::default()).await
}

/// Node 1 alone, on empty volatile storage, initialized and leading under `config`.
pub async fn lone_leader<SM: StateMachine<Command = u64>>(config: Config, sm: SM) -> Raft<SM> {
    let raft = Raft::start(1, config, VecStore::default(), NoPeers, sm)
        .await
        .expect("start");
    raft.initialize([1]).await.expect("initialize");
    raft.wait_for_leader(Duration::from_secs(2))
        .await
        .expect("leader");
    raft
}

pub async fn leader_with(sm: Echo) -> Raft<Echo> {
    let config = Config {
        snapshot_policy: SnapshotPolicy::Never,
        snapshot_keep_entries: 2,
        ..Config::default()
    };
    let raft = lone_leader(config, sm).await;
    assert_eq!(raft.client_write(7).await.expect("write").data, 7);
    raft
}
