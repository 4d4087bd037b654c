//! Protocol tests of the [`Engine`]: each drives one or more engines with explicit times, messages and
//! proposals, and asserts on what they output (`take_output`, returned replies). No async, no clock.
//!
//! Single-engine tests answer for the peers by hand; multi-node scenarios use [`Cluster`], which shuttles
//! messages between engines synchronously, each node's outputs executed by the reference
//! [`Executor`] (as the driver executes them, with the same order of steps).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::testing::{DurableStore, Effect, Executed, Executor};
use super::*;
use crate::message::{Response, VoteRequest, VoteResponse};

const MIN: u64 = 150;
const MAX: u64 = 300;
const HB: u64 = 50;

// ----- building blocks -----

/// The configuration of the protocol tests: the defaults, but elections without a pre-vote round,
/// so that a timeout sends the vote requests the tests answer by hand. Pre-vote has its own tests,
/// with it on (`tests/pre_vote.rs`).
fn config() -> Config {
    let c = Config {
        seed: 7,
        pre_vote: false,
        ..Config::default()
    };
    assert_eq!(c.election_timeout_range_ms(), (MIN, MAX));
    assert_eq!(c.heartbeat_ms(), HB);
    c
}

/// Snapshot data.
const DATA: &[u8] = b"0123456789";

/// [`config`], keeping `keep` entries before a snapshot point when compacting.
fn snap_config(keep: u64) -> Config {
    Config {
        snapshot_keep_entries: keep,
        ..config()
    }
}

fn cmd(term: Term, index: LogIndex) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(index * 1000 + term).into(),
    }
}

fn blank(term: Term, index: LogIndex) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Blank.into(),
    }
}

fn membership_entry(voters: &[NodeId]) -> Entry<u64> {
    Entry {
        log_id: LogId::new(0, 1),
        payload: EntryPayload::Membership(Box::new(Membership::new(voters.iter().copied()))).into(),
    }
}

/// A log holding the membership entry at index 1 (term 0), then one command per element of `terms`
/// at indexes 2, 3, ...
fn log_with(voters: &[NodeId], terms: &[Term]) -> Vec<Entry<u64>> {
    let mut log = vec![membership_entry(voters)];
    log.extend(terms.iter().zip(2..).map(|(&t, i)| cmd(t, i)));
    log
}

fn hs(term: Term, voted_for: Option<NodeId>) -> HardState {
    HardState { term, voted_for }
}

/// An engine recovered from `log_with(voters, terms)` and `hard_state`, at time 0.
fn engine_with(
    id: NodeId,
    config: &Config,
    voters: &[NodeId],
    terms: &[Term],
    hard_state: HardState,
) -> Engine<u64> {
    let state = RecoveredState {
        hard_state,
        log_base: LogId::default(),
        snapshot: None,
        entries: log_with(voters, terms),
        applied_index: 0,
        lost_entries: false,
    };
    Engine::new(id, config, state, 0)
}

/// A follower of a 3-node cluster {1, 2, 3} with the given log, in `term`, no vote cast.
fn follower(id: NodeId, terms: &[Term], term: Term) -> Engine<u64> {
    engine_with(id, &config(), &[1, 2, 3], terms, hs(term, None))
}

/// A fresh node bootstrapped with `initialize`, its first output executed.
fn initialized(id: NodeId, voters: &[NodeId], config: &Config, now: u64) -> Engine<u64> {
    let mut e = Engine::new(id, config, RecoveredState::default(), now);
    e.initialize(Membership::new(voters.iter().copied()))
        .unwrap();
    let out = e.take_output();
    assert_eq!(out.append, vec![membership_entry(voters)]);
    persist(&mut e, &out);
    e
}

/// Reports the output's appended entries durable (step 3 of the executor contract).
fn persist(e: &mut Engine<u64>, out: &Output<u64>) {
    if let Some(last) = out.append.last() {
        e.log_persisted(last.log_id);
    }
}

fn appends_to(out: &Output<u64>, to: NodeId) -> Vec<AppendEntriesRequest<u64>> {
    out.messages
        .iter()
        .filter_map(|(t, m)| match m {
            Request::AppendEntries(a) if *t == to => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn vote_requests(out: &Output<u64>) -> Vec<(NodeId, VoteRequest)> {
    out.messages
        .iter()
        .filter_map(|(t, m)| match m {
            Request::Vote(v) => Some((*t, v.clone())),
            _ => None,
        })
        .collect()
}

fn vote(term: Term, candidate_id: NodeId, last: (Term, LogIndex)) -> VoteRequest {
    VoteRequest {
        term,
        candidate_id,
        last_log_id: LogId::new(last.0, last.1),
        leadership_transfer: false,
    }
}

fn granted(term: Term) -> VoteResponse {
    VoteResponse {
        term,
        vote_granted: true,
    }
}

fn append(
    term: Term,
    leader_id: NodeId,
    prev: (Term, LogIndex),
    entries: Vec<Entry<u64>>,
    leader_commit: LogIndex,
) -> AppendEntriesRequest<u64> {
    AppendEntriesRequest {
        term,
        leader_id,
        prev_log_id: LogId::new(prev.0, prev.1),
        entries,
        leader_commit,
        round: 0,
    }
}

fn success(term: Term, match_index: LogIndex) -> AppendEntriesResponse {
    AppendEntriesResponse {
        term,
        result: AppendResult::Success { match_index },
        round: 0,
    }
}

fn conflict(
    term: Term,
    rejected_index: LogIndex,
    conflict_term: Option<Term>,
    conflict_index: LogIndex,
) -> AppendEntriesResponse {
    AppendEntriesResponse {
        term,
        result: AppendResult::Conflict {
            rejected_index,
            conflict_term,
            conflict_index,
        },
        round: 0,
    }
}

fn indexes(entries: &[Entry<u64>]) -> Vec<LogIndex> {
    entries.iter().map(Entry::index).collect()
}

/// Makes `e` leader: ticks it to its election deadline and grants it votes of the other voters until
/// it wins. Returns the output of taking office (the blank entry, the first AppendEntries), not yet
/// persisted.
fn make_leader(e: &mut Engine<u64>) -> Output<u64> {
    let deadline = e.next_deadline();
    e.tick(deadline);
    assert_ne!(e.role(), Role::Follower, "the election timer did not fire");
    let term = e.term();
    let peers: Vec<NodeId> = e
        .membership()
        .voters
        .iter()
        .copied()
        .filter(|&p| p != e.id())
        .collect();
    let mut out = e.take_output();
    for p in peers {
        if e.role() == Role::Leader {
            break;
        }
        e.handle_vote_response(p, granted(term));
    }
    assert_eq!(e.role(), Role::Leader);
    let more = e.take_output();
    out.append.extend(more.append);
    out.messages = more.messages;
    out
}

/// A leader whose followers all acknowledged its first AppendEntries: every follower is in the
/// Replicate state with `match_index` = the leader's last index, the blank entry committed.
fn replicating_leader(
    config: &Config,
    voters: &[NodeId],
    terms: &[Term],
    hard_state: HardState,
) -> Engine<u64> {
    let mut e = engine_with(1, config, voters, terms, hard_state);
    let out = make_leader(&mut e);
    persist(&mut e, &out);
    let last = e.last_log_id().index;
    for &p in voters.iter().filter(|&&p| p != 1) {
        e.handle_append_entries_response(p, success(e.term(), last));
        assert_eq!(e.progress()[&p].state, ReplicationState::Replicate);
    }
    let out = e.take_output();
    assert_eq!(e.commit_index(), last);
    assert!(out.messages.is_empty(), "{out:?}");
    e
}

fn progress_of(e: &Engine<u64>, id: NodeId) -> (LogIndex, LogIndex, ReplicationState) {
    let p = &e.progress()[&id];
    (p.match_index, p.next_index, p.state)
}

// ----- a synchronous mini cluster -----

/// Everything that happened in a [`Cluster`] run, in order: what determinism is checked on.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    Tick(NodeId, u64),
    /// What a node's executor did after an input: storage writes, sends, replies, applies.
    Executed(NodeId, Executed<u64>),
}

/// Node `id` on a store holding `log_with(voters, terms)` and `hard_state`, at time 0: the engine
/// [`engine_with`] builds, with its log durable.
fn executor_with(
    id: NodeId,
    config: &Config,
    voters: &[NodeId],
    terms: &[Term],
    hard_state: HardState,
) -> Executor<u64> {
    let store = DurableStore::from_log(hard_state, log_with(voters, terms))
        .expect("log_with builds a log from index 1");
    Executor::new(id, config, store, 0)
}

/// Several nodes wired together, each an [`Executor`] (the reference executor of the engine's
/// output, which also checks that entries are applied in order, exactly once). Delivers messages
/// one at a time, in order; a request's reply goes back to its sender at once. Messages from or to
/// an isolated node are dropped, and so are messages over a cut link (one way: a request over a cut
/// `(from, to)` is lost; over a cut `(to, from)` its reply is lost after the request was handled).
struct Cluster {
    nodes: BTreeMap<NodeId, Executor<u64>>,
    now: u64,
    queue: VecDeque<(NodeId, NodeId, Request<u64>)>,
    isolated: BTreeSet<NodeId>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// AppendEntries delivered, per (from, to).
    append_requests: BTreeMap<(NodeId, NodeId), usize>,
    trace: Vec<Event>,
}

impl Cluster {
    fn new(voters: &[NodeId], config: &Config) -> Self {
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut node = Executor::new(id, config, DurableStore::new(), 0);
                node.engine_mut()
                    .initialize(Membership::new(voters.iter().copied()))
                    .unwrap();
                node
            })
            .collect();
        Self::from_executors(nodes)
    }

    /// Wraps nodes (fresh or recovered), executing what their engines already asked for.
    fn from_executors(nodes: Vec<Executor<u64>>) -> Self {
        let mut c = Cluster {
            nodes: nodes.into_iter().map(|n| (n.id(), n)).collect(),
            now: 0,
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            cut: BTreeSet::new(),
            append_requests: BTreeMap::new(),
            trace: Vec::new(),
        };
        c.flush_all();
        c
    }

    fn node(&self, id: NodeId) -> &Executor<u64> {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Executor<u64> {
        self.nodes.get_mut(&id).unwrap()
    }

    fn engine(&self, id: NodeId) -> &Engine<u64> {
        self.node(id).engine()
    }

    fn engine_mut(&mut self, id: NodeId) -> &mut Engine<u64> {
        self.node_mut(id).engine_mut()
    }

    /// The entries node `id`'s state machine applied (since its last restore from a snapshot).
    fn applied(&self, id: NodeId) -> &[Entry<u64>] {
        self.node(id).state_machine().entries()
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The leader of the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.engine().role() == Role::Leader)
            .max_by_key(|n| n.engine().term())
            .map(|n| n.id())
    }

    /// Executes node `id`'s outputs, queueing the requests it sends.
    fn flush(&mut self, id: NodeId) {
        let done = self
            .node_mut(id)
            .flush()
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        self.record(id, done);
    }

    /// Traces what node `id` did and queues the requests it sent; returns its replies.
    fn record(&mut self, id: NodeId, done: Executed<u64>) -> Vec<Response> {
        if done.is_empty() {
            return Vec::new();
        }
        for (to, req) in done.sends() {
            self.queue.push_back((id, to, req.clone()));
        }
        let replies = done.replies().cloned().collect();
        self.trace.push(Event::Executed(id, done));
        replies
    }

    fn flush_all(&mut self) {
        for id in self.ids() {
            self.flush(id);
        }
    }

    /// Delivers the oldest queued message and its reply. Returns false if the queue was empty.
    fn deliver_one(&mut self) -> bool {
        let Some((from, to, req)) = self.queue.pop_front() else {
            return false;
        };
        if self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || self.cut.contains(&(from, to))
        {
            return true;
        }
        if matches!(req, Request::AppendEntries(_)) {
            *self.append_requests.entry((from, to)).or_default() += 1;
        }
        // The reply is released only once what it acknowledges is durable.
        let done = self
            .node_mut(to)
            .handle_request(req)
            .unwrap_or_else(|e| panic!("node {to}: {e}"));
        let replies = self.record(to, done);
        if self.cut.contains(&(to, from)) {
            return true;
        }
        for reply in replies {
            self.node_mut(from).handle_response(to, reply);
        }
        self.flush(from);
        true
    }

    /// Delivers messages until nothing is left to do.
    fn run(&mut self) {
        let mut budget = 100_000;
        loop {
            self.flush_all();
            if self.queue.is_empty() {
                return;
            }
            while self.deliver_one() {
                budget -= 1;
                assert!(budget > 0, "the cluster does not quiesce");
            }
        }
    }

    /// Moves time to `now`, ticks every node, and runs to quiescence.
    fn advance(&mut self, now: u64) {
        self.now = now;
        for id in self.ids() {
            self.trace.push(Event::Tick(id, now));
            self.engine_mut(id).tick(now);
        }
        self.run();
    }

    /// Makes node `id` campaign now (as if its timer fired, without moving anyone's time), then runs
    /// to quiescence; it must win.
    fn elect(&mut self, id: NodeId) {
        self.engine_mut(id).start_election(false);
        self.run();
        assert_eq!(
            self.engine(id).role(),
            Role::Leader,
            "node {id} did not win"
        );
    }

    fn propose(&mut self, id: NodeId, command: u64) -> LogId {
        let log_id = self.engine_mut(id).propose(command).unwrap();
        self.run();
        log_id
    }

    /// State machine safety: no two nodes applied different entries at the same index.
    fn assert_applied_consistent(&self) {
        for a in self.nodes.values() {
            for b in self.nodes.values() {
                for e in a.state_machine().entries() {
                    if let Some(other) = b.state_machine().entry(e.index()) {
                        assert_eq!(
                            e,
                            other,
                            "nodes {} and {} applied different entries",
                            a.id(),
                            b.id()
                        );
                    }
                }
            }
        }
    }
}

// ===== voting rules =====

#[test]
fn vote_refused_for_a_stale_term() {
    let mut e = follower(1, &[3], 5);
    let r = e.handle_vote_request(vote(4, 2, (9, 9)));
    assert_eq!(
        r,
        VoteResponse {
            term: 5,
            vote_granted: false
        }
    );
    assert_eq!(e.hard_state(), hs(5, None));
    assert_eq!(e.take_output().hard_state, None);
}

#[test]
fn vote_at_most_one_per_term_and_regranted_idempotently_to_the_same_candidate() {
    let mut e = follower(1, &[1], 5);
    assert!(e.handle_vote_request(vote(5, 2, (1, 2))).vote_granted);
    assert_eq!(e.take_output().hard_state, Some(hs(5, Some(2))));

    let r = e.handle_vote_request(vote(5, 3, (1, 2)));
    assert!(
        !r.vote_granted,
        "a second candidate in the same term got a vote"
    );
    assert_eq!(r.term, 5);
    assert_eq!(e.hard_state(), hs(5, Some(2)));

    // The same candidate asking again (its reply was lost) gets the same answer.
    assert!(e.handle_vote_request(vote(5, 2, (1, 2))).vote_granted);
    assert_eq!(e.hard_state(), hs(5, Some(2)));
    assert_eq!(e.take_output().hard_state, None, "nothing new to persist");
}

#[test]
fn vote_recovered_from_hard_state_still_binds_after_restart() {
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[1], hs(5, Some(2)));
    assert!(!e.handle_vote_request(vote(5, 3, (1, 2))).vote_granted);
    assert!(e.handle_vote_request(vote(5, 2, (1, 2))).vote_granted);
}

#[test]
fn vote_refused_to_a_candidate_with_a_lower_last_term() {
    // Voter's last entry: (3, 5). Candidate's: (2, 9), longer but older.
    let mut e = follower(1, &[1, 2, 3, 3], 3);
    let r = e.handle_vote_request(vote(4, 2, (2, 9)));
    assert!(!r.vote_granted);
    assert_eq!(e.hard_state(), hs(4, None), "the term is adopted even so");
}

#[test]
fn vote_refused_to_a_candidate_with_the_same_last_term_but_a_shorter_log() {
    let mut e = follower(1, &[1, 2, 3, 3], 3);
    let r = e.handle_vote_request(vote(4, 2, (3, 4)));
    assert!(!r.vote_granted);
    assert_eq!(e.hard_state().voted_for, None);
}

#[test]
fn vote_granted_to_an_up_to_date_candidate() {
    for (name, last) in [
        ("same last id", (3, 5)),
        ("same term, longer", (3, 9)),
        ("higher term, shorter", (4, 2)),
    ] {
        let mut e = follower(1, &[1, 2, 3, 3], 4);
        let r = e.handle_vote_request(vote(4, 2, last));
        assert!(r.vote_granted, "{name}");
        assert_eq!(r.term, 4);
        assert_eq!(e.take_output().hard_state, Some(hs(4, Some(2))), "{name}");
    }
}

#[test]
fn vote_request_of_a_higher_term_makes_a_leader_step_down_and_clears_the_vote() {
    // The rule of the Raft paper. With check-quorum (the default) a leader refuses such a request
    // and keeps its term unless it is a leadership transfer's: see `tests/pre_vote.rs`.
    let config = Config {
        check_quorum: false,
        ..config()
    };
    let mut e = replicating_leader(&config, &[1, 2, 3], &[1], hs(1, None));
    assert_eq!(e.hard_state(), hs(2, Some(1)));
    // The candidate's log is behind: the vote is refused but the term is adopted.
    let r = e.handle_vote_request(vote(3, 2, (1, 2)));
    assert_eq!(
        r,
        VoteResponse {
            term: 3,
            vote_granted: false
        }
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), None);
    assert!(e.progress().is_empty());
    assert_eq!(e.take_output().hard_state, Some(hs(3, None)));
}

#[test]
fn vote_request_of_a_higher_term_frees_the_vote_for_that_term() {
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[1], hs(5, Some(2)));
    let r = e.handle_vote_request(vote(6, 3, (1, 2)));
    assert!(r.vote_granted);
    assert_eq!(r.term, 6);
    assert_eq!(e.take_output().hard_state, Some(hs(6, Some(3))));
}

#[test]
fn vote_request_of_a_higher_term_makes_a_candidate_step_down() {
    let mut e = follower(1, &[1], 1);
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::Candidate);
    assert!(e.handle_vote_request(vote(3, 2, (1, 2))).vote_granted);
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.take_output().hard_state, Some(hs(3, Some(2))));
}

#[test]
fn granting_a_vote_resets_the_election_timer() {
    let mut e = follower(1, &[1], 1);
    let deadline = e.next_deadline();
    e.tick(deadline - 1);
    assert!(e.handle_vote_request(vote(1, 2, (1, 2))).vote_granted);
    assert!(e.next_deadline() >= deadline - 1 + MIN);
    e.tick(deadline);
    assert_eq!(e.role(), Role::Follower, "timer was not reset by the vote");
}

#[test]
fn refusing_a_vote_does_not_reset_the_election_timer() {
    let cases: [(&str, HardState, VoteRequest); 4] = [
        ("already voted", hs(1, Some(3)), vote(1, 2, (1, 2))),
        ("stale log, same term", hs(1, None), vote(1, 2, (0, 1))),
        ("stale term", hs(2, None), vote(1, 2, (1, 2))),
        ("stale log, higher term", hs(1, None), vote(2, 2, (0, 1))),
    ];
    for (name, hard_state, req) in cases {
        let mut e = engine_with(1, &config(), &[1, 2, 3], &[1], hard_state);
        let deadline = e.next_deadline();
        e.tick(deadline - 1);
        assert!(!e.handle_vote_request(req).vote_granted, "{name}");
        assert_eq!(
            e.next_deadline(),
            deadline,
            "{name}: refusal moved the timer"
        );
        let term = e.term();
        e.tick(deadline);
        assert_eq!(e.role(), Role::Candidate, "{name}");
        assert_eq!(e.term(), term + 1, "{name}");
    }
}

// ===== elections =====

#[test]
fn follower_times_out_within_the_election_range_and_asks_every_voter() {
    let voters = [1, 2, 3, 4, 5];
    let mut e = initialized(3, &voters, &config(), 1000);
    let deadline = e.next_deadline();
    assert!((1000 + MIN..1000 + MAX).contains(&deadline), "{deadline}");

    e.tick(deadline - 1);
    assert_eq!(e.role(), Role::Follower);
    assert!(e.take_output().is_empty());

    e.tick(deadline);
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.term(), 1);
    let out = e.take_output();
    assert_eq!(
        out.hard_state,
        Some(hs(1, Some(3))),
        "self-vote must be persisted"
    );
    let mut reqs = vote_requests(&out);
    reqs.sort_by_key(|(to, _)| *to);
    let expected: Vec<(NodeId, VoteRequest)> = [1, 2, 4, 5]
        .into_iter()
        .map(|to| (to, vote(1, 3, (0, 1))))
        .collect();
    assert_eq!(reqs, expected);
    assert_eq!(out.messages.len(), 4);
}

#[test]
fn election_timeouts_stay_within_range_for_any_seed() {
    for seed in 0..64 {
        let c = Config { seed, ..config() };
        let mut e = initialized(1, &[1, 2, 3], &c, 0);
        for _ in 0..8 {
            let start = e.now();
            let d = e.next_deadline();
            assert!((start + MIN..start + MAX).contains(&d), "seed {seed}");
            e.tick(d);
            assert_eq!(e.role(), Role::Candidate);
            let _ = e.take_output();
        }
    }
}

#[test]
fn candidate_that_times_out_starts_a_new_election_in_the_next_term() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    e.tick(e.next_deadline());
    let _ = e.take_output();
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::Candidate);
    let out = e.take_output();
    assert_eq!(out.hard_state, Some(hs(2, Some(1))));
    assert_eq!(vote_requests(&out).len(), 2);
    assert!(vote_requests(&out).iter().all(|(_, v)| v.term == 2));
}

#[test]
fn node_without_membership_never_starts_an_election() {
    let mut e: Engine<u64> = Engine::new(1, &config(), RecoveredState::default(), 0);
    for step in 1..=100 {
        e.tick(step * 1000);
        assert_eq!(e.role(), Role::Follower);
        assert_eq!(e.term(), 0);
        assert!(e.take_output().is_empty());
    }
}

#[test]
fn node_outside_the_membership_never_starts_an_election() {
    let mut e = engine_with(4, &config(), &[1, 2, 3], &[1], hs(1, None));
    for step in 1..=100 {
        e.tick(step * 1000);
        assert_eq!(e.role(), Role::Follower);
        assert!(e.take_output().is_empty());
    }
}

#[test]
fn candidate_with_a_majority_becomes_leader_and_appends_a_blank_entry() {
    let mut e = initialized(1, &[1, 2, 3, 4, 5], &config(), 0);
    e.tick(e.next_deadline());
    let _ = e.take_output();
    e.handle_vote_response(2, granted(1));
    assert_eq!(e.role(), Role::Candidate, "2 of 5 votes are not a majority");
    e.handle_vote_response(2, granted(1));
    assert_eq!(e.role(), Role::Candidate, "a duplicate vote counted twice");
    e.handle_vote_response(3, granted(1));
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.leader(), Some(1));

    let out = e.take_output();
    assert_eq!(out.append, vec![blank(1, 2)]);
    for to in [2, 3, 4, 5] {
        assert_eq!(
            appends_to(&out, to),
            vec![AppendEntriesRequest {
                round: 1,
                ..append(1, 1, (0, 1), vec![blank(1, 2)], 0)
            }],
            "the blank entry's replication carries the first confirmation round"
        );
    }
}

#[test]
fn votes_of_a_stale_term_or_not_granted_are_not_counted() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    e.tick(e.next_deadline());
    e.tick(e.next_deadline());
    assert_eq!((e.role(), e.term()), (Role::Candidate, 2));
    let _ = e.take_output();

    e.handle_vote_response(2, granted(1)); // answers the election of term 1
    e.handle_vote_response(
        3,
        VoteResponse {
            term: 2,
            vote_granted: false,
        },
    );
    assert_eq!(e.role(), Role::Candidate);
    assert!(e.take_output().append.is_empty());

    e.handle_vote_response(3, granted(2));
    assert_eq!(e.role(), Role::Leader);
}

#[test]
fn vote_response_of_a_higher_term_makes_a_candidate_step_down() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    e.tick(e.next_deadline());
    let _ = e.take_output();
    e.handle_vote_response(
        2,
        VoteResponse {
            term: 7,
            vote_granted: false,
        },
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.take_output().hard_state, Some(hs(7, None)));
}

#[test]
fn candidate_receiving_append_entries_of_its_term_steps_down() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::Candidate);
    let _ = e.take_output();
    let r = e.handle_append_entries(append(1, 2, (0, 1), vec![blank(1, 2)], 0));
    assert_eq!(r, success(1, 2));
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.leader(), Some(2));
    assert_eq!(
        e.hard_state(),
        hs(1, Some(1)),
        "the vote of the term is kept"
    );
    // A late vote no longer makes it leader.
    e.handle_vote_response(3, granted(1));
    assert_eq!(e.role(), Role::Follower);
}

#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let mut e = initialized(1, &[1], &config(), 0);
    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::Leader);
    assert_eq!(e.term(), 1);
    let out = e.take_output();
    assert_eq!(out.hard_state, Some(hs(1, Some(1))));
    assert!(out.messages.is_empty());
    assert_eq!(out.append, vec![blank(1, 2)]);
    assert_eq!(e.commit_index(), 0, "nothing commits before it is durable");
    persist(&mut e, &out);
    assert_eq!(e.commit_index(), 2);
    assert_eq!(
        e.take_output().apply,
        vec![membership_entry(&[1]), blank(1, 2)]
    );

    let id = e.propose(42).unwrap();
    assert_eq!(id, LogId::new(1, 3));
    let out = e.take_output();
    persist(&mut e, &out);
    assert_eq!(indexes(&e.take_output().apply), vec![3]);
}

#[test]
fn randomized_timeouts_differ_across_nodes_with_the_same_seed() {
    let config = config();
    let voters = [1, 2, 3, 4, 5];
    let timeouts: Vec<Vec<u64>> = voters
        .iter()
        .map(|&id| {
            let mut e = initialized(id, &voters, &config, 0);
            (0..8)
                .map(|_| {
                    let start = e.now();
                    let d = e.next_deadline();
                    e.tick(d);
                    d - start
                })
                .collect()
        })
        .collect();
    for (i, a) in timeouts.iter().enumerate() {
        for b in &timeouts[i + 1..] {
            assert_ne!(a, b, "two nodes drew the same timeouts: {timeouts:?}");
        }
    }
    let firsts: BTreeSet<u64> = timeouts.iter().map(|t| t[0]).collect();
    assert!(firsts.len() > 1, "every node would time out together");
}

/// A scripted run of a 3-node cluster: elections decided by the seeded timers, proposals, the leader
/// isolated and healed. Returns every tick, output and reply, in order.
fn scripted_run(seed: u64) -> Vec<Event> {
    let config = Config {
        seed,
        ..Config::default()
    };
    let mut c = Cluster::new(&[1, 2, 3], &config);
    let mut isolated = None;
    for step in 1..=150u64 {
        c.advance(step * 10);
        if step == 60 {
            isolated = c.leader();
            c.isolated.extend(isolated);
        }
        if step == 110 {
            c.isolated.clear();
        }
        if step % 3 == 0 {
            if let Some(l) = c.leader() {
                if c.engine_mut(l).propose(step).is_ok() {
                    c.run();
                }
            }
        }
    }
    assert!(isolated.is_some(), "no leader was elected by step 60");
    assert!(
        c.nodes
            .values()
            .all(|n| n.state_machine().entries().len() > 20),
        "too little happened for a meaningful determinism check"
    );
    c.assert_applied_consistent();
    c.trace
}

#[test]
fn same_seed_and_inputs_give_identical_outputs() {
    let first = scripted_run(11);
    let second = scripted_run(11);
    assert_eq!(first.len(), second.len());
    assert_eq!(first, second);
    assert_ne!(first, scripted_run(12), "the seed has no effect");
}

// ===== AppendEntries at the follower =====

#[test]
fn append_entries_with_a_missing_prev_is_rejected_with_the_next_free_index() {
    let mut e = follower(1, &[1, 1], 1);
    let r = e.handle_append_entries(append(1, 2, (1, 5), vec![cmd(1, 6)], 0));
    assert_eq!(r, conflict(1, 5, None, 4));
    assert_eq!(e.last_log_id(), LogId::new(1, 3));
    assert!(e.take_output().append.is_empty());
}

#[test]
fn append_entries_with_a_prev_term_mismatch_reports_the_first_index_of_that_term() {
    // Log: 1:t0 2:t1 3:t2 4:t2 5:t2 6:t3
    let mut e = follower(1, &[1, 2, 2, 2, 3], 3);
    let r = e.handle_append_entries(append(4, 2, (4, 5), vec![cmd(4, 6)], 0));
    assert_eq!(r, conflict(4, 5, Some(2), 3));
    assert_eq!(e.last_log_id(), LogId::new(3, 6), "nothing was changed");
    let out = e.take_output();
    assert!(out.append.is_empty() && out.truncate_from.is_none());
}

#[test]
fn append_entries_appends_new_entries() {
    let mut e = follower(1, &[1, 1], 1);
    let r = e.handle_append_entries(append(2, 2, (1, 3), vec![cmd(2, 4), cmd(2, 5)], 0));
    assert_eq!(r, success(2, 5));
    let out = e.take_output();
    assert_eq!(out.hard_state, Some(hs(2, None)));
    assert_eq!(out.truncate_from, None);
    assert_eq!(out.append, vec![cmd(2, 4), cmd(2, 5)]);
    assert_eq!(e.last_log_id(), LogId::new(2, 5));
    assert_eq!(e.leader(), Some(2));

    // The same request again (a duplicate) changes nothing.
    assert_eq!(
        e.handle_append_entries(append(2, 2, (1, 3), vec![cmd(2, 4), cmd(2, 5)], 0)),
        success(2, 5)
    );
    assert!(e.take_output().is_empty());
}

#[test]
fn append_entries_truncates_on_a_real_conflict_only() {
    // Log: 1:t0 2..5:t1, none committed. The leader of term 3 has (3, 4) at index 4.
    let mut e = follower(1, &[1, 1, 1, 1], 1);
    let r = e.handle_append_entries(append(3, 2, (1, 3), vec![cmd(3, 4)], 0));
    assert_eq!(r, success(3, 4));
    let out = e.take_output();
    assert_eq!(out.truncate_from, Some(4));
    assert_eq!(out.append, vec![cmd(3, 4)]);
    assert_eq!(e.last_log_id(), LogId::new(3, 4));
    assert_eq!(e.entry(5), None, "the conflicting suffix is gone");
    assert_eq!(e.entry(3), Some(&cmd(1, 3)), "the matching prefix is kept");
}

#[test]
fn append_entries_truncation_of_entries_not_yet_submitted_stays_in_memory() {
    let mut e = follower(1, &[1], 1);
    assert_eq!(
        e.handle_append_entries(append(1, 2, (1, 2), vec![cmd(1, 3), cmd(1, 4)], 0)),
        success(1, 4)
    );
    // Before the output is taken, a new leader replaces index 4.
    assert_eq!(
        e.handle_append_entries(append(2, 3, (1, 3), vec![cmd(2, 4)], 0)),
        success(2, 4)
    );
    let out = e.take_output();
    assert_eq!(out.truncate_from, None, "storage never held index 4");
    assert_eq!(out.append, vec![cmd(1, 3), cmd(2, 4)]);
}

#[test]
fn stale_shorter_append_entries_does_not_truncate_a_longer_log() {
    let mut e = follower(1, &[1], 2);
    let full = vec![cmd(2, 3), cmd(2, 4), cmd(2, 5), cmd(2, 6)];
    assert_eq!(
        e.handle_append_entries(append(2, 2, (1, 2), full, 0)),
        success(2, 6)
    );
    let _ = e.take_output();

    // An earlier request of the same leader, delayed: its entries are all present already.
    let r = e.handle_append_entries(append(2, 2, (1, 2), vec![cmd(2, 3), cmd(2, 4)], 0));
    assert_eq!(
        r,
        success(2, 4),
        "match covers only what the request vouches for"
    );
    let out = e.take_output();
    assert_eq!(out.truncate_from, None);
    assert!(out.append.is_empty());
    assert_eq!(e.last_log_id(), LogId::new(2, 6));

    // A stale heartbeat anchored further back as well.
    assert_eq!(
        e.handle_append_entries(append(2, 2, (1, 2), vec![], 0)),
        success(2, 2)
    );
    assert_eq!(e.last_log_id(), LogId::new(2, 6));
    assert!(e.take_output().is_empty());
}

#[test]
fn append_entries_conflicting_with_a_committed_entry_is_refused() {
    let mut e = follower(1, &[1, 1], 1);
    assert_eq!(
        e.handle_append_entries(append(1, 2, (1, 3), vec![], 3)),
        success(1, 3)
    );
    assert_eq!(e.commit_index(), 3);
    let _ = e.take_output();
    let r = e.handle_append_entries(append(2, 3, (1, 2), vec![cmd(2, 3)], 3));
    assert_eq!(r.result, AppendResult::Invalid);
    assert_eq!(e.entry(3), Some(&cmd(1, 3)));
    let out = e.take_output();
    assert!(out.append.is_empty() && out.truncate_from.is_none());
}

#[test]
fn follower_commit_is_min_of_leader_commit_and_last_index_of_the_request() {
    let mut e = follower(1, &[], 1);
    let mut applied = Vec::new();
    let mut step =
        |e: &mut Engine<u64>, req: AppendEntriesRequest<u64>, expected_commit: LogIndex| {
            let r = e.handle_append_entries(req);
            assert!(matches!(r.result, AppendResult::Success { .. }), "{r:?}");
            assert_eq!(e.commit_index(), expected_commit);
            let out = e.take_output();
            applied.extend(indexes(&out.apply));
        };
    // leader_commit above what the request covers: bounded by prev + entries.
    step(
        &mut e,
        append(1, 2, (0, 1), vec![cmd(1, 2), cmd(1, 3)], 10),
        3,
    );
    // leader_commit below: bounded by leader_commit.
    step(
        &mut e,
        append(1, 2, (1, 3), vec![cmd(1, 4), cmd(1, 5)], 4),
        4,
    );
    // A heartbeat carrying a newer commit.
    step(&mut e, append(1, 2, (1, 5), vec![], 5), 5);
    // A stale, shorter request never moves the commit index back nor applies again.
    step(&mut e, append(1, 2, (0, 1), vec![cmd(1, 2)], 2), 5);
    step(&mut e, append(1, 2, (1, 5), vec![cmd(1, 6)], 6), 6);
    assert_eq!(applied, vec![1, 2, 3, 4, 5, 6], "each entry once, in order");
}

#[test]
fn follower_does_not_commit_its_own_unvouched_suffix() {
    // Stale uncommitted entries 3..6 of term 1; the leader of term 2 holds other entries there.
    let mut e = follower(1, &[1, 1, 1, 1, 1], 1);
    let r = e.handle_append_entries(append(2, 2, (1, 3), vec![], 6));
    assert_eq!(r, success(2, 3));
    assert_eq!(
        e.commit_index(),
        3,
        "only entries matching the leader can be committed"
    );
    assert_eq!(indexes(&e.take_output().apply), vec![1, 2, 3]);
}

#[test]
fn append_entries_of_a_stale_term_is_refused_and_changes_nothing() {
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[1, 2], hs(5, Some(3)));
    let deadline = e.next_deadline();
    e.tick(deadline - 1);
    let r = e.handle_append_entries(append(4, 2, (2, 3), vec![cmd(4, 4)], 3));
    assert_eq!(
        r,
        AppendEntriesResponse {
            term: 5,
            result: AppendResult::StaleTerm,
            round: 0,
        }
    );
    assert_eq!(e.hard_state(), hs(5, Some(3)));
    assert_eq!(e.last_log_id(), LogId::new(2, 3));
    assert_eq!(e.commit_index(), 0);
    assert_eq!(e.leader(), None);
    assert_eq!(
        e.next_deadline(),
        deadline,
        "a stale leader must not hold off elections"
    );
    assert!(e.take_output().is_empty());
}

#[test]
fn append_entries_of_a_higher_term_is_adopted_and_persisted() {
    let mut e = follower(1, &[1], 1);
    let deadline = e.next_deadline();
    e.tick(deadline - 1);
    assert_eq!(
        e.handle_append_entries(append(4, 3, (1, 2), vec![], 0)),
        success(4, 2)
    );
    assert_eq!(e.take_output().hard_state, Some(hs(4, None)));
    assert_eq!(e.leader(), Some(3));
    assert!(
        e.next_deadline() >= deadline - 1 + MIN,
        "a live leader resets the timer"
    );
}

// ===== the leader =====

#[test]
fn leader_never_commits_an_old_term_entry_by_counting_replicas() {
    // Raft paper, figure 8: node 1 leads term 4 holding (2, 2), an entry of term 2 that no majority
    // has. One entry per AppendEntries, so (2, 2) reaches node 2 before the blank (4, 3) does.
    let config = Config {
        max_entries_per_append: 1,
        ..config()
    };
    let voters = [1, 2, 3];
    let mut c = Cluster::from_executors(vec![
        executor_with(1, &config, &voters, &[2], hs(3, None)),
        executor_with(2, &config, &voters, &[], hs(3, None)),
        executor_with(3, &config, &voters, &[], hs(3, None)),
    ]);
    c.isolated.insert(3);
    c.now = c.engine(1).next_deadline();
    let now = c.now;
    c.engine_mut(1).tick(now);
    c.flush_all();

    let mut saw_old_entry_on_majority = false;
    let mut budget = 1000;
    loop {
        c.flush_all();
        if !c.deliver_one() {
            break;
        }
        let leader = c.engine(1);
        if leader.role() == Role::Leader {
            assert_eq!(leader.term(), 4);
            if leader.progress()[&2].match_index == 2 {
                saw_old_entry_on_majority = true;
                assert_eq!(
                    leader.commit_index(),
                    0,
                    "(2, 2) committed by counting replicas"
                );
                assert!(c.applied(1).is_empty());
            }
        }
        budget -= 1;
        assert!(budget > 0);
    }
    assert!(saw_old_entry_on_majority, "the scenario did not occur");
    // Once the blank of term 4 is on a majority, both commit.
    assert_eq!(c.engine(1).progress()[&2].match_index, 3);
    assert_eq!(c.engine(1).commit_index(), 3);
    assert_eq!(
        c.applied(1),
        [membership_entry(&voters), cmd(2, 2), blank(4, 3)]
    );
}

#[test]
fn leader_commit_rule_checked_directly_on_progress() {
    // Leader of term 4, log 1:t0 2:t2 3:t4 (blank), durable. Node 2 acknowledges up to 2 only.
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[2], hs(3, None));
    let out = make_leader(&mut e);
    assert_eq!(e.term(), 4);
    assert_eq!(out.append, vec![blank(4, 3)]);
    persist(&mut e, &out);
    e.handle_append_entries_response(2, success(4, 2));
    e.handle_append_entries_response(3, success(4, 2));
    assert_eq!(
        e.commit_index(),
        0,
        "every voter holds (2, 2), still not committable"
    );
    assert!(e.take_output().apply.is_empty());
    e.handle_append_entries_response(2, success(4, 3));
    assert_eq!(e.commit_index(), 3);
    assert_eq!(indexes(&e.take_output().apply), vec![1, 2, 3]);
}

#[test]
fn leader_counts_itself_only_once_its_own_log_is_persisted() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let out = make_leader(&mut e);
    assert_eq!(out.append, vec![blank(1, 2)]);
    // AppendEntries leave before the leader's own append is durable (thesis 10.2.1).
    assert_eq!(appends_to(&out, 2).len(), 1);
    e.handle_append_entries_response(2, success(1, 2));
    assert_eq!(e.commit_index(), 0, "counted its own non-durable entry");
    assert!(e.take_output().apply.is_empty());
    e.log_persisted(LogId::new(1, 2));
    assert_eq!(e.commit_index(), 2);
    assert_eq!(indexes(&e.take_output().apply), vec![1, 2]);
}

#[test]
fn leader_commits_on_two_follower_acks_without_its_own_persistence() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let _ = make_leader(&mut e);
    e.handle_append_entries_response(2, success(1, 2));
    assert_eq!(e.commit_index(), 0);
    e.handle_append_entries_response(3, success(1, 2));
    assert_eq!(e.commit_index(), 2);
    assert_eq!(indexes(&e.take_output().apply), vec![1, 2]);
}

#[test]
fn leader_ignores_a_persistence_report_for_entries_it_never_had() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let _ = make_leader(&mut e);
    e.log_persisted(LogId::new(0, 2)); // wrong term for index 2
    e.handle_append_entries_response(2, success(1, 2));
    assert_eq!(e.commit_index(), 0);
}

#[test]
fn fast_backtracking_syncs_a_long_divergent_follower_in_few_round_trips() {
    // Common prefix 1:t0 2..3:t1. Node 2 then holds 60 entries of term 2 (4..63) no one else has.
    let follower_terms: Vec<Term> = [1, 1].into_iter().chain([2; 60]).collect();
    let cases: [(&str, Vec<Term>); 2] = [
        // The leader never saw term 2: skip the follower's whole term-2 run at once.
        ("leader lacks the term", vec![1, 1, 3, 3, 3, 3, 3, 3, 3]),
        // The leader has some term-2 entries: skip to its last one.
        ("leader shares the term", vec![1, 1, 2, 2, 2, 3, 3, 3, 3]),
    ];
    for (name, leader_terms) in cases {
        let voters = [1, 2, 3];
        let mut c = Cluster::from_executors(vec![
            executor_with(1, &config(), &voters, &leader_terms, hs(3, None)),
            executor_with(2, &config(), &voters, &follower_terms, hs(3, None)),
            executor_with(3, &config(), &voters, &leader_terms, hs(3, None)),
        ]);
        assert_eq!(c.engine(2).last_log_id(), LogId::new(2, 63));
        c.elect(1);
        assert_eq!(c.engine(2).entries(), c.engine(1).entries(), "{name}");
        let round_trips = c.append_requests[&(1, 2)];
        assert!(
            round_trips <= 4,
            "{name}: {round_trips} AppendEntries to bring node 2 in sync"
        );
        c.assert_applied_consistent();
    }
}

#[test]
fn leader_ignores_stale_duplicated_and_reordered_responses() {
    // Leader of term 4: log 1:t0 2..5:t1 6:t4 (blank); followers matched at 6.
    let mut e = replicating_leader(&config(), &[1, 2, 3], &[1, 1, 1, 1], hs(3, None));
    assert_eq!(e.term(), 4);
    e.propose(7).unwrap();
    e.propose(8).unwrap();
    let out = e.take_output();
    persist(&mut e, &out);
    let before = progress_of(&e, 2);
    assert_eq!(before, (6, 9, ReplicationState::Replicate));

    // A Conflict answering an old probe (prev index 3).
    e.handle_append_entries_response(2, conflict(4, 3, Some(1), 2));
    assert_eq!(
        progress_of(&e, 2),
        before,
        "old conflict moved the follower back"
    );
    // A duplicated or reordered Success with a lower match index.
    e.handle_append_entries_response(2, success(4, 4));
    assert_eq!(progress_of(&e, 2), before, "lower match_index accepted");
    // Responses of an older term, whatever they say.
    e.handle_append_entries_response(2, conflict(3, 6, None, 1));
    e.handle_append_entries_response(2, success(3, 8));
    assert_eq!(
        progress_of(&e, 2),
        before,
        "a reply from an old term was used"
    );
    assert_eq!(e.role(), Role::Leader);
    assert!(
        e.take_output().messages.is_empty(),
        "stale replies triggered sends"
    );

    // The real answer moves it forward; a duplicate of it changes nothing more.
    e.handle_append_entries_response(2, success(4, 8));
    assert_eq!(progress_of(&e, 2), (8, 9, ReplicationState::Replicate));
    e.handle_append_entries_response(2, success(4, 8));
    e.handle_append_entries_response(2, success(4, 6));
    assert_eq!(progress_of(&e, 2), (8, 9, ReplicationState::Replicate));
    assert_eq!(e.commit_index(), 8);
}

#[test]
fn leader_in_probe_ignores_a_conflict_for_another_probe() {
    // Leader of term 4, log 1:t0 2..5:t1 6:t4. Node 3 never answered: probing at prev 5.
    let mut e = engine_with(1, &config(), &[1, 2, 3], &[1, 1, 1, 1], hs(3, None));
    let out = make_leader(&mut e);
    assert_eq!(appends_to(&out, 3)[0].prev_log_id, LogId::new(1, 5));
    let before = progress_of(&e, 3);
    assert_eq!(before, (0, 6, ReplicationState::Probe));
    e.handle_append_entries_response(3, conflict(4, 2, None, 2));
    assert_eq!(progress_of(&e, 3), before);
    assert!(e.take_output().messages.is_empty());
    // The answer to the outstanding probe is used.
    e.handle_append_entries_response(3, conflict(4, 5, None, 3));
    assert_eq!(progress_of(&e, 3), (0, 3, ReplicationState::Probe));
    let out = e.take_output();
    assert_eq!(appends_to(&out, 3).len(), 1);
    assert_eq!(appends_to(&out, 3)[0].prev_log_id, LogId::new(1, 2));
}

#[test]
fn leader_steps_down_on_a_response_of_a_higher_term() {
    let mut e = replicating_leader(&config(), &[1, 2, 3], &[1], hs(1, None));
    e.handle_append_entries_response(
        2,
        AppendEntriesResponse {
            term: 9,
            result: AppendResult::StaleTerm,
            round: 0,
        },
    );
    assert_eq!(e.role(), Role::Follower);
    assert_eq!(e.take_output().hard_state, Some(hs(9, None)));
    assert_eq!(e.propose(1), Err(NotLeader { leader_hint: None }));
}

#[test]
fn leader_pipelines_append_entries_bounded_by_max_in_flight() {
    let config = Config {
        max_in_flight: 3,
        ..config()
    };
    let mut e = replicating_leader(&config, &[1, 2, 3], &[], hs(0, None));
    let last = e.last_log_id().index; // 2, the blank
    let mut sent = Vec::new();
    for i in 0..6 {
        e.propose(i).unwrap();
        let out = e.take_output();
        persist(&mut e, &out);
        sent.extend(appends_to(&out, 2));
    }
    assert_eq!(sent.len(), 3, "in flight to node 2: {sent:?}");
    for (k, req) in sent.iter().enumerate() {
        let prev = last + k as u64;
        assert_eq!(
            req.prev_log_id,
            LogId::new(1, prev),
            "sent without waiting, in order"
        );
        assert_eq!(indexes(&req.entries), vec![prev + 1]);
    }
    // One answer frees one slot: everything proposed since goes in one request.
    e.handle_append_entries_response(2, success(1, last + 1));
    let out = e.take_output();
    let reqs = appends_to(&out, 2);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].prev_log_id, LogId::new(1, last + 3));
    assert_eq!(
        indexes(&reqs[0].entries),
        vec![last + 4, last + 5, last + 6]
    );
}

#[test]
fn leader_in_probe_sends_one_append_entries_at_a_time() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let out = make_leader(&mut e);
    assert_eq!(appends_to(&out, 2).len(), 1);
    for i in 0..5 {
        e.propose(i).unwrap();
        assert!(appends_to(&e.take_output(), 2).is_empty());
    }
    e.handle_append_entries_response(2, success(1, 2));
    assert_eq!(e.progress()[&2].state, ReplicationState::Replicate);
    let reqs = appends_to(&e.take_output(), 2);
    assert_eq!(reqs.len(), 1);
    assert_eq!(indexes(&reqs[0].entries), vec![3, 4, 5, 6, 7]);
}

#[test]
fn unreachable_follower_goes_back_to_probe() {
    let mut e = replicating_leader(&config(), &[1, 2, 3], &[], hs(0, None));
    e.propose(1).unwrap();
    let out = e.take_output();
    assert_eq!(appends_to(&out, 2).len(), 1);
    e.handle_unreachable(2);
    assert_eq!(progress_of(&e, 2), (2, 3, ReplicationState::Probe));

    // No more pipelining to it: nothing until the next heartbeat...
    e.propose(2).unwrap();
    let out = e.take_output();
    assert!(appends_to(&out, 2).is_empty());
    assert_eq!(appends_to(&out, 3).len(), 1);
    // ...which probes from its match index.
    let t = e.now();
    e.tick(t + HB);
    let reqs = appends_to(&e.take_output(), 2);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].prev_log_id, LogId::new(1, 2));
    assert_eq!(indexes(&reqs[0].entries), vec![3, 4]);
}

#[test]
fn proposal_on_a_non_leader_is_refused_with_the_leader_hint() {
    let mut e = follower(1, &[1], 1);
    assert_eq!(e.propose(5), Err(NotLeader { leader_hint: None }));
    e.handle_append_entries(append(2, 3, (1, 2), vec![], 0));
    assert_eq!(
        e.propose(5),
        Err(NotLeader {
            leader_hint: Some(3)
        })
    );
    let out = e.take_output();
    assert!(out.append.is_empty(), "a refused proposal was appended");

    e.tick(e.next_deadline());
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.propose(5), Err(NotLeader { leader_hint: None }));
}

#[test]
fn proposals_between_two_outputs_travel_in_one_append_entries_per_follower() {
    let mut e = replicating_leader(&config(), &[1, 2, 3], &[], hs(0, None));
    for i in 0..10 {
        e.propose(i).unwrap();
    }
    let out = e.take_output();
    assert_eq!(indexes(&out.append), (3..=12).collect::<Vec<_>>());
    assert_eq!(out.messages.len(), 2);
    for to in [2, 3] {
        let reqs = appends_to(&out, to);
        assert_eq!(reqs.len(), 1, "to {to}");
        assert_eq!(reqs[0].prev_log_id, LogId::new(1, 2));
        assert_eq!(reqs[0].entries, out.append);
    }
}

#[test]
fn proposals_beyond_max_entries_per_append_are_split() {
    let config = Config {
        max_entries_per_append: 4,
        ..config()
    };
    let mut e = replicating_leader(&config, &[1, 2, 3], &[], hs(0, None));
    for i in 0..10 {
        e.propose(i).unwrap();
    }
    let reqs = appends_to(&e.take_output(), 2);
    let sizes: Vec<usize> = reqs.iter().map(|r| r.entries.len()).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
}

#[test]
fn leader_sends_heartbeats_every_heartbeat_interval() {
    let mut e = replicating_leader(&config(), &[1, 2, 3], &[], hs(0, None));
    let t0 = e.now(); // when it took office
    for k in 1..=5 {
        e.tick(t0 + k * HB - 1);
        assert!(e.take_output().messages.is_empty(), "early heartbeat");
        e.tick(t0 + k * HB);
        let out = e.take_output();
        assert_eq!(out.messages.len(), 2);
        for to in [2, 3] {
            assert_eq!(
                appends_to(&out, to),
                vec![AppendEntriesRequest {
                    round: k + 1,
                    ..append(1, 1, (1, 2), vec![], 2)
                }],
                "heartbeat {k} to {to}: each starts a confirmation round"
            );
            e.handle_append_entries_response(to, success(1, 2));
        }
        assert_eq!(e.role(), Role::Leader);
    }
}

#[test]
fn with_check_quorum_off_a_leader_that_hears_from_no_one_keeps_office() {
    let c = Config {
        check_quorum: false,
        ..config()
    };
    let mut e = initialized(1, &[1, 2, 3], &c, 0);
    let _ = make_leader(&mut e);
    let t0 = e.now();
    for k in 1..=20 {
        e.tick(t0 + k * MAX);
        let _ = e.take_output();
    }
    assert_eq!(e.role(), Role::Leader, "no check, no step-down");
    assert!(Config::default().check_quorum, "on by default");
}

#[test]
fn leader_that_hears_from_no_follower_for_election_timeout_max_steps_down() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let _ = make_leader(&mut e);
    let t0 = e.now();
    let mut t = t0;
    while t + HB < t0 + MAX {
        t += HB;
        e.tick(t);
        let _ = e.take_output();
        assert_eq!(e.role(), Role::Leader, "stepped down early, at {t}");
    }
    e.tick(t0 + MAX - 1);
    assert_eq!(e.role(), Role::Leader);
    e.tick(t0 + MAX);
    assert_eq!(
        e.role(),
        Role::Follower,
        "still leader after a silent election timeout"
    );
    assert_eq!(e.term(), 1);
    assert!(e.progress().is_empty());
    assert_eq!(e.propose(1), Err(NotLeader { leader_hint: None }));
}

#[test]
fn leader_that_hears_from_a_majority_keeps_office() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let out = make_leader(&mut e);
    persist(&mut e, &out);
    let t0 = e.now();
    // Only node 2 answers, only heartbeats; node 3 is gone.
    for k in 1..=40 {
        e.tick(t0 + k * HB);
        let out = e.take_output();
        for req in appends_to(&out, 2) {
            let m = req.prev_log_id.index + req.entries.len() as u64;
            e.handle_append_entries_response(2, success(1, m));
        }
        assert_eq!(e.role(), Role::Leader, "at {}", t0 + k * HB);
    }
}

#[test]
fn leader_whose_followers_fall_silent_steps_down_within_two_timeouts() {
    let mut e = initialized(1, &[1, 2, 3], &config(), 0);
    let out = make_leader(&mut e);
    persist(&mut e, &out);
    let t0 = e.now();
    let mut t = t0;
    for _ in 0..10 {
        t += HB;
        e.tick(t);
        let _ = e.take_output();
        e.handle_append_entries_response(2, success(1, 2));
    }
    let last_ack = t;
    while e.role() == Role::Leader {
        t += HB;
        e.tick(t);
        let _ = e.take_output();
        assert!(
            t <= last_ack + 2 * MAX,
            "still leader at {t}, last ack at {last_ack}"
        );
    }
    assert!(
        t >= last_ack + MAX,
        "stepped down at {t} after an ack at {last_ack}"
    );
}

// ===== whole-cluster scenarios =====

#[test]
fn cluster_elects_replicates_and_applies_everywhere_exactly_once() {
    let mut c = Cluster::new(&[1, 2, 3], &config());
    c.elect(2);
    for i in 0..20 {
        c.propose(2, i);
    }
    // Followers learn the commit index with the next heartbeat.
    let t = c.now + HB;
    c.advance(t);
    let leader_applied = c.applied(2);
    assert_eq!(leader_applied.len(), 22);
    for id in c.ids() {
        assert_eq!(c.applied(id), leader_applied, "node {id}");
        assert_eq!(c.node(id).durable().hard_state().term, 1);
    }
    c.assert_applied_consistent();
}

#[test]
fn cluster_replaces_an_isolated_leader_and_its_uncommitted_entries() {
    let mut c = Cluster::new(&[1, 2, 3], &config());
    c.elect(1);
    c.propose(1, 10);
    let t = c.now + HB;
    c.advance(t);
    assert_eq!(c.engine(3).commit_index(), 3);

    // Node 1 is cut off and keeps appending what can never commit. Once the others have not heard
    // from it for an election timeout, one of them is elected.
    c.isolated.insert(1);
    c.engine_mut(1).propose(11).unwrap();
    c.engine_mut(1).propose(12).unwrap();
    c.run();
    let isolated_at = c.now;
    while c.leader() == Some(1) {
        assert!(c.now < isolated_at + 10 * MAX, "no new leader");
        let t = c.now + 5;
        c.advance(t);
    }
    let new_leader = c.leader().expect("a new leader");
    c.propose(new_leader, 20);
    // Heal; the old leader steps down on hearing the new term and its suffix is replaced.
    c.isolated.clear();
    for _ in 0..4 {
        let t = c.now + HB;
        c.advance(t);
    }
    assert_eq!(c.engine(1).role(), Role::Follower);
    assert_eq!(c.engine(1).entries(), c.engine(new_leader).entries());
    let commands: Vec<u64> = c
        .applied(1)
        .iter()
        .filter_map(|e| match *e.payload {
            EntryPayload::Command(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(commands, vec![10, 20]);
    c.assert_applied_consistent();
}

mod budget;
mod catch_up;
mod executor;
mod hostile;
mod membership;
mod pre_vote;
mod read;
mod repair;
mod snapshot;
mod transfer;
mod vote_refusal;
