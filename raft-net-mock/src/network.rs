//! The `RaftNetwork` a node sends through: applies the router's links and faults and hands requests
//! to the target's `Raft` handle.

use std::future::Future;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    NetworkError, NodeId, PreVoteRequest, PreVoteResponse, Raft, RaftNetwork, ReadIndexRequest,
    ReadIndexResponse, StateMachine, StoppedError, TimeoutNowRequest, TimeoutNowResponse,
    VoteRequest, VoteResponse,
};
use tokio::sync::oneshot;

use crate::envelope::{Envelope, RpcKind};
use crate::state::SharedState;
use crate::trip::{sleep_ms, unreachable, Answer, Trip};

/// The network of one node, created by [`Router::network`](crate::Router::network).
///
/// A request to a node the sender cannot reach (partition, isolation, disconnection of either end,
/// or a target that is not registered) fails with [`NetworkError::Unreachable`]: at once, or after a
/// random wait in [`UnreachableMode::Hang`](crate::UnreachableMode::Hang). Every call counts as sent
/// in the target's [`TargetStats`](crate::TargetStats), whatever becomes of it.
///
/// The second copy of a duplicated request travels on its own and really reaches the target twice.
/// An InstallSnapshot request travels as a task of its own too: once sent, it arrives (after its
/// delay) even if the sender stops waiting for the answer, as a packet in flight would. A leader sends
/// one chunk at a time, so only thus can a delayed ("reordered") chunk really reach the follower after
/// chunks sent later (the leader timed out, and sent again). Votes and AppendEntries are carried
/// inside the sender's call: a sender that gives up on one (its `rpc_timeout`) cancels its delivery
/// if it has not happened yet. (Pipelined AppendEntries still overtake each other; the figures
/// `raft-sim/tests/raft_by_questions.rs` checks against the docs are measured on this behaviour.)
///
/// A [reply delay](crate::Router::set_reply_delay) holds back only the answer: the target handles the
/// request as soon as it arrives. For votes and AppendEntries the held answer is lost if the sender
/// gives up first, so a reply delay beyond the driver's `rpc_timeout` turns answers into timeouts.
pub struct MockNetwork<SM: StateMachine> {
    from: NodeId,
    state: SharedState<SM>,
}

impl<SM: StateMachine> MockNetwork<SM> {
    pub(crate) fn new(from: NodeId, state: SharedState<SM>) -> Self {
        MockNetwork { from, state }
    }

    /// Carries one request, described by `envelope`, to `target` through the router's links and
    /// faults and returns the answer.
    ///
    /// A target the sender cannot reach is refused (after the unreachable mode's wait). A lost request
    /// or answer makes this wait forever (the caller's own timeout ends it), as a lost packet would.
    async fn call<Req, Resp, F, Fut>(
        &self,
        envelope: Envelope,
        target: NodeId,
        request: Req,
        deliver: F,
    ) -> Answer<Resp>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Raft<SM>, Req) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<Resp, StoppedError>> + Send + 'static,
    {
        let from = self.from;
        let route = {
            let mut s = self.state.lock();
            s.book.sent(target, &envelope);
            if s.can_reach(from, target) {
                let faults = s.faults(envelope.kind);
                let drop_request = s.dice.chance(faults.drop_prob);
                let duplicate = s.dice.chance(faults.duplicate_prob);
                // Both delays are drawn whether or not they are used, so that a change of
                // probabilities does not shift every later draw.
                let request_delay = s.dice.delay_ms(&faults);
                let duplicate_delay = s.dice.delay_ms(&faults);
                Ok((
                    request_delay,
                    drop_request,
                    duplicate.then_some(duplicate_delay),
                ))
            } else {
                s.book.refused();
                Err(s.unreachable_wait_ms())
            }
        };
        let (request_delay, drop_request, duplicate_delay) = match route {
            Ok(route) => route,
            Err(wait) => {
                sleep_ms(wait).await;
                return Err(unreachable(
                    target,
                    "no route (partitioned, isolated, disconnected or down)",
                ));
            }
        };
        if drop_request {
            self.state.lock().book.dropped();
            // A lost message: the sender hears nothing and gives up on its own timeout.
            return std::future::pending().await;
        }
        let trip = Trip {
            state: self.state.clone(),
            envelope,
            from,
            target,
        };
        if let Some(delay) = duplicate_delay {
            tokio::spawn(
                trip.clone()
                    .carry(request.clone(), deliver.clone(), delay, None),
            );
        }
        let (reply, answer) = oneshot::channel();
        let carry = trip.carry(request, deliver, request_delay, Some(reply));
        if envelope.kind == RpcKind::InstallSnapshot {
            tokio::spawn(carry);
        } else {
            carry.await;
        }
        match answer.await {
            Ok(answer) => answer,
            // The answer was lost on its way back.
            Err(_) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl<SM: StateMachine> RaftNetwork<SM::Command> for MockNetwork<SM> {
    async fn append_entries(
        &self,
        target: NodeId,
        request: AppendEntriesRequest<SM::Command>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        self.call(
            Envelope::append_entries(&request),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.append_entries(req).await },
        )
        .await
    }

    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError> {
        self.call(
            Envelope::bare(RpcKind::Vote),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.vote(req).await },
        )
        .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        request: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        self.call(
            Envelope::bare(RpcKind::PreVote),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.pre_vote(req).await },
        )
        .await
    }

    async fn timeout_now(
        &self,
        target: NodeId,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        self.call(
            Envelope::bare(RpcKind::TimeoutNow),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.timeout_now(req).await },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        self.call(
            Envelope::install_snapshot(&request),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.install_snapshot(req).await },
        )
        .await
    }

    async fn read_index(
        &self,
        target: NodeId,
        request: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError> {
        self.call(
            Envelope::bare(RpcKind::ReadIndex),
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.read_index_request(req).await },
        )
        .await
    }
}
