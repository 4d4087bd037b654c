//! The simulator: a cluster of engines, each on the reference executor, on a simulated network,
//! run by a deterministic event loop, and narrated as [`Event`]s. One step hands one input to one
//! node and executes what its engine asks for (`step`); what the trace says about it is `narrate`'s.

mod narrate;
mod step;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft_core::engine::testing::{Crashed, DurableStore, Executor};
use raft_core::{Config, Engine, Entry, LogId, Membership, NodeId, Request, Response, Role};

use super::event::Event;
use super::network::{Msg, Network};

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

/// One input handed to one node's engine in a step.
enum Input {
    /// Nothing but time: a deadline of the node's engine is due, and the step's tick fires it.
    Tick,
    /// A peer's request, sent by incarnation `from_inc` of `from`.
    Request {
        from: NodeId,
        from_inc: u32,
        req: Request<u64>,
    },
    /// A peer's answer to a request this node sent.
    Response { from: NodeId, resp: Response },
    /// A request this node sent to that peer was refused (the peer is down or cut off).
    Unreachable(NodeId),
    /// Client writes, proposed together.
    Propose(Vec<u64>),
}

/// A node's process: running on the reference executor, or crashed, with what survives.
// A cluster holds a handful of these, changed only by a crash or a restart: their size is no cost.
#[allow(clippy::large_enum_variant)]
enum Host {
    Running(Executor<u64>),
    Down(Crashed<u64>),
}

/// One node of the cluster: its process and what the simulation keeps about it to narrate and to
/// answer clients.
struct SimNode {
    host: Host,
    /// Bumped at every crash: messages of an older incarnation are dropped.
    incarnation: u32,
    /// Who asked each request received and not yet answered, in order: the executor releases the
    /// replies in the order it received the requests, one `Effect::Reply` each.
    reply_to: VecDeque<(NodeId, u32)>,
    /// Client writes proposed here and not yet answered.
    pending: Vec<(LogId, u64)>,
    /// The votes of its current candidacy, its own included.
    votes: BTreeSet<NodeId>,
    /// When its election timer was last reset.
    timer_since: u64,
}

/// A cluster of [`Engine`]s, each on the reference executor
/// ([`raft_core::engine::testing::Executor`]), on a simulated network, run by a deterministic event
/// loop. See the [module docs](super).
pub struct Sim {
    config: Config,
    now: u64,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, SimNode>,
    network: Network,
    events: Vec<(u64, Event)>,
}

impl Sim {
    /// A cluster of fresh nodes at time 0, not yet initialized (see [`start`](Self::start)).
    pub fn new(opts: SimOptions) -> Self {
        // The timeline shows the elections of the Raft paper, one vote request at a time: no
        // pre-vote round before them.
        let config = Config {
            seed: opts.seed,
            pre_vote: false,
            ..opts.config
        };
        let voters: Vec<NodeId> = (1..=opts.nodes).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let node = SimNode {
                    host: Host::Running(Executor::new(id, &config, DurableStore::new(), 0)),
                    incarnation: 0,
                    reply_to: VecDeque::new(),
                    pending: Vec::new(),
                    votes: BTreeSet::new(),
                    timer_since: 0,
                };
                (id, node)
            })
            .collect();
        Sim {
            config,
            now: 0,
            voters,
            nodes,
            network: Network::new(opts.seed, opts.delay_ms),
            events: Vec::new(),
        }
    }

    /// Initializes every node with the membership of all nodes (as `Raft::initialize` on each).
    pub fn start(&mut self) {
        let membership = Membership::new(self.voters.iter().copied());
        for id in self.voters.clone() {
            self.executor_mut(id)
                .engine_mut()
                .initialize(membership.clone())
                .expect("a fresh node accepts initialize");
            self.flush(id, None);
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

    /// Everything recorded, with its time (ms), ending the simulation.
    pub fn into_events(self) -> Vec<(u64, Event)> {
        self.events
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.voters.clone()
    }

    /// The running engine of node `id` (`None` while it is crashed).
    pub fn engine(&self, id: NodeId) -> Option<&Engine<u64>> {
        match &self.node(id).host {
            Host::Running(node) => Some(node.engine()),
            Host::Down(_) => None,
        }
    }

    /// The running node that is leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.voters
            .iter()
            .filter_map(|&id| self.engine(id).map(|e| (id, e)))
            .filter(|(_, e)| e.role() == Role::Leader)
            .max_by_key(|(_, e)| e.term())
            .map(|(id, _)| id)
    }

    /// The durable log of node `id`, running or crashed: the entries its store holds after its
    /// compaction base (the timeline's nodes build no snapshots, so this is the whole log).
    pub fn durable_log(&self, id: NodeId) -> &[Entry<u64>] {
        match &self.node(id).host {
            Host::Running(node) => node.durable().entries(),
            Host::Down(node) => node.durable().entries(),
        }
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

    /// Crashes node `id` ([`Executor::crash`]): its durable state survives; its engine, held replies
    /// and messages in flight from or to it are lost.
    pub fn crash(&mut self, id: NodeId) {
        self.switch_host(id, |host| match host {
            Host::Running(node) => Host::Down(node.crash()),
            Host::Down(_) => panic!("node {id} is already down"),
        });
        let node = self.node_mut(id);
        node.incarnation += 1;
        node.reply_to.clear();
        node.votes.clear();
        let pending = std::mem::take(&mut node.pending);
        self.record(Event::Crashed { node: id });
        for (at, value) in pending {
            self.record(Event::WriteOutcomeUnknown {
                node: id,
                value,
                at,
                crashed: true,
            });
        }
    }

    /// Restarts node `id` from its durable state ([`Crashed::restart`]), as `Raft::start` does.
    pub fn restart(&mut self, id: NodeId) {
        let now = self.now;
        self.switch_host(id, |host| match host {
            Host::Down(node) => Host::Running(node.restart(now)),
            Host::Running(_) => panic!("node {id} is running"),
        });
        self.node_mut(id).timer_since = now;
        let durable = self.executor(id).durable();
        let (hard_state, last) = (durable.hard_state(), durable.last_log_id());
        self.record(Event::Restarted {
            node: id,
            hard_state,
            last,
        });
        self.flush(id, None);
    }

    /// Splits the network: nodes talk only within their group; unlisted nodes form one more group.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.network.partition(groups);
        let mut shown: Vec<Vec<NodeId>> = groups.iter().map(|g| g.to_vec()).collect();
        let rest: Vec<NodeId> = self
            .voters
            .iter()
            .copied()
            .filter(|&id| !self.network.is_grouped(id))
            .collect();
        if !rest.is_empty() {
            shown.push(rest);
        }
        self.record(Event::Partitioned { groups: shown });
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.network.heal();
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

    /// The earliest deadline of a running engine, with its node.
    fn next_timer(&self) -> Option<(u64, NodeId)> {
        self.voters
            .iter()
            .filter_map(|&id| self.engine(id).map(|e| (e.next_deadline(), id)))
            .min()
    }

    fn next_time(&self) -> Option<u64> {
        let timer = self.next_timer().map(|(t, _)| t);
        match (self.network.next_arrival(), timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the next thing due: a timer (first, on a tie with a message) or a message's arrival.
    fn process_next(&mut self) {
        let arrival = self.network.next_arrival();
        match self.next_timer() {
            Some((t, id)) if arrival.is_none_or(|m| t <= m) => {
                self.now = self.now.max(t);
                self.step(id, Input::Tick);
            }
            _ => {
                if let Some((t, msg)) = self.network.next_message() {
                    self.now = self.now.max(t);
                    self.deliver(msg);
                }
            }
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
                if !self.alive(from, from_inc) {
                    return; // the sender crashed; its connection died with it
                }
                if self.engine(to).is_none() || !self.network.can_talk(from, to) {
                    // Refused (down or partitioned): a leader stops replicating to it, as the
                    // driver has it on a failed AppendEntries or snapshot chunk.
                    if !matches!(req, Request::Vote(_)) {
                        self.step(from, Input::Unreachable(to));
                    }
                    return;
                }
                self.step(
                    to,
                    Input::Request {
                        from,
                        from_inc,
                        req,
                    },
                );
            }
            Msg::Response {
                from,
                to,
                to_inc,
                resp,
            } => {
                if !self.alive(to, to_inc) || !self.network.can_talk(from, to) {
                    return;
                }
                self.step(to, Input::Response { from, resp });
            }
        }
    }

    fn alive(&self, id: NodeId, incarnation: u32) -> bool {
        let node = self.node(id);
        matches!(node.host, Host::Running(_)) && node.incarnation == incarnation
    }

    fn send(&mut self, msg: Msg) {
        self.network.send(self.now, msg);
    }

    // ----- access -----

    fn record(&mut self, event: Event) {
        self.events.push((self.now, event));
    }

    fn node(&self, id: NodeId) -> &SimNode {
        self.nodes.get(&id).expect("a node of the cluster")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        self.nodes.get_mut(&id).expect("a node of the cluster")
    }

    fn executor(&self, id: NodeId) -> &Executor<u64> {
        match &self.node(id).host {
            Host::Running(node) => node,
            Host::Down(_) => panic!("node {id} is not running"),
        }
    }

    fn executor_mut(&mut self, id: NodeId) -> &mut Executor<u64> {
        match &mut self.node_mut(id).host {
            Host::Running(node) => node,
            Host::Down(_) => panic!("node {id} is not running"),
        }
    }

    /// Crashes or restarts node `id`: replaces its process with what `switch` makes of it.
    fn switch_host(&mut self, id: NodeId, switch: impl FnOnce(Host) -> Host) {
        let mut node = self.nodes.remove(&id).expect("a node of the cluster");
        node.host = switch(node.host);
        self.nodes.insert(id, node);
    }
}
