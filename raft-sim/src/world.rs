//! The shared record of everything the harness observes, and the checks that run on it.
//!
//! Observations arrive from four places, all on the test's single thread:
//! * the storage wrapper ([`ObservedStorage`](crate::ObservedStorage)): every hard state, append,
//!   truncation, purge and snapshot a node's storage acknowledged (the *durable* state), and every
//!   snapshot chunk it read;
//! * the network wrapper ([`ObservedNetwork`](crate::ObservedNetwork)): RPC answers as the sender sees
//!   them;
//! * the test state machine ([`LogStateMachine`](crate::LogStateMachine)): every applied entry and
//!   every restored snapshot;
//! * the metrics watchers: who says it is leader in which term;
//!
//! plus the client history recorded by [`Client`](crate::Client). Checks that can run at the moment of
//! an observation do so and record a violation; the rest run on demand.
//!
//! ## Compaction
//!
//! The model of each node's durable log is its compaction point `base` (the last purged entry, or the
//! last entry of a snapshot that replaced the log), the hash of the log prefix up to `base`, and the
//! entries after it, each with the hash of the prefix up to it. The prefix hash of `base` is known
//! exactly: 0 for the empty prefix; the node's own hash of that entry when it purges; and, when a
//! snapshot from the leader replaces the log, the digest the snapshot carries (the hash of every entry
//! the state machine applied, [`AppliedState`]), which is checked against the committed prefix when the
//! snapshot is stored. So compacted entries are never guessed: a node "holds" a committed entry it
//! compacted when its compacted prefix hashes to the committed prefix of the same length (checked
//! whenever `base` moves), and comparisons of logs (Log Matching, Leader Append-Only, Leader
//! Completeness, no lost acknowledged write) use those prefix hashes where the entries are gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{slice_chunk, SnapshotChunk};
use raft_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogState, Membership, NodeId, Snapshot,
    SnapshotMeta, Term,
};

use crate::history::History;
use crate::state_machine::{chain_hash, AppliedState};

/// The world, shared by every observer of one cluster.
pub(crate) type Shared = Arc<Mutex<World>>;

pub(crate) fn lock(world: &Shared) -> MutexGuard<'_, World> {
    // Observers never panic while holding the lock except through a bug in the harness itself, and
    // the state is still the best record we have: keep using it.
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most this many violations are kept (the first ones are the interesting ones).
const MAX_VIOLATIONS: usize = 32;

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

/// The leader-side samples of one node in one term.
#[derive(Clone, Debug, Default)]
struct LeaderSample {
    /// The last entry of the durable log at the previous sample, with its prefix hash.
    last: Option<(LogId, u64)>,
    /// Committed entries up to this index are known to be in this leader's log.
    completeness_upto: LogIndex,
}

/// One start (incarnation) of a node's state machine.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmObs {
    /// Every entry it applied, in order.
    pub(crate) applied: Vec<(LogId, EntryPayload<u64>)>,
    /// Every snapshot it restored: how many entries it had applied before, and the snapshot's last
    /// log id.
    pub(crate) restores: Vec<(usize, LogId)>,
    /// Its state after its latest apply or restore, as the state machine reported it.
    pub(crate) state: AppliedState,
}

/// What the harness knows of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeObs {
    /// The durable hard state.
    pub(crate) hard_state: HardState,
    /// The compaction point: the last purged entry, or the last entry of the snapshot that replaced
    /// the log (the default id if none).
    pub(crate) base: LogId,
    /// The hash of the log prefix up to and including `base` (see the module docs). `None` only once
    /// the storage reopened with a state it had not acknowledged (a durability violation) and no
    /// other evidence gave it.
    base_chain: Option<u64>,
    /// The durable log after `base`.
    pub(crate) log: Vec<Entry<u64>>,
    /// `chain[i]` is the hash of the log prefix up to `log[i]` (meaningful when `base_chain` is known).
    chain: Vec<u64>,
    /// The durable snapshot.
    pub(crate) snapshot: Option<Snapshot>,
    /// The current incarnation (1 for the first start).
    pub(crate) incarnation: u32,
    /// Each incarnation's state machine: `sms[incarnation - 1]`.
    pub(crate) sms: Vec<SmObs>,
    /// Whether the node runs.
    pub(crate) live: bool,
    leader_samples: BTreeMap<Term, LeaderSample>,
}

impl NodeObs {
    pub(crate) fn last_log_id(&self) -> LogId {
        self.log.last().map_or(self.base, |e| e.log_id)
    }

    /// The entry at `index` if the durable log holds it (not compacted, not past the end).
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry<u64>> {
        if index <= self.base.index {
            return None;
        }
        self.log.get((index - self.base.index - 1) as usize)
    }

    /// The last log id of the durable snapshot.
    pub(crate) fn snapshot_id(&self) -> Option<LogId> {
        self.snapshot.as_ref().map(|s| s.meta.last_log_id)
    }

    /// The current incarnation's state machine.
    pub(crate) fn current_sm(&self) -> Option<&SmObs> {
        self.sms.last()
    }

    /// The hash of the prefix up to `index`, for `base` and the entries after it.
    fn chain_at(&self, index: LogIndex) -> Option<u64> {
        let base_chain = self.base_chain?;
        if index == self.base.index {
            return Some(base_chain);
        }
        if index < self.base.index {
            return None;
        }
        self.chain
            .get((index - self.base.index - 1) as usize)
            .copied()
    }

    fn push(&mut self, entry: Entry<u64>) {
        let prev = self.chain.last().copied().or(self.base_chain).unwrap_or(0);
        self.chain.push(chain_hash(prev, &entry));
        self.log.push(entry);
    }

    fn set_log(&mut self, base: LogId, base_chain: Option<u64>, entries: Vec<Entry<u64>>) {
        self.base = base;
        self.base_chain = base_chain;
        self.log.clear();
        self.chain.clear();
        for e in entries {
            self.push(e);
        }
    }
}

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
}

impl HarnessStats {
    /// The total number of `Conflict` answers.
    pub fn total_conflicts(&self) -> u64 {
        self.append_conflicts.values().sum()
    }
}

/// Everything observed about one cluster.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) replay: String,
    pub(crate) voters: BTreeSet<NodeId>,
    pub(crate) nodes: BTreeMap<NodeId, NodeObs>,
    /// Leaders as seen in metrics: term -> nodes that said they lead it.
    pub(crate) leaders: BTreeMap<Term, BTreeSet<NodeId>>,
    /// Durable votes: term -> voter -> the candidates it voted for (more than one is a violation).
    votes: BTreeMap<Term, BTreeMap<NodeId, BTreeSet<NodeId>>>,
    /// The index of the no-op each leader appends on taking office, by term.
    blanks: BTreeMap<Term, LogIndex>,
    /// `(index, log id) -> prefix hash` of every entry ever durable on any node.
    chains: BTreeMap<(LogIndex, LogId), (u64, NodeId)>,
    /// Every committed entry, by index, as first applied.
    pub(crate) committed: BTreeMap<LogIndex, Committed>,
    /// The committed membership entries, by index.
    memberships: BTreeMap<LogIndex, Membership>,
    /// Where each command value was committed.
    pub(crate) positions: BTreeMap<u64, LogIndex>,
    /// The highest durable term of any node.
    max_term: Term,
    pub(crate) history: History,
    pub(crate) violations: Vec<String>,
    pub(crate) stats: HarnessStats,
    /// The last value handed out by `Client::next_value`.
    pub(crate) next_value: u64,
    /// Whether to print every observation (env `HARNESS_TRACE=1`), for debugging a failing seed.
    trace: bool,
    start: tokio::time::Instant,
}

impl World {
    pub(crate) fn new(seed: u64, replay: String, voters: BTreeSet<NodeId>) -> Self {
        World {
            seed,
            replay,
            nodes: voters.iter().map(|&id| (id, NodeObs::default())).collect(),
            voters,
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            blanks: BTreeMap::new(),
            chains: BTreeMap::new(),
            committed: BTreeMap::new(),
            memberships: BTreeMap::new(),
            positions: BTreeMap::new(),
            max_term: 0,
            history: History::default(),
            violations: Vec::new(),
            stats: HarnessStats::default(),
            next_value: 0,
            trace: std::env::var_os("HARNESS_TRACE").is_some_and(|v| v != "0"),
            start: tokio::time::Instant::now(),
        }
    }

    /// Prints an observation when tracing is on (`HARNESS_TRACE=1`), stamped with virtual time.
    pub(crate) fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("[{:>8.3}s] {}", self.start.elapsed().as_secs_f64(), what());
        }
    }

    /// Records a violation (once: a repeat of one already recorded is dropped, so that one fault seen
    /// over and over does not crowd out the others).
    pub(crate) fn violation(&mut self, msg: String) {
        self.trace(|| format!("VIOLATION: {msg}"));
        tracing::error!(seed = self.seed, "{msg}");
        if self.violations.len() < MAX_VIOLATIONS && !self.violations.contains(&msg) {
            self.violations.push(msg);
        }
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn node_mut(&mut self, id: NodeId) -> &mut NodeObs {
        self.nodes.entry(id).or_default()
    }

    // ----- what a node holds, compacted entries included -----

    /// Whether node `obs`'s compacted prefix (up to `base`) is the committed log prefix of that
    /// length (always, for an empty one).
    pub(crate) fn compacted_prefix_committed(&self, obs: &NodeObs) -> bool {
        obs.base.index == 0
            || self
                .committed
                .get(&obs.base.index)
                .is_some_and(|c| c.log_id == obs.base && Some(c.digest) == obs.base_chain)
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
                .is_some_and(|e| e.log_id == c.log_id && e.payload == c.payload)
        } else {
            self.compacted_prefix_committed(obs)
        }
    }

    /// Records a violation if node `id`'s compacted prefix is not the committed one. Every entry up to
    /// a compaction point went into a snapshot, so it was applied, so it is committed.
    fn check_base(&mut self, id: NodeId, when: &str) {
        let Some(obs) = self.nodes.get(&id) else {
            return;
        };
        if self.compacted_prefix_committed(obs) {
            return;
        }
        let msg = format!(
            "compaction: node {id}'s log is compacted up to {} ({when}), but that prefix (hash {:?}) is not the \
             committed one (committed there: {:?})",
            obs.base,
            obs.base_chain,
            self.committed
                .get(&obs.base.index)
                .map(|c| (c.log_id, c.digest))
        );
        self.violation(msg);
    }

    // ----- storage observations -----

    /// A node (re)opened its storage and read this state. From the second opening on, it must be
    /// exactly what the storage had acknowledged before the crash.
    pub(crate) fn on_open(
        &mut self,
        id: NodeId,
        hard_state: HardState,
        base: LogId,
        entries: Vec<Entry<u64>>,
        snapshot: Option<Snapshot>,
    ) {
        let obs = self.node_mut(id);
        if obs.incarnation > 0 {
            let same_log = obs.base == base && obs.log == entries;
            if obs.hard_state != hard_state || !same_log || obs.snapshot != snapshot {
                let msg = format!(
                    "durability: node {id} reopened its storage with hard state {hard_state:?}, base {base}, \
                     last entry {:?}, snapshot {:?}, but had acknowledged hard state {:?}, base {}, last entry \
                     {:?}, snapshot {:?} ({} vs {} entries{})",
                    entries.last().map(|e| e.log_id),
                    snapshot.as_ref().map(|s| s.meta.last_log_id),
                    obs.hard_state,
                    obs.base,
                    obs.log.last().map(|e| e.log_id),
                    obs.snapshot_id(),
                    entries.len(),
                    obs.log.len(),
                    if obs.snapshot != snapshot && obs.snapshot_id() == snapshot.as_ref().map(|s| s.meta.last_log_id) {
                        "; same snapshot id, different snapshot"
                    } else {
                        ""
                    }
                );
                self.violation(msg);
            }
        }
        self.trace(|| {
            format!(
                "node {id}: open storage: {hard_state:?}, base {base}, last {:?}, snapshot {:?}",
                entries.last().map(|e| e.log_id),
                snapshot.as_ref().map(|s| s.meta.last_log_id)
            )
        });
        let base_chain = {
            let obs = &self.nodes[&id];
            let from_snapshot = snapshot
                .as_ref()
                .filter(|s| s.meta.last_log_id == base)
                .and_then(|s| AppliedState::decode(&s.data).ok())
                .map(|s| s.digest);
            if obs.incarnation > 0 && obs.base == base && obs.base_chain.is_some() {
                obs.base_chain
            } else if base.index == 0 {
                Some(0)
            } else {
                from_snapshot.or_else(|| self.chains.get(&(base.index, base)).map(|c| c.0))
            }
        };
        let obs = self.node_mut(id);
        obs.hard_state = hard_state;
        obs.set_log(base, base_chain, entries);
        obs.snapshot = snapshot;
        obs.incarnation += 1;
        obs.sms.push(SmObs::default());
        obs.live = true;
        self.max_term = self.max_term.max(hard_state.term);
        let chained: Vec<(LogIndex, LogId, u64)> = {
            let obs = &self.nodes[&id];
            obs.log
                .iter()
                .filter_map(|e| {
                    obs.chain_at(e.log_id.index)
                        .map(|h| (e.log_id.index, e.log_id, h))
                })
                .collect()
        };
        for (index, log_id, h) in chained {
            self.check_chain(id, index, log_id, h);
        }
        self.check_base(id, "as reopened");
    }

    pub(crate) fn on_save_hard_state(&mut self, id: NodeId, hs: HardState) {
        self.trace(|| format!("node {id}: save {hs:?}"));
        let old = self.node_mut(id).hard_state;
        if hs.term < old.term {
            self.violation(format!(
                "hard state: node {id} saved term {} after term {} (terms must never go back)",
                hs.term, old.term
            ));
        } else if hs.term == old.term {
            if let Some(prev) = old.voted_for {
                if hs.voted_for != Some(prev) {
                    self.violation(format!(
                        "election safety: node {id} changed its vote in term {} from {prev} to {:?}",
                        hs.term, hs.voted_for
                    ));
                }
            }
        }
        self.node_mut(id).hard_state = hs;
        self.max_term = self.max_term.max(hs.term);
        if let Some(candidate) = hs.voted_for {
            let quorum = self.quorum();
            let term_votes = self
                .votes
                .entry(hs.term)
                .or_default()
                .entry(id)
                .or_default();
            term_votes.insert(candidate);
            if term_votes.len() > 1 {
                let all = term_votes.clone();
                self.violation(format!(
                    "election safety: node {id} voted for each of {all:?} in term {}",
                    hs.term
                ));
            }
            let mut tally: BTreeMap<NodeId, usize> = BTreeMap::new();
            for candidates in self.votes[&hs.term].values() {
                for &c in candidates {
                    *tally.entry(c).or_default() += 1;
                }
            }
            let winners: Vec<NodeId> = tally
                .iter()
                .filter(|(_, &n)| n >= quorum)
                .map(|(&c, _)| c)
                .collect();
            if winners.len() > 1 {
                self.violation(format!(
                    "election safety: candidates {winners:?} each hold a majority of durable votes in term {}",
                    hs.term
                ));
            }
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

    pub(crate) fn on_append(&mut self, id: NodeId, entries: &[Entry<u64>]) {
        self.trace(|| {
            format!(
                "node {id}: append {:?}..={:?}",
                entries.first().map(|e| e.log_id),
                entries.last().map(|e| e.log_id)
            )
        });
        for entry in entries {
            let expected = self.nodes.get(&id).map_or(1, |o| o.last_log_id().index + 1);
            if entry.log_id.index != expected {
                self.violation(format!(
                    "harness: node {id}'s storage accepted entry {} but its log ends before {expected}",
                    entry.log_id
                ));
                return;
            }
            let obs = self.node_mut(id);
            obs.push(entry.clone());
            let chain = obs.chain_at(entry.log_id.index);
            if let Some(h) = chain {
                self.check_chain(id, entry.log_id.index, entry.log_id, h);
            }
            if entry.payload == EntryPayload::Blank {
                let term = entry.log_id.term;
                let index = entry.log_id.index;
                let first = *self.blanks.entry(term).or_insert(index);
                if first != index {
                    self.violation(format!(
                        "election safety: two no-op entries of term {term}, at indexes {first} and {index} \
                         (two leaders in one term, or a leader that took office twice)"
                    ));
                }
            }
        }
    }

    /// Log Matching, at every append: an entry with the same index and term as one seen on any node
    /// before must sit on an identical log prefix.
    fn check_chain(&mut self, id: NodeId, index: LogIndex, log_id: LogId, h: u64) {
        let seen = *self.chains.entry((index, log_id)).or_insert((h, id));
        if seen.0 != h {
            let msg = format!(
                "log matching: node {id} holds entry {log_id} on a log prefix that differs from node {}'s \
                 entry {log_id} (same index and term, different history)",
                seen.1
            );
            self.violation(msg);
            return;
        }
        // The entry itself must be the same too (the hash covers it, but say so clearly).
        if let Some(c) = self.committed.get(&index) {
            if c.log_id == log_id {
                let payload = self.nodes[&id].entry(index).map(|e| e.payload.clone());
                if payload.as_ref() != Some(&c.payload) {
                    let msg = format!(
                        "log matching: node {id} holds entry {log_id} with payload {payload:?}, committed as {:?}",
                        c.payload
                    );
                    self.violation(msg);
                }
            }
        }
    }

    pub(crate) fn on_truncate(&mut self, id: NodeId, from: LogIndex) {
        self.trace(|| format!("node {id}: truncate from {from}"));
        let Some(obs) = self.nodes.get(&id) else {
            return;
        };
        if from <= obs.base.index {
            return;
        }
        let keep = (from - obs.base.index - 1) as usize;
        if keep >= obs.log.len() {
            return;
        }
        let term = obs.hard_state.term;
        let removed: Vec<LogId> = obs.log[keep..].iter().map(|e| e.log_id).collect();
        let was_leader = self.leaders.get(&term).is_some_and(|l| l.contains(&id));
        self.stats.truncations += 1;
        if was_leader {
            self.violation(format!(
                "leader append-only: node {id}, leader of term {term}, truncated its log from index {from} \
                 (removing {} entries up to {})",
                removed.len(),
                removed.last().copied().unwrap_or_default()
            ));
        }
        if let Some(own) = removed.iter().find(|l| l.term == term) {
            self.violation(format!(
                "leader append-only: node {id} in term {term} removed entry {own} of its own current term \
                 (only the leader of term {term} creates such entries, and it never removes them)"
            ));
        }
        for l in &removed {
            if self.committed.get(&l.index).is_some_and(|c| c.log_id == *l) {
                self.violation(format!(
                    "committed entry lost: node {id} truncated committed entry {l} (truncate from {from})"
                ));
                break;
            }
        }
        let obs = self.node_mut(id);
        obs.log.truncate(keep);
        obs.chain.truncate(keep);
    }

    /// The storage acknowledged purging the log up to `upto`. Only entries a durable snapshot covers
    /// may go.
    pub(crate) fn on_purge(&mut self, id: NodeId, upto: LogIndex) {
        self.trace(|| format!("node {id}: purge up to {upto}"));
        let obs = self.node_mut(id);
        if upto <= obs.base.index {
            return;
        }
        let n = ((upto - obs.base.index) as usize).min(obs.log.len());
        if n == 0 {
            return;
        }
        let new_base = obs.log[n - 1].log_id;
        obs.base_chain = obs.chain_at(new_base.index);
        obs.base = new_base;
        obs.log.drain(..n);
        obs.chain.drain(..n);
        let snapshot = obs.snapshot_id();
        self.stats.purges += 1;
        if snapshot.is_none_or(|s| s.index < upto) {
            self.violation(format!(
                "compaction: node {id} purged its log up to {upto}, past its durable snapshot ({snapshot:?}): \
                 entries no snapshot holds are gone"
            ));
        }
        self.check_base(id, "after a purge");
    }

    /// The storage acknowledged storing `snapshot`. Checks its state against the committed prefix,
    /// then follows the storage contract: an older snapshot than the stored one is ignored; a newer one
    /// replaces it, and replaces the log too unless the log holds the snapshot's last entry.
    pub(crate) fn on_install_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) {
        let last = snapshot.meta.last_log_id;
        self.trace(|| {
            format!(
                "node {id}: store snapshot of {last} ({} bytes)",
                snapshot.data.len()
            )
        });
        self.stats.snapshot_stores += 1;
        let state = match AppliedState::decode(&snapshot.data) {
            Ok(state) => {
                self.verify_state(id, "a snapshot it stored", &snapshot.meta, &state);
                Some(state)
            }
            Err(e) => {
                self.violation(format!(
                    "snapshot: node {id} stored a snapshot of {last} whose data is not a state machine state: {e}"
                ));
                None
            }
        };
        let obs = self.node_mut(id);
        if obs
            .snapshot_id()
            .is_some_and(|stored| last.index <= stored.index)
        {
            return; // a snapshot never moves backwards: the storage ignores it
        }
        obs.snapshot = Some(snapshot.clone());
        let holds = obs.base == last || obs.entry(last.index).is_some_and(|e| e.log_id == last);
        if !holds {
            obs.base = last;
            obs.base_chain = state.map(|s| s.digest);
            obs.log.clear();
            obs.chain.clear();
            self.check_base(id, "after a snapshot replaced the log");
        }
    }

    /// The storage answered `snapshot_chunk(snapshot, offset, max_len)` with `got`: it must be that
    /// slice of the snapshot the storage acknowledged last, or `None` if that is another one.
    pub(crate) fn on_snapshot_chunk(
        &mut self,
        id: NodeId,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
        got: &Option<SnapshotChunk>,
    ) {
        self.stats.snapshot_chunk_reads += 1;
        let Some(obs) = self.nodes.get(&id) else {
            return;
        };
        let expected = obs
            .snapshot
            .as_ref()
            .filter(|s| s.meta.last_log_id == snapshot)
            .map(|s| slice_chunk(&s.data, offset, max_len));
        if *got != expected {
            let brief = |c: &Option<SnapshotChunk>| c.as_ref().map(|c| (c.data.len(), c.done));
            let same_shape = brief(got) == brief(&expected);
            let msg = format!(
                "storage: node {id} read snapshot_chunk({snapshot}, offset {offset}, max {max_len}) as {:?} \
                 (length, done), but the snapshot it acknowledged is {:?}, which gives {:?}{}",
                brief(got),
                obs.snapshot_id(),
                brief(&expected),
                if same_shape { " with other bytes" } else { "" }
            );
            self.violation(msg);
        }
    }

    /// What node `id`'s storage reports after acknowledging `what`: it must agree with the model.
    pub(crate) fn on_storage_readback(
        &mut self,
        id: NodeId,
        what: &str,
        log: LogState,
        snapshot: Option<LogId>,
    ) {
        let Some(obs) = self.nodes.get(&id) else {
            return;
        };
        if log.last_purged != obs.base
            || log.last_log_id != obs.last_log_id()
            || snapshot != obs.snapshot_id()
        {
            let msg = format!(
                "storage contract: after {what}, node {id}'s storage reports last purged {}, last entry {}, \
                 snapshot {snapshot:?}; what it acknowledged implies {}, {}, {:?}",
                log.last_purged,
                log.last_log_id,
                obs.base,
                obs.last_log_id(),
                obs.snapshot_id()
            );
            self.violation(msg);
        }
    }

    /// Checks a state machine state carried by a snapshot (`what`) of node `id` against the committed
    /// log: the state as of the snapshot's last entry, with the committed prefix's hash, recent
    /// commands and membership.
    fn verify_state(&mut self, id: NodeId, what: &str, meta: &SnapshotMeta, state: &AppliedState) {
        let last = meta.last_log_id;
        let mut problems = Vec::new();
        if state.last != last {
            problems.push(format!(
                "snapshot: {what} (node {id}) is of {last}, but its data is the state as of {}",
                state.last
            ));
        }
        match self.committed.get(&last.index) {
            Some(c) if c.log_id == last && c.digest == state.digest => {}
            None if last.index == 0 && state.digest == 0 => {}
            Some(c) => problems.push(format!(
                "state machine safety: {what} (node {id}, of {last}) is not the committed log prefix: its \
                 digest is {:#x}; the committed prefix ends with {} and hashes to {:#x}",
                state.digest, c.log_id, c.digest
            )),
            None => problems.push(format!(
                "snapshot: {what} (node {id}) covers {last}, which no node has applied"
            )),
        }
        for &(index, value) in &state.recent {
            let ok = index <= last.index
                && self
                    .committed
                    .get(&index)
                    .is_some_and(|c| c.payload == EntryPayload::Command(value));
            if !ok {
                problems.push(format!(
                    "state machine safety: {what} (node {id}, of {last}) says value {value} was applied at index \
                     {index}; committed there: {:?}",
                    self.committed.get(&index).map(|c| (c.log_id, &c.payload))
                ));
            }
        }
        if last.index > 0 {
            let in_force = self.memberships.range(..=last.index).next_back();
            if in_force.map(|(_, m)| m) != Some(&meta.membership) {
                problems.push(format!(
                    "snapshot: {what} (node {id}, of {last}) carries membership {:?}, but the membership in \
                     force there is {in_force:?}",
                    meta.membership
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    // ----- state machine observations -----

    /// Incarnation `incarnation` of node `id` restored a snapshot whose data decoded to `state`.
    pub(crate) fn on_restore(
        &mut self,
        id: NodeId,
        incarnation: u32,
        meta: &SnapshotMeta,
        state: &AppliedState,
    ) {
        let last = meta.last_log_id;
        self.trace(|| format!("node {id}/{incarnation}: restore snapshot of {last}"));
        self.stats.restores += 1;
        self.verify_state(id, "a snapshot it restored", meta, state);
        let Some(sm) = self.node_mut(id).sms.get_mut(incarnation as usize - 1) else {
            return;
        };
        let before = sm.state.last;
        sm.restores.push((sm.applied.len(), last));
        sm.state = state.clone();
        if last.index < before.index {
            self.violation(format!(
                "state machine safety: node {id} (incarnation {incarnation}) restored a snapshot of {last} after \
                 applying up to {before} (a state machine never goes back)"
            ));
        }
    }

    /// Incarnation `incarnation` of node `id` applied `entries` and reached state `after`.
    pub(crate) fn on_apply(
        &mut self,
        id: NodeId,
        incarnation: u32,
        entries: &[Entry<u64>],
        after: &AppliedState,
    ) {
        self.trace(|| {
            format!(
                "node {id}/{incarnation}: apply {:?}..={:?}",
                entries.first().map(|e| e.log_id),
                entries.last().map(|e| e.log_id)
            )
        });
        let i = incarnation as usize - 1;
        let quorum = self.quorum();
        let mut expected = self
            .nodes
            .get(&id)
            .and_then(|o| o.sms.get(i))
            .map_or(0, |sm| sm.state.last.index)
            + 1;
        for entry in entries {
            let index = entry.log_id.index;
            if index != expected {
                self.violation(format!(
                    "state machine safety: node {id} (incarnation {incarnation}) applied index {index}, \
                     expected {expected} (entries are applied once, in order, without gaps, after the last \
                     snapshot restored)"
                ));
            }
            expected = index + 1;
            let durable_here = {
                let obs = self.node_mut(id);
                if index <= obs.base.index {
                    None // compacted since: compared with the committed entry below
                } else {
                    Some(obs.entry(index).cloned())
                }
            };
            if let Some(own) = durable_here {
                if own.as_ref() != Some(entry) {
                    self.violation(format!(
                        "state machine safety: node {id} applied {} ({:?}) but its durable log holds {:?} there",
                        entry.log_id,
                        entry.payload,
                        own.map(|e| (e.log_id, e.payload))
                    ));
                }
            }
            match self.committed.get(&index) {
                Some(c) => {
                    if c.log_id != entry.log_id || c.payload != entry.payload {
                        let msg = format!(
                            "state machine safety: node {id} applied {} ({:?}) at index {index}, but node {} \
                             applied {} ({:?}) there",
                            entry.log_id, entry.payload, c.first_node, c.log_id, c.payload
                        );
                        self.violation(msg);
                    }
                }
                None => self.first_apply(id, entry, quorum),
            }
            let obs = self.node_mut(id);
            if let Some(sm) = obs.sms.get_mut(i) {
                sm.applied.push((entry.log_id, entry.payload.clone()));
            }
        }
        if let Some(last) = entries.last() {
            let committed = self
                .committed
                .get(&last.log_id.index)
                .map(|c| (c.log_id, c.digest));
            if committed != Some((after.last, after.digest)) {
                self.violation(format!(
                    "state machine safety: node {id} (incarnation {incarnation}) reached state {} / {:#x} by \
                     applying up to {}, but the committed prefix there is {committed:?} (last id, hash)",
                    after.last, after.digest, last.log_id
                ));
            }
        }
        if let Some(sm) = self.node_mut(id).sms.get_mut(i) {
            sm.state = after.clone();
        }
    }

    /// Node `id` is the first to apply `entry`: it must be durable on a majority; it becomes committed.
    fn first_apply(&mut self, id: NodeId, entry: &Entry<u64>, quorum: usize) {
        let index = entry.log_id.index;
        // A node that compacted the index does not count: compacting needs a snapshot, which needs the
        // entry applied first, so the entry would be committed already.
        let holders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, o)| o.entry(index).is_some_and(|e| e.log_id == entry.log_id))
            .map(|(&n, _)| n)
            .collect();
        if holders.len() < quorum {
            self.violation(format!(
                "commitment: node {id} applied {} while only nodes {holders:?} held it durably \
                 (a majority is {quorum})",
                entry.log_id
            ));
        }
        if let EntryPayload::Command(v) = entry.payload {
            if let Some(&other) = self.positions.get(&v) {
                self.violation(format!(
                    "linearizability: value {v} committed twice, at indexes {other} and {index}"
                ));
            } else {
                self.positions.insert(v, index);
            }
        }
        if let EntryPayload::Membership(m) = &entry.payload {
            self.memberships.insert(index, m.clone());
        }
        let prev = match index {
            0 | 1 => 0,
            _ => match self.committed.get(&(index - 1)) {
                Some(p) => p.digest,
                None => {
                    self.violation(format!(
                        "state machine safety: node {id} applied {} first, but no node ever applied index {}",
                        entry.log_id,
                        index - 1
                    ));
                    0
                }
            },
        };
        let max_term = self.max_term;
        self.committed.insert(
            index,
            Committed {
                log_id: entry.log_id,
                payload: entry.payload.clone(),
                digest: chain_hash(prev, entry),
                first_node: id,
                max_term,
            },
        );
    }

    // ----- metrics observations -----

    /// Node `id` said (in its metrics) that it leads `term`. Checks Election Safety, and samples its
    /// durable log for Leader Append-Only and Leader Completeness.
    pub(crate) fn observe_leader(&mut self, id: NodeId, term: Term) {
        let set = self.leaders.entry(term).or_default();
        let new = set.insert(id);
        if new {
            self.trace(|| format!("node {id}: leader of term {term}"));
        }
        let set = self.leaders.entry(term).or_default();
        if new && set.len() > 1 {
            let set = set.clone();
            self.violation(format!(
                "election safety: nodes {set:?} were each leader in term {term}"
            ));
        }
        let Some(obs) = self.nodes.get(&id) else {
            return;
        };
        if obs.hard_state.term != term || !obs.live {
            return; // the node has moved on since it published these metrics
        }
        let last = obs.last_log_id();
        let last_chain = self.prefix_hash(obs, last.index).unwrap_or(0);
        let sample = obs.leader_samples.get(&term).cloned().unwrap_or_default();
        let mut problems = Vec::new();
        // Leader Append-Only: what the leader held at the previous sample is still there, unchanged
        // (compacted since, if so, into the committed prefix).
        if let Some((prev, prev_chain)) = sample.last {
            let now = self.id_at(obs, prev.index);
            let now_chain = self.prefix_hash(obs, prev.index).unwrap_or(0);
            if now != Some(prev) || now_chain != prev_chain {
                problems.push(format!(
                    "leader append-only: node {id}, leader of term {term}, held {prev} (and its prefix) at an \
                     earlier sample, but now holds {now:?} there (or a different prefix)"
                ));
            }
        }
        // Leader Completeness: every entry committed under a lower term is in this leader's log.
        let mut upto = sample.completeness_upto;
        for (&index, c) in self.committed.range(sample.completeness_upto + 1..) {
            if c.max_term >= term {
                break;
            }
            if !self.holds_committed(obs, index) {
                problems.push(format!(
                    "leader completeness: node {id}, leader of term {term}, lacks committed entry {} \
                     (committed by term {} at the latest); it holds {:?} there (compacted up to {})",
                    c.log_id,
                    c.max_term,
                    obs.entry(index).map(|e| e.log_id),
                    obs.base
                ));
                break;
            }
            upto = index;
        }
        for p in problems {
            self.violation(p);
        }
        if let Some(obs) = self.nodes.get_mut(&id) {
            let s = obs.leader_samples.entry(term).or_default();
            s.last = Some((last, last_chain));
            s.completeness_upto = upto;
        }
    }

    // ----- checks on demand -----

    /// Election Safety over everything observed.
    pub(crate) fn check_election_safety(&self) -> Result<(), String> {
        for (term, leaders) in &self.leaders {
            if leaders.len() > 1 {
                return Err(format!(
                    "election safety: nodes {leaders:?} were each leader in term {term}"
                ));
            }
        }
        Ok(())
    }

    /// Log Matching between every pair of durable logs, as they are now: at the highest index where
    /// two logs hold the same entry id, the entries both still hold are identical, and so are the
    /// whole prefixes (compacted parts included, by their hashes).
    pub(crate) fn check_log_matching(&self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (la, lb) = (&self.nodes[&a], &self.nodes[&b]);
                let from = la.base.index.max(lb.base.index);
                let to = la.last_log_id().index.min(lb.last_log_id().index);
                let top = (from..=to).rev().find(|&ix| {
                    let id = self.id_at(la, ix);
                    id.is_some() && id == self.id_at(lb, ix)
                });
                let Some(top) = top else {
                    continue;
                };
                for ix in from + 1..=top {
                    let (ea, eb) = (la.entry(ix), lb.entry(ix));
                    if ea != eb {
                        return Err(format!(
                            "log matching: nodes {a} and {b} both hold {:?} at index {top}, but differ at \
                             index {ix}: {:?} vs {:?}",
                            self.id_at(la, top),
                            ea,
                            eb
                        ));
                    }
                }
                if let (Some(ha), Some(hb)) = (self.prefix_hash(la, top), self.prefix_hash(lb, top))
                {
                    if ha != hb {
                        return Err(format!(
                            "log matching: nodes {a} and {b} both hold {:?} at index {top}, but their log \
                             prefixes up to it differ (compacted up to {} and {})",
                            self.id_at(la, top),
                            la.base,
                            lb.base
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety over everything applied and restored so far (re-checks what `on_apply`
    /// and `on_restore` checked).
    pub(crate) fn check_state_machine_safety(&self) -> Result<(), String> {
        for (&id, obs) in &self.nodes {
            for (inc, sm) in obs.sms.iter().enumerate() {
                for (log_id, payload) in &sm.applied {
                    match self.committed.get(&log_id.index) {
                        Some(c) if c.log_id == *log_id && c.payload == *payload => {}
                        other => {
                            return Err(format!(
                                "state machine safety: node {id} (incarnation {}) applied {log_id} ({payload:?}); \
                                 the entry committed there is {:?}",
                                inc + 1,
                                other.map(|c| (c.log_id, &c.payload))
                            ))
                        }
                    }
                }
                for &(_, to) in &sm.restores {
                    let committed = self.committed.get(&to.index).map(|c| c.log_id);
                    if to.index > 0 && committed != Some(to) {
                        return Err(format!(
                            "state machine safety: node {id} (incarnation {}) restored a snapshot of {to}; the \
                             entry committed there is {committed:?}",
                            inc + 1
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Membership;

    fn world(n: u64) -> World {
        let mut w = World::new(1, "replay".into(), (1..=n).collect());
        for id in 1..=n {
            w.on_open(id, HardState::default(), LogId::default(), Vec::new(), None);
        }
        w
    }

    fn cmd(term: Term, index: LogIndex, v: u64) -> Entry<u64> {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Command(v),
        }
    }

    fn blank(term: Term, index: LogIndex) -> Entry<u64> {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership() -> Entry<u64> {
        Entry {
            log_id: LogId::new(0, 1),
            payload: EntryPayload::Membership(Membership::new([1, 2, 3])),
        }
    }

    /// Incarnation `inc` of node `id` applies `entries`, reporting the state a `LogStateMachine` would.
    fn apply(w: &mut World, id: NodeId, inc: u32, entries: &[Entry<u64>]) {
        let mut state = w.nodes[&id].sms[inc as usize - 1].state.clone();
        for e in entries {
            state.apply(e);
        }
        w.on_apply(id, inc, entries, &state);
    }

    fn has(w: &World, what: &str) -> bool {
        w.violations.iter().any(|v| v.contains(what))
    }

    #[test]
    fn a_healthy_history_has_no_violation() {
        let mut w = world(3);
        for id in 1..=3 {
            w.on_append(id, &[membership()]);
        }
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 1);
        let entries = [blank(1, 2), cmd(1, 3, 7)];
        w.on_append(1, &entries);
        w.on_append(2, &entries);
        apply(&mut w, 1, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
        apply(&mut w, 2, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
        w.observe_leader(1, 1);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert!(w.check_log_matching().is_ok());
        assert!(w.check_state_machine_safety().is_ok());
    }

    #[test]
    fn two_leaders_in_a_term() {
        let mut w = world(3);
        w.observe_leader(1, 2);
        w.observe_leader(2, 2);
        assert!(has(&w, "election safety"));
        assert!(w.check_election_safety().is_err());
    }

    #[test]
    fn a_changed_vote_and_two_majorities() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(2),
            },
        );
        assert!(has(&w, "changed its vote"));
        let mut w = world(3);
        // Node 2 "forgets" its vote across a restart and votes again.
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_open(
            2,
            HardState {
                term: 1,
                voted_for: None,
            },
            LogId::default(),
            Vec::new(),
            None,
        );
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(3),
            },
        );
        w.on_save_hard_state(
            3,
            HardState {
                term: 1,
                voted_for: Some(3),
            },
        );
        assert!(has(&w, "durability"), "{:?}", w.violations);
        assert!(has(&w, "node 2 voted for each of {1, 3} in term 1"));
        assert!(has(&w, "each hold a majority"));
    }

    #[test]
    fn two_no_ops_in_one_term() {
        let mut w = world(3);
        w.on_append(1, &[membership(), blank(2, 2)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5), blank(2, 3)]);
        assert!(has(&w, "two no-op entries of term 2"));
    }

    #[test]
    fn log_matching_across_nodes() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5), cmd(2, 3, 6)]);
        // Same id at index 3, but a different entry at index 2.
        w.on_append(2, &[membership(), cmd(1, 2, 9), cmd(2, 3, 6)]);
        assert!(has(&w, "log matching"), "{:?}", w.violations);
        assert!(w.check_log_matching().is_err());
    }

    #[test]
    fn truncations_that_break_leader_append_only_or_lose_commits() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 2,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 2);
        w.on_append(1, &[membership(), blank(2, 2), cmd(2, 3, 1)]);
        w.on_truncate(1, 3);
        assert!(has(&w, "leader append-only: node 1, leader of term 2"));
        assert!(has(&w, "of its own current term"));

        let mut w = world(3);
        for id in 1..=3 {
            w.on_append(id, &[membership(), cmd(1, 2, 5)]);
        }
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        w.on_save_hard_state(
            2,
            HardState {
                term: 3,
                voted_for: None,
            },
        );
        w.on_truncate(2, 2);
        assert!(has(&w, "committed entry lost"), "{:?}", w.violations);
    }

    #[test]
    fn leader_append_only_by_sampling() {
        let mut w = world(3);
        w.on_save_hard_state(
            1,
            HardState {
                term: 2,
                voted_for: Some(1),
            },
        );
        w.on_append(1, &[membership(), blank(2, 2)]);
        w.observe_leader(1, 2);
        // Rewritten behind the harness's back (same length, different entry).
        w.nodes.get_mut(&1).unwrap().set_log(
            LogId::default(),
            Some(0),
            vec![membership(), cmd(1, 2, 3)],
        );
        w.observe_leader(1, 2);
        assert!(has(&w, "leader append-only"), "{:?}", w.violations);
    }

    #[test]
    fn state_machine_safety_and_order() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        w.on_append(3, &[membership(), cmd(2, 2, 6)]);
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        apply(&mut w, 3, 1, &[membership(), cmd(2, 2, 6)]);
        assert!(has(&w, "node 3 applied 2-2"), "{:?}", w.violations);
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        apply(&mut w, 1, 1, &[cmd(1, 2, 5)]);
        assert!(has(&w, "expected 1"), "gap: {:?}", w.violations);
    }

    #[test]
    fn applying_what_a_majority_does_not_hold() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership()]);
        w.on_append(3, &[membership()]);
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        assert!(
            has(&w, "commitment: node 1 applied 1-2"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn leader_completeness() {
        let mut w = world(3);
        for id in 1..=2 {
            w.on_append(id, &[membership(), cmd(1, 2, 5)]);
        }
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        apply(&mut w, 1, 1, &[membership(), cmd(1, 2, 5)]);
        // Node 3 lacks the committed entry, yet leads a later term.
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.on_append(3, &[membership()]);
        w.observe_leader(3, 2);
        assert!(has(&w, "leader completeness"), "{:?}", w.violations);
    }

    // ----- compaction and snapshots -----

    fn state_of(entries: &[Entry<u64>]) -> AppliedState {
        let mut state = AppliedState::default();
        for e in entries {
            state.apply(e);
        }
        state
    }

    /// The snapshot a `LogStateMachine` that applied `entries` builds.
    fn snapshot_of(entries: &[Entry<u64>]) -> Snapshot {
        let state = state_of(entries);
        Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last,
                membership: Membership::new([1, 2, 3]),
            },
            data: state.encode(),
        }
    }

    /// Three nodes: 1 and 2 hold `entries` (membership first), all committed (applied by node 1); node
    /// 3 holds only the membership.
    fn committed_world(entries: &[Entry<u64>]) -> World {
        let mut w = world(3);
        for id in 1..=2 {
            w.on_append(id, entries);
        }
        w.on_append(3, &entries[..1]);
        apply(&mut w, 1, 1, entries);
        w
    }

    fn three() -> Vec<Entry<u64>> {
        vec![membership(), cmd(1, 2, 5), cmd(1, 3, 6)]
    }

    #[test]
    fn compaction_by_snapshot_and_purge_is_clean_and_compacted_entries_are_held() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        // Node 3's log is replaced by the leader's snapshot (it held nothing but the membership).
        w.on_install_snapshot(3, &snapshot_of(&log));
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        for id in [1, 3] {
            let obs = &w.nodes[&id];
            assert_eq!((obs.base, obs.log.len()), (LogId::new(1, 3), 0));
            assert!((1..=3).all(|i| w.holds_committed(obs, i)), "node {id}");
            assert_eq!(w.id_at(obs, 2), Some(LogId::new(1, 2)));
        }
        assert!(w.check_log_matching().is_ok());
        // A leader of a later term with a compacted log is complete.
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.observe_leader(3, 2);
        w.on_append(3, &[blank(2, 4)]);
        w.observe_leader(3, 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn log_matching_reaches_into_compacted_prefixes() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        // Node 3 holds entry 1-3 on another history (the per-append check sees it too).
        w.on_append(3, &[cmd(1, 2, 9), cmd(1, 3, 6)]);
        assert!(has(&w, "log matching"), "{:?}", w.violations);
        w.violations.clear();
        // Pairwise: node 1 holds 1-3 only as its compaction point; the prefixes still differ.
        let err = w.check_log_matching().unwrap_err();
        assert!(err.contains("nodes 1 and 3"), "{err}");
    }

    #[test]
    fn a_snapshot_must_carry_the_committed_state() {
        let log = three();
        let mut w = committed_world(&log);
        // Same last id, another history.
        let forged = snapshot_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_install_snapshot(2, &forged);
        assert!(
            has(&w, "is not the committed log prefix"),
            "{:?}",
            w.violations
        );
        assert!(
            has(&w, "says value 9 was applied at index 2"),
            "{:?}",
            w.violations
        );

        let mut w = committed_world(&log);
        let mut other_members = snapshot_of(&log);
        other_members.meta.membership = Membership::new([1, 2]);
        w.on_install_snapshot(1, &other_members);
        assert!(has(&w, "carries membership"), "{:?}", w.violations);

        let mut w = committed_world(&log);
        let mut garbled = snapshot_of(&log);
        garbled.data.truncate(20);
        w.on_install_snapshot(1, &garbled);
        assert!(has(&w, "not a state machine state"), "{:?}", w.violations);

        let mut w = committed_world(&log);
        w.on_install_snapshot(
            1,
            &snapshot_of(&[membership(), cmd(1, 2, 5), cmd(1, 3, 6), cmd(1, 4, 7)]),
        );
        assert!(has(&w, "which no node has applied"), "{:?}", w.violations);
    }

    #[test]
    fn a_log_replaced_by_a_forged_snapshot_lacks_the_committed_entries() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(3, &snapshot_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]));
        assert!(
            has(&w, "compaction: node 3's log is compacted up to 1-3"),
            "{:?}",
            w.violations
        );
        assert!(!w.holds_committed(&w.nodes[&3], 2));
        w.violations.clear();
        w.on_save_hard_state(
            3,
            HardState {
                term: 2,
                voted_for: Some(3),
            },
        );
        w.observe_leader(3, 2);
        assert!(has(&w, "leader completeness: node 3"), "{:?}", w.violations);
    }

    #[test]
    fn purging_past_the_snapshot() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log[..2]));
        w.on_purge(1, 2);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.on_purge(1, 3);
        assert!(has(&w, "past its durable snapshot"), "{:?}", w.violations);
        let mut w = committed_world(&log);
        w.on_purge(2, 1);
        assert!(
            has(&w, "past its durable snapshot (None)"),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn storage_contract_older_snapshots_are_ignored_and_read_back() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_install_snapshot(1, &snapshot_of(&log[..2]));
        assert_eq!(w.nodes[&1].snapshot_id(), Some(LogId::new(1, 3)));
        let agrees = LogState {
            last_purged: LogId::default(),
            last_log_id: LogId::new(1, 3),
        };
        w.on_storage_readback(1, "install", agrees.clone(), Some(LogId::new(1, 3)));
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // A storage that replaced its snapshot with the older one.
        w.on_storage_readback(1, "install", agrees, Some(LogId::new(1, 2)));
        assert!(has(&w, "storage contract"), "{:?}", w.violations);
        // A storage that kept its log when the snapshot said to discard it.
        let mut w = committed_world(&log);
        w.on_install_snapshot(3, &snapshot_of(&log));
        let kept = LogState {
            last_purged: LogId::default(),
            last_log_id: LogId::new(0, 1),
        };
        w.on_storage_readback(3, "install", kept, Some(LogId::new(1, 3)));
        assert!(has(&w, "storage contract"), "{:?}", w.violations);
    }

    #[test]
    fn snapshot_chunks_must_be_slices_of_the_acknowledged_snapshot() {
        let log = three();
        let mut w = committed_world(&log);
        let snap = snapshot_of(&log);
        w.on_install_snapshot(1, &snap);
        let id = LogId::new(1, 3);
        w.on_snapshot_chunk(1, id, 16, 16, &Some(slice_chunk(&snap.data, 16, 16)));
        w.on_snapshot_chunk(1, LogId::new(1, 2), 0, 16, &None);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.on_snapshot_chunk(1, id, 16, 16, &Some(slice_chunk(&snap.data, 0, 16)));
        assert!(
            has(&w, "snapshot_chunk(1-3, offset 16"),
            "{:?}",
            w.violations
        );
        w.violations.clear();
        w.on_snapshot_chunk(
            1,
            LogId::new(1, 2),
            0,
            16,
            &Some(slice_chunk(&snap.data, 0, 16)),
        );
        assert!(has(&w, "storage: node 1 read"), "{:?}", w.violations);
    }

    #[test]
    fn restores_continue_the_sequence_and_never_go_back() {
        let log = three();
        let mut w = committed_world(&log);
        let snap = snapshot_of(&log);
        // Node 2 restores the snapshot, then applies the next entry.
        w.on_restore(2, 1, &snap.meta, &state_of(&log));
        let next = [cmd(1, 4, 7)];
        w.on_append(1, &next);
        w.on_append(2, &next);
        apply(&mut w, 2, 1, &next);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert_eq!(w.nodes[&2].sms[0].restores, vec![(0, LogId::new(1, 3))]);
        assert!(w.check_state_machine_safety().is_ok());
        // Going back to the snapshot after applying past it.
        w.on_restore(2, 1, &snap.meta, &state_of(&log));
        assert!(has(&w, "never goes back"), "{:?}", w.violations);
        // After a restore at 3, applying 5 skips 4.
        let mut w = committed_world(&log);
        w.on_restore(3, 1, &snap.meta, &state_of(&log));
        let mut state = state_of(&log);
        let skip = [cmd(1, 5, 8)];
        state.apply(&skip[0]);
        w.on_apply(3, 1, &skip, &state);
        assert!(has(&w, "applied index 5, expected 4"), "{:?}", w.violations);
        // A restored state that is not the committed one.
        let mut w = committed_world(&log);
        let forged = state_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_restore(3, 1, &snap.meta, &forged);
        assert!(has(&w, "a snapshot it restored"), "{:?}", w.violations);
    }

    #[test]
    fn a_state_machine_state_that_is_not_the_committed_prefix() {
        let log = three();
        let mut w = committed_world(&log);
        // Node 2 applies the right entries but reports a wrong state (a restore gone wrong earlier).
        let wrong = state_of(&[membership(), cmd(1, 2, 9), cmd(1, 3, 6)]);
        w.on_apply(2, 1, &log, &wrong);
        assert!(has(&w, "reached state 1-3"), "{:?}", w.violations);
    }

    #[test]
    fn leader_append_only_sees_through_compaction() {
        let log = three();
        let mut w = committed_world(&log);
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 1);
        w.on_install_snapshot(1, &snapshot_of(&log));
        w.on_purge(1, 3);
        w.on_append(1, &[cmd(1, 4, 7)]);
        w.observe_leader(1, 1);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }
}
