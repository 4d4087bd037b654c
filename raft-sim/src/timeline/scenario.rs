//! The scenarios the `timeline` example prints, each a short script played on a [`Sim`], and the
//! [`Timeline`] it records.

use std::fmt;

use raft_core::{EntryPayload, NodeId, Term};

use super::event::{list, Event};
use super::sim::{Sim, SimOptions};

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
        events: sim.into_events(),
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
        .find_map(|e| match *e.payload {
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
