//! The driver's ordering rules (see the `raft` module docs and DESIGN.md), checked against mocked
//! storage and network on tokio's paused clock.
//!
//! Storage and network are `mockall` mocks that record every call in a shared event log. A mock
//! returns synchronously, so a driver that, say, sent a message before awaiting a storage write would
//! still see the write recorded first (the peer task cannot run in between). Every storage write is
//! therefore wrapped in [`Slow`], which makes it take a millisecond of virtual time before the mock
//! runs, as a disk would: anything the driver lets out before the write completes is recorded before
//! it. The mock records at the moment the write becomes durable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mockall::mock;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, ClientWriteError, Config, Entry,
    EntryPayload, HardState, InstallSnapshotRequest, InstallSnapshotResponse, LogId, LogIndex,
    LogState, Membership, NetworkError, NodeId, NodeStatus, PreVoteRequest, PreVoteResponse, Raft,
    RaftNetwork, RaftStorage, ReadIndexRequest, ReadIndexResponse, Role, Snapshot, SnapshotMeta,
    SnapshotResult, StateMachine, StateMachineError, StorageError, TimeoutNowRequest,
    TimeoutNowResponse, VoteRequest, VoteResponse,
};

mock! {
    pub Storage {}
    #[async_trait]
    impl RaftStorage<u64> for Storage {
        async fn hard_state(&mut self) -> Result<HardState, StorageError>;
        async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError>;
        async fn log_state(&mut self) -> Result<LogState, StorageError>;
        async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry<u64>>, StorageError>;
        async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError>;
        async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError>;
        async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError>;
        async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;
        async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError>;
    }
}

mock! {
    pub Network {}
    #[async_trait]
    impl RaftNetwork<u64> for Network {
        async fn append_entries(
            &self,
            target: NodeId,
            request: AppendEntriesRequest<u64>,
        ) -> Result<AppendEntriesResponse, NetworkError>;
        async fn vote(&self, target: NodeId, request: VoteRequest) -> Result<VoteResponse, NetworkError>;
        async fn pre_vote(&self, target: NodeId, request: PreVoteRequest) -> Result<PreVoteResponse, NetworkError>;
        async fn timeout_now(&self, target: NodeId, request: TimeoutNowRequest) -> Result<TimeoutNowResponse, NetworkError>;
        async fn install_snapshot(
            &self,
            target: NodeId,
            request: InstallSnapshotRequest,
        ) -> Result<InstallSnapshotResponse, NetworkError>;
        async fn read_index(&self, target: NodeId, request: ReadIndexRequest) -> Result<ReadIndexResponse, NetworkError>;
    }
}

// ----- event log -----

type Events = Arc<Mutex<Vec<String>>>;

fn record(events: &Events, event: String) {
    events.lock().unwrap().push(event);
}

fn snapshot_of(events: &Events) -> Vec<String> {
    events.lock().unwrap().clone()
}

/// The position of the first event equal to `event`; panics with the whole log if there is none.
fn position(events: &[String], event: &str) -> usize {
    events
        .iter()
        .position(|e| e == event)
        .unwrap_or_else(|| panic!("no event `{event}` in {events:#?}"))
}

fn assert_before(events: &[String], first: &str, then: &str) {
    let (a, b) = (position(events, first), position(events, then));
    assert!(
        a < b,
        "`{first}` (event {a}) must happen before `{then}` (event {b}); events: {events:#?}"
    );
}

// ----- storage -----

/// How the mocked storage misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    save_hard_state: bool,
    append: bool,
}

fn disk_error(what: &str) -> StorageError {
    StorageError::Io {
        context: what.to_string(),
        source: std::io::Error::other("injected failure"),
    }
}

/// A mocked storage holding `log` (after nothing purged), term 0, no snapshot. Writes are recorded
/// as `save_hard_state(term=.., voted_for=..)`, `append(a..=b)`, `truncate(from)`, ...
fn mock_storage(events: &Events, log: Vec<Entry<u64>>, faults: Faults) -> MockStorage {
    let mut s = MockStorage::new();
    s.expect_hard_state().returning(|| Ok(HardState::default()));
    let last = log.last().map_or(LogId::default(), |e| e.log_id);
    s.expect_log_state().returning(move || {
        Ok(LogState {
            last_purged: LogId::default(),
            last_log_id: last,
        })
    });
    s.expect_snapshot().returning(|| Ok(None));
    s.expect_entries()
        .returning(move |start, end| Ok(log[(start - 1) as usize..(end - 1) as usize].to_vec()));
    let ev = Arc::clone(events);
    s.expect_save_hard_state().returning(move |hs| {
        if faults.save_hard_state {
            record(
                &ev,
                format!(
                    "save_hard_state failed(term={}, voted_for={:?})",
                    hs.term, hs.voted_for
                ),
            );
            return Err(disk_error("saving the hard state"));
        }
        record(
            &ev,
            format!(
                "save_hard_state(term={}, voted_for={:?})",
                hs.term, hs.voted_for
            ),
        );
        Ok(())
    });
    let ev = Arc::clone(events);
    s.expect_append().returning(move |entries| {
        let (first, last) = (
            entries[0].log_id.index,
            entries[entries.len() - 1].log_id.index,
        );
        if faults.append {
            record(&ev, format!("append failed({first}..={last})"));
            return Err(disk_error("appending"));
        }
        record(&ev, format!("append({first}..={last})"));
        Ok(())
    });
    let ev = Arc::clone(events);
    s.expect_truncate().returning(move |from| {
        record(&ev, format!("truncate({from})"));
        Ok(())
    });
    let ev = Arc::clone(events);
    s.expect_purge().returning(move |upto| {
        record(&ev, format!("purge({upto})"));
        Ok(())
    });
    let ev = Arc::clone(events);
    s.expect_install_snapshot()
        .returning(move |snap: Snapshot| {
            record(&ev, format!("install_snapshot({})", snap.meta.last_log_id));
            Ok(())
        });
    s
}

/// How long every storage write takes (virtual time).
const WRITE_DELAY: Duration = Duration::from_millis(1);

/// A storage whose writes take [`WRITE_DELAY`] (appends: `append_delay`) before they reach (and
/// complete in) the mock.
struct Slow(MockStorage, Duration);

#[async_trait]
impl RaftStorage<u64> for Slow {
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        self.0.hard_state().await
    }
    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        tokio::time::sleep(WRITE_DELAY).await;
        self.0.save_hard_state(state).await
    }
    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        self.0.log_state().await
    }
    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<u64>>, StorageError> {
        self.0.entries(start, end).await
    }
    async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError> {
        tokio::time::sleep(self.1).await;
        self.0.append(entries).await
    }
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        tokio::time::sleep(WRITE_DELAY).await;
        self.0.truncate(from).await
    }
    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        tokio::time::sleep(WRITE_DELAY).await;
        self.0.purge(upto).await
    }
    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        tokio::time::sleep(WRITE_DELAY).await;
        self.0.install_snapshot(snapshot).await
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.0.snapshot().await
    }
}

fn storage(events: &Events, log: Vec<Entry<u64>>, faults: Faults) -> Slow {
    Slow(mock_storage(events, log, faults), WRITE_DELAY)
}

/// A storage whose appends take `append_delay`: long enough for the driver to go on meanwhile.
fn slow_appends(events: &Events, log: Vec<Entry<u64>>, append_delay: Duration) -> Slow {
    Slow(mock_storage(events, log, Faults::default()), append_delay)
}

/// The log of an initialized cluster of `voters`: the membership entry at index 1, term 0.
fn initialized(voters: &[NodeId]) -> Vec<Entry<u64>> {
    vec![Entry {
        log_id: LogId::new(0, 1),
        payload: EntryPayload::Membership(Box::new(Membership::new(voters.iter().copied()))).into(),
    }]
}

// ----- network -----

/// A mocked network that records every RPC as `vote(to=.., term=..)` / `append_entries(to=..,
/// term=.., last=.., entries=..)` (`last`: the index of the request's last entry). AppendEntries
/// never get an answer (unreachable); pre-votes are always granted (the peers would vote), votes are
/// granted if `grant_votes`, else unreachable too.
fn network(events: &Events, grant_votes: bool) -> MockNetwork {
    network_answering(events, grant_votes, &[])
}

/// [`network`], except that the nodes in `accepting` accept every AppendEntries at once.
fn network_answering(events: &Events, grant_votes: bool, accepting: &[NodeId]) -> MockNetwork {
    let mut n = MockNetwork::new();
    let ev = Arc::clone(events);
    n.expect_pre_vote().returning(move |target, req| {
        record(&ev, format!("pre_vote(to={target}, term={})", req.term));
        Ok(PreVoteResponse {
            term: req.term - 1,
            vote_granted: true,
        })
    });
    let ev = Arc::clone(events);
    n.expect_vote().returning(move |target, req| {
        record(&ev, format!("vote(to={target}, term={})", req.term));
        if grant_votes {
            Ok(VoteResponse {
                term: req.term,
                vote_granted: true,
            })
        } else {
            Err(NetworkError::Unreachable {
                target,
                reason: "mock".into(),
            })
        }
    });
    let ev = Arc::clone(events);
    let accepting = accepting.to_vec();
    n.expect_append_entries().returning(move |target, req| {
        let last = req.prev_log_id.index + req.entries.len() as u64;
        record(
            &ev,
            format!(
                "append_entries(to={target}, term={}, last={last}, entries={})",
                req.term,
                req.entries.len()
            ),
        );
        if accepting.contains(&target) {
            Ok(AppendEntriesResponse {
                term: req.term,
                result: AppendResult::Success { match_index: last },
                round: req.round,
            })
        } else {
            Err(NetworkError::Unreachable {
                target,
                reason: "mock".into(),
            })
        }
    });
    n
}

// ----- state machine -----

/// Sums commands; records the id of every entry it applied, at the end of `apply` (which takes a
/// millisecond of virtual time, so a reply sent before `apply` returns would be seen first).
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<LogId>>>,
    /// Each restore: the snapshot's last log id and how many entries were applied before it.
    restores: Arc<Mutex<Vec<(LogId, usize)>>>,
    total: u64,
}

#[async_trait]
impl StateMachine for Recorder {
    type Command = u64;
    type Response = u64;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if let EntryPayload::Command(n) = *e.payload {
                self.total += n;
            }
            self.applied.lock().unwrap().push(e.log_id);
            out.push(self.total);
        }
        Ok(out)
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(self.total.to_le_bytes().to_vec())
    }

    async fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let bytes: [u8; 8] = data.try_into().map_err(StateMachineError::new)?;
        self.total = u64::from_le_bytes(bytes);
        let applied_before = self.applied.lock().unwrap().len();
        self.restores
            .lock()
            .unwrap()
            .push((meta.last_log_id, applied_before));
        Ok(())
    }
}

// ----- helpers -----

fn config() -> Config {
    Config {
        seed: 42,
        ..Config::default()
    }
}

async fn start(storage: Slow, network: MockNetwork, sm: Recorder) -> Raft<Recorder> {
    Raft::start(1, config(), storage, network, sm)
        .await
        .expect("the node starts")
}

async fn wait_until_stopped(raft: &Raft<Recorder>) -> String {
    let mut metrics = raft.metrics();
    let m = tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| matches!(m.status, NodeStatus::Stopped(_))),
    )
    .await
    .expect("the node stops within 10 s")
    .expect("the metrics report Stopped before the driver ends")
    .clone();
    match m.status {
        NodeStatus::Stopped(reason) => reason,
        NodeStatus::Running => unreachable!(),
    }
}

async fn wait_until_leader(raft: &Raft<Recorder>) -> u64 {
    let mut metrics = raft.metrics();
    let m = tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| m.role == Role::Leader),
    )
    .await
    .expect("the node becomes leader within 10 s")
    .expect("the node is running")
    .clone();
    m.current_term
}

fn command(term: u64, index: LogIndex, n: u64) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(n).into(),
    }
}

// ----- rule 1: a new term and vote are durable before any message that depends on them -----

#[tokio::test(start_paused = true)]
async fn candidate_persists_term_and_vote_before_requesting_votes() {
    let events = Events::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, false),
        Recorder::default(),
    )
    .await;
    // Several election timeouts (150..300 ms): the node campaigns in several terms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    raft.shutdown().await;

    let events = snapshot_of(&events);
    let vote_terms: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            e.strip_prefix("vote(to=")
                .map(|rest| rest.split("term=").nth(1).unwrap())
        })
        .map(|t| t.trim_end_matches(')').parse().unwrap())
        .collect();
    assert!(
        vote_terms.len() >= 4 && vote_terms.contains(&1) && vote_terms.contains(&2),
        "the node should have campaigned in several terms: {events:#?}"
    );
    for term in vote_terms {
        for to in [2, 3] {
            assert_before(
                &events,
                &format!("save_hard_state(term={term}, voted_for=Some(1))"),
                &format!("vote(to={to}, term={term})"),
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn follower_replies_to_vote_only_after_the_vote_is_durable() {
    let events = Events::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, false),
        Recorder::default(),
    )
    .await;
    let reply = raft
        .vote(VoteRequest {
            term: 1,
            candidate_id: 2,
            last_log_id: LogId::new(0, 1),
            leadership_transfer: false,
        })
        .await
        .expect("the node answers");
    record(&events, format!("reply({reply:?})"));
    assert_eq!(
        reply,
        VoteResponse {
            term: 1,
            vote_granted: true
        }
    );
    raft.shutdown().await;
    let events = snapshot_of(&events);
    assert_before(
        &events,
        "save_hard_state(term=1, voted_for=Some(2))",
        &format!("reply({reply:?})"),
    );
}

#[tokio::test(start_paused = true)]
async fn follower_does_not_grant_a_vote_it_could_not_persist() {
    let events = Events::default();
    let raft = start(
        storage(
            &events,
            initialized(&[1, 2, 3]),
            Faults {
                save_hard_state: true,
                ..Faults::default()
            },
        ),
        network(&events, false),
        Recorder::default(),
    )
    .await;
    let reply = raft
        .vote(VoteRequest {
            term: 1,
            candidate_id: 2,
            last_log_id: LogId::new(0, 1),
            leadership_transfer: false,
        })
        .await;
    match &reply {
        Ok(VoteResponse {
            vote_granted: true, ..
        }) => panic!("granted a vote that is not durable: {reply:?}"),
        Ok(other) => panic!("expected the node to stop on the storage error, got {other:?}"),
        Err(_) => {}
    }
    let reason = wait_until_stopped(&raft).await;
    assert!(reason.contains("storage"), "stop reason: {reason}");
    let events = snapshot_of(&events);
    position(&events, "save_hard_state failed(term=1, voted_for=Some(2))");
    raft.shutdown().await;
}

// ----- rule 2: a follower's entries are durable before it answers AppendEntries with success -----

#[tokio::test(start_paused = true)]
async fn follower_does_not_acknowledge_entries_that_are_not_durable() {
    let events = Events::default();
    let raft = start(
        storage(
            &events,
            initialized(&[1, 2, 3]),
            Faults {
                append: true,
                ..Faults::default()
            },
        ),
        network(&events, false),
        Recorder::default(),
    )
    .await;
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![command(1, 2, 7), command(1, 3, 8)],
            leader_commit: 1,
            round: 0,
        })
        .await;
    match &reply {
        Ok(AppendEntriesResponse {
            result: AppendResult::Success { .. },
            ..
        }) => panic!("acknowledged entries that are not durable: {reply:?}"),
        Ok(other) => panic!("expected the node to stop on the storage error, got {other:?}"),
        Err(_) => {}
    }
    let reason = wait_until_stopped(&raft).await;
    assert!(reason.contains("storage"), "stop reason: {reason}");
    position(&snapshot_of(&events), "append failed(2..=3)");
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn follower_replies_to_append_entries_only_after_append_and_new_term_are_durable() {
    let events = Events::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, false),
        Recorder::default(),
    )
    .await;

    // A higher term with entries: the term and the entries are durable before the reply.
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![command(1, 2, 7), command(1, 3, 8)],
            leader_commit: 1,
            round: 0,
        })
        .await
        .expect("the node answers");
    record(&events, format!("reply({reply:?})"));
    assert_eq!(
        reply,
        AppendEntriesResponse {
            term: 1,
            result: AppendResult::Success { match_index: 3 },
            round: 0,
        }
    );
    let first_reply = format!("reply({reply:?})");

    // A heartbeat of a still higher term: the new term is durable before the reply.
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: 3,
            leader_id: 3,
            prev_log_id: LogId::new(1, 3),
            entries: vec![],
            leader_commit: 3,
            round: 0,
        })
        .await
        .expect("the node answers");
    record(&events, format!("reply({reply:?})"));
    assert_eq!(
        reply,
        AppendEntriesResponse {
            term: 3,
            result: AppendResult::Success { match_index: 3 },
            round: 0,
        }
    );
    let second_reply = format!("reply({reply:?})");
    raft.shutdown().await;

    let events = snapshot_of(&events);
    assert_before(
        &events,
        "save_hard_state(term=1, voted_for=None)",
        &first_reply,
    );
    assert_before(&events, "append(2..=3)", &first_reply);
    assert_before(
        &events,
        "save_hard_state(term=3, voted_for=None)",
        &second_reply,
    );
}

#[tokio::test(start_paused = true)]
async fn follower_acknowledges_a_snapshot_only_once_stored_and_restores_before_applying_after_it() {
    let events = Events::default();
    let sm = Recorder::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, false),
        sm.clone(),
    )
    .await;
    let data = 500u64.to_le_bytes();
    let chunk = |offset: usize, len: usize, done: bool| InstallSnapshotRequest {
        term: 2,
        leader_id: 2,
        meta: SnapshotMeta {
            last_log_id: LogId::new(2, 10),
            membership: Membership::new([1, 2, 3]),
        },
        offset: offset as u64,
        data: data[offset..offset + len].to_vec(),
        done,
    };
    let first = raft
        .install_snapshot(chunk(0, 5, false))
        .await
        .expect("the node answers");
    assert_eq!(
        first.result,
        SnapshotResult::Accepted {
            snapshot: LogId::new(2, 10),
            offset: 0,
            next_offset: 5
        }
    );
    let last = raft
        .install_snapshot(chunk(5, 3, true))
        .await
        .expect("the node answers");
    record(&events, format!("reply({last:?})"));
    assert_eq!(
        last.result,
        SnapshotResult::Installed {
            snapshot: LogId::new(2, 10)
        }
    );
    // The log continues after the snapshot; entry 11 commits and is applied on the restored state.
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: 2,
            leader_id: 2,
            prev_log_id: LogId::new(2, 10),
            entries: vec![command(2, 11, 7)],
            leader_commit: 11,
            round: 0,
        })
        .await
        .expect("the node answers");
    assert_eq!(reply.result, AppendResult::Success { match_index: 11 });
    let mut metrics = raft.metrics();
    tokio::time::timeout(
        Duration::from_secs(5),
        metrics.wait_for(|m| m.last_applied == 11),
    )
    .await
    .expect("entry 11 is applied")
    .expect("the node runs");
    assert_eq!(metrics.borrow().snapshot, LogId::new(2, 10));
    raft.shutdown().await;

    let events = snapshot_of(&events);
    assert_before(
        &events,
        "install_snapshot(2-10)",
        &format!("reply({last:?})"),
    );
    assert_before(&events, "install_snapshot(2-10)", "append(11..=11)");
    assert_eq!(*sm.restores.lock().unwrap(), vec![(LogId::new(2, 10), 0)]);
    assert_eq!(*sm.applied.lock().unwrap(), vec![LogId::new(2, 11)]);
}

// ----- rule 7: a client hears success only after its entry is applied -----

#[tokio::test(start_paused = true)]
async fn leader_answers_client_write_only_after_the_entry_is_applied() {
    let events = Events::default();
    let sm = Recorder::default();
    let applied = Arc::clone(&sm.applied);
    let raft = start(
        storage(&events, initialized(&[1]), Faults::default()),
        network(&events, false),
        sm,
    )
    .await;
    let term = wait_until_leader(&raft).await;

    let writers: Vec<_> = (1..=5u64)
        .map(|n| {
            let raft = raft.clone();
            let applied = Arc::clone(&applied);
            tokio::spawn(async move {
                let resp = raft.client_write(n).await.expect("the write succeeds");
                // Checked the moment the response arrives.
                let applied_now = applied.lock().unwrap().clone();
                assert!(
                    applied_now.contains(&resp.log_id),
                    "write {n} answered with {:?} before it was applied; applied: {applied_now:?}",
                    resp.log_id
                );
                resp
            })
        })
        .collect();
    let mut total = 0;
    for w in writers {
        let resp = w.await.expect("the writer task does not panic");
        assert_eq!(resp.log_id.term, term);
        total = total.max(resp.data);
    }
    assert_eq!(total, 15, "every write is applied once");

    // A lone write after the batch.
    let resp = raft.client_write(100).await.expect("the write succeeds");
    assert!(applied.lock().unwrap().contains(&resp.log_id));
    assert_eq!(resp.data, 115);
    raft.shutdown().await;
}

// ----- rule 7: pending writes of a deposed leader wait for their fate, then fail with
// OutcomeUnknown, never NotLeader -----

type PendingWrite =
    tokio::task::JoinHandle<Result<raft_core::ClientWriteResponse<u64>, ClientWriteError>>;

/// Node 1 of {1, 2, 3} leading (votes are granted; AppendEntries never get an answer, so nothing
/// commits) with a write of 9 proposed as entry 3 (entry 2 is its blank entry) and pending. Returns
/// the node, its term and the write.
async fn leader_with_a_pending_write(sm: Recorder) -> (Raft<Recorder>, u64, PendingWrite) {
    let events = Events::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, true),
        sm,
    )
    .await;
    let term = wait_until_leader(&raft).await;
    let write = tokio::spawn({
        let raft = raft.clone();
        async move { raft.client_write(9).await }
    });
    let mut metrics = raft.metrics();
    tokio::time::timeout(
        Duration::from_secs(1),
        metrics.wait_for(|m| m.last_log_id.index >= 3),
    )
    .await
    .expect("the write is proposed")
    .expect("the node is running");
    assert!(
        !write.is_finished(),
        "the write cannot complete without a quorum"
    );
    (raft, term, write)
}

#[tokio::test(start_paused = true)]
async fn deposed_leader_fails_pending_writes_with_outcome_unknown() {
    let sm = Recorder::default();
    let applied = Arc::clone(&sm.applied);
    let (raft, term, write) = leader_with_a_pending_write(sm).await;

    // Another leader of a higher term takes over.
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: term + 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![],
            leader_commit: 1,
            round: 0,
        })
        .await
        .expect("the node answers");
    assert_eq!(
        reply,
        AppendEntriesResponse {
            term: term + 1,
            result: AppendResult::Success { match_index: 1 },
            round: 0,
        }
    );

    // The write waits for the new leader to commit it, for up to 2 x election_timeout_max, and
    // then fails: its fate is unknown. Node 2 keeps leading meanwhile (its heartbeats commit
    // nothing new).
    let heartbeats = tokio::spawn({
        let raft = raft.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = raft
                    .append_entries(AppendEntriesRequest {
                        term: term + 1,
                        leader_id: 2,
                        prev_log_id: LogId::new(0, 1),
                        entries: vec![],
                        leader_commit: 1,
                        round: 0,
                    })
                    .await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!write.is_finished(), "failed before the grace period ended");
    let result = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .expect("the pending write is answered once the grace period ends")
        .expect("the writer task does not panic");
    assert_eq!(
        result.map(|r| r.log_id),
        Err(ClientWriteError::OutcomeUnknown {
            leader_hint: Some(2)
        })
    );
    assert!(
        !applied.lock().unwrap().iter().any(|id| id.index >= 2),
        "nothing past the membership entry was committed"
    );
    heartbeats.abort();
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deposed_leader_answers_a_pending_write_the_next_leader_commits() {
    let (raft, term, write) = leader_with_a_pending_write(Recorder::default()).await;

    // Node 2 took over (as after a leadership transfer) holding this node's entries, and commits
    // them with its own blank entry.
    let blank = |term, index| Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Blank.into(),
    };
    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: term + 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![blank(term, 2), command(term, 3, 9), blank(term + 1, 4)],
            leader_commit: 4,
            round: 0,
        })
        .await
        .expect("the node answers");
    assert_eq!(reply.result, AppendResult::Success { match_index: 4 });
    let result = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .expect("the write is answered once applied")
        .expect("the writer task does not panic");
    assert_eq!(result.map(|r| r.log_id), Ok(LogId::new(term, 3)));
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn follower_refuses_client_write_with_not_leader_and_leader_hint() {
    let events = Events::default();
    let raft = start(
        storage(&events, initialized(&[1, 2, 3]), Faults::default()),
        network(&events, false),
        Recorder::default(),
    )
    .await;
    // No leader known yet.
    let err = raft.client_write(1).await.unwrap_err();
    assert_eq!(err, ClientWriteError::NotLeader { leader_hint: None });
    assert!(err.is_safe_to_retry());

    let reply = raft
        .append_entries(AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![],
            leader_commit: 1,
            round: 0,
        })
        .await
        .expect("the node answers");
    assert_eq!(reply.result, AppendResult::Success { match_index: 1 });

    let err = raft.client_write(2).await.unwrap_err();
    assert_eq!(
        err,
        ClientWriteError::NotLeader {
            leader_hint: Some(2)
        }
    );
    assert!(err.is_safe_to_retry());
    assert!(
        !snapshot_of(&events)
            .iter()
            .any(|e| e.starts_with("append(")),
        "a follower must not append a refused write"
    );
    raft.shutdown().await;
}

// ----- rules 2 and 3 with appends in flight: the driver goes on while storage writes -----

/// How long each append takes in the tests of overlapping writes.
const SLOW_APPEND: Duration = Duration::from_millis(50);

/// Node 1 leading nodes 2 and 3, each of its appends taking [`SLOW_APPEND`]: node 2 accepts every
/// AppendEntries at once, node 3 is unreachable, votes are granted. Returns once the leader's blank
/// entry (index 2) is committed, with the leader's term.
async fn leader_with_slow_appends(events: &Events) -> (Raft<Recorder>, u64) {
    let raft = Raft::start(
        1,
        config(),
        slow_appends(events, initialized(&[1, 2, 3]), SLOW_APPEND),
        network_answering(events, true, &[2]),
        Recorder::default(),
    )
    .await
    .expect("the node starts");
    let term = wait_until_leader(&raft).await;
    let mut metrics = raft.metrics();
    tokio::time::timeout(
        Duration::from_secs(1),
        metrics.wait_for(|m| m.commit_index >= 2),
    )
    .await
    .expect("the blank entry commits")
    .expect("the node is running");
    (raft, term)
}

#[tokio::test(start_paused = true)]
async fn leader_replicates_while_its_own_append_is_in_flight_and_counts_itself_only_once_durable() {
    let events = Events::default();
    let (raft, term) = leader_with_slow_appends(&events).await;

    // Write 1 (entry 3): replicated to node 2 at once, while the leader's own append takes 50 ms.
    let first = tokio::spawn({
        let (raft, events) = (raft.clone(), Arc::clone(&events));
        async move {
            let resp = raft.client_write(1).await;
            record(&events, "answered(1)".into());
            resp
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Write 2 (entry 4), proposed while entry 3's append is in flight.
    let second = tokio::spawn({
        let (raft, events) = (raft.clone(), Arc::clone(&events));
        async move {
            let resp = raft.client_write(2).await;
            record(&events, "answered(2)".into());
            resp
        }
    });
    let first = first.await.expect("no panic").expect("write 1 succeeds");
    let second = second.await.expect("no panic").expect("write 2 succeeds");
    assert_eq!((first.log_id.index, second.log_id.index), (3, 4));
    let events = snapshot_of(&events);
    // Rule 3, pipelined: entry 4 left for node 2 before the leader's append of entry 3 was
    // durable, and entry 4 was appended after it (one append in flight at a time).
    assert_before(
        &events,
        &format!("append_entries(to=2, term={term}, last=4, entries=1)"),
        "append(3..=3)",
    );
    assert_before(&events, "append(3..=3)", "append(4..=4)");
    // Node 2 acknowledged entry 3 at once, but with node 3 unreachable the leader's own copy is
    // the second vote: write 1 is answered only once that copy is durable, and so is write 2.
    assert_before(&events, "append(3..=3)", "answered(1)");
    assert_before(&events, "append(4..=4)", "answered(2)");
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn follower_holds_every_reply_until_the_appends_before_it_are_durable() {
    let events = Events::default();
    let raft = Raft::start(
        1,
        config(),
        slow_appends(&events, initialized(&[1, 2, 3]), SLOW_APPEND),
        network(&events, false),
        Recorder::default(),
    )
    .await
    .expect("the node starts");
    let append = |raft: &Raft<Recorder>, name: &'static str, request| {
        let (raft, events) = (raft.clone(), Arc::clone(&events));
        tokio::spawn(async move {
            let reply = raft
                .append_entries(request)
                .await
                .expect("the node answers");
            record(&events, format!("reply({name}, {:?})", reply.result));
        })
    };
    // The new term and entries 2-3: the new term makes this output go in order.
    append(
        &raft,
        "first",
        AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(0, 1),
            entries: vec![command(1, 2, 7), command(1, 3, 8)],
            leader_commit: 1,
            round: 0,
        },
    )
    .await
    .expect("no panic");
    // Entries 4-5 (append in flight for 50 ms), then, 10 ms later, a heartbeat whose success
    // acknowledges entry 5 too: it must wait for that append, though it writes nothing itself.
    let entries = append(
        &raft,
        "entries",
        AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(1, 3),
            entries: vec![command(1, 4, 9), command(1, 5, 10)],
            leader_commit: 3,
            round: 1,
        },
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let heartbeat = append(
        &raft,
        "heartbeat",
        AppendEntriesRequest {
            term: 1,
            leader_id: 2,
            prev_log_id: LogId::new(1, 5),
            entries: vec![],
            leader_commit: 3,
            round: 2,
        },
    );
    entries.await.expect("no panic");
    heartbeat.await.expect("no panic");
    let events = snapshot_of(&events);
    assert_before(
        &events,
        "append(4..=5)",
        "reply(entries, Success { match_index: 5 })",
    );
    assert_before(
        &events,
        "append(4..=5)",
        "reply(heartbeat, Success { match_index: 5 })",
    );
    raft.shutdown().await;
}

/// A shutdown requested while an append is in flight (and another queued behind it) lets both
/// reach storage before the node lets go of it: a dropped append could leave half a batch behind.
#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_append_in_flight_and_the_one_queued() {
    let events = Events::default();
    let (raft, _) = leader_with_slow_appends(&events).await;

    // Entry 3's append starts at once and takes SLOW_APPEND; entry 4, proposed 10 ms later, is
    // queued behind it.
    let mut writes = Vec::new();
    for n in [1, 2] {
        let raft = raft.clone();
        writes.push(tokio::spawn(async move { raft.client_write(n).await }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !snapshot_of(&events)
            .iter()
            .any(|e| e.starts_with("append(3")),
        "the append must still be in flight when the shutdown is requested"
    );
    raft.shutdown().await;
    let events = snapshot_of(&events);
    let appended: Vec<&String> = events.iter().filter(|e| e.starts_with("append(")).collect();
    assert!(
        appended.iter().any(|e| e.starts_with("append(3..=")),
        "entry 3's append was dropped at shutdown: {events:?}"
    );
    assert!(
        appended.iter().any(|e| e.starts_with("append(4..=4)")),
        "entry 4, queued behind it, was dropped at shutdown: {events:?}"
    );
    for w in writes {
        // Each write is answered (applied, or failed because the node stopped), never left hanging.
        let _ = w.await.expect("no panic");
    }
}
