//! The server side: [`TcpServer`] and [`serve`], which accept peers' connections and hand their
//! requests to a [`Raft`] handle.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_core::{NodeId, Raft, StateMachine};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{TcpConfig, TcpError};
use crate::descriptors;
use crate::identity::NodeName;
use crate::refused::{RefusedCounter, RefusedCounts};
use crate::tls::Security;
use crate::warn_limit::{BadInput, WarnLimiter};

/// How long the accept loop pauses after a failed `accept` (e.g. out of file descriptors), so that
/// it neither spins nor gives up.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running server: accepts peers' connections on a listener and hands their requests to a
/// [`Raft`] handle, until shut down.
///
/// Each connection must complete, within [`TcpConfig::handshake_timeout`], a TLS handshake (with
/// [`Security::Tls`]: the client's certificate must chain to the cluster CA) and then the protocol
/// handshake, naming this server's cluster id and node id (the handle's [`Raft::id`]) and, with
/// TLS, the node id its certificate names. Then its requests are handled concurrently (up to
/// [`TcpConfig::max_in_flight_per_connection`]) and answered as they complete, possibly out of
/// order.
///
/// Limits: at most [`TcpConfig::max_connections`] connections (more are closed at once, before
/// TLS, and so is any connection that would take one of the process's last
/// [`descriptors::RESERVED`] file descriptors, see [`descriptors`]); an established connection
/// silent for [`TcpConfig::idle_timeout`] is closed; a frame must arrive within
/// [`TcpConfig::frame_timeout`] of its first byte; frames in memory are bounded by
/// [`TcpConfig::max_buffered_bytes`] together. Bad input (garbage, an over-long or truncated frame,
/// an undecodable message, a refused or failed handshake, a timeout) closes that connection only;
/// it is logged at WARN at most once per kind every 10 s (with a count of the rest, which go to
/// DEBUG). The server and the node go on.
///
/// The server holds a clone of the `Raft` handle, so it keeps the node alive until it stops.
/// Dropping the `TcpServer` stops it too (without waiting); [`shutdown`](Self::shutdown) stops it and
/// waits until every connection is closed.
#[derive(Debug)]
pub struct TcpServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    refused: Arc<RefusedCounter>,
}

impl TcpServer {
    /// Binds `addr` and starts serving `raft` on the current tokio runtime.
    ///
    /// # Errors
    /// As [`start`](Self::start), or the bind failing.
    pub async fn bind<SM: StateMachine>(
        addr: impl ToSocketAddrs,
        raft: Raft<SM>,
        cluster_id: impl Into<String>,
        security: impl Into<Security>,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, raft, cluster_id, security, config)
    }

    /// Starts serving `raft` on an already bound listener, on the current tokio runtime.
    ///
    /// Binding first lets a program learn every node's address (port 0) before it builds the nodes'
    /// [`TcpNetwork`](crate::TcpNetwork)s.
    ///
    /// # Errors
    /// An invalid `config`; with [`Security::Tls`], a cluster id that cannot be part of a
    /// certificate name or a certificate that does not name this node
    /// ([`TcpError::Tls`]); the listener's local address being unavailable.
    pub fn start<SM: StateMachine>(
        listener: TcpListener,
        raft: Raft<SM>,
        cluster_id: impl Into<String>,
        security: impl Into<Security>,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        let ctx = ServerCtx::new(cluster_id.into(), raft.id(), security.into(), config)?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let refused = Arc::clone(&ctx.refused);
        let task = tokio::spawn(run(listener, raft, ctx, shutdown.clone()));
        Ok(TcpServer {
            local_addr,
            shutdown,
            task: Some(task),
            refused,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many inbound connections the server closed for bad input or a limit since it started,
    /// by reason (every one, although the warnings about them are rate limited): a live view, for a
    /// metrics exporter ([`RefusedCounts::get`] reads the counts).
    pub fn refused_counts(&self) -> RefusedCounts {
        RefusedCounts::new(Arc::clone(&self.refused))
    }

    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes every connection (requests being handled are dropped; their clients
    /// see the connection close) and waits until all of it is done. The listening port is free when
    /// this returns.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "raft TCP server task failed");
            }
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves `raft` on `listener` until `shutdown` is cancelled, then closes every connection and
/// returns. The same as [`TcpServer::start`], run on the caller's task.
///
/// # Errors
/// As [`TcpServer::start`]. Failures of single connections or of `accept` are logged, never
/// returned.
pub async fn serve<SM: StateMachine>(
    listener: TcpListener,
    raft: Raft<SM>,
    cluster_id: impl Into<String>,
    security: impl Into<Security>,
    config: TcpConfig,
    shutdown: CancellationToken,
) -> Result<(), TcpError> {
    let ctx = ServerCtx::new(cluster_id.into(), raft.id(), security.into(), config)?;
    run(listener, raft, ctx, shutdown).await;
    Ok(())
}

/// What every connection of a server shares.
struct ServerCtx {
    cluster_id: String,
    node_id: NodeId,
    config: TcpConfig,
    /// `None`: plaintext ([`Security::Insecure`]).
    tls: Option<TlsAcceptor>,
    /// [`TcpConfig::max_buffered_bytes`], in permits of one byte.
    frame_budget: Arc<Semaphore>,
    warnings: WarnLimiter,
    /// Connections closed for bad input or a limit, by reason.
    refused: Arc<RefusedCounter>,
}

impl ServerCtx {
    fn new(
        cluster_id: String,
        node_id: NodeId,
        security: Security,
        config: TcpConfig,
    ) -> Result<Arc<Self>, TcpError> {
        config.validate()?;
        let tls = match security {
            Security::Tls(tls) => {
                tls.check_identity(&NodeName::new(&cluster_id, node_id)?)?;
                Some(tls.acceptor())
            }
            Security::Insecure => None,
        };
        // At most Semaphore::MAX_PERMITS (validate).
        let frame_budget = Arc::new(Semaphore::new(config.max_buffered_bytes));
        Ok(Arc::new(ServerCtx {
            cluster_id,
            node_id,
            config,
            tls,
            frame_budget,
            warnings: WarnLimiter::default(),
            refused: Arc::default(),
        }))
    }
}

async fn run<SM: StateMachine>(
    listener: TcpListener,
    raft: Raft<SM>,
    ctx: Arc<ServerCtx>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    tracing::info!(
        node = ctx.node_id,
        addr = ?local,
        tls = ctx.tls.is_some(),
        max_connections = ctx.config.max_connections,
        "raft TCP server listening"
    );
    if ctx.tls.is_none() {
        tracing::warn!(
            node = ctx.node_id,
            "raft TCP server without TLS (Security::Insecure): anyone who reaches it can act as a node"
        );
    }
    descriptors::warn_if_short("raft", ctx.config.max_connections);
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, remote)) => {
                if !descriptors::admit(&stream) {
                    // Closed at once: the last descriptors below the limit are kept for storage.
                    drop(stream);
                    ctx.refused.count(BadInput::DescriptorReserve);
                    ctx.warnings.log(
                        BadInput::DescriptorReserve,
                        "closed a new connection at once: the process is out of descriptors \
                         beyond those kept for storage and peers",
                        &format_args!("{remote}: {} descriptors reserved", descriptors::RESERVED),
                    );
                    continue;
                }
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Closed before any TLS work: a flood costs an accept and a close each.
                    drop(stream);
                    ctx.refused.count(BadInput::ConnectionCap);
                    ctx.warnings.log(
                        BadInput::ConnectionCap,
                        "closed a new connection at once: max_connections reached",
                        &format_args!("{remote}: {} connections open", ctx.config.max_connections),
                    );
                    continue;
                };
                let span = tracing::info_span!(
                    "raft_tcp_serve",
                    node = ctx.node_id,
                    %remote,
                    peer = tracing::field::Empty
                );
                let token = shutdown.child_token();
                let raft = raft.clone();
                let ctx = Arc::clone(&ctx);
                tracker.spawn(
                    async move {
                        let _slot = slot;
                        tokio::select! {
                            _ = token.cancelled() => {
                                tracing::debug!("connection closed: server shutting down");
                            }
                            end = connection::serve(stream, raft, &ctx) => {
                                if let connection::End::Bad { kind, .. } = &end {
                                    ctx.refused.count(*kind);
                                }
                                end.log(&ctx.warnings);
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset while queued: nothing
                // about it reaches the node; pause so as not to spin, then go on.
                ctx.warnings.log(
                    BadInput::Accept,
                    "accepting a connection failed; pausing before the next accept",
                    &e,
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    tracing::info!(node = ctx.node_id, "raft TCP server stopped");
}
