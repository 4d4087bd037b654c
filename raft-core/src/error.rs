//! Error types. Variants a caller must branch on are separate; each says whether retrying may help.

use crate::types::{LogIndex, NodeId};

/// A [`Config`](crate::Config) setting is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `election_timeout_min` is zero.
    #[error("election_timeout_min must be above zero")]
    ZeroElectionTimeout,
    /// The election timeout range is empty.
    #[error("election timeout range is empty: min {min} ms must be below max {max} ms")]
    ElectionTimeoutRange {
        /// The configured minimum, in milliseconds.
        min: u128,
        /// The configured maximum, in milliseconds.
        max: u128,
    },
    /// The heartbeat interval is zero or not below the election timeout.
    #[error("heartbeat_interval ({heartbeat} ms) must be above zero and below election_timeout_min ({election_timeout_min} ms)")]
    HeartbeatInterval {
        /// The configured heartbeat interval, in milliseconds.
        heartbeat: u128,
        /// The configured minimum election timeout, in milliseconds.
        election_timeout_min: u128,
    },
    /// A limit that must be positive is zero.
    #[error("{0} must be above zero")]
    ZeroSetting(&'static str),
    /// Lease reads rely on followers refusing votes while they hear from their leader, which only
    /// check-quorum turns on.
    #[error("ReadPolicy::Lease needs check_quorum")]
    LeaseWithoutCheckQuorum,
    /// The [`LogGrowth`](crate::SnapshotPolicy::LogGrowth) factor is 0 (a snapshot after every
    /// `min_entries`, whatever the state's size: say so with `AfterAppliedEntries`) or above the
    /// largest accepted.
    #[error("the snapshot policy's log growth factor ({factor}) must be between 1 and {max}")]
    LogGrowthFactor {
        /// The configured factor.
        factor: u64,
        /// [`SnapshotPolicy::MAX_LOG_GROWTH_FACTOR`](crate::SnapshotPolicy::MAX_LOG_GROWTH_FACTOR).
        max: u64,
    },
    /// The clock drift bound leaves no lease.
    #[error("the lease's clock drift bound ({drift} ms) must be below election_timeout_min ({election_timeout_min} ms)")]
    LeaseDriftBound {
        /// The configured drift bound, in milliseconds.
        drift: u128,
        /// The configured minimum election timeout, in milliseconds.
        election_timeout_min: u128,
    },
}

/// A storage operation failed. The driver treats every storage error as fatal for the node: it stops
/// rather than run on with state it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O operation failed.
    #[error("storage I/O failed while {context}: {source}")]
    Io {
        /// What the storage was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is damaged or inconsistent.
    #[error("storage is corrupted: {0}")]
    Corrupted(String),
    /// The requested entries were compacted into a snapshot.
    #[error("log entries up to {compacted_upto} are compacted; asked for index {requested}")]
    Compacted {
        /// The last compacted index.
        compacted_upto: LogIndex,
        /// The index asked for.
        requested: LogIndex,
    },
    /// The caller broke the method's contract (e.g. an append that leaves a gap).
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    /// Any other failure of a user's implementation.
    #[error("storage failed: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// An RPC to a peer did not produce an answer. Always retryable: the driver retries on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The peer could not be reached (refused, partitioned, closed, unknown address).
    #[error("node {target} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        target: NodeId,
        /// Why, for the logs.
        reason: String,
    },
    /// No answer came in time.
    #[error("request to node {target} timed out")]
    Timeout {
        /// The peer.
        target: NodeId,
    },
    /// The peer answered with something that is not a valid response.
    #[error("invalid response from node {target}: {reason}")]
    InvalidResponse {
        /// The peer.
        target: NodeId,
        /// What was wrong.
        reason: String,
    },
}

/// The state machine failed to apply, snapshot or restore. Fatal for the node.
#[derive(Debug, thiserror::Error)]
#[error("state machine failed: {0}")]
pub struct StateMachineError(pub Box<dyn std::error::Error + Send + Sync>);

impl StateMachineError {
    /// Wraps any error.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StateMachineError(e.into())
    }
}

/// Why a client write did not return a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientWriteError {
    /// This node is not the leader; nothing was proposed. Retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes is leader.
        leader_hint: Option<NodeId>,
    },
    /// The command was proposed, but this node lost leadership before it was applied, and did not
    /// see it applied within `2 x election_timeout_max` after that (or saw another entry take its
    /// place, or a snapshot cover it). It may still commit under the new leader; the outcome is
    /// unknown. A retry may apply the command twice unless
    /// the command is idempotent.
    #[error("leadership lost before the write was applied; it may or may not commit (leader hint: {leader_hint:?})")]
    OutcomeUnknown {
        /// The node this one believes is leader now.
        leader_hint: Option<NodeId>,
    },
    /// The command is larger than [`Config::max_entry_bytes`](crate::Config) (by the state machine's
    /// [`command_size`](crate::StateMachine::command_size)); nothing was proposed.
    #[error("the command is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// The command's size, as estimated.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The node is shutting down or has stopped; the outcome of a proposed command is unknown.
    #[error(transparent)]
    Stopped(#[from] StoppedError),
}

impl ClientWriteError {
    /// Whether nothing was proposed, so retrying elsewhere cannot apply the command twice. (A
    /// [`TooLarge`](Self::TooLarge) command was not proposed either, but will be refused anywhere.)
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(self, ClientWriteError::NotLeader { .. })
    }
}

/// Why [`Raft::initialize`](crate::Raft::initialize) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitializeError {
    /// The node already has a log or a term: it belongs to a cluster.
    #[error("node is already initialized (it has a log or a term)")]
    AlreadyInitialized,
    /// The membership is empty or does not include this node.
    #[error("invalid initial membership: {0}")]
    InvalidMembership(String),
    /// The node has stopped.
    #[error(transparent)]
    Stopped(#[from] StoppedError),
}

/// A call into a node that is not running (shut down, or stopped on a fatal storage or state
/// machine error). Every API error that can meet a stopped node carries this one type, with the reason
/// the node stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node has stopped: {0}")]
pub struct StoppedError(pub String);

/// Why a leadership transfer did not hand leadership over. In every case this node stays (or
/// becomes again) what it was: a leader whose transfer failed takes proposals again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// This node is not the leader, so it has nothing to transfer.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes is leader.
        leader_hint: Option<NodeId>,
    },
    /// The target is not a voter of the current membership (or is this node).
    #[error("node {target} is not another voter of the current membership")]
    NotAVoter {
        /// The target asked for.
        target: NodeId,
    },
    /// No target was named, and no other voter answered within the minimum election timeout (or
    /// there is none): nobody could take over.
    #[error("no other voter answered recently: nobody to transfer leadership to")]
    NoTarget,
    /// The target did not become leader within the transfer's deadline (an election timeout): it
    /// could not be brought up to date, or lost its election. The old leader leads on.
    #[error("node {target} did not take over within the transfer deadline")]
    TimedOut {
        /// The target.
        target: NodeId,
    },
    /// The node is shutting down or has stopped.
    #[error(transparent)]
    Stopped(#[from] StoppedError),
}

/// Why a linearizable read could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node is not the leader and knows no leader to ask (or the leader refused: it is not the
    /// leader either). Retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes is leader.
        leader_hint: Option<NodeId>,
    },
    /// Leadership was lost (or the leader could not be reached) before the read was confirmed.
    /// Nothing was read; retrying is always safe.
    #[error("leadership was lost before the read was confirmed (leader hint: {leader_hint:?})")]
    LeadershipLost {
        /// The node this one believes is leader now.
        leader_hint: Option<NodeId>,
    },
    /// The read was not confirmed, or this node did not apply up to its read index, in time.
    #[error("the read was not confirmed in time")]
    TimedOut,
    /// The node is shutting down or has stopped.
    #[error(transparent)]
    Stopped(#[from] StoppedError),
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This node is not the leader; nothing was proposed. Retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes is leader.
        leader_hint: Option<NodeId>,
    },
    /// Another change is not finished: a membership entry is not committed yet, or a joint
    /// configuration is in force. One change at a time; retry once it completes.
    #[error("another membership change is in progress")]
    ChangeInProgress,
    /// The leader has not yet committed an entry of its own term, so it cannot tell which membership
    /// is committed (the single-server change bug, Ongaro on raft-dev, 2015). Clears within a
    /// round trip of an election; retry.
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// A node to become a voter is not a learner of the current membership: add it as a learner
    /// first, so it catches up before its vote counts.
    #[error("node {id} is not a learner: add it as a learner first")]
    NotALearner {
        /// The node.
        id: NodeId,
    },
    /// A learner to become a voter is too far behind the leader, or has not answered within the
    /// minimum election timeout. Wait until it catches up (see
    /// [`Raft::wait_caught_up`](crate::Raft::wait_caught_up)).
    #[error("learner {id} is not caught up ({lag} entries behind the leader)")]
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// How many entries it lacks (`u64::MAX` if it has not answered recently).
        lag: u64,
    },
    /// The node named is not a member (of the role the change needs).
    #[error("node {id} is not a {role}")]
    NotAMember {
        /// The node.
        id: NodeId,
        /// What it should have been: "member", "voter" or "learner".
        role: &'static str,
    },
    /// The node named is already a voter.
    #[error("node {id} is already a voter")]
    AlreadyAVoter {
        /// The node.
        id: NodeId,
    },
    /// The resulting membership would be invalid (no voters, say).
    #[error("invalid membership: {0}")]
    Invalid(String),
    /// The change was proposed but not seen complete in time (the leader changed, or the cluster
    /// lost its majority meanwhile). It may still complete: read the membership to find out.
    #[error("the change was proposed but did not complete in time; it may still complete")]
    TimedOut,
    /// The node is shutting down or has stopped.
    #[error(transparent)]
    Stopped(#[from] StoppedError),
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading the initial state from storage failed.
    #[error("could not read state from storage: {0}")]
    Storage(#[from] StorageError),
    /// The state machine could not report its state.
    #[error("could not read the state machine's state: {0}")]
    StateMachine(#[from] StateMachineError),
}
