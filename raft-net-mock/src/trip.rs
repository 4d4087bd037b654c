//! One request's way to its target and its answer's way back, through the router's faults.

use std::future::Future;
use std::time::Duration;

use raft_core::{NetworkError, NodeId, Raft, StateMachine, StoppedError};
use tokio::sync::oneshot;

use crate::envelope::Envelope;
use crate::state::SharedState;

/// What a sender eventually hears: the target's answer, or why there is none.
pub(crate) type Answer<Resp> = Result<Resp, NetworkError>;

/// One request's way from `from` to `target`.
pub(crate) struct Trip<SM: StateMachine> {
    pub(crate) state: SharedState<SM>,
    pub(crate) envelope: Envelope,
    pub(crate) from: NodeId,
    pub(crate) target: NodeId,
}

impl<SM: StateMachine> Clone for Trip<SM> {
    fn clone(&self) -> Self {
        Trip {
            state: self.state.clone(),
            ..*self
        }
    }
}

impl<SM: StateMachine> Trip<SM> {
    /// After `delay` ms, hands `request` to the target (unless the route was cut meanwhile), then
    /// carries the answer back through the faults, and the reply delay if one is set, to `reply`.
    /// Without `reply` this is the second copy of a duplicated request, whose answer nobody hears.
    /// Dropping `reply` without sending loses the answer.
    ///
    /// A route cut while the request or its answer is in flight fails the call as unreachable, after
    /// the unreachable mode's wait.
    pub(crate) async fn carry<Req, Resp, F, Fut>(
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
            state,
            envelope,
            from,
            target,
        } = self;
        sleep_ms(delay).await;
        let arrival = {
            let mut s = state.lock();
            match (s.reachable(from, target), &reply) {
                (Some(raft), _) => {
                    s.book.delivered(target, &envelope, reply.is_none());
                    Ok(raft)
                }
                // A lost second copy: nobody waits for it.
                (None, None) => return,
                (None, Some(_)) => {
                    s.book.refused();
                    Err(s.unreachable_wait_ms())
                }
            }
        };
        let raft = match arrival {
            Ok(raft) => raft,
            Err(wait) => {
                sleep_ms(wait).await;
                if let Some(reply) = reply {
                    let _ = reply.send(Err(unreachable(
                        target,
                        "partitioned or down while the request was in flight",
                    )));
                }
                return;
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
            let mut s = state.lock();
            let faults = s.faults(envelope.kind);
            let delay = s.dice.delay_ms(&faults);
            let drop = s.dice.chance(faults.drop_prob);
            let reply_delay = s.reply_delay;
            let held = s.dice.reply_delay_ms(reply_delay);
            (delay + held, drop)
        };
        if drop_response {
            state.lock().book.dropped();
            return;
        }
        sleep_ms(response_delay).await;
        let cut = {
            let mut s = state.lock();
            (!s.links.can_talk(from, target)).then(|| s.unreachable_wait_ms())
        };
        let answer = match cut {
            None => Ok(response),
            Some(wait) => {
                sleep_ms(wait).await;
                Err(unreachable(
                    target,
                    "partitioned while the answer was in flight",
                ))
            }
        };
        let _ = reply.send(answer);
    }
}

/// Sleeps `ms` milliseconds of tokio time; returns at once, without yielding, for 0.
pub(crate) async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The error of a request that cannot get through to `target`.
pub(crate) fn unreachable(target: NodeId, reason: &str) -> NetworkError {
    NetworkError::Unreachable {
        target,
        reason: reason.to_string(),
    }
}
