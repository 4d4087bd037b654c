//! The apply task: owns the state machine, applies committed entries in order and answers the clients
//! who proposed them.

use tokio::sync::mpsc;

use super::{ClientWriteResponse, WriteReply};
use crate::error::StateMachineError;
use crate::state_machine::StateMachine;
use crate::types::{Entry, LogIndex};

/// Committed entries to apply, with the replies of the clients waiting for some of them.
pub(crate) struct ApplyBatch<SM: StateMachine> {
    pub(crate) entries: Vec<Entry<SM::Command>>,
    /// `(position in entries, reply)`, in increasing position; each position holds a command.
    pub(crate) replies: Vec<(usize, WriteReply<SM>)>,
}

/// What the apply task reports to the driver.
pub(crate) enum ApplyEvent {
    Applied(LogIndex),
    Failed(StateMachineError),
}

pub(crate) async fn run<SM: StateMachine>(
    mut state_machine: SM,
    mut batches: mpsc::UnboundedReceiver<ApplyBatch<SM>>,
    events: mpsc::UnboundedSender<ApplyEvent>,
) {
    while let Some(batch) = batches.recv().await {
        let Some(last) = batch.entries.last().map(|e| e.log_id.index) else {
            continue;
        };
        match state_machine.apply(&batch.entries).await {
            Ok(responses) if responses.len() == batch.entries.len() => {
                // `replies` is in log order, so one pass pairs each with its response.
                let mut replies = batch.replies.into_iter().peekable();
                for (pos, data) in responses.into_iter().enumerate() {
                    if replies.peek().is_some_and(|(p, _)| *p == pos) {
                        if let Some((_, reply)) = replies.next() {
                            let log_id = batch.entries[pos].log_id;
                            let _ = reply.send(Ok(ClientWriteResponse { log_id, data }));
                        }
                    }
                }
                if events.send(ApplyEvent::Applied(last)).is_err() {
                    return;
                }
            }
            Ok(responses) => {
                let err = StateMachineError::new(format!(
                    "apply returned {} responses for {} entries",
                    responses.len(),
                    batch.entries.len()
                ));
                let _ = events.send(ApplyEvent::Failed(err));
                return;
            }
            Err(e) => {
                let _ = events.send(ApplyEvent::Failed(e));
                return;
            }
        }
    }
}
