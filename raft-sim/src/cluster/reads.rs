//! Reads without a log entry through a harness [`Client`]: `Raft::read_index` or
//! `Raft::read_lease` on any node (the leader, or a follower, which forwards to its leader), then
//! the node's state machine read once the call returned. Each served read is recorded in the client
//! history with what it saw, and judged by the linearizability check; a failed one read nothing.

use raft_core::{NodeId, NodeStatus, Raft, ReadError, Role};

use super::Client;
use crate::history::{ReadKind, ReadOutcome, ReadValue};
use crate::state_machine::LogStateMachine;
use crate::world::lock;

impl Client {
    /// Reads on node `node`: asks it for a read index (`kind` says how), then reads its state
    /// machine. Recorded in the history, served or failed.
    ///
    /// The state is read in the same step as the answer arrives, from the incarnation of the node
    /// that was asked (a node restarted meanwhile is another state machine): it holds at least the
    /// read index, and whatever was applied since the answer was sent, all of it committed before
    /// the read is recorded as complete.
    ///
    /// # Errors
    /// The node's [`ReadError`] (nothing was read), `TimedOut` if no answer came within the
    /// client's attempt timeout, and `NotLeader { leader_hint: None }`, without recording
    /// anything, if the node is down.
    pub async fn read_on(&self, node: NodeId, kind: ReadKind) -> Result<ReadValue, ReadError> {
        let Some(raft) = self.router.node(node) else {
            return Err(ReadError::NotLeader { leader_hint: None });
        };
        let (read, incarnation) = {
            let m = raft.metrics().borrow().clone();
            let leading = (m.role == Role::Leader && m.status == NodeStatus::Running)
                .then_some(m.current_term);
            let mut w = lock(&self.world);
            let Some(incarnation) = w.incarnation(node) else {
                return Err(ReadError::NotLeader { leader_hint: None });
            };
            (w.on_read_invoked(node, kind, leading), incarnation)
        };
        let asked = async {
            match kind {
                ReadKind::Index => raft.read_index().await,
                ReadKind::Lease => raft.read_lease().await,
            }
        };
        let answer = tokio::time::timeout(self.attempt_timeout, asked)
            .await
            .unwrap_or(Err(ReadError::TimedOut));
        let mut w = lock(&self.world);
        let result = answer.and_then(|read_index| {
            let state = w
                .sm_state(node, incarnation)
                .ok_or(ReadError::NotLeader { leader_hint: None })?;
            Ok(ReadValue {
                read_index,
                seen: state.last,
                digest: state.digest,
            })
        });
        let outcome = match &result {
            Ok(value) => ReadOutcome::Served(*value),
            Err(e) => ReadOutcome::Failed(e.to_string()),
        };
        w.on_read_completed(read, outcome);
        result
    }

    /// Reads on the node that says it leads the highest term (see [`read_on`](Self::read_on)).
    /// Returns the node asked with what it read.
    ///
    /// # Errors
    /// As [`read_on`](Self::read_on); `NotLeader { leader_hint: None }` if no node leads.
    pub async fn read_leader(&self, kind: ReadKind) -> Result<(NodeId, ReadValue), ReadError> {
        let leader = self
            .find_leader()
            .ok_or(ReadError::NotLeader { leader_hint: None })?;
        let id = leader.id();
        self.read_on(id, kind).await.map(|v| (id, v))
    }

    /// The running nodes that say they lead (any term), in id order: a leader cut off from the
    /// cluster is among them until it learns it was replaced.
    pub fn claimed_leaders(&self) -> Vec<NodeId> {
        self.router
            .node_ids()
            .into_iter()
            .filter_map(|id| self.router.node(id))
            .filter(|r: &Raft<LogStateMachine>| {
                let m = r.metrics().borrow().clone();
                m.role == Role::Leader && m.status == NodeStatus::Running
            })
            .map(|r| r.id())
            .collect()
    }

    /// The nodes registered with the router (those that run), in id order.
    pub fn reachable_nodes(&self) -> Vec<NodeId> {
        self.router.node_ids()
    }
}
