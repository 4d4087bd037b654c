//! Helpers shared by the integration tests: a trivial state machine, test certificates, nodes and
//! clusters served over TCP on loopback (with mutual TLS unless a test asks for plaintext), and
//! raw-socket tools for speaking (or mangling) the wire protocol by hand.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use raft_core::{
    ClientWriteError, Config, Entry, EntryPayload, LogId, NetworkError, NodeId, Raft, RaftNetwork,
    SnapshotMeta, StateMachine, StateMachineError, VoteRequest, VoteResponse,
};
use raft_net_tcp::cert_gen::{ClusterCa, NodeCertificate};
use raft_net_tcp::wire::{self, Hello, HelloReply};
use raft_net_tcp::{Security, TcpConfig, TcpNetwork, TcpServer, TlsConfig};
use raft_storage_mem::MemStorage;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, FramedWrite};

pub const CLUSTER: &str = "test-cluster";

/// Bounds every wait in the tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Logs to the test's captured output; `RUST_LOG=raft_net_tcp=debug` shows more.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "raft_net_tcp=info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Small backoff, so reconnect tests are quick; a connect timeout with room for TLS handshakes in a
/// debug build on a busy machine.
pub fn test_config() -> TcpConfig {
    TcpConfig {
        connect_timeout: Duration::from_secs(2),
        reconnect_backoff_min: Duration::from_millis(10),
        reconnect_backoff_max: Duration::from_millis(100),
        ..TcpConfig::default()
    }
}

/// The test cluster's CA, made once per test binary.
pub fn ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::generate(CLUSTER).expect("test CA"))
}

/// A certificate of the test CA for node `id`.
pub fn node_cert(id: NodeId) -> NodeCertificate {
    ca().issue(id).expect("node certificate")
}

/// Node `id`'s TLS configuration, from the test CA.
pub fn tls(id: NodeId) -> TlsConfig {
    ca().tls_config(id).expect("TLS configuration")
}

/// A client network of node `from` reaching node 1 at `addr`.
pub fn network_to(addr: SocketAddr, from: NodeId, security: Security) -> TcpNetwork<u64> {
    TcpNetwork::new(CLUSTER, from, [(1, addr)], security, test_config()).expect("network")
}

/// A state machine that records the commands it applies, in order, where the test can see them. Its
/// snapshot is that list (8 little-endian bytes per command), so a restored node's list shows what
/// the snapshot carried.
#[derive(Default, Clone)]
pub struct Recorder {
    pub applied: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    pub fn applied(&self) -> Vec<u64> {
        self.applied.lock().unwrap().clone()
    }
}

#[async_trait]
impl StateMachine for Recorder {
    type Command = u64;
    type Response = u64;

    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
        let mut applied = self.applied.lock().unwrap();
        Ok(entries
            .iter()
            .map(|e| {
                if let EntryPayload::Command(n) = *e.payload {
                    applied.push(n);
                }
                applied.len() as u64
            })
            .collect())
    }

    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        Ok(encode_applied(&self.applied()))
    }

    async fn restore(&mut self, _: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let applied = decode_applied(data).ok_or_else(|| {
            StateMachineError::new(format!(
                "recorder snapshot of {} bytes is not a list of u64",
                data.len()
            ))
        })?;
        *self.applied.lock().unwrap() = applied;
        Ok(())
    }
}

/// A [`Recorder`] snapshot of `applied`.
pub fn encode_applied(applied: &[u64]) -> Vec<u8> {
    applied.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// The list a [`Recorder`] snapshot holds; `None` if its length is not a multiple of 8.
pub fn decode_applied(data: &[u8]) -> Option<Vec<u64>> {
    if !data.len().is_multiple_of(8) {
        return None;
    }
    Some(
        data.chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    )
}

/// Binds `addr` with SO_REUSEADDR, so a restarted server gets its old port back at once.
pub fn bind_reuse(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub fn loopback_listener() -> TcpListener {
    bind_reuse("127.0.0.1:0".parse().unwrap()).expect("bind loopback")
}

/// A node served over TCP.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft<Recorder>,
    pub server: TcpServer,
    pub storage: raft_storage_mem::MemStorageHandle<u64>,
    pub sm: Recorder,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        self.raft.shutdown().await;
    }
}

/// Starts node `id` on `listener`, with a network reaching `peers`, and raft-core's default
/// configuration.
pub async fn start_node(
    id: NodeId,
    listener: TcpListener,
    peers: Vec<(NodeId, SocketAddr)>,
    storage: MemStorage<u64>,
    config: TcpConfig,
) -> Node {
    start_node_with(id, listener, peers, storage, config, Config::default()).await
}

/// [`start_node`] with the given raft-core configuration.
pub async fn start_node_with(
    id: NodeId,
    listener: TcpListener,
    peers: Vec<(NodeId, SocketAddr)>,
    storage: MemStorage<u64>,
    config: TcpConfig,
    raft_config: Config,
) -> Node {
    let security = Security::Tls(tls(id));
    start_node_secured(id, listener, peers, storage, config, raft_config, security).await
}

/// [`start_node_with`] with the given security.
pub async fn start_node_secured(
    id: NodeId,
    listener: TcpListener,
    peers: Vec<(NodeId, SocketAddr)>,
    storage: MemStorage<u64>,
    config: TcpConfig,
    raft_config: Config,
    security: Security,
) -> Node {
    let network =
        TcpNetwork::new(CLUSTER, id, peers, security.clone(), config.clone()).expect("network");
    let sm = Recorder::default();
    let handle = storage.handle();
    let raft = Raft::start(id, raft_config, storage, network, sm.clone())
        .await
        .expect("start node");
    let server =
        TcpServer::start(listener, raft.clone(), CLUSTER, security, config).expect("server");
    Node {
        id,
        raft,
        server,
        storage: handle,
        sm,
    }
}

/// A lone node 1, never initialized (so it never campaigns, and only answers), served on loopback
/// with TLS.
pub async fn lone_node(config: TcpConfig) -> Node {
    start_node(
        1,
        loopback_listener(),
        Vec::new(),
        MemStorage::new(),
        config,
    )
    .await
}

/// [`lone_node`] in plaintext ([`Security::Insecure`]).
pub async fn lone_node_insecure(config: TcpConfig) -> Node {
    start_node_secured(
        1,
        loopback_listener(),
        Vec::new(),
        MemStorage::new(),
        config,
        Config::default(),
        Security::Insecure,
    )
    .await
}

/// Starts nodes `1..=n` on loopback with TLS, initializes them as one cluster and waits for a
/// leader.
pub async fn start_cluster(n: u64, config: TcpConfig, raft_config: Config) -> Vec<Node> {
    let listeners: Vec<_> = (0..n).map(|_| loopback_listener()).collect();
    let peers: Vec<(NodeId, SocketAddr)> = listeners
        .iter()
        .zip(1..)
        .map(|(l, id)| (id, l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (listener, id) in listeners.into_iter().zip(1..) {
        nodes.push(
            start_node_with(
                id,
                listener,
                peers.clone(),
                MemStorage::new(),
                config.clone(),
                raft_config.clone(),
            )
            .await,
        );
    }
    for node in &nodes {
        node.raft.initialize(1..=n).await.expect("initialize");
    }
    nodes[0]
        .raft
        .wait_for_leader(PATIENCE)
        .await
        .expect("a leader is elected");
    nodes
}

/// Writes `command` through whichever node leads, retrying while leadership moves. Returns whether
/// the outcome is certain (false: an earlier attempt may also have committed).
pub async fn write(nodes: &[Node], command: u64) -> bool {
    let mut certain = true;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "write {command} never committed"
        );
        let leader = nodes.iter().find(|n| n.raft.is_leader());
        let Some(leader) = leader else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        match leader.raft.client_write(command).await {
            Ok(_) => return certain,
            Err(ClientWriteError::NotLeader { .. }) => {}
            Err(ClientWriteError::OutcomeUnknown { .. }) => certain = false,
            Err(e) => panic!("write {command}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every node in `nodes` has applied everything any of them knows committed.
pub async fn wait_for_all_applied(nodes: &[Node]) {
    let target = nodes
        .iter()
        .map(|n| n.raft.metrics().borrow().commit_index)
        .max()
        .unwrap();
    wait_until("every node has applied every write", || {
        nodes
            .iter()
            .all(|n| n.raft.metrics().borrow().last_applied >= target)
    })
    .await;
}

/// Asserts that the cluster commits a write with `command` and that every node applies it.
pub async fn assert_cluster_serves_writes(nodes: &[Node], command: u64) {
    write(nodes, command).await;
    wait_for_all_applied(nodes).await;
    for node in nodes {
        assert!(
            node.sm.applied().contains(&command),
            "node {} did not apply write {command}",
            node.id
        );
    }
}

/// Stops every node.
pub async fn stop_all(nodes: Vec<Node>) {
    for node in nodes {
        node.stop().await;
    }
}

pub fn vote_request(term: u64, candidate_id: NodeId) -> VoteRequest {
    VoteRequest {
        term,
        candidate_id,
        last_log_id: LogId::default(),
        leadership_transfer: false,
    }
}

/// A vote through `network` to `target`, bounded in time.
pub async fn vote(
    network: &TcpNetwork<u64>,
    target: NodeId,
    term: u64,
) -> Result<VoteResponse, NetworkError> {
    tokio::time::timeout(PATIENCE, network.vote(target, vote_request(term, 2)))
        .await
        .expect("a call took longer than the test's patience")
}

/// Asserts that a well-behaved client (a fresh network from node 2, with node 2's certificate)
/// gets an answer from node 1 at `addr`.
pub async fn assert_serves(addr: SocketAddr) {
    assert_serves_with(addr, Security::Tls(tls(2))).await;
}

/// [`assert_serves`] with the given security.
pub async fn assert_serves_with(addr: SocketAddr, security: Security) {
    let network = network_to(addr, 2, security);
    let answer = vote(&network, 1, 1).await;
    assert!(answer.is_ok(), "well-behaved client not served: {answer:?}");
}

/// A rustls client configuration trusting `trust`, presenting `cert` (or no certificate).
pub fn rustls_client(
    trust: &ClusterCa,
    cert: Option<&NodeCertificate>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trust.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(cert) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Opens a raw TLS connection to node `server` at `addr` with `config`; the error if the TLS
/// handshake fails on the client's side.
pub async fn raw_tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server: NodeId,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = raw_connect(addr).await;
    let name = ServerName::try_from(format!("node-{server}.{CLUSTER}.raft")).unwrap();
    tokio::time::timeout(PATIENCE, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
}

/// A raw TLS connection to node 1 at `addr` with node `from`'s certificate, handshake accepted.
pub async fn authenticated(addr: SocketAddr, from: NodeId) -> TlsStream<TcpStream> {
    let mut stream = raw_tls_connect(addr, rustls_client(ca(), Some(&node_cert(from))), 1)
        .await
        .expect("TLS handshake");
    let hello = Hello {
        from,
        ..good_hello()
    };
    assert_eq!(
        raw_handshake(&mut stream, &hello).await,
        HelloReply::Accepted { node_id: 1 }
    );
    stream
}

/// Opens a raw connection.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Frames `payload` with its length prefix, as the codec does.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Sends a handshake on a raw stream and returns the answer.
pub async fn raw_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
) -> HelloReply {
    let (read, write) = tokio::io::split(stream);
    let mut writer = FramedWrite::new(write, wire::codec(1 << 20));
    let mut reader = FramedRead::new(read, wire::codec(1 << 20));
    writer
        .send(wire::encode_hello(hello).unwrap())
        .await
        .expect("send hello");
    let reply: Bytes = tokio::time::timeout(PATIENCE, reader.next())
        .await
        .expect("handshake answer timed out")
        .expect("connection closed during handshake")
        .expect("bad frame")
        .freeze();
    assert!(
        reader.read_buffer().is_empty(),
        "the server sent more than its handshake answer"
    );
    wire::decode_hello_reply(&reply).expect("decodable handshake answer")
}

pub fn good_hello() -> Hello {
    Hello {
        cluster_id: CLUSTER.into(),
        from: 2,
        to: 1,
    }
}

/// Reads until the server closes the connection (end of stream or reset), returning what it sent.
/// Panics if the connection stays open.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    if let Err(e) = outcome {
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ),
            "unexpected read error: {e}"
        );
    }
    received
}

/// Waits until `cond` holds, polling every few milliseconds; panics after [`PATIENCE`].
pub async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Calls `vote` until it succeeds, returning the errors seen before.
pub async fn vote_until_ok(
    network: &TcpNetwork<u64>,
    target: NodeId,
) -> (VoteResponse, Vec<NetworkError>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut errors = Vec::new();
    loop {
        match vote(network, target, 1).await {
            Ok(r) => return (r, errors),
            Err(e) => errors.push(e),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no successful call within the patience; errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that the network's call reports the node unreachable (not timed out).
pub fn assert_unreachable(result: &Result<VoteResponse, NetworkError>) -> String {
    match result {
        Err(NetworkError::Unreachable { reason, .. }) => reason.clone(),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
