//! The counters and latencies of `Metrics` (raft-core/src/raft/figures.rs) move when the driver does
//! the work they count: writes time the storage append, the commit and the apply; a new leader is a
//! leadership change; refused proposals and snapshots built or installed are counted.

use std::time::Duration;

use raft_core::*;
use tokio::sync::watch;

mod common;
use common::*;

/// The first published metrics that satisfy `ok`, within 5 s of virtual time.
async fn wait_metrics(
    rx: &mut watch::Receiver<Metrics>,
    ok: impl FnMut(&Metrics) -> bool,
) -> Metrics {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(ok))
        .await
        .expect("the metrics never got there")
        .expect("the node stopped")
        .clone()
}

#[tokio::test(start_paused = true)]
async fn writes_move_the_append_commit_and_apply_histograms() {
    let raft = single_node_leader().await; // one write applied already
    let mut rx = raft.metrics();
    let before = wait_metrics(&mut rx, |m| m.last_applied >= m.commit_index).await;
    assert_eq!(before.proposals.accepted, 1);
    assert_eq!(before.latency.commit.count(), 1, "{:?}", before.latency);
    assert!(before.latency.append.count() >= 1);
    assert!(before.latency.apply.count() >= 1);

    let mut last = LogIndex::default();
    for n in 0..5 {
        last = raft.client_write(n).await.expect("write").log_id.index;
    }
    let after = wait_metrics(&mut rx, |m| m.last_applied >= last).await;
    assert_eq!(after.proposals.accepted, 6);
    assert_eq!(after.proposals.not_leader, 0);
    // Each write was proposed, appended, committed and applied on its own (one at a time).
    assert_eq!(after.latency.commit.count(), 6);
    assert!(after.latency.append.count() >= before.latency.append.count() + 5);
    assert!(after.latency.apply.count() >= before.latency.apply.count() + 5);
    for h in [
        after.latency.append,
        after.latency.commit,
        after.latency.apply,
    ] {
        assert_eq!(h.bucket_counts().iter().sum::<u64>(), h.count());
        assert_eq!(h.cumulative().last(), Some((None, h.count())));
    }
    assert_eq!(after.leader_changes, 1, "one leader, one term");
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_is_a_leadership_change_and_its_snapshot_is_counted() {
    let raft = single_node_leader().await;
    let mut rx = raft.metrics();
    let m = wait_metrics(&mut rx, |m| m.role == Role::Leader).await;
    assert_eq!(m.leader_changes, 1);
    let term = m.current_term;

    // Node 2 leads a later term: node 1 follows it.
    let answer = raft
        .append_entries(AppendEntriesRequest {
            term: term + 1,
            leader_id: 2,
            prev_log_id: m.last_log_id,
            entries: Vec::new(),
            leader_commit: m.commit_index,
            round: 0,
        })
        .await
        .expect("the node runs");
    assert_eq!(answer.term, term + 1);
    let m = wait_metrics(&mut rx, |m| m.current_leader == Some(2)).await;
    assert_eq!(m.current_term, term + 1);
    assert_eq!(m.leader_changes, 2, "{m:?}");

    // A proposal at a follower is refused, and counted so.
    let refused = raft.client_write(9).await.expect_err("not the leader");
    assert!(
        matches!(refused, ClientWriteError::NotLeader { .. }),
        "{refused:?}"
    );
    let m = wait_metrics(&mut rx, |m| m.proposals.not_leader == 1).await;
    assert_eq!(m.proposals.accepted, 1);

    // The leader sends a snapshot beyond this node's log: installed and counted.
    let snapshot_at = LogId::new(term + 1, m.last_log_id.index + 10);
    raft.install_snapshot(InstallSnapshotRequest {
        term: term + 1,
        leader_id: 2,
        meta: SnapshotMeta {
            last_log_id: snapshot_at,
            membership: Membership::new([1]),
        },
        offset: 0,
        data: Vec::new(),
        done: true,
    })
    .await
    .expect("the node runs");
    let m = wait_metrics(&mut rx, |m| m.snapshot == snapshot_at).await;
    assert_eq!(m.snapshots.installed, 1);
    assert_eq!(m.snapshots.built, 0);

    // Node 2 goes silent: node 1, the only voter, elects itself in a later term.
    let m = wait_metrics(&mut rx, |m| m.role == Role::Leader).await;
    assert!(m.current_term > term + 1);
    assert_eq!(m.leader_changes, 3, "{m:?}");
    // A snapshot of its own.
    raft.trigger_snapshot().await.expect("the node runs");
    let m = wait_metrics(&mut rx, |m| m.snapshots.built == 1).await;
    assert_eq!(m.snapshots.installed, 1);
    raft.shutdown().await;
}
