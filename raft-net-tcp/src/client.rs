//! The client side: [`TcpNetwork`], a [`RaftNetwork`] with one pipelined connection per peer.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::SinkExt;
use raft_core::{
    AppCommand, AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, Membership, NetworkError, NodeId, PreVoteRequest, PreVoteResponse,
    RaftNetwork, ReadIndexRequest, ReadIndexResponse, Request, Response, TimeoutNowRequest,
    TimeoutNowResponse, VoteRequest, VoteResponse,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{TcpConfig, TcpError};
use crate::frame::{FrameError, FrameReader};
use crate::identity::NodeName;
use crate::tls::{server_name, Security};
use crate::warn_limit::{BadInput, WarnLimiter};
use crate::wire::{
    self, Hello, HelloReply, RequestFrame, ResponseBody, ResponseFrame, HANDSHAKE_MAX_FRAME_LENGTH,
    RESPONSE_MAX_FRAME_LENGTH,
};

type Reader = FrameReader<Box<dyn AsyncRead + Send + Unpin>>;
type Writer = FramedWrite<Box<dyn AsyncWrite + Send + Unpin>, LengthDelimitedCodec>;

/// How many encoded requests may wait for the writer task of one connection.
const WRITE_QUEUE: usize = 1024;

/// A [`RaftNetwork`] over TCP, with mutual TLS ([`Security::Tls`]) or, explicitly, without
/// ([`Security::Insecure`]).
///
/// Built from the cluster id, this node's id, the address of every peer and the security settings.
/// It keeps one connection per peer, opened on first use, and pipelines requests on it: each carries
/// an id, and responses, which may come back in any order, are matched by that id. Cheap to clone
/// (the clones share the connections). With TLS, a connection to node `n` is accepted only if the
/// server's certificate chains to the cluster CA and names `node-<n>.<cluster id>.raft`
/// ([`NodeName`]).
///
/// # Failures
/// Every failure is a [`NetworkError`], never a panic:
/// * no address for the target, a refused or timed-out connection, a failed TLS handshake (a server
///   certificate from another CA or naming another node; our certificate refused), a refused
///   handshake (wrong cluster id, wrong node id, other protocol version), a connection that broke
///   with the request in flight, or a peer node that has stopped: `Unreachable`, with the reason;
/// * a request that encodes to more than [`TcpConfig::max_frame_length`]: `Unreachable` at once, with
///   a reason starting "request too large", before any connection attempt and without sending
///   anything (the peer would close the connection on it, and every retry would do the same);
/// * no response within [`TcpConfig::request_timeout`]: `Timeout`;
/// * a response of the wrong kind: `InvalidResponse`.
///
/// After a failed connection attempt the next one waits ([`TcpConfig::reconnect_backoff_min`],
/// doubling up to [`TcpConfig::reconnect_backoff_max`]); calls made meanwhile fail at once with
/// `Unreachable` rather than wait, since the driver retries on its own. A connection that breaks after
/// it was up is reopened by the next call without waiting. A connection unused for half of
/// [`TcpConfig::idle_timeout`] is closed (before the server would close it); a call that finds it
/// so closed opens a new one, as the request was never sent.
///
/// Dropping the last clone closes every connection.
pub struct TcpNetwork<C> {
    inner: Arc<ClientInner>,
    _command: PhantomData<fn() -> C>,
}

impl<C> Clone for TcpNetwork<C> {
    fn clone(&self) -> Self {
        TcpNetwork {
            inner: Arc::clone(&self.inner),
            _command: PhantomData,
        }
    }
}

impl<C> fmt::Debug for TcpNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<_> = self
            .inner
            .read_peers()
            .values()
            .map(|p| (p.id, p.addr))
            .collect();
        peers.sort();
        f.debug_struct("TcpNetwork")
            .field("cluster_id", &self.inner.cluster_id)
            .field("local_id", &self.inner.local_id)
            .field("tls", &self.inner.tls.is_some())
            .field("peers", &peers)
            .finish()
    }
}

struct ClientInner {
    cluster_id: String,
    local_id: NodeId,
    /// `None`: plaintext.
    tls: Option<TlsConnector>,
    config: Arc<TcpConfig>,
    /// Limits warnings about bad responses, shared by every peer of the network.
    warnings: Arc<WarnLimiter>,
    /// The addresses given at construction: used for members whose membership entry names none.
    configured: HashMap<NodeId, SocketAddr>,
    /// The peers reachable now: the configured ones until the first membership is known, then the
    /// members of the membership in force.
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    /// Cancelled when the last clone is dropped: stops connection attempts and connection tasks.
    shutdown: CancellationToken,
}

impl ClientInner {
    fn read_peers(&self) -> RwLockReadGuard<'_, HashMap<NodeId, Arc<Peer>>> {
        // A poisoned lock only means a holder panicked; the map itself is still usable.
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.read_peers().get(&id).cloned()
    }

    /// A peer (not yet connected) reaching node `id` at `addr`.
    fn make_peer(&self, id: NodeId, addr: SocketAddr) -> Result<Arc<Peer>, TcpError> {
        let tls = match &self.tls {
            Some(connector) => Some(PeerTls {
                connector: connector.clone(),
                server_name: server_name(&NodeName::new(&self.cluster_id, id)?)?,
            }),
            None => None,
        };
        let hello = wire::encode_hello(&Hello {
            cluster_id: self.cluster_id.clone(),
            from: self.local_id,
            to: id,
        })
        .map_err(|e| TcpError::Config(e.to_string()))?;
        Ok(Arc::new(Peer {
            id,
            addr,
            tls,
            hello,
            next_id: AtomicU64::new(0),
            config: Arc::clone(&self.config),
            warnings: Arc::clone(&self.warnings),
            shutdown: self.shutdown.child_token(),
            state: Mutex::new(PeerState::default()),
        }))
    }

    /// Makes the reachable peers the members of `membership` other than this node, each at the
    /// address its membership entry names (`Node::addr`, a socket address), else at the configured
    /// one. Peers no longer members are dropped and their connections closed; a member whose
    /// address changed gets a new connection. A membership with no voters (a node not yet part of
    /// a cluster) changes nothing.
    fn follow_membership(&self, membership: &Membership) {
        if membership.voters.is_empty() {
            return;
        }
        let mut wanted: HashMap<NodeId, SocketAddr> = HashMap::new();
        for id in membership.members() {
            if id == self.local_id {
                continue;
            }
            let named = membership.nodes.get(&id).map(|n| n.addr.as_str());
            let parsed = match named {
                Some(addr) if !addr.is_empty() => match addr.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(peer = id, addr, error = %e, "member's address is not a socket address; using the configured one");
                        None
                    }
                },
                _ => None,
            };
            match parsed.or_else(|| self.configured.get(&id).copied()) {
                Some(addr) => {
                    wanted.insert(id, addr);
                }
                None => tracing::warn!(peer = id, "no address known for a member"),
            }
        }
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.retain(|id, peer| {
            let keep = wanted.get(id) == Some(&peer.addr);
            if !keep {
                tracing::info!(peer = id, addr = %peer.addr, "dropping the connection to a node no longer a member (or moved)");
                peer.shutdown.cancel();
            }
            keep
        });
        for (id, addr) in wanted {
            if peers.contains_key(&id) {
                continue;
            }
            match self.make_peer(id, addr) {
                Ok(peer) => {
                    tracing::info!(peer = id, %addr, "member added to the address book");
                    peers.insert(id, peer);
                }
                Err(e) => tracing::warn!(peer = id, error = %e, "cannot reach a member"),
            }
        }
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl<C> TcpNetwork<C> {
    /// A network for node `local_id` of cluster `cluster_id`, reaching each peer at its address,
    /// secured by `security` (a [`TlsConfig`](crate::TlsConfig) converts into [`Security::Tls`]).
    ///
    /// `peers` may include `local_id` itself (e.g. the whole cluster's address list); that entry is
    /// ignored. No connection is opened until the first call to a peer; calls need a tokio runtime.
    ///
    /// # Errors
    /// [`TcpError::Config`] if `config` is invalid; with TLS, [`TcpError::Tls`] if the cluster id
    /// cannot be part of a certificate name or this node's certificate does not name node
    /// `local_id` of the cluster.
    pub fn new(
        cluster_id: impl Into<String>,
        local_id: NodeId,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        security: impl Into<Security>,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        config.validate()?;
        let cluster_id = cluster_id.into();
        let tls = match security.into() {
            Security::Tls(tls) => {
                tls.check_identity(&NodeName::new(&cluster_id, local_id)?)?;
                Some(tls.connector())
            }
            Security::Insecure => None,
        };
        let configured: HashMap<NodeId, SocketAddr> = peers
            .into_iter()
            .filter(|&(id, _)| id != local_id)
            .collect();
        let mut inner = ClientInner {
            cluster_id,
            local_id,
            tls,
            config: Arc::new(config),
            warnings: Arc::new(WarnLimiter::default()),
            configured,
            peers: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
        };
        let mut map = HashMap::new();
        for (&id, &addr) in &inner.configured {
            map.insert(id, inner.make_peer(id, addr)?);
        }
        inner.peers = RwLock::new(map);
        Ok(TcpNetwork {
            inner: Arc::new(inner),
            _command: PhantomData,
        })
    }

    /// This node's id, as sent in the handshake.
    pub fn local_id(&self) -> NodeId {
        self.inner.local_id
    }

    /// The cluster id sent in the handshake.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The address `peer` is reached at, if it is reachable (configured, or a member).
    pub fn peer_addr(&self, peer: NodeId) -> Option<SocketAddr> {
        self.inner.peer(peer).map(|p| p.addr)
    }

    /// Whether a connection to `peer` is currently open (it may still break at any moment).
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.inner.peer(peer).is_some_and(|p| {
            matches!(&p.lock_state().link, Link::Connected(c) if !c.shared.token.is_cancelled())
        })
    }

    /// Closes every open connection; requests in flight on them fail with
    /// [`NetworkError::Unreachable`]. The next call to a peer reconnects.
    pub fn disconnect_all(&self) {
        for peer in self.inner.read_peers().values() {
            let mut st = peer.lock_state();
            if let Link::Connected(c) = &st.link {
                c.shared.close("disconnected by the local node".into());
                st.link = Link::Idle;
            }
        }
    }
}

impl<C: AppCommand> TcpNetwork<C> {
    /// Sends one request to `target` and waits for its answer. The request is encoded (and checked
    /// against the frame limit) before anything else, so a request that can never be sent fails at
    /// once, whatever the state of the connection.
    async fn call(&self, target: NodeId, request: Request<C>) -> Result<Response, NetworkError> {
        let peer = self
            .inner
            .peer(target)
            .ok_or_else(|| NetworkError::Unreachable {
                target,
                reason: "no address known for this node (not configured, not a member)".into(),
            })?;
        let id = peer.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(target, id, request, peer.config.max_frame_length)?;
        let mut retried = false;
        let (conn, rx, _guard) = loop {
            let conn = peer.connection().await?;
            match conn.shared.register(id) {
                Ok((rx, guard)) => break (conn, rx, guard),
                Err(e) if retried => return Err(e),
                // It closed (e.g. unused for a while) before this request was registered, so
                // nothing was sent: a new connection may carry it.
                Err(_) => retried = true,
            }
        };
        let exchange = async {
            conn.tx
                .send(frame)
                .await
                .map_err(|_| conn.shared.closed_error())?;
            match rx.await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(reason)) => Err(NetworkError::Unreachable { target, reason }),
                Err(_) => Err(conn.shared.closed_error()),
            }
        };
        let body = tokio::time::timeout(peer.config.request_timeout, exchange)
            .await
            .map_err(|_| NetworkError::Timeout { target })??;
        match body {
            ResponseBody::Ok(response) => Ok(response),
            ResponseBody::Failed { reason } => Err(NetworkError::Unreachable {
                target,
                reason: format!("peer could not answer: {reason}"),
            }),
        }
    }
}

#[async_trait]
impl<C: AppCommand> RaftNetwork<C> for TcpNetwork<C> {
    async fn append_entries(
        &self,
        target: NodeId,
        request: AppendEntriesRequest<C>,
    ) -> Result<AppendEntriesResponse, NetworkError> {
        match self.call(target, Request::AppendEntries(request)).await? {
            Response::AppendEntries(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected an AppendEntries response, got {other:?}"),
            }),
        }
    }

    async fn vote(
        &self,
        target: NodeId,
        request: VoteRequest,
    ) -> Result<VoteResponse, NetworkError> {
        match self.call(target, Request::Vote(request)).await? {
            Response::Vote(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected a Vote response, got {other:?}"),
            }),
        }
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        request: PreVoteRequest,
    ) -> Result<PreVoteResponse, NetworkError> {
        match self.call(target, Request::PreVote(request)).await? {
            Response::PreVote(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected a PreVote response, got {other:?}"),
            }),
        }
    }

    async fn timeout_now(
        &self,
        target: NodeId,
        request: TimeoutNowRequest,
    ) -> Result<TimeoutNowResponse, NetworkError> {
        match self.call(target, Request::TimeoutNow(request)).await? {
            Response::TimeoutNow(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected a TimeoutNow response, got {other:?}"),
            }),
        }
    }

    async fn install_snapshot(
        &self,
        target: NodeId,
        request: InstallSnapshotRequest,
    ) -> Result<InstallSnapshotResponse, NetworkError> {
        match self.call(target, Request::InstallSnapshot(request)).await? {
            Response::InstallSnapshot(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected an InstallSnapshot response, got {other:?}"),
            }),
        }
    }

    async fn read_index(
        &self,
        target: NodeId,
        request: ReadIndexRequest,
    ) -> Result<ReadIndexResponse, NetworkError> {
        match self.call(target, Request::ReadIndex(request)).await? {
            Response::ReadIndex(r) => Ok(r),
            other => Err(NetworkError::InvalidResponse {
                target,
                reason: format!("expected a ReadIndex response, got {other:?}"),
            }),
        }
    }

    fn membership_changed(&self, membership: &Membership) {
        self.inner.follow_membership(membership);
    }
}

/// Encodes request `id` as one frame payload; fails if it is over `max_frame_length`, naming the
/// request's kind and the setting that bounds its size.
fn encode_request<C: AppCommand>(
    target: NodeId,
    id: u64,
    request: Request<C>,
    max_frame_length: usize,
) -> Result<Bytes, NetworkError> {
    let (kind, hint) = match &request {
        Request::Vote(_) => ("Vote", ""),
        Request::PreVote(_) => ("PreVote", ""),
        Request::TimeoutNow(_) => ("TimeoutNow", ""),
        Request::ReadIndex(_) => ("ReadIndex", ""),
        Request::AppendEntries(_) => (
            "AppendEntries",
            "; lower raft-core's Config::max_entries_per_append or send smaller commands",
        ),
        Request::InstallSnapshot(_) => (
            "InstallSnapshot",
            "; keep raft-core's Config::snapshot_chunk_size well below it \
             (see TcpConfig::check_raft_config)",
        ),
    };
    let frame =
        wire::encode(&RequestFrame { id, request }).map_err(|e| NetworkError::Unreachable {
            target,
            reason: format!("{kind} request could not be encoded: {e}"),
        })?;
    if frame.len() > max_frame_length {
        return Err(NetworkError::Unreachable {
            target,
            reason: format!(
                "request too large: the {kind} request encodes to {} bytes, over \
                 TcpConfig::max_frame_length ({max_frame_length} bytes), so it was not sent{hint}",
                frame.len()
            ),
        });
    }
    Ok(frame)
}

// ---------------------------------------------------------------------------------------------------
// One peer: its connection state and reconnect backoff.

type ConnectFuture = Shared<BoxFuture<'static, Result<Arc<Connection>, String>>>;

/// What a TLS connection to one peer needs.
struct PeerTls {
    connector: TlsConnector,
    /// The name the peer's certificate must carry: `node-<id>.<cluster id>.raft`.
    server_name: ServerName<'static>,
}

struct Peer {
    id: NodeId,
    addr: SocketAddr,
    /// `None`: plaintext.
    tls: Option<PeerTls>,
    /// The encoded handshake this node sends to this peer.
    hello: Bytes,
    /// The id of the next request to this peer: unique among the requests of any one connection
    /// (and across connections, which is not needed but costs nothing).
    next_id: AtomicU64,
    config: Arc<TcpConfig>,
    /// Limits warnings about bad responses, shared by every peer of the network.
    warnings: Arc<WarnLimiter>,
    shutdown: CancellationToken,
    state: Mutex<PeerState>,
}

#[derive(Default)]
struct PeerState {
    link: Link,
    /// Consecutive failed connection attempts.
    failures: u32,
    /// No attempt before this instant (backoff).
    retry_at: Option<Instant>,
    last_error: String,
}

#[derive(Default)]
enum Link {
    #[default]
    Idle,
    /// An attempt runs on its own task (so a caller that gives up does not abort it); callers share
    /// its outcome.
    Connecting(ConnectFuture),
    Connected(Arc<Connection>),
}

impl Peer {
    fn lock_state(&self) -> MutexGuard<'_, PeerState> {
        // A poisoned lock only means a holder panicked; the state itself is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open connection, or a new one; fails at once while backing off.
    async fn connection(self: &Arc<Self>) -> Result<Arc<Connection>, NetworkError> {
        let attempt = {
            let mut st = self.lock_state();
            match &st.link {
                Link::Connected(c) if !c.shared.token.is_cancelled() => return Ok(Arc::clone(c)),
                // It broke: reconnect now (the backoff is for failed attempts).
                Link::Connected(_) => st.link = Link::Idle,
                Link::Connecting(_) | Link::Idle => {}
            }
            match &st.link {
                Link::Connecting(f) => f.clone(),
                _ => {
                    if let Some(at) = st.retry_at {
                        let now = Instant::now();
                        if now < at {
                            return Err(NetworkError::Unreachable {
                                target: self.id,
                                reason: format!(
                                    "{} (next connection attempt in {} ms)",
                                    st.last_error,
                                    (at - now).as_millis()
                                ),
                            });
                        }
                    }
                    let peer = Arc::clone(self);
                    let task = tokio::spawn(
                        async move { peer.connect_and_record().await }.instrument(
                            tracing::debug_span!("raft_tcp_connect", peer = self.id, addr = %self.addr),
                        ),
                    );
                    let fut: BoxFuture<'static, Result<Arc<Connection>, String>> = async move {
                        task.await
                            .unwrap_or_else(|e| Err(format!("connection task failed: {e}")))
                    }
                    .boxed();
                    let fut = fut.shared();
                    st.link = Link::Connecting(fut.clone());
                    fut
                }
            }
        };
        attempt.await.map_err(|reason| NetworkError::Unreachable {
            target: self.id,
            reason,
        })
    }

    /// One connection attempt; records its outcome in the state before returning it.
    async fn connect_and_record(self: Arc<Self>) -> Result<Arc<Connection>, String> {
        let result = tokio::select! {
            _ = self.shutdown.cancelled() => Err("the network was dropped, or the peer is no longer a member".to_string()),
            r = tokio::time::timeout(self.config.connect_timeout, self.connect()) => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "connecting to {} timed out after {} ms",
                    self.addr,
                    self.config.connect_timeout.as_millis()
                )),
            },
        };
        let mut st = self.lock_state();
        match &result {
            Ok(conn) => {
                if st.failures > 0 {
                    tracing::info!(peer = self.id, addr = %self.addr, "reconnected");
                } else {
                    tracing::debug!(peer = self.id, addr = %self.addr, "connected");
                }
                st.link = Link::Connected(Arc::clone(conn));
                st.failures = 0;
                st.retry_at = None;
            }
            Err(reason) => {
                st.link = Link::Idle;
                st.failures = st.failures.saturating_add(1);
                let wait = self.config.backoff(st.failures);
                // `wait` is at most a day (TcpConfig::validate): the sum cannot overflow.
                st.retry_at = Some(Instant::now() + wait);
                st.last_error = reason.clone();
                if st.failures == 1 {
                    tracing::warn!(peer = self.id, addr = %self.addr, error = %reason, "cannot reach peer");
                } else {
                    tracing::debug!(
                        peer = self.id, addr = %self.addr, error = %reason, failures = st.failures,
                        retry_in_ms = wait.as_millis() as u64, "cannot reach peer"
                    );
                }
            }
        }
        result
    }

    async fn connect(&self) -> Result<Arc<Connection>, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connecting to {} failed: {e}", self.addr))?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (read, write): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
        ) = match &self.tls {
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {} failed: {e}", self.addr))?;
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
            None => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
        };
        // The caller bounds the whole attempt by connect_timeout.
        let mut reader = FrameReader::new(
            read,
            HANDSHAKE_MAX_FRAME_LENGTH,
            self.config.connect_timeout,
        );
        let mut writer = FramedWrite::new(write, wire::codec(self.config.max_frame_length));
        writer
            .send(self.hello.clone())
            .await
            .map_err(|e| format!("sending the handshake to {} failed: {e}", self.addr))?;
        // With TLS 1.3, a server that refuses our certificate says so only now.
        let reply = match reader.next(None).await {
            Ok(Some(frame)) => wire::decode_hello_reply(&frame.payload)
                .map_err(|e| format!("bad handshake answer from {}: {e}", self.addr))?,
            Ok(None) => {
                return Err(format!(
                    "{} closed the connection during the handshake",
                    self.addr
                ))
            }
            Err(e) => return Err(format!("handshake with {} failed: {e}", self.addr)),
        };
        match reply {
            HelloReply::Accepted { node_id } if node_id == self.id => {}
            HelloReply::Accepted { node_id } => {
                return Err(format!(
                    "{} is node {node_id}, not node {}",
                    self.addr, self.id
                ))
            }
            HelloReply::Refused { reason } => {
                return Err(format!("{} refused the connection: {reason}", self.addr))
            }
        }
        reader.set_max_len(RESPONSE_MAX_FRAME_LENGTH);
        reader.set_frame_timeout(self.config.frame_timeout);

        let shared = Arc::new(ConnShared {
            target: self.id,
            token: self.shutdown.child_token(),
            pending: Mutex::new(Pending::default()),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let span = tracing::debug_span!("raft_tcp_conn", peer = self.id, addr = %self.addr);
        tokio::spawn(
            read_loop(reader, Arc::clone(&shared), Arc::clone(&self.warnings))
                .instrument(span.clone()),
        );
        let limits = WriteLimits {
            frame_timeout: self.config.frame_timeout,
            unused_close: self.config.idle_timeout / 2,
        };
        tokio::spawn(write_loop(writer, rx, Arc::clone(&shared), limits).instrument(span));
        Ok(Arc::new(Connection { tx, shared }))
    }
}

// ---------------------------------------------------------------------------------------------------
// One open connection: a writer task, a reader task, and the requests waiting for responses.

struct Connection {
    /// Encoded request frames, to the writer task.
    tx: mpsc::Sender<Bytes>,
    shared: Arc<ConnShared>,
}

type Waiter = oneshot::Sender<Result<ResponseBody, String>>;

struct ConnShared {
    target: NodeId,
    /// Cancelled when the connection is closed, by either task or by the network's drop.
    token: CancellationToken,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Why the connection closed; set once, after which no request registers.
    closed: Option<String>,
}

/// Removes a request's waiter when the call ends, however it ends (answered, timed out, dropped).
struct PendingGuard {
    shared: Arc<ConnShared>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.lock_pending().waiters.remove(&self.id);
    }
}

impl ConnShared {
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers request `id` (unique among this connection's requests) as waiting for its answer.
    /// The guard unregisters it.
    fn register(
        self: &Arc<Self>,
        id: u64,
    ) -> Result<
        (
            oneshot::Receiver<Result<ResponseBody, String>>,
            PendingGuard,
        ),
        NetworkError,
    > {
        let mut p = self.lock_pending();
        if let Some(reason) = &p.closed {
            return Err(NetworkError::Unreachable {
                target: self.target,
                reason: reason.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        p.waiters.insert(id, tx);
        Ok((
            rx,
            PendingGuard {
                shared: Arc::clone(self),
                id,
            },
        ))
    }

    fn closed_error(&self) -> NetworkError {
        let reason = self
            .lock_pending()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        NetworkError::Unreachable {
            target: self.target,
            reason,
        }
    }

    /// Closes the connection if no request is registered on it, atomically with respect to
    /// [`register`](Self::register): a request registered after it fails there, unsent.
    fn close_if_unused(&self, reason: String) -> bool {
        let mut p = self.lock_pending();
        if !p.waiters.is_empty() || p.closed.is_some() {
            return false;
        }
        p.closed = Some(reason);
        drop(p);
        self.token.cancel();
        true
    }

    /// Closes the connection: both tasks stop, and every request in flight fails with `reason`.
    fn close(&self, reason: String) {
        let waiters = {
            let mut p = self.lock_pending();
            if p.closed.is_none() {
                p.closed = Some(reason.clone());
            }
            std::mem::take(&mut p.waiters)
        };
        self.token.cancel();
        for (_, w) in waiters {
            let _ = w.send(Err(reason.clone()));
        }
    }

    fn deliver(&self, frame: ResponseFrame) {
        let waiter = self.lock_pending().waiters.remove(&frame.id);
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(frame.body));
            }
            None => tracing::debug!(
                id = frame.id,
                "response to a request no longer waiting (timed out or cancelled)"
            ),
        }
    }
}

async fn read_loop(mut reader: Reader, shared: Arc<ConnShared>, warnings: Arc<WarnLimiter>) {
    let reason = loop {
        let frame = tokio::select! {
            _ = shared.token.cancelled() => return,
            frame = reader.next(None) => frame,
        };
        match frame {
            Ok(Some(frame)) => match wire::decode::<ResponseFrame>(&frame.payload) {
                Ok(frame) => shared.deliver(frame),
                Err(e) => {
                    warnings.log(
                        BadInput::Frame,
                        "closing a connection: undecodable response",
                        &e,
                    );
                    break format!("connection closed: undecodable response: {e}");
                }
            },
            Ok(None) => {
                tracing::debug!("connection closed by peer");
                break "connection closed by peer".to_string();
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(error = %e, "connection broke");
                break format!("connection closed: {e}");
            }
            Err(e) => {
                let kind = match e {
                    FrameError::Stalled(_) => BadInput::Timeout,
                    _ => BadInput::Frame,
                };
                warnings.log(kind, "closing a connection: bad frame from the peer", &e);
                break format!("connection closed: {e}");
            }
        }
    };
    shared.close(reason);
}

/// The write side's limits.
struct WriteLimits {
    /// A batch of requests must be written within it.
    frame_timeout: std::time::Duration,
    /// With nothing to send and no answer awaited for this long, the connection is closed.
    unused_close: std::time::Duration,
}

async fn write_loop(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Bytes>,
    shared: Arc<ConnShared>,
    limits: WriteLimits,
) {
    loop {
        let first = tokio::select! {
            _ = shared.token.cancelled() => return,
            msg = tokio::time::timeout(limits.unused_close, rx.recv()) => msg,
        };
        let first = match first {
            Ok(Some(first)) => first,
            Ok(None) => {
                // Every handle to the connection is gone.
                shared.close("connection dropped".into());
                return;
            }
            Err(_) => {
                let reason = format!(
                    "connection closed after {} ms unused",
                    limits.unused_close.as_millis()
                );
                if shared.close_if_unused(reason) {
                    tracing::debug!("closed an unused connection");
                    return;
                }
                continue;
            }
        };
        let batch = async {
            writer.feed(first).await?;
            while let Ok(next) = rx.try_recv() {
                writer.feed(next).await?;
            }
            SinkExt::<Bytes>::flush(&mut writer).await
        };
        let result = tokio::select! {
            _ = shared.token.cancelled() => return,
            r = tokio::time::timeout(limits.frame_timeout, batch) => r,
        };
        let failure = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("connection closed: write failed: {e}"),
            Err(_) => format!(
                "connection closed: requests not written within {} ms (the peer does not read)",
                limits.frame_timeout.as_millis()
            ),
        };
        tracing::debug!(reason = %failure, "write failed");
        shared.close(failure);
        return;
    }
}
