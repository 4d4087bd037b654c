//! Three `raft-kv serve` processes on loopback (file storage, TCP, HTTP): concurrent writes, the
//! leader killed with SIGKILL and restarted from its data directory, then all three killed and
//! restarted at once. Every acknowledged write must be readable from every node.
//!
//! With snapshots every 50 entries: a follower killed while the others compact their logs past it
//! catches up through InstallSnapshot over TCP, and every node restarts from its snapshot plus the
//! log after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_kv::client::KvClient;
use raft_kv::http::StatusBody;

const NODES: u64 = 3;
const KEYS: usize = 1000;
const WRITERS: usize = 8;

struct Node {
    id: u64,
    raft: String,
    http: String,
    dir: PathBuf,
    /// The `serve` flags of its TLS files.
    tls: Vec<std::ffi::OsString>,
    child: Option<Child>,
}

/// Kills every child on drop, so a failing test leaves no process behind.
struct Procs {
    nodes: Vec<Node>,
    peers: String,
    logs: PathBuf,
    /// Extra `serve` flags for every node.
    extra: Vec<String>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Procs {
    fn new(root: &Path) -> Self {
        Self::with_flags(root, &[])
    }

    fn with_flags(root: &Path, extra: &[&str]) -> Self {
        let ports = free_ports(2 * NODES as usize);
        // Mutual TLS, with certificates as `raft-kv cluster` makes them.
        let tls = raft_kv::tls_files::generate(&root.join("tls"), "raft-kv", 1..=NODES)
            .expect("test certificates");
        let nodes: Vec<Node> = (0..NODES as usize)
            .map(|i| Node {
                id: i as u64 + 1,
                raft: format!("127.0.0.1:{}", ports[2 * i]),
                http: format!("127.0.0.1:{}", ports[2 * i + 1]),
                dir: root.join(format!("node-{}", i + 1)),
                tls: tls[i].1.to_args(),
                child: None,
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}/{}", n.id, n.raft, n.http))
            .collect::<Vec<_>>()
            .join(",");
        Procs {
            nodes,
            peers,
            logs: root.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn start(&mut self, id: u64) {
        let node = &mut self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "node {id} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("node-{id}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raft-kv"))
            .args(["--log", "warn", "serve", "--id", &id.to_string()])
            .args(["--raft-addr", &node.raft, "--http-addr", &node.http])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--peers", &self.peers])
            .args(&node.tls)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        let mut child = self.nodes[id as usize - 1].child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn client(&self, id: u64) -> KvClient {
        KvClient::new(&self.nodes[id as usize - 1].http).with_timeout(Duration::from_secs(5))
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn dump_logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(self.logs.join(format!("node-{}.log", n.id)))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- node {} (last lines)\n", n.id));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

async fn statuses(procs: &Procs) -> BTreeMap<u64, StatusBody> {
    let mut out = BTreeMap::new();
    for id in procs.running() {
        if let Ok(s) = procs.client(id).status().await {
            out.insert(id, s);
        }
    }
    out
}

/// Waits (up to 20 s) until every running node answers `/status` and its status satisfies `done`;
/// fails the test with the statuses and the node logs if they do not. `what` completes "the running
/// nodes did not ...".
async fn wait_for_every_running_node(
    procs: &Procs,
    what: &str,
    done: impl Fn(&StatusBody) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = statuses(procs).await;
        if all.len() == procs.running().len() && all.values().all(&done) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the running nodes did not {what}: {all:?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a running node is leader of a term above `newer_than`; returns (id, term).
async fn wait_for_leader(procs: &Procs, newer_than: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = statuses(procs).await;
        if let Some((id, s)) = all
            .iter()
            .filter(|(_, s)| s.role == "leader" && s.term > newer_than)
            .max_by_key(|(_, s)| s.term)
        {
            return (*id, s.term);
        }
        assert!(
            Instant::now() < deadline,
            "no leader above term {newer_than}: {all:?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes keys `range` with `WRITERS` concurrent clients spread over `targets`; a failed write is
/// retried (a PUT of the same value is idempotent) until acknowledged. Returns the acknowledged writes.
async fn write_keys(
    procs: &Procs,
    targets: &[u64],
    range: std::ops::Range<usize>,
) -> BTreeMap<String, String> {
    let clients: Vec<KvClient> = targets.iter().map(|&id| procs.client(id)).collect();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(Mutex::new(range.clone()));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (clients, acked, next) = (clients.clone(), acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = w;
            loop {
                let Some(i) = next.lock().unwrap().next() else {
                    return;
                };
                let (key, value) = (format!("key-{i:04}"), format!("value-{i}"));
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let client = &clients[c % clients.len()];
                    match client.put(&key, &value).await {
                        Ok(reply) if reply.status.is_success() => {
                            acked.lock().unwrap().insert(key.clone(), value.clone());
                            break;
                        }
                        // Not acknowledged (no leader yet, outcome unknown, node down): retry,
                        // at another node.
                        _ => {
                            assert!(Instant::now() < deadline, "could not write {key}");
                            c += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// Waits until every running node has applied at least what the leader had committed after a
/// barrier write, then checks every acknowledged write on every node: a local (stale) read of its
/// state machine, and, for a sample, a linearizable read through the log from each node.
async fn check_everywhere(procs: &Procs, acked: &BTreeMap<String, String>) {
    let (leader, _) = wait_for_leader(procs, 0).await;
    let barrier = procs.client(leader);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !barrier
        .put("barrier", "x")
        .await
        .is_ok_and(|r| r.status.is_success())
    {
        assert!(Instant::now() < deadline, "barrier write failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = barrier.status().await.unwrap().commit_index;
    wait_for_every_running_node(procs, &format!("catch up to {target}"), |s| {
        s.last_applied >= target
    })
    .await;
    for id in procs.running() {
        let client = procs.client(id);
        let keys: Vec<(String, String)> =
            acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut tasks = Vec::new();
        for chunk in keys.chunks(keys.len().div_ceil(WRITERS).max(1)) {
            let (client, chunk) = (client.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                for (k, v) in chunk {
                    let got = client.get_local(&k).await.unwrap().unwrap();
                    assert_eq!(got.as_deref(), Some(v.as_str()), "node {id}, key {k}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Linearizable reads through the log, sent to this node (redirected to the leader).
        for (k, v) in acked.iter().step_by(97) {
            let got = client.get(k).await.unwrap().unwrap();
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "read of {k} via node {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_then_everyone_and_lose_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        for id in 1..=NODES {
            procs.start(id);
        }
        let (leader, term) = wait_for_leader(&procs, 0).await;
        // Each running node names its process in its data directory.
        for node in &procs.nodes {
            let pid = node.child.as_ref().map(Child::id).expect("running");
            let file = node.dir.join(raft_kv::server::PID_FILE);
            let text = std::fs::read_to_string(&file).expect("the pid file");
            assert_eq!(text.trim(), pid.to_string(), "{}", file.display());
        }

        // Half the keys with everyone up, through every node (followers redirect).
        let all: Vec<u64> = (1..=NODES).collect();
        let mut acked = write_keys(&procs, &all, 0..KEYS / 2).await;
        assert_eq!(acked.len(), KEYS / 2);

        // SIGKILL the leader; the rest elect a new one and keep taking writes.
        procs.kill(leader);
        let (new_leader, _) = wait_for_leader(&procs, term).await;
        assert_ne!(new_leader, leader);
        let rest = procs.running();
        acked.extend(write_keys(&procs, &rest, KEYS / 2..KEYS).await);
        assert_eq!(acked.len(), KEYS);

        // The killed node comes back from its data directory and catches up.
        procs.start(leader);
        check_everywhere(&procs, &acked).await;

        // Kill all three at once, restart them: nothing acknowledged is lost.
        for id in 1..=NODES {
            procs.kill(id);
        }
        for id in 1..=NODES {
            procs.start(id);
        }
        check_everywhere(&procs, &acked).await;
    };
    if tokio::time::timeout(Duration::from_secs(100), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

const SNAPSHOT_AFTER: u64 = 50;
const KEEP_ENTRIES: u64 = 10;

/// The index up to which `s`'s log was compacted (entries at or below it are only in its snapshot).
fn purged(s: &StatusBody) -> u64 {
    s.last_log_index.saturating_sub(s.log_entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_the_others_compact_catches_up_by_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let (after, keep) = (SNAPSHOT_AFTER.to_string(), KEEP_ENTRIES.to_string());
    let mut procs = Procs::with_flags(
        root.path(),
        &["--snapshot-after", &after, "--snapshot-keep-entries", &keep],
    );
    let test = async {
        for id in 1..=NODES {
            procs.start(id);
        }
        let (leader, _) = wait_for_leader(&procs, 0).await;
        let all: Vec<u64> = (1..=NODES).collect();
        let mut acked = write_keys(&procs, &all, 0..100).await;

        // SIGKILL a follower. It holds no entry past what the survivors hold now.
        let down = all.iter().copied().find(|&id| id != leader).unwrap();
        procs.kill(down);
        let behind = statuses(&procs)
            .await
            .values()
            .map(|s| s.last_log_index)
            .max()
            .unwrap();

        // The others take enough writes to snapshot several times and compact past `behind`.
        let rest = procs.running();
        acked.extend(write_keys(&procs, &rest, 100..400).await);
        assert_eq!(acked.len(), 400);
        wait_for_every_running_node(&procs, &format!("compact past {behind}"), |s| {
            purged(s) > behind
        })
        .await;

        // The killed node restarts: the entries it lacks exist only in the others' snapshots, so it
        // can only catch up through InstallSnapshot.
        procs.start(down);
        check_everywhere(&procs, &acked).await;
        let back = procs.client(down).status().await.unwrap();
        assert!(
            back.snapshot_index > behind,
            "node {down} holds no snapshot past its old log (up to {behind}): {back:?}"
        );

        // Kill all three at once and restart them: each comes back from its snapshot plus the log
        // after it, and nothing acknowledged is lost.
        for id in 1..=NODES {
            procs.kill(id);
        }
        for id in 1..=NODES {
            procs.start(id);
        }
        check_everywhere(&procs, &acked).await;
        for (id, s) in statuses(&procs).await {
            assert!(
                s.snapshot_index > behind,
                "node {id} restarted without its snapshot: {s:?}"
            );
            assert!(
                s.log_entries <= SNAPSHOT_AFTER + KEEP_ENTRIES + 50,
                "node {id}'s log is not compacted: {s:?}"
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(100), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}
