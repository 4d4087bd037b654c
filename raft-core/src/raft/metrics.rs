//! What a node reports about itself.

use std::collections::BTreeMap;

use super::histogram::LatencyHistogram;
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
    /// How many times this node learned of a leader for a term it knew none for (itself included):
    /// one per term that had a known leader here, sampled after every batch (a leader learned and
    /// lost within one batch is missed). On a stable cluster it stays still.
    pub leader_changes: u64,
    /// What became of the client proposals made at this node.
    pub proposals: ProposalStats,
    /// Snapshots built here and received from a leader.
    pub snapshots: SnapshotStats,
    /// Storage append, commit and apply latencies.
    pub latency: LatencyStats,
}

/// What became of the client proposals ([`Raft::client_write`](crate::Raft::client_write) and the
/// like) made at this node since it started. Monotonic counters.
///
/// Every proposal is counted once in `accepted`, `not_leader` or `too_large`; an accepted one may
/// later be counted again in `outcome_unknown`. Proposals failed because the node stopped are
/// counted in none of the failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProposalStats {
    /// Appended to the log by this node as leader (committed or not since).
    pub accepted: u64,
    /// Refused: this node does not lead, or hands leadership over (nothing appended).
    pub not_leader: u64,
    /// Refused: over `Config::max_entry_bytes` (nothing appended).
    pub too_large: u64,
    /// Accepted, then failed with `OutcomeUnknown`: leadership was lost and the entry's fate is not
    /// known here (it may still commit).
    pub outcome_unknown: u64,
}

/// Snapshots this node built and installed since it started. Monotonic counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnapshotStats {
    /// Snapshots of its own state machine that it built and stored.
    pub built: u64,
    /// Snapshots received from a leader that it stored and restored its state machine from.
    pub installed: u64,
}

/// Latencies measured by the node since it started, each a [`LatencyHistogram`] (monotonic).
///
/// Each measurement costs one or two `std::time::Instant` reads per batch or proposal, taken on
/// the task that does the work; nothing is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LatencyStats {
    /// One `RaftStorage::append` call, which returns once the batch is durable (the fsync included):
    /// one value per batch of entries appended, on every node.
    pub append: LatencyHistogram,
    /// On the leader: from a client proposal's acceptance to the driver learning it committed (and
    /// handing it to the state machine), per proposal. Proposals whose entry was overwritten or
    /// covered by a snapshot are not timed.
    pub commit: LatencyHistogram,
    /// One `StateMachine::apply` call on the apply task: one value per batch of committed entries.
    pub apply: LatencyHistogram,
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
