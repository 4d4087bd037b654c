//! # raft-bench
//!
//! Helpers behind the replication benches (`benches/replication.rs`) and the `loadgen` binary:
//! 3-node clusters in one process, concurrent client loops, latency percentiles.
//!
//! * [`NoopSm`]: the no-op state machine of the openraft-style workload (empty commands).
//! * [`MemCluster`]: `MemStorage` + `raft-net-mock` (no serialization, no faults).
//! * [`FileTcpCluster`]: `FileStorage` (fsync on, temporary directories) + `raft-net-tcp` on loopback,
//!   with mutual TLS (`RAFT_BENCH_TLS=0`: plaintext).
//! * `openraft_noop` (feature `openraft`, off by default): the `noop_mem` workload on openraft, for
//!   the side-by-side bench `benches/vs_openraft.rs`.
//!
//! The runtime is chosen with the `RAFT_BENCH_RT` environment variable: `current` (the default:
//! tokio's current-thread runtime, which measured fastest on the 2-core bench machine, see
//! `BENCHMARKS.md`) or `multi` (the multi-thread runtime with `RAFT_BENCH_WORKERS` workers, default 2).
//! `RAFT_BENCH_NODE_THREADS=1` ([`NODE_THREADS_VAR`]) runs each `MemCluster` node on a
//! current-thread runtime of its own thread instead (the clients stay on the bench's runtime).
#![warn(missing_docs)]

/// Every bench binary (criterion's, `loadgen`) links this crate, so they all allocate with mimalloc,
/// the allocator of the `raft-kv` server: `filetcp` measures what the server runs on, and both sides
/// of the openraft comparison share it (`BENCHMARKS.md`, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use raft_core::{
    Config, Entry, EntryPayload, HardState, LogId, Membership, Raft, RaftStorage, Snapshot,
    SnapshotMeta, SnapshotPolicy, StateMachine, StateMachineError,
};
use raft_kv::{KvCommand, KvReader, KvStateMachine};
use raft_net_mock::Router;
use raft_net_tcp::cert_gen::ClusterCa;
use raft_net_tcp::{Security, TcpConfig, TcpNetwork, TcpServer};
use raft_storage_file::FileStorage;
use raft_storage_mem::MemStorage;

pub mod cpu_use;
#[cfg(feature = "openraft")]
pub mod openraft_noop;

/// A state machine that does nothing: empty commands, empty responses.
#[derive(Debug, Default)]
pub struct NoopSm;

#[async_trait]
impl StateMachine for NoopSm {
    type Command = ();
    type Response = ();

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<()>]) -> Result<Vec<()>, StateMachineError> {
        Ok(vec![(); entries.len()])
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(Vec::new())
    }

    async fn restore(&mut self, _: &SnapshotMeta, _: &[u8]) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// The node configuration of every bench: the defaults, with election timeouts long enough that a
/// loaded 2-core machine does not trigger elections in the middle of a measurement. Snapshots follow
/// raft-core's default policy (once the log since the last snapshot is 4 times its size, and at
/// least 100,000 entries; log compacted to the last 10,000), so long runs include snapshotting the
/// state machine, as a deployment would.
///
/// Two environment variables replace the snapshot policy (to measure what snapshots cost):
/// `RAFT_BENCH_SNAPSHOT_AFTER=n`, `0` turns snapshots off, any other number snapshots after that
/// many applied entries; `RAFT_BENCH_SNAPSHOT_LOG_FACTOR=f`, the default policy with factor `f`.
///
/// # Panics
/// If either is set to something other than a number, or both are set: a mistyped value must not
/// silently measure the default policy under another name.
pub fn bench_config() -> Config {
    let mut config = Config {
        election_timeout_min: Duration::from_millis(1000),
        election_timeout_max: Duration::from_millis(2000),
        heartbeat_interval: Duration::from_millis(100),
        rpc_timeout: Duration::from_millis(1000),
        ..Config::default()
    };
    let after = std::env::var(SNAPSHOT_AFTER_VAR).ok();
    let factor = std::env::var(SNAPSHOT_LOG_FACTOR_VAR).ok();
    if let Some(policy) = snapshot_policy_from(after.as_deref(), factor.as_deref()) {
        config.snapshot_policy = policy;
    }
    config
}

/// The environment variable read by [`bench_config`] for a log-growth factor.
const SNAPSHOT_LOG_FACTOR_VAR: &str = "RAFT_BENCH_SNAPSHOT_LOG_FACTOR";

/// The environment variable read by [`bench_config`].
const SNAPSHOT_AFTER_VAR: &str = "RAFT_BENCH_SNAPSHOT_AFTER";

/// `RAFT_BENCH_TLS=0` runs the TCP scenarios in plaintext ([`Security::Insecure`]); by default they
/// use mutual TLS, as `raft-kv` does.
const TLS_VAR: &str = "RAFT_BENCH_TLS";

/// Whether the TCP scenarios use mutual TLS (see [`TLS_VAR`]).
///
/// # Panics
/// If `RAFT_BENCH_TLS` is set to something other than `0` or `1`.
fn tls_enabled() -> bool {
    match std::env::var(TLS_VAR).as_deref() {
        Err(_) | Ok("1") => true,
        Ok("0") => false,
        Ok(other) => panic!("{TLS_VAR}={other}: expected 0 or 1"),
    }
}

/// The snapshot policy values of [`SNAPSHOT_AFTER_VAR`] and [`SNAPSHOT_LOG_FACTOR_VAR`] ask for
/// (`None`: both unset, keep the default); panics on a value that is not a `u64`, or on both set.
fn snapshot_policy_from(after: Option<&str>, factor: Option<&str>) -> Option<SnapshotPolicy> {
    match (after, factor) {
        (None, None) => None,
        (Some(value), None) => {
            let n: u64 = value.parse().unwrap_or_else(|e| {
                panic!("{SNAPSHOT_AFTER_VAR}={value:?} is not a number of entries (0 = never): {e}")
            });
            Some(SnapshotPolicy::from_threshold(n))
        }
        (None, Some(value)) => {
            let factor: u64 = value.parse().unwrap_or_else(|e| {
                panic!("{SNAPSHOT_LOG_FACTOR_VAR}={value:?} is not a log growth factor: {e}")
            });
            Some(SnapshotPolicy::LogGrowth {
                factor,
                min_entries: SnapshotPolicy::DEFAULT_MIN_ENTRIES,
                max_log_bytes: SnapshotPolicy::DEFAULT_MAX_LOG_BYTES,
            })
        }
        (Some(_), Some(_)) => {
            panic!("set {SNAPSHOT_AFTER_VAR} or {SNAPSHOT_LOG_FACTOR_VAR}, not both")
        }
    }
}

/// The tokio runtime of the benches; see the [crate docs](crate) for the environment variables.
pub fn runtime() -> tokio::runtime::Runtime {
    let flavor = std::env::var("RAFT_BENCH_RT").unwrap_or_else(|_| "current".into());
    let mut builder = if flavor != "multi" {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let workers = std::env::var("RAFT_BENCH_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(2);
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

/// The runtime flavor [`runtime`] builds, for reports.
pub fn runtime_name() -> String {
    match std::env::var("RAFT_BENCH_RT").as_deref() {
        Ok("multi") => format!(
            "multi_thread({} workers)",
            std::env::var("RAFT_BENCH_WORKERS").unwrap_or_else(|_| "2".into())
        ),
        _ => "current_thread".into(),
    }
}

/// Waits until one of `nodes` is leader and returns its index in `nodes`.
async fn find_leader<SM: StateMachine>(nodes: &[Raft<SM>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(i) = nodes.iter().position(|n| n.is_leader()) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader elected within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Three nodes on `MemStorage` and the mock network (no faults).
pub struct MemCluster<SM: StateMachine> {
    nodes: Vec<Raft<SM>>,
    leader: usize,
    _router: Router<SM>,
    /// With [`NODE_THREADS_VAR`]: each node's thread, ended by its sender.
    node_threads: Vec<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

/// Set to `1`, [`MemCluster::start`] runs each node on a thread of its own, on a current-thread
/// runtime there (its driver, apply and peer tasks share that thread), while the clients run on
/// the bench's runtime.
pub const NODE_THREADS_VAR: &str = "RAFT_BENCH_NODE_THREADS";

fn node_threads() -> bool {
    std::env::var(NODE_THREADS_VAR).as_deref() == Ok("1")
}

/// Starts node `id` on a thread of its own with a current-thread runtime; returns its handle and
/// what stops the thread.
async fn start_on_own_thread<SM: StateMachine>(
    id: raft_core::NodeId,
    network: raft_net_mock::MockNetwork<SM>,
    sm: SM,
) -> (
    Raft<SM>,
    (
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("raft-node-{id}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("node runtime");
            rt.block_on(async move {
                let raft = Raft::start(id, bench_config(), MemStorage::new(), network, sm)
                    .await
                    .expect("start node");
                let _ = started_tx.send(raft);
                let _ = stop_rx.await;
            });
        })
        .expect("node thread");
    let raft = started_rx.await.expect("node started");
    (raft, (stop_tx, thread))
}

impl<SM: StateMachine> MemCluster<SM> {
    /// Starts nodes 1, 2, 3 with state machines from `make_sm`, initializes them and waits for a
    /// leader.
    pub async fn start(mut make_sm: impl FnMut() -> SM) -> Self {
        let router = Router::new(7);
        let mut nodes = Vec::new();
        let mut threads = Vec::new();
        for id in 1..=3 {
            let raft = if node_threads() {
                let (raft, thread) = start_on_own_thread(id, router.network(id), make_sm()).await;
                threads.push(thread);
                raft
            } else {
                Raft::start(
                    id,
                    bench_config(),
                    MemStorage::new(),
                    router.network(id),
                    make_sm(),
                )
                .await
                .expect("start node")
            };
            router.register(id, raft.clone());
            nodes.push(raft);
        }
        for n in &nodes {
            n.initialize([1, 2, 3]).await.expect("initialize");
        }
        let leader = find_leader(&nodes).await;
        MemCluster {
            nodes,
            leader,
            _router: router,
            node_threads: threads,
        }
    }

    /// The leader's handle.
    pub fn leader(&self) -> &Raft<SM> {
        &self.nodes[self.leader]
    }

    /// How many snapshots each node (1, 2, 3) has built since it started.
    pub fn snapshots_built(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.metrics().borrow().snapshots.built)
            .collect()
    }

    /// Stops every node (and their threads, with [`NODE_THREADS_VAR`]).
    pub async fn shutdown(self) {
        for n in &self.nodes {
            n.shutdown().await;
        }
        for (stop, thread) in self.node_threads {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// How many keys [`preloaded_kv_snapshot`] holds: every key [`kv_put`] writes for 1,024 clients.
pub const PRELOAD_CLIENTS: usize = 1024;

/// A snapshot of a `raft-kv` table holding every key that [`kv_put`] writes for `clients` clients
/// (1,000 per client, 100-byte values), in the state machine's current format, covering log entries
/// 1 to `clients * 1000` of term 1 with the membership {1, 2, 3}. Built by applying the puts to a
/// [`KvStateMachine`] directly (no cluster), in batches.
pub async fn preloaded_kv_snapshot(clients: usize) -> Snapshot {
    let mut sm = KvStateMachine::new();
    let mut index = 0;
    let mut batch = Vec::with_capacity(4096);
    for c in 0..clients {
        for i in 0..1000 {
            index += 1;
            batch.push(Entry {
                log_id: LogId::new(1, index),
                payload: EntryPayload::Command(kv_put(c, i)).into(),
            });
            if batch.len() == batch.capacity() {
                sm.apply(&batch).await.expect("preload apply");
                batch.clear();
            }
        }
    }
    sm.apply(&batch).await.expect("preload apply");
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(1, index),
            membership: Membership::new([1, 2, 3]),
        },
        data: sm.snapshot().await.expect("preload snapshot"),
    }
}

impl<SM: StateMachine> MemCluster<SM> {
    /// Starts nodes 1, 2, 3 whose storage already holds `snapshot` (and a hard state of its term),
    /// so each state machine is restored from it at start: a bulk preload without replicating the
    /// entries. The cluster's membership is the snapshot's; waits for a leader (one election
    /// timeout).
    pub async fn start_from_snapshot(mut make_sm: impl FnMut() -> SM, snapshot: &Snapshot) -> Self {
        let router = Router::new(7);
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let mut storage = MemStorage::new();
            storage
                .save_hard_state(&HardState {
                    term: snapshot.meta.last_log_id.term,
                    voted_for: None,
                })
                .await
                .expect("preload hard state");
            storage
                .install_snapshot(snapshot.clone())
                .await
                .expect("preload snapshot");
            let raft = Raft::start(id, bench_config(), storage, router.network(id), make_sm())
                .await
                .expect("start node");
            router.register(id, raft.clone());
            nodes.push(raft);
        }
        let leader = find_leader(&nodes).await;
        MemCluster {
            nodes,
            leader,
            _router: router,
            node_threads: Vec::new(),
        }
    }
}

/// Three `raft-kv` nodes on `FileStorage` (fsync on, in temporary directories) and TCP on loopback.
pub struct FileTcpCluster {
    nodes: Vec<Raft<KvStateMachine>>,
    /// Each node's view of its state machine, to serve reads.
    readers: Vec<KvReader>,
    servers: Vec<TcpServer>,
    leader: usize,
    _dirs: Vec<tempfile::TempDir>,
}

impl FileTcpCluster {
    /// Starts nodes 1, 2, 3 with [`bench_config`], initializes them and waits for a leader.
    pub async fn start() -> Self {
        Self::start_with(bench_config()).await
    }

    /// Starts nodes 1, 2, 3 with `config`, initializes them and waits for a leader.
    pub async fn start_with(config: Config) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            );
        }
        let peers: Vec<(u64, SocketAddr)> = listeners
            .iter()
            .zip(1..)
            .map(|(l, id)| (id, l.local_addr().expect("local addr")))
            .collect();
        let (mut nodes, mut servers, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        let mut readers = Vec::new();
        let ca = tls_enabled().then(|| ClusterCa::generate("bench").expect("bench CA"));
        for (listener, id) in listeners.into_iter().zip(1..) {
            let security = match &ca {
                Some(ca) => Security::Tls(ca.tls_config(id).expect("bench certificate")),
                None => Security::Insecure,
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let storage = FileStorage::<KvCommand>::open(dir.path()).expect("open storage");
            let network = TcpNetwork::new(
                "bench",
                id,
                peers.clone(),
                security.clone(),
                TcpConfig::default(),
            )
            .expect("tcp network");
            let state_machine = KvStateMachine::new();
            readers.push(state_machine.reader());
            let raft = Raft::start(id, config.clone(), storage, network, state_machine)
                .await
                .expect("start node");
            servers.push(
                TcpServer::start(
                    listener,
                    raft.clone(),
                    "bench",
                    security,
                    TcpConfig::default(),
                )
                .expect("tcp server"),
            );
            nodes.push(raft);
            dirs.push(dir);
        }
        for n in &nodes {
            n.initialize([1, 2, 3]).await.expect("initialize");
        }
        let leader = find_leader(&nodes).await;
        FileTcpCluster {
            nodes,
            readers,
            servers,
            leader,
            _dirs: dirs,
        }
    }

    /// The leader's handle.
    pub fn leader(&self) -> &Raft<KvStateMachine> {
        &self.nodes[self.leader]
    }

    /// The leader's view of its state machine.
    pub fn leader_reader(&self) -> &KvReader {
        &self.readers[self.leader]
    }

    /// Stops the servers and the nodes.
    pub async fn shutdown(self) {
        for s in self.servers {
            s.shutdown().await;
        }
        for n in &self.nodes {
            n.shutdown().await;
        }
    }
}

/// A `raft-kv` put of a 100-byte value; keys cycle over 1,000 per client.
pub fn kv_put(client: usize, i: u64) -> KvCommand {
    KvCommand::Put {
        key: format!("c{client}-k{}", i % 1000),
        value: VALUE_100.to_string(),
    }
}

const VALUE_100: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzAB";

/// How many of `total` operations client `c` of `clients` runs: an even split, the remainder to
/// the first clients.
fn share(total: u64, clients: usize, c: usize) -> u64 {
    total / clients as u64 + u64::from((c as u64) < total % clients as u64)
}

/// Runs `total` writes spread over `clients` concurrent tasks (each writes in a loop, waiting for
/// each answer), and returns the wall time they took.
pub async fn run_clients<SM, F>(leader: &Raft<SM>, clients: usize, total: u64, make: F) -> Duration
where
    SM: StateMachine,
    F: Fn(usize, u64) -> SM::Command + Send + Sync + Clone + 'static,
{
    let clients = clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let n = share(total, clients, c);
        if n == 0 {
            continue;
        }
        let raft = leader.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                if let Err(e) = raft.client_write(make(c, i)).await {
                    panic!("client write failed: {e}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    start.elapsed()
}

/// How a bench client reads a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// A `Get` command through the log, like a write (`client_write`).
    Log,
    /// `Raft::read_index` (one heartbeat round per batch of reads), then the leader's state machine.
    ReadIndex,
    /// `Raft::read_lease` (no round while the lease holds), then the leader's state machine.
    Lease,
}

/// The key client `client` reads at its `i`-th read (the keys [`kv_put`] writes).
fn read_key(client: usize, i: u64) -> String {
    format!("c{client}-k{}", i % 1000)
}

/// One read of `key` in `mode` on `leader`, whose state machine `reader` shows.
pub async fn read_once(
    leader: &Raft<KvStateMachine>,
    reader: &KvReader,
    mode: ReadMode,
    key: String,
) -> Option<String> {
    match mode {
        ReadMode::Log => match leader.client_write(KvCommand::Get { key }).await {
            Ok(response) => match response.data {
                raft_kv::KvResponse::Value(v) => v,
                other => panic!("a Get answered {other:?}"),
            },
            Err(e) => panic!("log read failed: {e}"),
        },
        ReadMode::ReadIndex | ReadMode::Lease => {
            let confirmed = if mode == ReadMode::Lease {
                leader.read_lease().await
            } else {
                leader.read_index().await
            };
            if let Err(e) = confirmed {
                panic!("read failed: {e}");
            }
            reader.get(&key)
        }
    }
}

/// Runs `total` operations spread over `clients` concurrent tasks, each in a loop waiting for each
/// answer: every `write_every`-th operation of a client is a put (`0`: none), the others reads in
/// `mode`. Returns the wall time they took.
pub async fn run_readers(
    cluster: &FileTcpCluster,
    clients: usize,
    total: u64,
    mode: ReadMode,
    write_every: u64,
) -> Duration {
    let clients = clients.max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let n = share(total, clients, c);
        if n == 0 {
            continue;
        }
        let raft = cluster.leader().clone();
        let reader = cluster.leader_reader().clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                if write_every > 0 && i % write_every == write_every - 1 {
                    if let Err(e) = raft.client_write(kv_put(c, i)).await {
                        panic!("client write failed: {e}");
                    }
                } else {
                    read_once(&raft, &reader, mode, read_key(c, i)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    start.elapsed()
}

/// Runs `n` reads in `mode` from one client and returns each one's latency.
pub async fn read_latencies(cluster: &FileTcpCluster, n: u64, mode: ReadMode) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        read_once(
            cluster.leader(),
            cluster.leader_reader(),
            mode,
            read_key(0, i),
        )
        .await;
        out.push(t.elapsed());
    }
    out
}

/// Runs `n` writes from one client and returns each one's latency.
///
/// The client is a task of the runtime, as in [`run_clients`] and as a server's request handler
/// would be: a loop awaited by `block_on` itself runs on the calling thread, outside a
/// multi-thread runtime's workers, and every write would then cross threads twice.
pub async fn latencies<SM, F>(leader: &Raft<SM>, n: u64, make: F) -> Vec<Duration>
where
    SM: StateMachine,
    F: Fn(usize, u64) -> SM::Command + Send + 'static,
{
    let leader = leader.clone();
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let cmd = make(0, i);
            let t = Instant::now();
            if let Err(e) = leader.client_write(cmd).await {
                panic!("client write failed: {e}");
            }
            out.push(t.elapsed());
        }
        out
    })
    .await
    .expect("client task")
}

/// How [`raw_fsync_latencies`] writes its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawWrite {
    /// Appended to a file that grows with each write: each `fdatasync` also commits the new length
    /// and newly allocated blocks.
    Append,
    /// Written, in order, into a file allocated (`fallocate`) to hold all of them beforehand, as
    /// `raft-storage-file` preallocates its segments: each `fdatasync` commits the data, and the
    /// blocks it is written to becoming initialized, but no new length.
    Preallocated,
}

/// Raw fsync latencies on the file system of the bench clusters' temporary directories: `threads`
/// threads at once, each writing 128 bytes to a file of its own `rounds` times, after the previous
/// ones, as `how` says, and calling `fdatasync` (`File::sync_data`) after each write, timed
/// together. Returns every thread's samples.
///
/// This is the yardstick of the 1-client `kv_file_tcp` latency, measured in the same run: one
/// thread is one fsync alone; three threads are what the three in-process nodes of a
/// [`FileTcpCluster`] do on one disk when each persists the same entry.
///
/// # Panics
/// If the temporary directory or a file in it cannot be created, allocated or written.
pub fn raw_fsync_latencies(rounds: usize, threads: usize, how: RawWrite) -> Vec<Duration> {
    use std::os::unix::fs::FileExt;
    const RECORD: usize = 128;
    let dir = tempfile::tempdir().expect("temp dir");
    let record = [0xA5u8; RECORD];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let path = dir.path().join(format!("fsync-{t}"));
                scope.spawn(move || {
                    let file = std::fs::File::create(path).expect("create fsync file");
                    if how == RawWrite::Preallocated {
                        let len = (rounds * RECORD) as u64;
                        <std::fs::File as fs4::FileExt>::allocate(&file, len).expect("fallocate");
                        file.sync_all().expect("fsync");
                    }
                    let mut out = Vec::with_capacity(rounds);
                    for k in 0..rounds {
                        let start = Instant::now();
                        file.write_all_at(&record, (k * RECORD) as u64)
                            .expect("write");
                        file.sync_data().expect("fdatasync");
                        out.push(start.elapsed());
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("fsync thread"))
            .collect()
    })
}

/// `(p50, p99, mean)` of `samples` (sorted in place).
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    (at(0.50), at(0.99), mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_after_sets_the_policy_and_refuses_what_is_not_a_number() {
        assert_eq!(snapshot_policy_from(None, None), None);
        assert_eq!(
            snapshot_policy_from(Some("0"), None),
            Some(SnapshotPolicy::Never)
        );
        assert_eq!(
            snapshot_policy_from(Some("10000"), None),
            Some(SnapshotPolicy::AfterAppliedEntries(10_000))
        );
        assert_eq!(
            snapshot_policy_from(None, Some("2")),
            Some(SnapshotPolicy::LogGrowth {
                factor: 2,
                min_entries: SnapshotPolicy::DEFAULT_MIN_ENTRIES,
                max_log_bytes: SnapshotPolicy::DEFAULT_MAX_LOG_BYTES,
            })
        );
        for bad in ["", "1e5", "10k", "-1", "never"] {
            let refused = std::panic::catch_unwind(|| snapshot_policy_from(Some(bad), None));
            assert!(refused.is_err(), "{bad:?} was accepted");
            let refused = std::panic::catch_unwind(|| snapshot_policy_from(None, Some(bad)));
            assert!(refused.is_err(), "factor {bad:?} was accepted");
        }
        let both = std::panic::catch_unwind(|| snapshot_policy_from(Some("5"), Some("2")));
        assert!(both.is_err(), "both variables were accepted");
    }
}
