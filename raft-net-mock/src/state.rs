//! The state a [`Router`](crate::Router) and the networks it hands out share: the registered nodes,
//! the links between them, the fault settings, the dice and the statistics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{NodeId, Raft, StateMachine};

use crate::envelope::RpcKind;
use crate::faults::{Dice, Faults, UnreachableMode};
use crate::links::Links;
use crate::stats::StatsBook;

/// Everything one simulated cluster's router knows. Accessed under the lock of [`SharedState`].
pub(crate) struct RouterState<SM: StateMachine> {
    pub(crate) nodes: BTreeMap<NodeId, Raft<SM>>,
    pub(crate) dice: Dice,
    pub(crate) faults: Faults,
    /// Faults of InstallSnapshot messages, if they differ from `faults`.
    pub(crate) snapshot_faults: Option<Faults>,
    pub(crate) unreachable_mode: UnreachableMode,
    /// Extra hold-back of every answer, inclusive range in milliseconds; `None`: off.
    pub(crate) reply_delay: Option<(u64, u64)>,
    pub(crate) links: Links,
    pub(crate) book: StatsBook,
}

impl<SM: StateMachine> RouterState<SM> {
    /// The faults that apply to messages of `kind`.
    pub(crate) fn faults(&self, kind: RpcKind) -> Faults {
        match (kind, self.snapshot_faults) {
            (RpcKind::InstallSnapshot, Some(f)) => f,
            _ => self.faults,
        }
    }

    /// Whether `target` is registered and `from` can talk to it.
    pub(crate) fn can_reach(&self, from: NodeId, target: NodeId) -> bool {
        self.nodes.contains_key(&target) && self.links.can_talk(from, target)
    }

    /// `target`'s handle, if `from` [can reach](Self::can_reach) it.
    pub(crate) fn reachable(&self, from: NodeId, target: NodeId) -> Option<Raft<SM>> {
        self.nodes
            .get(&target)
            .filter(|_| self.links.can_talk(from, target))
            .cloned()
    }

    /// How long a request or answer that cannot get through waits before it fails, under the
    /// unreachable mode (draws only in [`UnreachableMode::Hang`]).
    pub(crate) fn unreachable_wait_ms(&mut self) -> u64 {
        let mode = self.unreachable_mode;
        self.dice.unreachable_wait_ms(mode)
    }
}

/// The router's state behind one lock; cheap to clone, all clones share it.
pub(crate) struct SharedState<SM: StateMachine> {
    inner: Arc<Mutex<RouterState<SM>>>,
}

impl<SM: StateMachine> Clone for SharedState<SM> {
    fn clone(&self) -> Self {
        SharedState {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<SM: StateMachine> SharedState<SM> {
    /// No nodes, no faults, no cuts; every random choice derives from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SharedState {
            inner: Arc::new(Mutex::new(RouterState {
                nodes: BTreeMap::new(),
                dice: Dice::new(seed),
                faults: Faults::default(),
                snapshot_faults: None,
                unreachable_mode: UnreachableMode::default(),
                reply_delay: None,
                links: Links::default(),
                book: StatsBook::default(),
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RouterState<SM>> {
        // The state stays consistent under panics: no update spans a call that can panic halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
