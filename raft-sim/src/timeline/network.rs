//! The timeline's network: messages in flight, each delivered after a seeded random delay, and the
//! partitions that decide who can talk to whom.

use std::collections::BTreeMap;

use raft_core::{NodeId, Request, Response};

/// Keeps the network's delay generator apart from the engines' election generators, which are seeded
/// with the same seed.
const NETWORK_STREAM: u64 = 0x7E1E_11E0_5EED_0001;

/// A message in flight. Each side is named with its incarnation where it matters: a request dies
/// with the sender that sent it (its connection), an answer with the requester waiting for it.
pub(super) enum Msg {
    /// A request from incarnation `from_inc` of `from`.
    Request {
        from: NodeId,
        from_inc: u32,
        to: NodeId,
        req: Request<u64>,
    },
    /// The answer to a request incarnation `to_inc` of `to` sent.
    Response {
        from: NodeId,
        to: NodeId,
        to_inc: u32,
        resp: Response,
    },
}

/// Messages in flight, in delivery order, and the partitions.
pub(super) struct Network {
    delay_ms: (u64, u64),
    rng: fastrand::Rng,
    /// By (delivery time, sequence number): two messages due at the same time leave in the order
    /// they were sent.
    queue: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    /// The group of each node listed in a partition; nodes not listed share group 0.
    groups: BTreeMap<NodeId, usize>,
}

impl Network {
    /// No message in flight, no partition; each message takes a uniform random delay in `delay_ms`
    /// (inclusive), drawn from a generator seeded with `seed`.
    pub(super) fn new(seed: u64, delay_ms: (u64, u64)) -> Self {
        Network {
            delay_ms,
            rng: fastrand::Rng::with_seed(seed ^ NETWORK_STREAM),
            queue: BTreeMap::new(),
            seq: 0,
            groups: BTreeMap::new(),
        }
    }

    /// Sends `msg` at time `now`: it arrives after a random delay.
    pub(super) fn send(&mut self, now: u64, msg: Msg) {
        let (lo, hi) = self.delay_ms;
        let delay = if hi > lo { self.rng.u64(lo..=hi) } else { lo };
        self.seq += 1;
        self.queue.insert((now + delay, self.seq), msg);
    }

    /// When the next message arrives, if one is in flight.
    pub(super) fn next_arrival(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(at, _)| at)
    }

    /// Takes the next message to arrive, with its arrival time.
    pub(super) fn next_message(&mut self) -> Option<(u64, Msg)> {
        self.queue.pop_first().map(|((at, _), msg)| (at, msg))
    }

    /// Whether `a` and `b` are on the same side of every partition.
    pub(super) fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        self.groups.get(&a).copied().unwrap_or(0) == self.groups.get(&b).copied().unwrap_or(0)
    }

    /// Splits the network: nodes talk only within their group; unlisted nodes form one more group.
    pub(super) fn partition(&mut self, groups: &[&[NodeId]]) {
        self.groups.clear();
        for (i, g) in groups.iter().enumerate() {
            for &id in g.iter() {
                self.groups.insert(id, i + 1);
            }
        }
    }

    /// Whether `id` is in a group of the current partition (rather than among the unlisted nodes).
    pub(super) fn is_grouped(&self, id: NodeId) -> bool {
        self.groups.contains_key(&id)
    }

    /// Removes every partition.
    pub(super) fn heal(&mut self) {
        self.groups.clear();
    }
}
