//! [`Cluster`]: a simulated cluster of nodes on the mock router, its clients, and the checks run on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft_core::{
    ClientWriteError, ClientWriteResponse, Config, Entry, EntryPayload, LogId, LogIndex, Metrics,
    NodeId, NodeStatus, Raft, RaftStorage, Role, SnapshotMeta, Term,
};
use raft_storage_mem::MemStorage;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::append_faults::{AppendFaultStats, AppendFaults, OldTermMajority};
use crate::applied_state::AppliedState;
use crate::history::{Op, Outcome};
use crate::observe::{ObservedNetwork, ObservedStorage};
use crate::state_machine::LogStateMachine;
use crate::stats::HarnessStats;

use crate::observe::PowerSwitch;
use crate::world::{lock, Shared, World};
use raft_net_mock::Router;

mod membership;
mod reads;

/// How often the harness polls while it waits for a condition (virtual time).
const POLL: Duration = Duration::from_millis(10);

/// Checks `check` every `every` until it gives a value, or gives up (`None`) once `timeout` has
/// passed: the one polling loop behind the harness's waits.
async fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Options of a harness [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes; their ids are `1..=nodes`, all voters.
    pub nodes: u64,
    /// The seed every random choice derives from: the router's faults and each node's election
    /// timeouts (the `seed` of `config` is replaced by one derived from this and the incarnation).
    pub seed: u64,
    /// The nodes' configuration.
    pub config: Config,
    /// How long a client waits for the answer to one attempt of a write before it gives up (the
    /// outcome is then unknown).
    pub attempt_timeout: Duration,
    /// How long [`Client::write`] keeps looking for a leader (retrying on `NotLeader`).
    pub write_deadline: Duration,
    /// Virtual time every storage write takes (zero by default). Above zero, a crash can land in the
    /// middle of the driver's work (between persisting and sending, say), which exercises the
    /// driver's ordering rules.
    pub storage_latency: Duration,
    /// The probability (0 to 1; 0 by default) that an AppendEntries carrying entries leaves with them
    /// cut to a random shorter prefix, possibly none: a leader's older entries then reach followers
    /// without its own, as in figure 8 of the Raft paper. The follower's answer names what it matches;
    /// the next AppendEntries from that leader to that follower then fails as unreachable, so the
    /// leader probes again from the match and sends the rest (an engine pipelining to the follower
    /// would otherwise take the cut entries for still in flight). The draws come from an RNG of their
    /// own, used only while the probability is above zero, so a cluster without truncation replays as
    /// it always did. Changed while the cluster runs with [`Cluster::set_append_truncation`].
    pub append_truncation: f64,
    /// The command that replays a failing run, printed with every failure. `{seed}` is replaced by
    /// the seed. Defaults to the simulation test's.
    pub replay: String,
    /// Whether a node whose disk lost entries ([`Cluster::restart_with_lost_tail`]) reports the loss
    /// at every start until it is back in step ([`Cluster::recovering_from_disk_faults`]; `true`, the
    /// default), or only at the start right after the loss (`false`). A node that lost entries must
    /// not vote until it holds them again; if it restarts before that and its storage no longer
    /// reports the loss, it votes as if it had never lost anything. `false` models a storage that
    /// reports a cut only at the open that made it, to show what that costs.
    pub disk_loss_until_caught_up: bool,
}

impl ClusterOptions {
    /// Options for `nodes` nodes with `seed`, the default [`Config`] and client timeouts of 2 s per
    /// attempt and 5 s to find a leader.
    pub fn new(nodes: u64, seed: u64) -> Self {
        ClusterOptions {
            nodes,
            seed,
            config: Config::default(),
            attempt_timeout: Duration::from_secs(2),
            write_deadline: Duration::from_secs(5),
            storage_latency: Duration::ZERO,
            append_truncation: 0.0,
            replay: "SEED={seed} cargo test -p lucid-raft-sim --test simulation -- --nocapture"
                .to_string(),
            disk_loss_until_caught_up: true,
        }
    }

    /// Replaces the nodes' configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the virtual time every storage write takes.
    pub fn storage_latency(mut self, latency: Duration) -> Self {
        self.storage_latency = latency;
        self
    }

    /// Sets the probability that an AppendEntries is truncated (see
    /// [`append_truncation`](Self::append_truncation)).
    pub fn append_truncation(mut self, prob: f64) -> Self {
        self.append_truncation = prob;
        self
    }

    /// Sets whether a disk loss is reported at every start until the node is back in step (see
    /// [`disk_loss_until_caught_up`](Self::disk_loss_until_caught_up)).
    pub fn disk_loss_until_caught_up(mut self, until_caught_up: bool) -> Self {
        self.disk_loss_until_caught_up = until_caught_up;
        self
    }

    /// Replaces the replay command (`{seed}` is replaced by the seed).
    pub fn replay(mut self, command: impl Into<String>) -> Self {
        self.replay = command.into();
        self
    }
}

/// A safety property or an expectation of the harness did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// Why a client write did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// No node took the write before the deadline: every attempt was answered `NotLeader`, or no
    /// leader was found, or the node written to is down. Nothing was proposed.
    NotProposed {
        /// The last `NotLeader` hint, if any.
        leader_hint: Option<NodeId>,
    },
    /// The node took the write but did not acknowledge it: `OutcomeUnknown` or `Stopped`. It may or
    /// may not commit.
    Unknown(ClientWriteError),
    /// No answer within the attempt timeout. It may or may not commit.
    Timeout,
}

impl WriteError {
    /// Whether the write may still have been (or be) committed.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, WriteError::NotProposed { .. })
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NotProposed { leader_hint } => {
                write!(
                    f,
                    "not proposed: no leader took the write (hint {leader_hint:?})"
                )
            }
            WriteError::Unknown(e) => write!(f, "outcome unknown: {e}"),
            WriteError::Timeout => f.write_str("outcome unknown: no answer in time"),
        }
    }
}

impl std::error::Error for WriteError {}

/// InstallSnapshot requests (chunks) to one node, from [`Cluster::snapshot_traffic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotTraffic {
    /// Requests leaders sent it (as their networks saw them leave).
    pub sent: u64,
    /// Requests the router handed to it, both copies of a duplicated one included; fewer than `sent`
    /// when some were lost or refused.
    pub delivered: u64,
    /// Requests whose answer came back to the leader.
    pub answered: u64,
    /// Answers `Installed` (the follower holds the snapshot's last entry durably).
    pub installed: u64,
}

/// A live node of the cluster.
struct Slot {
    raft: Raft<LogStateMachine>,
    power: PowerSwitch,
}

type Factory<S> = Box<dyn FnMut(NodeId) -> S + Send>;

/// A simulated cluster: nodes `1..=n` on one [`Router`], each with an observed storage from a factory,
/// an observed network and a [`LogStateMachine`]. See the [crate docs](crate).
///
/// Run it on tokio's current-thread runtime with paused time (`#[tokio::test(start_paused = true)]`):
/// every wait is then virtual, and a run replays exactly from its seed.
pub struct Cluster<S> {
    opts: ClusterOptions,
    /// The nodes started with the cluster, `1..=opts.nodes`: the voters [`initialize`](Self::initialize)
    /// names.
    initial: Vec<NodeId>,
    /// Every node ever started: the initial ones, and those started later to join
    /// ([`start_new_node`](Self::start_new_node)), retired ones included.
    started: Mutex<BTreeSet<NodeId>>,
    router: Router<LogStateMachine>,
    world: Shared,
    append_faults: Arc<AppendFaults>,
    factory: Mutex<Factory<S>>,
    nodes: Mutex<BTreeMap<NodeId, Slot>>,
}

impl<S> fmt::Debug for Cluster<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("seed", &self.opts.seed)
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

impl Cluster<MemStorage<u64>> {
    /// Starts (but does not initialize) `nodes` nodes on [`MemStorage`], with `seed` and `config`.
    pub async fn new(nodes: u64, seed: u64, config: Config) -> Self {
        Self::with_options(ClusterOptions::new(nodes, seed).config(config)).await
    }

    /// Starts (but does not initialize) a cluster on [`MemStorage`] with `opts`.
    pub async fn with_options(opts: ClusterOptions) -> Self {
        let mut handles = BTreeMap::new();
        Cluster::start_with(opts, move |id| {
            handles
                .entry(id)
                .or_insert_with(|| MemStorage::<u64>::new().handle())
                .open()
        })
        .await
    }
}

impl<S: RaftStorage<u64>> Cluster<S> {
    /// Starts (but does not initialize) a cluster whose storages come from `open`: it is called with a
    /// node's id when the node starts, and again at every restart, where it must return a storage over
    /// the same durable state (a reopened file storage, or a [`MemStorage`] reopened from its handle).
    pub async fn start_with(
        opts: ClusterOptions,
        open: impl FnMut(NodeId) -> S + Send + 'static,
    ) -> Self {
        let ids: Vec<NodeId> = (1..=opts.nodes).collect();
        let world = World::new(
            opts.seed,
            opts.replay.replace("{seed}", &opts.seed.to_string()),
            ids.iter().copied().collect(),
        );
        let cluster = Cluster {
            router: Router::new(opts.seed),
            world: Arc::new(Mutex::new(world)),
            append_faults: Arc::new(AppendFaults::new(
                opts.nodes,
                opts.seed,
                opts.append_truncation,
            )),
            factory: Mutex::new(Box::new(open)),
            nodes: Mutex::new(BTreeMap::new()),
            started: Mutex::new(ids.iter().copied().collect()),
            initial: ids,
            opts,
        };
        for id in cluster.initial.clone() {
            cluster.start_node(id).await;
        }
        cluster
    }

    async fn start_node(&self, id: NodeId) {
        let storage = self.open_storage(id);
        let lost_entries =
            lock(&self.world).on_plain_restart(id, self.opts.disk_loss_until_caught_up);
        self.start_on(id, storage, lost_entries).await;
    }

    /// Node `id`'s storage, (re)opened by the factory.
    fn open_storage(&self, id: NodeId) -> S {
        let mut open = self.factory.lock().unwrap_or_else(|p| p.into_inner());
        open(id)
    }

    /// Starts node `id` on `storage`; `lost_entries`: the storage reports that it lost entries.
    async fn start_on(&self, id: NodeId, mut storage: S, lost_entries: bool) {
        // Read what the storage holds, as the node is about to, and hand it to the checks.
        let read = async {
            let hard_state = storage.hard_state().await?;
            let log = storage.log_state().await?;
            let entries = storage
                .entries(log.last_purged.index + 1, log.last_log_id.index + 1)
                .await?;
            let snapshot = storage.snapshot().await?;
            Ok::<_, raft_core::StorageError>((hard_state, log.last_purged, entries, snapshot))
        };
        let (hard_state, base, entries, snapshot) = match read.await {
            Ok(state) => state,
            Err(e) => self.fail(&format!("node {id}: could not read its storage: {e}")),
        };
        let incarnation = {
            let mut w = lock(&self.world);
            w.on_open(id, hard_state, base, entries, snapshot);
            w.record.nodes[&id].incarnation
        };
        let power = PowerSwitch::default();
        let storage = ObservedStorage::new(
            storage,
            id,
            Arc::clone(&self.world),
            power.clone(),
            self.opts.storage_latency,
            lost_entries,
        );
        let network = ObservedNetwork::new(
            self.router.network(id),
            id,
            Arc::clone(&self.world),
            power.clone(),
            Arc::clone(&self.append_faults),
        );
        let state_machine = LogStateMachine::new(id, incarnation, Arc::clone(&self.world));
        let mut config = self.opts.config.clone();
        config.seed = mix(self.opts.seed, u64::from(incarnation));
        let raft = match Raft::start(id, config, storage, network, state_machine).await {
            Ok(raft) => raft,
            Err(e) => self.fail(&format!("node {id} failed to start: {e}")),
        };
        self.router.register(id, raft.clone());
        tokio::spawn(watch_metrics(id, raft.metrics(), Arc::clone(&self.world)));
        self.slots().insert(id, Slot { raft, power });
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<NodeId, Slot>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- membership and access -----

    /// Initializes the cluster with the initial nodes (`1..=nodes`) as voters, on each of them that
    /// runs. Nodes started later ([`start_new_node`](Self::start_new_node)) are left empty: they
    /// join through a membership change.
    pub async fn initialize(&self) {
        let voters = self.initial.clone();
        let rafts: Vec<_> = voters.iter().filter_map(|&id| self.raft(id)).collect();
        for raft in rafts {
            if let Err(e) = raft.initialize(voters.iter().copied()).await {
                self.fail(&format!("node {} refused to initialize: {e}", raft.id()));
            }
        }
    }

    /// The seed of this cluster.
    pub fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// The ids of the cluster's nodes, live or not: every node started (the initial ones and those
    /// started later to join), except those [retired](Self::retire).
    pub fn ids(&self) -> Vec<NodeId> {
        let retired = lock(&self.world).record.retired.clone();
        self.started_ids()
            .into_iter()
            .filter(|id| !retired.contains(id))
            .collect()
    }

    /// Every node ever started, retired ones included.
    pub fn started_ids(&self) -> Vec<NodeId> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Whether node `id` is one of [`ids`](Self::ids): started, and not retired.
    fn is_known(&self, id: NodeId) -> bool {
        self.ids().contains(&id)
    }

    /// The ids of the running nodes.
    pub fn live_ids(&self) -> Vec<NodeId> {
        self.slots().keys().copied().collect()
    }

    /// The router, to partition, isolate, heal and set faults.
    pub fn router(&self) -> &Router<LogStateMachine> {
        &self.router
    }

    /// The handle of node `id`, if it runs.
    pub fn raft(&self, id: NodeId) -> Option<Raft<LogStateMachine>> {
        self.slots().get(&id).map(|s| s.raft.clone())
    }

    fn rafts(&self) -> Vec<Raft<LogStateMachine>> {
        self.slots().values().map(|s| s.raft.clone()).collect()
    }

    /// The current metrics of node `id`, if it runs.
    pub fn metrics(&self, id: NodeId) -> Option<Metrics> {
        self.raft(id).map(|r| r.metrics().borrow().clone())
    }

    /// The current metrics of every running node.
    pub fn all_metrics(&self) -> BTreeMap<NodeId, Metrics> {
        self.rafts()
            .into_iter()
            .map(|r| (r.id(), r.metrics().borrow().clone()))
            .collect()
    }

    /// The running nodes that say they are leader, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.all_metrics()
            .into_iter()
            .filter(|(_, m)| m.role == Role::Leader && m.status == NodeStatus::Running)
            .map(|(id, m)| (id, m.current_term))
            .collect()
    }

    /// The running node that says it is leader in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|&(id, term)| (term, std::cmp::Reverse(id)))
            .map(|(id, _)| id)
    }

    /// Waits until some running node is leader, and returns it. Fails the test after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> NodeId {
        match self.try_wait_for_leader(timeout).await {
            Some(id) => id,
            None => self.fail(&format!(
                "no leader within {timeout:?}; metrics: {}",
                self.describe()
            )),
        }
    }

    /// Waits until some running node is leader, and returns it; `None` after `timeout`.
    pub async fn try_wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        poll_until(timeout, POLL, || self.leader()).await
    }

    /// The log node `id`'s storage holds durably (as of its last acknowledged write; kept while the
    /// node is down): the entries after its compaction point ([`durable_base`](Self::durable_base)).
    pub fn durable_log(&self, id: NodeId) -> Vec<Entry<u64>> {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .map(|o| o.log.clone())
            .unwrap_or_default()
    }

    /// Node `id`'s durable compaction point: the last entry purged from its log, or the last entry of
    /// the snapshot that replaced its log (the default id if none).
    pub fn durable_base(&self, id: NodeId) -> LogId {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .map(|o| o.base)
            .unwrap_or_default()
    }

    /// Node `id`'s durable hard state (term and vote; kept while the node is down; the default for a
    /// node never started).
    pub fn durable_hard_state(&self, id: NodeId) -> raft_core::HardState {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .map(|o| o.hard_state)
            .unwrap_or_default()
    }

    /// Every durable vote seen, in every term: term -> voter -> the candidates it voted for (one,
    /// unless something is wrong).
    pub fn all_durable_votes(&self) -> BTreeMap<Term, BTreeMap<NodeId, BTreeSet<NodeId>>> {
        lock(&self.world).record.votes.clone()
    }

    /// What node `id`'s durable snapshot covers, if it has one.
    pub fn durable_snapshot(&self, id: NodeId) -> Option<SnapshotMeta> {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .and_then(|o| o.snapshot.as_ref().map(|s| s.meta.clone()))
    }

    /// Every entry each incarnation of node `id`'s state machine applied, in order (entries a restored
    /// snapshot brought are not in it; see [`restores`](Self::restores)).
    pub fn applied(&self, id: NodeId) -> Vec<Vec<(LogId, EntryPayload<u64>)>> {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .map(|o| o.sms.iter().map(|sm| sm.applied.clone()).collect())
            .unwrap_or_default()
    }

    /// The snapshots each incarnation of node `id`'s state machine restored: the snapshot's last log id,
    /// and how many entries that incarnation had applied before.
    pub fn restores(&self, id: NodeId) -> Vec<Vec<(usize, LogId)>> {
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .map(|o| o.sms.iter().map(|sm| sm.restores.clone()).collect())
            .unwrap_or_default()
    }

    /// The state of node `id`'s current state machine (last applied id and digest), if it runs. Equal
    /// states mean identical state machines: assert that all nodes' are equal to check they converged.
    pub fn state_machine(&self, id: NodeId) -> Option<AppliedState> {
        if !self.slots().contains_key(&id) {
            return None;
        }
        lock(&self.world)
            .record
            .nodes
            .get(&id)
            .and_then(|o| o.current_sm().map(|sm| sm.state.clone()))
    }

    /// The InstallSnapshot traffic to node `target` so far, from every leader.
    pub fn snapshot_traffic(&self, target: NodeId) -> SnapshotTraffic {
        let w = lock(&self.world);
        let sum = |m: &BTreeMap<(NodeId, NodeId), u64>| {
            m.iter()
                .filter(|((_, to), _)| *to == target)
                .map(|(_, n)| n)
                .sum()
        };
        SnapshotTraffic {
            sent: sum(&w.stats.snapshot_chunks_sent),
            delivered: self.router.snapshot_chunks_delivered(target),
            answered: sum(&w.stats.snapshot_chunks_answered),
            installed: sum(&w.stats.snapshots_installed),
        }
    }

    /// The client history so far, ordered by value.
    pub fn history(&self) -> Vec<Op> {
        lock(&self.world)
            .record
            .history
            .ops
            .values()
            .cloned()
            .collect()
    }

    /// Every read without a log entry so far ([`Client::read_on`]), in invocation order.
    pub fn read_history(&self) -> Vec<crate::ReadOp> {
        lock(&self.world).record.history.reads.clone()
    }

    /// The terms in which some node was seen leader, with the leaders seen.
    pub fn observed_leaders(&self) -> BTreeMap<Term, BTreeSet<NodeId>> {
        lock(&self.world).record.leaders.clone()
    }

    /// Counters of what the harness saw.
    pub fn stats(&self) -> HarnessStats {
        lock(&self.world).stats.clone()
    }

    /// A client that writes through whichever node leads. Cheap to clone; hand one to each task.
    pub fn client(&self) -> Client {
        Client {
            router: self.router.clone(),
            world: Arc::clone(&self.world),
            attempt_timeout: self.opts.attempt_timeout,
            write_deadline: self.opts.write_deadline,
        }
    }

    /// Writes `count` fresh values through the leader from `clients` concurrent clients (each writes
    /// its share one after the other, so proposals batch up as they would under load).
    ///
    /// # Errors
    /// The first write that failed, with its error.
    pub async fn write_concurrently(&self, count: u64, clients: u64) -> Result<(), Violation> {
        let clients = clients.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..clients {
            let client = self.client();
            let share = count / clients + u64::from(k < count % clients);
            tasks.spawn(async move {
                for _ in 0..share {
                    let v = client.next_value();
                    if let Err(e) = client.write(v).await {
                        return Err(Violation(format!("write of {v} failed: {e}")));
                    }
                }
                Ok(())
            });
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            let outcome =
                done.unwrap_or_else(|e| Err(Violation(format!("client task failed: {e}"))));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }

    /// Writes `value` through the leader, retrying on `NotLeader` (see [`Client::write`]).
    ///
    /// # Errors
    /// See [`WriteError`].
    pub async fn client_write_any(
        &self,
        value: u64,
    ) -> Result<ClientWriteResponse<LogIndex>, WriteError> {
        self.client().write(value).await
    }

    // ----- faults -----

    /// Crashes node `id` (see the [crate docs](crate#crashes)). A no-op if it is down.
    pub async fn crash(&self, id: NodeId) {
        // Whether it is back in step after a disk fault is judged while it still runs.
        self.recovering_from_disk_faults();
        let slot = self.slots().remove(&id);
        let Some(slot) = slot else {
            return;
        };
        slot.power.cut();
        self.router.unregister(id);
        slot.raft.shutdown().await;
        lock(&self.world).on_crash(id);
    }

    /// Sets the probability that an AppendEntries is truncated from now on (see
    /// [`ClusterOptions::append_truncation`]); 0 stops truncating.
    pub fn set_append_truncation(&self, prob: f64) {
        self.append_faults.set_truncation(prob);
    }

    /// Counters of the AppendEntries faults: truncations, and old-term majorities seen.
    pub fn append_fault_stats(&self) -> AppendFaultStats {
        self.append_faults.stats()
    }

    /// Every moment so far at which a leader learned that a majority holds an entry of an older term
    /// without any of its own (see [`wait_old_term_majority`](Self::wait_old_term_majority)), in order.
    pub fn old_term_majorities(&self) -> Vec<OldTermMajority> {
        self.append_faults.majorities()
    }

    /// Waits (up to `timeout`) for the next moment a leader learns that a majority, itself included,
    /// holds an entry of an older term while the followers counted hold nothing of its own term, and
    /// returns it; `None` if none comes in time. This is the moment of figure 8 of the Raft paper: a
    /// fault schedule crashes or isolates that leader right after (immediately, or once it had time to
    /// commit and apply), and the followers may then elect a leader whose log lacks the entry.
    ///
    /// The waiter wakes at the virtual instant the answer reaches the leader's network, before the
    /// leader's engine handles it.
    pub async fn wait_old_term_majority(&self, timeout: Duration) -> Option<OldTermMajority> {
        let mut next = self.append_faults.subscribe();
        match tokio::time::timeout(timeout, next.changed()).await {
            Ok(Ok(())) => *next.borrow_and_update(),
            _ => None,
        }
    }

    /// Restarts node `id` from its durable storage, with a new state machine. A no-op if it runs.
    pub async fn restart(&self, id: NodeId) {
        if self.slots().contains_key(&id) || !self.is_known(id) {
            return;
        }
        lock(&self.world).stats.restarts += 1;
        self.start_node(id).await;
    }

    /// Restarts node `id` as if its disk had lost the last `entries` entries of its durable log (writes
    /// it had acknowledged), and its storage knew: it reports the loss
    /// ([`lost_entries_on_open`](RaftStorage::lost_entries_on_open)), as a storage that cut a damaged
    /// end of its log does, so the node comes back catching up (no vote, no campaign until its log
    /// holds its leader's commit index). Returns how many entries were lost; a no-op (0) if the node
    /// runs.
    ///
    /// The loss stops above the storage's snapshot and compaction point: a log that ends below its
    /// snapshot is another fault (a storage refuses it, or discards the log). If nothing is left to
    /// lose, this is a plain [`restart`](Self::restart), and the storage reports no loss.
    ///
    /// The record keeps what the node lost, and the checks allow for it (see
    /// `invariants::durability`); the node is among
    /// [`recovering_from_disk_faults`](Self::recovering_from_disk_faults) until it is back in step. The
    /// caller must not make the disks lose the last copy of a committed entry (that is reported as a
    /// violation): one faulty disk at a time is always survivable.
    pub async fn restart_with_lost_tail(&self, id: NodeId, entries: u64) -> u64 {
        if self.slots().contains_key(&id) || !self.is_known(id) {
            return 0;
        }
        let mut storage = self.open_storage(id);
        let read = async {
            let log = storage.log_state().await?;
            let snapshot = storage.snapshot().await?;
            Ok::<_, raft_core::StorageError>((log, snapshot.map(|s| s.meta.last_log_id)))
        };
        let (log, snapshot) = match read.await {
            Ok(state) => state,
            Err(e) => self.fail(&format!("node {id}: could not read its storage: {e}")),
        };
        let floor = log.last_purged.index.max(snapshot.map_or(0, |s| s.index));
        let last = log.last_log_id.index;
        let from = last
            .saturating_sub(entries)
            .saturating_add(1)
            .max(floor + 1);
        let lost = (last + 1).saturating_sub(from);
        if lost > 0 {
            // The fault itself: behind the node's back (the observed storage is not on yet).
            if let Err(e) = storage.truncate(from).await {
                self.fail(&format!(
                    "node {id}: could not cut its log from {from} to simulate a disk fault: {e}"
                ));
            }
            lock(&self.world).on_tail_lost(id, from);
        }
        let report =
            lost > 0 || lock(&self.world).on_plain_restart(id, self.opts.disk_loss_until_caught_up);
        lock(&self.world).stats.restarts += 1;
        self.start_on(id, storage, report).await;
        lost
    }

    /// The nodes whose disk lost entries ([`restart_with_lost_tail`](Self::restart_with_lost_tail))
    /// and that are not back in step yet. A node is back once
    /// * it has caught up by the engine's rule: the harness saw it answer, in the incarnation that
    ///   runs now, an AppendEntries with success up to at least the leader's commit index, an entry of
    ///   the leader's term (so it votes again), and
    /// * it runs, its commit index has reached the last index it lost (so it holds, from a leader,
    ///   every committed entry it lost), and its durable log ends where its engine's does (what it
    ///   holds is on its disk again).
    ///
    /// Until then, another disk fault could destroy the last copy of an entry that node lost, or
    /// leave too few voters to elect anyone: a schedule that wants every fault survivable waits for
    /// this to be empty.
    pub fn recovering_from_disk_faults(&self) -> Vec<NodeId> {
        let metrics = self.all_metrics();
        let mut w = lock(&self.world);
        let World {
            record,
            disk_faults,
            ..
        } = &mut *w;
        disk_faults.retain(|id, fault| {
            let back = fault.caught_up
                && metrics.get(id).is_some_and(|m| {
                    m.status == NodeStatus::Running
                        && m.commit_index >= fault.last_lost
                        && record
                            .nodes
                            .get(id)
                            .is_some_and(|o| o.last_log_id() == m.last_log_id)
                });
            !back
        });
        disk_faults.keys().copied().collect()
    }

    /// Crashes every running node (one after the other, with no time passing in between).
    pub async fn crash_all(&self) {
        for id in self.live_ids() {
            self.crash(id).await;
        }
    }

    /// Restarts every node that is down.
    pub async fn restart_all(&self) {
        for id in self.ids() {
            self.restart(id).await;
        }
    }

    // ----- waiting -----

    /// Waits until the cluster has converged: a leader, and every running node in its term, knowing it,
    /// with the same last log id, everything committed and applied (`last_applied == commit_index ==`
    /// the leader's last index), and the same durable log. Returns the leader.
    ///
    /// # Errors
    /// A description of every node's state if `timeout` passes first.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<NodeId, Violation> {
        poll_until(timeout, POLL, || self.converged())
            .await
            .ok_or_else(|| {
                Violation(format!(
                    "the cluster did not converge within {timeout:?}: {}",
                    self.describe()
                ))
            })
    }

    /// Waits until node `id` runs and its state machine has applied `index`.
    ///
    /// # Errors
    /// A description of every node's state if `timeout` passes first.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<(), Violation> {
        let applied = || {
            self.metrics(id)
                .is_some_and(|m| m.last_applied >= index)
                .then_some(())
        };
        poll_until(timeout, POLL, applied).await.ok_or_else(|| {
            Violation(format!(
                "node {id} did not apply index {index} within {timeout:?}: {}",
                self.describe()
            ))
        })
    }

    /// Waits until the router has handed `chunks` more InstallSnapshot requests to node `target` than
    /// it had when called: a snapshot transfer to it is under way (to change the leader or crash the
    /// follower in the middle of one, say). Both copies of a duplicated request count.
    ///
    /// # Errors
    /// A description of every node's state if `timeout` passes first.
    pub async fn wait_snapshot_chunks(
        &self,
        target: NodeId,
        chunks: u64,
        timeout: Duration,
    ) -> Result<(), Violation> {
        let goal = self.router.snapshot_chunks_delivered(target) + chunks;
        let reached = || (self.router.snapshot_chunks_delivered(target) >= goal).then_some(());
        // Polled every millisecond (not `POLL`): chunks can come that fast, and a test waits for a
        // transfer to be under way, not over.
        poll_until(timeout, Duration::from_millis(1), reached)
            .await
            .ok_or_else(|| {
                Violation(format!(
                    "node {target} did not receive {chunks} snapshot chunks within {timeout:?} (traffic {:?}): {}",
                    self.snapshot_traffic(target),
                    self.describe()
                ))
            })
    }

    fn converged(&self) -> Option<NodeId> {
        let metrics = self.all_metrics();
        let leader = self.leader()?;
        let lm = metrics.get(&leader)?;
        let target = lm.last_log_id;
        let all_agree = metrics.values().all(|m| {
            m.status == NodeStatus::Running
                && m.current_term == lm.current_term
                && m.current_leader == Some(leader)
                && m.last_log_id == target
                && m.commit_index == target.index
                && m.last_applied == target.index
        });
        if !all_agree {
            return None;
        }
        let w = lock(&self.world);
        let durable_agree = metrics.keys().all(|id| {
            w.record
                .nodes
                .get(id)
                .is_some_and(|o| o.last_log_id() == target)
        });
        durable_agree.then_some(leader)
    }

    /// One line per node: role, term, leader, last log id, commit and applied indexes.
    pub fn describe(&self) -> String {
        let metrics = self.all_metrics();
        let started = self.started_ids();
        let w = lock(&self.world);
        let mut out = String::new();
        for id in &started {
            let durable = w
                .record
                .nodes
                .get(id)
                .map(|o| {
                    format!(
                        "durable {:?} base {} last {} snapshot {:?}",
                        o.hard_state,
                        o.base,
                        o.last_log_id(),
                        o.snapshot_id()
                    )
                })
                .unwrap_or_default();
            match metrics.get(id) {
                Some(m) => out.push_str(&format!(
                    "\n  node {id}: {:?} term {} leader {:?} last {} commit {} applied {} snapshot {} entries {} \
                     membership {} at {} | {durable}",
                    m.role,
                    m.current_term,
                    m.current_leader,
                    m.last_log_id,
                    m.commit_index,
                    m.last_applied,
                    m.snapshot,
                    m.log_entries,
                    m.membership,
                    m.membership_index
                )),
                None if w.record.retired.contains(id) => {
                    out.push_str(&format!("\n  node {id}: retired | {durable}"))
                }
                None => out.push_str(&format!("\n  node {id}: down | {durable}")),
            }
        }
        out
    }

    // ----- checks -----

    /// Samples every running node's metrics (leaders), then checks everything that must hold at any
    /// moment: the violations recorded so far, Election Safety, Log Matching between all durable logs,
    /// State Machine Safety, and the client history (acknowledged writes committed where acknowledged,
    /// linearizable order).
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_safety(&self) -> Result<(), Violation> {
        for (id, term) in self.leaders() {
            lock(&self.world).observe_leader(id, term);
        }
        let w = lock(&self.world);
        if let Some(v) = w.violations.first() {
            let more = w.violations.len() - 1;
            return Err(Violation(if more > 0 {
                format!("{v}\n  (and {more} more: {:#?})", &w.violations[1..])
            } else {
                v.clone()
            }));
        }
        w.check().map_err(Violation)
    }

    /// [`check_safety`](Self::check_safety), failing the test (with the seed and the replay command)
    /// on a violation.
    pub fn assert_safe(&self) {
        if let Err(v) = self.check_safety() {
            self.fail(&v.0);
        }
    }

    /// The end-of-run check. Every node must be running. Waits (up to `timeout`) for convergence, then
    /// checks [`check_safety`](Self::check_safety) and, on top: all durable logs end at the same entry,
    /// agree on the entries they both still hold, and have the same whole prefix (compacted parts by
    /// their hashes); every committed entry is in all of them (compacted into a committed prefix counts);
    /// the current state machine of every node reflects exactly its log (same last entry, digest equal
    /// to the log's prefix hash); every acknowledged write is in every log at its acknowledged index.
    ///
    /// # Errors
    /// The first violation found.
    pub async fn check_final(&self, timeout: Duration) -> Result<(), Violation> {
        let down: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|id| !self.slots().contains_key(id))
            .collect();
        if !down.is_empty() {
            return Err(Violation(format!(
                "final check with nodes {down:?} down: restart them first"
            )));
        }
        self.check_safety()?;
        self.wait_converged(timeout).await?;
        self.check_safety()?;
        lock(&self.world).check_final().map_err(Violation)
    }

    /// [`check_final`](Self::check_final), failing the test (with the seed and the replay command) on a
    /// violation.
    pub async fn assert_final(&self, timeout: Duration) {
        if let Err(v) = self.check_final(timeout).await {
            self.fail(&v.0);
        }
    }

    /// Fails the test: panics with `msg`, the seed, the command that replays the run, and the state of
    /// every node.
    pub fn fail(&self, msg: &str) -> ! {
        let (seed, replay) = {
            let w = lock(&self.world);
            (w.seed, w.replay.clone())
        };
        panic!(
            "{msg}\n\nSEED={seed}\nreplay with: {replay}\ncluster:{}",
            self.describe()
        );
    }

    /// Shuts every running node down (gracefully; the durable state stays).
    pub async fn shutdown(&self) {
        let slots: Vec<Slot> = std::mem::take(&mut *self.slots()).into_values().collect();
        for slot in slots {
            self.router.unregister(slot.raft.id());
            slot.raft.shutdown().await;
        }
    }
}

/// A client of a harness cluster: writes unique values, reads without log entries (see
/// [`read_on`](Self::read_on)), and records every write and read in the cluster's history. Cheap to
/// clone.
///
/// On a network without delays a write takes no virtual time at all, so a task that writes in a loop
/// must pause between writes (`tokio::time::sleep`), or virtual time never advances past that instant.
#[derive(Clone)]
pub struct Client {
    router: Router<LogStateMachine>,
    world: Shared,
    attempt_timeout: Duration,
    write_deadline: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A value no client of this cluster has written (values count up from 1).
    pub fn next_value(&self) -> u64 {
        lock(&self.world).client_values.next()
    }

    /// Writes `value` through the leader: finds the running node that says it leads the highest
    /// term, retries on `NotLeader` (following the hint) until `write_deadline`, and gives up after one
    /// attempt whose outcome is unknown (a retry could apply the value twice).
    ///
    /// # Errors
    /// See [`WriteError`].
    pub async fn write(&self, value: u64) -> Result<ClientWriteResponse<LogIndex>, WriteError> {
        if !self.invoke(value) {
            return Err(WriteError::NotProposed { leader_hint: None });
        }
        let deadline = Instant::now() + self.write_deadline;
        let mut hint = None;
        loop {
            let target = hint
                .and_then(|h| self.router.node(h))
                .or_else(|| self.find_leader());
            if let Some(raft) = target {
                match self.attempt(&raft, value).await {
                    Err(WriteError::NotProposed { leader_hint }) => hint = leader_hint,
                    done => return done,
                }
            }
            if Instant::now() >= deadline {
                lock(&self.world).on_write_completed(value, Outcome::NotProposed);
                return Err(WriteError::NotProposed { leader_hint: hint });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes `value` to node `node` only, once (whether or not it leads).
    ///
    /// # Errors
    /// See [`WriteError`]; `NotProposed` if the node is down or not the leader.
    pub async fn write_to(
        &self,
        node: NodeId,
        value: u64,
    ) -> Result<ClientWriteResponse<LogIndex>, WriteError> {
        if !self.invoke(value) {
            return Err(WriteError::NotProposed { leader_hint: None });
        }
        let result = match self.router.node(node) {
            Some(raft) => self.attempt(&raft, value).await,
            None => Err(WriteError::NotProposed { leader_hint: None }),
        };
        if let Err(WriteError::NotProposed { .. }) = &result {
            lock(&self.world).on_write_completed(value, Outcome::NotProposed);
        }
        result
    }

    fn invoke(&self, value: u64) -> bool {
        lock(&self.world).on_write_invoked(value)
    }

    fn find_leader(&self) -> Option<Raft<LogStateMachine>> {
        self.router
            .node_ids()
            .into_iter()
            .filter_map(|id| self.router.node(id))
            .filter_map(|r| {
                let m = r.metrics().borrow().clone();
                (m.role == Role::Leader && m.status == NodeStatus::Running)
                    .then_some((m.current_term, r))
            })
            .max_by_key(|(term, r)| (*term, std::cmp::Reverse(r.id())))
            .map(|(_, r)| r)
    }

    /// One attempt at `raft`. Completes the history entry unless the answer is `NotLeader`.
    async fn attempt(
        &self,
        raft: &Raft<LogStateMachine>,
        value: u64,
    ) -> Result<ClientWriteResponse<LogIndex>, WriteError> {
        lock(&self.world).on_write_attempt(value, raft.id());
        let answer = tokio::time::timeout(self.attempt_timeout, raft.client_write(value)).await;
        let mut w = lock(&self.world);
        match answer {
            Ok(Ok(resp)) => {
                w.on_write_acknowledged(raft.id(), value, resp.log_id, resp.data);
                Ok(resp)
            }
            Ok(Err(ClientWriteError::NotLeader { leader_hint })) => {
                Err(WriteError::NotProposed { leader_hint })
            }
            Ok(Err(e)) => {
                w.on_write_completed(value, Outcome::Unknown(e.to_string()));
                Err(WriteError::Unknown(e))
            }
            Err(_) => {
                w.on_write_completed(value, Outcome::Unknown("no answer in time".into()));
                Err(WriteError::Timeout)
            }
        }
    }
}

/// Watches one node's metrics and reports every leadership it shows.
async fn watch_metrics(id: NodeId, mut rx: watch::Receiver<Metrics>, world: Shared) {
    loop {
        let (stopped, leading) = {
            let m = rx.borrow_and_update();
            (
                matches!(m.status, NodeStatus::Stopped(_)),
                (m.role == Role::Leader).then_some(m.current_term),
            )
        };
        if stopped {
            return;
        }
        if let Some(term) = leading {
            lock(&world).observe_leader(id, term);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// SplitMix64's increment (the 64-bit golden ratio) and its two finalizer multipliers (Steele, Lea
/// and Flood, "Fast splittable pseudorandom number generators", 2014).
const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const SPLITMIX_MUL_1: u64 = 0xBF58_476D_1CE4_E5B9;
const SPLITMIX_MUL_2: u64 = 0x94D0_49BB_1331_11EB;

/// SplitMix64 of `seed + n`: independent-looking seeds for each incarnation of the nodes.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(SPLITMIX_GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(SPLITMIX_MUL_1);
    z = (z ^ (z >> 27)).wrapping_mul(SPLITMIX_MUL_2);
    z ^ (z >> 31)
}
