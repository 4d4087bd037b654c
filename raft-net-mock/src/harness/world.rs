//! The shared record of everything the harness observes, and the checks that run on it.
//!
//! Observations arrive from four places, all on the test's single thread:
//! * the storage wrapper ([`ObservedStorage`](super::ObservedStorage)): every hard state, append,
//!   truncation and purge a node's storage acknowledged (the *durable* state);
//! * the network wrapper ([`ObservedNetwork`](super::ObservedNetwork)): RPC answers as the sender sees
//!   them;
//! * the test state machine ([`LogStateMachine`](super::LogStateMachine)): every applied entry;
//! * the metrics watchers: who says it is leader in which term;
//!
//! plus the client history recorded by [`Client`](super::Client). Checks that can run at the moment of
//! an observation do so and record a violation; the rest run on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, Term};

use super::history::History;

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
    /// The node that applied it first.
    pub(crate) first_node: NodeId,
    /// The highest durable term of any node when it was first applied: the entry was committed by a
    /// leader of at most this term, so every leader of a higher term must hold it.
    pub(crate) max_term: Term,
}

/// The leader-side samples of one node in one term.
#[derive(Clone, Debug, Default)]
struct LeaderSample {
    /// The last entry of the durable log at the previous sample, with its chain hash.
    last: Option<(LogId, u64)>,
    /// Committed entries up to this index are known to be in this leader's log.
    completeness_upto: LogIndex,
}

/// What the harness knows of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeObs {
    /// The durable hard state.
    pub(crate) hard_state: HardState,
    /// The id of the last purged entry (compaction point).
    pub(crate) base: LogId,
    /// The durable log after `base`.
    pub(crate) log: Vec<Entry<u64>>,
    /// `chain[i]` is a hash of the whole log up to `log[i]` (only meaningful while `base` is 0).
    chain: Vec<u64>,
    /// The current incarnation (1 for the first start).
    pub(crate) incarnation: u32,
    /// Every entry each incarnation's state machine applied, in order: `applies[incarnation - 1]`.
    pub(crate) applies: Vec<Vec<(LogId, EntryPayload<u64>)>>,
    /// Where each incarnation's state machine started (a restored snapshot's index, else 0).
    pub(crate) apply_base: Vec<LogIndex>,
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

    fn chain_at(&self, index: LogIndex) -> Option<u64> {
        if self.base.index != 0 || index == 0 {
            return None;
        }
        self.chain.get((index - 1) as usize).copied()
    }

    fn push(&mut self, entry: Entry<u64>) {
        let prev = self.chain.last().copied().unwrap_or(0);
        self.chain.push(chain_hash(prev, &entry));
        self.log.push(entry);
    }

    fn set_log(&mut self, base: LogId, entries: Vec<Entry<u64>>) {
        self.base = base;
        self.log.clear();
        self.chain.clear();
        for e in entries {
            self.push(e);
        }
    }
}

/// A hash of a log prefix, extended by one entry. Two logs with the same chain hash at an index hold
/// (up to hash collisions, which could only hide a violation, never invent one) the same prefix.
fn chain_hash(prev: u64, entry: &Entry<u64>) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: the same value on every run.
    let mut h = std::hash::DefaultHasher::new();
    prev.hash(&mut h);
    entry.log_id.hash(&mut h);
    match &entry.payload {
        EntryPayload::Blank => 0u8.hash(&mut h),
        EntryPayload::Command(v) => {
            1u8.hash(&mut h);
            v.hash(&mut h);
        }
        EntryPayload::Membership(m) => {
            2u8.hash(&mut h);
            m.voters.hash(&mut h);
        }
    }
    h.finish()
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
    /// `(index, log id) -> chain hash` of every entry ever durable on any node (full logs only).
    chains: BTreeMap<(LogIndex, LogId), (u64, NodeId)>,
    /// Every committed entry, by index, as first applied.
    pub(crate) committed: BTreeMap<LogIndex, Committed>,
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

    pub(crate) fn violation(&mut self, msg: String) {
        self.trace(|| format!("VIOLATION: {msg}"));
        tracing::error!(seed = self.seed, "{msg}");
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(msg);
        }
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn node_mut(&mut self, id: NodeId) -> &mut NodeObs {
        self.nodes.entry(id).or_default()
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
    ) {
        let obs = self.node_mut(id);
        if obs.incarnation > 0 {
            let same_log = obs.base == base && obs.log == entries;
            if obs.hard_state != hard_state || !same_log {
                let msg = format!(
                    "durability: node {id} reopened its storage with hard state {hard_state:?}, base {base}, \
                     last entry {:?}, but had acknowledged hard state {:?}, base {}, last entry {:?} ({} vs {} entries)",
                    entries.last().map(|e| e.log_id),
                    obs.hard_state,
                    obs.base,
                    obs.log.last().map(|e| e.log_id),
                    entries.len(),
                    obs.log.len()
                );
                self.violation(msg);
            }
        }
        self.trace(|| {
            format!(
                "node {id}: open storage: {hard_state:?}, base {base}, last {:?}",
                entries.last().map(|e| e.log_id)
            )
        });
        let obs = self.node_mut(id);
        obs.hard_state = hard_state;
        obs.set_log(base, entries);
        obs.incarnation += 1;
        obs.applies.push(Vec::new());
        obs.apply_base.push(0);
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

    pub(crate) fn on_purge(&mut self, id: NodeId, upto: LogIndex) {
        let obs = self.node_mut(id);
        if upto <= obs.base.index {
            return;
        }
        let n = ((upto - obs.base.index) as usize).min(obs.log.len());
        if n == 0 {
            return;
        }
        obs.base = obs.log[n - 1].log_id;
        obs.log.drain(..n);
        obs.chain.clear(); // prefixes can no longer be compared
    }

    pub(crate) fn on_install_snapshot(&mut self, id: NodeId, last: LogId) {
        let obs = self.node_mut(id);
        let holds = obs.entry(last.index).is_some_and(|e| e.log_id == last);
        if holds {
            return; // the log is kept; a later purge compacts it
        }
        if last.index >= obs.base.index && last != obs.base {
            obs.base = last;
            obs.log.clear();
            obs.chain.clear();
        }
    }

    // ----- state machine observations -----

    pub(crate) fn on_restore(&mut self, id: NodeId, incarnation: u32, last: LogIndex) {
        let obs = self.node_mut(id);
        let i = incarnation as usize - 1;
        if let Some(b) = obs.apply_base.get_mut(i) {
            *b = last;
        }
        if let Some(a) = obs.applies.get_mut(i) {
            a.clear();
        }
    }

    pub(crate) fn on_apply(&mut self, id: NodeId, incarnation: u32, entries: &[Entry<u64>]) {
        self.trace(|| {
            format!(
                "node {id}/{incarnation}: apply {:?}..={:?}",
                entries.first().map(|e| e.log_id),
                entries.last().map(|e| e.log_id)
            )
        });
        let quorum = self.quorum();
        for entry in entries {
            let index = entry.log_id.index;
            let (expected, durable_here) = {
                let obs = self.node_mut(id);
                let i = incarnation as usize - 1;
                let base = obs.apply_base.get(i).copied().unwrap_or(0);
                let last = obs
                    .applies
                    .get(i)
                    .and_then(|a| a.last())
                    .map_or(base, |(l, _)| l.index);
                let durable = if index <= obs.base.index {
                    None
                } else {
                    Some(obs.entry(index).cloned())
                };
                (last + 1, durable)
            };
            if index != expected {
                self.violation(format!(
                    "state machine safety: node {id} (incarnation {incarnation}) applied index {index}, \
                     expected {expected} (entries are applied once, in order, without gaps)"
                ));
            }
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
                None => {
                    // First apply anywhere: the entry must be durable on a majority.
                    let holders: Vec<NodeId> = self
                        .nodes
                        .iter()
                        .filter(|(_, o)| {
                            index <= o.base.index
                                || o.entry(index).is_some_and(|e| e.log_id == entry.log_id)
                        })
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
                    let max_term = self.max_term;
                    self.committed.insert(
                        index,
                        Committed {
                            log_id: entry.log_id,
                            payload: entry.payload.clone(),
                            first_node: id,
                            max_term,
                        },
                    );
                }
            }
            let obs = self.node_mut(id);
            if let Some(a) = obs.applies.get_mut(incarnation as usize - 1) {
                a.push((entry.log_id, entry.payload.clone()));
            }
        }
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
        let last_chain = obs.chain_at(last.index).unwrap_or(0);
        let sample = obs.leader_samples.get(&term).cloned().unwrap_or_default();
        let mut problems = Vec::new();
        // Leader Append-Only: what the leader held at the previous sample is still there, unchanged.
        if let Some((prev, prev_chain)) = sample.last {
            let now = obs.entry(prev.index).map(|e| e.log_id);
            let now_chain = obs.chain_at(prev.index).unwrap_or(0);
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
            let holds = index <= obs.base.index
                || obs
                    .entry(index)
                    .is_some_and(|e| e.log_id == c.log_id && e.payload == c.payload);
            if !holds {
                problems.push(format!(
                    "leader completeness: node {id}, leader of term {term}, lacks committed entry {} \
                     (committed by term {} at the latest); it holds {:?} there",
                    c.log_id,
                    c.max_term,
                    obs.entry(index).map(|e| e.log_id)
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

    /// Log Matching between every pair of durable logs, as they are now.
    pub(crate) fn check_log_matching(&self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (la, lb) = (&self.nodes[&a], &self.nodes[&b]);
                let from = la.base.index.max(lb.base.index) + 1;
                let to = la.last_log_id().index.min(lb.last_log_id().index);
                // The highest index where both hold the same id; the prefixes must agree up to it.
                let top = (from..=to)
                    .rev()
                    .find(|&ix| la.entry(ix).map(|e| e.log_id) == lb.entry(ix).map(|e| e.log_id));
                if let Some(top) = top {
                    for ix in from..=top {
                        let (ea, eb) = (la.entry(ix), lb.entry(ix));
                        if ea != eb {
                            return Err(format!(
                                "log matching: nodes {a} and {b} both hold {:?} at index {top}, but differ at \
                                 index {ix}: {:?} vs {:?}",
                                la.entry(top).map(|e| e.log_id),
                                ea,
                                eb
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety over everything applied so far (re-checks what `on_apply` checked).
    pub(crate) fn check_state_machine_safety(&self) -> Result<(), String> {
        for (&id, obs) in &self.nodes {
            for (inc, applied) in obs.applies.iter().enumerate() {
                for (log_id, payload) in applied {
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
            w.on_open(id, HardState::default(), LogId::default(), Vec::new());
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
        w.on_apply(1, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
        w.on_apply(2, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
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
        w.on_apply(1, 1, &[membership(), cmd(1, 2, 5)]);
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
        w.nodes
            .get_mut(&1)
            .unwrap()
            .set_log(LogId::default(), vec![membership(), cmd(1, 2, 3)]);
        w.observe_leader(1, 2);
        assert!(has(&w, "leader append-only"), "{:?}", w.violations);
    }

    #[test]
    fn state_machine_safety_and_order() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        w.on_append(3, &[membership(), cmd(2, 2, 6)]);
        w.on_apply(1, 1, &[membership(), cmd(1, 2, 5)]);
        w.on_apply(3, 1, &[membership(), cmd(2, 2, 6)]);
        assert!(has(&w, "node 3 applied 2-2"), "{:?}", w.violations);
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership(), cmd(1, 2, 5)]);
        w.on_apply(1, 1, &[cmd(1, 2, 5)]);
        assert!(has(&w, "expected 1"), "gap: {:?}", w.violations);
    }

    #[test]
    fn applying_what_a_majority_does_not_hold() {
        let mut w = world(3);
        w.on_append(1, &[membership(), cmd(1, 2, 5)]);
        w.on_append(2, &[membership()]);
        w.on_append(3, &[membership()]);
        w.on_apply(1, 1, &[membership(), cmd(1, 2, 5)]);
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
        w.on_apply(1, 1, &[membership(), cmd(1, 2, 5)]);
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
}
