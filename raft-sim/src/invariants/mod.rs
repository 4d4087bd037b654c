//! The checkers: one module per property, each an [`Invariant`] the recorder feeds.
//!
//! To check a new property: add a module with a checker that implements the hooks it needs, and add
//! it to [`all`].

mod durability;
mod election_safety;
mod leader_append_only;
mod leader_completeness;
mod linearizability;

pub use linearizability::check_history;
mod log_matching;
mod snapshots;
mod state_machine_safety;

use crate::invariant::Invariant;

/// Every checker a cluster runs, in the order their findings on one observation are reported and
/// their on-demand checks run.
pub(crate) fn all() -> Vec<Box<dyn Invariant>> {
    vec![
        Box::new(election_safety::ElectionSafety::default()),
        Box::new(leader_append_only::LeaderAppendOnly::default()),
        Box::new(log_matching::LogMatching),
        Box::new(leader_completeness::LeaderCompleteness::default()),
        Box::new(snapshots::Snapshots),
        Box::new(state_machine_safety::StateMachineSafety),
        Box::new(durability::Durability),
        Box::new(linearizability::Linearizability),
    ]
}

#[cfg(test)]
mod tests {
    use super::log_matching::LogMatching;
    use super::state_machine_safety::StateMachineSafety;
    use crate::invariant::Invariant;
    use crate::testing::*;
    use raft_core::HardState;

    #[test]
    fn a_healthy_history_has_no_violation() {
        let mut w = world(3);
        for id in 1..=3 {
            w.on_append(id, &[membership()]);
        }
        w.on_save_hard_state(
            1,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.on_save_hard_state(
            2,
            HardState {
                term: 1,
                voted_for: Some(1),
            },
        );
        w.observe_leader(1, 1);
        let entries = [blank(1, 2), cmd(1, 3, 7)];
        w.on_append(1, &entries);
        w.on_append(2, &entries);
        apply(&mut w, 1, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
        apply(&mut w, 2, 1, &[membership(), blank(1, 2), cmd(1, 3, 7)]);
        w.observe_leader(1, 1);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert!(LogMatching.check(&w.record).is_ok());
        assert!(StateMachineSafety.check(&w.record).is_ok());
    }
}
