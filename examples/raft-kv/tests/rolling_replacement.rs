//! Rolling replacement under load, with `raft-kv serve` processes on loopback (file storage, mutual
//! TLS, HTTP): a 3-node cluster takes writes from 8 concurrent clients while
//!
//! 1. node 4 starts with `--join` (learner, catches up, promoted);
//! 2. node 1 is killed with SIGKILL and removed;
//! 3. node 5 joins the same way;
//! 4. node 2 is made the leader, then removed (alive: it hands over and steps down).
//!
//! Then every acknowledged write is readable on the final members {3, 4, 5}, which agree on the
//! membership {3, 4, 5}; node 4, killed and restarted with `--join`, does not join again. Snapshots
//! are taken every few hundred entries, and the members' logs are compacted before node 5 joins, so it
//! catches up from a snapshot. The test prints the
//! write throughput during the changes and before them (figures in `BENCHMARKS.md`).

mod procs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procs::*;
use raft_kv::client::{ClientError, KvClient};
use raft_kv::http_members::{MembersBody, MembersRequest};

/// Acknowledged and failed writes, with when each was acknowledged.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<String, String>,
    acked_at: Vec<Instant>,
    failed: u64,
    failed_at: Vec<Instant>,
    /// Failed writes by cause: the status and error code, or the transport error's kind.
    failed_by: BTreeMap<String, u64>,
}

impl Tally {
    fn acked_between(&self, from: Instant, to: Instant) -> usize {
        self.acked_at
            .iter()
            .filter(|&&t| t >= from && t < to)
            .count()
    }
}

/// The HTTP addresses the writers send to: the members up at the time.
type Targets = Arc<Mutex<Vec<String>>>;

/// `WRITERS` clients writing unique keys until `stop`, each to the targets in turn (a follower
/// redirects to the leader). A write that fails (node down, no leader, outcome unknown) is counted
/// and not retried: only acknowledged writes are checked.
fn start_writers(
    targets: &Targets,
    tally: &Arc<Mutex<Tally>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (targets, tally, stop) = (targets.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let targets = targets.lock().unwrap();
                        targets[(w + n as usize) % targets.len()].clone()
                    };
                    let client = KvClient::new(&target).with_timeout(Duration::from_secs(5));
                    let (key, value) = (format!("w{w}-{n:06}"), format!("v{n}"));
                    n += 1;
                    match client.put(&key, &value).await {
                        Ok(reply) if reply.status.is_success() => {
                            let mut tally = tally.lock().unwrap();
                            tally.acked.insert(key, value);
                            tally.acked_at.push(Instant::now());
                        }
                        other => {
                            let cause = match other {
                                Ok(reply) => format!(
                                    "{} {}",
                                    reply.status.as_u16(),
                                    reply.error_code().unwrap_or("")
                                ),
                                Err(ClientError::Timeout(_)) => "client timeout".to_string(),
                                Err(e) if e.closed_before_answer() => "connection closed".into(),
                                Err(_) => "connection failed".to_string(),
                            };
                            {
                                let mut tally = tally.lock().unwrap();
                                tally.failed += 1;
                                tally.failed_at.push(Instant::now());
                                *tally.failed_by.entry(cause).or_default() += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

fn set_targets(targets: &Targets, procs: &Procs, ids: &[u64]) {
    *targets.lock().unwrap() = ids
        .iter()
        .map(|&id| procs.nodes[id as usize - 1].http.clone())
        .collect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_every_original_node_but_one_under_load_and_lose_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::cluster_with_spares(
        root.path(),
        3,
        2,
        &["--snapshot-after", "500", "--snapshot-keep-entries", "100"],
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Targets = Arc::default();
    let test = async {
        procs.start_all();
        wait_for_leader(&procs, 0).await;
        set_targets(&targets, &procs, &[1, 2, 3]);
        let writers = start_writers(&targets, &tally, &stop);

        // The steady rate, with the three original nodes.
        let steady_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let steady_to = Instant::now();

        // 1. Node 4 joins through node 1.
        let change_from = Instant::now();
        procs.start_joining(4, 1);
        wait_for_voters(&procs, 2, &[1, 2, 3, 4]).await;
        set_targets(&targets, &procs, &[2, 3, 4]);
        let joined = Instant::now();

        // 2. Node 1 dies and is removed.
        procs.kill(1);
        let view = change(&procs, &[2, 3, 4], MembersRequest::Remove(1)).await;
        assert_eq!(view.voters, [2, 3, 4]);
        let removed_1 = Instant::now();

        // 3. Node 5 joins through node 2. The members have compacted their logs, so the entries
        // it lacks are only in a snapshot: it catches up from one.
        wait_for_every_running_node(&procs, "compact their logs", |s| {
            s.last_log_index > s.log_entries
        })
        .await;
        procs.start_joining(5, 2);
        wait_for_voters(&procs, 3, &[2, 3, 4, 5]).await;
        set_targets(&targets, &procs, &[3, 4, 5]);
        let joined_5 = Instant::now();

        // 4. Node 2, made the leader, is removed, alive: it hands over to a remaining voter and
        // steps down. (While node 2 hands over, writes are refused with a redirect to the target.)
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = procs.client(2).status().await;
            if status.as_ref().is_ok_and(|s| s.role == "leader") {
                break;
            }
            // Asked of whoever leads (a follower redirects); a failed transfer is asked again.
            let transfer = procs.client(3).transfer_leader(Some(2)).await;
            assert!(
                Instant::now() < deadline,
                "node 2 did not take the lead: {status:?} {transfer:?}\n{}",
                procs.dump_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let led_by_2 = Instant::now();
        let view = change(&procs, &[3, 4, 5], MembersRequest::Remove(2)).await;
        assert_eq!(view.voters, [3, 4, 5]);
        let change_to = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writers_to = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        // Node 2 is no member: it stops. Every acknowledged write is on 3, 4 and 5.
        assert!(procs.terminate(2, Duration::from_secs(10)));
        assert_eq!(procs.running(), [3, 4, 5]);
        let tally = std::mem::take(&mut *tally.lock().unwrap());
        check_everywhere(&procs, &tally.acked).await;
        let views = agreed_membership(&procs).await;
        for view in views.values() {
            assert_eq!(view.nodes.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
        }

        // Node 4 restarted with `--join` finds itself a voter and does not join again.
        procs.kill(4);
        procs.start_joining(4, 3);
        wait_for_every_running_node(&procs, "see node 4 back", |s| {
            s.members == [3, 4, 5] && s.last_applied > 0
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while procs.log(4).matches("joined: this node is a voter").count() < 2 {
            assert!(Instant::now() < deadline, "{}", procs.log(4));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = procs.log(4);
        assert_eq!(
            log.matches("asking to be added as a learner").count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("asking to be promoted").count(), 1, "{log}");
        agreed_membership(&procs).await;

        let rate = |from: Instant, to: Instant| {
            tally.acked_between(from, to) as f64 / (to - from).as_secs_f64()
        };
        let phase = |from: Instant, to: Instant| {
            let failed = tally
                .failed_at
                .iter()
                .filter(|&&t| t >= from && t < to)
                .count();
            format!(
                "{:.0} writes/s over {:.2} s, {failed} failed",
                rate(from, to),
                (to - from).as_secs_f64()
            )
        };
        println!(
            "rolling replacement: {} writes acknowledged, {} failed {:?}\n  steady (3 voters): {}\n  \
             during the changes: {}\n    join 4: {}\n    kill -9 and remove 1: {}\n    \
             join 5: {}\n    transfer to 2: {}\n    remove 2 (the leader): {}\n  after (3, 4, 5): {}",
            tally.acked.len(),
            tally.failed,
            tally.failed_by,
            phase(steady_from, steady_to),
            phase(change_from, change_to),
            phase(change_from, joined),
            phase(joined, removed_1),
            phase(removed_1, joined_5),
            phase(joined_5, led_by_2),
            phase(led_by_2, change_to),
            phase(change_to, writers_to),
        );
    };
    if tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .is_err()
    {
        stop.store(true, Ordering::Relaxed);
        panic!("the test timed out\n{}", procs.dump_logs());
    }
    drop(procs);
    // The nodes' logs (nodes 4 and 5 log at `info`), for a look at a run's elections.
    if std::env::var_os("ROLLING_KEEP_LOGS").is_some() {
        println!("node logs kept in {}", root.keep().display());
    }
}

/// Every running node's own view of the membership, checked to be {3, 4, 5}, settled and
/// committed, with the same addresses everywhere.
async fn agreed_membership(procs: &Procs) -> BTreeMap<u64, MembersBody> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut views = BTreeMap::new();
        for id in procs.running() {
            if let Ok(view) = procs.client(id).members_body(false).await {
                views.insert(id, view);
            }
        }
        let agreed = views.len() == procs.running().len()
            && views
                .values()
                .all(|v| v.voters == [3, 4, 5] && v.learners.is_empty() && !v.joint && v.committed)
            && views.values().all(|v| v.nodes == views[&3].nodes);
        if agreed {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "the members do not agree: {views:#?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
