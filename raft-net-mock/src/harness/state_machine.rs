//! [`LogStateMachine`]: the harness's state machine, which records every entry it applies.

use async_trait::async_trait;
use raft_core::{Entry, LogId, LogIndex, NodeId, SnapshotMeta, StateMachine, StateMachineError};

use super::world::{lock, Shared};

/// The state machine of harness clusters. A command is a `u64` value that is unique per client write;
/// the response is the log index the command was applied at.
///
/// Every applied entry (commands, no-ops and membership entries alike) is recorded, per node and per
/// *incarnation* (a restarted node gets a new, empty state machine and has the log replayed into it),
/// in the cluster's shared record, where State Machine Safety is checked as entries are applied:
/// no two nodes or incarnations apply different entries at one index, each incarnation applies in
/// order without gaps, and an entry is applied only once it is durable on a majority.
///
/// It keeps no state of its own besides the last applied index: it is "in memory", so
/// [`last_applied`](StateMachine::last_applied) is `None` on every start.
pub struct LogStateMachine {
    node: NodeId,
    incarnation: u32,
    last: Option<LogId>,
    world: Shared,
}

impl std::fmt::Debug for LogStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStateMachine")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .field("last", &self.last)
            .finish()
    }
}

impl LogStateMachine {
    pub(crate) fn new(node: NodeId, incarnation: u32, world: Shared) -> Self {
        LogStateMachine {
            node,
            incarnation,
            last: None,
            world,
        }
    }

    /// The node this state machine belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Which start of the node this is (1 for the first).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }
}

#[async_trait]
impl StateMachine for LogStateMachine {
    type Command = u64;
    type Response = LogIndex;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<LogIndex>, StateMachineError> {
        lock(&self.world).on_apply(self.node, self.incarnation, entries);
        if let Some(e) = entries.last() {
            self.last = Some(e.log_id);
        }
        Ok(entries.iter().map(|e| e.log_id.index).collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        let last = self.last.unwrap_or_default();
        let mut data = last.term.to_le_bytes().to_vec();
        data.extend_from_slice(&last.index.to_le_bytes());
        Ok(data)
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        _data: &[u8],
    ) -> Result<(), StateMachineError> {
        self.last = Some(meta.last_log_id);
        lock(&self.world).on_restore(self.node, self.incarnation, meta.last_log_id.index);
        Ok(())
    }
}
