//! The router's transport features, on real `Raft` nodes over in-memory storage, on tokio's paused
//! clock (virtual time): connecting and disconnecting nodes, per-target statistics, the "hang"
//! unreachable mode, and reply-only delays.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use raft_core::{
    AppendEntriesRequest, Config, Entry, EntryPayload, InstallSnapshotRequest, LogId, Membership,
    NetworkError, NodeId, Raft, RaftNetwork, Role, SnapshotMeta, SnapshotPolicy, StateMachine,
    StateMachineError, VoteRequest,
};
use raft_net_mock::{Faults, Router, RpcCounts, TargetStats, UnreachableMode};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, timeout, Instant};

const SEC: Duration = Duration::from_secs(1);

/// Sums the numbers it is given; each write answers the new total.
#[derive(Default)]
struct Sum {
    total: u64,
}

#[async_trait]
impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        Ok(entries
            .iter()
            .map(|e| {
                if let EntryPayload::Command(n) = *e.payload {
                    self.total += n;
                }
                self.total
            })
            .collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(self.total.to_le_bytes().to_vec())
    }

    async fn restore(&mut self, _: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let bytes: [u8; 8] = data.try_into().map_err(StateMachineError::new)?;
        self.total = u64::from_le_bytes(bytes);
        Ok(())
    }
}

type SumRouter = Router<Sum>;

/// Starts nodes `1..=n` on a router seeded with `seed`, without initializing a cluster: they wait
/// as followers and send nothing until contacted.
async fn start_nodes(n: u64, seed: u64, config: &Config) -> SumRouter {
    let router = Router::new(seed);
    for id in 1..=n {
        let raft = Raft::start(
            id,
            config.clone(),
            MemStorage::new(),
            router.network(id),
            Sum::default(),
        )
        .await
        .expect("node starts");
        router.register(id, raft);
    }
    router
}

/// Starts nodes `1..=n` and makes them one cluster; returns once it has a leader.
async fn start_cluster(n: u64, seed: u64, config: &Config) -> (SumRouter, NodeId) {
    let router = start_nodes(n, seed, config).await;
    node(&router, 1)
        .initialize(1..=n)
        .await
        .expect("cluster initializes");
    let leader = wait_for_new_leader(&router, &(1..=n).collect::<Vec<_>>(), 0, 5 * SEC).await;
    (router, leader)
}

fn node(router: &SumRouter, id: NodeId) -> Raft<Sum> {
    router.node(id).expect("node is registered")
}

/// Waits until one of `among` leads in a term above `after_term`.
async fn wait_for_new_leader(
    router: &SumRouter,
    among: &[NodeId],
    after_term: u64,
    within: Duration,
) -> NodeId {
    let found = wait_until(within, || {
        among.iter().copied().find(|&id| {
            let m = node(router, id).metrics().borrow().clone();
            m.role == Role::Leader && m.current_term > after_term
        })
    })
    .await;
    found.unwrap_or_else(|| panic!("no leader among {among:?} above term {after_term}"))
}

/// Polls `check` every 5 ms of virtual time until it gives an answer or `within` passes.
async fn wait_until<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

fn term_of(router: &SumRouter, id: NodeId) -> u64 {
    node(router, id).metrics().borrow().current_term
}

fn applied_of(router: &SumRouter, id: NodeId) -> u64 {
    node(router, id).metrics().borrow().last_applied
}

async fn shutdown(router: &SumRouter) {
    for id in router.node_ids() {
        if let Some(raft) = router.unregister(id) {
            raft.shutdown().await;
        }
    }
}

fn vote_request(term: u64, candidate_id: NodeId) -> VoteRequest {
    VoteRequest {
        term,
        candidate_id,
        last_log_id: LogId::default(),
        leadership_transfer: false,
    }
}

fn is_unreachable<T: std::fmt::Debug>(answer: &Result<T, NetworkError>, target: NodeId) -> bool {
    matches!(answer, Err(NetworkError::Unreachable { target: t, .. }) if *t == target)
}

// ----- connect and disconnect -----

#[tokio::test(start_paused = true)]
async fn a_disconnected_leader_cannot_commit_and_the_others_elect_a_new_one() {
    let (router, old) = start_cluster(3, 11, &Config::default()).await;
    assert_eq!(
        node(&router, old)
            .client_write(1)
            .await
            .expect("write")
            .data,
        1
    );
    let old_term = term_of(&router, old);
    let rest: Vec<NodeId> = (1..=3).filter(|&id| id != old).collect();

    router.disconnect(old);
    assert!(!router.is_connected(old));
    assert!(!router.can_talk(old, rest[0]) && !router.can_talk(rest[1], old));
    assert!(router.can_talk(rest[0], rest[1]), "the others keep talking");

    // The write reaches no majority: it does not succeed, however long the old leader waits.
    let lost = timeout(5 * SEC, node(&router, old).client_write(100)).await;
    assert!(
        !matches!(lost, Ok(Ok(_))),
        "a disconnected leader committed: {lost:?}"
    );
    let new = wait_for_new_leader(&router, &rest, old_term, 5 * SEC).await;
    assert_eq!(
        node(&router, new)
            .client_write(10)
            .await
            .expect("write")
            .data,
        11
    );

    router.connect(old);
    assert!(router.is_connected(old) && router.can_talk(old, new));
    let leader_index = node(&router, new).metrics().borrow().last_applied;
    let caught_up = wait_until(5 * SEC, || {
        let m = node(&router, old).metrics().borrow().clone();
        (m.role == Role::Follower
            && m.current_leader == Some(new)
            && m.last_applied >= leader_index)
            .then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the old leader did not rejoin");
    // The old leader's write of 100 was never committed: the total is 1 + 10 (+ 0).
    assert_eq!(
        node(&router, new)
            .client_write(0)
            .await
            .expect("write")
            .data,
        11
    );
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn disconnection_and_partitions_are_undone_separately() {
    let router = start_nodes(3, 1, &Config::default()).await;
    assert!(router.is_connected(2), "nodes start connected");

    router.disconnect(2);
    router.partition(&[&[1], &[2, 3]]);
    router.heal();
    assert!(!router.is_connected(2), "heal leaves disconnections");
    assert!(!router.can_talk(2, 3) && !router.can_talk(1, 2));
    assert!(router.can_talk(1, 3), "heal removed the partition");
    router.connect(2);
    assert!(router.can_talk(1, 2) && router.can_talk(2, 3));

    router.isolate(3);
    router.connect(3);
    assert!(router.is_connected(3), "isolation is not disconnection");
    assert!(!router.can_talk(1, 3), "connect leaves isolation");
    router.heal();
    assert!(router.can_talk(1, 3));

    // A disconnection outlasts a crash and restart (unregister, register).
    router.disconnect(1);
    let raft = router.unregister(1).expect("registered");
    router.register(1, raft);
    assert!(!router.can_talk(1, 2));
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn a_disconnected_node_can_neither_send_nor_receive() {
    let router = start_nodes(3, 2, &Config::default()).await;
    router.disconnect(2);
    let start = Instant::now();
    let from_2 = router.network(2).vote(1, vote_request(1, 2)).await;
    let to_2 = router.network(1).vote(2, vote_request(1, 1)).await;
    assert!(is_unreachable(&from_2, 1), "{from_2:?}");
    assert!(is_unreachable(&to_2, 2), "{to_2:?}");
    assert_eq!(start.elapsed(), Duration::ZERO, "refusals are immediate");
    let between_others = router.network(1).vote(3, vote_request(1, 1)).await;
    assert!(between_others.is_ok(), "{between_others:?}");
    assert_eq!(router.stats().refused, 2);
    assert_eq!(router.stats().delivered, 1);
    shutdown(&router).await;
}

// ----- statistics per target -----

fn entries(count: u64) -> Vec<Entry<u64>> {
    (1..=count)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command(i).into(),
        })
        .collect()
}

fn append_request(entries: Vec<Entry<u64>>) -> AppendEntriesRequest<u64> {
    AppendEntriesRequest {
        term: 1,
        leader_id: 1,
        prev_log_id: LogId::default(),
        entries,
        leader_commit: 0,
        round: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn per_target_counts_of_known_calls() {
    let router = start_nodes(3, 3, &Config::default()).await;
    let net = router.network(1);
    for _ in 0..2 {
        net.vote(2, vote_request(1, 1))
            .await
            .expect("vote answered");
    }
    let chunk = InstallSnapshotRequest {
        term: 1,
        leader_id: 1,
        meta: SnapshotMeta {
            last_log_id: LogId::new(1, 5),
            membership: Membership::new([1, 2, 3]),
        },
        offset: 0,
        data: vec![7; 10],
        done: false,
    };
    net.install_snapshot(2, chunk)
        .await
        .expect("chunk answered");
    net.append_entries(3, append_request(entries(3)))
        .await
        .expect("append answered");
    net.append_entries(3, append_request(Vec::new()))
        .await
        .expect("heartbeat answered");
    router.disconnect(3);
    let refused = net.vote(3, vote_request(1, 1)).await;
    assert!(is_unreachable(&refused, 3));

    let to_2 = RpcCounts {
        vote: 2,
        append_entries: 0,
        install_snapshot: 1,
        ..RpcCounts::default()
    };
    assert_eq!(
        router.stats_for(2),
        TargetStats {
            sent: to_2,
            delivered: to_2,
            entries_sent: 0,
            snapshot_bytes_sent: 10,
        }
    );
    assert_eq!(
        router.stats_for(3),
        TargetStats {
            sent: RpcCounts {
                vote: 1,
                append_entries: 2,
                install_snapshot: 0,
                ..RpcCounts::default()
            },
            delivered: RpcCounts {
                vote: 0,
                append_entries: 2,
                install_snapshot: 0,
                ..RpcCounts::default()
            },
            entries_sent: 3,
            snapshot_bytes_sent: 0,
        }
    );
    assert_eq!(router.stats_for(1), TargetStats::default());
    assert_eq!(router.stats_for(2).sent.total(), 3);
    assert_eq!(
        router.target_stats().keys().copied().collect::<Vec<_>>(),
        vec![2, 3]
    );
    let totals = router.stats();
    assert_eq!(
        (
            totals.delivered,
            totals.refused,
            totals.snapshot_chunks_delivered
        ),
        (5, 1, 1)
    );
    assert_eq!(router.snapshot_chunks_delivered(2), 1);

    router.reset_stats();
    assert_eq!(router.stats(), Default::default());
    assert!(router.target_stats().is_empty());
    assert_eq!(router.stats_for(2), TargetStats::default());
    assert!(router.snapshot_arrivals(2).is_empty());
    assert!(!router.is_connected(3), "a reset leaves the links alone");
    shutdown(&router).await;
}

/// Each target's delivered requests add up to the router's totals.
fn assert_totals_agree(router: &SumRouter) {
    let per_target: u64 = router
        .target_stats()
        .values()
        .map(|t| t.delivered.total())
        .sum();
    let totals = router.stats();
    assert_eq!(per_target, totals.delivered + totals.duplicated);
}

#[tokio::test(start_paused = true)]
async fn per_target_counts_of_a_cluster_with_a_disconnected_follower() {
    let config = Config {
        snapshot_policy: SnapshotPolicy::Never,
        snapshot_keep_entries: 0,
        ..Config::default()
    };
    let (router, leader) = start_cluster(3, 4, &config).await;
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    let (cut, kept) = (followers[0], followers[1]);
    router.disconnect(cut);
    router.reset_stats();

    for v in 1..=5 {
        node(&router, leader).client_write(v).await.expect("write");
    }
    let to_kept = router.stats_for(kept);
    assert!(to_kept.entries_sent >= 5, "{to_kept:?}");
    assert!(to_kept.delivered.append_entries >= 1, "{to_kept:?}");
    assert_eq!(to_kept.delivered, to_kept.sent, "nothing lost: {to_kept:?}");
    let to_cut = router.stats_for(cut);
    assert!(to_cut.sent.append_entries >= 1, "{to_cut:?}");
    assert_eq!(to_cut.delivered, RpcCounts::default(), "{to_cut:?}");
    assert_eq!(
        router.stats_for(leader).delivered,
        RpcCounts::default(),
        "only the disconnected follower campaigns, and it reaches nobody"
    );
    assert_totals_agree(&router);

    // Compact the leader's log, so that the returning follower needs the snapshot.
    let snapshot = node(&router, leader)
        .trigger_snapshot()
        .await
        .expect("snapshot")
        .expect("something applied");
    router.reset_stats();
    router.connect(cut);
    let caught_up = wait_until(5 * SEC, || {
        (applied_of(&router, cut) >= snapshot.index).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the follower did not catch up");
    let to_cut = router.stats_for(cut);
    assert!(to_cut.delivered.install_snapshot >= 1, "{to_cut:?}");
    assert_eq!(
        to_cut.delivered.install_snapshot,
        router.snapshot_chunks_delivered(cut)
    );
    // `Sum` snapshots are 8 bytes.
    assert_eq!(
        to_cut.snapshot_bytes_sent,
        8 * to_cut.sent.install_snapshot,
        "{to_cut:?}"
    );
    assert_eq!(router.stats_for(kept).snapshot_bytes_sent, 0);
    assert_totals_agree(&router);
    shutdown(&router).await;
}

// ----- unreachable mode -----

#[test]
fn unreachable_mode_defaults() {
    assert_eq!(UnreachableMode::default(), UnreachableMode::Refuse);
    assert_eq!(
        UnreachableMode::hang(),
        UnreachableMode::Hang { max_ms: 7_000 }
    );
}

/// Sends `count` votes from 1 to `target` at once; returns how long each took to fail or answer.
async fn concurrent_votes(
    router: &SumRouter,
    target: NodeId,
    count: usize,
) -> Vec<(Duration, Result<(), NetworkError>)> {
    let mut calls = Vec::new();
    for _ in 0..count {
        let net = router.network(1);
        calls.push(tokio::spawn(async move {
            let start = Instant::now();
            let answer = net.vote(target, vote_request(1, 1)).await;
            (start.elapsed(), answer.map(|_| ()))
        }));
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.expect("call task"));
    }
    results
}

#[tokio::test(start_paused = true)]
async fn hang_mode_fails_unreachable_calls_after_a_random_wait() {
    let router = start_nodes(2, 5, &Config::default()).await;
    router.disconnect(2);

    for (took, answer) in concurrent_votes(&router, 2, 5).await {
        assert!(is_unreachable(&answer, 2), "{answer:?}");
        assert_eq!(took, Duration::ZERO, "refuse mode answers at once");
    }

    router.set_unreachable_mode(UnreachableMode::hang());
    assert_eq!(router.unreachable_mode(), UnreachableMode::hang());
    let results = concurrent_votes(&router, 2, 10).await;
    let mut waits = Vec::new();
    for (took, answer) in results {
        assert!(is_unreachable(&answer, 2), "{answer:?}");
        assert!(took <= Duration::from_millis(7_000), "{took:?}");
        waits.push(took);
    }
    waits.sort();
    waits.dedup();
    assert!(waits.len() > 1, "the waits are random: {waits:?}");
    assert!(waits[waits.len() - 1] > SEC, "{waits:?}");
    assert_eq!(router.stats().refused, 15);

    // A reachable target still answers at once.
    router.connect(2);
    for (took, answer) in concurrent_votes(&router, 2, 3).await {
        assert!(answer.is_ok(), "{answer:?}");
        assert_eq!(took, Duration::ZERO);
    }
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn hang_mode_also_delays_requests_cut_off_in_flight() {
    let router = start_nodes(2, 6, &Config::default()).await;
    router.set_faults(Faults {
        delay_ms: (100, 100),
        ..Faults::default()
    });
    router.set_unreachable_mode(UnreachableMode::Hang { max_ms: 2_000 });
    let cut_off = {
        let router = router.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(50)).await;
            router.disconnect(2);
        })
    };
    let results = concurrent_votes(&router, 2, 5).await;
    cut_off.await.expect("disconnect task");
    let mut longest = Duration::ZERO;
    for (took, answer) in results {
        assert!(is_unreachable(&answer, 2), "{answer:?}");
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took <= Duration::from_millis(2_100), "{took:?}");
        longest = longest.max(took);
    }
    assert!(longest > Duration::from_millis(100), "no call hung");
    assert_eq!(router.stats_for(2).delivered, RpcCounts::default());
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_keeps_committing_while_calls_to_a_disconnected_node_hang() {
    let (router, leader) = start_cluster(3, 7, &Config::default()).await;
    router.set_unreachable_mode(UnreachableMode::hang());
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    router.disconnect(follower);

    let start = Instant::now();
    for v in 1..=10 {
        node(&router, leader).client_write(v).await.expect("write");
    }
    assert!(
        start.elapsed() < SEC,
        "writes waited on hung calls: {:?}",
        start.elapsed()
    );
    assert!(router.stats().refused > 0, "the follower was never tried");
    shutdown(&router).await;
}

// ----- reply delay -----

#[tokio::test(start_paused = true)]
async fn a_reply_delay_holds_back_only_the_answer() {
    let router = start_nodes(2, 8, &Config::default()).await;
    assert_eq!(router.reply_delay(), None);
    router.set_reply_delay(Some((500, 500)));
    assert_eq!(router.reply_delay(), Some((500, 500)));

    let net = router.network(1);
    let call = tokio::spawn(async move {
        let start = Instant::now();
        let answer = net.vote(2, vote_request(5, 1)).await;
        (start.elapsed(), answer)
    });
    sleep(Duration::from_millis(10)).await;
    assert_eq!(term_of(&router, 2), 5, "the request was handled at once");
    assert_eq!(router.stats_for(2).delivered.vote, 1);
    assert!(!call.is_finished(), "the answer came back early");
    let (took, answer) = call.await.expect("call task");
    assert_eq!(answer.expect("answered").term, 5);
    assert_eq!(took, Duration::from_millis(500));

    router.set_reply_delay(None);
    let start = Instant::now();
    router
        .network(1)
        .vote(2, vote_request(5, 1))
        .await
        .expect("answered");
    assert_eq!(start.elapsed(), Duration::ZERO, "reply delay off again");
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_delay_reorders_answers() {
    let router = start_nodes(2, 9, &Config::default()).await;
    router.set_reply_delay(Some((0, 2_000)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let mut sent_at = BTreeMap::new();
    for i in 0..20u64 {
        sent_at.insert(i, start.elapsed());
        let net = router.network(1);
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let answer = net.vote(2, vote_request(1, 1)).await;
            let _ = done_tx.send((i, answer.is_ok()));
        });
        sleep(Duration::from_millis(10)).await;
    }
    drop(done_tx);
    let mut order = Vec::new();
    while let Some((i, ok)) = done_rx.recv().await {
        assert!(ok, "call {i} failed");
        order.push(i);
    }
    assert_eq!(order.len(), 20);
    assert_ne!(
        order,
        (0..20).collect::<Vec<_>>(),
        "answers came back in order"
    );
    // Every answer was back within the delay range of its request's sending.
    let last_sent = sent_at.values().max().copied().unwrap_or_default();
    assert!(start.elapsed() <= last_sent + Duration::from_millis(2_000));
    assert_eq!(router.stats_for(2).delivered.vote, 20);
    shutdown(&router).await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_commits_under_reply_delays() {
    let config = Config {
        election_timeout_min: Duration::from_millis(1_000),
        election_timeout_max: Duration::from_millis(2_000),
        heartbeat_interval: Duration::from_millis(100),
        rpc_timeout: Duration::from_millis(1_000),
        ..Config::default()
    };
    let router = start_nodes(3, 10, &config).await;
    router.set_reply_delay(Some((50, 400)));
    node(&router, 1)
        .initialize([1, 2, 3])
        .await
        .expect("cluster initializes");
    let leader = wait_for_new_leader(&router, &[1, 2, 3], 0, 20 * SEC).await;
    let start = Instant::now();
    let mut total = 0;
    for v in 1..=10 {
        total += v;
        let answer = node(&router, leader).client_write(v).await.expect("write");
        assert_eq!(answer.data, total);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(10 * 50),
        "each commit waits for a held answer: {:?}",
        start.elapsed()
    );
    let index = node(&router, leader).metrics().borrow().last_applied;
    let converged = wait_until(10 * SEC, || {
        (1..=3)
            .all(|id| applied_of(&router, id) >= index)
            .then_some(())
    })
    .await;
    assert!(converged.is_some(), "the followers did not catch up");
    shutdown(&router).await;
}

// ----- replay -----

/// Runs the same calls on a router seeded with `seed`, then draws one number from its generator.
async fn draw_after_calls(seed: u64, setup: impl Fn(&SumRouter)) -> u64 {
    let router = start_nodes(3, seed, &Config::default()).await;
    router.set_faults(Faults {
        delay_ms: (1, 50),
        duplicate_prob: 0.3,
        reorder_prob: 0.3,
        ..Faults::default()
    });
    router.disconnect(3);
    setup(&router);
    for target in [2, 3, 2] {
        let _ = router.network(1).vote(target, vote_request(1, 1)).await;
    }
    let drawn = router.random(0..u64::MAX);
    shutdown(&router).await;
    drawn
}

#[tokio::test(start_paused = true)]
async fn settings_that_are_off_draw_nothing() {
    let plain = draw_after_calls(12, |_| {}).await;
    let explicit_defaults = draw_after_calls(12, |r| {
        r.set_unreachable_mode(UnreachableMode::Refuse);
        r.set_reply_delay(None);
    })
    .await;
    assert_eq!(plain, explicit_defaults);
    let stats_reset = draw_after_calls(12, |r| r.reset_stats()).await;
    assert_eq!(plain, stats_reset);
    // Switched on, they draw (so the comparison above can tell).
    let hanging = draw_after_calls(12, |r| r.set_unreachable_mode(UnreachableMode::hang())).await;
    assert_ne!(plain, hanging);
    let delayed = draw_after_calls(12, |r| r.set_reply_delay(Some((0, 100)))).await;
    assert_ne!(plain, delayed);
}
