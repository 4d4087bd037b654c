//! A three-node cluster over mutual TLS on loopback elects a leader and commits writes, and a node
//! that was down while the others compacted their logs past it catches up through InstallSnapshot.

mod common;

use common::*;
use raft_core::{Config, SnapshotPolicy};

async fn start_three(raft_config: Config) -> Vec<Node> {
    start_cluster(3, test_config(), raft_config).await
}

/// Asserts that every node applied the same commands in the same order, and that they are the
/// writes `1..=writes` (each at least once). Returns that sequence.
fn assert_all_applied_the_same(nodes: &[Node], writes: u64) -> Vec<u64> {
    let reference = nodes[0].sm.applied();
    for node in &nodes[1..] {
        assert_eq!(node.sm.applied(), reference, "node {} diverged", node.id);
    }
    let mut written = reference.clone();
    written.sort_unstable();
    written.dedup();
    assert_eq!(written, (1..=writes).collect::<Vec<_>>());
    reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_commit_100_writes() {
    init_tracing();
    let nodes = start_three(Config::default()).await;
    let leader = nodes[0]
        .raft
        .wait_for_leader(PATIENCE)
        .await
        .expect("a leader is elected");
    assert!((1..=3).contains(&leader));

    // 100 writes, 10 at a time, so that requests are pipelined and batched.
    let mut all_certain = true;
    for batch in 0..10u64 {
        let writes = (1..=10).map(|i| write(&nodes, batch * 10 + i));
        all_certain &= futures::future::join_all(writes)
            .await
            .into_iter()
            .all(|c| c);
    }

    // Every node applies the same commands in the same order, and holds all 100.
    wait_for_all_applied(&nodes).await;
    let reference = assert_all_applied_the_same(&nodes, 100);
    if all_certain {
        assert_eq!(reference.len(), 100, "no write applied twice");
    }

    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_catches_up_by_snapshot_in_many_chunks() {
    init_tracing();
    let raft_config = Config {
        snapshot_policy: SnapshotPolicy::AfterAppliedEntries(20),
        snapshot_keep_entries: 5,
        // The Recorder's snapshot is 8 bytes per write: 300 writes make some 38 chunks.
        snapshot_chunk_size: 64,
        ..Config::default()
    };
    let mut nodes = start_three(raft_config.clone()).await;
    for i in 1..=10 {
        write(&nodes, i).await;
    }
    wait_for_all_applied(&nodes).await;

    // Stop a follower, keeping its storage and address.
    let down = nodes
        .iter()
        .position(|n| !n.raft.is_leader())
        .expect("a follower");
    let down = nodes.remove(down);
    let (id, addr, storage) = (down.id, down.addr(), down.storage.clone());
    down.stop().await;
    let behind = storage.log().last().map_or(0, |e| e.log_id.index);

    // The others take enough writes to compact their logs past everything the stopped node has.
    for i in 11..=300 {
        write(&nodes, i).await;
    }
    wait_until(
        "both running nodes purged their logs past the stopped node",
        || {
            nodes
                .iter()
                .all(|n| n.storage.state().last_purged.index > behind)
        },
    )
    .await;

    // It comes back on the same address: AppendEntries cannot reach it, a snapshot must.
    let restarted = start_node_with(
        id,
        bind_reuse(addr).unwrap(),
        nodes.iter().map(|n| (n.id, n.addr())).collect(),
        storage.open(),
        test_config(),
        raft_config,
    )
    .await;
    nodes.push(restarted);
    write(&nodes, 301).await;
    wait_for_all_applied(&nodes).await;

    let back = nodes.last().unwrap();
    let installed = back
        .storage
        .state()
        .snapshot
        .expect("the restarted node holds a snapshot");
    assert!(
        installed.meta.last_log_id.index > behind,
        "its snapshot ({:?}) covers entries it never had in its log (up to {behind})",
        installed.meta.last_log_id
    );
    assert_all_applied_the_same(&nodes, 301);

    for node in nodes {
        node.stop().await;
    }
}
