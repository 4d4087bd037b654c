//! Who can talk to whom: three independent ways of cutting nodes off, and their sum.
//!
//! * **Partition**: nodes talk only within their group.
//! * **Isolation**: an isolated node talks to nobody.
//! * **Disconnection**: a disconnected node talks to nobody.
//!
//! Two nodes can talk when none of the three cuts them apart. Isolation and disconnection cut the
//! same links, but are undone separately: `heal` removes partitions and isolation, `connect` removes
//! one node's disconnection. A test that drives nodes in and out with connect/disconnect (as ports of
//! MIT 6.824's tests do) can thus partition and heal on top without reconnecting a node it
//! disconnected, and the reverse.

use std::collections::{BTreeMap, BTreeSet};

use raft_core::NodeId;

/// The cuts in force. Nodes not mentioned anywhere are connected, in partition group 0.
#[derive(Debug, Default)]
pub(crate) struct Links {
    /// Partition group of each node; nodes absent from the map are in group 0.
    groups: BTreeMap<NodeId, usize>,
    isolated: BTreeSet<NodeId>,
    disconnected: BTreeSet<NodeId>,
}

impl Links {
    /// Replaces the partition: nodes of `groups[i]` form group `i + 1`; all others group 0.
    pub(crate) fn partition(&mut self, groups: &[&[NodeId]]) {
        self.groups.clear();
        for (i, group) in groups.iter().enumerate() {
            for &id in group.iter() {
                self.groups.insert(id, i + 1);
            }
        }
    }

    pub(crate) fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    /// Removes the partition and every isolation; disconnections stay.
    pub(crate) fn heal(&mut self) {
        self.groups.clear();
        self.isolated.clear();
    }

    pub(crate) fn disconnect(&mut self, id: NodeId) {
        self.disconnected.insert(id);
    }

    /// Undoes [`disconnect`](Self::disconnect) of `id`; partitions and isolation stay.
    pub(crate) fn connect(&mut self, id: NodeId) {
        self.disconnected.remove(&id);
    }

    pub(crate) fn is_connected(&self, id: NodeId) -> bool {
        !self.disconnected.contains(&id)
    }

    pub(crate) fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        let cut_off = |id| self.isolated.contains(&id) || self.disconnected.contains(&id);
        if cut_off(a) || cut_off(b) {
            return false;
        }
        self.group(a) == self.group(b)
    }

    fn group(&self, id: NodeId) -> usize {
        self.groups.get(&id).copied().unwrap_or(0)
    }
}
