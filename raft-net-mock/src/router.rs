//! The router: who is registered, who can talk to whom, and which faults apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{LogId, NodeId, Raft, StateMachine};

use crate::network::MockNetwork;

/// Message faults, applied independently to each request and each response.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost (the sender then sees no answer and times out).
    pub drop_prob: f64,
    /// Each message is delayed by a uniform random number of milliseconds in this inclusive range.
    pub delay_ms: (u64, u64),
    /// Probability that a request is delivered twice (the second copy's answer is discarded).
    pub duplicate_prob: f64,
    /// Probability that a message gets an extra delay of up to three times the maximum delay, so that
    /// later messages overtake it.
    pub reorder_prob: f64,
}

impl Default for Faults {
    /// No faults: instant, reliable delivery.
    fn default() -> Self {
        Faults {
            drop_prob: 0.0,
            delay_ms: (0, 0),
            duplicate_prob: 0.0,
            reorder_prob: 0.0,
        }
    }
}

/// The kinds of RPC the router carries; InstallSnapshot can have faults of its own
/// ([`Router::set_snapshot_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RpcKind {
    Vote,
    AppendEntries,
    InstallSnapshot,
}

/// Counts of what the router did, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Requests handed to a target node (first copies; see `duplicated`).
    pub delivered: u64,
    /// Messages (requests or responses) lost to `drop_prob`.
    pub dropped: u64,
    /// Requests refused because sender and target cannot talk (partition, isolation, crashed target).
    pub refused: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// InstallSnapshot requests (chunks) handed to a target node, second copies of duplicated ones
    /// included. Per target: [`Router::snapshot_chunks_delivered`].
    pub snapshot_chunks_delivered: u64,
}

pub(crate) struct RouterState<SM: StateMachine> {
    pub(crate) nodes: BTreeMap<NodeId, Raft<SM>>,
    pub(crate) rng: fastrand::Rng,
    faults: Faults,
    /// Faults of InstallSnapshot messages, if they differ from `faults`.
    snapshot_faults: Option<Faults>,
    /// Partition group of each node; nodes absent from the map are in group 0.
    groups: BTreeMap<NodeId, usize>,
    isolated: BTreeSet<NodeId>,
    pub(crate) stats: RouterStats,
    /// `(snapshot, offset)` of every InstallSnapshot request handed to each target, in order of
    /// arrival, second copies of duplicated ones included.
    snapshot_arrivals: BTreeMap<NodeId, Vec<(LogId, u64)>>,
}

impl<SM: StateMachine> RouterState<SM> {
    pub(crate) fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        if self.isolated.contains(&a) || self.isolated.contains(&b) {
            return false;
        }
        self.groups.get(&a).copied().unwrap_or(0) == self.groups.get(&b).copied().unwrap_or(0)
    }

    /// The faults that apply to messages of `kind`.
    pub(crate) fn faults(&self, kind: RpcKind) -> Faults {
        match (kind, self.snapshot_faults) {
            (RpcKind::InstallSnapshot, Some(f)) => f,
            _ => self.faults,
        }
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    /// A delay for one message under `faults`: uniform in `delay_ms`, plus, with `reorder_prob`, an
    /// extra delay of up to three times the maximum.
    pub(crate) fn delay_ms(&mut self, faults: &Faults) -> u64 {
        let (lo, hi) = faults.delay_ms;
        let mut d = if hi > lo { self.rng.u64(lo..=hi) } else { lo };
        if self.chance(faults.reorder_prob) {
            d += self.rng.u64(0..=hi.max(1) * 3);
        }
        d
    }

    /// Counts one request of `kind` handed to its target (`copy`: the second copy of a duplicated one).
    pub(crate) fn count_delivery(&mut self, kind: RpcKind, copy: bool) {
        if copy {
            self.stats.duplicated += 1;
        } else {
            self.stats.delivered += 1;
        }
        if kind == RpcKind::InstallSnapshot {
            self.stats.snapshot_chunks_delivered += 1;
        }
    }

    /// Records that the chunk at `offset` of `snapshot` reached `target`.
    pub(crate) fn record_snapshot_arrival(&mut self, target: NodeId, snapshot: LogId, offset: u64) {
        self.snapshot_arrivals
            .entry(target)
            .or_default()
            .push((snapshot, offset));
    }
}

/// Connects the nodes of one simulated cluster. Cheap to clone; all clones share one state.
pub struct Router<SM: StateMachine> {
    pub(crate) state: Arc<Mutex<RouterState<SM>>>,
}

impl<SM: StateMachine> Clone for Router<SM> {
    fn clone(&self) -> Self {
        Router {
            state: Arc::clone(&self.state),
        }
    }
}

impl<SM: StateMachine> Router<SM> {
    /// A router with no nodes and no faults, whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Router {
            state: Arc::new(Mutex::new(RouterState {
                nodes: BTreeMap::new(),
                rng: fastrand::Rng::with_seed(seed),
                faults: Faults::default(),
                snapshot_faults: None,
                groups: BTreeMap::new(),
                isolated: BTreeSet::new(),
                stats: RouterStats::default(),
                snapshot_arrivals: BTreeMap::new(),
            })),
        }
    }

    /// The network node `id` sends through.
    pub fn network(&self, id: NodeId) -> MockNetwork<SM> {
        MockNetwork::new(id, self.clone())
    }

    /// Makes node `id` reachable at `raft` (a restarted node registers its new handle).
    ///
    /// The router keeps the handle, and the node's network keeps the router, so a registered node does
    /// not stop when the caller drops its handles: call [`Raft::shutdown`] (and [`unregister`](Self::unregister)).
    pub fn register(&self, id: NodeId, raft: Raft<SM>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable (it crashed); returns its handle if it was registered.
    pub fn unregister(&self, id: NodeId) -> Option<Raft<SM>> {
        self.lock().nodes.remove(&id)
    }

    /// The handle registered for `id`.
    pub fn node(&self, id: NodeId) -> Option<Raft<SM>> {
        self.lock().nodes.get(&id).cloned()
    }

    /// The registered node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.lock().nodes.keys().copied().collect()
    }

    /// Replaces the message faults (of InstallSnapshot messages too, unless they have their own:
    /// [`set_snapshot_faults`](Self::set_snapshot_faults)).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Gives InstallSnapshot requests and their answers faults of their own (`Some`), or makes them
    /// follow [`set_faults`](Self::set_faults) again (`None`, the default). With this, a test can lose,
    /// duplicate or reorder snapshot chunks while AppendEntries and votes flow normally.
    pub fn set_snapshot_faults(&self, faults: Option<Faults>) {
        self.lock().snapshot_faults = faults;
    }

    /// Splits the cluster: nodes talk only within their group. Nodes not listed form one more group.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut s = self.lock();
        s.groups.clear();
        for (i, group) in groups.iter().enumerate() {
            for &id in group.iter() {
                s.groups.insert(id, i + 1);
            }
        }
    }

    /// Cuts node `id` off from every other node (on top of any partition).
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Removes every partition and isolation. Message faults stay.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.groups.clear();
        s.isolated.clear();
    }

    /// Whether `a` and `b` can currently talk (ignoring random faults and crashes).
    pub fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        self.lock().can_talk(a, b)
    }

    /// Draws a number from the router's seeded generator in `range` (for test schedules that must
    /// replay with the seed).
    pub fn random(&self, range: std::ops::Range<u64>) -> u64 {
        self.lock().rng.u64(range)
    }

    /// Counts of what the router did so far.
    pub fn stats(&self) -> RouterStats {
        self.lock().stats
    }

    /// How many InstallSnapshot requests (chunks) the router handed to `target` so far, counting
    /// both copies of a duplicated one.
    pub fn snapshot_chunks_delivered(&self, target: NodeId) -> u64 {
        self.lock()
            .snapshot_arrivals
            .get(&target)
            .map_or(0, |a| a.len() as u64)
    }

    /// The `(snapshot last log id, offset)` of every InstallSnapshot request the router handed to
    /// `target`, in the order they arrived (both copies of a duplicated one): shows chunks arriving
    /// twice or out of order.
    pub fn snapshot_arrivals(&self, target: NodeId) -> Vec<(LogId, u64)> {
        self.lock()
            .snapshot_arrivals
            .get(&target)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RouterState<SM>> {
        // The state stays consistent under panics (each update is a single assignment).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
