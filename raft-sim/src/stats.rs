//! [`HarnessStats`]: counters of the traffic and the events the harness saw, for reports and for
//! tests that make sure a scenario exercised what it meant to.

use std::collections::BTreeMap;

use raft_core::NodeId;

/// Counters the harness keeps about the traffic it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HarnessStats {
    /// AppendEntries answered (as the sender saw the answer).
    pub append_responses: u64,
    /// AppendEntries answered with `Conflict` (the follower's log did not match), by `(leader, follower)`.
    pub append_conflicts: BTreeMap<(NodeId, NodeId), u64>,
    /// Log entries carried by AppendEntries requests, by `(leader, follower)` (counted when sent).
    pub entries_sent: BTreeMap<(NodeId, NodeId), u64>,
    /// Vote requests answered.
    pub vote_responses: u64,
    /// Truncations of a durable log (each removes a conflicting suffix).
    pub truncations: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Restarts whose disk lost the tail of the log (see
    /// [`Cluster::restart_with_lost_tail`](crate::Cluster::restart_with_lost_tail)); only those that
    /// lost at least one entry.
    pub disk_faults: u64,
    /// Entries those disk faults lost, in all.
    pub entries_lost_to_disk: u64,
    /// Votes refused by a node that lost entries to a disk fault and had not caught up, which it
    /// would otherwise have granted, to a candidate lacking a committed entry: the refusals that
    /// kept that entry. (Counted from the answers and the record; an estimate of where the
    /// catching-up rule decided, since the answer does not say why.)
    pub votes_withheld_after_disk_fault: u64,
    /// InstallSnapshot requests (chunks) sent, by `(leader, follower)`.
    pub snapshot_chunks_sent: BTreeMap<(NodeId, NodeId), u64>,
    /// InstallSnapshot requests answered (any answer), by `(leader, follower)`.
    pub snapshot_chunks_answered: BTreeMap<(NodeId, NodeId), u64>,
    /// InstallSnapshot requests answered `Installed`, by `(leader, follower)`.
    pub snapshots_installed: BTreeMap<(NodeId, NodeId), u64>,
    /// Snapshots storages acknowledged storing (`install_snapshot` calls; built locally or received).
    pub snapshot_stores: u64,
    /// Purges (log compactions) storages acknowledged that removed entries.
    pub purges: u64,
    /// Snapshot chunks read from storage (to be sent).
    pub snapshot_chunk_reads: u64,
    /// State machine restores from a snapshot (at a restart, or a snapshot from the leader).
    pub restores: u64,
    /// Entries that, while not yet committed, came to be held durably by a majority of the voters of
    /// a joint configuration (the configuration in force on the node that just appended them) but
    /// not by a majority of its outgoing voters: the moment a leader counting the new voters alone
    /// would commit them, which Raft forbids (thesis, section 4.3). Counted once per index.
    pub joint_new_majority_only: u64,
    /// Reads without a log entry served ([`Client::read_on`](crate::Client::read_on)).
    pub reads_served: u64,
    /// Of those, reads served on a node that did not lead when asked (follower reads).
    pub follower_reads_served: u64,
    /// Reads without a log entry that failed (refused, lost, timed out): nothing was read.
    pub reads_failed: u64,
    /// Reads asked of a node that said it led a term for which a newer leader had already been
    /// seen: a deposed leader that does not know it yet, which must not serve them from its state.
    pub reads_on_deposed_leader: u64,
    /// Of those, the reads served (each judged by the linearizability check like any other).
    pub reads_on_deposed_leader_served: u64,
    /// Membership changes acknowledged through [`Cluster::change_membership`](crate::Cluster::change_membership).
    pub membership_changes: u64,
}

impl HarnessStats {
    /// The total number of `Conflict` answers.
    pub fn total_conflicts(&self) -> u64 {
        self.append_conflicts.values().sum()
    }
}
