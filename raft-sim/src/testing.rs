//! Fixtures for the checkers' unit tests: a recorder with every checker, entries, and the states and
//! snapshots a `LogStateMachine` would report. Each checker's tests feed made-up observations through
//! the real recorder, so they exercise the hooks at the points the recorder calls them.

use raft_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, Membership, NodeId, Snapshot, SnapshotMeta,
    Term,
};

use crate::applied_state::AppliedState;
use crate::world::World;

/// A recorder of `n` nodes, each opened once with empty storage.
pub(crate) fn world(n: u64) -> World {
    let mut w = World::new(1, "replay".into(), (1..=n).collect());
    for id in 1..=n {
        w.on_open(id, HardState::default(), LogId::default(), Vec::new(), None);
    }
    w
}

/// A command entry.
pub(crate) fn cmd(term: Term, index: LogIndex, v: u64) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(v).into(),
    }
}

/// A leader's no-op entry.
pub(crate) fn blank(term: Term, index: LogIndex) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Blank.into(),
    }
}

/// The membership entry `initialize` writes for nodes 1, 2, 3.
pub(crate) fn membership() -> Entry<u64> {
    Entry {
        log_id: LogId::new(0, 1),
        payload: EntryPayload::Membership(Box::new(Membership::new([1, 2, 3]))).into(),
    }
}

/// Incarnation `inc` of node `id` applies `entries`, reporting the state a `LogStateMachine` would.
pub(crate) fn apply(w: &mut World, id: NodeId, inc: u32, entries: &[Entry<u64>]) {
    let mut state = w.record.nodes[&id].sms[inc as usize - 1].state.clone();
    for e in entries {
        state.apply(e);
    }
    w.on_apply(id, inc, entries, &state);
}

/// Whether a violation containing `what` was recorded.
pub(crate) fn has(w: &World, what: &str) -> bool {
    w.violations.iter().any(|v| v.contains(what))
}

/// The state of a `LogStateMachine` that applied `entries`.
pub(crate) fn state_of(entries: &[Entry<u64>]) -> AppliedState {
    let mut state = AppliedState::default();
    for e in entries {
        state.apply(e);
    }
    state
}

/// The snapshot a `LogStateMachine` that applied `entries` builds.
pub(crate) fn snapshot_of(entries: &[Entry<u64>]) -> Snapshot {
    let state = state_of(entries);
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: state.last,
            membership: Membership::new([1, 2, 3]),
        },
        data: state.encode(),
    }
}

/// Three nodes: 1 and 2 hold `entries` (membership first), all committed (applied by node 1); node
/// 3 holds only the membership.
pub(crate) fn committed_world(entries: &[Entry<u64>]) -> World {
    let mut w = world(3);
    for id in 1..=2 {
        w.on_append(id, entries);
    }
    w.on_append(3, &entries[..1]);
    apply(&mut w, 1, 1, entries);
    w
}

/// The membership and two commands of term 1.
pub(crate) fn three() -> Vec<Entry<u64>> {
    vec![membership(), cmd(1, 2, 5), cmd(1, 3, 6)]
}
