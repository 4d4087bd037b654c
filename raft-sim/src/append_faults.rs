//! AppendEntries faults the harness adds on the sending side, and the signal a fault schedule uses to
//! time a crash: [`AppendFaults`], shared by a cluster and the [`ObservedNetwork`](crate::ObservedNetwork)
//! of each of its nodes.
//!
//! Both exist for the interleaving of the Raft paper's figure 8 (§5.4.2): a leader holds entries of an
//! older term, a majority comes to hold them *without* the leader's own entries, and the leader fails.
//! A leader that committed such an entry by counting replicas (which Raft forbids) has then committed
//! an entry that a later leader may overwrite. Without help a follower rarely gets there: a new
//! leader's blank entry usually travels in the same AppendEntries as the older entries before it.
//!
//! * **Truncation.** With the configured probability, an AppendEntries leaves with its entries cut to a
//!   random shorter prefix (possibly none). The request stays well formed, and the follower's answer
//!   names the index it now matches, so the leader learns exactly what the follower holds. Then the
//!   link breaks: the next AppendEntries from that leader to that follower fails as unreachable,
//!   without being delivered, which puts the leader back to probing from the follower's match.
//!   Without the break, a leader pipelining to the follower would count the cut entries as still in
//!   flight and, with its window full or nothing new to send, send only heartbeats at the follower's
//!   match until something else went wrong: a follower acknowledges the whole of a request it
//!   accepts, so the engine does not expect a success that covers less. The draws come from an RNG
//!   of their own, seeded from the cluster's seed and drawn from only while the probability is above
//!   zero: a cluster that never truncates replays exactly as it did before truncation existed.
//! * **Old-term majority.** Each successful answer tells the leader which entry the follower matches
//!   up to. When the followers whose last match is an entry of an older term than the leader's (and
//!   that have acknowledged nothing of the leader's term) form, with the leader, a majority, the
//!   moment is published as an [`OldTermMajority`]: a fault schedule waits for it to crash or isolate
//!   that leader (see [`Cluster::wait_old_term_majority`](crate::Cluster::wait_old_term_majority)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use raft_core::{AppendEntriesRequest, AppendResult, Entry, LogId, LogIndex, NodeId, Term};
use tokio::sync::watch;

/// A leader learned that a majority (itself included) holds an entry of an older term than its own,
/// while the followers counted hold nothing of its term. A leader that committed `entry` now would
/// break the rule of figure 8; a correct one commits nothing until an entry of its own term is on a
/// majority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldTermMajority {
    /// The leader.
    pub leader: NodeId,
    /// The leader's term.
    pub term: Term,
    /// The highest entry the majority holds: its term is older than `term`.
    pub entry: LogId,
}

/// Counters of a cluster's AppendEntries faults (from
/// [`Cluster::append_fault_stats`](crate::Cluster::append_fault_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendFaultStats {
    /// AppendEntries whose entries were cut to a shorter prefix.
    pub truncated: u64,
    /// Entries cut off those requests (the leader sends them again later).
    pub entries_held_back: u64,
    /// AppendEntries failed (not delivered) because the answer to a truncated one broke the link.
    pub broken_links: u64,
    /// [`OldTermMajority`] moments published.
    pub old_term_majorities: u64,
}

/// What one follower acknowledged to a leader in the leader's current term.
#[derive(Clone, Copy, Debug)]
struct FollowerAck {
    /// The highest entry it matches.
    matched: LogId,
    /// Whether it acknowledged an entry of the leader's term (it then holds the leader's blank entry,
    /// and nothing in the term removes it again).
    holds_current_term: bool,
}

/// The acknowledgements one leader received in its current term.
#[derive(Debug, Default)]
struct LeaderAcks {
    term: Term,
    followers: BTreeMap<NodeId, FollowerAck>,
    /// The last index published as an old-term majority in this term.
    published: LogIndex,
}

#[derive(Debug)]
struct State {
    truncate_prob: f64,
    rng: fastrand::Rng,
    acks: BTreeMap<NodeId, LeaderAcks>,
    /// `(leader, follower)` links whose next AppendEntries fails: a truncated one was answered.
    broken: BTreeSet<(NodeId, NodeId)>,
    /// Every [`OldTermMajority`] published, in order.
    majorities: Vec<OldTermMajority>,
    stats: AppendFaultStats,
}

/// The AppendEntries faults and signals of one cluster (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct AppendFaults {
    /// How many nodes form a majority of the cluster.
    majority: usize,
    state: Mutex<State>,
    majorities: watch::Sender<Option<OldTermMajority>>,
}

/// Distinguishes the truncation RNG's seed from the others derived from the cluster's seed.
const TRUNCATION_STREAM: u64 = 0x7472_756e_6361_7465;

impl AppendFaults {
    /// Faults for a cluster of `nodes` voters with `seed`, truncating with probability
    /// `truncate_prob` (0 for never).
    pub(crate) fn new(nodes: u64, seed: u64, truncate_prob: f64) -> Self {
        let majority = usize::try_from(nodes / 2 + 1).unwrap_or(usize::MAX);
        AppendFaults {
            majority,
            state: Mutex::new(State {
                truncate_prob,
                rng: fastrand::Rng::with_seed(seed ^ TRUNCATION_STREAM),
                acks: BTreeMap::new(),
                broken: BTreeSet::new(),
                majorities: Vec::new(),
                stats: AppendFaultStats::default(),
            }),
            majorities: watch::channel(None).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the probability that an AppendEntries carrying entries is truncated (0 for never).
    pub(crate) fn set_truncation(&self, prob: f64) {
        self.state().truncate_prob = prob;
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> AppendFaultStats {
        self.state().stats
    }

    /// Cuts `entries` to a random shorter prefix (possibly empty) with the truncation probability, and
    /// returns whether it did. Draws nothing while the probability is zero or there are no entries.
    pub(crate) fn maybe_truncate<C>(&self, entries: &mut Vec<Entry<C>>) -> bool {
        let mut s = self.state();
        if s.truncate_prob <= 0.0 || entries.is_empty() {
            return false;
        }
        let prob = s.truncate_prob;
        if s.rng.f64() >= prob {
            return false;
        }
        let keep = s.rng.usize(0..entries.len());
        s.stats.truncated += 1;
        s.stats.entries_held_back += (entries.len() - keep) as u64;
        entries.truncate(keep);
        true
    }

    /// Whether the link from `leader` to `follower` is broken (the answer to a truncated request came
    /// back since its last AppendEntries): the AppendEntries about to leave must then fail. Mends the
    /// link.
    pub(crate) fn take_broken(&self, leader: NodeId, follower: NodeId) -> bool {
        let mut s = self.state();
        let broken = s.broken.remove(&(leader, follower));
        if broken {
            s.stats.broken_links += 1;
        }
        broken
    }

    /// Every [`OldTermMajority`] published so far, in order.
    pub(crate) fn majorities(&self) -> Vec<OldTermMajority> {
        self.state().majorities.clone()
    }

    /// Subscribes to [`OldTermMajority`] moments: the receiver sees those published from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<OldTermMajority>> {
        self.majorities.subscribe()
    }

    /// Records that `leader` sent `request` (`truncated` or not) to `follower` and got `result` back in
    /// the request's term: breaks the link if the request was truncated and accepted, and publishes
    /// an [`OldTermMajority`] if the answer completes one.
    pub(crate) fn on_answer(
        &self,
        leader: NodeId,
        follower: NodeId,
        request: &SentAppend,
        truncated: bool,
        result: &AppendResult,
    ) {
        let AppendResult::Success { match_index } = *result else {
            return;
        };
        let mut s = self.state();
        if truncated {
            s.broken.insert((leader, follower));
        }
        let Some(matched) = request.id_at(match_index) else {
            return;
        };
        let term = request.term;
        let acks = s.acks.entry(leader).or_default();
        if acks.term != term {
            if acks.term > term {
                return; // a late answer from an older leadership
            }
            *acks = LeaderAcks {
                term,
                ..LeaderAcks::default()
            };
        }
        let ack = acks.followers.entry(follower).or_insert(FollowerAck {
            matched,
            holds_current_term: false,
        });
        if matched.index >= ack.matched.index {
            ack.matched = matched;
        }
        ack.holds_current_term |= matched.term == term;
        // The followers that hold only older terms, highest match first.
        let mut old_only: Vec<LogId> = acks
            .followers
            .values()
            .filter(|a| !a.holds_current_term && a.matched.term < term)
            .map(|a| a.matched)
            .collect();
        old_only.sort_unstable_by_key(|id| std::cmp::Reverse(id.index));
        let Some(&entry) = old_only.get(self.majority.saturating_sub(2)) else {
            return;
        };
        if entry.index <= acks.published || entry.index == 0 {
            return;
        }
        acks.published = entry.index;
        let moment = OldTermMajority {
            leader,
            term,
            entry,
        };
        s.stats.old_term_majorities += 1;
        s.majorities.push(moment);
        drop(s);
        self.majorities.send_replace(Some(moment));
    }
}

/// What the harness keeps of an AppendEntries it sent: enough to name the entry an answer matches.
#[derive(Clone, Debug)]
pub(crate) struct SentAppend {
    term: Term,
    prev: LogId,
    entries: Vec<LogId>,
}

impl SentAppend {
    /// The ids of `request` (as it leaves).
    pub(crate) fn of<C>(request: &AppendEntriesRequest<C>) -> Self {
        SentAppend {
            term: request.term,
            prev: request.prev_log_id,
            entries: request.entries.iter().map(|e| e.log_id).collect(),
        }
    }

    /// The ids of the entries sent.
    pub(crate) fn entries(&self) -> &[LogId] {
        &self.entries
    }

    /// The id of the entry at `index`, if the request named it (`prev_log_id` or one of the entries).
    fn id_at(&self, index: LogIndex) -> Option<LogId> {
        if index == self.prev.index {
            return Some(self.prev);
        }
        self.entries.iter().copied().find(|id| id.index == index)
    }
}
