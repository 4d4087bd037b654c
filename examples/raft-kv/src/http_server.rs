//! The HTTP server's accept loop: hyper's HTTP/1 connections with a header read timeout, request
//! heads within [`HttpLimits`] (checked by a middleware of `http_limits` that answers with JSON,
//! with hyper's own limits set above it), at most [`HttpLimits::max_connections`] connections at
//! once and none that would take one of the file descriptors the process keeps for its storage
//! ([`raft_net_tcp::descriptors`]), and graceful shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::http_limits::HttpLimits;
use crate::throttle::Throttle;

/// How long the loop waits after a failed `accept` (out of descriptors, say) before the next one:
/// the error would otherwise repeat at once, in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often a repeated warning (refused connection, failed accept) reaches the log.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in progress to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long, once the listener is closed, connections keep being served as usual (each response
/// then closing its connection) before idle ones are closed: long enough for a client whose
/// connection was just accepted to deliver its request, which closing the connection before it is
/// read would fail without an answer.
const DRAIN: Duration = Duration::from_millis(200);

/// Serves `app` on `listener` within `limits` until `stop` completes; then stops accepting (after
/// taking the connections already waiting in the listener's backlog, which closing it would reset),
/// serves for 200 ms more with every response closing its connection, lets the requests in
/// progress finish (for at most a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
) {
    raft_net_tcp::descriptors::warn_if_short("http", limits.max_connections);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // The head limits answer with JSON; hyper's own (empty answers) only catch what is far beyond.
    let draining = Arc::new(AtomicBool::new(false));
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::http_limits::head_limits,
        ))
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&draining),
            close_while_draining,
        ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.hyper_buffer_bytes())
        .max_headers(limits.hyper_max_headers());
    let (closing_tx, closing) = watch::channel(false);
    let mut refused = Throttle::new(WARN_INTERVAL);
    let mut reserve = Throttle::new(WARN_INTERVAL);
    let mut failed = Throttle::new(WARN_INTERVAL);
    tokio::pin!(stop);
    loop {
        let accepted = if draining.load(Ordering::Relaxed) {
            // The connections the kernel already accepted; the listener closes once there are none.
            match std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await {
                Poll::Ready(accepted) => accepted,
                Poll::Pending => break,
            }
        } else {
            tokio::select! {
                _ = &mut stop => {
                    draining.store(true, Ordering::Relaxed);
                    continue;
                }
                accepted = listener.accept() => accepted,
            }
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                if let Some(left_out) = failed.allow() {
                    tracing::warn!(error = %e, left_out, "http accept failed; backing off");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if !raft_net_tcp::descriptors::admit(&stream) {
            // The last descriptors below the process's limit are kept for storage and peers.
            if let Some(left_out) = reserve.allow() {
                tracing::warn!(
                    %peer,
                    reserved = raft_net_tcp::descriptors::RESERVED,
                    left_out,
                    "http connection refused: out of descriptors beyond those kept for storage"
                );
            }
            drop(stream);
            continue;
        }
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            if let Some(left_out) = refused.allow() {
                tracing::warn!(%peer, max = limits.max_connections, left_out, "http connection refused: too many open");
            }
            drop(stream);
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "http connection ended with an error");
                    }
                }
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    tokio::time::sleep(DRAIN).await;
    let _ = closing_tx.send(true);
    // Every connection holds a permit until it ends: having them all back means all ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await;
}

/// Marks a response `Connection: close` once the server is stopping, so that its client opens its
/// next connection elsewhere instead of reusing this one as it closes.
async fn close_while_draining(
    axum::extract::State(draining): axum::extract::State<Arc<AtomicBool>>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}
