//! The `RaftNetwork` a node sends through: applies the router's faults and hands requests to the
//! target's `Raft` handle.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    NetworkError, NodeId, Raft, RaftNetwork, StateMachine, StoppedError, VoteRequest, VoteResponse,
};
use tokio::sync::oneshot;

use crate::router::{Router, RpcKind};

/// The network of one node, created by [`Router::network`].
///
/// The second copy of a duplicated request travels on its own and really reaches the target twice.
/// An InstallSnapshot request travels as a task of its own too: once sent, it arrives (after its
/// delay) even if the sender stops waiting for the answer, as a packet in flight would. A leader sends
/// one chunk at a time, so only thus can a delayed ("reordered") chunk really reach the follower after
/// chunks sent later (the leader timed out, and sent again). Votes and AppendEntries are carried
/// inside the sender's call, as they always were: a sender that gives up on one (its `rpc_timeout`)
/// cancels its delivery if it has not happened yet. (Pipelined AppendEntries still overtake each
/// other; and the figures `tests/raft_by_questions.rs` checks against the docs were measured so.)
pub struct MockNetwork<SM: StateMachine> {
    from: NodeId,
    router: Router<SM>,
}

type Answer<Resp> = Result<Resp, NetworkError>;

impl<SM: StateMachine> MockNetwork<SM> {
    pub(crate) fn new(from: NodeId, router: Router<SM>) -> Self {
        MockNetwork { from, router }
    }

    /// Carries one request of `kind` to `target` through the router's faults and returns the answer.
    ///
    /// A partitioned, isolated or crashed target is refused at once. A lost request or answer makes
    /// this wait forever (the caller's own timeout ends it), as a lost packet would.
    async fn call<Req, Resp, F, Fut>(
        &self,
        kind: RpcKind,
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
        let (request_delay, drop_request, duplicate_delay) = {
            let mut s = self.router.lock();
            if !s.can_talk(from, target) || !s.nodes.contains_key(&target) {
                s.stats.refused += 1;
                return Err(unreachable(
                    target,
                    "no route (partitioned, isolated or down)",
                ));
            }
            let faults = s.faults(kind);
            let drop_request = s.chance(faults.drop_prob);
            let duplicate = s.chance(faults.duplicate_prob);
            // Both delays are drawn whether or not they are used, so that a change of probabilities
            // does not shift every later draw.
            let request_delay = s.delay_ms(&faults);
            let duplicate_delay = s.delay_ms(&faults);
            (
                request_delay,
                drop_request,
                duplicate.then_some(duplicate_delay),
            )
        };
        if drop_request {
            self.router.lock().stats.dropped += 1;
            // A lost message: the sender hears nothing and gives up on its own timeout.
            return std::future::pending().await;
        }
        let trip = Trip {
            router: self.router.clone(),
            kind,
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
        if kind == RpcKind::InstallSnapshot {
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

/// One request's way from `from` to `target`.
struct Trip<SM: StateMachine> {
    router: Router<SM>,
    kind: RpcKind,
    from: NodeId,
    target: NodeId,
}

impl<SM: StateMachine> Clone for Trip<SM> {
    fn clone(&self) -> Self {
        Trip {
            router: self.router.clone(),
            ..*self
        }
    }
}

impl<SM: StateMachine> Trip<SM> {
    /// After `delay` ms, hands `request` to the target (unless the route was cut meanwhile), then
    /// carries the answer back through the faults to `reply`. Without `reply` this is the second copy
    /// of a duplicated request, whose answer nobody hears. Dropping `reply` without sending loses the
    /// answer.
    async fn carry<Req, Resp, F, Fut>(
        self,
        request: Req,
        deliver: F,
        delay: u64,
        reply: Option<oneshot::Sender<Answer<Resp>>>,
    ) where
        F: Fn(Raft<SM>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, StoppedError>>,
    {
        let Trip {
            router,
            kind,
            from,
            target,
        } = self;
        sleep_ms(delay).await;
        let copy = reply.is_none();
        let raft = {
            let mut s = router.lock();
            let raft = s
                .nodes
                .get(&target)
                .filter(|_| s.can_talk(from, target))
                .cloned();
            match raft {
                Some(raft) => {
                    s.count_delivery(kind, copy);
                    raft
                }
                None => {
                    if let Some(reply) = reply {
                        s.stats.refused += 1;
                        let _ = reply.send(Err(unreachable(
                            target,
                            "partitioned or down while the request was in flight",
                        )));
                    }
                    return;
                }
            }
        };
        let answer = deliver(raft, request).await;
        let Some(reply) = reply else {
            return;
        };
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                let _ = reply.send(Err(unreachable(target, &e.to_string())));
                return;
            }
        };
        let (response_delay, drop_response) = {
            let mut s = router.lock();
            let faults = s.faults(kind);
            (s.delay_ms(&faults), s.chance(faults.drop_prob))
        };
        if drop_response {
            router.lock().stats.dropped += 1;
            return;
        }
        sleep_ms(response_delay).await;
        let answer = if router.lock().can_talk(from, target) {
            Ok(response)
        } else {
            Err(unreachable(
                target,
                "partitioned while the answer was in flight",
            ))
        };
        let _ = reply.send(answer);
    }
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn unreachable(target: NodeId, reason: &str) -> NetworkError {
    NetworkError::Unreachable {
        target,
        reason: reason.to_string(),
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
            RpcKind::AppendEntries,
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
            RpcKind::Vote,
            target,
            request,
            |raft: Raft<SM>, req| async move { raft.vote(req).await },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        let router = self.router.clone();
        self.call(
            RpcKind::InstallSnapshot,
            target,
            request,
            move |raft: Raft<SM>, req: InstallSnapshotRequest| {
                router
                    .lock()
                    .record_snapshot_arrival(raft.id(), req.meta.last_log_id, req.offset);
                async move { raft.install_snapshot(req).await }
            },
        )
        .await
    }
}
