//! Whole-cluster claims of `raft-core/docs/raft-by-questions.md`, checked on the engine-level simulation of
//! `raft_sim::timeline` (the real `Engine` on every node, run by the reference executor, seeded
//! message delays, instant storage):
//!
//! * question 4: how many election rounds it takes to elect a leader, measured over many seeds, on the
//!   engine-level simulation and, as a cross-check, on the mock network with the real async driver
//!   (`Raft` nodes on a `Router`, tokio's paused clock); the figures printed here are the ones in the
//!   doc, and the test fails if the doc's table differs;
//! * the `timeline` example: each scenario replays exactly from its seed and shows what it is about,
//!   and the split-vote trace the doc shows is exactly what the example prints.
//!
//! ```sh
//! cargo test -p lucid-raft-sim --test raft_by_questions -- --nocapture   # prints the figures
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::{
    Config, Entry, LogId, NodeId, Raft, Role, SnapshotMeta, StateMachine, StateMachineError, Term,
    VoteRefusal,
};
use raft_net_mock::{Faults, Router};
use raft_sim::timeline::{
    self, AppendRefusal, Event, Scenario, Sim, SimOptions, StepDownReason, Timeline,
};
use raft_storage_mem::MemStorage;

// ===== question 4: split votes, measured =====

/// Seeds measured per row of the table, on the engine-level simulation.
const SEEDS: u64 = 1000;
/// Seeds measured per row on the mock network with the real driver (slower: a tokio runtime each).
const DRIVER_SEEDS: u64 = 200;
/// No election may take longer than this (simulated ms) in the measurement.
const LIMIT_MS: u64 = 60_000;

/// How one election went: the number of rounds (terms) it took, and the time to a leader.
#[derive(Clone, Copy, Debug)]
struct Election {
    rounds: u64,
    ms: u64,
}

fn sim(nodes: u64, seed: u64, delay_ms: (u64, u64)) -> Sim {
    Sim::new(SimOptions {
        delay_ms,
        ..SimOptions::new(nodes, seed)
    })
}

/// A fresh cluster: every node starts its timer at 0. Round `k` is term `k`.
fn cold_start(nodes: u64, seed: u64, delay_ms: (u64, u64)) -> Election {
    let mut sim = sim(nodes, seed, delay_ms);
    sim.start();
    let leader = sim
        .run_until_leader(LIMIT_MS)
        .unwrap_or_else(|| panic!("no leader within {LIMIT_MS} ms: {nodes} nodes, seed {seed}"));
    let term = sim.engine(leader).expect("running").term();
    Election {
        rounds: term,
        ms: sim.now(),
    }
}

/// A stable cluster whose leader crashes: the followers' timers were last reset by its heartbeats.
/// Round `k` is term `old + k`; the time counts from the crash.
fn after_leader_crash(nodes: u64, seed: u64, delay_ms: (u64, u64)) -> Election {
    let mut sim = sim(nodes, seed, delay_ms);
    sim.start();
    let old = sim.run_until_leader(LIMIT_MS).expect("a first leader");
    sim.run_for(500);
    assert_eq!(
        sim.leader(),
        Some(old),
        "seed {seed}: the first leader is stable"
    );
    let old_term: Term = sim.engine(old).expect("running").term();
    sim.crash(old);
    let crashed_at = sim.now();
    let new = sim
        .run_until_leader(crashed_at + LIMIT_MS)
        .unwrap_or_else(|| panic!("no new leader: {nodes} nodes, seed {seed}"));
    let term = sim.engine(new).expect("running").term();
    Election {
        rounds: term - old_term,
        ms: sim.now() - crashed_at,
    }
}

// ----- the same, on the mock network with the real driver -----

/// A state machine that does nothing: only elections are measured.
struct Nothing;

#[async_trait]
impl StateMachine for Nothing {
    type Command = u64;
    type Response = ();
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<()>, StateMachineError> {
        Ok(vec![(); entries.len()])
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// The running node that leads the highest term, with that term.
fn driver_leader(nodes: &[Raft<Nothing>]) -> Option<(usize, Term)> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.metrics().borrow().clone()))
        .filter(|(_, m)| m.role == Role::Leader)
        .max_by_key(|(_, m)| m.current_term)
        .map(|(i, m)| (i, m.current_term))
}

/// Polls every millisecond of virtual time until a node leads a term above `above`.
async fn driver_wait_leader(nodes: &[Raft<Nothing>], above: Term, what: &str) -> (usize, Term) {
    let start = tokio::time::Instant::now();
    loop {
        if let Some((i, term)) = driver_leader(nodes) {
            if term > above {
                return (i, term);
            }
        }
        assert!(
            start.elapsed() < Duration::from_millis(LIMIT_MS),
            "no leader within {LIMIT_MS} ms: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The cold start (`crash == false`) or leader crash (`crash == true`) election, with `Raft` nodes on
/// a `Router` delaying every request and every response by `delay_ms`, on a fresh current-thread
/// runtime with paused time (so a seed replays exactly).
fn on_driver(nodes: u64, seed: u64, delay_ms: (u64, u64), crash: bool) -> Election {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let what = format!("{nodes} nodes, seed {seed}, crash {crash}");
        let router = Router::<Nothing>::new(seed);
        router.set_faults(Faults {
            delay_ms,
            ..Faults::default()
        });
        // The paper's elections, as in the engine simulation it is compared with: a pre-vote
        // round would count as a round of its own.
        let config = Config {
            seed,
            pre_vote: false,
            ..Config::default()
        };
        let mut rafts = Vec::new();
        for id in 1..=nodes {
            let raft = Raft::start(
                id,
                config.clone(),
                MemStorage::new(),
                router.network(id),
                Nothing,
            )
            .await
            .expect("the node starts");
            router.register(id, raft.clone());
            rafts.push(raft);
        }
        let start = tokio::time::Instant::now();
        for r in &rafts {
            r.initialize(1..=nodes).await.expect("initialize");
        }
        let (first, term) = driver_wait_leader(&rafts, 0, &what).await;
        let result = if !crash {
            Election {
                rounds: term,
                ms: start.elapsed().as_millis() as u64,
            }
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(driver_leader(&rafts), Some((first, term)), "{what}: stable");
            let old = rafts.remove(first);
            router.unregister(old.id());
            old.shutdown().await;
            let crashed_at = tokio::time::Instant::now();
            let (_, new_term) = driver_wait_leader(&rafts, term, &what).await;
            Election {
                rounds: new_term - term,
                ms: crashed_at.elapsed().as_millis() as u64,
            }
        };
        for r in &rafts {
            router.unregister(r.id());
            r.shutdown().await;
        }
        result
    })
}

struct Row {
    nodes: u64,
    case: &'static str,
    delay_ms: (u64, u64),
    driver: bool,
    runs: Vec<Election>,
}

impl Row {
    fn sim(
        nodes: u64,
        case: &'static str,
        delay_ms: (u64, u64),
        f: fn(u64, u64, (u64, u64)) -> Election,
    ) -> Row {
        Row {
            nodes,
            case,
            delay_ms,
            driver: false,
            runs: (0..SEEDS).map(|seed| f(nodes, seed, delay_ms)).collect(),
        }
    }

    fn driver(nodes: u64, crash: bool, delay_ms: (u64, u64)) -> Row {
        Row {
            nodes,
            case: if crash {
                "after leader crash"
            } else {
                "cold start"
            },
            delay_ms,
            driver: true,
            runs: (0..DRIVER_SEEDS)
                .map(|seed| on_driver(nodes, seed, delay_ms, crash))
                .collect(),
        }
    }

    fn share(&self, pred: impl Fn(u64) -> bool) -> f64 {
        let n = self.runs.iter().filter(|e| pred(e.rounds)).count();
        100.0 * n as f64 / self.runs.len() as f64
    }

    fn mean_rounds(&self) -> f64 {
        self.runs.iter().map(|e| e.rounds as f64).sum::<f64>() / self.runs.len() as f64
    }

    fn max_rounds(&self) -> u64 {
        self.runs.iter().map(|e| e.rounds).max().unwrap_or(0)
    }

    fn mean_ms(&self) -> f64 {
        self.runs.iter().map(|e| e.ms as f64).sum::<f64>() / self.runs.len() as f64
    }

    fn max_ms(&self) -> u64 {
        self.runs.iter().map(|e| e.ms).max().unwrap_or(0)
    }
}

/// The table, in the exact form the doc holds it.
fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| run on | cluster | election | message delay | seeds | round 1 | round 2 | round 3+ | mean rounds | max rounds | mean time to leader | max time to leader |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        writeln!(
            t,
            "| {} | {} nodes | {} | {}-{} ms | {} | {:.1}% | {:.1}% | {:.1}% | {:.3} | {} | {:.0} ms | {} ms |",
            if r.driver { "mock network, real driver" } else { "engine simulation" },
            r.nodes,
            r.case,
            r.delay_ms.0,
            r.delay_ms.1,
            r.runs.len(),
            r.share(|k| k == 1),
            r.share(|k| k == 2),
            r.share(|k| k >= 3),
            r.mean_rounds(),
            r.max_rounds(),
            r.mean_ms(),
            r.max_ms()
        )
        .unwrap();
    }
    t
}

const DOC: &str = include_str!("../../raft-core/docs/raft-by-questions.md");
const BEGIN: &str = "<!-- split-vote-figures:begin -->";
const END: &str = "<!-- split-vote-figures:end -->";

/// The text of the doc between `<!-- {name}:begin -->` and `<!-- {name}:end -->`, trimmed.
fn doc_section(name: &str) -> &'static str {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let from = DOC
        .find(&begin)
        .unwrap_or_else(|| panic!("the doc has no {begin}"))
        + begin.len();
    let to = DOC
        .find(&end)
        .unwrap_or_else(|| panic!("the doc has no {end}"));
    DOC[from..to].trim()
}

#[test]
fn split_votes_are_rare_and_resolve_within_a_few_rounds() {
    let lan = (5, 15);
    let rows = vec![
        Row::sim(3, "cold start", lan, cold_start),
        Row::sim(5, "cold start", lan, cold_start),
        Row::sim(3, "after leader crash", lan, after_leader_crash),
        Row::sim(5, "after leader crash", lan, after_leader_crash),
        // How the message delay matters: fast, and slow against the 150 ms spread of timeouts.
        Row::sim(3, "after leader crash", (1, 2), after_leader_crash),
        Row::sim(3, "after leader crash", (20, 60), after_leader_crash),
        // The cross-check with the real driver.
        Row::driver(3, false, lan),
        Row::driver(5, false, lan),
        Row::driver(3, true, lan),
        Row::driver(5, true, lan),
    ];
    let measured = table(&rows);
    println!("{measured}");

    // The claims of question 4. From a cold start, nearly every election takes one round, and
    // none takes three.
    for r in rows.iter().filter(|r| r.case == "cold start") {
        let what = format!("{} nodes, cold start, driver {}", r.nodes, r.driver);
        assert!(r.share(|k| k == 1) > 97.0, "{what}\n{measured}");
        assert!(r.max_rounds() <= 2, "{what}\n{measured}");
    }
    // With message delays well below the spread of election timeouts
    // (150 ms), most elections are won in the first round, the rest within a few.
    for r in rows.iter().filter(|r| r.delay_ms.1 <= 15) {
        let what = format!("{} nodes, {}, {:?} ms", r.nodes, r.case, r.delay_ms);
        assert!(
            r.share(|k| k == 1) >= 85.0,
            "{what}: most elections should be won in the first round\n{measured}"
        );
        assert!(
            r.mean_rounds() < 1.2,
            "{what}: mean rounds {}\n{measured}",
            r.mean_rounds()
        );
        assert!(
            r.max_rounds() <= 4,
            "{what}: an election took {} rounds\n{measured}",
            r.max_rounds()
        );
        assert!(
            r.max_ms() < 1000,
            "{what}: an election took {} ms\n{measured}",
            r.max_ms()
        );
    }
    let row = |driver: bool, nodes: u64, case: &str, delay: (u64, u64)| {
        rows.iter()
            .find(|r| {
                r.driver == driver && r.nodes == nodes && r.case == case && r.delay_ms == delay
            })
            .expect("a measured row")
    };
    let crash = "after leader crash";
    // Re-elections after a crash split more than cold starts.
    for nodes in [3, 5] {
        assert!(
            row(false, nodes, crash, lan).share(|k| k == 1)
                < row(false, nodes, "cold start", lan).share(|k| k == 1),
            "{nodes} nodes\n{measured}"
        );
    }
    // Splits happen: the measurement shows them rather than assuming them away.
    assert!(row(false, 3, crash, lan).max_rounds() >= 2, "{measured}");
    // After a crash, 3 nodes split more often than 5: the two survivors split whenever they time
    // out within one message delay of each other.
    assert!(
        row(false, 3, crash, lan).share(|k| k == 1) < row(false, 5, crash, lan).share(|k| k == 1),
        "{measured}"
    );
    // Slower messages, more splits: the timeout spread must dwarf the round trip.
    let slow = row(false, 3, crash, (20, 60));
    let fast = row(false, 3, crash, (1, 2));
    assert!(slow.share(|k| k == 1) < 80.0, "{measured}");
    assert!(
        fast.share(|k| k == 1) > row(false, 3, crash, lan).share(|k| k == 1),
        "{measured}"
    );
    // Every election ends with a leader, even the slow ones.
    assert!(slow.max_rounds() <= 10, "{measured}");
    // The real driver on the mock network agrees with the engine simulation (same setting).
    for (nodes, case) in [(3, "cold start"), (3, crash), (5, crash)] {
        let (d, e) = (row(true, nodes, case, lan), row(false, nodes, case, lan));
        assert!(
            (d.share(|k| k == 1) - e.share(|k| k == 1)).abs() < 5.0,
            "{nodes} nodes, {case}: driver and engine simulation disagree\n{measured}"
        );
    }

    // The doc quotes exactly these figures.
    assert_eq!(
        doc_section("split-vote-figures"),
        measured.trim(),
        "raft-core/docs/raft-by-questions.md quotes other split-vote figures than this measurement; \
         paste the table above between the {BEGIN} and {END} markers"
    );
}

// ===== the timeline scenarios =====

fn count(t: &Timeline, pred: impl Fn(&Event) -> bool) -> usize {
    t.find(pred).len()
}

fn candidates_in_term(t: &Timeline, term: Term) -> Vec<NodeId> {
    t.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ElectionTimeout { node, term: k, .. } if *k == term => Some(*node),
            _ => None,
        })
        .collect()
}

#[test]
fn timeline_same_seed_same_trace() {
    for s in Scenario::ALL {
        let a = timeline::run(s);
        let b = timeline::run(s);
        assert_eq!(a, b, "{}: two runs differ", s.name());
        assert_eq!(a.to_string(), b.to_string(), "{}", s.name());
        assert!(
            a.events.windows(2).all(|w| w[0].0 <= w[1].0),
            "{}: the trace is not in time order",
            s.name()
        );
        let other = timeline::run_with_seed(s, s.default_seed() + 1000);
        assert_ne!(a, other, "{}: the seed changes nothing", s.name());
    }
}

#[test]
fn timeline_election_elects_one_leader_and_commits_writes() {
    let t = timeline::run(Scenario::Election);
    println!("{t}");
    let leaders = t.leaders();
    assert_eq!(leaders.len(), 1, "{t}");
    let (term, leader) = leaders[0];
    assert_eq!(term, 1, "won in the first round: {t}");
    assert_eq!(candidates_in_term(&t, 1), vec![leader]);
    assert_eq!(
        count(
            &t,
            |e| matches!(e, Event::VoteGranted { candidate, .. } if *candidate == leader)
        ),
        2
    );
    assert_eq!(
        count(&t, |e| matches!(e, Event::WriteAcked { .. })),
        2,
        "{t}"
    );
    assert_eq!(
        count(
            &t,
            |e| matches!(e, Event::NotLeader { leader_hint: Some(l), .. } if *l == leader)
        ),
        1
    );
    // Every node ends up applying the writes: the followers learn the commit index.
    for id in 1..=3 {
        assert!(
            t.find(|e| matches!(e, Event::Committed { node, last, .. } if *node == id && last.index == 4))
                .len()
                == 1,
            "node {id} did not apply up to 4: {t}"
        );
    }
}

#[test]
fn timeline_split_vote_takes_a_second_round() {
    let t = timeline::run(Scenario::SplitVote);
    println!("{t}");
    let first = candidates_in_term(&t, 1);
    assert!(first.len() >= 2, "round 1 had one candidate: {t}");
    assert!(
        !t.leaders().iter().any(|&(term, _)| term == 1),
        "someone won round 1: {t}"
    );
    // Each candidate refused the others: it had voted for itself.
    for &c in &first {
        assert!(
            count(
                &t,
                |e| matches!(e, Event::VoteRefused { voter, term: 1, reason: VoteRefusal::AlreadyVoted { voted_for }, .. } if *voter == c && *voted_for == c)
            ) >= 1,
            "candidate {c} never refused a rival: {t}"
        );
    }
    let second = candidates_in_term(&t, 2);
    assert_eq!(second.len(), 1, "{t}");
    assert_eq!(
        t.leaders(),
        vec![(2, second[0])],
        "the first to time out again wins round 2: {t}"
    );
    // The other candidate of round 1 steps down on seeing term 2.
    assert!(
        count(&t, |e| matches!(
            e,
            Event::SteppedDown {
                was: Role::Candidate,
                term: 1,
                reason: StepDownReason::HigherTerm { term: 2, .. },
                ..
            }
        )) >= 1,
        "{t}"
    );

    // The doc shows this very trace.
    let sample = doc_section("timeline-split-vote");
    let sample = sample
        .strip_prefix("```text")
        .and_then(|s| s.strip_suffix("```"))
        .expect("the sample is a ```text block")
        .trim_matches('\n');
    assert_eq!(
        sample,
        t.to_string().trim_end(),
        "raft-core/docs/raft-by-questions.md shows another split-vote trace than \
         `cargo run --example timeline -- split-vote` prints; paste the new one between the \
         <!-- timeline-split-vote:begin --> markers"
    );

    // The 5-node variant the doc mentions: three candidates.
    let t5 = timeline::run_with(Scenario::SplitVote, 39, 5);
    assert_eq!(candidates_in_term(&t5, 1).len(), 3, "{t5}");
    assert_eq!(t5.leaders().first().map(|l| l.0), Some(2), "{t5}");
}

#[test]
fn timeline_leader_crash_elects_a_new_leader_and_the_old_one_catches_up() {
    let t = timeline::run(Scenario::LeaderCrash);
    println!("{t}");
    let leaders = t.leaders();
    assert_eq!(leaders.len(), 2, "{t}");
    let (old, new) = (leaders[0].1, leaders[1].1);
    assert_ne!(old, new);
    assert!(leaders[1].0 > leaders[0].0);
    let crashed = t.find(|e| matches!(e, Event::Crashed { node } if *node == old));
    assert_eq!(crashed.len(), 1);
    let elected_at = t.find(|e| matches!(e, Event::BecameLeader { node, .. } if *node == new))[0].0;
    let timeouts = t.find(|e| matches!(e, Event::ElectionTimeout { node, .. } if *node != old));
    assert!(timeouts.iter().all(|(at, _)| *at > crashed[0].0), "{t}");
    assert!(elected_at > crashed[0].0, "{t}");
    // Nobody campaigns before its randomized timeout (at least 150 ms) since its timer's last reset.
    for (_, e) in &timeouts {
        let Event::ElectionTimeout { waited_ms, .. } = e else {
            unreachable!()
        };
        assert!((150..300).contains(waited_ms), "{t}");
    }
    // The old leader restarts, follows the new one and applies everything committed.
    assert_eq!(
        count(
            &t,
            |e| matches!(e, Event::Restarted { node, .. } if *node == old)
        ),
        1
    );
    assert_eq!(
        count(
            &t,
            |e| matches!(e, Event::FollowsLeader { node, leader, .. } if *node == old && *leader == new)
        ),
        1,
        "{t}"
    );
    assert!(
        count(
            &t,
            |e| matches!(e, Event::Committed { node, last, .. } if *node == old && last.index == 5)
        ) == 1,
        "{t}"
    );
}

#[test]
fn timeline_no_majority_means_no_leader_and_no_commit_until_it_returns() {
    let t = timeline::run(Scenario::NoMajority);
    println!("{t}");
    let crashes: Vec<u64> = t
        .find(|e| matches!(e, Event::Crashed { .. }))
        .iter()
        .map(|(at, _)| *at)
        .collect();
    let restarts: Vec<u64> = t
        .find(|e| matches!(e, Event::Restarted { .. }))
        .iter()
        .map(|(at, _)| *at)
        .collect();
    assert_eq!((crashes.len(), restarts.len()), (2, 2));
    let (down, up) = (crashes[0], restarts[0]);
    // While the majority is down: the leader steps down by check-quorum, no leader is elected,
    // nothing commits, the pending write fails with OutcomeUnknown and a new one with NotLeader.
    let between = |at: u64| at > down && at < up;
    assert_eq!(
        t.events
            .iter()
            .filter(|(at, e)| between(*at)
                && matches!(
                    e,
                    Event::SteppedDown {
                        reason: StepDownReason::CheckQuorum { .. },
                        ..
                    }
                ))
            .count(),
        1,
        "{t}"
    );
    assert!(
        !t.events.iter().any(|(at, e)| between(*at)
            && matches!(
                e,
                Event::BecameLeader { .. } | Event::Committed { .. } | Event::WriteAcked { .. }
            )),
        "{t}"
    );
    assert!(
        t.events.iter().any(|(at, e)| between(*at)
            && matches!(e, Event::WriteOutcomeUnknown { crashed: false, .. })),
        "{t}"
    );
    assert!(
        t.events
            .iter()
            .any(|(at, e)| between(*at) && matches!(e, Event::NotLeader { .. })),
        "{t}"
    );
    assert!(
        t.events
            .iter()
            .filter(|(at, e)| between(*at) && matches!(e, Event::ElectionTimeout { .. }))
            .count()
            >= 2,
        "the lone node keeps campaigning in vain: {t}"
    );
    // After: a leader, and writes commit again.
    assert!(
        t.events
            .iter()
            .any(|(at, e)| *at >= up && matches!(e, Event::BecameLeader { .. })),
        "{t}"
    );
    assert!(
        t.events
            .iter()
            .any(|(at, e)| *at >= up && matches!(e, Event::WriteAcked { .. })),
        "{t}"
    );
}

#[test]
fn timeline_log_repair_truncates_the_stale_suffix() {
    let t = timeline::run(Scenario::LogRepair);
    println!("{t}");
    let leaders = t.leaders();
    let (old, new) = (leaders[0].1, leaders[leaders.len() - 1].1);
    assert_ne!(old, new, "{t}");
    // The restarted old leader refuses the new candidate (its own log is longer)...
    assert!(
        count(
            &t,
            |e| matches!(e, Event::VoteRefused { voter, reason: VoteRefusal::LogNotUpToDate { .. }, .. } if *voter == old)
        ) >= 1,
        "{t}"
    );
    // ...yet the candidate wins with the other vote, and the old leader's uncommitted entries go.
    let truncated = t.find(|e| matches!(e, Event::Truncated { node, .. } if *node == old));
    assert_eq!(truncated.len(), 1, "{t}");
    let Event::Truncated { removed, .. } = &truncated[0].1 else {
        unreachable!()
    };
    assert_eq!(
        removed.len(),
        2,
        "the two writes it could not replicate: {t}"
    );
    assert!(removed.iter().all(|id| id.term == leaders[0].0));
    assert_eq!(
        count(&t, |e| matches!(
            e,
            Event::WriteOutcomeUnknown { crashed: true, .. }
        )),
        2,
        "{t}"
    );
    assert_eq!(
        count(&t, |e| matches!(e, Event::WriteAcked { value: 104, .. })),
        1,
        "{t}"
    );
    // No AppendEntries was ever refused as a stale term or malformed in this scenario.
    assert_eq!(
        count(&t, |e| matches!(
            e,
            Event::AppendRefused {
                reason: AppendRefusal::Invalid,
                ..
            }
        )),
        0
    );
}

#[test]
fn timeline_reasons_agree_with_the_engine_over_many_seeds() {
    // `Sim` prints the engine's reason for each refused vote and panics if it ever disagrees with
    // the answer the engine sends; run every scenario over many seeds (and both sizes) to see every
    // reason a correct candidate can meet (a malformed request is never sent here).
    let mut reasons = [0usize; 5];
    for seed in 0..40 {
        for s in Scenario::ALL {
            for nodes in [3, 5] {
                let t = timeline::run_with(s, seed, nodes);
                for (_, e) in &t.events {
                    if let Event::VoteRefused { reason, .. } = e {
                        reasons[match reason {
                            VoteRefusal::StaleTerm { .. } => 0,
                            VoteRefusal::AlreadyVoted { .. } => 1,
                            VoteRefusal::LogNotUpToDate { .. } => 2,
                            VoteRefusal::Malformed { .. } => 3,
                            VoteRefusal::LeaderAlive { .. } => 4,
                            VoteRefusal::CatchingUp => panic!("no timeline node loses entries"),
                            VoteRefusal::JustStarted => panic!("no timeline node uses leases"),
                        }] += 1;
                    }
                }
            }
        }
    }
    assert!(
        reasons[..3].iter().all(|&n| n > 0) && reasons[3] == 0,
        "refusals by reason (stale term, already voted, log not up to date, malformed, leader \
         alive): {reasons:?}"
    );
}
