//! A follower far behind in bytes: three `raft-kv serve` processes; one follower is stopped with
//! SIGTERM while the leader takes 100 values of 1 MiB each, then restarted. It must catch up (its
//! `last_applied` reaches the leader's commit index) while a stream of small writes goes on, with
//! no term change on any node and no failed write at any point.
//!
//! What makes this work is the leader's byte budget per AppendEntries
//! (`raft_core::Config::max_append_bytes`, 4 MiB): without it, one AppendEntries to the returning
//! follower would carry hundreds of MiB, never arrive within the RPC timeout, and the follower,
//! hearing nothing from the leader, would start election after election.

mod procs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procs::*;
use raft_kv::client::KvClient;
use raft_kv::http::MAX_BODY_BYTES;

/// How many large values the leader takes while the follower is down.
const BIG_WRITES: usize = 100;
/// Concurrent writers of the large values.
const BIG_WRITERS: usize = 4;

/// A value of exactly [`MAX_BODY_BYTES`] (1 MiB, the largest body the API takes), distinct per `i`.
fn big_value(i: usize) -> String {
    let head = format!("big-{i:03}-");
    let mut value = String::with_capacity(MAX_BODY_BYTES);
    value.push_str(&head);
    while value.len() < MAX_BODY_BYTES {
        value.push(char::from(b'a' + (value.len() % 26) as u8));
    }
    value
}

/// What the background watcher saw on every node's `/status` during the test.
#[derive(Debug, Default)]
struct Watched {
    /// Every (node, term, leader) seen that differs from the expected term or leader.
    changes: Vec<(u64, u64, Option<u64>)>,
    samples: usize,
}

/// Polls every node's `/status` every 25 ms until `stop` is set, recording any term other than
/// `term` and any leader other than `leader`. A node that does not answer (stopped) is skipped.
fn watch_terms(
    clients: Vec<(u64, KvClient)>,
    term: u64,
    leader: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Watched> {
    tokio::spawn(async move {
        let mut watched = Watched::default();
        while !stop.load(Ordering::Relaxed) {
            for (id, client) in &clients {
                if let Ok(s) = client.status().await {
                    watched.samples += 1;
                    if s.term != term || s.leader.is_some_and(|l| l != leader) {
                        watched.changes.push((*id, s.term, s.leader));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        watched
    })
}

/// What the small-writes loop saw: every write must succeed.
#[derive(Debug, Default)]
struct SmallWrites {
    ok: usize,
    failures: Vec<String>,
    slowest: Duration,
}

/// Writes small values through `client` one after another until `stop` is set; each write is tried
/// once, and anything but a `200` is a failure.
fn small_writes(client: KvClient, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<SmallWrites> {
    tokio::spawn(async move {
        let mut seen = SmallWrites::default();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match client.put(&format!("small-{i:05}"), &format!("v{i}")).await {
                Ok(reply) if reply.status.is_success() => seen.ok += 1,
                Ok(reply) => seen
                    .failures
                    .push(format!("small-{i}: {} {}", reply.status, reply.body)),
                Err(e) => seen.failures.push(format!("small-{i}: {e}")),
            }
            seen.slowest = seen.slowest.max(started.elapsed());
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_100_mib_behind_catches_up_with_no_election_and_no_failed_write() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let started = Instant::now();
    let test = async {
        procs.start_all();
        let (leader, term) = wait_for_leader(&procs, 0).await;
        wait_for_every_running_node(
            &procs,
            &format!("follow node {leader} in term {term}"),
            |s| s.term == term && s.leader == Some(leader),
        )
        .await;
        let stop_watch = Arc::new(AtomicBool::new(false));
        let all: Vec<(u64, KvClient)> = (1..=NODES).map(|id| (id, procs.client(id))).collect();
        let watcher = watch_terms(all, term, leader, Arc::clone(&stop_watch));

        // Stop a follower cleanly.
        let follower = (1..=NODES).find(|&id| id != leader).unwrap();
        assert!(
            procs.terminate(follower, Duration::from_secs(10)),
            "node {follower} did not exit cleanly on SIGTERM\n{}",
            procs.dump_logs()
        );

        // 100 MiB of values through the leader, each write tried once.
        let to_leader = procs.client(leader).with_timeout(Duration::from_secs(15));
        let next = Arc::new(Mutex::new(0..BIG_WRITES));
        let big_started = Instant::now();
        let writers = (0..BIG_WRITERS).map(|_| {
            let (client, next) = (to_leader.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let Some(i) = next.lock().unwrap().next() else {
                        return failures;
                    };
                    match client.put(&format!("big-{i:03}"), &big_value(i)).await {
                        Ok(reply) if reply.status.is_success() => {}
                        Ok(reply) => {
                            failures.push(format!("big-{i}: {} {}", reply.status, reply.body))
                        }
                        Err(e) => failures.push(format!("big-{i}: {e}")),
                    }
                }
            })
        });
        let mut big_failures = Vec::new();
        for w in futures::future::join_all(writers).await {
            big_failures.extend(w.unwrap());
        }
        assert!(
            big_failures.is_empty(),
            "large writes failed: {big_failures:?}\n{}",
            procs.dump_logs()
        );
        let big_took = big_started.elapsed();

        // Bring the follower back while small writes keep coming.
        let stop_small = Arc::new(AtomicBool::new(false));
        let small = small_writes(procs.client(leader), Arc::clone(&stop_small));
        let target = procs.client(leader).status().await.unwrap().commit_index;
        procs.start(follower);
        let catch_up_started = Instant::now();
        let behind = procs.client(follower);
        let deadline = catch_up_started + Duration::from_secs(30);
        loop {
            if let Ok(s) = behind.status().await {
                if s.last_applied >= target {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {follower} did not catch up to {target} within 30 s: {:?}\n{}",
                statuses(&procs).await,
                procs.dump_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let catch_up = catch_up_started.elapsed();
        // Some more small writes once it is back in the ordinary flow, then stop.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop_small.store(true, Ordering::Relaxed);
        let small = small.await.unwrap();
        assert!(
            small.failures.is_empty(),
            "{} of {} small writes failed during the catch-up: {:?}\n{}",
            small.failures.len(),
            small.failures.len() + small.ok,
            small.failures,
            procs.dump_logs()
        );
        assert!(small.ok > 0, "no small write ran during the catch-up");

        // Everyone has everything, the follower holds the large values.
        check_everywhere(&procs, &Default::default()).await;
        for i in (0..BIG_WRITES).step_by(9) {
            let got = behind
                .get_local(&format!("big-{i:03}"))
                .await
                .unwrap()
                .unwrap();
            assert!(
                got.as_deref() == Some(big_value(i).as_str()),
                "node {follower} holds a wrong big-{i:03} ({} bytes)",
                got.map_or(0, |v| v.len())
            );
        }

        stop_watch.store(true, Ordering::Relaxed);
        let watched = watcher.await.unwrap();
        assert!(watched.samples > 0, "the watcher read no status");
        assert!(
            watched.changes.is_empty(),
            "the term or leader changed (expected term {term}, leader {leader}): {:?}\n{}",
            &watched.changes[..watched.changes.len().min(20)],
            procs.dump_logs()
        );
        let final_terms: Vec<u64> = statuses(&procs).await.values().map(|s| s.term).collect();
        assert!(final_terms.iter().all(|&t| t == term), "{final_terms:?}");
        eprintln!(
            "{BIG_WRITES} x {} KiB written in {big_took:?}; node {follower} caught up {target} \
             entries in {catch_up:?}; {} small writes (slowest {:?}); {} status samples, no term \
             change; whole test {:?}",
            MAX_BODY_BYTES / 1024,
            small.ok,
            small.slowest,
            watched.samples,
            started.elapsed()
        );
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}
