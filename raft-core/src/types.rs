//! The vocabulary of the protocol: ids, terms, log positions, entries, hard state and membership.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

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
    ///
    /// Boxed so that the payload of every other entry stays as small as its command: a
    /// [`Membership`] is four collections (about 100 bytes), and each entry's payload is one
    /// allocation of the size of the largest variant. The box serializes as the membership itself,
    /// so the wire and disk formats do not see it.
    Membership(Box<Membership>),
}

/// One entry of the replicated log.
///
/// Cloning an entry is cheap: its payload is shared by reference count, so the engine's log, the
/// storage's append, every follower's AppendEntries and the apply batch hold the same payload, made
/// once when the leader accepted the proposal (or decoded once when it arrived from the network or
/// from disk). The shared payload serializes exactly as an `EntryPayload` (serde's `rc` feature), so
/// the wire and disk formats do not see it. An entry clones whatever its command type (no
/// `C: Clone` bound), since a clone copies only the reference.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// Term and index of the entry.
    pub log_id: LogId,
    /// What the entry carries, shared (never deep-copied by the library).
    pub payload: Arc<EntryPayload<C>>,
}

impl<C> Clone for Entry<C> {
    fn clone(&self) -> Self {
        Entry {
            log_id: self.log_id,
            payload: Arc::clone(&self.payload),
        }
    }
}

impl<C> Entry<C> {
    /// An entry carrying `payload`.
    pub fn new(log_id: LogId, payload: EntryPayload<C>) -> Self {
        Entry {
            log_id,
            payload: Arc::new(payload),
        }
    }

    /// The application command, if the entry carries one.
    pub fn command(&self) -> Option<&C> {
        match &*self.payload {
            EntryPayload::Command(command) => Some(command),
            _ => None,
        }
    }

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

/// Where a member can be reached, as the membership records it: the log carries it to every node, so
/// a transport can learn the address of a member that joined after it started.
///
/// Both fields are opaque to Raft. `addr` is the one a transport reads (`raft-net-tcp` parses it as
/// a socket address); `data` is the application's (say, the address of its client API). Like
/// etcd's `ConfChange.context` and hashicorp's `ServerAddress`, it is a plain value rather than a
/// type parameter, so that the storage and network traits stay generic over the command alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// The address of the node's Raft transport, in the transport's own syntax.
    #[serde(default)]
    pub addr: String,
    /// Anything else the application wants every member to know about the node.
    #[serde(default)]
    pub data: String,
}

impl Node {
    /// A node reached at `addr`, with no application data.
    pub fn new(addr: impl Into<String>) -> Self {
        Node {
            addr: addr.into(),
            data: String::new(),
        }
    }

    /// A node reached at `addr`, carrying `data` for the application.
    pub fn with_data(addr: impl Into<String>, data: impl Into<String>) -> Self {
        Node {
            addr: addr.into(),
            data: data.into(),
        }
    }
}

/// A cluster configuration: who votes, who only follows the log, and where each member is.
///
/// While a change of voters is under way the configuration is *joint* (Raft thesis, section 4.3):
/// `old_voters` holds the voters being replaced, and elections and commitment need a majority of
/// `voters` **and** a majority of `old_voters`. A membership takes effect on a node as soon as it is
/// in the node's log, committed or not (thesis, section 4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the (new, when joint) configuration: their votes count for elections and
    /// commitment.
    pub voters: BTreeSet<NodeId>,
    /// While joint: the voters of the outgoing configuration, whose majority is needed as well.
    /// `None` outside a change.
    #[serde(default)]
    pub old_voters: Option<BTreeSet<NodeId>>,
    /// Members that receive the log and snapshots but neither vote nor count toward commitment.
    /// Never voters of the (new) configuration; a voter being demoted is in `old_voters` and here.
    #[serde(default)]
    pub learners: BTreeSet<NodeId>,
    /// Where members are reached. Members without an entry are reached however the transport was
    /// configured (say, the addresses given at start).
    #[serde(default)]
    pub nodes: BTreeMap<NodeId, Node>,
}

impl Membership {
    /// A membership of the given voters, with no learners and no addresses.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// The same membership, recording `node` as where `id` is reached.
    #[must_use]
    pub fn with_node(mut self, id: NodeId, node: Node) -> Self {
        self.nodes.insert(id, node);
        self
    }

    /// Whether `id` is a voter, of either configuration while joint: a node that may campaign and
    /// whose vote may count.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.old_voters.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a member at all: a voter of either configuration or a learner. A leader
    /// replicates to every member.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.contains(id) || self.is_learner(id)
    }

    /// Whether a change of voters is under way (the joint configuration C_old,new).
    pub fn is_joint(&self) -> bool {
        self.old_voters.is_some()
    }

    /// Every voter of either configuration, each once.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        if let Some(old) = &self.old_voters {
            all.extend(old.iter().copied());
        }
        all
    }

    /// Every member: voters of either configuration and learners, each once.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.all_voters();
        all.extend(self.learners.iter().copied());
        all
    }

    /// How many of `voters` make a majority of them. (While joint, a majority of `old_voters` is
    /// needed as well: see [`is_quorum`](Self::is_quorum).)
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration a joint one leads to (C_new): its voters and learners, and the addresses
    /// of those; a membership that is not joint, unchanged.
    #[must_use]
    pub fn leave_joint(&self) -> Membership {
        let mut next = self.clone();
        next.old_voters = None;
        let members = next.members();
        next.nodes.retain(|id, _| members.contains(id));
        next
    }

    /// Whether `granted` holds a majority of the voters (of both configurations while joint).
    /// Nodes that are not voters are not counted.
    pub fn is_quorum<'a>(&self, granted: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let granted: BTreeSet<NodeId> = granted.into_iter().copied().collect();
        let majority_of =
            |voters: &BTreeSet<NodeId>| voters.intersection(&granted).count() > voters.len() / 2;
        majority_of(&self.voters) && self.old_voters.as_ref().is_none_or(majority_of)
    }

    /// The highest index a majority holds (of both configurations while joint), given each voter's
    /// match index. 0 with no voters.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        let majority_index = |voters: &BTreeSet<NodeId>| -> LogIndex {
            if voters.is_empty() {
                return 0;
            }
            let mut indexes: Vec<LogIndex> = voters.iter().map(|&v| matched(v)).collect();
            indexes.sort_unstable_by(|a, b| b.cmp(a));
            indexes[voters.len() / 2]
        };
        let new = majority_index(&self.voters);
        match &self.old_voters {
            Some(old) => new.min(majority_index(old)),
            None => new,
        }
    }

    /// Checks the invariants every membership keeps: at least one voter (in each configuration),
    /// no learner among the (new) voters, and addresses only for members.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("no voters".into());
        }
        if self.old_voters.as_ref().is_some_and(|o| o.is_empty()) {
            return Err("a joint configuration with no outgoing voters".into());
        }
        if let Some(id) = self.learners.iter().find(|id| self.voters.contains(id)) {
            return Err(format!("node {id} is both a voter and a learner"));
        }
        if let Some(id) = self.nodes.keys().find(|&&id| !self.is_member(id)) {
            return Err(format!("an address for node {id}, which is not a member"));
        }
        Ok(())
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters {:?}", self.voters)?;
        if let Some(old) = &self.old_voters {
            write!(f, " joint with {old:?}")?;
        }
        if !self.learners.is_empty() {
            write!(f, ", learners {:?}", self.learners)?;
        }
        Ok(())
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

#[cfg(test)]
mod entry_clone_tests {
    use super::*;

    /// A command type that cannot be cloned.
    #[derive(Debug, PartialEq, Eq)]
    struct NotClone(u64);

    #[test]
    fn an_entry_clones_by_sharing_its_payload_whatever_the_command() {
        let entry = Entry::new(LogId::new(1, 1), EntryPayload::Command(NotClone(7)));
        let copy = entry.clone();
        assert!(Arc::ptr_eq(&entry.payload, &copy.payload));
        assert_eq!(copy.log_id, entry.log_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry's payload is one allocation the size of the largest variant, so a membership
    /// stored inline would make each command entry about 100 bytes whatever its command.
    #[test]
    fn an_entry_payload_is_as_small_as_its_command() {
        assert_eq!(std::mem::size_of::<EntryPayload<()>>(), 16);
        assert_eq!(std::mem::size_of::<EntryPayload<u64>>(), 16);
        assert!(std::mem::size_of::<Membership>() > 64);
    }

    /// The boxed membership is invisible to serde: it encodes as the membership itself.
    #[test]
    fn a_membership_payload_serializes_as_the_membership() {
        let m = Membership::new([1, 2, 3]);
        let payload: EntryPayload<()> = EntryPayload::Membership(Box::new(m.clone()));
        let as_payload = serde_json::to_value(&payload).expect("serializes");
        let expected =
            serde_json::json!({ "Membership": serde_json::to_value(&m).expect("serializes") });
        assert_eq!(as_payload, expected);
    }
}
