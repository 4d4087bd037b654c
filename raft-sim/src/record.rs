//! [`Record`]: everything the harness has observed about one cluster that more than one checker
//! reads: each node's durable state and state machines ([`NodeObs`]), the leaders seen, the durable
//! votes, the prefix hash of every entry ever durable, the committed entries, and the client
//! history. The recorder (`world`) writes it; the checkers (`invariants`) read it.
//!
//! ## Compacted entries
//!
//! A node "holds" a committed entry it compacted when its compacted prefix hashes to the committed
//! prefix of the same length; the queries below ([`Record::id_at`], [`Record::prefix_hash`],
//! [`Record::holds_committed`]) answer for compacted indexes from the committed record on that
//! evidence, so comparisons of logs stay exact where the entries are gone. Whether a node's compacted
//! prefix *is* the committed one is itself checked whenever its compaction point moves (module
//! `invariants::snapshots`).

use std::collections::{BTreeMap, BTreeSet};

use raft_core::{Entry, EntryPayload, LogId, LogIndex, Membership, NodeId, Term};

use crate::chain::chain_hash;
use crate::history::History;
use crate::node_model::NodeObs;

/// A committed entry, as first applied by some node.
#[derive(Clone, Debug)]
pub(crate) struct Committed {
    pub(crate) log_id: LogId,
    pub(crate) payload: EntryPayload<u64>,
    /// The hash of the committed log prefix up to and including this entry.
    pub(crate) digest: u64,
    /// The node that applied it first.
    pub(crate) first_node: NodeId,
    /// The highest durable term of any node when it was first applied: the entry was committed by a
    /// leader of at most this term, so every leader of a higher term must hold it.
    pub(crate) max_term: Term,
}

/// The first node seen holding an entry durably, and the prefix hash it held it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FirstHeld {
    /// The hash of the log prefix up to and including the entry.
    pub(crate) hash: u64,
    /// The node.
    pub(crate) node: NodeId,
}

/// The shared observations of one cluster.
#[derive(Debug)]
pub(crate) struct Record {
    /// What is known of each node: every node ever started (the initial ones from the start), members
    /// or not.
    pub(crate) nodes: BTreeMap<NodeId, NodeObs>,
    /// Nodes stopped for good after they left the cluster: they keep their record (their votes and
    /// leaderships, their logs for log matching), but the end-of-run checks, which compare the logs
    /// of the cluster as it ends, leave them out.
    pub(crate) retired: BTreeSet<NodeId>,
    /// Membership changes acknowledged to the harness (the resulting membership, in the order
    /// acknowledged): each must be committed, and in force or superseded at the end.
    pub(crate) acknowledged_changes: Vec<Membership>,
    /// Leaders as seen in metrics: term -> nodes that said they lead it.
    pub(crate) leaders: BTreeMap<Term, BTreeSet<NodeId>>,
    /// Durable votes: term -> voter -> the candidates it voted for (more than one is a violation).
    pub(crate) votes: BTreeMap<Term, BTreeMap<NodeId, BTreeSet<NodeId>>>,
    /// `(index, log id)` -> the first durable copy of every entry ever durable on any node.
    pub(crate) chains: BTreeMap<(LogIndex, LogId), FirstHeld>,
    /// Every committed entry, by index, as first applied.
    pub(crate) committed: BTreeMap<LogIndex, Committed>,
    /// The committed membership entries, by index.
    pub(crate) memberships: BTreeMap<LogIndex, Membership>,
    /// Where each command value was first committed.
    pub(crate) positions: BTreeMap<u64, LogIndex>,
    /// The highest durable term of any node.
    pub(crate) max_term: Term,
    /// Every client write.
    pub(crate) history: History,
}

impl Record {
    /// An empty record of a cluster whose first nodes are `nodes`.
    pub(crate) fn new(nodes: BTreeSet<NodeId>) -> Self {
        Record {
            nodes: nodes.iter().map(|&id| (id, NodeObs::default())).collect(),
            retired: BTreeSet::new(),
            acknowledged_changes: Vec::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            chains: BTreeMap::new(),
            committed: BTreeMap::new(),
            memberships: BTreeMap::new(),
            positions: BTreeMap::new(),
            max_term: 0,
            history: History::default(),
        }
    }

    /// The nodes the end-of-run checks judge: every node ever started but those
    /// [retired](Self::retired).
    pub(crate) fn final_nodes(&self) -> impl Iterator<Item = (&NodeId, &NodeObs)> {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.retired.contains(id))
    }

    /// Node `id`'s record, created empty if the node was unknown.
    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut NodeObs {
        self.nodes.entry(id).or_default()
    }

    // ----- recording -----

    /// Records that node `id` holds `log_id` on a prefix hashing to `hash`, and returns the first
    /// such record (this one, if it is the first).
    pub(crate) fn record_chain(&mut self, id: NodeId, log_id: LogId, hash: u64) -> FirstHeld {
        *self
            .chains
            .entry((log_id.index, log_id))
            .or_insert(FirstHeld { hash, node: id })
    }

    /// Records a durable vote of `voter` for `candidate` in `term`.
    pub(crate) fn record_vote(&mut self, term: Term, voter: NodeId, candidate: NodeId) {
        self.votes
            .entry(term)
            .or_default()
            .entry(voter)
            .or_default()
            .insert(candidate);
    }

    /// Records `entry`, first applied by node `id`, as committed: its position (for a command value
    /// not committed before), its membership, and its prefix hash (chained on the committed entry
    /// before it; on the empty prefix if there is none, which the state machine checks report).
    pub(crate) fn commit(&mut self, id: NodeId, entry: &Entry<u64>) {
        let index = entry.log_id.index;
        if let EntryPayload::Command(v) = *entry.payload {
            self.positions.entry(v).or_insert(index);
        }
        if let EntryPayload::Membership(m) = &*entry.payload {
            self.memberships.insert(index, Membership::clone(m));
        }
        let prev = match index {
            0 | 1 => 0,
            _ => self.committed.get(&(index - 1)).map_or(0, |p| p.digest),
        };
        self.committed.insert(
            index,
            Committed {
                log_id: entry.log_id,
                payload: (*entry.payload).clone(),
                digest: chain_hash(prev, entry),
                first_node: id,
                max_term: self.max_term,
            },
        );
    }

    // ----- what a node holds, compacted entries included -----

    /// Whether node `obs`'s compacted prefix (up to `base`) is the committed log prefix of that
    /// length (always, for an empty one).
    pub(crate) fn compacted_prefix_committed(&self, obs: &NodeObs) -> bool {
        obs.base.index == 0
            || self
                .committed
                .get(&obs.base.index)
                .is_some_and(|c| c.log_id == obs.base && Some(c.digest) == obs.base_chain())
    }

    /// The id of the entry at `index` in node `obs`'s durable log, compacted or not; `None` past its
    /// end, or in a compacted prefix that is not the committed one.
    pub(crate) fn id_at(&self, obs: &NodeObs, index: LogIndex) -> Option<LogId> {
        if index > obs.base.index {
            obs.entry(index).map(|e| e.log_id)
        } else if index == obs.base.index {
            Some(obs.base)
        } else if self.compacted_prefix_committed(obs) {
            self.committed.get(&index).map(|c| c.log_id)
        } else {
            None
        }
    }

    /// The hash of node `obs`'s durable log prefix up to `index`, compacted or not, if known.
    pub(crate) fn prefix_hash(&self, obs: &NodeObs, index: LogIndex) -> Option<u64> {
        if index >= obs.base.index {
            obs.chain_at(index)
        } else if self.compacted_prefix_committed(obs) {
            self.committed.get(&index).map(|c| c.digest)
        } else {
            None
        }
    }

    /// Whether node `obs`'s durable log holds the committed entry at `index`: as an entry, or in a
    /// compacted prefix that is the committed one.
    pub(crate) fn holds_committed(&self, obs: &NodeObs, index: LogIndex) -> bool {
        let Some(c) = self.committed.get(&index) else {
            return false;
        };
        if index > obs.base.index {
            obs.entry(index)
                .is_some_and(|e| e.log_id == c.log_id && *e.payload == c.payload)
        } else {
            self.compacted_prefix_committed(obs)
        }
    }

    /// The votes node `voter` made durable in `term` (one at most, unless something is wrong).
    pub(crate) fn durable_votes(&self, term: Term, voter: NodeId) -> BTreeSet<NodeId> {
        self.votes
            .get(&term)
            .and_then(|v| v.get(&voter))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether node `id` was seen leading `term`.
    pub(crate) fn was_leader(&self, id: NodeId, term: Term) -> bool {
        self.leaders.get(&term).is_some_and(|l| l.contains(&id))
    }
}
