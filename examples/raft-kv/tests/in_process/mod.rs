//! What the in-process HTTP tests share: a 3-node [`Cluster`] (MemStorage and the mock network)
//! with a leader.

use std::time::Duration;

use raft_kv::Cluster;

/// Nodes 1, 2 and 3, initialized, with 10 s for each of the cluster's waits; returns the cluster
/// and its leader.
pub async fn three_nodes() -> (Cluster, u64) {
    let mut cluster = Cluster::start([1, 2, 3], raft_core::Config::default())
        .await
        .unwrap();
    cluster.set_timeout(Duration::from_secs(10));
    cluster.initialize().await.unwrap();
    let (leader, _) = cluster.wait_for_leader(0).await.unwrap();
    (cluster, leader)
}
