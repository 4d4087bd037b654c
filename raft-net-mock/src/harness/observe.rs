//! Wrappers that let the harness watch a node's storage and network, and crash it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, Entry, HardState, LogIndex,
    LogState, NetworkError, NodeId, RaftNetwork, RaftStorage, Snapshot, StorageError, VoteRequest,
    VoteResponse,
};

use super::world::{lock, Shared};
use super::LogStateMachine;
use crate::MockNetwork;

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
pub struct ObservedStorage<S> {
    inner: S,
    node: NodeId,
    world: Shared,
    power: PowerSwitch,
    latency: std::time::Duration,
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
    ) -> Self {
        ObservedStorage {
            inner,
            node,
            world,
            power,
            latency,
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
        Ok(())
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.before_write().await?;
        let last = snapshot.meta.last_log_id;
        self.inner.install_snapshot(snapshot).await?;
        lock(&self.world).on_install_snapshot(self.node, last);
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.check_power()?;
        self.inner.snapshot().await
    }
}

/// The network of a harness node: a [`MockNetwork`] whose answers the harness inspects (ordering
/// rules 1 and 2: a granted vote, and the entries a follower acknowledges, are durable on it by the
/// time the answer arrives), and which goes silent when the node crashes.
pub struct ObservedNetwork {
    inner: MockNetwork<LogStateMachine>,
    node: NodeId,
    world: Shared,
    power: PowerSwitch,
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
    ) -> Self {
        ObservedNetwork {
            inner,
            node,
            world,
            power,
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
        request: AppendEntriesRequest<u64>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        self.check_power(target)?;
        let term = request.term;
        // Keep only the ids: the request itself moves into the call.
        let sent: Vec<raft_core::LogId> = request.entries.iter().map(|e| e.log_id).collect();
        *lock(&self.world)
            .stats
            .entries_sent
            .entry((self.node, target))
            .or_default() += sent.len() as u64;
        let response = self.inner.append_entries(target, request).await?;
        self.check_power(target)?;
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
                // Rule 2: a follower acknowledges only entries it holds durably. Within one term nothing
                // can remove them again, so they must still be there if the follower is still in it.
                let problem = w.nodes.get(&target).and_then(|obs| {
                    if obs.hard_state.term != term {
                        return None;
                    }
                    sent.iter()
                        .filter(|id| id.index <= match_index && id.index > obs.base.index)
                        .find(|id| obs.entry(id.index).map(|e| e.log_id) != Some(**id))
                        .map(|id| (*id, obs.entry(id.index).map(|e| e.log_id)))
                });
                if let Some((id, held)) = problem {
                    w.violation(format!(
                        "ordering rule 2: node {target} acknowledged entries up to {match_index} in term {term} \
                         to node {}, but does not hold {id} durably (holds {held:?})",
                        self.node
                    ));
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
            // Rule 1: a vote is durable before the answer granting it leaves the voter. The driver
            // persists the last hard state of a batch, so a vote in term T may be superseded, in the
            // same batch, by a later term T' that is persisted instead: that is as good (the voter can
            // never vote in T again), provided it never durably voted for anyone else in T.
            let votes = w.durable_votes(term, target);
            let durable = w.nodes.get(&target).map(|obs| obs.hard_state);
            let superseded = votes.is_empty() && durable.is_some_and(|hs| hs.term > term);
            if response.term != term || (!votes.contains(&candidate) && !superseded) {
                w.violation(format!(
                    "ordering rule 1: node {target} granted its vote in term {term} (answer term {}) to {candidate}, \
                     but its durable votes in that term are {votes:?} (hard state now {durable:?})",
                    response.term
                ));
            }
        }
        Ok(response)
    }
}
