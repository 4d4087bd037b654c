//! The apply task: owns the state machine, applies committed entries in order and answers the clients
//! who proposed them, restores snapshots from the leader and builds the node's own snapshots.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::{ClientWriteResponse, WriteReply};
use crate::error::StateMachineError;
use crate::state_machine::StateMachine;
use crate::types::{Entry, LogId, LogIndex, Snapshot};

/// Committed entries to apply, with the replies of the clients waiting for some of them.
pub(crate) struct ApplyBatch<SM: StateMachine> {
    pub(crate) entries: Vec<Entry<SM::Command>>,
    /// `(position in entries, reply)`, in increasing position; each position holds a command.
    pub(crate) replies: Vec<(usize, WriteReply<SM>)>,
}

/// Work for the apply task, done in the order sent.
pub(crate) enum ApplyMsg<SM: StateMachine> {
    /// Apply these entries.
    Apply(ApplyBatch<SM>),
    /// Replace the state with this snapshot's (received from the leader and stored).
    Restore(Snapshot),
    /// Serialize the state as of the last applied entry.
    BuildSnapshot,
}

/// What the apply task reports to the driver.
pub(crate) enum ApplyEvent {
    /// Everything up to this index is applied (or restored from a snapshot), and how long the
    /// state machine's `apply` call took (`None` for a restore).
    Applied(LogIndex, Option<Duration>),
    /// The state as of `last_log_id`; `None` if nothing was ever applied.
    SnapshotBuilt(Option<(LogId, Vec<u8>)>),
    Failed(StateMachineError),
}

/// Runs until `work` closes or the state machine fails. `last_applied` is the id of the last entry the
/// state machine holds on start.
pub(crate) async fn run<SM: StateMachine>(
    mut state_machine: SM,
    mut last_applied: Option<LogId>,
    mut work: mpsc::UnboundedReceiver<ApplyMsg<SM>>,
    events: mpsc::UnboundedSender<ApplyEvent>,
) {
    while let Some(msg) = work.recv().await {
        let event = match msg {
            ApplyMsg::Apply(batch) => match apply(&mut state_machine, batch).await {
                Ok(Some((last, took))) => {
                    last_applied = Some(last);
                    ApplyEvent::Applied(last.index, Some(took))
                }
                Ok(None) => continue,
                Err(e) => ApplyEvent::Failed(e),
            },
            ApplyMsg::Restore(snapshot) => {
                let id = snapshot.meta.last_log_id;
                match state_machine.restore(&snapshot.meta, &snapshot.data).await {
                    Ok(()) => {
                        last_applied = Some(id);
                        ApplyEvent::Applied(id.index, None)
                    }
                    Err(e) => ApplyEvent::Failed(StateMachineError::new(format!(
                        "restoring the snapshot up to {id}: {e}"
                    ))),
                }
            }
            ApplyMsg::BuildSnapshot => match last_applied {
                None => ApplyEvent::SnapshotBuilt(None),
                Some(id) => match state_machine.begin_snapshot().await {
                    Ok(build) => {
                        // Serialized on its own task: applying goes on meanwhile.
                        let events = events.clone();
                        tokio::spawn(
                            async move {
                                let event = match build.await {
                                    Ok(data) => ApplyEvent::SnapshotBuilt(Some((id, data))),
                                    Err(e) => ApplyEvent::Failed(e),
                                };
                                let _ = events.send(event);
                            }
                            .in_current_span(),
                        );
                        continue;
                    }
                    Err(e) => ApplyEvent::Failed(e),
                },
            },
        };
        let failed = matches!(event, ApplyEvent::Failed(_));
        if events.send(event).is_err() || failed {
            return;
        }
    }
}

/// Applies one batch and answers its clients; returns the last entry's id and how long the state
/// machine's `apply` took (`None` for an empty batch).
async fn apply<SM: StateMachine>(
    state_machine: &mut SM,
    batch: ApplyBatch<SM>,
) -> Result<Option<(LogId, Duration)>, StateMachineError> {
    let Some(last) = batch.entries.last().map(|e| e.log_id) else {
        return Ok(None);
    };
    let started = Instant::now();
    let responses = state_machine.apply(&batch.entries).await?;
    let took = started.elapsed();
    if responses.len() != batch.entries.len() {
        return Err(StateMachineError::new(format!(
            "apply returned {} responses for {} entries",
            responses.len(),
            batch.entries.len()
        )));
    }
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
    Ok(Some((last, took)))
}
