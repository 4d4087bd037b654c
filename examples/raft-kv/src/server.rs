//! One `raft-kv` node as a server: [`FileStorage`] in a data directory, [`TcpNetwork`] and
//! [`TcpServer`] for Raft, and the HTTP API of [`crate::http`] for clients.
//!
//! [`start_node`] binds both listeners, opens (or creates) the data directory and starts the node.
//! Then, unless it is to join a running cluster, it calls `initialize_with` on every start, with
//! every peer as a voter and each peer's Raft and HTTP addresses in the membership
//! ([`raft_core::Node::addr`], [`raft_core::Node::data`]): on a new, empty directory that
//! bootstraps the cluster; on a restart the node refuses with `AlreadyInitialized` (expected,
//! ignored) and resumes from its data directory: the fresh in-memory state machine is restored from
//! the latest stored snapshot, if any, and the log after it is replayed.
//!
//! A node started with [`NodeConfig::join`] is not initialized: [`serve`] asks the cluster to add
//! it as a learner and, once caught up, to promote it (see [`crate::join`]). The membership tells
//! every node where the others are, so redirects reach a leader that joined after them.
//!
//! Snapshots follow [`NodeConfig::raft`]'s policy (`--snapshot-log-factor`,
//! `--snapshot-min-entries` or `--snapshot-after`, and `--snapshot-keep-entries`): when it is due,
//! the node snapshots the table into the data directory and compacts its log; a follower that has
//! fallen behind the compacted log receives the snapshot over TCP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use raft_core::{
    Config, InitializeError, Membership, Node, NodeId, Raft, StartError, StorageError,
};
use raft_net_tcp::{Security, TcpConfig, TcpError, TcpNetwork, TcpServer};
use raft_storage_file::FileStorage;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::KvRaft;
use crate::command::KvCommand;
use crate::http::{router, ApiState};
use crate::http_auth::ApiToken;
use crate::http_limits::HttpLimits;
use crate::join::{join, JoinConfig, JoinError};
use crate::metrics::KvMetrics;
use crate::state_machine::KvStateMachine;

/// One voter of the cluster as given to `--peers`: `ID=RAFT_ADDR/HTTP_ADDR`, e.g.
/// `1=127.0.0.1:7001/127.0.0.1:8001`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The node id.
    pub id: NodeId,
    /// Where its Raft (TCP) server listens.
    pub raft_addr: SocketAddr,
    /// Where its HTTP API listens (`host:port`), used in redirects.
    pub http_addr: String,
}

impl FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid peer {s:?}: expected ID=RAFT_ADDR/HTTP_ADDR");
        let (id, addrs) = s.trim().split_once('=').ok_or_else(bad)?;
        let (raft, http) = addrs.split_once('/').ok_or_else(bad)?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|e| format!("invalid peer id in {s:?}: {e}"))?;
        let raft_addr: SocketAddr = raft
            .trim()
            .parse()
            .map_err(|e| format!("invalid raft address in {s:?}: {e}"))?;
        let http_addr = http.trim().to_string();
        if http_addr.is_empty() || !http_addr.contains(':') {
            return Err(format!("invalid http address in {s:?}: expected HOST:PORT"));
        }
        Ok(PeerSpec {
            id,
            raft_addr,
            http_addr,
        })
    }
}

/// Parses a comma-separated `--peers` list; ids must be unique.
///
/// # Errors
/// A message naming the bad entry.
pub fn parse_peers(s: &str) -> Result<Vec<PeerSpec>, String> {
    let peers: Vec<PeerSpec> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &peers {
        if !seen.insert(p.id) {
            return Err(format!("peer id {} appears twice", p.id));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".to_string());
    }
    Ok(peers)
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (one of `peers`, unless it joins).
    pub id: NodeId,
    /// Address the Raft TCP server binds.
    pub raft_addr: SocketAddr,
    /// Address the HTTP API binds.
    pub http_addr: SocketAddr,
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Every voter of the cluster, this node included, to bootstrap it. When joining: addresses of
    /// other nodes to start with (may be empty; the membership tells the rest).
    pub peers: Vec<PeerSpec>,
    /// Join a running cluster rather than bootstrap one (`--join`).
    pub join: Option<JoinConfig>,
    /// The cluster id of the TCP handshake: nodes of another cluster are refused.
    pub cluster_id: String,
    /// Raft timing and the snapshot policy. Its `snapshot_chunk_size` must leave room in a TCP frame
    /// (checked at start, see [`TcpConfig::check_raft_config`]).
    pub raft: Config,
    /// What one HTTP client may take of the node.
    pub http_limits: HttpLimits,
    /// How Raft peers authenticate each other (mutual TLS, or explicitly insecure plaintext).
    pub security: Security,
    /// The bearer token HTTP clients must present, if any.
    pub api_token: Option<ApiToken>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding a listener or creating the data directory failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Opening the data directory failed (corrupt, or in use by another process).
    #[error("cannot open the data directory {dir}: {source}")]
    Storage {
        /// The directory.
        dir: PathBuf,
        /// The error.
        #[source]
        source: StorageError,
    },
    /// The TCP transport refused its configuration.
    #[error("TCP transport: {0}")]
    Tcp(#[from] TcpError),
    /// The node failed to start.
    #[error("the node failed to start: {0}")]
    Start(#[from] StartError),
    /// The node stopped on its own (a storage or state machine failure).
    #[error("the node stopped: {0}")]
    Stopped(String),
    /// `initialize` failed for another reason than "already initialized".
    #[error("initialize failed: {0}")]
    Initialize(#[from] InitializeError),
    /// Joining the cluster failed.
    #[error("joining the cluster failed: {0}")]
    Join(#[from] JoinError),
}

/// A running node: Raft, its TCP server and its HTTP server.
pub struct RunningNode {
    raft: KvRaft,
    tcp: TcpServer,
    http_addr: SocketAddr,
    http_stop: oneshot::Sender<()>,
    http_task: JoinHandle<()>,
    new_data: bool,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("id", &self.raft.id())
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl RunningNode {
    /// The node's handle.
    pub fn raft(&self) -> &KvRaft {
        &self.raft
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the Raft TCP server listens on.
    pub fn raft_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    /// Whether the data directory was created by this start (no earlier state).
    pub fn new_data(&self) -> bool {
        self.new_data
    }

    /// Stops the HTTP server, the TCP server and the node, in that order.
    pub async fn shutdown(self) {
        let _ = self.http_stop.send(());
        let _ = self.http_task.await;
        self.tcp.shutdown().await;
        self.raft.shutdown().await;
    }
}

/// Starts a node as described in the [module docs](self).
///
/// # Errors
/// See [`ServeError`].
pub async fn start_node(cfg: NodeConfig) -> Result<RunningNode, ServeError> {
    if cfg.join.is_none() && !cfg.peers.iter().any(|p| p.id == cfg.id) {
        return Err(ServeError::Config(format!(
            "--id {} is not one of the --peers",
            cfg.id
        )));
    }
    if let Some(join) = &cfg.join {
        let via = join.via.trim_start_matches("http://").trim_end_matches('/');
        if via == cfg.http_addr.to_string() {
            return Err(ServeError::Config(
                "--join must name another node of the cluster, not this node's own --http-addr"
                    .into(),
            ));
        }
        // Other nodes reach this one at the addresses it records in the membership.
        for (flag, addr) in [
            ("--raft-addr", cfg.raft_addr),
            ("--http-addr", cfg.http_addr),
        ] {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(ServeError::Config(format!(
                    "with --join, {flag} must be an address the other nodes reach (not {addr})"
                )));
            }
        }
    }
    if cfg.raft.max_entry_bytes < crate::http::MAX_COMMAND_BYTES {
        return Err(ServeError::Config(format!(
            "max_entry_bytes ({}) must hold the largest command the HTTP API accepts ({} bytes)",
            cfg.raft.max_entry_bytes,
            crate::http::MAX_COMMAND_BYTES
        )));
    }
    let tcp_config = TcpConfig::default();
    if let Some(room) = raft_net_tcp::descriptors::connection_room() {
        let caps = tcp_config.max_connections + cfg.http_limits.max_connections;
        if caps as u64 > room {
            tracing::warn!(
                room,
                caps,
                "the descriptor limit cannot hold both connection caps beyond the descriptors kept \
                 for storage; connections will be refused before the caps (raise ulimit -n)"
            );
        }
    }
    tcp_config.check_raft_config(&cfg.raft)?;
    let raft_listener =
        TcpListener::bind(cfg.raft_addr)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("cannot bind the raft address {}", cfg.raft_addr),
                source,
            })?;
    let http_listener =
        TcpListener::bind(cfg.http_addr)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("cannot bind the http address {}", cfg.http_addr),
                source,
            })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Io {
            what: "cannot read the http listener's address".into(),
            source,
        })?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServeError::Io {
        what: format!(
            "cannot create the data directory {}",
            cfg.data_dir.display()
        ),
        source,
    })?;
    let dir = cfg.data_dir.clone();
    let storage = tokio::task::spawn_blocking(move || FileStorage::<KvCommand>::open(&dir))
        .await
        .map_err(|e| ServeError::Config(format!("opening storage panicked: {e}")))?
        .map_err(|source| ServeError::Storage {
            dir: cfg.data_dir.clone(),
            source,
        })?;
    let mut storage = storage;
    let report = storage.recovery_report();
    let new_data = report.initialized;
    if report.initialized {
        tracing::info!(dir = %cfg.data_dir.display(), "new data directory");
    } else if !report.is_clean() {
        tracing::warn!(?report, "recovered the data directory after a crash");
    }
    if let Some(behind) = &report.log_behind_snapshot {
        // The snapshot covers every entry the log holds: continue the log after the snapshot.
        tracing::warn!(
            ?behind,
            "the log ends below the snapshot; discarding it to the snapshot point"
        );
        storage
            .reset_log_to_snapshot()
            .await
            .map_err(|source| ServeError::Storage {
                dir: cfg.data_dir.clone(),
                source,
            })?;
    }

    let network = TcpNetwork::new(
        cfg.cluster_id.clone(),
        cfg.id,
        cfg.peers
            .iter()
            .filter(|p| p.id != cfg.id)
            .map(|p| (p.id, p.raft_addr)),
        cfg.security.clone(),
        tcp_config.clone(),
    )?;
    let state_machine = KvStateMachine::new();
    let reader = state_machine.reader();
    let raft = Raft::start(cfg.id, cfg.raft.clone(), storage, network, state_machine).await?;
    let tcp = match TcpServer::start(
        raft_listener,
        raft.clone(),
        cfg.cluster_id.clone(),
        cfg.security.clone(),
        tcp_config,
    ) {
        Ok(tcp) => tcp,
        Err(e) => {
            raft.shutdown().await;
            return Err(e.into());
        }
    };
    let initialized = match &cfg.join {
        Some(join) => {
            tracing::info!(via = %join.via, "not initializing: this node joins a running cluster");
            Ok(())
        }
        None => match raft.initialize_with(bootstrap_membership(&cfg.peers)).await {
            Ok(()) => {
                tracing::info!(voters = ?cfg.peers.iter().map(|p| p.id).collect::<Vec<_>>(), "initialized a new cluster");
                Ok(())
            }
            Err(InitializeError::AlreadyInitialized) => {
                tracing::info!("resuming from the data directory (already initialized)");
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = initialized {
        tcp.shutdown().await;
        raft.shutdown().await;
        return Err(e.into());
    }

    let http_addrs: BTreeMap<NodeId, String> = cfg
        .peers
        .iter()
        .map(|p| (p.id, p.http_addr.clone()))
        .collect();
    let mut api = ApiState::new(raft.clone(), reader, http_addrs);
    api.limits = cfg.http_limits;
    api.token = cfg.api_token.clone();
    api.metrics = KvMetrics::new(&raft, Some(tcp.refused_counts()));
    let app = router(api);
    let (http_stop, stop_rx) = oneshot::channel::<()>();
    let limits = cfg.http_limits;
    let http_task = tokio::spawn(crate::http_server::serve(
        http_listener,
        app,
        limits,
        async {
            let _ = stop_rx.await;
        },
    ));
    Ok(RunningNode {
        raft,
        tcp,
        http_addr,
        http_stop,
        http_task,
        new_data,
    })
}

/// The membership a new cluster starts with: every peer a voter, reached at its Raft address, with
/// its HTTP address as the node's data. Every node given the same peers makes the same one.
pub fn bootstrap_membership(peers: &[PeerSpec]) -> Membership {
    peers.iter().fold(
        Membership::new(peers.iter().map(|p| p.id)),
        |membership, p| {
            membership.with_node(
                p.id,
                Node {
                    addr: p.raft_addr.to_string(),
                    data: p.http_addr.clone(),
                },
            )
        },
    )
}

/// Runs a node until `stop` completes (e.g. Ctrl-C) or the node stops on its own, then shuts it
/// down. A leader asked to stop first hands leadership to its most up-to-date follower (bounded by
/// twice the election timeout), so the cluster keeps taking writes with no election timeout of
/// unavailability; its pending writes are answered as the new leader commits them.
///
/// # Errors
/// If the node cannot start, or stops on its own ([`ServeError::Stopped`]).
pub async fn serve(
    cfg: NodeConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let (id, data_dir, join_cfg) = (cfg.id, cfg.data_dir.clone(), cfg.join.clone());
    let node = start_node(cfg).await?;
    let pid_file = data_dir.join(PID_FILE);
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(file = %pid_file.display(), error = %e, "cannot write the pid file");
    }
    println!(
        "raft-kv node {id}: raft {} http http://{} data {} pid {}",
        node.raft_addr(),
        node.http_addr(),
        data_dir.display(),
        std::process::id()
    );
    let mut metrics = node.raft().metrics();
    let stopped = async {
        loop {
            if let raft_core::NodeStatus::Stopped(reason) = &metrics.borrow_and_update().status {
                return reason.clone();
            }
            if metrics.changed().await.is_err() {
                return "the driver ended".to_string();
            }
        }
    };
    // The join runs beside the node: it needs the node serving (the leader replicates to it).
    let joining = async {
        if let Some(join_cfg) = &join_cfg {
            let (raft_addr, http_addr) =
                (node.raft_addr().to_string(), node.http_addr().to_string());
            join(
                node.raft(),
                &raft_addr,
                &http_addr,
                node.new_data(),
                join_cfg,
            )
            .await?;
        }
        std::future::pending::<Result<(), JoinError>>().await
    };
    let result = tokio::select! {
        Err(e) = joining => {
            tracing::error!(error = %e, "could not join the cluster");
            Err(ServeError::Join(e))
        }
        () = stop => {
            tracing::info!("shutting down");
            hand_over_leadership(node.raft()).await;
            Ok(())
        }
        reason = stopped => {
            tracing::error!(%reason, "the node stopped");
            Err(ServeError::Stopped(reason))
        }
    };
    node.shutdown().await;
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// If `raft` leads, transfers leadership to the most up-to-date follower and waits (a bounded time)
/// until it leads; logs the outcome either way. A stopping leader that does not transfer costs the
/// cluster an election timeout with no leader.
pub async fn hand_over_leadership(raft: &KvRaft) {
    if !raft.is_leader() {
        return;
    }
    tracing::info!("leader stopping: transferring leadership first");
    match raft.transfer_leadership(None).await {
        Ok(to) => tracing::info!(to, "leadership transferred"),
        Err(raft_core::TransferError::NoTarget) => {
            tracing::info!("no follower answered recently: stopping without a transfer")
        }
        Err(e) => tracing::warn!(error = %e, "leadership transfer failed; stopping anyway"),
    }
}

/// The file in a node's data directory that holds the serving process's id while it runs (for
/// operators' scripts: `kill "$(cat DATA_DIR/raft-kv.pid)"`).
pub const PID_FILE: &str = "raft-kv.pid";

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_refused() {
        let peers = parse_peers("1=127.0.0.1:7001/127.0.0.1:8001, 2=127.0.0.1:7002/localhost:8002")
            .unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[1].id, 2);
        assert_eq!(peers[1].raft_addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(peers[1].http_addr, "localhost:8002");
        for bad in [
            "",
            "1=127.0.0.1:7001",
            "x=127.0.0.1:7001/127.0.0.1:8001",
            "1=nope/127.0.0.1:8001",
            "1=127.0.0.1:7001/",
            "1=127.0.0.1:7001/a:1,1=127.0.0.1:7002/a:2",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad:?}");
        }
    }

    /// A one-node configuration on ephemeral ports, with `raft` and a data directory under `root`.
    fn one_node(root: &std::path::Path, raft: Config) -> NodeConfig {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        NodeConfig {
            id: 1,
            raft_addr: addr,
            http_addr: addr,
            data_dir: root.join("node"),
            peers: vec![PeerSpec {
                id: 1,
                raft_addr: addr,
                http_addr: "127.0.0.1:1".into(),
            }],
            cluster_id: "raft-kv".into(),
            raft,
            http_limits: HttpLimits::default(),
            security: Security::Insecure,
            api_token: None,
            join: None,
        }
    }

    #[tokio::test]
    async fn a_max_entry_size_below_what_the_api_accepts_is_refused_at_start() {
        let root = tempfile::tempdir().unwrap();
        let raft = Config {
            max_entry_bytes: crate::http::MAX_BODY_BYTES,
            ..Config::default()
        };
        match start_node(one_node(root.path(), raft)).await {
            Err(ServeError::Config(reason)) => {
                assert!(reason.contains("max_entry_bytes"), "{reason}")
            }
            Err(other) => panic!("expected a configuration error, got {other}"),
            Ok(_) => panic!("a node started that would refuse valid requests"),
        }
        assert!(!root.path().join("node").exists());
    }

    #[tokio::test]
    async fn a_snapshot_chunk_too_large_for_a_tcp_frame_is_refused_at_start() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("node");
        let raft = Config {
            snapshot_chunk_size: TcpConfig::default().max_frame_length,
            ..Config::default()
        };
        match start_node(one_node(root.path(), raft)).await {
            Err(ServeError::Tcp(TcpError::Config(reason))) => {
                assert!(reason.contains("snapshot_chunk_size"), "{reason}")
            }
            Err(other) => panic!("expected the TCP configuration error, got {other}"),
            Ok(_) => panic!("a node started with chunks that can never be sent"),
        }
        assert!(
            !data_dir.exists(),
            "refused before touching the data directory"
        );
    }
}
