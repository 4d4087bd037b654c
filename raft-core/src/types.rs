//! The vocabulary of the protocol: ids, terms, log positions, entries, hard state and membership.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a node of the cluster. Chosen by the user; must be unique within a cluster and never reused
/// for a different machine's data.
pub type NodeId = u64;

/// A Raft term: a logical clock that only grows. Term 0 is the term before any election.
pub type Term = u64;

/// A position in the replicated log. The first entry has index 1; index 0 means "before the first entry".
pub type LogIndex = u64;

/// The identity of a log entry: its term and its index.
///
/// Ordered by term first, then index, which is exactly the "at least as up-to-date" order of the Raft
/// paper (section 5.4.1) when applied to the last entries of two logs. `LogId::default()` (term 0, index
/// 0) stands for the empty log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// The term in which a leader created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
}

impl LogId {
    /// Builds a log id.
    pub const fn new(term: Term, index: LogIndex) -> Self {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload<C> {
    /// The no-op a new leader appends when it takes office, so that it can commit entries of earlier
    /// terms (Raft paper, section 8).
    Blank,
    /// An application command, applied to the state machine once committed.
    Command(C),
    /// A cluster configuration. It takes effect on every node as soon as it is in the node's log
    /// (thesis, section 4.1), committed or not.
    Membership(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// Term and index of the entry.
    pub log_id: LogId,
    /// What the entry carries.
    pub payload: EntryPayload<C>,
}

impl<C> Entry<C> {
    /// The entry's index.
    pub fn index(&self) -> LogIndex {
        self.log_id.index
    }

    /// The entry's term.
    pub fn term(&self) -> Term {
        self.log_id.term
    }
}

/// The state a node must keep durable across restarts besides its log (Raft paper, figure 2).
///
/// Persisted before any message that depends on it leaves the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any. At most one per term.
    pub voted_for: Option<NodeId>,
}

/// The set of voting members of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The nodes whose votes count for elections and commitment.
    pub voters: BTreeSet<NodeId>,
}

impl Membership {
    /// A membership of the given voters.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
        }
    }

    /// Whether `id` is a voter.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The number of votes (or replicas) that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `granted` (a set of voters) is a majority.
    pub fn is_quorum<'a>(&self, granted: impl IntoIterator<Item = &'a NodeId>) -> bool {
        granted.into_iter().filter(|id| self.contains(**id)).count() >= self.quorum()
    }
}

/// Describes a snapshot: the last entry it covers and the membership in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log entry the snapshot includes.
    pub last_log_id: LogId,
    /// The membership as of `last_log_id`.
    pub membership: Membership,
}

/// A stored snapshot: its metadata and the state machine's serialized state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The bytes [`crate::StateMachine::snapshot`] produced.
    pub data: Vec<u8>,
}

/// The role a node plays at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    #[default]
    Follower,
    /// Asks for pre-votes (without raising its term) to learn whether it could win an election.
    PreCandidate,
    /// Asks for votes to become leader.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
}
