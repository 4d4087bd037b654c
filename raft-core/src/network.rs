//! The network trait: how a node sends RPCs to its peers.

use async_trait::async_trait;

use crate::error::NetworkError;
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    PreVoteRequest, PreVoteResponse, ReadIndexRequest, ReadIndexResponse, TimeoutNowRequest,
    TimeoutNowResponse, VoteRequest, VoteResponse,
};
use crate::types::{Membership, NodeId};

/// Sends RPCs to peers and returns their answers.
///
/// # Contract
/// * **Concurrency:** the driver calls methods concurrently, several to the same target at once
///   (pipelining); implementations take `&self` and must allow that.
/// * **Ordering:** requests to one target should be delivered in the order the calls were made where
///   the transport can do so cheaply (one connection); the protocol stays safe if they are not
///   (reordered, duplicated or lost messages are handled by the engine), only slower.
/// * **Delivery:** at most once per call from the caller's view; an `Err` means "no answer", and the
///   request may or may not have been processed by the target. Implementations need not retry: the
///   driver does. The driver also bounds each call with [`Config::rpc_timeout`](crate::Config), so an
///   implementation may hang on a lost message rather than time out itself.
/// * **Cancellation:** the driver may drop a call's future at any point (timeout, shutdown).
#[async_trait]
pub trait RaftNetwork<C>: Send + Sync + 'static
where
    C: Send + Sync + 'static,
{
    /// Sends an AppendEntries to `target` and waits for its answer.
    async fn append_entries(
        &self,
        target: NodeId,
        request: AppendEntriesRequest<C>,
    ) -> Result<AppendEntriesResponse, NetworkError>;

    /// Sends a RequestVote to `target` and waits for its answer.
    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError>;

    /// Sends a pre-vote to `target` and waits for its answer.
    async fn pre_vote(
        &self,
        target: NodeId,
        request: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError>;

    /// Sends a TimeoutNow (a leadership transfer's last step) to `target` and waits for its answer.
    async fn timeout_now(
        &self,
        target: NodeId,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError>;

    /// Sends one chunk of a snapshot to `target` and waits for its answer. A chunk is at most
    /// [`Config::snapshot_chunk_size`](crate::Config) bytes of data, plus the metadata.
    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError>;

    /// Sends a follower's request for a read index to the leader `target` and waits for its answer
    /// (which comes once the leader has confirmed it still leads: about one round trip more).
    async fn read_index(
        &self,
        target: NodeId,
        request: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError>;

    /// Tells the transport the membership now in force on this node (the latest in its log,
    /// committed or not), before any message to a member it adds is sent: the address book follows
    /// the log. Called when the node starts and each time the membership changes (including a
    /// truncation reverting it). A transport that reaches members through
    /// [`Node::addr`](crate::Node) learns new members here and may drop connections to nodes no
    /// longer members. Must not block. The default does nothing (addresses fixed at start).
    fn membership_changed(&self, membership: &Membership) {
        let _ = membership;
    }
}
