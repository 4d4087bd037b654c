//! The `Raft` handle's contract on one node (raft-core/src/raft/mod.rs): `shutdown` is idempotent and
//! stops the node, dropping every handle stops it too, and building a snapshot does not stop the node
//! from applying and answering writes; `propose` gives the log position at once and resolves like
//! `client_write`.

use std::time::Duration;

use raft_core::*;

mod common;
use common::*;

async fn wait_stopped(metrics: &mut tokio::sync::watch::Receiver<Metrics>) -> String {
    let stopped = metrics.wait_for(|m| matches!(m.status, NodeStatus::Stopped(_)));
    let m = tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the node did not stop")
        .expect("metrics sender dropped without reporting Stopped");
    match &m.status {
        NodeStatus::Stopped(reason) => reason.clone(),
        NodeStatus::Running => unreachable!("waited for Stopped"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_node_and_is_idempotent() {
    let raft = single_node_leader().await;
    let mut metrics = raft.metrics();
    raft.shutdown().await;
    assert_eq!(wait_stopped(&mut metrics).await, "node was shut down");
    raft.shutdown().await; // a second call returns at once
    let err = raft
        .client_write(8)
        .await
        .expect_err("a stopped node accepts no writes");
    assert!(matches!(err, ClientWriteError::Stopped(_)), "{err:?}");
    assert!(raft
        .vote(VoteRequest {
            term: 9,
            candidate_id: 2,
            last_log_id: LogId::default(),
            leadership_transfer: false,
        })
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_node() {
    let raft = single_node_leader().await;
    let other = raft.clone();
    let mut metrics = raft.metrics();
    drop(raft);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metrics.borrow().status,
        NodeStatus::Running,
        "one handle is still alive"
    );
    drop(other);
    assert_eq!(wait_stopped(&mut metrics).await, "node was shut down");
}

#[tokio::test(start_paused = true)]
async fn writes_are_applied_and_answered_while_a_snapshot_is_being_built() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let raft = leader_with(Echo {
        release: Some(release.clone()),
        ..Echo::default()
    })
    .await;
    let trigger = tokio::spawn({
        let raft = raft.clone();
        async move { raft.trigger_snapshot().await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!trigger.is_finished(), "the build is held");
    // The build is in progress: writes still commit, apply and get their answers.
    for n in 100..110 {
        let reply = tokio::time::timeout(Duration::from_secs(1), raft.client_write(n))
            .await
            .expect("a write is answered while the snapshot is built")
            .expect("write");
        assert_eq!(reply.data, n);
    }
    assert_eq!(raft.metrics().borrow().snapshot, LogId::default());
    release.notify_one();
    let id = trigger
        .await
        .expect("trigger task")
        .expect("the node runs")
        .expect("something was applied");
    // The snapshot is of the state when the build began (the initialization entries and the first
    // write), not of the writes made meanwhile.
    assert!(id.index < 12, "{id}");
    let m = raft.metrics().borrow().clone();
    assert_eq!(m.snapshot, id);
    assert_eq!(m.last_applied, 13);
    assert_eq!(
        m.log_entries,
        13 - id.index + 2,
        "compacted to 2 entries before the snapshot"
    );
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn trigger_snapshot_before_anything_is_applied_returns_none() {
    let raft = Raft::start(
        1,
        Config::default(),
        VecStore::default(),
        NoPeers,
        Echo::default(),
    )
    .await
    .expect("start");
    assert_eq!(raft.trigger_snapshot().await.expect("the node runs"), None);
    assert_eq!(raft.metrics().borrow().snapshot, LogId::default());
    raft.shutdown().await;
}

/// A storage holding a snapshot up to (1, 5) of the single-node cluster {1}, with the log purged up
/// to `purged` and entries after it up to 7.
fn store_with_snapshot(purged: LogIndex) -> VecStore {
    let membership = Membership::new([1]);
    let log = (purged + 1..=7)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command(i).into(),
        })
        .collect();
    VecStore {
        hard_state: HardState {
            term: 1,
            voted_for: Some(1),
        },
        base: LogId::new(1, purged),
        log,
        snapshot: Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(1, 5),
                membership,
            },
            data: Vec::new(),
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn restart_restores_the_snapshot_unless_the_state_machine_holds_more() {
    for (holds, restored) in [
        (None, vec![LogId::new(1, 5)]),
        (Some(LogId::new(1, 3)), vec![LogId::new(1, 5)]),
        (Some(LogId::new(1, 6)), vec![]),
    ] {
        let sm = Echo {
            holds,
            ..Echo::default()
        };
        let log = sm.restored.clone();
        let raft = Raft::start(1, Config::default(), store_with_snapshot(4), NoPeers, sm)
            .await
            .expect("start");
        assert_eq!(
            *log.lock().unwrap(),
            restored,
            "state machine holding {holds:?}"
        );
        let m = raft.metrics().borrow().clone();
        assert_eq!(m.snapshot, LogId::new(1, 5));
        assert_eq!(m.membership, Membership::new([1]), "from the snapshot");
        assert_eq!(m.log_entries, 3, "the tail after the purge point");
        raft.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_log_purged_past_its_snapshot_is_refused_at_start() {
    let mut past = store_with_snapshot(6);
    let err = Raft::start(1, Config::default(), past, NoPeers, Echo::default())
        .await
        .expect_err("entries 6 are lost: neither in the snapshot nor in the log");
    assert!(
        matches!(err, StartError::Storage(StorageError::Corrupted(_))),
        "{err}"
    );
    past = store_with_snapshot(4);
    past.snapshot = None;
    let err = Raft::start(1, Config::default(), past, NoPeers, Echo::default())
        .await
        .expect_err("purged with no snapshot");
    assert!(
        matches!(err, StartError::Storage(StorageError::Corrupted(_))),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn propose_returns_the_position_at_once_and_resolves_to_the_response() {
    let raft = single_node_leader().await;
    let last = raft.metrics().borrow().last_log_id;
    // Three proposals in a row, none awaited yet: each is appended at the next index of this term.
    let mut proposals = Vec::new();
    for command in [10, 11, 12] {
        proposals.push(raft.propose(command).await.expect("the leader appends"));
    }
    let ids: Vec<LogId> = proposals.iter().map(Proposal::log_id).collect();
    let expected: Vec<LogId> = (1..=3)
        .map(|k| LogId::new(last.term, last.index + k))
        .collect();
    assert_eq!(ids, expected);
    for (proposal, command) in proposals.into_iter().zip([10, 11, 12]) {
        let at = proposal.log_id();
        let response = proposal.await.expect("committed and applied");
        assert_eq!(response.log_id, at);
        assert_eq!(response.data, command);
    }
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn propose_on_a_node_that_does_not_lead_proposes_nothing() {
    let raft = Raft::start(
        1,
        Config::default(),
        VecStore::default(),
        NoPeers,
        Echo::default(),
    )
    .await
    .expect("start");
    let err = raft
        .propose(5)
        .await
        .expect_err("not initialized: no leader");
    assert_eq!(err, ClientWriteError::NotLeader { leader_hint: None });
    assert!(err.is_safe_to_retry());
    assert_eq!(raft.metrics().borrow().last_log_id, LogId::default());
    raft.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn propose_on_a_stopped_node_fails_with_the_reason_it_stopped() {
    let raft = single_node_leader().await;
    raft.shutdown().await;
    let err = raft.propose(5).await.expect_err("stopped");
    assert_eq!(
        err,
        ClientWriteError::Stopped(StoppedError("node was shut down".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_command_over_max_entry_bytes_is_refused_before_it_enters_the_log() {
    let config = Config {
        max_entry_bytes: 4,
        ..Config::default()
    };
    let raft = lone_leader(config, Echo::default()).await;
    let before = raft.metrics().borrow().last_log_id;
    // `u64` commands are 8 bytes by the default `command_size`.
    let err = raft.client_write(1).await.expect_err("too large");
    assert_eq!(err, ClientWriteError::TooLarge { size: 8, max: 4 });
    let err = raft.propose(1).await.expect_err("too large");
    assert_eq!(err, ClientWriteError::TooLarge { size: 8, max: 4 });
    assert_eq!(raft.metrics().borrow().last_log_id, before);
    raft.shutdown().await;
}

/// The message of a start refused as corruption.
async fn refused_start(store: VecStore, sm: Echo) -> String {
    match Raft::start(1, Config::default(), store, NoPeers, sm).await {
        Err(StartError::Storage(StorageError::Corrupted(reason))) => reason,
        Err(other) => panic!("expected a corruption error, got {other}"),
        Ok(_) => panic!("a node started on inconsistent state"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_log_ending_below_its_snapshot_is_refused_with_what_is_inconsistent() {
    // The snapshot covers up to 5; the log (purged up to 2) ends at 4.
    let mut store = store_with_snapshot(2);
    store.log.truncate(2);
    let reason = refused_start(store, Echo::default()).await;
    assert!(reason.contains("below the snapshot"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_state_machine_ahead_of_the_log_is_refused_rather_than_clamped() {
    let sm = Echo {
        holds: Some(LogId::new(1, 9)),
        ..Echo::default()
    };
    let reason = refused_start(store_with_snapshot(4), sm).await;
    assert!(
        reason.contains("state machine holds entries up to index 9"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_log_without_its_membership_is_refused() {
    // Entries 1..=3 but the membership entry that starts every log is gone.
    let store = VecStore {
        hard_state: HardState {
            term: 2,
            voted_for: Some(1),
        },
        log: (1..=3)
            .map(|i| Entry {
                log_id: LogId::new(1, i),
                payload: EntryPayload::Command(i).into(),
            })
            .collect(),
        ..VecStore::default()
    };
    let reason = refused_start(store, Echo::default()).await;
    assert!(reason.contains("no membership"), "{reason}");
}
