//! [`Proposal`]: a command the leader has appended, and the future of its response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::{ClientWriteResponse, Raft};
use crate::error::{ClientWriteError, StoppedError};
use crate::state_machine::StateMachine;
use crate::types::LogId;

/// The result a proposal resolves to: the state machine's response, or why there is none.
pub type ProposalResult<R> = Result<ClientWriteResponse<R>, ClientWriteError>;

/// A command the leader has appended to its log at [`log_id`](Self::log_id), returned by
/// [`Raft::propose`]. Awaiting it gives what [`Raft::client_write`] gives: the state machine's response
/// once the entry is committed and applied, or [`ClientWriteError::OutcomeUnknown`] if this node lost
/// leadership first (the entry may still commit), or [`ClientWriteError::Stopped`].
///
/// Dropping it does not withdraw the command: the entry is in the log and may commit.
#[must_use = "the entry is proposed either way; await the proposal to learn its outcome"]
pub struct Proposal<SM: StateMachine> {
    log_id: LogId,
    response: oneshot::Receiver<ProposalResult<SM::Response>>,
    raft: Raft<SM>,
}

impl<SM: StateMachine> Proposal<SM> {
    pub(super) fn new(
        log_id: LogId,
        response: oneshot::Receiver<ProposalResult<SM::Response>>,
        raft: Raft<SM>,
    ) -> Self {
        Proposal {
            log_id,
            response,
            raft,
        }
    }

    /// Where the leader appended the command: its term and index. The entry is not yet durable nor
    /// committed; if it commits, it commits at this position.
    pub fn log_id(&self) -> LogId {
        self.log_id
    }
}

impl<SM: StateMachine> std::fmt::Debug for Proposal<SM> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal")
            .field("log_id", &self.log_id)
            .finish()
    }
}

impl<SM: StateMachine> Future for Proposal<SM> {
    type Output = ProposalResult<SM::Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.response).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The driver dropped the reply without answering: it stopped.
            Poll::Ready(Err(_)) => Poll::Ready(Err(ClientWriteError::Stopped(StoppedError(
                self.raft.stop_reason(),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }
}
