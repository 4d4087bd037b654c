//! The async node: a cheap, cloneable [`Raft`] handle in front of a driver task that owns the
//! [`Engine`](crate::Engine), storage and network, and an apply task that owns the state machine.
//!
//! # Ordering rules the driver keeps
//! 1. A new term or vote is durable before any message that depends on it leaves the node.
//! 2. A follower's entries are durable before it answers AppendEntries with success.
//! 3. A leader sends AppendEntries before its own append is durable, and counts itself toward the
//!    commit quorum only once it is.
//! 4. Entries are applied once, in order, only when committed, on the apply task.
//! 5. A client hears success only after its entry is applied. If the leader loses office first, the
//!    write stays pending: the client hears success if the entry commits under the next leader and
//!    this node applies it, and [`ClientWriteError::OutcomeUnknown`] if another entry takes its
//!    place or nothing is learned within `2 x election_timeout_max` (the entry may still commit);
//!    never `NotLeader`.

mod apply;
mod disk;
mod driver;
mod figures;
mod histogram;
mod membership;
mod metrics;
mod peers;
mod proposal;
mod reads;
mod snapshot_trigger;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use histogram::{LatencyHistogram, LATENCY_BOUNDS_US};
pub use metrics::{LatencyStats, Metrics, NodeStatus, ProposalStats, SnapshotStats};
pub use proposal::{Proposal, ProposalResult};

use crate::config::Config;
use crate::error::{
    ClientWriteError, InitializeError, ReadError, StartError, StoppedError, TransferError,
};
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    PreVoteRequest, PreVoteResponse, TimeoutNowRequest, TimeoutNowResponse, VoteRequest,
    VoteResponse,
};
use crate::network::RaftNetwork;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::types::{LogId, LogIndex, Membership, NodeId, Role};

/// A client write's result: where the command landed in the log and what the state machine returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWriteResponse<R> {
    /// The log position of the command.
    pub log_id: LogId,
    /// The state machine's response.
    pub data: R,
}

type WriteReply<SM> = oneshot::Sender<ProposalResult<<SM as StateMachine>::Response>>;

/// Requests from handles to the driver.
///
/// Large requests are boxed so that the message, which crosses the channel by value (copied in and
/// out of a block shared between threads), stays a few words: with `u64` commands 48 bytes (the
/// vote request's variant), where the requests unboxed (an InstallSnapshot request alone is 176
/// bytes) made every message, a client write's too, 192.
pub(crate) enum ApiMsg<SM: StateMachine> {
    ClientWrite {
        command: SM::Command,
        /// For [`Raft::propose`]: told the entry's log id once the leader has appended it, or why it
        /// was not proposed (then `reply` is dropped unanswered).
        appended: Option<oneshot::Sender<Result<LogId, ClientWriteError>>>,
        reply: WriteReply<SM>,
    },
    AppendEntries {
        request: Box<AppendEntriesRequest<SM::Command>>,
        reply: oneshot::Sender<AppendEntriesResponse>,
    },
    Vote {
        request: VoteRequest,
        reply: oneshot::Sender<VoteResponse>,
    },
    PreVote {
        request: PreVoteRequest,
        reply: oneshot::Sender<PreVoteResponse>,
    },
    TimeoutNow {
        request: TimeoutNowRequest,
        reply: oneshot::Sender<TimeoutNowResponse>,
    },
    InstallSnapshot {
        request: Box<InstallSnapshotRequest>,
        reply: oneshot::Sender<InstallSnapshotResponse>,
    },
    ChangeMembership {
        change: Box<crate::engine::MembershipChange>,
        reply: oneshot::Sender<Result<membership::ChangeStarted, crate::error::MembershipError>>,
    },
    Read {
        /// Served on the leader's lease if one holds.
        lease: bool,
        reply: reads::ReadReply,
    },
    ReadIndexRpc {
        request: crate::message::ReadIndexRequest,
        reply: oneshot::Sender<crate::message::ReadIndexResponse>,
    },
    TransferLeadership {
        to: Option<NodeId>,
        /// Answered with the target and the count of abandoned transfers before this one.
        reply: oneshot::Sender<Result<(NodeId, u64), TransferError>>,
    },
    Initialize {
        membership: Box<Membership>,
        reply: oneshot::Sender<Result<(), InitializeError>>,
    },
    TriggerSnapshot {
        reply: oneshot::Sender<Option<LogId>>,
    },
    Shutdown,
}

/// A handle to a running Raft node. Cheap to clone; `Send + Sync`.
///
/// Dropping every handle stops the node, as does [`shutdown`](Raft::shutdown).
pub struct Raft<SM: StateMachine> {
    inner: Arc<Inner<SM>>,
}

struct Inner<SM: StateMachine> {
    id: NodeId,
    api: mpsc::UnboundedSender<ApiMsg<SM>>,
    metrics: watch::Receiver<Metrics>,
    driver: Mutex<Option<JoinHandle<()>>>,
    /// `Config::election_timeout_max`: how long a leadership transfer may take.
    election_timeout_max: Duration,
    /// `Config::heartbeat_interval`: how often a refused-for-now request is retried.
    heartbeat_interval: Duration,
    /// `Config::max_learner_lag`: how close a learner must be before it is promoted.
    max_learner_lag: u64,
    /// `Config::rpc_timeout`: part of a forwarded read's time limit.
    rpc_timeout: Duration,
}

impl<SM: StateMachine> Clone for Raft<SM> {
    fn clone(&self) -> Self {
        Raft {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<SM: StateMachine> std::fmt::Debug for Raft<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft").field("id", &self.inner.id).finish()
    }
}

impl<SM: StateMachine> Raft<SM> {
    /// Starts node `id`: reads its state from `storage` (a restart resumes where the storage and the
    /// state machine stand) and spawns its tasks on the current tokio runtime.
    ///
    /// A node with an empty storage waits, as a follower, until [`initialize`](Self::initialize) is
    /// called on it or a leader contacts it.
    ///
    /// # Errors
    /// An invalid `config`, or a failure reading storage or the state machine.
    pub async fn start<S, N>(
        id: NodeId,
        config: Config,
        storage: S,
        network: N,
        state_machine: SM,
    ) -> Result<Self, StartError>
    where
        S: RaftStorage<SM::Command>,
        N: RaftNetwork<SM::Command>,
    {
        config.validate()?;
        let election_timeout_max = config.election_timeout_max;
        let heartbeat_interval = config.heartbeat_interval;
        let max_learner_lag = config.max_learner_lag;
        let rpc_timeout = config.rpc_timeout;
        let (api_tx, api_rx) = mpsc::unbounded_channel();
        let (driver, metrics_rx) =
            driver::Driver::open(id, config, storage, network, state_machine, api_rx).await?;
        let handle = tokio::spawn(driver.run());
        Ok(Raft {
            inner: Arc::new(Inner {
                id,
                api: api_tx,
                metrics: metrics_rx,
                driver: Mutex::new(Some(handle)),
                election_timeout_max,
                heartbeat_interval,
                max_learner_lag,
                rpc_timeout,
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Bootstraps a new cluster with `voters` as its members. Call it on one node or on all of them
    /// with the same set; a node that already has a log or a term refuses.
    ///
    /// # Errors
    /// [`InitializeError::AlreadyInitialized`], an invalid membership, or a stopped node.
    pub async fn initialize(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), InitializeError> {
        self.initialize_with(Membership::new(voters)).await
    }

    /// Bootstraps a new cluster with `membership` (voters, learners, and where each is reached),
    /// like [`initialize`](Self::initialize). The membership must not be joint and must name this
    /// node as a voter.
    ///
    /// # Errors
    /// [`InitializeError::AlreadyInitialized`], an invalid membership, or a stopped node.
    pub async fn initialize_with(&self, membership: Membership) -> Result<(), InitializeError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::Initialize {
            membership: Box::new(membership),
            reply,
        })?;
        rx.await
            .map_err(|_| InitializeError::Stopped(self.stopped()))?
    }

    /// Proposes `command` and waits until it is committed and applied, returning the state machine's
    /// response.
    ///
    /// # Errors
    /// [`ClientWriteError::NotLeader`] if this node is not the leader (nothing was proposed);
    /// [`ClientWriteError::OutcomeUnknown`] if leadership was lost after proposing;
    /// [`ClientWriteError::Stopped`] if the node stopped.
    pub async fn client_write(
        &self,
        command: SM::Command,
    ) -> Result<ClientWriteResponse<SM::Response>, ClientWriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::ClientWrite {
            command,
            appended: None,
            reply,
        })?;
        rx.await
            .map_err(|_| ClientWriteError::Stopped(self.stopped()))?
    }

    /// Proposes `command` and returns as soon as the leader has appended it to its log (before it is
    /// durable or committed), with its log id. The returned [`Proposal`] resolves, like
    /// [`client_write`](Self::client_write), once the entry is applied. For callers that pipeline
    /// writes or must know a write's position at once (test harnesses, linearizability checkers).
    ///
    /// # Errors
    /// [`ClientWriteError::NotLeader`] if this node is not the leader (nothing was proposed);
    /// [`ClientWriteError::Stopped`] if the node stopped. Errors after the append come from awaiting
    /// the proposal.
    pub async fn propose(&self, command: SM::Command) -> Result<Proposal<SM>, ClientWriteError> {
        let (reply, response) = oneshot::channel();
        let (appended, appended_rx) = oneshot::channel();
        self.send(ApiMsg::ClientWrite {
            command,
            appended: Some(appended),
            reply,
        })?;
        match appended_rx.await {
            Ok(Ok(log_id)) => Ok(Proposal::new(log_id, response, self.clone())),
            Ok(Err(refused)) => Err(refused),
            Err(_) => Err(ClientWriteError::Stopped(self.stopped())),
        }
    }

    /// Handles an AppendEntries from a peer; transports call this with decoded requests.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn append_entries(
        &self,
        request: AppendEntriesRequest<SM::Command>,
    ) -> Result<AppendEntriesResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::AppendEntries {
            request: Box::new(request),
            reply,
        })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Handles a RequestVote from a peer; transports call this with decoded requests.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn vote(&self, request: VoteRequest) -> Result<VoteResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::Vote { request, reply })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Handles a pre-vote from a peer; transports call this with decoded requests. Answered at once:
    /// a pre-vote changes nothing on this node.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn pre_vote(&self, request: PreVoteRequest) -> Result<PreVoteResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::PreVote { request, reply })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Handles a leader's TimeoutNow (the last step of a leadership transfer); transports call this
    /// with decoded requests. The answer is sent once the new term is durable.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn timeout_now(
        &self,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::TimeoutNow { request, reply })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Hands leadership to `to`, or, with `None`, to the follower whose log is most up to date, and
    /// waits until it leads; returns the new leader.
    ///
    /// From the call on, this leader refuses proposals ([`ClientWriteError::NotLeader`] naming the
    /// target), brings the target's log up to date, and tells it to campaign at once (TimeoutNow);
    /// voters grant a transfer's election even while they still hear from this leader. Use it before
    /// stopping or restarting a leader: the cluster moves on without an election timeout of
    /// unavailability.
    ///
    /// # Errors
    /// [`TransferError::NotLeader`] on a follower; [`TransferError::NotAVoter`] for a target that is
    /// not another voter; [`TransferError::NoTarget`] on a single-node cluster;
    /// [`TransferError::TimedOut`] if the target does not lead within an election timeout (then
    /// this node has resumed leading, unless it lost office some other way meanwhile);
    /// [`TransferError::Stopped`] if the node stops.
    pub async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<NodeId, TransferError> {
        let mut rx = self.metrics();
        let start_term = rx.borrow().current_term;
        let (reply, reply_rx) = oneshot::channel();
        self.send(ApiMsg::TransferLeadership { to, reply })?;
        let (target, abandoned_before) = reply_rx.await.map_err(|_| self.stopped())??;
        // The engine abandons the transfer after `election_timeout_max`; the target's election
        // needs at most one more round trip after that to be seen here. Twice the timeout bounds both.
        let wait = self.inner.election_timeout_max.saturating_mul(2);
        let outcome = tokio::time::timeout(wait, async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if let NodeStatus::Stopped(reason) = &m.status {
                        return Err(TransferError::Stopped(StoppedError(reason.clone())));
                    }
                    if m.current_term > start_term && m.current_leader == Some(target) {
                        return Ok(target);
                    }
                    // Abandoned: this node leads on in its term.
                    if m.elections.transfers_abandoned > abandoned_before {
                        return Err(TransferError::TimedOut { target });
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(TransferError::Stopped(StoppedError("node stopped".into())));
                }
            }
        })
        .await;
        outcome.unwrap_or(Err(TransferError::TimedOut { target }))
    }

    /// Waits until a linearizable read may be served on this node, and returns its read index: the
    /// state machine has applied at least up to it, and it holds every write acknowledged before
    /// this call (Raft thesis, section 6.4). Read the state machine after it returns. No log entry
    /// is written.
    ///
    /// On the leader: its commit index, confirmed by one round of heartbeats answered by a majority
    /// (concurrent reads share a round). On a follower: the leader's read index, asked for with one
    /// `ReadIndex` RPC (concurrent reads share one), then this node's apply catching up to it.
    ///
    /// # Errors
    /// [`ReadError::NotLeader`] if no leader is known (or the one asked does not lead);
    /// [`ReadError::LeadershipLost`] if the leader lost office, or could not be reached, before it
    /// confirmed; [`ReadError::TimedOut`] after two maximum election timeouts (plus one RPC
    /// timeout); [`ReadError::Stopped`]. Nothing was read in any of these cases: retrying is safe.
    pub async fn read_index(&self) -> Result<LogIndex, ReadError> {
        self.read(false).await
    }

    /// Like [`read_index`](Self::read_index), but served on the leader's lease, without a round,
    /// when [`ReadPolicy::Lease`](crate::ReadPolicy) is configured and the lease holds (see its
    /// clock assumption); otherwise exactly like `read_index`.
    ///
    /// # Errors
    /// As [`read_index`](Self::read_index).
    pub async fn read_lease(&self) -> Result<LogIndex, ReadError> {
        self.read(true).await
    }

    async fn read(&self, lease: bool) -> Result<LogIndex, ReadError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::Read { lease, reply })?;
        let wait = self
            .inner
            .election_timeout_max
            .saturating_mul(2)
            .saturating_add(self.inner.rpc_timeout);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReadError::Stopped(self.stopped())),
            Err(_) => Err(ReadError::TimedOut),
        }
    }

    /// Handles a follower's request for a read index; transports call this with decoded requests.
    /// Answered once this node (if it leads) has confirmed it still leads.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn read_index_request(
        &self,
        request: crate::message::ReadIndexRequest,
    ) -> Result<crate::message::ReadIndexResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::ReadIndexRpc { request, reply })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Handles one chunk of an InstallSnapshot from the leader; transports call this with decoded
    /// requests. The answer to the last chunk is sent once the snapshot is durable in storage.
    ///
    /// # Errors
    /// If the node has stopped.
    pub async fn install_snapshot(
        &self,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::InstallSnapshot {
            request: Box::new(request),
            reply,
        })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Builds a snapshot of the state machine now (besides the [`SnapshotPolicy`](crate::SnapshotPolicy))
    /// and waits until it is durable in storage and the log before it is compacted (keeping
    /// [`Config::snapshot_keep_entries`]). Returns the snapshot's last log id: it covers at least every
    /// entry applied when this was called. `None` if nothing was ever applied.
    ///
    /// The node keeps replicating, voting and committing meanwhile; it keeps applying too if the
    /// state machine overrides [`StateMachine::begin_snapshot`] (the default serializes on the
    /// apply task).
    ///
    /// # Errors
    /// If the node stops first.
    pub async fn trigger_snapshot(&self) -> Result<Option<LogId>, StoppedError> {
        let (reply, rx) = oneshot::channel();
        self.send(ApiMsg::TriggerSnapshot { reply })?;
        rx.await.map_err(|_| self.stopped())
    }

    /// A watch of the node's metrics, updated after every batch of work.
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.inner.metrics.clone()
    }

    /// Waits until this node knows a leader, and returns its id.
    ///
    /// The answer is this node's belief: right after a leader dies, a follower still names it until
    /// its election timeout fires. To wait for a *new* leader, watch [`metrics`](Self::metrics) for a
    /// higher `current_term` with a leader.
    ///
    /// # Errors
    /// If `timeout` passes first, or the node stops.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, StoppedError> {
        let mut rx = self.metrics();
        let found = tokio::time::timeout(timeout, async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if let NodeStatus::Stopped(reason) = &m.status {
                        return Err(StoppedError(reason.clone()));
                    }
                    if let Some(l) = m.current_leader {
                        return Ok(l);
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(StoppedError("node stopped".into()));
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| Err(StoppedError("timed out waiting for a leader".into())))
    }

    /// Whether this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        self.inner.metrics.borrow().role == Role::Leader
    }

    /// Stops the node and waits for its tasks to end. Pending client writes fail with
    /// [`ClientWriteError::Stopped`]. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.inner.api.send(ApiMsg::Shutdown);
        let handle = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// The voters of the current membership, as this node sees it.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.inner.metrics.borrow().membership.voters.clone()
    }

    fn send(&self, msg: ApiMsg<SM>) -> Result<(), StoppedError> {
        self.inner.api.send(msg).map_err(|_| self.stopped())
    }

    /// The error of a call that met a stopped node.
    fn stopped(&self) -> StoppedError {
        StoppedError(self.stop_reason())
    }

    fn stop_reason(&self) -> String {
        match &self.inner.metrics.borrow().status {
            NodeStatus::Stopped(reason) => reason.clone(),
            NodeStatus::Running => "node stopped".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::ApiMsg;
    use crate::error::StateMachineError;
    use crate::state_machine::StateMachine;
    use crate::types::{Entry, LogId, SnapshotMeta};

    /// A state machine with `u64` commands, for the size of the driver's messages.
    struct U64Commands;

    #[async_trait]
    impl StateMachine for U64Commands {
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

    /// Every message crosses the driver's channel by value, so the largest variant sets the cost of
    /// each client write. With the large requests boxed, the largest left is a vote request's few
    /// words, not an AppendEntries or InstallSnapshot request, a membership change or an initial
    /// membership.
    #[test]
    fn a_driver_message_stays_a_few_words() {
        use crate::message::{AppendEntriesRequest, InstallSnapshotRequest};
        let message = std::mem::size_of::<ApiMsg<U64Commands>>();
        assert!(
            message <= 6 * std::mem::size_of::<usize>(),
            "ApiMsg is {message} bytes"
        );
        for (what, size) in [
            (
                "AppendEntriesRequest",
                std::mem::size_of::<AppendEntriesRequest<u64>>(),
            ),
            (
                "InstallSnapshotRequest",
                std::mem::size_of::<InstallSnapshotRequest>(),
            ),
            (
                "MembershipChange",
                std::mem::size_of::<crate::engine::MembershipChange>(),
            ),
            (
                "Membership",
                std::mem::size_of::<crate::types::Membership>(),
            ),
        ] {
            assert!(
                message < size,
                "ApiMsg ({message} bytes) holds a {what} ({size} bytes) unboxed"
            );
        }
    }
}
