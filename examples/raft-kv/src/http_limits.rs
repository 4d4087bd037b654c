//! What one HTTP client may take of a node: how long its headers and body may take to arrive, how
//! many requests are handled at once, how many connections are open at once. Every refusal is a JSON
//! error like the API's others.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;

use crate::http_error::error;

/// The limits of a node's HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The most connections open at once; a connection over it is closed as soon as it is accepted.
    /// Default 256. Whatever the cap, a connection that would take one of the last descriptors
    /// below the process's limit (`ulimit -n`) is closed too: those are kept for storage and
    /// peers ([`raft_net_tcp::descriptors`]). Keep it, with the Raft port's cap, below that limit
    /// less the reserve, so that a flood meets the caps first (the server warns at start if this
    /// cap alone does not fit).
    pub max_connections: usize,
    /// The most requests handled at once; one over it is answered `503 overloaded` at once rather
    /// than queued. Default 512.
    pub max_concurrent_requests: usize,
    /// How long a client may take to send a request's headers, from the moment the server starts
    /// reading them (a new connection, or the next request on a kept-alive one); the connection is
    /// then closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in; the request is
    /// then answered `408 request_timeout`. Default 10 s.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            max_concurrent_requests: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The per-request half of the limits, shared by every request of one router.
#[derive(Clone, Debug)]
pub(crate) struct RequestGuard {
    in_flight: Arc<Semaphore>,
    body_read_timeout: Duration,
    max_body_bytes: usize,
}

impl RequestGuard {
    pub(crate) fn new(limits: &HttpLimits, max_body_bytes: usize) -> Self {
        RequestGuard {
            in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            body_read_timeout: limits.body_read_timeout,
            max_body_bytes,
        }
    }
}

fn too_large(max_body_bytes: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than {max_body_bytes} bytes"),
    )
}

/// Middleware: refuses a request over the concurrency cap, and reads its body (at most the guard's
/// `max_body_bytes`; a body announcing more is refused unread) within the body read timeout before
/// the handler runs.
pub(crate) async fn guard(
    State(guard): State<RequestGuard>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = Arc::clone(&guard.in_flight).try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress at this node; retry shortly",
        );
    };
    let (parts, body) = request.into_parts();
    // A body that announces more than the limit (`Content-Length`) is refused before any of it is
    // read; one without a length is read up to the limit and refused there.
    if body.size_hint().lower() > guard.max_body_bytes as u64 {
        return too_large(guard.max_body_bytes);
    }
    let read = tokio::time::timeout(
        guard.body_read_timeout,
        Limited::new(body, guard.max_body_bytes).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(guard.max_body_bytes)
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("could not read the body: {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    guard.body_read_timeout.as_millis()
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
