//! What the trace records: one [`Event`] per thing that happened, and how each reads.

use std::fmt;

use raft_core::{HardState, LogId, LogIndex, NodeId, Role, Term, VoteRefusal};

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
        /// Why, as the engine decided it.
        reason: VoteRefusal,
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

/// `1, 2, 3`.
pub(super) fn list(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1-4, 1-5`.
fn ids(ids: &[LogId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
                    VoteRefusal::AlreadyVoted { voted_for } if voted_for == voter => {
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
                    Role::PreCandidate => "pre-candidate",
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
