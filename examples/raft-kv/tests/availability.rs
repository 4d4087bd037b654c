//! Routine operations on a loaded three-process `raft-kv` cluster cost nothing: followers restarted
//! ten times by SIGTERM and ten times by SIGKILL, then the leader restarted five times by SIGTERM
//! (it hands leadership over before it stops), while writers put keys without pause.
//!
//! What is counted as a failed write: an answer that leaves its outcome unknown or refuses it for
//! another reason than "not here" (`500`, `504`, a `4xx`, a client timeout). Answers that say
//! nothing was proposed (`307` chains the client gives up on, `503 no_leader`, a refused
//! connection to a node that is down) are retried at another node and not counted: the client
//! follows them, as the server asks it to. So is a connection to a stopping node that closed
//! before any answer: the write is a `PUT`, idempotent, and is sent again elsewhere.

mod procs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use procs::*;
use raft_kv::client::{ClientError, KvClient};
use raft_kv::http_members::MembersRequest;

const WRITERS: usize = 4;

/// Writers putting keys in a loop until stopped, spread over every node.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, String>>>,
}

/// Whether `result` says nothing was proposed (retry elsewhere), as opposed to an outcome.
fn nothing_proposed(result: &Result<raft_kv::client::Reply, ClientError>) -> bool {
    match result {
        Ok(reply) => matches!(reply.error_code(), Some("no_leader") | Some("overloaded")),
        Err(ClientError::Redirect(_) | ClientError::RedirectUnreachable { .. }) => true,
        Err(e) if e.closed_before_answer() => true,
        Err(ClientError::Http { message, .. }) => {
            message.contains("ConnectError") || message.contains("Connection refused")
        }
        Err(_) => false,
    }
}

impl Load {
    fn start(procs: &Procs) -> Self {
        let clients: Vec<KvClient> = (1..=NODES).map(|id| procs.client(id)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (clients, stop, acked, failed) =
                    (clients.clone(), stop.clone(), acked.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut mine = BTreeMap::new();
                    let mut at = w;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (key, value) = (format!("w{w}-{n}"), format!("v{n}"));
                        let result = clients[at % clients.len()].put(&key, &value).await;
                        match &result {
                            Ok(reply) if reply.status.is_success() => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                mine.insert(key, value);
                                n += 1;
                            }
                            _ if nothing_proposed(&result) => {
                                at += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            _ => {
                                failed.lock().unwrap().push(format!("{key}: {result:?}"));
                                n += 1;
                                at += 1;
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        Load {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    fn failed(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }

    /// Waits until `more` further writes were acknowledged (the cluster takes writes).
    async fn wait_for_progress(&self, more: u64, procs: &Procs) {
        let target = self.acked() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "writes stalled at {}\n{}",
                self.acked(),
                procs.dump_logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// The highest term any running node reports.
async fn max_term(procs: &Procs) -> u64 {
    statuses(procs)
        .await
        .values()
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}

/// Waits until node `id` runs again and has applied what the leader had committed when it came
/// back.
async fn wait_caught_up(procs: &Procs, id: u64) {
    let (leader, _) = wait_for_leader(procs, 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let target = loop {
        if let Ok(s) = procs.client(leader).status().await {
            break s.commit_index;
        }
        assert!(Instant::now() < deadline, "the leader does not answer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        if procs
            .client(id)
            .status()
            .await
            .is_ok_and(|s| s.last_applied >= target)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not catch up to {target}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const STOP_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_restarts_cost_no_failed_writes_and_no_elections() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        procs.start_all();
        let (mut leader, term) = wait_for_leader(&procs, 0).await;
        wait_for_every_running_node(&procs, "follow the first leader", |s| {
            s.leader == Some(leader)
        })
        .await;
        let load = Load::start(&procs);
        load.wait_for_progress(50, &procs).await;

        // Followers, SIGTERM: no term change, no failed write.
        for round in 0..10 {
            let follower = (1..=NODES)
                .filter(|&id| id != leader)
                .nth(round % 2)
                .unwrap();
            assert!(
                procs.terminate(follower, STOP_WITHIN),
                "node {follower} did not stop cleanly"
            );
            load.wait_for_progress(20, &procs).await;
            procs.start(follower);
            wait_caught_up(&procs, follower).await;
            load.wait_for_progress(20, &procs).await;
        }
        assert_eq!(
            max_term(&procs).await,
            term,
            "SIGTERM rounds changed the term\n{}",
            procs.dump_logs()
        );
        assert_eq!(load.failed(), Vec::<String>::new(), "SIGTERM rounds");

        // Followers, SIGKILL: at most one term change in all.
        for round in 0..10 {
            let follower = (1..=NODES)
                .filter(|&id| id != leader)
                .nth(round % 2)
                .unwrap();
            procs.kill(follower);
            load.wait_for_progress(20, &procs).await;
            procs.start(follower);
            wait_caught_up(&procs, follower).await;
            load.wait_for_progress(20, &procs).await;
            leader = wait_for_leader(&procs, 0).await.0;
        }
        let after_kills = max_term(&procs).await;
        assert!(
            after_kills <= term + 1,
            "SIGKILL rounds: term {term} -> {after_kills}\n{}",
            procs.dump_logs()
        );
        assert_eq!(load.failed(), Vec::<String>::new(), "SIGKILL rounds");

        // The leader, SIGTERM: it hands leadership over first, one term each, no failed write.
        for _ in 0..5 {
            let (old, old_term) = wait_for_leader(&procs, 0).await;
            assert!(
                procs.terminate(old, STOP_WITHIN),
                "leader {old} did not stop cleanly"
            );
            let (new, new_term) = wait_for_leader(&procs, old_term).await;
            assert_ne!(new, old);
            assert_eq!(
                new_term,
                old_term + 1,
                "more than the transfer's election\n{}",
                procs.dump_logs()
            );
            load.wait_for_progress(20, &procs).await;
            procs.start(old);
            wait_caught_up(&procs, old).await;
            load.wait_for_progress(20, &procs).await;
        }
        assert_eq!(load.failed(), Vec::<String>::new(), "leader restarts");
        let acked = load.finish().await;
        assert!(acked.len() > 500, "only {} writes", acked.len());
        check_everywhere(&procs, &acked).await;
    };
    if tokio::time::timeout(Duration::from_secs(240), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_moves_leadership_on_request() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        procs.start_all();
        let (leader, term) = wait_for_leader(&procs, 0).await;
        let target = (1..=NODES).find(|&id| id != leader).unwrap();
        // Asked at a follower: redirected to the leader, which hands over to the named node.
        let asked_at = (1..=NODES)
            .find(|&id| id != leader && id != target)
            .unwrap();
        let reply = procs
            .client(asked_at)
            .transfer_leader(Some(target))
            .await
            .unwrap();
        assert!(reply.status.is_success(), "{reply:?}");
        assert_eq!(reply.body["leader"], target);
        let (now_leading, new_term) = wait_for_leader(&procs, term).await;
        assert_eq!((now_leading, new_term), (target, term + 1));
        // /status counts it: one transfer started by the old leader, an election by the new one.
        let old = procs.client(leader).status().await.unwrap();
        assert_eq!(
            (old.transfers_started, old.transfers_abandoned),
            (1, 0),
            "{old:?}"
        );
        let new = procs.client(target).status().await.unwrap();
        assert!(new.elections_started >= 1, "{new:?}");
        // Without a target: the most up-to-date follower.
        let reply = procs.client(target).transfer_leader(None).await.unwrap();
        assert!(reply.status.is_success(), "{reply:?}");
        let next = reply.body["leader"].as_u64().expect("a leader id");
        assert_ne!(next, target);
        // Not a voter.
        let reply = procs.client(next).transfer_leader(Some(9)).await.unwrap();
        assert_eq!(reply.status.as_u16(), 400, "{reply:?}");
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_just_restarted_waits_for_the_leader_instead_of_failing() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        procs.start_all();
        let (leader, term) = wait_for_leader(&procs, 0).await;
        let follower = (1..=NODES).find(|&id| id != leader).unwrap();
        assert!(procs.terminate(follower, Duration::from_secs(10)));
        procs.start(follower);
        // The first write the restarted node answers, as soon as its HTTP port is up: before it
        // has heard from the leader, it knows none, and used to answer 503 no_leader at once.
        // Raw HTTP: the bundled client would retry a 503 and hide it.
        let addr = procs.http_addr(follower).to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let addr = addr.clone();
            let answered = tokio::task::spawn_blocking(move || raw_put(&addr, "/kv/after-restart"))
                .await
                .unwrap();
            if let Some(status) = answered {
                break status;
            }
            assert!(Instant::now() < deadline, "node {follower} never answered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert!(
            status == 307 || status == 200,
            "the first write answered by restarted node {follower}: {status}"
        );
        assert_eq!(max_term(&procs).await, term, "the restart cost an election");
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_leader_handing_over_are_redirected_not_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        procs.start_all();
        let mut answers: BTreeMap<u16, u64> = BTreeMap::new();
        for round in 0..5 {
            let (old, term) = wait_for_leader(&procs, 0).await;
            // Raw writers on the leader being replaced, before, during and after the hand-over:
            // between stepping down and hearing from its successor it knows no leader, and used
            // to answer 503 no_leader to the writes that arrived then.
            let old_addr = procs.http_addr(old).to_string();
            let writers = RawWriters::start(
                (0..WRITERS as u64).map(|w| (w, old_addr.clone())).collect(),
                &format!("r{round}"),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let reply = procs.client(old).transfer_leader(None).await.unwrap();
            assert!(reply.status.is_success(), "{reply:?}");
            wait_for_leader(&procs, term).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            for seen in writers.stop().await.into_values() {
                for (status, n) in seen {
                    *answers.entry(status).or_default() += n;
                }
            }
        }
        assert!(
            answers.keys().all(|&s| s == 200 || s == 307),
            "answers of the leaders handing over, by status: {answers:?}"
        );
        assert!(
            answers.get(&307).is_some_and(|&n| n > 0) && answers.get(&200).is_some_and(|&n| n > 0),
            "the writers saw no hand-over: {answers:?}"
        );
    };
    if tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_around_a_join_and_a_leader_removing_itself_are_redirected_not_refused() {
    let root = tempfile::tempdir().unwrap();
    let joining = NODES + 1;
    let mut procs = Procs::cluster_with_spares(root.path(), NODES, 1, &[]);
    let test = async {
        procs.start_all();
        let (leader, _) = wait_for_leader(&procs, 0).await;
        // Raw writers on every node, the joining one from the moment its port answers. A node
        // that joins knows the leader before the membership that tells the leader's address
        // reaches it; the remaining voters know the leader that removes itself, whose address
        // the new membership no longer has; the node elected next campaigns; the removed
        // leader, still running, hears from no one: all used to answer 503 no_leader.
        let writers = RawWriters::start(
            (1..=joining)
                .map(|id| (id, procs.http_addr(id).to_string()))
                .collect(),
            "n",
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        procs.start_joining(joining, 1);
        let everyone: Vec<u64> = (1..=joining).collect();
        wait_for_voters(&procs, leader, &everyone).await;
        let rest: Vec<u64> = everyone
            .iter()
            .copied()
            .filter(|&id| id != leader)
            .collect();
        change(&procs, &rest, MembersRequest::Remove(leader)).await;
        wait_for_voters(&procs, rest[0], &rest).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answers = writers.stop().await;
        assert!(
            answers
                .values()
                .all(|seen| seen.keys().all(|&s| s == 200 || s == 307)),
            "answers by node and status: {answers:?}\n{}",
            procs.dump_logs()
        );
        assert!(
            answers[&joining].values().sum::<u64>() > 0,
            "node {joining} answered nothing: {answers:?}"
        );
    };
    if tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

/// Threads that each `PUT` keys in a loop with [`raw_put`] (a new connection per write, no
/// retries, no redirects followed) until stopped, counting the answers by status.
struct RawWriters {
    stop: Arc<AtomicBool>,
    threads: Vec<tokio::task::JoinHandle<(u64, BTreeMap<u16, u64>)>>,
}

impl RawWriters {
    /// One writer per `(name, address)`, its keys prefixed with `prefix` and its name.
    fn start(targets: Vec<(u64, String)>, prefix: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = targets
            .into_iter()
            .map(|(name, addr)| {
                let (stop, prefix) = (stop.clone(), format!("/kv/{prefix}-{name}-"));
                tokio::task::spawn_blocking(move || {
                    let mut seen = BTreeMap::<u16, u64>::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match raw_put(&addr, &format!("{prefix}{n}")) {
                            Some(status) => *seen.entry(status).or_default() += 1,
                            // Not listening (yet, or any more): do not spin.
                            None => std::thread::sleep(Duration::from_millis(1)),
                        }
                        n += 1;
                    }
                    (name, seen)
                })
            })
            .collect();
        RawWriters { stop, threads }
    }

    /// Stops the writers; their answers by status, by writer.
    async fn stop(self) -> BTreeMap<u64, BTreeMap<u16, u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = BTreeMap::new();
        for thread in self.threads {
            let (name, seen) = thread.await.unwrap();
            answers.insert(name, seen);
        }
        answers
    }
}

/// The status code of a `PUT path` with a small body, sent by hand (no retries, no redirects);
/// `None` if the node does not answer.
fn raw_put(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A node stopped with SIGTERM answers every connection it had accepted, also one whose request
/// arrives after the node stopped accepting: closing a connection before its request is read would
/// leave its client without an answer (and, for a write, without knowing whether it happened).
/// Connections held open before the signal send their request once a new connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_answers_the_connections_it_accepted() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::cluster(root.path(), 1, &[]);
    procs.start(1);
    wait_for_leader(&procs, 0).await;
    let addr = procs.http_addr(1).to_string();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(RawHttp::connect(&addr).await.unwrap());
    }
    procs.signal(1, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (i, connection) in held.iter_mut().enumerate() {
        let answer = connection.request("GET", "/status", b"").await;
        assert!(
            matches!(answer, Ok((200, _))),
            "connection {i}: {answer:?}\n{}",
            procs.dump_logs()
        );
    }
    let exit = procs.wait_exit(1, Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}
