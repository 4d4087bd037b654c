//! [`LogStateMachine`]: the harness's state machine, which reports every entry it applies and every
//! snapshot it restores to the cluster's recorder. Its state is an [`AppliedState`].

use async_trait::async_trait;
use raft_core::{
    Entry, LogId, LogIndex, NodeId, SnapshotBuild, SnapshotMeta, StateMachine, StateMachineError,
};

use crate::applied_state::AppliedState;
use crate::world::{lock, Shared};

/// The state machine of harness clusters. A command is a `u64` value that is unique per client write;
/// the response is the log index the command was applied at.
///
/// Its state is an [`AppliedState`]; [`snapshot`](StateMachine::snapshot) encodes it and
/// [`restore`](StateMachine::restore) decodes it, after which applying continues the same hash
/// chain. Every applied entry (commands, no-ops and membership entries alike) and every restore is
/// reported, per node and per *incarnation* (a restarted node gets a new, empty state machine), to
/// the cluster's recorder, whose checkers judge it as it happens (State Machine Safety in the
/// `invariants::state_machine_safety` module: no two nodes or incarnations apply different entries at
/// one index; each incarnation applies in order without gaps, continuing from the snapshot it
/// restored last, and never moves back; an entry is applied only once it is durable on a majority;
/// and in `invariants::snapshots`: a restored state equals the committed log prefix up to the
/// snapshot, digest and recent commands). A snapshot that does not decode (bytes lost or misplaced in
/// transfer) is reported as a violation, and the restore fails.
///
/// It is "in memory": [`last_applied`](StateMachine::last_applied) is `None` on every start.
pub struct LogStateMachine {
    node: NodeId,
    incarnation: u32,
    state: AppliedState,
    world: Shared,
}

impl std::fmt::Debug for LogStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStateMachine")
            .field("node", &self.node)
            .field("incarnation", &self.incarnation)
            .field("state", &self.state)
            .finish()
    }
}

impl LogStateMachine {
    pub(crate) fn new(node: NodeId, incarnation: u32, world: Shared) -> Self {
        LogStateMachine {
            node,
            incarnation,
            state: AppliedState::default(),
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

    /// Its current state.
    pub fn state(&self) -> &AppliedState {
        &self.state
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
        for e in entries {
            self.state.apply(e);
        }
        lock(&self.world).on_apply(self.node, self.incarnation, entries, &self.state);
        Ok(entries.iter().map(|e| e.log_id.index).collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(self.state.encode())
    }

    /// Captures the state now and hands it over after yielding to the scheduler a few times (0-6,
    /// from the snapshot's index, so runs replay), so that in every simulation the build finishes in
    /// the background while entries keep being applied. (Yields, not a timer: under load on the
    /// paused clock, virtual time does not advance, and a sleeping build would never finish.)
    async fn begin_snapshot(&mut self) -> Result<SnapshotBuild, StateMachineError> {
        let data = self.state.encode();
        let yields = self.state.last.index % 7;
        Ok(Box::pin(async move {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            Ok(data)
        }))
    }

    async fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let decoded = AppliedState::decode(data).and_then(|state| {
            if state.last == meta.last_log_id {
                Ok(state)
            } else {
                Err(format!("its data is the state as of {}", state.last))
            }
        });
        let mut w = lock(&self.world);
        match decoded {
            Ok(state) => {
                w.on_restore(self.node, self.incarnation, meta, &state);
                self.state = state;
                Ok(())
            }
            Err(e) => {
                w.on_restore_refused(self.node, meta, data.len(), &e);
                // The node stops with this reason, worded as the violation reported for it.
                Err(StateMachineError::new(format!(
                    "snapshot transfer: node {} was asked to restore a snapshot of {} ({} bytes) that is not \
                     a state machine state: {e}",
                    self.node,
                    meta.last_log_id,
                    data.len()
                )))
            }
        }
    }
}
