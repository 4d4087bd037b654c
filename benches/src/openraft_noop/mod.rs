//! The `noop_mem` workload on [openraft](https://docs.rs/openraft) (feature `openraft`), to measure
//! it side by side with our `noop_mem` in one run (`benches/vs_openraft.rs`).
//!
//! As close to [`MemCluster`](crate::MemCluster) + [`NoopSm`](crate::NoopSm) as openraft's public
//! API allows:
//! * 3 nodes in one process, on the runtime the caller runs them on ([`runtime`](crate::runtime));
//! * [`NoopLogStore`]: the log in memory, a `Vec` of entries behind a mutex, as `MemStorage` keeps it;
//! * [`NoopStateMachine`]: request `()`, response `()`, no data (a snapshot is its metadata alone);
//! * [`NoopRouter`]: each RPC is a direct call of the target node's [`Raft`] handle, no
//!   serialization, like `raft-net-mock` without faults;
//! * [`openraft_config`]: [`bench_config`](crate::bench_config)'s timing, batching and snapshot
//!   settings, translated where openraft has an equivalent;
//! * [`run_openraft_clients`]: the client loop of [`run_clients`](crate::run_clients), on
//!   `Raft::client_write`.

mod log_store;
mod network;
mod state_machine;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EmptyNode, Raft, SnapshotPolicy};

pub use log_store::NoopLogStore;
pub use network::NoopRouter;
pub use state_machine::NoopStateMachine;

openraft::declare_raft_types!(
    /// The openraft types of the no-op workload: empty requests and responses, `u64` node ids,
    /// nodes without addresses (the network is in-process).
    pub NoopConfig:
        D = (),
        R = (),
        NodeId = u64,
        Node = EmptyNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// An openraft node of the no-op workload.
pub type NoopRaft = Raft<NoopConfig>;

/// How long starting a cluster may take before the bench gives up (election included).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// openraft's configuration with [`bench_config`](crate::bench_config)'s settings where openraft
/// has an equivalent: election timeouts and heartbeat interval, entries per AppendEntries, snapshot
/// threshold (`RAFT_BENCH_SNAPSHOT_AFTER` included) and entries kept after a snapshot. openraft has
/// no RPC timeout setting (it bounds an AppendEntries by the heartbeat interval), no pre-vote, no
/// limit of proposals per batch and no pipeline window.
///
/// # Panics
/// If openraft refuses the translated settings (it validates them; ours passed our own checks).
pub fn openraft_config() -> openraft::Config {
    let ours = crate::bench_config();
    let snapshot_policy = match ours.snapshot_policy {
        raft_core::SnapshotPolicy::Never => SnapshotPolicy::Never,
        raft_core::SnapshotPolicy::AfterAppliedEntries(n) => SnapshotPolicy::LogsSinceLast(n),
        // The no-op state machine's snapshot is empty, so the log always outgrows it: only the
        // entry count remains.
        raft_core::SnapshotPolicy::LogGrowth { min_entries, .. } => {
            SnapshotPolicy::LogsSinceLast(min_entries)
        }
    };
    openraft::Config {
        cluster_name: "bench".into(),
        election_timeout_min: millis(ours.election_timeout_min),
        election_timeout_max: millis(ours.election_timeout_max),
        heartbeat_interval: millis(ours.heartbeat_interval),
        max_payload_entries: ours.max_entries_per_append as u64,
        snapshot_policy,
        max_in_snapshot_log_to_keep: ours.snapshot_keep_entries,
        ..openraft::Config::default()
    }
    .validate()
    .expect("openraft accepts the bench configuration")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Three openraft nodes on [`NoopLogStore`], [`NoopStateMachine`] and [`NoopRouter`].
pub struct OpenraftCluster {
    nodes: Vec<NoopRaft>,
    leader: usize,
    router: NoopRouter,
}

impl OpenraftCluster {
    /// Starts nodes 1, 2, 3 with [`openraft_config`], initializes node 1 with the three as voters
    /// (openraft wants one node initialized; it replicates the membership to the others) and waits
    /// until every node knows the leader and has applied the leader's first entry.
    ///
    /// # Panics
    /// If a node fails to start or no leader is known to all three within 30 s.
    pub async fn start() -> Self {
        Self::start_with(openraft_config()).await
    }

    /// Starts nodes 1, 2, 3 with `config`, as [`start`](Self::start) does.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub async fn start_with(config: openraft::Config) -> Self {
        let config = Arc::new(config);
        let router = NoopRouter::default();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let raft = Raft::new(
                id,
                Arc::clone(&config),
                router.clone(),
                NoopLogStore::default(),
                NoopStateMachine::default(),
            )
            .await
            .expect("start openraft node");
            router.register(id, raft.clone());
            nodes.push(raft);
        }
        nodes[0]
            .initialize(voters())
            .await
            .expect("initialize openraft cluster");

        let leader_id = nodes[0]
            .wait(Some(START_TIMEOUT))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .expect("openraft elects a leader")
            .current_leader
            .expect("the awaited metrics name a leader");
        let leader = nodes
            .iter()
            .position(|n| n.metrics().borrow().id == leader_id)
            .expect("the leader is one of the three nodes");
        let first_entry = nodes[leader]
            .wait(Some(START_TIMEOUT))
            .metrics(
                |m| m.last_applied.is_some(),
                "the leader applies its first entry",
            )
            .await
            .expect("the leader applies its first entry")
            .last_log_index;
        for n in &nodes {
            n.wait(Some(START_TIMEOUT))
                .metrics(
                    |m| {
                        m.current_leader == Some(leader_id)
                            && m.last_applied.map(|l| l.index) >= first_entry
                    },
                    "every node follows the leader",
                )
                .await
                .expect("every node follows the leader");
        }
        OpenraftCluster {
            nodes,
            leader,
            router,
        }
    }

    /// The leader's handle.
    pub fn leader(&self) -> &NoopRaft {
        &self.nodes[self.leader]
    }

    /// How many AppendEntries calls openraft dropped (timed out) before the target answered.
    pub fn abandoned_appends(&self) -> u64 {
        self.router.abandoned_appends()
    }

    /// The leader's current term, as its metrics show it (a change during a measurement means an
    /// election happened in it).
    pub fn leader_term(&self) -> u64 {
        self.leader().metrics().borrow().current_term
    }

    /// Stops every node, then drops the router's handles (each node's network holds the router, so
    /// the handles would otherwise keep one another alive).
    pub async fn shutdown(self) {
        for n in &self.nodes {
            if let Err(e) = n.shutdown().await {
                eprintln!("openraft node shut down with an error: {e}");
            }
        }
        self.router.clear();
    }
}

/// The voters 1, 2, 3.
fn voters() -> std::collections::BTreeSet<u64> {
    (1..=3).collect()
}

/// Runs `total` empty writes spread over `clients` concurrent tasks on openraft's `leader` (each
/// writes in a loop, waiting for each answer) and returns the wall time they took: the client loop
/// of [`run_clients`](crate::run_clients), with the same split of writes between clients.
///
/// # Panics
/// If a write fails (a lost leadership in the middle of a bench is a failed measurement).
pub async fn run_openraft_clients(leader: &NoopRaft, clients: usize, total: u64) -> Duration {
    let clients = clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let n = crate::share(total, clients, c);
        if n == 0 {
            continue;
        }
        let raft = leader.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                if let Err(e) = raft.client_write(()).await {
                    panic!("openraft client write failed: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster starts, takes writes from several clients, and every write is applied on the
    /// leader: the adapter works end to end (a store that lost entries or a network that dropped
    /// calls would stall the writes or leave the applied index short).
    #[test]
    fn a_cluster_takes_writes_from_concurrent_clients() {
        let rt = crate::runtime();
        rt.block_on(async {
            let cluster = OpenraftCluster::start().await;
            let before = cluster
                .leader()
                .metrics()
                .borrow()
                .last_applied
                .map(|l| l.index);
            tokio::time::timeout(
                Duration::from_secs(30),
                run_openraft_clients(cluster.leader(), 8, 1_000),
            )
            .await
            .expect("1,000 writes within 30 s");
            let after = cluster
                .leader()
                .metrics()
                .borrow()
                .last_applied
                .map(|l| l.index);
            assert_eq!(after, before.map(|b| b + 1_000));
            cluster.shutdown().await;
        });
    }

    /// With a snapshot every 100 entries, keeping 10: the leader builds snapshots and purges its
    /// log, and writes go on afterwards (the log store's purge and reads after a purge work; a
    /// purge that dropped too much or too little would make openraft report a storage error and
    /// stop taking writes).
    #[test]
    fn snapshots_purge_the_log_and_writes_go_on() {
        let rt = crate::runtime();
        rt.block_on(async {
            let config = openraft::Config {
                snapshot_policy: SnapshotPolicy::LogsSinceLast(100),
                max_in_snapshot_log_to_keep: 10,
                ..openraft_config()
            };
            let cluster = OpenraftCluster::start_with(config).await;
            tokio::time::timeout(
                Duration::from_secs(30),
                run_openraft_clients(cluster.leader(), 4, 1_000),
            )
            .await
            .expect("1,000 writes within 30 s");
            let purged = cluster
                .leader()
                .wait(Some(Duration::from_secs(30)))
                .metrics(|m| m.purged.is_some_and(|p| p.index >= 800), "log purged")
                .await
                .expect("the leader purges its log after snapshots")
                .purged;
            assert!(purged.is_some());
            tokio::time::timeout(
                Duration::from_secs(30),
                run_openraft_clients(cluster.leader(), 4, 100),
            )
            .await
            .expect("writes go on after the purge");
            cluster.shutdown().await;
        });
    }
}
