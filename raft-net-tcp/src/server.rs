//! The server side: [`TcpServer`] and [`serve`], which accept peers' connections and hand their
//! requests to a [`Raft`] handle.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use raft_core::{NodeId, Raft, Request, Response, StateMachine};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{TcpConfig, TcpError};
use crate::wire::{self, HelloReply, RequestFrame, ResponseBody, ResponseFrame, WireError};

/// How long the accept loop pauses after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A running server: accepts peers' connections on a listener and hands their requests to a
/// [`Raft`] handle, until shut down.
///
/// Each connection must open with a handshake naming this server's cluster id and node id (the
/// handle's [`Raft::id`]); then its requests are handled concurrently (up to
/// [`TcpConfig::max_in_flight_per_connection`]) and answered as they complete, possibly out of
/// order. Bad input (garbage, an over-long or truncated frame, an undecodable message, a refused
/// handshake) closes that connection with a logged warning; the server and the node go on.
///
/// The server holds a clone of the `Raft` handle, so it keeps the node alive until it stops.
/// Dropping the `TcpServer` stops it too (without waiting); [`shutdown`](Self::shutdown) stops it and
/// waits until every connection is closed.
#[derive(Debug)]
pub struct TcpServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `addr` and starts serving `raft` on the current tokio runtime.
    ///
    /// # Errors
    /// An invalid `config`, or the bind failing.
    pub async fn bind<SM: StateMachine>(
        addr: impl ToSocketAddrs,
        raft: Raft<SM>,
        cluster_id: impl Into<String>,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        Self::start(listener, raft, cluster_id, config)
    }

    /// Starts serving `raft` on an already bound listener, on the current tokio runtime.
    ///
    /// Binding first lets a program learn every node's address (port 0) before it builds the nodes'
    /// [`TcpNetwork`](crate::TcpNetwork)s.
    ///
    /// # Errors
    /// An invalid `config`, or the listener's local address being unavailable.
    pub fn start<SM: StateMachine>(
        listener: TcpListener,
        raft: Raft<SM>,
        cluster_id: impl Into<String>,
        config: TcpConfig,
    ) -> Result<Self, TcpError> {
        config.validate()?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            listener,
            raft,
            cluster_id.into(),
            config,
            shutdown.clone(),
        ));
        Ok(TcpServer {
            local_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
/// An invalid `config`. Failures of single connections or of `accept` are logged, never returned.
pub async fn serve<SM: StateMachine>(
    listener: TcpListener,
    raft: Raft<SM>,
    cluster_id: impl Into<String>,
    config: TcpConfig,
    shutdown: CancellationToken,
) -> Result<(), TcpError> {
    config.validate()?;
    run(listener, raft, cluster_id.into(), config, shutdown).await;
    Ok(())
}

struct ServerCtx {
    cluster_id: String,
    node_id: NodeId,
    config: TcpConfig,
}

async fn run<SM: StateMachine>(
    listener: TcpListener,
    raft: Raft<SM>,
    cluster_id: String,
    config: TcpConfig,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(ServerCtx {
        cluster_id,
        node_id: raft.id(),
        config,
    });
    let local = listener.local_addr().ok();
    tracing::info!(node = ctx.node_id, addr = ?local, "raft TCP server listening");
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, remote)) => {
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
                        tokio::select! {
                            _ = token.cancelled() => {
                                tracing::debug!("connection closed: server shutting down");
                            }
                            end = connection(stream, raft, ctx) => end.log(),
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
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

/// How a connection ended.
enum End {
    /// The client closed it after its requests were answered.
    Closed,
    /// The handshake was refused.
    Refused(String),
    /// Bad input or a broken socket.
    Failed(String),
}

impl End {
    fn log(self) {
        match self {
            End::Closed => tracing::debug!("connection closed by the client"),
            End::Refused(reason) => tracing::warn!(%reason, "refused a connection"),
            End::Failed(reason) => tracing::warn!(%reason, "closed a connection"),
        }
    }
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

async fn connection<SM: StateMachine>(
    stream: TcpStream,
    raft: Raft<SM>,
    ctx: Arc<ServerCtx>,
) -> End {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, wire::codec(wire::HANDSHAKE_MAX_FRAME_LENGTH));
    let mut writer = FramedWrite::new(write, wire::codec(ctx.config.max_frame_length));
    if let Err(end) = handshake(&mut reader, &mut writer, &ctx).await {
        return end;
    }
    reader
        .decoder_mut()
        .set_max_frame_length(ctx.config.max_frame_length);
    requests(reader, writer, raft, &ctx).await
}

async fn handshake(reader: &mut Reader, writer: &mut Writer, ctx: &ServerCtx) -> Result<(), End> {
    let first = tokio::time::timeout(ctx.config.connect_timeout, reader.next())
        .await
        .map_err(|_| {
            End::Failed(format!(
                "no handshake within {} ms",
                ctx.config.connect_timeout.as_millis()
            ))
        })?;
    let frame = match first {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(End::Failed(format!("bad frame before the handshake: {e}"))),
        None => return Err(End::Failed("closed before the handshake".into())),
    };
    let refusal = match wire::decode_hello(&frame) {
        Err(WireError::BadMagic) => {
            // Not our protocol: nothing it could read.
            return Err(End::Failed(
                "not a raft-net-tcp client (bad magic bytes)".into(),
            ));
        }
        Err(e) => format!("bad handshake: {e}"),
        Ok(hello) => {
            tracing::Span::current().record("peer", hello.from);
            if hello.cluster_id != ctx.cluster_id {
                format!(
                    "cluster id mismatch: node {} belongs to cluster {:?}, the client (node {}) to {:?}",
                    ctx.node_id, ctx.cluster_id, hello.from, hello.cluster_id
                )
            } else if hello.to != ctx.node_id {
                format!(
                    "wrong node: this is node {}, the client (node {}) expected node {}",
                    ctx.node_id, hello.from, hello.to
                )
            } else {
                let reply = wire::encode_hello_reply(&HelloReply::Accepted {
                    node_id: ctx.node_id,
                })
                .map_err(|e| End::Failed(e.to_string()))?;
                send_handshake_reply(writer, reply, ctx)
                    .await
                    .map_err(|e| {
                        End::Failed(format!("sending the handshake answer failed: {e}"))
                    })?;
                tracing::debug!("connection accepted");
                return Ok(());
            }
        }
    };
    if let Ok(reply) = wire::encode_hello_reply(&HelloReply::Refused {
        reason: refusal.clone(),
    }) {
        // Best effort: the connection is closed either way.
        let _ = send_handshake_reply(writer, reply, ctx).await;
    }
    Err(End::Refused(refusal))
}

async fn send_handshake_reply(
    writer: &mut Writer,
    reply: bytes::Bytes,
    ctx: &ServerCtx,
) -> io::Result<()> {
    tokio::time::timeout(ctx.config.connect_timeout, writer.send(reply))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

async fn requests<SM: StateMachine>(
    mut reader: Reader,
    mut writer: Writer,
    raft: Raft<SM>,
    ctx: &ServerCtx,
) -> End {
    let max_in_flight = ctx.config.max_in_flight_per_connection;
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        if !reading && in_flight.is_empty() {
            return End::Closed;
        }
        tokio::select! {
            done = in_flight.next(), if !in_flight.is_empty() => {
                let Some(first) = done else { continue };
                if let Err(e) = write_responses(&mut writer, first, &mut in_flight).await {
                    return End::Failed(e);
                }
            }
            frame = reader.next(), if reading && in_flight.len() < max_in_flight => match frame {
                // The client is done sending: answer what is in flight, then close.
                None => reading = false,
                Some(Err(e)) => return End::Failed(format!("bad frame: {e}")),
                Some(Ok(bytes)) => match wire::decode::<RequestFrame<SM::Command>>(&bytes) {
                    Ok(frame) => in_flight.push(handle(raft.clone(), frame)),
                    Err(e) => return End::Failed(format!("bad request: {e}")),
                },
            },
            else => return End::Closed,
        }
    }
}

/// Writes `first` and every other response already done, then flushes once.
async fn write_responses<F>(
    writer: &mut Writer,
    first: ResponseFrame,
    in_flight: &mut FuturesUnordered<F>,
) -> Result<(), String>
where
    F: std::future::Future<Output = ResponseFrame>,
{
    let mut next = Some(first);
    while let Some(response) = next.take() {
        let bytes = wire::encode(&response).map_err(|e| e.to_string())?;
        writer
            .feed(bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        if let Some(Some(more)) = in_flight.next().now_or_never() {
            next = Some(more);
        }
    }
    SinkExt::<bytes::Bytes>::flush(writer)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

async fn handle<SM: StateMachine>(
    raft: Raft<SM>,
    frame: RequestFrame<SM::Command>,
) -> ResponseFrame {
    let answer = match frame.request {
        Request::AppendEntries(r) => raft.append_entries(r).await.map(Response::AppendEntries),
        Request::Vote(r) => raft.vote(r).await.map(Response::Vote),
        Request::InstallSnapshot(r) => raft
            .install_snapshot(r)
            .await
            .map(Response::InstallSnapshot),
    };
    let body = match answer {
        Ok(response) => ResponseBody::Ok(response),
        Err(e) => ResponseBody::Failed {
            reason: e.to_string(),
        },
    };
    ResponseFrame { id: frame.id, body }
}
