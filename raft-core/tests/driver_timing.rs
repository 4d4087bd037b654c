//! The driver's timing: time moves before every input, but timers fire only after the inputs already
//! queued are handled. Checked on tokio's paused clock with a storage whose appends can be made slow
//! and a network whose answers come late.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;

/// A volatile storage whose `append` takes a second of (virtual) time while `slow` is set: a stalled
/// fsync.
#[derive(Default)]
struct StallingStore {
    hard_state: HardState,
    log: Vec<Entry<u64>>,
    slow: Arc<AtomicBool>,
}

#[async_trait]
impl RaftStorage<u64> for StallingStore {
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        Ok(self.hard_state)
    }
    async fn save_hard_state(&mut self, s: &HardState) -> Result<(), StorageError> {
        self.hard_state = *s;
        Ok(())
    }
    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        Ok(LogState {
            last_purged: LogId::default(),
            last_log_id: self.log.last().map_or(LogId::default(), |e| e.log_id),
        })
    }
    async fn entries(&mut self, s: LogIndex, e: LogIndex) -> Result<Vec<Entry<u64>>, StorageError> {
        Ok(self.log[(s - 1) as usize..(e - 1) as usize].to_vec())
    }
    async fn append(&mut self, e: &[Entry<u64>]) -> Result<(), StorageError> {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
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

/// Peers that answer every vote and pre-vote request late, with a higher term; nothing else gets
/// through.
struct LateHigherTerm {
    delay: Duration,
    term: Term,
}

#[async_trait]
impl RaftNetwork<u64> for LateHigherTerm {
    async fn append_entries(
        &self,
        target: NodeId,
        _: AppendEntriesRequest<u64>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        Err(NetworkError::Unreachable {
            target,
            reason: "test".into(),
        })
    }
    async fn vote(&self, _: NodeId, _: VoteRequest) -> Result<VoteResponse, NetworkError> {
        tokio::time::sleep(self.delay).await;
        Ok(VoteResponse {
            term: self.term,
            vote_granted: false,
        })
    }
    async fn pre_vote(
        &self,
        _: NodeId,
        _: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        tokio::time::sleep(self.delay).await;
        Ok(PreVoteResponse {
            term: self.term,
            vote_granted: false,
        })
    }
    async fn timeout_now(
        &self,
        target: NodeId,
        _: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        Err(NetworkError::Unreachable {
            target,
            reason: "test".into(),
        })
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        _: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        Err(NetworkError::Unreachable {
            target,
            reason: "test".into(),
        })
    }
    async fn read_index(
        &self,
        target: NodeId,
        _: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError> {
        Err(NetworkError::Unreachable {
            target,
            reason: "test".into(),
        })
    }
}

#[derive(Default)]
struct Ignore;

#[async_trait]
impl StateMachine for Ignore {
    type Command = u64;
    type Response = ();
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<()>, StateMachineError> {
        Ok(vec![(); entries.len()])
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// Election timeouts of exactly 150 ms, so timings are exact.
fn fixed_timeouts() -> Config {
    Config {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(151),
        rpc_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

fn heartbeat(term: Term, prev: LogId, entries: Vec<Entry<u64>>) -> AppendEntriesRequest<u64> {
    AppendEntriesRequest {
        term,
        leader_id: 2,
        prev_log_id: prev,
        entries,
        leader_commit: 1,
        round: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_stalled_on_its_disk_handles_the_queued_append_entries_before_its_timer() {
    let slow = Arc::new(AtomicBool::new(false));
    let store = StallingStore {
        slow: Arc::clone(&slow),
        ..StallingStore::default()
    };
    let network = LateHigherTerm {
        delay: Duration::ZERO,
        term: 0,
    };
    let raft = Raft::start(1, fixed_timeouts(), store, network, Ignore)
        .await
        .expect("start");
    raft.initialize([1, 2, 3]).await.expect("initialize");
    // Node 2 leads term 1; its first AppendEntries makes node 1's disk stall for a second.
    let first = heartbeat(
        1,
        LogId::new(0, 1),
        vec![Entry {
            log_id: LogId::new(1, 2),
            payload: EntryPayload::Blank.into(),
        }],
    );
    slow.store(true, Ordering::SeqCst);
    let stalled = tokio::spawn({
        let raft = raft.clone();
        async move { raft.append_entries(first).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Meanwhile the leader's next heartbeat arrives and waits in the queue.
    let queued = tokio::spawn({
        let raft = raft.clone();
        async move {
            raft.append_entries(heartbeat(1, LogId::new(1, 2), Vec::new()))
                .await
        }
    });
    let first = stalled.await.expect("task").expect("running");
    slow.store(false, Ordering::SeqCst);
    let queued = queued.await.expect("task").expect("running");
    assert_eq!(first.result, AppendResult::Success { match_index: 2 });
    // Its election timer ran out during the stall, but the heartbeat in hand comes first.
    assert_eq!(queued.result, AppendResult::Success { match_index: 2 });
    let m = raft.metrics().borrow().clone();
    assert_eq!((m.current_term, m.role), (1, Role::Follower), "{m:?}");
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_candidate_that_steps_down_on_a_late_answer_waits_a_whole_election_timeout() {
    // Votes are answered 140 ms late, with term 7.
    let network = LateHigherTerm {
        delay: Duration::from_millis(140),
        term: 7,
    };
    let start = tokio::time::Instant::now();
    let raft = Raft::start(
        1,
        fixed_timeouts(),
        StallingStore::default(),
        network,
        Ignore,
    )
    .await
    .expect("start");
    raft.initialize([1, 2, 3]).await.expect("initialize");
    let mut metrics = raft.metrics();
    metrics
        .wait_for(|m| m.current_term == 7)
        .await
        .expect("running");
    let stepped_down = start.elapsed();
    // It campaigned at 150 ms and heard term 7 at about 290 ms. Its next election is a full
    // timeout after that, not at 300 ms (150 ms after the last tick).
    assert!(
        stepped_down >= Duration::from_millis(280) && stepped_down < Duration::from_millis(300),
        "{stepped_down:?}"
    );
    tokio::time::sleep_until(start + stepped_down + Duration::from_millis(140)).await;
    let m = raft.metrics().borrow().clone();
    assert_eq!((m.current_term, m.role), (7, Role::Follower), "{m:?}");
    raft.shutdown().await;
}
