//! The harness's own reading of a configuration: which sets of nodes form a quorum of it, and which
//! configuration a node's durable log puts in force. Written here, from the Raft thesis (section
//! 4.3), rather than taken from `raft_core::Membership`, so that a fault in the engine's rules (say,
//! a joint configuration counted by its new voters alone) cannot hide from the checkers that judge
//! it.

use std::collections::BTreeSet;

use raft_core::{EntryPayload, LogIndex, Membership, NodeId};

use crate::node_model::NodeObs;
use crate::record::Record;

/// Whether `nodes` hold a majority of `m`'s voters and, while `m` is joint, a majority of its
/// outgoing voters too. Learners and nodes outside `m` count for nothing. A configuration without
/// voters has no quorum.
pub(crate) fn is_quorum(m: &Membership, nodes: &BTreeSet<NodeId>) -> bool {
    let majority_of = |voters: &BTreeSet<NodeId>| {
        !voters.is_empty() && voters.intersection(nodes).count() * 2 > voters.len()
    };
    majority_of(&m.voters) && m.old_voters.as_ref().is_none_or(majority_of)
}

/// The configuration node `obs`'s durable log puts in force: its last membership entry; if its log
/// after the compaction point holds none, the membership of its durable snapshot; failing that, the
/// last committed membership at or below its compaction point. `None` for a node that holds no
/// membership at all (it was never initialized, and has received nothing yet).
pub(crate) fn in_force(record: &Record, obs: &NodeObs) -> Option<Membership> {
    let in_log = obs.log.iter().rev().find_map(|e| match &*e.payload {
        EntryPayload::Membership(m) => Some(Membership::clone(m)),
        _ => None,
    });
    in_log
        .or_else(|| {
            obs.snapshot
                .as_ref()
                .filter(|s| s.meta.last_log_id == obs.base)
                .map(|s| s.meta.membership.clone())
        })
        .or_else(|| {
            (obs.base.index > 0)
                .then(|| record.memberships.range(..=obs.base.index).next_back())
                .flatten()
                .map(|(_, m)| m.clone())
        })
}

/// The configurations a leader may have counted a quorum by when it committed the entry at `index`:
/// the last committed membership before `index`; if that one is joint, the C_new that follows it
/// (a leader appends C_new once the joint configuration is committed and counts by it at once,
/// before C_new is durable anywhere: its own append runs in the background); and every membership
/// any node holds durably at `index` or after (a leader uses the last membership of its own log,
/// which may come after the entries it commits).
///
/// A leader may also count by a membership it appended and nobody holds durably yet that is
/// neither of these: a joint configuration (or a change of learners) appended after the last
/// committed one. Those need a majority of the last committed voters too, so counting by the last
/// committed membership covers them.
pub(crate) fn commit_configs(record: &Record, index: LogIndex) -> Vec<Membership> {
    let mut configs: Vec<Membership> = record
        .memberships
        .range(..index)
        .next_back()
        .map(|(_, m)| m.clone())
        .into_iter()
        .collect();
    if let Some(joint) = configs.first().filter(|m| m.is_joint()) {
        let next = joint.leave_joint();
        configs.push(next);
    }
    for obs in record.nodes.values() {
        for e in &obs.log {
            if let EntryPayload::Membership(m) = &*e.payload {
                if e.log_id.index >= index && !configs.contains(&**m) {
                    configs.push(Membership::clone(m));
                }
            }
        }
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let mut joint = Membership::new([1, 2, 3, 4, 5]);
        joint.old_voters = Some(set(&[1, 2, 3]));
        joint.learners.insert(6);
        assert!(!is_quorum(&joint, &set(&[1, 4, 5])), "new majority only");
        assert!(!is_quorum(&joint, &set(&[1, 2, 6])), "old majority only");
        assert!(is_quorum(&joint, &set(&[1, 2, 4])));
        assert!(!is_quorum(&Membership::new([1, 2, 3]), &set(&[1, 6, 7])));
        assert!(!is_quorum(&Membership::default(), &set(&[1])));
    }
}
