//! Watch Raft work: a small cluster with a fixed seed, printed as a readable, time-ordered trace.
//!
//! ```sh
//! cargo run --example timeline -- election      # or split-vote, leader-crash, no-majority, log-repair
//! cargo run --example timeline -- split-vote --seed 7 --nodes 5
//! ```
//!
//! # What runs
//! Each node is the real [`raft_core::Engine`], fed exactly as the async driver feeds it (tick before
//! every input; for each output: persist the hard state, send the messages, truncate and append,
//! report `log_persisted`, then release the held reply, then apply). What is simulated is everything
//! around the engines, and it is deliberately simple:
//! * a **network** that delivers every message after a delay drawn from a seeded generator (5 to 15 ms
//!   by default) and can be partitioned; a request across a partition or to a crashed node is refused
//!   (the sender hears it is unreachable, as on the mock network). Otherwise nothing is lost,
//!   duplicated or reordered on purpose (different delays alone may reorder);
//! * **storage** that is durable the moment the engine's output is executed (no write latency);
//! * **crashes** that keep the durable hard state and log and lose everything else (messages in flight
//!   from or to the crashed node included), and restarts that build a new engine from the durable
//!   state, as `Raft::start` does.
//!
//! [`Sim`] is the simulator; [`run`] plays one of the [`Scenario`]s on it and returns its
//! [`Timeline`]. The split-vote measurement of `docs/raft-by-questions.md` (question 4) runs on
//! [`Sim`] too.
//!
//! This is an engine-level simulation, not the tokio driver on [`Router`](raft_net_mock::Router): it is pure,
//! single-threaded and needs no runtime, so the same seed always prints the same trace. Client writes
//! are answered the way the driver answers them (success once applied on the leader; `OutcomeUnknown`
//! when the leader loses office first; `NotLeader` when nothing was proposed).
//!
//! # Why a vote was refused
//! The engine answers a vote request with yes or no. The trace gives the reason by reading the voter's
//! public state just before the request is handled ([`refuse_reason`]) and checks that its reading
//! agrees with the engine's answer on every request (a disagreement panics), so the reasons printed
//! are the rules the engine applies.
//!
//! ```
//! use raft_sim::timeline::{self, Scenario};
//! let trace = timeline::run(Scenario::Election);
//! assert_eq!(trace.leaders().len(), 1);
//! println!("{trace}");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use raft_core::{
    AppendEntriesRequest, AppendResult, Config, Engine, Entry, EntryPayload, HardState, LogId,
    LogIndex, Membership, NodeId, RecoveredState, Request, Response, Role, Term, VoteRequest,
};

// ===== why a vote is refused =====

/// Why a voter refuses a vote (the first rule, in this order, that says no).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The request's term is older than the voter's current term.
    StaleTerm {
        /// The voter's term.
        voter_term: Term,
    },
    /// The voter already voted in the request's term, for another node (possibly itself, as a
    /// candidate).
    AlreadyVoted {
        /// Who it voted for.
        voted_for: NodeId,
    },
    /// The candidate's last log entry is older than the voter's (lower term, or same term and lower
    /// index): the candidate could lack committed entries.
    LogNotUpToDate {
        /// The candidate's last log id.
        candidate_last: LogId,
        /// The voter's last log id.
        voter_last: LogId,
    },
}

/// Why `voter` would refuse `req`, or `None` if it would grant it, read from the voter's public state
/// with the rules of `Engine::handle_vote_request`: a request of an older term is refused; a higher
/// term is adopted first (which clears the vote); then the vote must be free (or already this
/// candidate's) and the candidate's last log id at least the voter's.
pub fn refuse_reason<C: Clone>(voter: &Engine<C>, req: &VoteRequest) -> Option<RefuseReason> {
    let term = voter.term();
    if req.term < term {
        return Some(RefuseReason::StaleTerm { voter_term: term });
    }
    let voted_for = if req.term > term {
        None
    } else {
        voter.hard_state().voted_for
    };
    if let Some(v) = voted_for {
        if v != req.candidate_id {
            return Some(RefuseReason::AlreadyVoted { voted_for: v });
        }
    }
    let voter_last = voter.last_log_id();
    if req.last_log_id < voter_last {
        return Some(RefuseReason::LogNotUpToDate {
            candidate_last: req.last_log_id,
            voter_last,
        });
    }
    None
}

// ===== what the trace records =====

/// Why a leader or a candidate stopped being one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDownReason {
    /// It saw a higher term (in a request or a response), from `from` if known.
    HigherTerm {
        /// The new term.
        term: Term,
        /// The node whose message carried it.
        from: Option<NodeId>,
    },
    /// A leader heard from no majority for a whole `election_timeout_max` (check-quorum).
    CheckQuorum {
        /// The window, in ms.
        window_ms: u64,
    },
    /// A candidate got an AppendEntries of its own term: someone else won.
    LeaderElected {
        /// The winner.
        leader: NodeId,
    },
}

/// Why a follower refused an AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendRefusal {
    /// The request is of an older term than the follower's.
    StaleTerm {
        /// The follower's term.
        follower_term: Term,
    },
    /// The follower's log does not reach `prev_log_id`.
    Missing {
        /// The follower's last index.
        last_index: LogIndex,
    },
    /// The follower holds an entry of another term at `prev_log_id.index`.
    TermMismatch {
        /// The term the follower holds there.
        held_term: Term,
    },
    /// The request is malformed or conflicts with a committed entry.
    Invalid,
}

/// One thing that happened, as the trace shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Narration: what the scenario does next.
    Note(String),
    /// The cluster starts: every node initialized with the same membership, as followers of term 0.
    Started {
        /// The voters.
        nodes: Vec<NodeId>,
    },
    /// A node's election timer fired: it became a candidate in a new term, voted for itself, and asked
    /// every other voter.
    ElectionTimeout {
        /// The node.
        node: NodeId,
        /// The new term.
        term: Term,
        /// How long since its timer was last reset (the randomized timeout it drew).
        waited_ms: u64,
        /// Its role when the timer fired (a candidate whose election failed times out again).
        was: Role,
        /// The voters it asks.
        asks: Vec<NodeId>,
    },
    /// A voter granted its vote.
    VoteGranted {
        /// The voter.
        voter: NodeId,
        /// The candidate.
        candidate: NodeId,
        /// The request's term.
        term: Term,
        /// The voter's term before the request (lower if the request made it adopt the term).
        voter_term_before: Term,
    },
    /// A voter refused its vote.
    VoteRefused {
        /// The voter.
        voter: NodeId,
        /// The candidate.
        candidate: NodeId,
        /// The request's term.
        term: Term,
        /// Why.
        reason: RefuseReason,
    },
    /// A candidate received a granted vote and still lacks a majority.
    VoteCounted {
        /// The candidate.
        candidate: NodeId,
        /// The voter whose vote arrived.
        voter: NodeId,
        /// The term.
        term: Term,
        /// Votes held now, its own included.
        votes: usize,
        /// Votes needed.
        needed: usize,
    },
    /// A candidate won: it is leader of `term` and appends its no-op entry.
    BecameLeader {
        /// The new leader.
        node: NodeId,
        /// Its term.
        term: Term,
        /// The votes it won with, its own included.
        votes: Vec<NodeId>,
        /// The no-op entry it appends.
        blank: LogId,
    },
    /// A leader or candidate became a follower.
    SteppedDown {
        /// The node.
        node: NodeId,
        /// What it was.
        was: Role,
        /// The term it held that role in.
        term: Term,
        /// Why.
        reason: StepDownReason,
    },
    /// A follower got the first AppendEntries of a leader in a term.
    FollowsLeader {
        /// The follower.
        node: NodeId,
        /// The leader.
        leader: NodeId,
        /// The term.
        term: Term,
    },
    /// A follower stored entries sent by the leader (durable before it answers).
    Stored {
        /// The follower.
        node: NodeId,
        /// The leader that sent them.
        leader: NodeId,
        /// The first entry stored.
        first: LogId,
        /// The last entry stored.
        last: LogId,
    },
    /// A follower refused an AppendEntries.
    AppendRefused {
        /// The follower.
        node: NodeId,
        /// The sender.
        leader: NodeId,
        /// The request's term.
        term: Term,
        /// The request's `prev_log_id`.
        prev: LogId,
        /// Why.
        reason: AppendRefusal,
    },
    /// A node deleted a conflicting suffix of its durable log.
    Truncated {
        /// The node.
        node: NodeId,
        /// The first index removed.
        from: LogIndex,
        /// The ids of the entries removed.
        removed: Vec<LogId>,
    },
    /// A node's commit index advanced and it applied the newly committed entries.
    Committed {
        /// The node.
        node: NodeId,
        /// Whether it is the leader (it decided) or a follower (it learned from the leader).
        by_leader: bool,
        /// The leader it learned from, for a follower.
        leader: Option<NodeId>,
        /// The first index applied.
        first: LogIndex,
        /// The last entry committed.
        last: LogId,
        /// For a leader: the voters known to store `last` (a majority).
        holders: Vec<NodeId>,
        /// For a leader: the client writes among the entries, with their ids.
        writes: Vec<(LogId, u64)>,
    },
    /// A client's write was proposed at a leader and appended to its log.
    Proposed {
        /// The leader.
        node: NodeId,
        /// The written value.
        value: u64,
        /// Where it was appended.
        at: LogId,
    },
    /// A client's write was refused by a node that is not the leader; nothing was proposed.
    NotLeader {
        /// The node asked.
        node: NodeId,
        /// The value.
        value: u64,
        /// The leader it knows of.
        leader_hint: Option<NodeId>,
    },
    /// A client's write was committed and applied; the client hears success.
    WriteAcked {
        /// The leader that answers.
        node: NodeId,
        /// The value.
        value: u64,
        /// Where it was committed.
        at: LogId,
    },
    /// A client's pending write failed because its leader lost office (or crashed) first: the entry
    /// may still commit later, the outcome is unknown.
    WriteOutcomeUnknown {
        /// The former leader.
        node: NodeId,
        /// The value.
        value: u64,
        /// Where it had been appended.
        at: LogId,
        /// Whether the node crashed (the driver reports `Stopped`) rather than stepped down
        /// (`OutcomeUnknown`).
        crashed: bool,
    },
    /// A node crashed: its durable hard state and log survive, nothing else does.
    Crashed {
        /// The node.
        node: NodeId,
    },
    /// A node restarted from its durable state, as a follower.
    Restarted {
        /// The node.
        node: NodeId,
        /// Its durable hard state.
        hard_state: HardState,
        /// Its last durable log id.
        last: LogId,
    },
    /// The network was split into groups that cannot talk to each other.
    Partitioned {
        /// The groups.
        groups: Vec<Vec<NodeId>>,
    },
    /// Every partition was removed.
    Healed,
}

fn list(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ids(ids: &[LogId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::StaleTerm { voter_term } => {
                write!(f, "stale term (the voter is already in term {voter_term})")
            }
            RefuseReason::AlreadyVoted { voted_for } => {
                write!(f, "already voted for node {voted_for} in this term")
            }
            RefuseReason::LogNotUpToDate {
                candidate_last,
                voter_last,
            } => write!(
                f,
                "log not up to date (candidate's last entry {candidate_last} is older than the voter's {voter_last})"
            ),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Note(s) => write!(f, "-- {s}"),
            Event::Started { nodes } => write!(
                f,
                "nodes {} start as followers of term 0, all with the membership {{{}}}",
                list(nodes),
                list(nodes)
            ),
            Event::ElectionTimeout {
                node,
                term,
                waited_ms,
                was,
                asks,
            } => {
                let why = match was {
                    Role::Candidate => "no winner in its term".to_string(),
                    _ => "no leader heard, no vote granted".to_string(),
                };
                write!(
                    f,
                    "node {node}: ELECTION TIMEOUT after {waited_ms} ms ({why}) -> candidate of term {term}, votes for itself, asks {}",
                    list(asks)
                )
            }
            Event::VoteGranted {
                voter,
                candidate,
                term,
                voter_term_before,
            } => {
                let adopt = if voter_term_before < term {
                    format!(" (moves from term {voter_term_before} to {term})")
                } else {
                    String::new()
                };
                write!(
                    f,
                    "node {voter}: vote for node {candidate} in term {term}: GRANTED{adopt}"
                )
            }
            Event::VoteRefused {
                voter,
                candidate,
                term,
                reason,
            } => {
                let reason = match reason {
                    RefuseReason::AlreadyVoted { voted_for } if voted_for == voter => {
                        "already voted for itself in this term (it is a candidate too)".to_string()
                    }
                    r => r.to_string(),
                };
                write!(
                    f,
                    "node {voter}: vote for node {candidate} in term {term}: REFUSED, {reason}"
                )
            }
            Event::VoteCounted {
                candidate,
                voter,
                term,
                votes,
                needed,
            } => write!(
                f,
                "node {candidate}: gets node {voter}'s vote in term {term}: {votes} votes, needs {needed}"
            ),
            Event::BecameLeader {
                node,
                term,
                votes,
                blank,
            } => write!(
                f,
                "node {node}: LEADER of term {term} (votes of {}); appends its no-op entry {blank}",
                list(votes)
            ),
            Event::SteppedDown {
                node,
                was,
                term,
                reason,
            } => {
                let was = match was {
                    Role::Leader => "leader",
                    Role::Candidate => "candidate",
                    Role::Follower => "follower",
                };
                match reason {
                    StepDownReason::HigherTerm { term: t, from } => {
                        let from = from.map(|n| format!(" from node {n}")).unwrap_or_default();
                        write!(
                            f,
                            "node {node}: steps down as {was} of term {term}: saw the higher term {t}{from}"
                        )
                    }
                    StepDownReason::CheckQuorum { window_ms } => write!(
                        f,
                        "node {node}: steps down as {was} of term {term}: heard from no majority for {window_ms} ms (check-quorum)"
                    ),
                    StepDownReason::LeaderElected { leader } => write!(
                        f,
                        "node {node}: steps down as {was} of term {term}: node {leader} won that term"
                    ),
                }
            }
            Event::FollowsLeader { node, leader, term } => {
                write!(f, "node {node}: follows node {leader}, leader of term {term}")
            }
            Event::Stored {
                node,
                leader,
                first,
                last,
            } => {
                if first == last {
                    write!(f, "node {node}: stores entry {first} from leader {leader}")
                } else {
                    write!(f, "node {node}: stores entries {first}..{last} from leader {leader}")
                }
            }
            Event::AppendRefused {
                node,
                leader,
                term,
                prev,
                reason,
            } => {
                let why = match reason {
                    AppendRefusal::StaleTerm { follower_term } => {
                        format!("stale term (the follower is in term {follower_term})")
                    }
                    AppendRefusal::Missing { last_index } => format!(
                        "it has no entry at index {} (its log ends at {last_index})",
                        prev.index
                    ),
                    AppendRefusal::TermMismatch { held_term } => format!(
                        "it holds an entry of term {held_term} at index {}, not {prev}",
                        prev.index
                    ),
                    AppendRefusal::Invalid => "malformed request".to_string(),
                };
                write!(
                    f,
                    "node {node}: AppendEntries from node {leader} (term {term}, after {prev}) REFUSED: {why}"
                )
            }
            Event::Truncated {
                node,
                from,
                removed,
            } => write!(
                f,
                "node {node}: TRUNCATES its log from index {from}, removing {} (a conflicting suffix the leader does not have)",
                ids(removed)
            ),
            Event::Committed {
                node,
                by_leader,
                leader,
                first,
                last,
                holders,
                writes,
            } => {
                let range = if *first == last.index {
                    format!("{first}")
                } else {
                    format!("{first}..{}", last.index)
                };
                if *by_leader {
                    let writes = if writes.is_empty() {
                        String::new()
                    } else {
                        let w: Vec<String> =
                            writes.iter().map(|(at, v)| format!("{v} at {at}")).collect();
                        format!(" (writes {})", w.join(", "))
                    };
                    write!(
                        f,
                        "node {node}: COMMITS up to {last} ({last} is stored on {}: a majority); applies {range}{writes}",
                        list(holders)
                    )
                } else {
                    let from = leader
                        .map(|l| format!(" from leader {l}"))
                        .unwrap_or_default();
                    write!(
                        f,
                        "node {node}: learns commit index {}{from}; applies {range}",
                        last.index
                    )
                }
            }
            Event::Proposed { node, value, at } => {
                write!(f, "client -> node {node}: write {value}: appended at {at}")
            }
            Event::NotLeader {
                node,
                value,
                leader_hint,
            } => {
                let hint = leader_hint
                    .map(|l| format!("node {l}"))
                    .unwrap_or_else(|| "none".to_string());
                write!(
                    f,
                    "client -> node {node}: write {value}: refused, NotLeader (leader hint: {hint}); nothing was proposed"
                )
            }
            Event::WriteAcked { node, value, at } => write!(
                f,
                "client <- node {node}: write {value} succeeded (committed and applied at {at})"
            ),
            Event::WriteOutcomeUnknown {
                node,
                value,
                at,
                crashed,
            } => {
                if *crashed {
                    write!(
                        f,
                        "client <- node {node}: write {value} at {at}: error, the node stopped before it committed (it may still commit)"
                    )
                } else {
                    write!(
                        f,
                        "client <- node {node}: write {value} at {at}: OutcomeUnknown (leadership lost before it committed; it may still commit)"
                    )
                }
            }
            Event::Crashed { node } => write!(
                f,
                "node {node}: CRASHES (its durable term, vote and log survive; nothing else does)"
            ),
            Event::Restarted {
                node,
                hard_state,
                last,
            } => {
                let voted = hard_state
                    .voted_for
                    .map(|v| format!("voted for {v}"))
                    .unwrap_or_else(|| "no vote".to_string());
                write!(
                    f,
                    "node {node}: RESTARTS from its storage: term {}, {voted}, last entry {last}; follower",
                    hard_state.term
                )
            }
            Event::Partitioned { groups } => {
                let g: Vec<String> = groups.iter().map(|g| format!("{{{}}}", list(g))).collect();
                write!(f, "network PARTITIONED: {}", g.join(" | "))
            }
            Event::Healed => write!(f, "network HEALED: every node can reach every other"),
        }
    }
}

// ===== the simulator =====

/// How to build a [`Sim`].
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Node ids are `1..=nodes`.
    pub nodes: u64,
    /// Seeds the engines (`Config::seed`) and the network delays.
    pub seed: u64,
    /// The engines' configuration; its `seed` is overwritten with [`seed`](Self::seed).
    pub config: Config,
    /// Each message takes a uniform random delay in this inclusive range (ms).
    pub delay_ms: (u64, u64),
}

impl SimOptions {
    /// `nodes` nodes, default [`Config`] (election timeout 150..300 ms, heartbeat 50 ms), message
    /// delays of 5 to 15 ms.
    pub fn new(nodes: u64, seed: u64) -> Self {
        SimOptions {
            nodes,
            seed,
            config: Config::default(),
            delay_ms: (5, 15),
        }
    }
}

enum Input {
    Tick,
    Vote(NodeId, u32, VoteRequest),
    Append(NodeId, u32, AppendEntriesRequest<u64>),
    VoteResponse(NodeId, raft_core::VoteResponse),
    AppendResponse(NodeId, raft_core::AppendEntriesResponse),
    Unreachable(NodeId),
    Propose(Vec<u64>),
}

enum Msg {
    Request {
        from: NodeId,
        from_inc: u32,
        to: NodeId,
        req: Request<u64>,
    },
    Response {
        from: NodeId,
        to: NodeId,
        to_inc: u32,
        resp: Response,
    },
}

struct SimNode {
    engine: Option<Engine<u64>>,
    /// Bumped at every crash: messages of an older incarnation are dropped.
    incarnation: u32,
    /// Durable state.
    hard_state: HardState,
    log: Vec<Entry<u64>>,
    /// Volatile state.
    applied: LogIndex,
    pending: Vec<(LogId, u64)>,
    votes: BTreeSet<NodeId>,
    timer_since: u64,
}

#[derive(Clone, Copy)]
struct Snap {
    role: Role,
    term: Term,
    leader: Option<NodeId>,
    deadline: u64,
}

/// Keeps the network's delay generator apart from the engines' election generators, which are seeded
/// with the same seed.
const NETWORK_STREAM: u64 = 0x7E1E_11E0_5EED_0001;

/// A cluster of [`Engine`]s on a simulated network, run by a deterministic event loop. See the
/// [module docs](self).
pub struct Sim {
    config: Config,
    delay_ms: (u64, u64),
    rng: fastrand::Rng,
    now: u64,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Messages in flight, by (delivery time, sequence number).
    queue: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    groups: BTreeMap<NodeId, usize>,
    events: Vec<(u64, Event)>,
}

impl Sim {
    /// A cluster of fresh nodes at time 0, not yet initialized (see [`start`](Self::start)).
    pub fn new(opts: SimOptions) -> Self {
        let config = Config {
            seed: opts.seed,
            ..opts.config
        };
        let voters: Vec<NodeId> = (1..=opts.nodes).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let node = SimNode {
                    engine: Some(Engine::new(id, &config, RecoveredState::default(), 0)),
                    incarnation: 0,
                    hard_state: HardState::default(),
                    log: Vec::new(),
                    applied: 0,
                    pending: Vec::new(),
                    votes: BTreeSet::new(),
                    timer_since: 0,
                };
                (id, node)
            })
            .collect();
        Sim {
            config,
            delay_ms: opts.delay_ms,
            rng: fastrand::Rng::with_seed(opts.seed ^ NETWORK_STREAM),
            now: 0,
            voters,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            groups: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Initializes every node with the membership of all nodes (as `Raft::initialize` on each).
    pub fn start(&mut self) {
        let membership = Membership::new(self.voters.iter().copied());
        for id in self.voters.clone() {
            let engine = self.engine_mut(id);
            engine
                .initialize(membership.clone())
                .expect("a fresh node accepts initialize");
            self.flush(id, None, None);
            self.node_mut(id).timer_since = self.now;
        }
        self.record(Event::Started {
            nodes: self.voters.clone(),
        });
    }

    // ----- observation -----

    /// The current simulated time (ms).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Everything recorded so far, with its time (ms).
    pub fn events(&self) -> &[(u64, Event)] {
        &self.events
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.voters.clone()
    }

    /// The running engine of node `id` (`None` while it is crashed).
    pub fn engine(&self, id: NodeId) -> Option<&Engine<u64>> {
        self.nodes[&id].engine.as_ref()
    }

    /// The running node that is leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.engine.as_ref().map(|e| (id, e)))
            .filter(|(_, e)| e.role() == Role::Leader)
            .max_by_key(|(_, e)| e.term())
            .map(|(id, _)| id)
    }

    /// The durable log of node `id`.
    pub fn durable_log(&self, id: NodeId) -> &[Entry<u64>] {
        &self.nodes[&id].log
    }

    // ----- actions -----

    /// Records a narration line in the trace.
    pub fn note(&mut self, text: impl Into<String>) {
        self.record(Event::Note(text.into()));
    }

    /// A client writes `value` at node `id` (which must be running).
    pub fn propose(&mut self, id: NodeId, value: u64) {
        self.step(id, Input::Propose(vec![value]));
    }

    /// Clients write `values` at node `id` at the same moment: like the driver, the node proposes them
    /// together (one append, one AppendEntries per follower).
    pub fn propose_many(&mut self, id: NodeId, values: &[u64]) {
        self.step(id, Input::Propose(values.to_vec()));
    }

    /// Crashes node `id`: its durable state survives, its messages in flight are lost.
    pub fn crash(&mut self, id: NodeId) {
        let now = self.now;
        let node = self.node_mut(id);
        assert!(node.engine.is_some(), "node {id} is already down");
        node.engine = None;
        node.incarnation += 1;
        node.applied = 0;
        node.votes.clear();
        let pending = std::mem::take(&mut node.pending);
        self.events.push((now, Event::Crashed { node: id }));
        for (at, value) in pending {
            self.record(Event::WriteOutcomeUnknown {
                node: id,
                value,
                at,
                crashed: true,
            });
        }
    }

    /// Restarts node `id` from its durable state.
    pub fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let config = self.config.clone();
        let node = self.node_mut(id);
        assert!(node.engine.is_none(), "node {id} is running");
        let state = RecoveredState {
            hard_state: node.hard_state,
            log_base: LogId::default(),
            snapshot: None,
            entries: node.log.clone(),
            applied_index: 0,
        };
        node.engine = Some(Engine::new(id, &config, state, now));
        node.timer_since = now;
        let hard_state = node.hard_state;
        let last = node.log.last().map(|e| e.log_id).unwrap_or_default();
        self.record(Event::Restarted {
            node: id,
            hard_state,
            last,
        });
        self.flush(id, None, None);
    }

    /// Splits the network: nodes talk only within their group; unlisted nodes form one more group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.groups.clear();
        for (i, g) in groups.iter().enumerate() {
            for &id in g.iter() {
                self.groups.insert(id, i + 1);
            }
        }
        let mut shown: Vec<Vec<NodeId>> = groups.iter().map(|g| g.to_vec()).collect();
        let rest: Vec<NodeId> = self
            .voters
            .iter()
            .copied()
            .filter(|id| !self.groups.contains_key(id))
            .collect();
        if !rest.is_empty() {
            shown.push(rest);
        }
        self.record(Event::Partitioned { groups: shown });
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.groups.clear();
        self.record(Event::Healed);
    }

    /// Runs every event up to and including time `t`, then sets the time to `t`.
    pub fn run_until(&mut self, t: u64) {
        while let Some(next) = self.next_time() {
            if next > t {
                break;
            }
            self.process_next();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `ms` milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Runs until some node is leader (returns it) or time `limit` passes (returns `None`).
    pub fn run_until_leader(&mut self, limit: u64) -> Option<NodeId> {
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            match self.next_time() {
                Some(t) if t <= limit => self.process_next(),
                _ => {
                    self.now = self.now.max(limit);
                    return None;
                }
            }
        }
    }

    // ----- the event loop -----

    fn next_time(&self) -> Option<u64> {
        let msg = self.queue.keys().next().map(|k| k.0);
        let timer = self
            .nodes
            .values()
            .filter_map(|n| n.engine.as_ref())
            .map(|e| e.next_deadline())
            .min();
        match (msg, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn process_next(&mut self) {
        let msg_time = self.queue.keys().next().map(|k| k.0);
        let timer = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| n.engine.as_ref().map(|e| (e.next_deadline(), id)))
            .min();
        match (timer, msg_time) {
            (Some((t, id)), m) if m.is_none_or(|m| t <= m) => {
                self.now = self.now.max(t);
                self.step(id, Input::Tick);
            }
            (_, Some(_)) => {
                let ((t, _), msg) = self.queue.pop_first().expect("a message is queued");
                self.now = self.now.max(t);
                self.deliver(msg);
            }
            (None, None) => {}
            (Some(_), None) => unreachable!(),
        }
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request {
                from,
                from_inc,
                to,
                req,
            } => {
                let sender_alive = self.alive(from, from_inc);
                if !sender_alive {
                    return; // the sender crashed; its connection died with it
                }
                if self.nodes[&to].engine.is_none() || !self.can_talk(from, to) {
                    // Refused (down or partitioned): the leader stops pipelining to it.
                    if matches!(req, Request::AppendEntries(_)) {
                        self.step(from, Input::Unreachable(to));
                    }
                    return;
                }
                match req {
                    Request::Vote(v) => self.step(to, Input::Vote(from, from_inc, v)),
                    Request::AppendEntries(a) => self.step(to, Input::Append(from, from_inc, a)),
                    // Engines put snapshot chunks in `Output::snapshot_sends`, never in
                    // `messages`, and the timeline's nodes never compact their logs.
                    Request::InstallSnapshot(_) => {}
                }
            }
            Msg::Response {
                from,
                to,
                to_inc,
                resp,
            } => {
                if !self.alive(to, to_inc) || !self.can_talk(from, to) {
                    return;
                }
                match resp {
                    Response::Vote(r) => self.step(to, Input::VoteResponse(from, r)),
                    Response::AppendEntries(r) => self.step(to, Input::AppendResponse(from, r)),
                    // No snapshot requests are sent here (see above), so none are answered.
                    Response::InstallSnapshot(_) => {}
                }
            }
        }
    }

    fn alive(&self, id: NodeId, incarnation: u32) -> bool {
        let n = &self.nodes[&id];
        n.engine.is_some() && n.incarnation == incarnation
    }

    fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        self.groups.get(&a).copied().unwrap_or(0) == self.groups.get(&b).copied().unwrap_or(0)
    }

    fn send(&mut self, msg: Msg) {
        let (lo, hi) = self.delay_ms;
        let delay = if hi > lo { self.rng.u64(lo..=hi) } else { lo };
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), msg);
    }

    // ----- one input to one node -----

    fn step(&mut self, id: NodeId, input: Input) {
        // The driver ticks the engine before it hands it a message, and whenever a deadline passes.
        let before = self.snap(id);
        let now = self.now;
        self.engine_mut(id).tick(now);
        self.observe(id, before, None);
        self.flush(id, None, None);
        if matches!(input, Input::Tick) {
            self.settle_writes(id);
            return;
        }

        let before = self.snap(id);
        let mut held = None;
        let mut append_from = None;
        let mut cause = None;
        // Shown after the role change it causes (a refused AppendEntries still makes a follower).
        let mut refused = None;
        match input {
            Input::Tick => {}
            Input::Vote(from, from_inc, req) => {
                cause = Some(from);
                let reason = refuse_reason(self.engine(id).expect("running"), &req);
                let resp = self.engine_mut(id).handle_vote_request(req.clone());
                assert_eq!(
                    resp.vote_granted,
                    reason.is_none(),
                    "the timeline's reading of the vote rules ({reason:?}) disagrees with the engine \
                     on node {id} for {req:?}"
                );
                let event = match reason {
                    None => Event::VoteGranted {
                        voter: id,
                        candidate: req.candidate_id,
                        term: req.term,
                        voter_term_before: before.term,
                    },
                    Some(reason) => Event::VoteRefused {
                        voter: id,
                        candidate: req.candidate_id,
                        term: req.term,
                        reason,
                    },
                };
                self.record(event);
                held = Some((from, from_inc, Response::Vote(resp)));
            }
            Input::Append(from, from_inc, req) => {
                cause = Some(from);
                append_from = Some(from);
                let (term, prev) = (req.term, req.prev_log_id);
                let held_term_at_prev = self.term_at(id, prev.index);
                let last_index = self.engine(id).expect("running").last_log_id().index;
                let resp = self.engine_mut(id).handle_append_entries(req);
                let reason = match resp.result {
                    AppendResult::Success { .. } => None,
                    AppendResult::StaleTerm => Some(AppendRefusal::StaleTerm {
                        follower_term: resp.term,
                    }),
                    AppendResult::Conflict { .. } => Some(match held_term_at_prev {
                        Some(t) => AppendRefusal::TermMismatch { held_term: t },
                        None => AppendRefusal::Missing { last_index },
                    }),
                    AppendResult::Invalid => Some(AppendRefusal::Invalid),
                };
                refused = reason.map(|reason| Event::AppendRefused {
                    node: id,
                    leader: from,
                    term,
                    prev,
                    reason,
                });
                held = Some((from, from_inc, Response::AppendEntries(resp)));
            }
            Input::VoteResponse(from, resp) => {
                cause = Some(from);
                let counts =
                    before.role == Role::Candidate && resp.term == before.term && resp.vote_granted;
                if counts {
                    self.node_mut(id).votes.insert(from);
                }
                self.engine_mut(id).handle_vote_response(from, resp);
                let engine = self.engine(id).expect("running");
                if counts && engine.role() == Role::Candidate {
                    let votes = self.nodes[&id].votes.len();
                    let needed = engine.membership().quorum();
                    self.record(Event::VoteCounted {
                        candidate: id,
                        voter: from,
                        term: before.term,
                        votes,
                        needed,
                    });
                }
            }
            Input::AppendResponse(from, resp) => {
                cause = Some(from);
                self.engine_mut(id)
                    .handle_append_entries_response(from, resp);
            }
            Input::Unreachable(to) => self.engine_mut(id).handle_unreachable(to),
            Input::Propose(values) => {
                for value in values {
                    match self.engine_mut(id).propose(value) {
                        Ok(at) => {
                            self.node_mut(id).pending.push((at, value));
                            self.record(Event::Proposed {
                                node: id,
                                value,
                                at,
                            });
                        }
                        Err(e) => self.record(Event::NotLeader {
                            node: id,
                            value,
                            leader_hint: e.leader_hint,
                        }),
                    }
                }
            }
        }
        self.observe(id, before, cause);
        if let Some(event) = refused {
            self.record(event);
        }
        self.flush(id, held, append_from);
        self.settle_writes(id);
    }

    fn term_at(&self, id: NodeId, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.engine(id)
            .and_then(|e| e.entry(index))
            .map(|e| e.log_id.term)
    }

    fn snap(&self, id: NodeId) -> Snap {
        let e = self.engine(id).expect("the node is running");
        Snap {
            role: e.role(),
            term: e.term(),
            leader: e.leader(),
            deadline: e.next_deadline(),
        }
    }

    /// Records role and term changes of node `id` since `before`.
    fn observe(&mut self, id: NodeId, before: Snap, cause: Option<NodeId>) {
        let after = self.snap(id);
        let now = self.now;
        let campaigned = after.term > before.term
            && (after.role == Role::Candidate
                || (after.role == Role::Leader && before.role != Role::Leader));
        if campaigned {
            let waited_ms = now - self.nodes[&id].timer_since;
            let asks: Vec<NodeId> = self
                .engine(id)
                .expect("running")
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|&v| v != id)
                .collect();
            let node = self.node_mut(id);
            node.votes.clear();
            node.votes.insert(id);
            self.record(Event::ElectionTimeout {
                node: id,
                term: after.term,
                waited_ms,
                was: before.role,
                asks,
            });
        }
        if before.role != Role::Follower && after.role == Role::Follower {
            let reason = if after.term > before.term {
                StepDownReason::HigherTerm {
                    term: after.term,
                    from: cause,
                }
            } else if before.role == Role::Leader {
                StepDownReason::CheckQuorum {
                    window_ms: self.config.election_timeout_max.as_millis() as u64,
                }
            } else {
                StepDownReason::LeaderElected {
                    leader: after.leader.or(cause).unwrap_or_default(),
                }
            };
            self.record(Event::SteppedDown {
                node: id,
                was: before.role,
                term: before.term,
                reason,
            });
        }
        if after.role == Role::Leader && before.role != Role::Leader {
            let votes: Vec<NodeId> = self.nodes[&id].votes.iter().copied().collect();
            let blank = self.engine(id).expect("running").last_log_id();
            self.record(Event::BecameLeader {
                node: id,
                term: after.term,
                votes,
                blank,
            });
        }
        if after.role == Role::Follower {
            if let Some(leader) = after.leader {
                if before.leader != Some(leader) || before.term != after.term {
                    self.record(Event::FollowsLeader {
                        node: id,
                        leader,
                        term: after.term,
                    });
                }
            }
        }
        if after.role != Role::Leader && after.deadline != before.deadline {
            self.node_mut(id).timer_since = now;
        }
    }

    /// Executes node `id`'s outputs as the driver does, then releases `held` (a reply).
    fn flush(
        &mut self,
        id: NodeId,
        mut held: Option<(NodeId, u32, Response)>,
        append_from: Option<NodeId>,
    ) {
        loop {
            let out = self.engine_mut(id).take_output();
            if out.is_empty() && held.is_none() {
                return;
            }
            let inc = self.nodes[&id].incarnation;
            // 1. the hard state is durable before anything that depends on it leaves
            if let Some(hs) = out.hard_state {
                self.node_mut(id).hard_state = hs;
            }
            // 2. messages (a leader's AppendEntries may leave before its own append is durable)
            for (to, req) in out.messages {
                self.send(Msg::Request {
                    from: id,
                    from_inc: inc,
                    to,
                    req,
                });
            }
            // 3. truncate, append, report durable
            if let Some(from) = out.truncate_from {
                let node = self.node_mut(id);
                let keep = (from - 1) as usize;
                let removed: Vec<LogId> = node.log[keep.min(node.log.len())..]
                    .iter()
                    .map(|e| e.log_id)
                    .collect();
                node.log.truncate(keep);
                if !removed.is_empty() {
                    self.record(Event::Truncated {
                        node: id,
                        from,
                        removed,
                    });
                }
            }
            if let (Some(first), Some(last)) = (out.append.first(), out.append.last()) {
                let (first, last) = (first.log_id, last.log_id);
                self.node_mut(id).log.extend(out.append);
                if let Some(leader) = append_from {
                    self.record(Event::Stored {
                        node: id,
                        leader,
                        first,
                        last,
                    });
                }
                self.engine_mut(id).log_persisted(last);
            }
            // 4. the held reply, now that what it acknowledges is durable
            if let Some((to, to_inc, resp)) = held.take() {
                self.send(Msg::Response {
                    from: id,
                    to,
                    to_inc,
                    resp,
                });
            }
            // 5. apply
            if let (Some(first), Some(last)) = (out.apply.first(), out.apply.last()) {
                let writes = out
                    .apply
                    .iter()
                    .filter_map(|e| match e.payload {
                        EntryPayload::Command(v) => Some((e.log_id, v)),
                        _ => None,
                    })
                    .collect();
                self.on_applied(id, first.log_id.index, last.log_id, writes);
            }
        }
    }

    fn on_applied(&mut self, id: NodeId, first: LogIndex, last: LogId, writes: Vec<(LogId, u64)>) {
        let engine = self.engine(id).expect("running");
        let by_leader = engine.role() == Role::Leader;
        let writes = if by_leader { writes } else { Vec::new() };
        let holders: Vec<NodeId> = if by_leader {
            let mut h: Vec<NodeId> = engine
                .progress()
                .iter()
                .filter(|(_, p)| p.match_index() >= last.index)
                .map(|(&p, _)| p)
                .collect();
            h.push(id);
            h.sort_unstable();
            h
        } else {
            Vec::new()
        };
        let leader = engine.leader();
        self.node_mut(id).applied = last.index;
        self.record(Event::Committed {
            node: id,
            by_leader,
            leader,
            first,
            last,
            holders,
            writes,
        });
        // Client writes are answered once applied (rule 7).
        let engine = self.engine(id).expect("running");
        let mut answers = Vec::new();
        let node = &self.nodes[&id];
        for &(at, value) in node.pending.iter().filter(|(at, _)| at.index <= last.index) {
            let committed_here = engine.entry(at.index).map(|e| e.log_id) == Some(at);
            answers.push((at, value, committed_here));
        }
        self.node_mut(id)
            .pending
            .retain(|(at, _)| at.index > last.index);
        for (at, value, ok) in answers {
            self.record(if ok {
                Event::WriteAcked {
                    node: id,
                    value,
                    at,
                }
            } else {
                Event::WriteOutcomeUnknown {
                    node: id,
                    value,
                    at,
                    crashed: false,
                }
            });
        }
    }

    /// Fails the pending writes of a node that is no longer leader of their term (as the driver does).
    fn settle_writes(&mut self, id: NodeId) {
        let engine = self.engine(id).expect("running");
        let (role, term) = (engine.role(), engine.term());
        let node = self.node_mut(id);
        if node.pending.is_empty() {
            return;
        }
        let failed: Vec<(LogId, u64)> = if role != Role::Leader {
            std::mem::take(&mut node.pending)
        } else {
            let (keep, fail) = node.pending.drain(..).partition(|(at, _)| at.term == term);
            node.pending = keep;
            fail
        };
        for (at, value) in failed {
            self.record(Event::WriteOutcomeUnknown {
                node: id,
                value,
                at,
                crashed: false,
            });
        }
    }

    fn record(&mut self, event: Event) {
        self.events.push((self.now, event));
    }

    fn engine_mut(&mut self, id: NodeId) -> &mut Engine<u64> {
        self.node_mut(id)
            .engine
            .as_mut()
            .expect("the node is running")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        self.nodes.get_mut(&id).expect("a node of the cluster")
    }
}

// ===== the scenarios =====

/// The scenarios the `timeline` example prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Three nodes start; one times out first and wins; writes are replicated and committed.
    Election,
    /// Four nodes start (by default); two time out within a few milliseconds, split the votes 2 to 2,
    /// and nobody wins until a later timeout.
    SplitVote,
    /// A leader crashes; the others notice the silence, elect a new leader; the old one comes back as
    /// a follower and catches up.
    LeaderCrash,
    /// Every node but the leader crashes: the leader steps down (check-quorum), nothing commits,
    /// writes fail; when they return, a leader is elected and progress resumes.
    NoMajority,
    /// A cut-off leader appends writes no one else gets, crashes, and rejoins; the new leader's log
    /// wins and the stale suffix is truncated.
    LogRepair,
}

impl Scenario {
    /// Every scenario, in the order the docs present them.
    pub const ALL: [Scenario; 5] = [
        Scenario::Election,
        Scenario::SplitVote,
        Scenario::LeaderCrash,
        Scenario::NoMajority,
        Scenario::LogRepair,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Election => "election",
            Scenario::SplitVote => "split-vote",
            Scenario::LeaderCrash => "leader-crash",
            Scenario::NoMajority => "no-majority",
            Scenario::LogRepair => "log-repair",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The fixed seed the scenario runs with by default (chosen so that it shows what it is about).
    pub fn default_seed(self) -> u64 {
        match self {
            Scenario::Election => 1,
            Scenario::SplitVote => 18,
            Scenario::LeaderCrash => 1,
            Scenario::NoMajority => 1,
            Scenario::LogRepair => 1,
        }
    }

    /// The number of nodes it runs with by default.
    pub fn default_nodes(self) -> u64 {
        match self {
            Scenario::SplitVote => 4,
            _ => 3,
        }
    }

    /// One line saying what the scenario shows.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Election => {
                "a cold start: the first node to time out asks for votes and wins; writes are replicated and committed"
            }
            Scenario::SplitVote => {
                "candidates that time out together split the votes: nobody wins that term; randomized timeouts decide the next round \
                 (4 nodes by default: two candidates can split 2 to 2 against a quorum of 3)"
            }
            Scenario::LeaderCrash => {
                "the leader crashes; the followers time out and elect a new leader; the old leader rejoins as a follower"
            }
            Scenario::NoMajority => {
                "every node but the leader crashes: no majority, so no leader and nothing commits, writes fail; progress resumes when they return"
            }
            Scenario::LogRepair => {
                "a cut-off leader appends entries no one else has; after it rejoins, the new leader's log replaces them"
            }
        }
    }
}

/// A scenario's trace: a header and the events, in time order. `Display` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed it ran with.
    pub seed: u64,
    /// Lines describing the setup.
    pub header: Vec<String>,
    /// What happened, with the time (ms) it happened at.
    pub events: Vec<(u64, Event)>,
}

impl Timeline {
    /// `(term, node)` of every leader elected, in order.
    pub fn leaders(&self) -> Vec<(Term, NodeId)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::BecameLeader { node, term, .. } => Some((*term, *node)),
                _ => None,
            })
            .collect()
    }

    /// The events matching `pred`, with their times.
    pub fn find(&self, pred: impl Fn(&Event) -> bool) -> Vec<&(u64, Event)> {
        self.events.iter().filter(|(_, e)| pred(e)).collect()
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.header {
            writeln!(f, "{line}")?;
        }
        writeln!(f)?;
        for (t, e) in &self.events {
            writeln!(f, "[{t:>5} ms] {e}")?;
        }
        Ok(())
    }
}

/// Runs `scenario` with its default seed.
pub fn run(scenario: Scenario) -> Timeline {
    run_with_seed(scenario, scenario.default_seed())
}

/// Runs `scenario` with `seed` and its default number of nodes.
pub fn run_with_seed(scenario: Scenario, seed: u64) -> Timeline {
    run_with(scenario, seed, scenario.default_nodes())
}

/// Runs `scenario` with `seed` on `nodes` nodes (at least 3). Other seeds and sizes tell the same
/// story with other timings; what the scenario is about (say, a split vote) is only certain with its
/// default seed and size.
pub fn run_with(scenario: Scenario, seed: u64, nodes: u64) -> Timeline {
    assert!(nodes >= 3, "the scenarios need at least 3 nodes");
    let opts = SimOptions::new(nodes, seed);
    let header = vec![
        format!("timeline: {} (seed {seed})", scenario.name()),
        format!("  {}", scenario.description()),
        format!(
            "  {} nodes; election timeout {}..{} ms (randomized per node), heartbeat {} ms, check-quorum on, no pre-vote",
            opts.nodes,
            opts.config.election_timeout_min.as_millis(),
            opts.config.election_timeout_max.as_millis(),
            opts.config.heartbeat_interval.as_millis()
        ),
        format!(
            "  each node is the real raft-core Engine; the network delivers each message after {}..={} ms; storage is instant",
            opts.delay_ms.0, opts.delay_ms.1
        ),
        "  not shown: heartbeats that change nothing, and answers that only confirm what a line already says".to_string(),
    ];
    let mut sim = Sim::new(opts);
    match scenario {
        Scenario::Election => election(&mut sim),
        Scenario::SplitVote => split_vote(&mut sim),
        Scenario::LeaderCrash => leader_crash(&mut sim),
        Scenario::NoMajority => no_majority(&mut sim),
        Scenario::LogRepair => log_repair(&mut sim),
    }
    Timeline {
        scenario,
        seed,
        header,
        events: sim.events,
    }
}

const LIMIT_MS: u64 = 20_000;

fn elect(sim: &mut Sim) -> NodeId {
    sim.run_until_leader(sim.now() + LIMIT_MS)
        .expect("a leader is elected")
}

/// Lets a new leader settle (commit its no-op) and returns the leader then in office.
fn settle(sim: &mut Sim) -> NodeId {
    elect(sim);
    sim.run_for(40);
    elect(sim)
}

fn other_than(sim: &Sim, not: &[NodeId]) -> NodeId {
    sim.ids()
        .into_iter()
        .find(|id| !not.contains(id))
        .expect("another node")
}

fn election(sim: &mut Sim) {
    sim.start();
    let leader = settle(sim);
    sim.note(format!(
        "two clients write 101 and 102 at the leader, node {leader}, at the same moment"
    ));
    sim.propose_many(leader, &[101, 102]);
    sim.run_for(40);
    let follower = other_than(sim, &[leader]);
    sim.note(format!(
        "a client writes 103 at node {follower}, a follower"
    ));
    sim.propose(follower, 103);
    sim.note("followers learn the new commit index with the next heartbeat");
    sim.run_for(60);
}

fn split_vote(sim: &mut Sim) {
    sim.start();
    elect(sim);
    sim.run_for(40);
}

fn leader_crash(sim: &mut Sim) {
    sim.start();
    let old = settle(sim);
    sim.propose(old, 101);
    sim.run_for(100);
    sim.crash(old);
    sim.note("no more heartbeats: the followers' election timers run out");
    let new = settle(sim);
    sim.propose(new, 102);
    sim.run_for(40);
    sim.note(format!("node {old} comes back"));
    sim.restart(old);
    sim.run_for(150);
}

fn no_majority(sim: &mut Sim) {
    sim.start();
    let leader = settle(sim);
    sim.propose(leader, 101);
    sim.run_for(100);
    let down: Vec<NodeId> = sim.ids().into_iter().filter(|&id| id != leader).collect();
    for &id in &down {
        sim.crash(id);
    }
    sim.note(format!(
        "only node {leader} is left: 1 of {} is not a majority",
        sim.ids().len()
    ));
    sim.propose(leader, 102);
    sim.run_for(500);
    sim.propose(leader, 103);
    sim.run_for(500);
    sim.note(format!("nodes {} come back", list(&down)));
    for &id in &down {
        sim.restart(id);
    }
    let leader = settle(sim);
    sim.propose(leader, 104);
    sim.run_for(100);
    let leader = elect(sim);
    let commit = sim.engine(leader).expect("running").commit_index();
    let held_102 = sim
        .durable_log(leader)
        .iter()
        .find_map(|e| match e.payload {
            EntryPayload::Command(102) => Some(e.log_id),
            _ => None,
        });
    let fate = match held_102 {
        Some(at) if at.index <= commit => format!("is committed at {at}: it took effect after all"),
        Some(at) => format!("is in the leader's log at {at}, not committed yet"),
        None => "is in no log any more: it never took effect".to_string(),
    };
    sim.note(format!(
        "write 102, whose client heard OutcomeUnknown, {fate}"
    ));
}

fn log_repair(sim: &mut Sim) {
    sim.start();
    let old = settle(sim);
    sim.propose(old, 101);
    sim.run_for(100);
    let others: Vec<NodeId> = sim.ids().into_iter().filter(|&id| id != old).collect();
    sim.partition(&[&[old], &others]);
    sim.note(format!(
        "node {old} is cut off but still leader: it appends writes it cannot replicate"
    ));
    sim.propose_many(old, &[102, 103]);
    sim.run_for(20);
    sim.crash(old);
    sim.heal();
    sim.run_for(60);
    sim.note(format!(
        "node {old} comes back with its uncommitted entries"
    ));
    sim.restart(old);
    let new = settle(sim);
    sim.propose(new, 104);
    sim.run_for(150);
}
