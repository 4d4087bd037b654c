//! `Config::max_append_bytes`: every AppendEntries, heartbeat probes included, stays within the byte
//! budget, except that an entry larger than the budget travels alone.

use super::*;

/// Commands here are their own size in bytes (plus the per-entry overhead).
fn size_is_value(command: &u64) -> usize {
    *command as usize
}

/// Node 1 leading {1, 2, 3} with every follower caught up, entries sized by [`size_is_value`], and a
/// budget of `budget` bytes per AppendEntries.
fn leader_with_budget(budget: usize) -> Engine<u64> {
    let config = Config {
        max_append_bytes: budget,
        ..config()
    };
    let mut e = replicating_leader(&config, &[1, 2, 3], &[1], hs(1, None));
    e.set_entry_size(size_is_value);
    e
}

fn entry_counts(out: &Output<u64>, to: NodeId) -> Vec<usize> {
    appends_to(out, to)
        .iter()
        .map(|a| a.entries.len())
        .collect()
}

#[test]
fn append_entries_are_filled_up_to_the_byte_budget() {
    // Each entry costs 68 + 32 = 100 bytes: three fit in 300, the fourth would not.
    let mut e = leader_with_budget(300);
    for _ in 0..7 {
        e.propose(68).unwrap();
    }
    let out = e.take_output();
    assert_eq!(entry_counts(&out, 2), vec![3, 3, 1]);
    assert_eq!(entry_counts(&out, 3), vec![3, 3, 1]);
}

#[test]
fn an_entry_larger_than_the_budget_travels_alone() {
    let mut e = leader_with_budget(300);
    e.propose(10).unwrap();
    e.propose(1_000).unwrap();
    e.propose(10).unwrap();
    let out = e.take_output();
    assert_eq!(entry_counts(&out, 2), vec![1, 1, 1]);
}

#[test]
fn a_probe_resent_as_a_heartbeat_stays_within_the_budget() {
    let mut e = leader_with_budget(300);
    let first = e.last_log_id().index + 1;
    for _ in 0..10 {
        e.propose(68).unwrap();
    }
    e.take_output();
    // Follower 2 loses everything in flight: it is probed again from its match index.
    e.handle_unreachable(2);
    let deadline = e.next_deadline();
    e.tick(deadline);
    let out = e.take_output();
    let probes = appends_to(&out, 2);
    assert_eq!(probes.len(), 1, "{out:?}");
    assert_eq!(
        probes[0].entries.len(),
        3,
        "the probe carries what fits the budget"
    );
    assert_eq!(probes[0].entries[0].log_id.index, first);
}
