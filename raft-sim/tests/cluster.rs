//! Whole-cluster scenarios on the simulation harness: elections, partitions, catch-up, concurrency,
//! log repair, crashes and restarts, and an unreliable network. All run on tokio's paused clock
//! (virtual time); every scenario ends with the harness's full check of the five Raft properties,
//! durability of acknowledged writes and linearizability of the client history.

use std::time::Duration;

use raft_core::{ClientWriteError, EntryPayload, NodeId, Role};
use raft_net_mock::Faults;
use raft_sim::{Cluster, ClusterOptions, Outcome, WriteError};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);

/// A cluster of `n` nodes with `seed`, whose failures print the command that reruns `test`.
async fn cluster(n: u64, seed: u64, test: &str) -> MemCluster {
    let opts = ClusterOptions::new(n, seed).replay(format!(
        "cargo test -p lucid-raft-sim --test cluster {test} -- --exact --nocapture   (seed {{seed}} is fixed in the test)"
    ));
    let c = Cluster::with_options(opts).await;
    c.initialize().await;
    c
}

/// Writes `count` fresh values through the leader, one after the other; all must succeed.
async fn write_ok(c: &MemCluster, count: usize) -> Vec<u64> {
    let client = c.client();
    let mut values = Vec::new();
    for _ in 0..count {
        let v = client.next_value();
        if let Err(e) = client.write(v).await {
            c.fail(&format!("write of {v} failed: {e}"));
        }
        values.push(v);
    }
    values
}

fn commands(log: &[raft_core::Entry<u64>]) -> Vec<u64> {
    log.iter()
        .filter_map(|e| match *e.payload {
            EntryPayload::Command(v) => Some(v),
            _ => None,
        })
        .collect()
}

async fn converge(c: &MemCluster, timeout: Duration) -> NodeId {
    match c.wait_converged(timeout).await {
        Ok(l) => l,
        Err(v) => c.fail(&v.0),
    }
}

// ----- elections -----

async fn cold_start(n: u64, seed: u64, test: &str) {
    let start = Instant::now();
    let c = cluster(n, seed, test).await;
    let leader = c.wait_for_leader(SEC).await;
    assert!(start.elapsed() <= SEC, "leader took {:?}", start.elapsed());
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    let term = leaders[0].1;
    // Let the leader's first heartbeats reach everyone, then nothing may change for 10 s.
    sleep(Duration::from_millis(200)).await;
    let observed_before = c.observed_leaders();
    sleep(10 * SEC).await;
    assert_eq!(c.leaders(), vec![(leader, term)], "{}", c.describe());
    for (id, m) in c.all_metrics() {
        assert_eq!(
            m.current_term,
            term,
            "node {id} changed term: {}",
            c.describe()
        );
        assert_eq!(m.current_leader, Some(leader), "node {id}");
    }
    assert_eq!(c.observed_leaders(), observed_before, "no further election");
    assert_eq!(
        c.observed_leaders().len(),
        1,
        "one term with a leader: {:?}",
        c.observed_leaders()
    );
    write_ok(&c, 10).await;
    c.assert_final(5 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn cold_start_three_nodes_elect_one_leader_and_stay_stable() {
    for seed in 0..5 {
        cold_start(
            3,
            seed,
            "cold_start_three_nodes_elect_one_leader_and_stay_stable",
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn cold_start_five_nodes_elect_one_leader_and_stay_stable() {
    for seed in 0..5 {
        cold_start(
            5,
            seed,
            "cold_start_five_nodes_elect_one_leader_and_stay_stable",
        )
        .await;
    }
}

// ----- partitions -----

#[tokio::test(start_paused = true)]
async fn isolated_leader_is_replaced_and_its_uncommitted_entries_are_overwritten() {
    let c = cluster(
        3,
        11,
        "isolated_leader_is_replaced_and_its_uncommitted_entries_are_overwritten",
    )
    .await;
    let old = c.wait_for_leader(SEC).await;
    let old_term = c.metrics(old).unwrap().current_term;
    write_ok(&c, 5).await;
    converge(&c, 2 * SEC).await;

    c.router().isolate(old);
    let client = c.client();
    let mut stale = Vec::new();
    for _ in 0..5 {
        let (client, v) = (client.clone(), client.next_value());
        stale.push((
            v,
            tokio::spawn(async move { client.write_to(old, v).await }),
        ));
    }
    let stale_values: Vec<u64> = stale.iter().map(|(v, _)| *v).collect();
    // The majority elects a new leader in a later term.
    let deadline = Instant::now() + 2 * SEC;
    let new = loop {
        if let Some((id, term)) = c
            .leaders()
            .into_iter()
            .find(|&(id, t)| id != old && t > old_term)
        {
            let _ = term;
            break id;
        }
        assert!(Instant::now() < deadline, "no new leader: {}", c.describe());
        sleep(Duration::from_millis(10)).await;
    };
    write_ok(&c, 5).await;
    // The writes the isolated leader took never succeed.
    for (v, task) in stale {
        match task.await.unwrap() {
            Ok(r) => c.fail(&format!(
                "write {v} to the isolated old leader succeeded at {}",
                r.log_id
            )),
            Err(WriteError::Unknown(ClientWriteError::OutcomeUnknown { .. }))
            | Err(WriteError::Timeout) => {}
            Err(e) => c.fail(&format!("write {v} to the isolated leader: unexpected {e}")),
        }
    }
    // It had appended them (uncommitted) and stepped down on its own.
    let old_log = commands(&c.durable_log(old));
    assert!(
        stale_values.iter().all(|v| old_log.contains(v)),
        "the isolated leader appended the writes it took: {stale_values:?} in {old_log:?}"
    );
    assert_ne!(
        c.metrics(old).unwrap().role,
        Role::Leader,
        "{}",
        c.describe()
    );

    c.router().heal();
    let leader = converge(&c, 5 * SEC).await;
    assert_ne!(leader, old);
    assert_eq!(
        c.durable_log(old),
        c.durable_log(leader),
        "logs equal after healing"
    );
    let final_values = commands(&c.durable_log(old));
    for v in &stale_values {
        assert!(
            !final_values.contains(v),
            "uncommitted write {v} of the old leader was replaced"
        );
    }
    let _ = new;
    c.assert_final(5 * SEC).await;
}

async fn no_progress_without_majority(c: &MemCluster) {
    let commits: Vec<_> = c
        .all_metrics()
        .values()
        .map(|m| (m.id, m.commit_index))
        .collect();
    // A leader cut off from the majority steps down within an election timeout or so.
    sleep(SEC).await;
    let client = c.client();
    let mut writes = Vec::new();
    for _ in 0..5 {
        let (client, v) = (client.clone(), client.next_value());
        writes.push(tokio::spawn(async move { client.write(v).await }));
    }
    for _ in 0..300 {
        assert!(
            c.leaders().is_empty(),
            "a leader without a majority: {}",
            c.describe()
        );
        sleep(Duration::from_millis(10)).await;
    }
    for w in writes {
        match w.await.unwrap() {
            Ok(r) => c.fail(&format!(
                "a write committed without a majority at {}",
                r.log_id
            )),
            Err(WriteError::NotProposed { .. }) | Err(WriteError::Timeout) => {}
            Err(WriteError::Unknown(ClientWriteError::OutcomeUnknown { .. })) => {}
            Err(e) => c.fail(&format!("unexpected write error {e}")),
        }
    }
    let after: Vec<_> = c
        .all_metrics()
        .values()
        .map(|m| (m.id, m.commit_index))
        .collect();
    assert_eq!(commits, after, "nothing commits without a majority");
    c.assert_safe();
}

#[tokio::test(start_paused = true)]
async fn no_leader_and_no_commit_without_a_majority_three_nodes() {
    let c = cluster(
        3,
        21,
        "no_leader_and_no_commit_without_a_majority_three_nodes",
    )
    .await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    converge(&c, 2 * SEC).await;
    // Isolate the leader and one follower: every node is alone.
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.router().isolate(leader);
    c.router().isolate(follower);
    no_progress_without_majority(&c).await;
    c.router().heal();
    c.wait_for_leader(5 * SEC).await;
    write_ok(&c, 5).await;
    c.assert_final(5 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn no_leader_and_no_commit_without_a_majority_five_nodes() {
    let c = cluster(
        5,
        22,
        "no_leader_and_no_commit_without_a_majority_five_nodes",
    )
    .await;
    c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    converge(&c, 2 * SEC).await;
    c.router().partition(&[&[1, 2], &[3, 4], &[5]]);
    no_progress_without_majority(&c).await;
    // A majority again (3 of 5): progress resumes on that side, the other side stays quiet.
    c.router().partition(&[&[1, 2, 5], &[3, 4]]);
    let deadline = Instant::now() + 3 * SEC;
    while !c.leaders().iter().any(|(id, _)| [1, 2, 5].contains(id)) {
        assert!(
            Instant::now() < deadline,
            "no leader in the majority: {}",
            c.describe()
        );
        sleep(Duration::from_millis(10)).await;
    }
    write_ok(&c, 5).await;
    c.router().heal();
    write_ok(&c, 5).await;
    c.assert_final(5 * SEC).await;
}

#[tokio::test(start_paused = true)]
async fn disconnected_follower_catches_up() {
    let c = cluster(3, 31, "disconnected_follower_catches_up").await;
    let leader = c.wait_for_leader(SEC).await;
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    write_ok(&c, 10).await;
    c.router().isolate(follower);
    let behind = c.metrics(follower).unwrap().last_log_id;
    write_ok(&c, 200).await;
    assert_eq!(
        c.metrics(follower).unwrap().last_log_id,
        behind,
        "an isolated follower receives nothing"
    );
    c.router().heal();
    let leader = converge(&c, 5 * SEC).await;
    assert_eq!(c.durable_log(follower), c.durable_log(leader));
    assert_eq!(commands(&c.durable_log(follower)).len(), 210);
    c.assert_final(5 * SEC).await;
}

// ----- concurrency -----

#[tokio::test(start_paused = true)]
async fn many_concurrent_writers_all_commit_in_one_order() {
    let c = cluster(3, 41, "many_concurrent_writers_all_commit_in_one_order").await;
    c.wait_for_leader(SEC).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = c.client();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..20 {
                let v = client.next_value();
                results.push((v, client.write(v).await));
            }
            results
        }));
    }
    let mut acked = 0;
    for t in tasks {
        for (v, r) in t.await.unwrap() {
            match r {
                Ok(_) => acked += 1,
                Err(e) => c.fail(&format!("write {v} failed: {e}")),
            }
        }
    }
    assert_eq!(acked, 1000);
    let leader = converge(&c, 5 * SEC).await;
    assert_eq!(commands(&c.durable_log(leader)).len(), 1000);
    c.assert_final(5 * SEC).await;
}

// ----- log repair -----

#[tokio::test(start_paused = true)]
async fn leader_backs_up_quickly_over_many_conflicting_entries() {
    let c = cluster(
        5,
        51,
        "leader_backs_up_quickly_over_many_conflicting_entries",
    )
    .await;
    let old = c.wait_for_leader(SEC).await;
    let old_term = c.metrics(old).unwrap().current_term;
    // A long common prefix, so that resending the whole log would show.
    write_ok(&c, 2000).await;
    converge(&c, 2 * SEC).await;

    // The old leader, cut off, takes 60 writes it can never commit.
    c.router().isolate(old);
    let client = c.client();
    let mut stale = Vec::new();
    for _ in 0..60 {
        let (client, v) = (client.clone(), client.next_value());
        stale.push((
            v,
            tokio::spawn(async move { client.write_to(old, v).await }),
        ));
    }
    let stale_values: Vec<u64> = stale.iter().map(|(v, _)| *v).collect();
    // Meanwhile the others elect a leader and commit entries of their own at the same indexes...
    let deadline = Instant::now() + 2 * SEC;
    let second = loop {
        if let Some(&(id, _)) = c
            .leaders()
            .iter()
            .find(|&&(id, t)| id != old && t > old_term)
        {
            break id;
        }
        assert!(Instant::now() < deadline, "no new leader: {}", c.describe());
        sleep(Duration::from_millis(10)).await;
    };
    write_ok(&c, 20).await;
    for (_, t) in stale {
        assert!(
            t.await.unwrap().is_err(),
            "no write to the isolated leader succeeds"
        );
    }
    // ...and that leader is replaced too, so the leader that repairs the old one knows nothing of
    // where its log diverges: it must back up from its own last entry.
    c.crash(second).await;
    let deadline = Instant::now() + 2 * SEC;
    while !c.leaders().iter().any(|&(id, _)| id != old && id != second) {
        assert!(
            Instant::now() < deadline,
            "no third leader: {}",
            c.describe()
        );
        sleep(Duration::from_millis(10)).await;
    }
    write_ok(&c, 5).await;
    let old_log = commands(&c.durable_log(old));
    assert!(
        stale_values.iter().all(|v| old_log.contains(v)),
        "the old leader holds the 60 conflicting entries"
    );

    let before = c.stats();
    let healed = Instant::now();
    c.router().heal();
    let leader = converge(&c, 5 * SEC).await;
    let took = healed.elapsed();
    let after = c.stats();
    let rejections = after.total_conflicts() - before.total_conflicts();
    let sent = after.entries_sent.get(&(leader, old)).copied().unwrap_or(0)
        - before
            .entries_sent
            .get(&(leader, old))
            .copied()
            .unwrap_or(0);
    assert_eq!(c.durable_log(old), c.durable_log(leader));
    let final_values = commands(&c.durable_log(old));
    assert!(stale_values.iter().all(|v| !final_values.contains(v)));
    println!(
        "repaired 60 conflicting entries with {rejections} rejections, {sent} entries sent, in {took:?} (virtual)"
    );
    // Fast backtracking: one rejection skips a whole term, not one entry; and the repair resends the
    // entries after the divergence point, not the 2000-entry common prefix.
    assert!(
        (1..=5).contains(&rejections),
        "{rejections} AppendEntries rejections to repair 60 conflicting entries"
    );
    assert!(
        sent <= 200,
        "{sent} entries sent to repair a 60-entry divergence"
    );
    assert!(took <= SEC, "repair took {took:?} of virtual time");
    c.restart(second).await;
    c.assert_final(5 * SEC).await;
}

// ----- crashes -----

#[tokio::test(start_paused = true)]
async fn crash_and_restart_each_node_in_turn_during_writes() {
    let c = cluster(3, 61, "crash_and_restart_each_node_in_turn_during_writes").await;
    c.wait_for_leader(SEC).await;
    // A writer that keeps going through the crashes; unknown outcomes are fine, losses are not.
    let client = c.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if client.write(client.next_value()).await.is_ok() {
                    acked += 1;
                }
                // Without network delays a write takes no virtual time: pace the client, or virtual
                // time would never advance.
                sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    for id in c.ids() {
        sleep(Duration::from_millis(300)).await;
        c.crash(id).await;
        sleep(Duration::from_millis(700)).await;
        c.assert_safe();
        c.restart(id).await;
        // The restarted node catches up (replays the whole log) while the writer goes on.
        let leader = c.wait_for_leader(3 * SEC).await;
        let commit = c.metrics(leader).unwrap().commit_index;
        if let Err(v) = c.wait_applied(id, commit, 5 * SEC).await {
            c.fail(&v.0);
        }
    }
    // And the current leader, wherever it is.
    let leader = c.wait_for_leader(SEC).await;
    c.crash(leader).await;
    sleep(SEC).await;
    c.restart(leader).await;
    sleep(SEC).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(acked > 20, "only {acked} writes acknowledged");
    c.assert_final(10 * SEC).await;
    assert_eq!(c.stats().crashes, 4);
}

#[tokio::test(start_paused = true)]
async fn crash_of_all_nodes_at_once_loses_no_acknowledged_write() {
    let c = cluster(
        5,
        71,
        "crash_of_all_nodes_at_once_loses_no_acknowledged_write",
    )
    .await;
    c.wait_for_leader(SEC).await;
    write_ok(&c, 20).await;
    // Writes in flight when everything goes down.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = c.client();
        tasks.push(tokio::spawn(async move {
            let v = client.next_value();
            client.write(v).await
        }));
    }
    sleep(Duration::from_millis(3)).await;
    c.crash_all().await;
    for t in tasks {
        let _ = t.await.unwrap();
    }
    sleep(SEC).await;
    c.restart_all().await;
    c.wait_for_leader(3 * SEC).await;
    write_ok(&c, 20).await;
    // Once more, with no writes in flight.
    c.crash_all().await;
    c.restart_all().await;
    c.wait_for_leader(3 * SEC).await;
    write_ok(&c, 5).await;
    c.assert_final(10 * SEC).await;
    let history = c.history();
    let acked = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Acked(_)))
        .count();
    assert!(acked >= 45, "{acked} acknowledged");
    // The restarted state machines replayed the whole log.
    for id in c.ids() {
        assert!(c.applied(id).len() >= 3, "three incarnations of node {id}");
    }
}

// ----- unreliable network -----

#[tokio::test(start_paused = true)]
async fn long_run_on_an_unreliable_network_loses_nothing() {
    let c = cluster(5, 81, "long_run_on_an_unreliable_network_loses_nothing").await;
    c.wait_for_leader(SEC).await;
    c.router().set_faults(Faults {
        drop_prob: 0.1,
        delay_ms: (1, 30),
        duplicate_prob: 0.05,
        reorder_prob: 0.2,
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let client = c.client();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if client.write(client.next_value()).await.is_ok() {
                    acked += 1;
                }
                // Without network delays a write takes no virtual time: pace the client, or virtual
                // time would never advance.
                sleep(Duration::from_millis(5)).await;
            }
            acked
        }));
    }
    for round in 0..10 {
        sleep(2 * SEC).await;
        c.assert_safe();
        if round == 5 {
            // Some partitions on top of the noise.
            c.router().isolate(c.leader().unwrap_or(1));
        } else if round == 7 {
            c.router().heal();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = 0;
    for w in writers {
        acked += w.await.unwrap();
    }
    assert!(acked > 100, "only {acked} writes acknowledged");
    c.router().set_faults(Faults::default());
    c.router().heal();
    c.assert_final(10 * SEC).await;
    let stats = c.router().stats();
    assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
}

// ----- the harness itself -----

/// A storage that "forgets" its last entry when reopened: it acknowledged a write that does not
/// survive a crash. The harness must notice.
struct Forgetful {
    inner: MemStorage<u64>,
    forget: bool,
}

impl Forgetful {
    async fn forget_now(&mut self) -> Result<(), raft_core::StorageError> {
        use raft_core::RaftStorage;
        if std::mem::take(&mut self.forget) {
            let last = self.inner.log_state().await?.last_log_id.index;
            if last > 0 {
                self.inner.truncate(last).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl raft_core::RaftStorage<u64> for Forgetful {
    async fn hard_state(&mut self) -> Result<raft_core::HardState, raft_core::StorageError> {
        self.forget_now().await?;
        self.inner.hard_state().await
    }
    async fn save_hard_state(
        &mut self,
        s: &raft_core::HardState,
    ) -> Result<(), raft_core::StorageError> {
        self.inner.save_hard_state(s).await
    }
    async fn log_state(&mut self) -> Result<raft_core::LogState, raft_core::StorageError> {
        self.forget_now().await?;
        self.inner.log_state().await
    }
    async fn entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<raft_core::Entry<u64>>, raft_core::StorageError> {
        self.inner.entries(start, end).await
    }
    async fn append(&mut self, e: &[raft_core::Entry<u64>]) -> Result<(), raft_core::StorageError> {
        self.inner.append(e).await
    }
    async fn truncate(&mut self, from: u64) -> Result<(), raft_core::StorageError> {
        self.inner.truncate(from).await
    }
    async fn purge(&mut self, upto: u64) -> Result<(), raft_core::StorageError> {
        self.inner.purge(upto).await
    }
    async fn install_snapshot(
        &mut self,
        s: raft_core::Snapshot,
    ) -> Result<(), raft_core::StorageError> {
        self.inner.install_snapshot(s).await
    }
    async fn snapshot(&mut self) -> Result<Option<raft_core::Snapshot>, raft_core::StorageError> {
        self.inner.snapshot().await
    }
}

#[tokio::test(start_paused = true)]
async fn the_harness_catches_a_storage_that_loses_acknowledged_entries() {
    let mut handles = std::collections::BTreeMap::new();
    let c = Cluster::start_with(ClusterOptions::new(3, 91), move |id| {
        let reopened = handles.contains_key(&id);
        let handle = handles
            .entry(id)
            .or_insert_with(|| MemStorage::<u64>::new().handle());
        Forgetful {
            inner: handle.open(),
            forget: reopened,
        }
    })
    .await;
    c.initialize().await;
    let leader = c.wait_for_leader(SEC).await;
    let client = c.client();
    for _ in 0..10 {
        client.write(client.next_value()).await.unwrap();
    }
    assert_eq!(c.check_safety(), Ok(()));
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.crash(follower).await;
    c.restart(follower).await;
    let err = c
        .check_safety()
        .expect_err("a storage that loses data is caught");
    assert!(err.0.contains("durability"), "{err}");
}
