//! The driver (`Raft::start`, the production executor of the engine's output) and the reference
//! executor (`engine::testing::Executor`), fed the same inputs, make the same storage writes, send
//! the same requests, release the same replies and apply the same entries, in the same order.
//!
//! Each scenario runs node 1 twice from the same stored state: under the driver, on tokio's paused
//! clock (current-thread runtime), and on the executor. Every step feeds one input to both (a
//! request through the `Raft` handle, a peer's answer, a proposal, a snapshot, or time reaching the
//! engine's next deadline), lets the driver settle, and compares what each did in that step.
//!
//! What the driver did is read from one log shared by its storage, network and state machine:
//! * storage is the executor's own [`DurableStore`] behind the `RaftStorage` trait; every write
//!   first yields to the other tasks (as a disk write would, without letting virtual time pass) and
//!   is recorded once done;
//! * the network records each request and parks it until the scenario answers it (so the driver's
//!   batches are the scenario's steps, and no RPC times out);
//! * the state machine records each applied batch and each restore.
//!
//! Requests, replies and applies run on tasks of their own (one per peer, the caller's, the apply
//! task), so the driver defines their order only relative to its storage writes, and per peer. The
//! comparison is therefore of *segments*: the storage writes in order, and between two writes, the
//! requests sent to each peer (in order), the replies released and the state machine's work. A
//! request, reply or apply on the wrong side of a storage write — a step of the contract out of
//! order — makes the segments differ.
//!
//! Timeouts are long (a minute and more), so that only the steps that wait for the engine's next
//! deadline fire a timer, and the executor is ticked with the driver's time before each input, as
//! the driver ticks its engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use raft_core::engine::testing::{DurableStore, Effect, Executed, Executor};
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, Config, Entry, EntryPayload,
    HardState, InstallSnapshotRequest, InstallSnapshotResponse, LogId, LogIndex, LogState,
    Membership, NetworkError, NodeId, PreVoteRequest, PreVoteResponse, Raft, RaftNetwork,
    RaftStorage, ReadIndexRequest, ReadIndexResponse, Request, Response, Snapshot, SnapshotChunk,
    SnapshotMeta, SnapshotPolicy, SnapshotResult, StateMachine, StateMachineError, StorageError,
    TimeoutNowRequest, TimeoutNowResponse, VoteRequest, VoteResponse,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ----- what is observed -----

/// A storage write, as both executors make it.
#[derive(Clone, Debug, PartialEq)]
enum Write {
    SaveHardState(HardState),
    InstallSnapshot(SnapshotMeta),
    Purge(LogIndex),
    Truncate(LogIndex),
    Append(Vec<Entry<u64>>),
}

/// What the state machine was asked to do.
#[derive(Clone, Debug, PartialEq)]
enum StateMachineWork {
    Restore(LogId),
    Apply(Vec<LogId>),
}

/// One observed event, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
enum Seen {
    Write(Write),
    Send(NodeId, Request<u64>),
    Reply(Response),
    StateMachine(StateMachineWork),
}

/// The events up to a storage write (or to the end of the step): what is ordered only relative to
/// storage writes is grouped by the task that carries it, in that task's order.
#[derive(Debug, Default, PartialEq)]
struct Segment {
    sends: BTreeMap<NodeId, Vec<Request<u64>>>,
    replies: Vec<Response>,
    state_machine: Vec<StateMachineWork>,
    /// The write that ends the segment; `None` for the last one.
    then: Option<Write>,
}

fn segments(events: impl IntoIterator<Item = Seen>) -> Vec<Segment> {
    let mut out = vec![Segment::default()];
    for event in events {
        let Some(current) = out.last_mut() else {
            unreachable!("out starts with a segment and only grows")
        };
        match event {
            Seen::Write(w) => {
                current.then = Some(w);
                out.push(Segment::default());
            }
            Seen::Send(to, request) => current.sends.entry(to).or_default().push(request),
            Seen::Reply(r) => current.replies.push(r),
            Seen::StateMachine(work) => current.state_machine.push(work),
        }
    }
    out
}

/// The executor's effects as the driver's log would show them.
fn seen_of(executed: &Executed<u64>) -> Vec<Seen> {
    executed
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::SaveHardState(hs) => Some(Seen::Write(Write::SaveHardState(*hs))),
            Effect::InstallSnapshot { meta, .. } => {
                Some(Seen::Write(Write::InstallSnapshot(meta.clone())))
            }
            Effect::Purge(upto) => Some(Seen::Write(Write::Purge(*upto))),
            Effect::Truncate { from, .. } => Some(Seen::Write(Write::Truncate(*from))),
            Effect::Append(entries) => Some(Seen::Write(Write::Append(entries.clone()))),
            Effect::Send { to, request } => Some(Seen::Send(*to, request.clone())),
            Effect::Reply(r) => Some(Seen::Reply(r.clone())),
            Effect::Restore(meta) => Some(Seen::StateMachine(StateMachineWork::Restore(
                meta.last_log_id,
            ))),
            Effect::Apply(entries) => Some(Seen::StateMachine(StateMachineWork::Apply(
                entries.iter().map(|e| e.log_id).collect(),
            ))),
            // The driver reports it to its engine and sends nothing: seen as a send missing.
            Effect::SnapshotSendFailed { .. } => None,
            // Callers' reads are answered off the log the comparison reads.
            Effect::ReadReady(_) | Effect::ReadFailed(_) => None,
        })
        .collect()
}

/// The log the driver's storage, network and state machine write to.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn push(&self, event: Seen) {
        lock(&self.0).push(event);
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *lock(&self.0))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ----- the driver's storage: the executor's store, recorded -----

struct RecordingStorage {
    store: Arc<Mutex<DurableStore<u64>>>,
    log: Log,
}

impl RecordingStorage {
    /// Lets the tasks the driver woke run first (as a write to disk would), then applies `write` to
    /// the store and records it.
    ///
    /// The wait is a task spawned now and awaited: the current-thread scheduler runs it after the
    /// tasks woken before it, however often the driver polls the write meanwhile (it polls a
    /// background append once at once, then from its loop).
    async fn write<T>(
        &mut self,
        record: Write,
        write: impl FnOnce(&mut DurableStore<u64>) -> Result<T, String>,
    ) -> Result<T, StorageError> {
        tokio::spawn(async {})
            .await
            .map_err(|e| StorageError::InvalidRequest(e.to_string()))?;
        let result = write(&mut lock(&self.store)).map_err(StorageError::InvalidRequest)?;
        self.log.push(Seen::Write(record));
        Ok(result)
    }
}

#[async_trait]
impl RaftStorage<u64> for RecordingStorage {
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        Ok(lock(&self.store).hard_state())
    }

    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        let state = *state;
        self.write(Write::SaveHardState(state), |s| {
            s.save_hard_state(state);
            Ok(())
        })
        .await
    }

    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        let store = lock(&self.store);
        Ok(LogState {
            last_purged: store.log_base(),
            last_log_id: store.last_log_id(),
        })
    }

    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<u64>>, StorageError> {
        let store = lock(&self.store);
        if start <= store.log_base().index {
            return Err(StorageError::Compacted {
                compacted_upto: store.log_base().index,
                requested: start,
            });
        }
        (start..end)
            .map(|i| {
                store.entry(i).cloned().ok_or_else(|| {
                    StorageError::InvalidRequest(format!("no entry {i} in {start}..{end}"))
                })
            })
            .collect()
    }

    async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError> {
        let entries = entries.to_vec();
        self.write(Write::Append(entries.clone()), |s| {
            s.append(&entries).map_err(|e| e.to_string())
        })
        .await
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.write(Write::Truncate(from), |s| {
            s.truncate(from).map(drop).map_err(|e| e.to_string())
        })
        .await
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        self.write(Write::Purge(upto), |s| {
            s.purge(upto).map_err(|e| e.to_string())
        })
        .await
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.write(Write::InstallSnapshot(snapshot.meta.clone()), |s| {
            s.install_snapshot(snapshot);
            Ok(())
        })
        .await
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(lock(&self.store).snapshot().cloned())
    }

    async fn snapshot_chunk(
        &mut self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        Ok(lock(&self.store).snapshot_chunk(snapshot, offset, max_len))
    }
}

// ----- the driver's network: every request waits for the scenario's answer -----

/// A request waiting for its answer.
struct Waiting {
    to: NodeId,
    request: Request<u64>,
    answer: oneshot::Sender<Response>,
}

#[derive(Clone, Default)]
struct ParkingNetwork {
    log: Log,
    waiting: Arc<Mutex<Vec<Waiting>>>,
}

impl ParkingNetwork {
    async fn call(&self, to: NodeId, request: Request<u64>) -> Result<Response, NetworkError> {
        let (answer, answered) = oneshot::channel();
        self.log.push(Seen::Send(to, request.clone()));
        lock(&self.waiting).push(Waiting {
            to,
            request,
            answer,
        });
        answered.await.map_err(|_| NetworkError::Unreachable {
            target: to,
            reason: "the scenario ended".into(),
        })
    }

    /// Answers the oldest request to `from` of the kind `response` answers; false if there is none.
    fn answer(&self, from: NodeId, response: Response) -> bool {
        let mut waiting = lock(&self.waiting);
        let answers = |request: &Request<u64>| {
            matches!(
                (request, &response),
                (Request::Vote(_), Response::Vote(_))
                    | (Request::PreVote(_), Response::PreVote(_))
                    | (Request::TimeoutNow(_), Response::TimeoutNow(_))
                    | (Request::AppendEntries(_), Response::AppendEntries(_))
                    | (Request::InstallSnapshot(_), Response::InstallSnapshot(_))
            )
        };
        let Some(pos) = waiting
            .iter()
            .position(|w| w.to == from && answers(&w.request))
        else {
            return false;
        };
        waiting.remove(pos).answer.send(response).is_ok()
    }
}

fn wrong_answer(target: NodeId, got: Response) -> NetworkError {
    NetworkError::InvalidResponse {
        target,
        reason: format!("answered with {got:?}"),
    }
}

#[async_trait]
impl RaftNetwork<u64> for ParkingNetwork {
    async fn append_entries(
        &self,
        target: NodeId,
        request: AppendEntriesRequest<u64>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        match self.call(target, Request::AppendEntries(request)).await? {
            Response::AppendEntries(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }

    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError> {
        match self.call(target, Request::Vote(request)).await? {
            Response::Vote(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        request: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        match self.call(target, Request::PreVote(request)).await? {
            Response::PreVote(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }

    async fn timeout_now(
        &self,
        target: NodeId,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        match self.call(target, Request::TimeoutNow(request)).await? {
            Response::TimeoutNow(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        match self.call(target, Request::InstallSnapshot(request)).await? {
            Response::InstallSnapshot(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }

    async fn read_index(
        &self,
        target: NodeId,
        request: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError> {
        match self.call(target, Request::ReadIndex(request)).await? {
            Response::ReadIndex(r) => Ok(r),
            other => Err(wrong_answer(target, other)),
        }
    }
}

// ----- the driver's state machine -----

/// The snapshot data of a state machine that applied everything up to `last`.
fn snapshot_data(last: LogId) -> Vec<u8> {
    format!("the state up to {last}").into_bytes()
}

/// Records each applied batch and each restore; its snapshot is [`snapshot_data`]. In memory: a
/// restart starts it empty.
struct Recorder {
    log: Log,
    last: LogId,
}

#[async_trait]
impl StateMachine for Recorder {
    type Command = u64;
    type Response = LogIndex;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<LogIndex>, StateMachineError> {
        let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
        if let Some(&last) = ids.last() {
            self.last = last;
        }
        self.log
            .push(Seen::StateMachine(StateMachineWork::Apply(ids)));
        Ok(entries.iter().map(|e| e.log_id.index).collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(snapshot_data(self.last))
    }

    async fn restore(&mut self, meta: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        self.last = meta.last_log_id;
        self.log.push(Seen::StateMachine(StateMachineWork::Restore(
            meta.last_log_id,
        )));
        Ok(())
    }
}

// ----- both executors, in lockstep -----

/// Node 1 under the driver and on the reference executor, fed the same inputs step by step.
struct Lockstep {
    raft: Raft<Recorder>,
    driver_store: Arc<Mutex<DurableStore<u64>>>,
    network: ParkingNetwork,
    log: Log,
    executor: Executor<u64>,
    /// The driver's epoch: its engine's time 0.
    t0: Instant,
    /// Client writes under the driver, with the log id the executor's engine gave the proposal.
    writes: Vec<(LogId, JoinHandle<Result<LogIndex, String>>)>,
}

impl Lockstep {
    async fn start(config: Config, store: DurableStore<u64>) -> Self {
        let log = Log::default();
        let driver_store = Arc::new(Mutex::new(store.clone()));
        let network = ParkingNetwork {
            log: log.clone(),
            waiting: Arc::default(),
        };
        let storage = RecordingStorage {
            store: Arc::clone(&driver_store),
            log: log.clone(),
        };
        let state_machine = Recorder {
            log: log.clone(),
            last: LogId::default(),
        };
        let t0 = Instant::now();
        let raft = Raft::start(1, config.clone(), storage, network.clone(), state_machine)
            .await
            .expect("the node starts");
        assert_eq!(Instant::now(), t0, "starting takes no virtual time");
        let executor = Executor::new(1, &config, store, 0);
        Lockstep {
            raft,
            driver_store,
            network,
            log,
            executor,
            t0,
            writes: Vec::new(),
        }
    }

    /// The driver's time, as its engine sees it.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).expect("a short test")
    }

    /// Lets every task run until nothing is left to do (time moves on by a millisecond, far from
    /// any deadline).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// A peer's request to node 1, through the `Raft` handle.
    async fn request(&mut self, step: &str, request: Request<u64>) {
        let now = self.now_ms();
        // The driver moves its engine's clock before it hands it a request (no timer fires), and
        // ticks it before executing.
        self.executor.engine_mut().advance_clock(now);
        self.executor.receive(request.clone());
        self.executor.engine_mut().tick(now);
        let executed = self.executor.flush().expect("the contract holds");

        let reply = match request {
            Request::Vote(r) => self.raft.vote(r).await.map(Response::Vote),
            Request::PreVote(r) => self.raft.pre_vote(r).await.map(Response::PreVote),
            Request::TimeoutNow(r) => self.raft.timeout_now(r).await.map(Response::TimeoutNow),
            Request::AppendEntries(r) => self
                .raft
                .append_entries(r)
                .await
                .map(Response::AppendEntries),
            Request::InstallSnapshot(r) => self
                .raft
                .install_snapshot(r)
                .await
                .map(Response::InstallSnapshot),
            Request::ReadIndex(r) => self
                .raft
                .read_index_request(r)
                .await
                .map(Response::ReadIndex),
        }
        .expect("the node runs");
        self.log.push(Seen::Reply(reply));
        Self::settle().await;
        self.compare(step, &executed);
    }

    /// `from`'s answer to the oldest request node 1 sent it that `response` answers.
    async fn answer(&mut self, step: &str, from: NodeId, response: Response) {
        let now = self.now_ms();
        assert!(
            self.network.answer(from, response.clone()),
            "step `{step}`: the driver sent node {from} no request this answers"
        );
        Self::settle().await;
        self.executor.engine_mut().advance_clock(now);
        self.executor.handle_response(from, response);
        self.executor.engine_mut().tick(now);
        let executed = self.executor.flush().expect("the contract holds");
        self.compare(step, &executed);
    }

    /// A client write of `command` at node 1.
    async fn propose(&mut self, step: &str, command: u64) {
        let now = self.now_ms();
        let at = self
            .executor
            .engine_mut()
            .propose(command)
            .expect("node 1 leads");
        self.executor.engine_mut().tick(now);
        let executed = self.executor.flush().expect("the contract holds");

        let raft = self.raft.clone();
        let write = tokio::spawn(async move {
            raft.client_write(command)
                .await
                .map(|r| r.data)
                .map_err(|e| e.to_string())
        });
        self.writes.push((at, write));
        Self::settle().await;
        self.compare(step, &executed);
    }

    /// A snapshot of the state machine as it stands.
    async fn snapshot(&mut self, step: &str) {
        let now = self.now_ms();
        let last = self.executor.state_machine().last_applied();
        assert!(self
            .executor
            .engine_mut()
            .snapshot_built(last, snapshot_data(last)));
        self.executor.engine_mut().tick(now);
        let executed = self.executor.flush().expect("the contract holds");

        let built = self.raft.trigger_snapshot().await.expect("the node runs");
        assert_eq!(built, Some(last), "step `{step}`");
        Self::settle().await;
        self.compare(step, &executed);
    }

    /// Time reaches the engine's next deadline (an election, a heartbeat).
    async fn timer(&mut self, step: &str) {
        let deadline = self.executor.engine().next_deadline();
        assert!(
            deadline > self.now_ms(),
            "step `{step}`: the deadline passed"
        );
        tokio::time::sleep_until(self.t0 + Duration::from_millis(deadline)).await;
        self.executor.engine_mut().tick(deadline);
        let executed = self.executor.flush().expect("the contract holds");
        Self::settle().await;
        self.compare(step, &executed);
    }

    /// What the driver did since the last step is what the executor did in this one; and both
    /// engines stand in the same place.
    fn compare(&mut self, step: &str, executed: &Executed<u64>) {
        let driver = segments(self.log.take());
        let reference = segments(seen_of(executed));
        assert_eq!(
            driver, reference,
            "step `{step}`: the driver (left) and the executor (right) differ"
        );
        let metrics = self.raft.metrics().borrow().clone();
        let engine = self.executor.engine();
        assert_eq!(
            (
                metrics.role,
                metrics.current_term,
                metrics.current_leader,
                metrics.last_log_id,
                metrics.commit_index,
                metrics.snapshot,
            ),
            (
                engine.role(),
                engine.term(),
                engine.leader(),
                engine.last_log_id(),
                engine.commit_index(),
                engine.snapshot_meta().last_log_id,
            ),
            "step `{step}`: the engines differ"
        );
        assert_eq!(
            metrics.last_applied,
            self.executor.state_machine().last_applied().index,
            "step `{step}`: the state machines differ"
        );
    }

    /// Ends the run: both stores hold the same, and every client write the executor applied was
    /// answered by the driver with its entry.
    async fn finish(self) {
        assert_eq!(
            *lock(&self.driver_store),
            *self.executor.durable(),
            "the stores differ at the end"
        );
        let applied = self.executor.state_machine().last_applied().index;
        for (at, write) in self.writes {
            if at.index <= applied {
                assert!(write.is_finished(), "the write at {at} is not answered");
                let answer = write.await.expect("the writer does not panic");
                assert_eq!(answer, Ok(at.index), "the write at {at}");
            }
        }
        self.raft.shutdown().await;
    }
}

// ----- building blocks -----

/// Timeouts far longer than a scenario's steps: only [`Lockstep::timer`] fires a timer, and no RPC
/// times out. Snapshots only when asked, in chunks of 8 bytes. Elections without a pre-vote round,
/// so a timer sends the vote requests the scenarios answer.
fn config(snapshot_keep_entries: u64) -> Config {
    Config {
        pre_vote: false,
        election_timeout_min: Duration::from_secs(60),
        election_timeout_max: Duration::from_secs(120),
        heartbeat_interval: Duration::from_secs(30),
        rpc_timeout: Duration::from_secs(3600),
        snapshot_policy: SnapshotPolicy::Never,
        snapshot_keep_entries,
        snapshot_chunk_size: 8,
        seed: 3,
        ..Config::default()
    }
}

/// A store holding only the membership entry of `voters` (an initialized node).
fn initialized(voters: &[NodeId]) -> DurableStore<u64> {
    let membership = Entry {
        log_id: LogId::new(0, 1),
        payload: EntryPayload::Membership(Box::new(Membership::new(voters.iter().copied()))).into(),
    };
    DurableStore::from_log(HardState::default(), vec![membership]).expect("a log from index 1")
}

fn command(term: u64, index: LogIndex) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(index * 10).into(),
    }
}

fn vote(term: u64, candidate_id: NodeId, last: (u64, LogIndex)) -> Request<u64> {
    Request::Vote(VoteRequest {
        term,
        candidate_id,
        last_log_id: LogId::new(last.0, last.1),
        leadership_transfer: false,
    })
}

fn append(
    term: u64,
    leader_id: NodeId,
    prev: (u64, LogIndex),
    entries: Vec<Entry<u64>>,
    leader_commit: LogIndex,
) -> Request<u64> {
    Request::AppendEntries(AppendEntriesRequest {
        term,
        leader_id,
        prev_log_id: LogId::new(prev.0, prev.1),
        entries,
        leader_commit,
        round: 0,
    })
}

fn snapshot_chunk(
    term: u64,
    leader_id: NodeId,
    data: &[u8],
    offset: usize,
    done: bool,
) -> Request<u64> {
    Request::InstallSnapshot(InstallSnapshotRequest {
        term,
        leader_id,
        meta: SnapshotMeta {
            last_log_id: LogId::new(2, 10),
            membership: Membership::new([1, 2, 3]),
        },
        offset: offset as u64,
        data: data.to_vec(),
        done,
    })
}

fn appended(term: u64, match_index: LogIndex) -> Response {
    Response::AppendEntries(AppendEntriesResponse {
        term,
        result: AppendResult::Success { match_index },
        round: 0,
    })
}

// ----- scenarios -----

#[tokio::test(start_paused = true)]
async fn a_follower_votes_appends_truncates_and_installs_a_snapshot_alike() {
    let mut run = Lockstep::start(config(0), initialized(&[1, 2, 3])).await;
    run.request("vote granted", vote(1, 2, (0, 1))).await;
    run.request("second candidate refused", vote(1, 3, (0, 1)))
        .await;
    run.request(
        "entries of leader 2",
        append(
            1,
            2,
            (0, 1),
            vec![command(1, 2), command(1, 3), command(1, 4)],
            1,
        ),
    )
    .await;
    run.request(
        "leader 3 replaces index 3 and commits",
        append(2, 3, (1, 2), vec![command(2, 3)], 3),
    )
    .await;
    run.request("stale leader refused", append(1, 2, (1, 4), vec![], 4))
        .await;
    run.request("conflicting prev refused", append(2, 3, (1, 3), vec![], 3))
        .await;
    let data = b"a snapshot up to 2-10".to_vec();
    run.request(
        "snapshot chunk 1 of 2",
        snapshot_chunk(2, 3, &data[..12], 0, false),
    )
    .await;
    run.request(
        "snapshot chunk 2 of 2: installed",
        snapshot_chunk(2, 3, &data[12..], 12, true),
    )
    .await;
    run.request(
        "entries after the snapshot",
        append(2, 3, (2, 10), vec![command(2, 11), command(2, 12)], 11),
    )
    .await;
    run.request("candidate with a shorter log refused", vote(3, 2, (2, 11)))
        .await;
    run.request(
        "heartbeat of the new term commits",
        append(3, 2, (2, 12), vec![], 12),
    )
    .await;
    run.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_single_node_leader_appends_applies_and_compacts_alike() {
    let mut run = Lockstep::start(config(2), initialized(&[1])).await;
    run.timer("elected alone").await;
    for command in 1..=4 {
        run.propose("a proposal", command).await;
    }
    run.snapshot("a snapshot, the log purged").await;
    run.propose("a proposal after the snapshot", 5).await;
    run.timer("heartbeat time (no peers)").await;
    run.finish().await;
}

fn chunk_taken(snapshot: LogId, offset: u64) -> Response {
    Response::InstallSnapshot(InstallSnapshotResponse {
        term: 1,
        result: SnapshotResult::Accepted {
            snapshot,
            offset,
            next_offset: offset + 8,
        },
    })
}

#[tokio::test(start_paused = true)]
async fn a_leader_replicates_and_sends_a_snapshot_in_chunks_alike() {
    let mut run = Lockstep::start(config(0), initialized(&[1, 2, 3])).await;
    run.timer("election timeout: vote requests").await;
    run.answer(
        "node 2 grants: leader",
        2,
        Response::Vote(VoteResponse {
            term: 1,
            vote_granted: true,
        }),
    )
    .await;
    run.answer("node 2 holds the blank: committed", 2, appended(1, 2))
        .await;
    for (command, index) in [(7, 3), (8, 4)] {
        run.propose("a proposal, pipelined to node 2", command)
            .await;
        run.answer("node 2 holds it", 2, appended(1, index)).await;
    }
    run.snapshot("a snapshot covering everything").await;
    // Node 3 answers the first AppendEntries at last: it holds nothing, which is compacted away.
    run.answer(
        "node 3 lacks everything: the snapshot's first chunk",
        3,
        Response::AppendEntries(AppendEntriesResponse {
            term: 1,
            result: AppendResult::Conflict {
                rejected_index: 1,
                conflict_term: None,
                conflict_index: 1,
            },
            round: 0,
        }),
    )
    .await;
    let first = LogId::new(1, 4);
    run.answer(
        "node 3 takes it: the second chunk",
        3,
        chunk_taken(first, 0),
    )
    .await;
    run.propose("a proposal, to node 2 only", 9).await;
    run.answer("node 2 holds it", 2, appended(1, 5)).await;
    run.snapshot("a newer snapshot: stored, and its first chunk read back")
        .await;
    run.answer(
        "node 3 takes the old snapshot's chunk: ignored",
        3,
        chunk_taken(first, 8),
    )
    .await;
    let second = LogId::new(1, 5);
    let size = snapshot_data(second).len() as u64;
    let mut offset = 0;
    while offset + 8 < size {
        run.answer(
            "node 3 takes a chunk: the next one",
            3,
            chunk_taken(second, offset),
        )
        .await;
        offset += 8;
    }
    run.answer(
        "node 3 installs it",
        3,
        Response::InstallSnapshot(InstallSnapshotResponse {
            term: 1,
            result: SnapshotResult::Installed { snapshot: second },
        }),
    )
    .await;
    run.propose("a proposal to both followers", 10).await;
    run.timer("heartbeats").await;
    run.finish().await;
}
