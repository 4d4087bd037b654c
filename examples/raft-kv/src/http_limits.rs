//! What one HTTP client may take of a node: how long its headers and body may take to arrive, how
//! long its URI and how large its headers may be, how many requests are handled at once, how many
//! connections are open at once. Every refusal is a JSON error like the API's others.
//!
//! With one exception: hyper parses a request's head before any of the server's code sees it, and
//! answers what it cannot parse itself, with an empty body, then closes the connection: `400` for
//! bytes that are not an HTTP/1 request, `431` for a head beyond its buffer or with more header
//! lines than it has room for, `414` for a request target over 65,534 bytes. hyper offers no way
//! to give those answers a body. So the server sets hyper's limits well above the ones here and
//! checks these itself, first: a request over them but within hyper's gets a JSON `414` or `431`,
//! and only a head several times over the limits meets hyper's own empty answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
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
    /// The longest request target (the URI of the request line, e.g. `/kv/apple?local=true`), in
    /// bytes; a longer one is answered `414 uri_too_long`. Default 8 KiB: a key of several KiB,
    /// percent-encoded. (hyper itself refuses a target over 65,534 bytes, with an empty `414`.)
    pub max_uri_bytes: usize,
    /// The largest request head, in bytes: the request line and the header lines, counted as
    /// `METHOD URI HTTP/1.1\r\n` and `name: value\r\n`; a larger one is answered
    /// `431 headers_too_large`. Default 16 KiB. hyper's own buffer for a head is set to four times
    /// this (at least 64 KiB): a head beyond that (one read may take somewhat more) gets hyper's
    /// empty `431`.
    pub max_head_bytes: usize,
    /// The most header lines in a request; more are answered `431 headers_too_large`. Default 100.
    /// hyper's own limit is set to two and a half times this: beyond it, hyper's empty `431`.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            max_concurrent_requests: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_uri_bytes: 8 * 1024,
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

impl HttpLimits {
    /// hyper's buffer for a request head (and its read buffer): four times
    /// [`max_head_bytes`](Self::max_head_bytes), at least 64 KiB, so that a head over the limit is
    /// answered by [`head_limits`] with JSON, not by hyper.
    pub(crate) fn hyper_buffer_bytes(&self) -> usize {
        self.max_head_bytes.saturating_mul(4).max(64 * 1024)
    }

    /// hyper's limit on header lines: two and a half times [`max_headers`](Self::max_headers),
    /// so that a request over it is answered by [`head_limits`] with JSON, not by hyper.
    pub(crate) fn hyper_max_headers(&self) -> usize {
        self.max_headers.saturating_mul(5) / 2
    }
}

/// The bytes of a request target as it appeared in the request line (origin form `/path?query`,
/// or absolute form `http://host/path?query`).
fn uri_bytes(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

/// The bytes of a request head: `METHOD URI HTTP/1.1\r\n`, each `name: value\r\n`, and the
/// final `\r\n`.
fn head_bytes(request: &Request) -> usize {
    let line = request.method().as_str().len()
        + " ".len()
        + uri_bytes(request.uri())
        + " HTTP/1.1\r\n".len();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    line + headers + "\r\n".len()
}

/// Middleware, outermost: refuses a request whose target, head or number of header lines is over
/// `limits`, with a JSON `414 uri_too_long` or `431 headers_too_large`, before anything else
/// (authentication included) looks at it.
pub(crate) async fn head_limits(
    State(limits): State<HttpLimits>,
    request: Request,
    next: Next,
) -> Response {
    let uri = uri_bytes(request.uri());
    if uri > limits.max_uri_bytes {
        return error(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {uri} bytes long, over the limit of {} bytes",
                limits.max_uri_bytes
            ),
        );
    }
    let lines = request.headers().len();
    if lines > limits.max_headers {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {lines} header lines, over the limit of {}",
                limits.max_headers
            ),
        );
    }
    let head = head_bytes(&request);
    if head > limits.max_head_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers are {head} bytes, over the limit of {} bytes",
                limits.max_head_bytes
            ),
        );
    }
    next.run(request).await
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
