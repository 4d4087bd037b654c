//! The failover demo and variations of it, on tokio's paused clock: time only moves when every task
//! waits, so elections and timeouts run in virtual milliseconds, deterministically.

use std::time::Duration;

use raft_core::{ClientWriteError, Config, Role};
use raft_kv::demo::{run_failover, DemoOptions, NODES};
use raft_kv::{Cluster, ClusterError, KvCommand, KvResponse};

fn options(seed: u64) -> DemoOptions {
    DemoOptions {
        config: Config {
            seed,
            ..Config::default()
        },
        step_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn failover_demo_keeps_every_write() {
    let mut lines = Vec::new();
    let report = run_failover(options(0), |l| lines.push(l.to_string()))
        .await
        .unwrap_or_else(|e| panic!("demo failed: {e}\n{}", lines.join("\n")));
    println!("{}", lines.join("\n"));

    assert!(NODES.contains(&report.first_leader));
    assert!(NODES.contains(&report.new_leader));
    assert_ne!(report.new_leader, report.first_leader);
    assert!(report.new_term > report.first_term);
    let config = Config::default();
    // A follower waits at least one election timeout before standing; one round of votes suffices
    // here (no faults), well within a few timeouts.
    assert!(report.failover >= config.election_timeout_min, "{report:?}");
    assert!(
        report.failover < config.election_timeout_max * 4,
        "{report:?}"
    );
    let expected: Vec<(&str, &str)> = vec![
        ("apple", "green"),
        ("banana", "green"),
        ("cherry", "dark red"),
        ("date", "brown"),
        ("fig", "purple"),
        ("grape", "green"),
    ];
    let data: Vec<(&str, &str)> = report
        .data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(data, expected);
    // 1 membership + 1 blank + 13 commands in term 1, 1 blank + 8 commands in the next term.
    assert_eq!(report.final_index, 24, "{report:?}");
    assert!(lines
        .iter()
        .any(|l| l.contains("All 3 nodes hold the same 6 keys")));
}

#[tokio::test(start_paused = true)]
async fn failover_demo_passes_for_several_seeds() {
    for seed in 1..=8 {
        let mut lines = Vec::new();
        let report = run_failover(options(seed), |l| lines.push(l.to_string()))
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", lines.join("\n")));
        assert_ne!(report.new_leader, report.first_leader, "seed {seed}");
        assert_eq!(report.data.len(), 6, "seed {seed}");
    }
}

/// Instead of crashing, the leader is cut off: it keeps believing it leads for a while, but cannot
/// commit; the majority elects a new leader; once healed, the old leader steps down and catches up.
#[tokio::test(start_paused = true)]
async fn isolated_leader_is_replaced_and_catches_up_after_heal() {
    let mut cluster = Cluster::start(NODES, Config::default()).await.unwrap();
    cluster.initialize().await.unwrap();
    let (old, old_term) = cluster.wait_for_leader(0).await.unwrap();
    cluster.write(KvCommand::put("a", "1")).await.unwrap();

    cluster.router().isolate(old);
    let (new, new_term) = cluster.wait_for_leader(old_term).await.unwrap();
    assert_ne!(new, old);
    assert!(new_term > old_term);
    let put = cluster.write(KvCommand::put("b", "2")).await.unwrap();
    assert_eq!(put.data, KvResponse::Put { previous: None });
    assert_eq!(cluster.read("a").await.unwrap().as_deref(), Some("1"));

    cluster.router().heal();
    let index = cluster.metrics(new).unwrap().last_applied;
    cluster
        .wait_until("the old leader to follow the new one", |all| {
            let m = &all[&old];
            (m.role == Role::Follower && m.current_leader == Some(new) && m.last_applied >= index)
                .then_some(())
        })
        .await
        .unwrap();
    cluster.wait_for_applied(&NODES, index).await.unwrap();
    for id in NODES {
        let table = cluster.reader(id).unwrap().to_map();
        assert_eq!(table.len(), 2, "node {id}: {table:?}");
        assert_eq!(table.get("b").map(String::as_str), Some("2"), "node {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_refuses_writes_with_a_leader_hint() {
    let mut cluster = Cluster::start(NODES, Config::default()).await.unwrap();
    cluster.initialize().await.unwrap();
    let (leader, _) = cluster.wait_for_leader(0).await.unwrap();
    cluster
        .wait_until("every node to know the leader", |all| {
            all.values()
                .all(|m| m.current_leader == Some(leader))
                .then_some(())
        })
        .await
        .unwrap();
    let follower = NODES.into_iter().find(|&id| id != leader).unwrap();
    let err = cluster
        .raft(follower)
        .unwrap()
        .client_write(KvCommand::put("k", "v"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ClientWriteError::NotLeader {
            leader_hint: Some(leader)
        }
    );
    assert!(err.is_safe_to_retry());
    // Nothing was proposed.
    assert_eq!(cluster.read("k").await.unwrap(), None);
    cluster.shutdown().await;
}

/// A leader that loses its majority cannot commit. It steps down after an election timeout without
/// hearing from a majority (check-quorum), failing the pending write with `OutcomeUnknown` (it was
/// proposed, so it might still commit later); with no majority, no new leader can be elected.
#[tokio::test(start_paused = true)]
async fn without_a_majority_writes_fail_and_the_leader_steps_down() {
    let mut cluster = Cluster::start(NODES, Config::default()).await.unwrap();
    cluster.set_timeout(Duration::from_secs(2));
    cluster.initialize().await.unwrap();
    let (leader, _) = cluster.wait_for_leader(0).await.unwrap();
    for id in NODES.into_iter().filter(|&id| id != leader) {
        cluster.kill(id).await.unwrap();
    }
    let err = cluster.write(KvCommand::put("k", "v")).await.unwrap_err();
    match err {
        ClusterError::Write { node, source, .. } => {
            assert_eq!(node, leader);
            assert!(
                matches!(source, ClientWriteError::OutcomeUnknown { .. }),
                "{source}"
            );
            assert!(!source.is_safe_to_retry());
        }
        other => panic!("expected OutcomeUnknown, got {other}"),
    }
    assert_ne!(cluster.metrics(leader).unwrap().role, Role::Leader);
    let err = cluster.write(KvCommand::put("k", "v")).await.unwrap_err();
    assert!(matches!(err, ClusterError::Timeout { .. }), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn demo_fails_with_a_clear_error_when_a_step_takes_too_long() {
    let options = DemoOptions {
        step_timeout: Duration::from_millis(10), // shorter than any election
        ..DemoOptions::default()
    };
    let err = run_failover(options, |_| {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "timed out after 10 ms waiting for a leader of a term above 0"
    );
}
