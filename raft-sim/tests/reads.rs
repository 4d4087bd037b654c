//! Whole-cluster scenarios of reads without log entries (ReadIndex, leader leases, follower reads)
//! on the mock network, in virtual time: a deposed leader cut off from the cluster serves no read,
//! an expired lease serves no read, a follower read sees every write acknowledged before it, and
//! concurrent reads share a confirmation round. Every scenario ends with the harness's full check,
//! which judges each served read in the linearizability check.

use std::time::Duration;

use raft_core::{Config, NodeId, ReadError, ReadPolicy, Role};
use raft_sim::{Cluster, ClusterOptions, ReadKind, ReadOutcome};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);

/// A cluster of `n` nodes with `seed` and `config`, whose failures print the command that reruns
/// `test`.
async fn cluster(n: u64, seed: u64, config: Config, test: &str) -> MemCluster {
    let opts = ClusterOptions::new(n, seed).config(config).replay(format!(
        "cargo test -p raft-sim --test reads {test} -- --exact --nocapture   (seed {{seed}} is fixed in the test)"
    ));
    let c = Cluster::with_options(opts).await;
    c.initialize().await;
    c
}

/// Leases on: served for `election_timeout_min - drift` after a confirmed round started.
fn lease_config(drift: Duration) -> Config {
    Config {
        read_policy: ReadPolicy::Lease {
            clock_drift_bound: drift,
        },
        ..Config::default()
    }
}

/// Writes `count` fresh values through the leader; all must succeed. Returns the last index.
async fn write_ok(c: &MemCluster, count: usize) -> u64 {
    let client = c.client();
    let mut last = 0;
    for _ in 0..count {
        let v = client.next_value();
        match client.write(v).await {
            Ok(resp) => last = resp.log_id.index,
            Err(e) => c.fail(&format!("write of {v} failed: {e}")),
        }
    }
    last
}

/// Whether node `id` still says it leads.
fn says_it_leads(c: &MemCluster, id: NodeId) -> bool {
    c.metrics(id).is_some_and(|m| m.role == Role::Leader)
}

/// Waits until a node other than `old` leads (a higher term), and returns it.
async fn wait_new_leader(c: &MemCluster, old: NodeId, timeout: Duration) -> NodeId {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = c.leader().filter(|&l| l != old) {
            return l;
        }
        if Instant::now() >= deadline {
            c.fail(&format!("no new leader within {timeout:?}"));
        }
        sleep(Duration::from_millis(5)).await;
    }
}

/// A leader cut off from the rest keeps believing it leads for a while; a new leader takes writes
/// meanwhile. A ReadIndex read asked of the old leader then is never served (its round finds no
/// majority: it fails once the old leader steps down, or times out), and a read on the new leader
/// sees the new writes.
#[tokio::test(start_paused = true)]
async fn partitioned_old_leader_serves_no_read_index() {
    let c = cluster(5, 11, Config::default(), "partitioned_old_leader_serves_no_read_index").await;
    let old = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    c.router().isolate(old);
    let new = wait_new_leader(&c, old, 2 * SEC).await;
    let acked = write_ok(&c, 3).await;
    assert!(
        says_it_leads(&c, old),
        "the old leader should not know yet that it was replaced: {}",
        c.describe()
    );
    let client = c.client();
    let on_old = client.read_on(old, ReadKind::Index).await;
    assert!(
        matches!(
            on_old,
            Err(ReadError::LeadershipLost { .. } | ReadError::TimedOut)
        ),
        "a deposed leader answered a read: {on_old:?}"
    );
    let read = client.read_on(new, ReadKind::Index).await;
    match read {
        Ok(v) => assert!(v.seen.index >= acked, "{v:?} misses index {acked}"),
        Err(e) => c.fail(&format!("read on the new leader failed: {e}")),
    }
    let deposed = c
        .read_history()
        .iter()
        .filter(|r| r.on_deposed_leader)
        .count();
    assert_eq!(deposed, 1, "the read on the old leader is counted");
    c.router().heal();
    c.assert_final(10 * SEC).await;
}
