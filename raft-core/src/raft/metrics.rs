//! What a node reports about itself.

use std::collections::BTreeMap;

use crate::engine::ElectionStats;
use crate::types::{LogId, LogIndex, Membership, NodeId, Role, Term};

/// Whether the node runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum NodeStatus {
    /// The node runs.
    #[default]
    Running,
    /// The node stopped: on request, or because storage or the state machine failed (the reason says).
    Stopped(String),
}

/// A snapshot of one node's state, published on a `tokio::sync::watch` after every batch of work.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Metrics {
    /// The node.
    pub id: NodeId,
    /// Running or stopped.
    pub status: NodeStatus,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub current_term: Term,
    /// The leader it knows of in the current term.
    pub current_leader: Option<NodeId>,
    /// The id of its last log entry.
    pub last_log_id: LogId,
    /// The highest index it knows committed.
    pub commit_index: LogIndex,
    /// The last index its state machine applied.
    pub last_applied: LogIndex,
    /// The last log id covered by its latest snapshot (the default id if it has none).
    pub snapshot: LogId,
    /// How many entries its log holds (after the purge point), which is also what the engine keeps in
    /// memory.
    pub log_entries: u64,
    /// The membership in force: the latest in the log, committed or not. Voters, learners, and
    /// while a change of voters is under way, the outgoing voters (`old_voters`, the joint state).
    pub membership: Membership,
    /// The index of the log entry that set `membership`: it is committed once `commit_index`
    /// reaches it.
    pub membership_index: LogIndex,
    /// On the leader: each other member's match index, learners' included (`last_log_id.index`
    /// minus it is the member's lag). Empty otherwise.
    pub replication: BTreeMap<NodeId, LogIndex>,
    /// How many times, while leading, this node found a follower missing entries the follower had
    /// acknowledged, and replicated them again (see
    /// [`Engine::followers_repaired`](crate::Engine::followers_repaired)). Non-zero means a follower's
    /// storage lost acknowledged data: worth an alert.
    pub followers_repaired: u64,
    /// Elections started, pre-vote rounds lost, leadership transfers started and abandoned: on a
    /// stable cluster these stay still; a rising `elections_started` means leaders are being lost.
    pub elections: ElectionStats,
    /// On a leader handing leadership over: the node taking over. Proposals are refused meanwhile.
    pub transferring_to: Option<NodeId>,
}

impl Metrics {
    /// Whether `membership` is committed (so a change that produced it has completed, unless it
    /// is joint).
    pub fn membership_committed(&self) -> bool {
        self.membership_index <= self.commit_index
    }

    /// On the leader: how many entries member `id` lacks (its lag), if it is replicated to.
    pub fn lag(&self, id: NodeId) -> Option<u64> {
        self.replication
            .get(&id)
            .map(|&matched| self.last_log_id.index.saturating_sub(matched))
    }
}
