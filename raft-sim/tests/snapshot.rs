//! Whole-cluster scenarios of snapshots, log compaction and InstallSnapshot on the mock network,
//! in virtual time. Every scenario ends with the harness's full check (the five properties, no lost
//! acknowledged write, linearizability) and compares the nodes' state machines.

use std::time::Duration;

use raft_core::{Config, LogIndex, NodeId, SnapshotPolicy};
use raft_net_mock::Faults;
use raft_sim::{Cluster, ClusterOptions};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);
/// The snapshot threshold of these scenarios: small, so a run builds and sends many snapshots.
const THRESHOLD: u64 = 1_000;
/// Entries kept before a snapshot point.
const KEEP: u64 = 100;

fn config(chunk_size: usize) -> Config {
    Config {
        snapshot_policy: SnapshotPolicy::AfterAppliedEntries(THRESHOLD),
        snapshot_keep_entries: KEEP,
        snapshot_chunk_size: chunk_size,
        ..Config::default()
    }
}

async fn cluster(seed: u64, config: Config, test: &str) -> MemCluster {
    let opts = ClusterOptions::new(3, seed).config(config).replay(format!(
        "cargo test -p lucid-raft-sim --test snapshot {test} -- --exact --nocapture   (seed {{seed}} is fixed in the test)"
    ));
    let c = Cluster::with_options(opts).await;
    c.initialize().await;
    c
}

/// Writes `count` fresh values through the leader from `clients` concurrent clients; all must succeed.
async fn write_many(c: &MemCluster, count: u64, clients: u64) {
    if let Err(v) = c.write_concurrently(count, clients).await {
        c.fail(&v.0);
    }
}

fn follower_of(c: &MemCluster, leader: NodeId) -> NodeId {
    c.ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower")
}

fn snapshot_index(c: &MemCluster, id: NodeId) -> LogIndex {
    c.metrics(id).map_or(0, |m| m.snapshot.index)
}

/// Waits (virtual time) until `cond` holds, failing the test after `timeout`.
async fn wait_until(c: &MemCluster, what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            c.fail(&format!("timed out waiting until {what}"));
        }
        sleep(Duration::from_millis(1)).await;
    }
}

/// Converges, runs the full check, and requires every node's state machine to equal the leader's.
async fn assert_identical_state_machines(c: &MemCluster) {
    c.assert_final(30 * SEC).await;
    let leader = c.leader().expect("converged, so a leader");
    let reference = c.state_machine(leader);
    if reference.is_none() {
        c.fail(&format!("the leader {leader} has no state machine"));
    }
    for id in c.ids() {
        let sm = c.state_machine(id);
        if sm != reference {
            c.fail(&format!(
                "node {id}'s state machine differs from the leader {leader}'s: {sm:?} vs {reference:?}"
            ));
        }
    }
}

/// Crashes a follower, writes `writes` values (so the leader compacts past everything the follower
/// holds), restarts it. Returns the follower.
async fn leave_a_follower_behind(c: &MemCluster, writes: u64) -> NodeId {
    let leader = c.wait_for_leader(5 * SEC).await;
    let lagging = follower_of(c, leader);
    c.crash(lagging).await;
    write_many(c, writes, 32).await;
    let leader = c.wait_for_leader(5 * SEC).await;
    let snap = snapshot_index(c, leader);
    if snap + KEEP < writes / 2 {
        c.fail(&format!(
            "the leader {leader} did not compact: snapshot at {snap} after {writes} writes"
        ));
    }
    c.restart(lagging).await;
    lagging
}

#[tokio::test(start_paused = true)]
async fn follower_down_for_10000_writes_catches_up_by_snapshot_then_by_log() {
    let c = cluster(
        501,
        config(16),
        "follower_down_for_10000_writes_catches_up_by_snapshot_then_by_log",
    )
    .await;
    let lagging = leave_a_follower_behind(&c, 10_000).await;
    wait_until(&c, "the follower installs a snapshot", 30 * SEC, || {
        snapshot_index(&c, lagging) > 0
    })
    .await;
    let leader = c
        .wait_converged(30 * SEC)
        .await
        .unwrap_or_else(|v| c.fail(&v.0));
    let chunks = c.router().snapshot_chunks_delivered(lagging);
    assert!(
        chunks > 1,
        "the snapshot should take several chunks of 16 bytes, took {chunks}"
    );
    assert!(
        snapshot_index(&c, lagging) >= 9_000,
        "the follower's snapshot covers {} of 10,000+ entries",
        snapshot_index(&c, lagging)
    );
    // From here on it follows by AppendEntries: more writes send no more chunks.
    write_many(&c, 500, 8).await;
    assert_eq!(c.router().snapshot_chunks_delivered(lagging), chunks);
    assert_eq!(c.wait_converged(30 * SEC).await.ok(), Some(leader));
    assert_identical_state_machines(&c).await;
}

#[tokio::test(start_paused = true)]
async fn snapshot_chunks_lost_duplicated_and_reordered_still_install_exactly() {
    let c = cluster(
        502,
        config(16),
        "snapshot_chunks_lost_duplicated_and_reordered_still_install_exactly",
    )
    .await;
    c.router().set_snapshot_faults(Some(Faults {
        drop_prob: 0.15,
        delay_ms: (1, 4),
        duplicate_prob: 0.2,
        reorder_prob: 0.3,
    }));
    let lagging = leave_a_follower_behind(&c, 3_000).await;
    wait_until(&c, "the follower installs a snapshot", 120 * SEC, || {
        snapshot_index(&c, lagging) > 0
    })
    .await;
    let stats = c.router().stats();
    assert!(
        stats.dropped > 0 && stats.duplicated > 0,
        "faults hit the transfer: {stats:?}"
    );
    c.router().set_snapshot_faults(None);
    write_many(&c, 200, 8).await;
    assert_identical_state_machines(&c).await;
}

/// Starts a slow transfer to a follower left behind and waits until it is under way (some chunks
/// delivered, nothing installed yet). Returns the follower.
async fn transfer_under_way(c: &MemCluster) -> NodeId {
    c.router().set_snapshot_faults(Some(Faults {
        delay_ms: (2, 4),
        ..Faults::default()
    }));
    let lagging = leave_a_follower_behind(c, 3_000).await;
    wait_until(c, "a few chunks reach the follower", 30 * SEC, || {
        c.router().snapshot_chunks_delivered(lagging) >= 3
    })
    .await;
    if snapshot_index(c, lagging) > 0 {
        c.fail("the transfer finished before the fault could hit it: make chunks smaller");
    }
    lagging
}

#[tokio::test(start_paused = true)]
async fn leader_change_in_the_middle_of_a_transfer() {
    let c = cluster(503, config(16), "leader_change_in_the_middle_of_a_transfer").await;
    let lagging = transfer_under_way(&c).await;
    let old_leader = c.leader().expect("a leader is sending");
    c.crash(old_leader).await;
    // The remaining node with the full log wins (the follower's log is behind) and sends its own
    // snapshot from the start.
    wait_until(
        &c,
        "the new leader's snapshot is installed",
        60 * SEC,
        || snapshot_index(&c, lagging) > 0,
    )
    .await;
    let new_leader = c.leader().expect("a new leader");
    assert_ne!(new_leader, old_leader);
    c.restart(old_leader).await;
    c.router().set_snapshot_faults(None);
    write_many(&c, 200, 8).await;
    assert_identical_state_machines(&c).await;
}

#[tokio::test(start_paused = true)]
async fn follower_crash_in_the_middle_of_a_transfer() {
    let c = cluster(
        504,
        config(16),
        "follower_crash_in_the_middle_of_a_transfer",
    )
    .await;
    let lagging = transfer_under_way(&c).await;
    c.crash(lagging).await;
    sleep(SEC).await;
    c.restart(lagging).await;
    wait_until(
        &c,
        "the follower installs a snapshot after restarting",
        60 * SEC,
        || snapshot_index(&c, lagging) > 0,
    )
    .await;
    c.router().set_snapshot_faults(None);
    write_many(&c, 200, 8).await;
    assert_identical_state_machines(&c).await;
}

#[tokio::test(start_paused = true)]
async fn whole_cluster_restarts_from_snapshot_plus_log_tail() {
    let c = cluster(
        505,
        config(4096),
        "whole_cluster_restarts_from_snapshot_plus_log_tail",
    )
    .await;
    write_many(&c, 2_500, 16).await;
    c.wait_converged(30 * SEC)
        .await
        .unwrap_or_else(|v| c.fail(&v.0));
    let before: Vec<(NodeId, LogIndex)> = c
        .ids()
        .into_iter()
        .map(|id| (id, snapshot_index(&c, id)))
        .collect();
    for &(id, snap) in &before {
        assert!(
            snap >= 2_000,
            "node {id} snapshot at {snap} after 2,500 writes"
        );
    }
    c.crash_all().await;
    c.restart_all().await;
    for &(id, snap) in &before {
        assert_eq!(
            snapshot_index(&c, id),
            snap,
            "node {id} restarts from its stored snapshot"
        );
    }
    write_many(&c, 100, 8).await;
    assert_identical_state_machines(&c).await;
}

#[tokio::test(start_paused = true)]
async fn long_run_of_100000_writes_keeps_the_log_bounded() {
    // Bound on entries held, in memory (the engine's log) and in storage, on any node at any sample:
    // up to THRESHOLD applied since the last snapshot, plus KEEP kept before it, plus what piles up
    // while a snapshot is being built and stored, plus entries not yet applied. Twice the threshold
    // plus KEEP leaves room for the last two.
    const BOUND: u64 = 2 * THRESHOLD + KEEP;
    let c = cluster(
        506,
        config(64 * 1024),
        "long_run_of_100000_writes_keeps_the_log_bounded",
    )
    .await;
    let (mut max_resident, mut max_stored) = (0u64, 0u64);
    for _ in 0..100 {
        write_many(&c, 1_000, 64).await;
        for id in c.ids() {
            let resident = c.metrics(id).map_or(0, |m| m.log_entries);
            let stored = c.durable_log(id).len() as u64;
            max_resident = max_resident.max(resident);
            max_stored = max_stored.max(stored);
        }
        if max_resident > BOUND || max_stored > BOUND {
            c.fail(&format!(
                "log not bounded: {max_resident} entries resident, {max_stored} stored (bound {BOUND})"
            ));
        }
    }
    println!(
        "long run, 100,000 writes: at most {max_resident} entries resident in an engine and {max_stored} \
         stored, bound {BOUND}; leader snapshot at {}",
        c.leader().map_or(0, |l| snapshot_index(&c, l))
    );
    assert_identical_state_machines(&c).await;
}

#[tokio::test(start_paused = true)]
async fn trigger_snapshot_snapshots_now_even_with_the_policy_off() {
    let config = Config {
        snapshot_policy: SnapshotPolicy::Never,
        ..config(4096)
    };
    let c = cluster(
        507,
        config,
        "trigger_snapshot_snapshots_now_even_with_the_policy_off",
    )
    .await;
    let leader = c.wait_for_leader(5 * SEC).await;
    write_many(&c, 1_500, 16).await;
    let applied = c.metrics(leader).map_or(0, |m| m.last_applied);
    assert_eq!(
        snapshot_index(&c, leader),
        0,
        "the policy is off: no snapshot on its own"
    );
    assert!(c.metrics(leader).is_some_and(|m| m.log_entries > 1_500));
    let raft = c.raft(leader).expect("the leader runs");
    let id = raft
        .trigger_snapshot()
        .await
        .unwrap_or_else(|e| c.fail(&format!("trigger_snapshot failed: {e}")))
        .unwrap_or_else(|| c.fail("trigger_snapshot found nothing applied"));
    assert!(
        id.index >= applied,
        "the snapshot {id} covers everything applied ({applied}) when asked"
    );
    let m = c.metrics(leader).expect("the leader runs");
    assert_eq!(
        m.snapshot, id,
        "durable and reported when trigger_snapshot returns"
    );
    assert!(
        m.log_entries <= KEEP + (m.last_log_id.index - id.index),
        "compacted to {KEEP} entries before the snapshot: {} entries",
        m.log_entries
    );
    // Nothing applied since: asking again returns the same snapshot.
    assert_eq!(raft.trigger_snapshot().await.ok().flatten(), Some(id));
    write_many(&c, 100, 8).await;
    assert_identical_state_machines(&c).await;
}
