//! The router: who is registered, who can talk to whom, which faults apply, and what went through.
//!
//! * **Links** (see [`Router::can_talk`]): [`partition`](Router::partition) and
//!   [`isolate`](Router::isolate), undone together by [`heal`](Router::heal); and, independent of
//!   them, [`disconnect`](Router::disconnect) / [`connect`](Router::connect) of one node, as MIT
//!   6.824's `labrpc` offers. A node that is not registered (crashed) cannot be reached either.
//! * **Unreachable targets** fail at once, or after a random wait
//!   ([`set_unreachable_mode`](Router::set_unreachable_mode)).
//! * **Faults** ([`set_faults`](Router::set_faults), [`set_snapshot_faults`](Router::set_snapshot_faults)):
//!   lost, delayed, duplicated and reordered messages; and a **reply delay**
//!   ([`set_reply_delay`](Router::set_reply_delay)) that holds back only answers, so that answers
//!   come back long after the answers to later requests.
//! * **Statistics**: totals ([`stats`](Router::stats)), counts per target ([`stats_for`](Router::stats_for)),
//!   and the order snapshot chunks arrived in ([`snapshot_arrivals`](Router::snapshot_arrivals)).
//!
//! Every random choice comes from one generator seeded by [`Router::new`]; settings that are off draw
//! nothing from it, so turning on a new setting never changes the runs of seeds that do not use it.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use raft_core::{LogId, NodeId, Raft, StateMachine};

use crate::faults::{Faults, UnreachableMode};
use crate::network::MockNetwork;
use crate::state::{RouterState, SharedState};
use crate::stats::{RouterStats, TargetStats};

/// Connects the nodes of one simulated cluster. Cheap to clone; all clones share one state.
pub struct Router<SM: StateMachine> {
    state: SharedState<SM>,
}

impl<SM: StateMachine> Clone for Router<SM> {
    fn clone(&self) -> Self {
        Router {
            state: self.state.clone(),
        }
    }
}

impl<SM: StateMachine> Router<SM> {
    /// A router with no nodes, no faults and no cuts, whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Router {
            state: SharedState::new(seed),
        }
    }

    /// The network node `id` sends through.
    pub fn network(&self, id: NodeId) -> MockNetwork<SM> {
        MockNetwork::new(id, self.state.clone())
    }

    /// Makes node `id` reachable at `raft` (a restarted node registers its new handle).
    ///
    /// The router keeps the handle, and the node's network keeps the router, so a registered node does
    /// not stop when the caller drops its handles: call [`Raft::shutdown`] (and [`unregister`](Self::unregister)).
    pub fn register(&self, id: NodeId, raft: Raft<SM>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable (it crashed); returns its handle if it was registered. Its links
    /// (partition group, isolation, disconnection) stay as they are for when it registers again.
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

    /// Chooses how requests to a node the sender cannot reach fail: at once
    /// ([`UnreachableMode::Refuse`], the default) or after a random wait drawn from the router's
    /// generator ([`UnreachableMode::Hang`]). Applies to requests refused when sent, and to requests
    /// and answers whose route is cut while they are in flight.
    pub fn set_unreachable_mode(&self, mode: UnreachableMode) {
        self.lock().unreachable_mode = mode;
    }

    /// The current [`UnreachableMode`].
    pub fn unreachable_mode(&self) -> UnreachableMode {
        self.lock().unreachable_mode
    }

    /// Holds back every answer (not the request: the target handles it on arrival) for a further
    /// uniform random number of milliseconds in the inclusive range `(min, max)`, on top of the
    /// faults' delay; `None` (the default) turns it off. Answers to requests sent close together then
    /// come back in random order, long after one another, as with `labrpc`'s long reordering.
    ///
    /// The sender waits for a held answer only as long as its own timeout; answers of the second
    /// copies of duplicated requests are never heard, and so are not held.
    pub fn set_reply_delay(&self, range_ms: Option<(u64, u64)>) {
        self.lock().reply_delay = range_ms;
    }

    /// The current reply delay range, if any ([`set_reply_delay`](Self::set_reply_delay)).
    pub fn reply_delay(&self) -> Option<(u64, u64)> {
        self.lock().reply_delay
    }

    /// Splits the cluster: nodes talk only within their group. Nodes not listed form one more group.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        self.lock().links.partition(groups);
    }

    /// Cuts node `id` off from every other node (on top of any partition), until [`heal`](Self::heal).
    pub fn isolate(&self, id: NodeId) {
        self.lock().links.isolate(id);
    }

    /// Removes every partition and isolation. Message faults stay, and so do disconnections
    /// ([`disconnect`](Self::disconnect) is undone only by [`connect`](Self::connect)).
    pub fn heal(&self) {
        self.lock().links.heal();
    }

    /// Disconnects node `id` from the network: it can neither send nor receive, while the others keep
    /// talking. Independent of partitions and isolation, and of registration: it lasts until
    /// [`connect`](Self::connect)`(id)`, through [`heal`](Self::heal), crashes and restarts.
    pub fn disconnect(&self, id: NodeId) {
        self.lock().links.disconnect(id);
    }

    /// Undoes [`disconnect`](Self::disconnect)`(id)`. A partition or isolation that cuts `id` off
    /// stays in force; a node that was never disconnected is unaffected.
    pub fn connect(&self, id: NodeId) {
        self.lock().links.connect(id);
    }

    /// Whether node `id` is connected, i.e. not [disconnected](Self::disconnect). Partitions,
    /// isolation and registration do not enter into it: [`can_talk`](Self::can_talk) gives the sum
    /// of all links.
    pub fn is_connected(&self, id: NodeId) -> bool {
        self.lock().links.is_connected(id)
    }

    /// Whether `a` and `b` can currently talk: neither is disconnected or isolated, and both are in
    /// the same partition group (random faults and crashes are not considered).
    pub fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        self.lock().links.can_talk(a, b)
    }

    /// Draws a number from the router's seeded generator in `range` (for test schedules that must
    /// replay with the seed).
    pub fn random(&self, range: std::ops::Range<u64>) -> u64 {
        self.lock().dice.u64(range)
    }

    /// Counts of what the router did since it was created or [reset](Self::reset_stats).
    pub fn stats(&self) -> RouterStats {
        self.lock().book.totals()
    }

    /// What the router carried towards node `target` since it was created or
    /// [reset](Self::reset_stats): requests sent and delivered by kind, log entries and snapshot
    /// bytes sent. All zero for a node nothing was sent to.
    pub fn stats_for(&self, target: NodeId) -> TargetStats {
        self.lock().book.target(target)
    }

    /// [`stats_for`](Self::stats_for) of every node something was sent to.
    pub fn target_stats(&self) -> BTreeMap<NodeId, TargetStats> {
        self.lock().book.targets()
    }

    /// Starts counting afresh: zeroes [`stats`](Self::stats) and every [`stats_for`](Self::stats_for),
    /// and forgets the [`snapshot_arrivals`](Self::snapshot_arrivals) (so that they keep agreeing
    /// with the counts). Nodes, links, faults and the generator are untouched.
    pub fn reset_stats(&self) {
        self.lock().book.reset();
    }

    /// How many InstallSnapshot requests (chunks) the router handed to `target` so far, counting
    /// both copies of a duplicated one.
    pub fn snapshot_chunks_delivered(&self, target: NodeId) -> u64 {
        self.lock().book.snapshot_arrivals(target).len() as u64
    }

    /// The `(snapshot last log id, offset)` of every InstallSnapshot request the router handed to
    /// `target`, in the order they arrived (both copies of a duplicated one): shows chunks arriving
    /// twice or out of order.
    pub fn snapshot_arrivals(&self, target: NodeId) -> Vec<(LogId, u64)> {
        self.lock().book.snapshot_arrivals(target).to_vec()
    }

    fn lock(&self) -> MutexGuard<'_, RouterState<SM>> {
        self.state.lock()
    }
}
