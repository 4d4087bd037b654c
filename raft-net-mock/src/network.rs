//! The `RaftNetwork` a node sends through: applies the router's faults and hands requests to the
//! target's `Raft` handle.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, AppendEntriesResponse, NetworkError, NodeId, Raft, RaftNetwork,
    StateMachine, StoppedError, VoteRequest, VoteResponse,
};

use crate::router::Router;

/// The network of one node, created by [`Router::network`].
pub struct MockNetwork<SM: StateMachine> {
    from: NodeId,
    router: Router<SM>,
}

impl<SM: StateMachine> MockNetwork<SM> {
    pub(crate) fn new(from: NodeId, router: Router<SM>) -> Self {
        MockNetwork { from, router }
    }

    /// Carries one request to `target` through the router's faults and returns the answer.
    async fn call<Req, Resp, F, Fut>(
        &self,
        target: NodeId,
        request: Req,
        deliver: F,
    ) -> Result<Resp, NetworkError>
    where
        Req: Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(Raft<SM>, Req) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Result<Resp, StoppedError>> + Send + 'static,
    {
        let from = self.from;
        let (request_delay, drop_request, duplicate, duplicate_delay) = {
            let mut s = self.router.lock();
            if !s.can_talk(from, target) || !s.nodes.contains_key(&target) {
                s.stats.refused += 1;
                return Err(unreachable(
                    target,
                    "no route (partitioned, isolated or down)",
                ));
            }
            let drop_prob = s.faults.drop_prob;
            let dup_prob = s.faults.duplicate_prob;
            let drop_request = s.chance(drop_prob);
            let duplicate = s.chance(dup_prob);
            (s.delay_ms(), drop_request, duplicate, s.delay_ms())
        };
        if drop_request {
            self.router.lock().stats.dropped += 1;
            // A lost message: the sender hears nothing and gives up on its own timeout.
            return std::future::pending().await;
        }
        if duplicate {
            let router = self.router.clone();
            let copy = request.clone();
            let deliver = deliver.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(duplicate_delay)).await;
                let target_raft = {
                    let mut s = router.lock();
                    if !s.can_talk(from, target) {
                        return;
                    }
                    s.stats.duplicated += 1;
                    s.nodes.get(&target).cloned()
                };
                if let Some(raft) = target_raft {
                    let _ = deliver(raft, copy).await;
                }
            });
        }
        sleep_ms(request_delay).await;
        let raft = {
            let mut s = self.router.lock();
            if !s.can_talk(from, target) {
                s.stats.refused += 1;
                return Err(unreachable(target, "partitioned while in flight"));
            }
            match s.nodes.get(&target).cloned() {
                Some(r) => {
                    s.stats.delivered += 1;
                    r
                }
                None => {
                    s.stats.refused += 1;
                    return Err(unreachable(target, "node is down"));
                }
            }
        };
        let response = deliver(raft, request)
            .await
            .map_err(|e| unreachable(target, &e.to_string()))?;
        let (response_delay, drop_response) = {
            let mut s = self.router.lock();
            let p = s.faults.drop_prob;
            (s.delay_ms(), s.chance(p))
        };
        if drop_response {
            self.router.lock().stats.dropped += 1;
            return std::future::pending().await;
        }
        sleep_ms(response_delay).await;
        if !self.router.lock().can_talk(from, target) {
            return Err(unreachable(
                target,
                "partitioned while the answer was in flight",
            ));
        }
        Ok(response)
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
        self.call(target, request, |raft: Raft<SM>, req| async move {
            raft.append_entries(req).await
        })
        .await
    }

    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError> {
        self.call(target, request, |raft: Raft<SM>, req| async move {
            raft.vote(req).await
        })
        .await
    }
}
