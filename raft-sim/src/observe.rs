//! Wrappers that let the harness watch a node's storage and network, and crash it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, Entry, HardState,
    InstallSnapshotRequest, InstallSnapshotResponse, LogId, LogIndex, LogState, NetworkError,
    NodeId, PreVoteRequest, PreVoteResponse, RaftNetwork, RaftStorage, ReadIndexRequest,
    ReadIndexResponse, Snapshot, SnapshotChunk, SnapshotResult, StorageError, TimeoutNowRequest,
    TimeoutNowResponse, VoteRequest, VoteResponse,
};

use crate::append_faults::{AppendFaults, SentAppend};
use crate::world::{lock, Shared};
use crate::LogStateMachine;
use raft_net_mock::MockNetwork;

/// A node's "power switch": once crashed, its storage refuses every call (nothing more becomes
/// durable) and its network sends nothing more.
#[derive(Clone, Debug, Default)]
pub(crate) struct PowerSwitch(Arc<AtomicBool>);

impl PowerSwitch {
    pub(crate) fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A [`RaftStorage`] that passes every call to the storage it wraps and reports what the storage
/// acknowledged (the durable state) to the harness, which checks the safety properties as the state
/// changes. Works over any storage, so the harness can run on the in-memory and the file storage
/// alike.
///
/// It also holds the storage to its contract: after every purge and snapshot it reads the log state
/// (and snapshot id) back and compares them with what the acknowledged calls imply, and every
/// snapshot chunk read must be the right slice of the snapshot it acknowledged last.
///
/// When the harness made the node's disk lose the tail of its log before this start
/// ([`Cluster::restart_with_lost_tail`](crate::Cluster::restart_with_lost_tail)), it reports the loss
/// from [`lost_entries_on_open`](RaftStorage::lost_entries_on_open), as a storage that cut entries
/// does; otherwise it reports what the wrapped storage reports.
pub struct ObservedStorage<S> {
    inner: S,
    node: NodeId,
    world: Shared,
    power: PowerSwitch,
    latency: std::time::Duration,
    lost_entries: bool,
}

impl<S> std::fmt::Debug for ObservedStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedStorage")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl<S: RaftStorage<u64>> ObservedStorage<S> {
    pub(crate) fn new(
        inner: S,
        node: NodeId,
        world: Shared,
        power: PowerSwitch,
        latency: std::time::Duration,
        lost_entries: bool,
    ) -> Self {
        ObservedStorage {
            inner,
            node,
            world,
            power,
            latency,
            lost_entries,
        }
    }

    /// Before a write: takes the configured (virtual) time, as a disk would, so that a crash can
    /// land in the middle of the driver's work; then refuses if the node has crashed meanwhile.
    async fn before_write(&mut self) -> Result<(), StorageError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.check_power()
    }

    fn check_power(&self) -> Result<(), StorageError> {
        if self.power.is_cut() {
            Err(StorageError::Other(
                format!("node {} has crashed (simulated)", self.node).into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: RaftStorage<u64>> RaftStorage<u64> for ObservedStorage<S> {
    async fn hard_state(&mut self) -> Result<HardState, StorageError> {
        self.check_power()?;
        self.inner.hard_state().await
    }

    async fn save_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        self.before_write().await?;
        self.inner.save_hard_state(state).await?;
        lock(&self.world).on_save_hard_state(self.node, *state);
        Ok(())
    }

    async fn log_state(&mut self) -> Result<LogState, StorageError> {
        self.check_power()?;
        self.inner.log_state().await
    }

    async fn entries(
        &mut self,
        start: LogIndex,
        end: LogIndex,
    ) -> Result<Vec<Entry<u64>>, StorageError> {
        self.check_power()?;
        self.inner.entries(start, end).await
    }

    async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError> {
        self.before_write().await?;
        self.inner.append(entries).await?;
        lock(&self.world).on_append(self.node, entries);
        Ok(())
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.before_write().await?;
        self.inner.truncate(from).await?;
        lock(&self.world).on_truncate(self.node, from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StorageError> {
        self.before_write().await?;
        self.inner.purge(upto).await?;
        lock(&self.world).on_purge(self.node, upto);
        self.read_back(&format!("purge({upto})")).await;
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.before_write().await?;
        // The snapshot is small (a `LogStateMachine` state); keep a copy for the model.
        let copy = snapshot.clone();
        self.inner.install_snapshot(snapshot).await?;
        lock(&self.world).on_install_snapshot(self.node, &copy);
        self.read_back(&format!("install_snapshot({})", copy.meta.last_log_id))
            .await;
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.check_power()?;
        self.inner.snapshot().await
    }

    async fn lost_entries_on_open(&mut self) -> Result<bool, StorageError> {
        self.check_power()?;
        Ok(self.lost_entries || self.inner.lost_entries_on_open().await?)
    }

    async fn snapshot_chunk(
        &mut self,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
    ) -> Result<Option<SnapshotChunk>, StorageError> {
        self.check_power()?;
        let chunk = self.inner.snapshot_chunk(snapshot, offset, max_len).await?;
        lock(&self.world).on_snapshot_chunk(self.node, snapshot, offset, max_len, &chunk);
        Ok(chunk)
    }
}

impl<S: RaftStorage<u64>> ObservedStorage<S> {
    /// After `what` was acknowledged: reads the storage's log state and snapshot id back for the
    /// model to compare (a failed read is a violation too; the node's own call already succeeded).
    async fn read_back(&mut self, what: &str) {
        let read = async {
            let log = self.inner.log_state().await?;
            let snapshot = self.inner.snapshot().await?;
            Ok::<_, StorageError>((log, snapshot.map(|s| s.meta.last_log_id)))
        };
        let result = read.await;
        let mut w = lock(&self.world);
        match result {
            Ok((log, snapshot)) => w.on_storage_readback(self.node, what, log, snapshot),
            Err(e) => w.violation(format!(
                "storage: node {} could not read its state back after {what}: {e}",
                self.node
            )),
        }
    }
}

/// The network of a harness node: a [`MockNetwork`] whose answers the harness inspects (ordering
/// rules 1 and 2: a granted vote, the entries a follower acknowledges, and a snapshot it says it
/// installed, are durable on it by the time the answer arrives), and which goes silent when the node
/// crashes. It counts InstallSnapshot requests and answers per `(leader, follower)` in
/// [`HarnessStats`](crate::HarnessStats).
///
/// It also applies the cluster's AppendEntries faults (a request may leave with its entries cut to a
/// shorter prefix) and reports every answer to them, for the old-term majority signal (see
/// [`ClusterOptions::append_truncation`](crate::ClusterOptions::append_truncation) and
/// [`Cluster::wait_old_term_majority`](crate::Cluster::wait_old_term_majority)).
pub struct ObservedNetwork {
    inner: MockNetwork<LogStateMachine>,
    node: NodeId,
    world: Shared,
    power: PowerSwitch,
    append_faults: Arc<AppendFaults>,
}

impl std::fmt::Debug for ObservedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedNetwork")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl ObservedNetwork {
    pub(crate) fn new(
        inner: MockNetwork<LogStateMachine>,
        node: NodeId,
        world: Shared,
        power: PowerSwitch,
        append_faults: Arc<AppendFaults>,
    ) -> Self {
        ObservedNetwork {
            inner,
            node,
            world,
            power,
            append_faults,
        }
    }

    fn check_power(&self, target: NodeId) -> Result<(), NetworkError> {
        if self.power.is_cut() {
            Err(NetworkError::Unreachable {
                target,
                reason: format!("node {} has crashed (simulated)", self.node),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl RaftNetwork<u64> for ObservedNetwork {
    async fn append_entries(
        &self,
        target: NodeId,
        mut request: AppendEntriesRequest<u64>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        self.check_power(target)?;
        if self.append_faults.take_broken(self.node, target) {
            return Err(NetworkError::Unreachable {
                target,
                reason: "link broken after a truncated AppendEntries (simulated)".into(),
            });
        }
        let term = request.term;
        let leader_commit = request.leader_commit;
        // Whether the leader's commit index is at an entry of its own term: only then does a
        // follower that holds it catch up (the engine's rule).
        let commit_of_this_term = {
            let in_request = if leader_commit == request.prev_log_id.index {
                Some(request.prev_log_id)
            } else {
                request
                    .entries
                    .iter()
                    .find(|e| e.log_id.index == leader_commit)
                    .map(|e| e.log_id)
            };
            let w = lock(&self.world);
            let id = in_request.or_else(|| {
                let leader = w.record.nodes.get(&self.node)?;
                w.record.id_at(leader, leader_commit)
            });
            id.is_some_and(|id| id.term == term)
        };
        let incarnation = lock(&self.world).incarnation(target);
        let truncated = self.append_faults.maybe_truncate(&mut request.entries);
        // Keep only the ids: the request itself moves into the call.
        let sent = SentAppend::of(&request);
        *lock(&self.world)
            .stats
            .entries_sent
            .entry((self.node, target))
            .or_default() += sent.entries().len() as u64;
        let response = self.inner.append_entries(target, request).await?;
        self.check_power(target)?;
        if response.term == term {
            self.append_faults
                .on_answer(self.node, target, &sent, truncated, &response.result);
        }
        let mut w = lock(&self.world);
        w.stats.append_responses += 1;
        if !matches!(response.result, AppendResult::Success { .. }) {
            w.trace(|| {
                format!(
                    "node {}: append to {target} in term {term}: {response:?}",
                    self.node
                )
            });
        }
        match response.result {
            AppendResult::Conflict { .. } => {
                *w.stats
                    .append_conflicts
                    .entry((self.node, target))
                    .or_default() += 1;
            }
            AppendResult::Success { match_index } if response.term == term => {
                w.on_entries_acknowledged(self.node, target, term, sent.entries(), match_index);
                // Answered by the incarnation that runs now only if none started since it was sent.
                if commit_of_this_term
                    && incarnation.is_some()
                    && w.incarnation(target) == incarnation
                {
                    w.on_catch_up_answer(target, leader_commit, match_index);
                }
            }
            _ => {}
        }
        Ok(response)
    }

    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError> {
        self.check_power(target)?;
        let term = request.term;
        let candidate = request.candidate_id;
        let candidate_last = request.last_log_id;
        let response = self.inner.vote(target, request).await?;
        self.check_power(target)?;
        let mut w = lock(&self.world);
        w.stats.vote_responses += 1;
        w.trace(|| {
            format!(
                "node {}: vote from {target} in term {term}: {response:?}",
                self.node
            )
        });
        if response.vote_granted {
            w.on_vote_granted(target, term, candidate, response.term);
        } else {
            w.on_vote_refused(target, term, candidate, candidate_last);
        }
        Ok(response)
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        request: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        self.check_power(target)?;
        let (term, candidate, candidate_last) =
            (request.term, request.candidate_id, request.last_log_id);
        let response = self.inner.pre_vote(target, request).await?;
        self.check_power(target)?;
        let mut w = lock(&self.world);
        w.trace(|| {
            format!(
                "node {}: pre-vote from {target} for term {term}: {response:?}",
                self.node
            )
        });
        if !response.vote_granted {
            // A pre-vote refused is the vote that would have been refused: with pre-votes on, a
            // candidate that cannot win never asks for real votes.
            w.on_vote_refused(target, term, candidate, candidate_last);
        }
        Ok(response)
    }

    async fn read_index(
        &self,
        target: NodeId,
        request: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError> {
        self.check_power(target)?;
        let response = self.inner.read_index(target, request).await?;
        self.check_power(target)?;
        Ok(response)
    }

    async fn timeout_now(
        &self,
        target: NodeId,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        self.check_power(target)?;
        let term = request.term;
        let response = self.inner.timeout_now(target, request).await?;
        self.check_power(target)?;
        lock(&self.world).trace(|| {
            format!(
                "node {}: TimeoutNow to {target} in term {term}: {response:?}",
                self.node
            )
        });
        Ok(response)
    }
    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        self.check_power(target)?;
        let term = request.term;
        let (offset, len, done) = (request.offset, request.data.len(), request.done);
        let snapshot = request.meta.last_log_id;
        {
            let mut w = lock(&self.world);
            *w.stats
                .snapshot_chunks_sent
                .entry((self.node, target))
                .or_default() += 1;
            w.trace(|| {
                format!(
                    "node {}: snapshot chunk of {snapshot} to {target} in term {term}: offset {offset}, {len} \
                     bytes, done {done}",
                    self.node
                )
            });
        }
        let response = self.inner.install_snapshot(target, request).await?;
        self.check_power(target)?;
        let mut w = lock(&self.world);
        *w.stats
            .snapshot_chunks_answered
            .entry((self.node, target))
            .or_default() += 1;
        w.trace(|| {
            format!(
                "node {}: snapshot chunk of {snapshot} at {offset} to {target}: {response:?}",
                self.node
            )
        });
        if let SnapshotResult::Installed {
            snapshot: installed,
        } = response.result
        {
            *w.stats
                .snapshots_installed
                .entry((self.node, target))
                .or_default() += 1;
            if response.term == term {
                w.on_snapshot_installed(self.node, target, term, installed);
            }
        }
        Ok(response)
    }
}
