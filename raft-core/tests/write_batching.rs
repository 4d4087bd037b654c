//! Concurrent client writes share the driver's batches on tokio's multi-thread runtime too.
//!
//! That scheduler runs a task woken by the running one next, so without care a write that arrives
//! while others are in flight wakes the driver, which takes a batch of one while the clients behind
//! it wait their turn: as many appends as writes.

use std::time::Duration;

use async_trait::async_trait;
use raft_core::*;
use tokio::sync::watch;

mod common;
use common::*;

const CLIENTS: u64 = 64;

/// Echoes its commands, but applies only while its gate is open.
struct GatedApply {
    open: watch::Receiver<bool>,
}

#[async_trait]
impl StateMachine for GatedApply {
    type Command = u64;
    type Response = u64;
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }
    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        self.open
            .wait_for(|open| *open)
            .await
            .map_err(|e| StateMachineError::new(e.to_string()))?;
        Ok(echoed(entries))
    }
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }
    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// The first published metrics that satisfy `ok`, within 10 s.
async fn wait_metrics(raft: &Raft<GatedApply>, ok: impl FnMut(&Metrics) -> bool) -> Metrics {
    let mut rx = raft.metrics();
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(ok))
        .await
        .expect("the metrics never got there")
        .expect("the node stopped")
        .clone();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn writes_arriving_while_others_are_in_flight_share_an_append() {
    let (gate, open) = watch::channel(true);
    let config = Config {
        snapshot_policy: SnapshotPolicy::Never,
        ..Config::default()
    };
    let raft = lone_leader(config, GatedApply { open }).await;
    raft.client_write(0).await.expect("write");

    // One write in flight (committed, its apply held back)...
    gate.send_replace(false);
    let first = tokio::spawn({
        let raft = raft.clone();
        async move { raft.client_write(1).await }
    });
    let before = wait_metrics(&raft, |m| m.proposals.accepted == 2).await;

    // ...and a burst of clients, all ready to run together on the one worker.
    let clients = tokio::spawn({
        let raft = raft.clone();
        async move {
            let writes: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let raft = raft.clone();
                    tokio::spawn(async move { raft.client_write(10 + c).await })
                })
                .collect();
            writes
        }
    })
    .await
    .expect("launcher");
    let after = wait_metrics(&raft, |m| m.proposals.accepted == 2 + CLIENTS).await;
    let appends = after.latency.append.count() - before.latency.append.count();
    assert!(
        appends <= 4,
        "{CLIENTS} writes that arrived together took {appends} appends"
    );

    gate.send_replace(true);
    first.await.expect("task").expect("write");
    for (c, w) in clients.into_iter().enumerate() {
        assert_eq!(w.await.expect("task").expect("write").data, 10 + c as u64);
    }
    raft.shutdown().await;
}
