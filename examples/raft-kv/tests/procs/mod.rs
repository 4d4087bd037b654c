//! The multi-process harness: three `raft-kv serve` processes on loopback with mutual TLS, each with
//! its own data directory and log file, and the waits and checks the multi-process tests share.
//!
//! Every child is killed when the [`Procs`] is dropped, so a failing test leaves no process behind.

#![allow(dead_code)] // Each test binary uses part of the harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_kv::client::KvClient;
use raft_kv::http::StatusBody;
use raft_kv::http_members::{MembersBody, MembersRequest};

pub const NODES: u64 = 3;
pub const KEYS: usize = 1000;
pub const WRITERS: usize = 8;

pub struct Node {
    pub id: u64,
    pub raft: String,
    pub http: String,
    pub dir: PathBuf,
    /// The `serve` flags of its TLS files.
    pub tls: Vec<std::ffi::OsString>,
    pub child: Option<Child>,
}

/// Kills every child on drop, so a failing test leaves no process behind.
pub struct Procs {
    pub nodes: Vec<Node>,
    pub peers: String,
    /// How many nodes `peers` names (ids `1..=size`); the others are spares that join.
    pub size: u64,
    pub logs: PathBuf,
    /// Extra `serve` flags for every node.
    pub extra: Vec<String>,
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

/// `n` ports that are free now; see [`consecutive_free_ports`].
pub fn free_ports(n: usize) -> Vec<u16> {
    let n = u16::try_from(n).expect("a few ports");
    let base = consecutive_free_ports(n);
    (base..base + n).collect()
}

/// The first of `n` consecutive ports that are all free now (each bound and released), below the
/// kernel's ephemeral range (32768 and up on Linux). Ports handed out by the kernel (`bind` to port
/// 0) come from that range, as do the local ports of outgoing connections, so one of them could
/// take a node's port while the node is down between a kill and its restart; below it, nothing
/// takes a port but an explicit bind. Successive calls in one process take successive ranges, from
/// a start drawn from the process id and the clock, so that concurrent tests and test processes
/// spread out.
pub fn consecutive_free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        AtomicU32::new(std::process::id().wrapping_mul(7919).wrapping_add(nanos))
    });
    for _ in 0..200 {
        let offset = next.fetch_add(u32::from(n), Ordering::Relaxed) % (SPAN - u32::from(n));
        let base = u16::try_from(LOW + offset).expect("below 32768");
        if (base..base + n).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found in 200 tries");
}

impl Procs {
    pub fn new(root: &Path) -> Self {
        Self::with_flags(root, &[])
    }

    pub fn with_flags(root: &Path, extra: &[&str]) -> Self {
        Self::cluster(root, NODES, extra)
    }

    /// A cluster of `size` nodes (ids `1..=size`), each started with the `extra` flags.
    pub fn cluster(root: &Path, size: u64, extra: &[&str]) -> Self {
        Self::cluster_with_spares(root, size, 0, extra)
    }

    /// A cluster of `size` nodes (ids `1..=size`, the `--peers` that bootstrap it) and `spares`
    /// more (ids after them, with ports and certificates) to start later with
    /// [`start_joining`](Self::start_joining); all started with the `extra` flags.
    pub fn cluster_with_spares(root: &Path, size: u64, spares: u64, extra: &[&str]) -> Self {
        let all = size + spares;
        let ports = free_ports(2 * all as usize);
        // Mutual TLS, with certificates as `raft-kv cluster` makes them.
        let tls = raft_kv::tls_files::generate(&root.join("tls"), "raft-kv", 1..=all)
            .expect("test certificates");
        let nodes: Vec<Node> = (0..all as usize)
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
            .take(size as usize)
            .map(|n| format!("{}={}/{}", n.id, n.raft, n.http))
            .collect::<Vec<_>>()
            .join(",");
        Procs {
            nodes,
            peers,
            size,
            logs: root.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn start(&mut self, id: u64) {
        self.start_with(id, |_| {});
    }

    /// Starts node `id` with `configure` applied to its command first (e.g. to set a resource
    /// limit in the child with `CommandExt::pre_exec`).
    pub fn start_with(&mut self, id: u64, configure: impl FnOnce(&mut Command)) {
        let peers = self.peers.clone();
        self.spawn(id, "warn", |command| {
            command.args(["--peers", &peers]);
            configure(command);
        });
    }

    /// Starts node `id` with `--join` the HTTP address of node `via` (and no `--peers`), logging at
    /// `info` so its log tells the steps of the join.
    pub fn start_joining(&mut self, id: u64, via: u64) {
        let via = self.nodes[via as usize - 1].http.clone();
        self.spawn(id, "info", |command| {
            command.args(["--join", &via]);
        });
    }

    fn spawn(&mut self, id: u64, log_level: &str, configure: impl FnOnce(&mut Command)) {
        let node = &mut self.nodes[id as usize - 1];
        assert!(node.child.is_none(), "node {id} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("node-{id}.log")))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_raft-kv"));
        command
            .args(["--log", log_level, "serve", "--id", &id.to_string()])
            .args(["--raft-addr", &node.raft, "--http-addr", &node.http])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&node.tls)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        configure(&mut command);
        node.child = Some(command.spawn().unwrap());
    }

    /// Starts every node of `peers` (not the spares).
    pub fn start_all(&mut self) {
        for id in 1..=self.size {
            self.start(id);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) {
        let mut child = self.nodes[id as usize - 1].child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to running node `id`.
    pub fn signal(&self, id: u64, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid(id)).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid with a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit; returns whether it exited with
    /// success. A process still running after `within` is killed and counts as a failure.
    pub fn terminate(&mut self, id: u64, within: Duration) -> bool {
        let mut child = self.nodes[id as usize - 1].child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id of running node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.nodes[id as usize - 1]
            .child
            .as_ref()
            .expect("running")
            .id()
    }

    /// Waits (up to `within`) for node `id`'s process to exit on its own; returns its exit status,
    /// or `None` if it still runs (it is left running).
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[id as usize - 1];
        let deadline = Instant::now() + within;
        loop {
            let child = node.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().unwrap() {
                node.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether node `id`'s process was started and has not exited (it may not answer yet).
    pub fn is_alive(&mut self, id: u64) -> bool {
        self.nodes[id as usize - 1]
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Everything node `id` has logged (its stderr, over all its runs).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.logs.join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Node `id`'s HTTP address.
    #[allow(dead_code)]
    pub fn http_addr(&self, id: u64) -> &str {
        &self.nodes[id as usize - 1].http
    }

    pub fn client(&self, id: u64) -> KvClient {
        KvClient::new(&self.nodes[id as usize - 1].http).with_timeout(Duration::from_secs(5))
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn dump_logs(&self) -> String {
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

/// The resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`, Linux only);
/// `None` once the process is gone.
pub fn rss_of(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: usize = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// How many file descriptors process `pid` has open (entries of `/proc/<pid>/fd`, Linux only).
pub fn open_fds_of(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Raises this process's soft descriptor limit to `needed` if it is lower (within the hard limit),
/// and checks it holds `needed`: a test that opens many connections itself.
pub fn raise_own_descriptor_limit(needed: u64) {
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only access the struct they are given, which lives for the call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit), 0);
        if rlimit.rlim_cur < needed {
            rlimit.rlim_cur = needed.min(rlimit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit), 0);
        }
    }
    assert!(
        rlimit.rlim_cur >= needed,
        "the test needs {needed} descriptors; the hard limit is {}",
        rlimit.rlim_max
    );
}

pub async fn statuses(procs: &Procs) -> BTreeMap<u64, StatusBody> {
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
pub async fn wait_for_every_running_node(
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
pub async fn wait_for_leader(procs: &Procs, newer_than: u64) -> (u64, u64) {
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
pub async fn write_keys(
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
/// state machine, and, for a sample, a linearizable read (ReadIndex) served by each node.
pub async fn check_everywhere(procs: &Procs, acked: &BTreeMap<String, String>) {
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
        // Linearizable reads served by this node (ReadIndex, no log entry).
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

/// One HTTP/1.1 keep-alive connection spoken by hand: a client that holds its connection, e.g. to
/// keep talking to a node whose connection cap a flood has filled.
pub struct RawHttp {
    stream: tokio::net::TcpStream,
    /// Bytes read beyond the last answer.
    buffered: Vec<u8>,
}

impl RawHttp {
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        Ok(RawHttp {
            stream: tokio::net::TcpStream::connect(addr).await?,
            buffered: Vec::new(),
        })
    }

    /// Sends `method path` with `body` and returns the answer's status and body (the answer must
    /// carry a `content-length`, as the API's answers do). Fails if the connection closes first or
    /// no answer comes within 10 s.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nhost: raft-kv\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.exchange(&request).await
    }

    /// Sends `raw` (whole requests, as bytes) and returns the first answer's status and body, as
    /// [`request`](Self::request) does.
    pub async fn exchange(&mut self, raw: &[u8]) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(raw).await?;
        let read = async {
            loop {
                if let Some(answer) = parse_answer(&mut self.buffered)? {
                    return Ok(answer);
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before answering",
                    ));
                }
                self.buffered.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))?
    }
}

/// Takes one complete answer (status line, headers, `content-length` body) off the front of `buf`,
/// if it holds one.
fn parse_answer(buf: &mut Vec<u8>) -> std::io::Result<Option<(u16, String)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| bad("no content-length"))?;
    let total = end + 4 + length;
    if buf.len() < total {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[end + 4..total]).to_string();
    buf.drain(..total);
    Ok(Some((status, body)))
}

/// Sends `request` to the cluster through the nodes `via` in turn until it is answered `200`,
/// retrying what says "not now" (no leader yet, a change finishing, a node just killed).
pub async fn change(procs: &Procs, via: &[u64], request: MembersRequest) -> MembersBody {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "{request:?} did not complete: {last}\n{}",
            procs.dump_logs()
        );
        let client = procs.client(via[attempt % via.len()]);
        match client.change_members(&request).await {
            Ok(reply) if reply.status.is_success() => {
                return serde_json::from_value(reply.body).expect("a membership")
            }
            Ok(reply) => {
                assert!(
                    !reply.status.is_client_error() || reply.status.as_u16() == 409,
                    "{request:?} refused: {} {}",
                    reply.status,
                    reply.body
                );
                last = format!("{} {}", reply.status, reply.body);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// Waits until the leader's view (asked through `via`) has exactly `voters`, settled and committed.
pub async fn wait_for_voters(procs: &Procs, via: u64, voters: &[u64]) -> MembersBody {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = procs.client(via).members_body(true).await;
        if let Ok(view) = &view {
            if view.voters == voters && !view.joint && view.committed && view.learners.is_empty() {
                return view.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the voters did not become {voters:?}: {view:?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
