//! The apply task: owns the state machine, applies committed entries in order and answers the clients
//! who proposed them.

use tokio::sync::mpsc;

use super::{ClientWriteResponse, WriteReply};
use crate::error::StateMachineError;
use crate::state_machine::StateMachine;
use crate::types::{Entry, EntryPayload, LogIndex};

/// Committed entries to apply, with the replies of the clients waiting for some of them.
pub(crate) struct ApplyBatch<SM: StateMachine> {
    pub(crate) entries: Vec<Entry<SM::Command>>,
    /// `(position in entries, reply)`.
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
                let mut responses: Vec<Option<SM::Response>> =
                    responses.into_iter().map(Some).collect();
                for (pos, reply) in batch.replies {
                    let entry = &batch.entries[pos];
                    if let (EntryPayload::Command(_), Some(data)) =
                        (&entry.payload, responses[pos].take())
                    {
                        let _ = reply.send(Ok(ClientWriteResponse {
                            log_id: entry.log_id,
                            data,
                        }));
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
