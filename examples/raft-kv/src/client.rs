//! [`KvClient`]: a small HTTP client of the [`crate::http`] API that follows the `307` redirects of
//! non-leaders to the leader (at most [`MAX_REDIRECTS`] hops).
//!
//! Built on `hyper-util`'s client over the same hyper stack as the axum server (plain HTTP/1.1, no
//! TLS, no extra dependency tree), with a timeout on every request.
//!
//! # Retries
//! Every client holds a **session** (a random `Client-Id`; see [`crate::http_session`]) and numbers
//! its writes (`PUT`, `DELETE`, compare-and-swap) 1, 2, 3, ... (`Client-Seq`). A write whose outcome
//! is unknown — `500 outcome_unknown`, `504 timeout`, no answer within the client's timeout, or a
//! connection closed before any answer — is sent again **with the same number**, so the cluster
//! applies it at most once and answers the retry with the first answer (`Session-Duplicate: true`).
//! A write refused before anything was proposed (`503`) is sent again too, and so is one whose
//! redirect named a node that cannot be reached (the leader the first node knew has just stopped,
//! and the others have not elected a new one yet): nothing was sent to it, and the next attempt
//! starts again at the client's node, which by then may know the new leader. At most
//! [`DEFAULT_ATTEMPTS`] attempts per write (see [`KvClient::with_attempts`]), with a growing pause;
//! after the last, the last answer (or error) is returned and the outcome stays unknown.
//!
//! Writes of one client go one at a time (a session has one command in flight): concurrent calls on
//! one `KvClient` wait for each other. A clone is a new client, with a session of its own, so
//! clones run in parallel.
//!
//! Reads are retried on the same answers (a failed read read nothing, so a retry is always safe).
//!
//! The client's own node refusing the connection is not retried: the caller, who may know other
//! nodes, hears of it at once ([`ClientError::Http`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::http::{CasRequest, StatusBody};
use crate::http_auth::ApiToken;
use crate::http_read::Consistency;
use crate::http_session::{
    CLIENT_ID_HEADER, CLIENT_SEQ_HEADER, LOG_INDEX_HEADER, SESSION_DUPLICATE_HEADER,
};

/// How many redirects a request follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// How many times a write or a read is sent at most, by default (the first attempt included).
pub const DEFAULT_ATTEMPTS: u32 = 6;

/// The pause before the first retry; it doubles per retry, up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause between retries.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What went wrong talking to a node (the server's own error answers are [`Reply`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address or a `Location` is not a valid URL.
    #[error("invalid url {0:?}")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("request to {url} failed: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// No answer within the client's timeout.
    #[error("request to {0} timed out")]
    Timeout(String),
    /// More than [`MAX_REDIRECTS`] redirects, or a 307 without `Location`.
    #[error("redirect problem at {0}")]
    Redirect(String),
    /// A `307` named a node that could not be connected to (refused, unreachable): nothing was
    /// sent to it. Usually a leader that has just stopped while the other nodes still name it.
    /// Writes and reads that meet it are sent again, so a call returns it only once its attempts
    /// have run out.
    #[error("the node {url} that a redirect named cannot be reached: {message}")]
    RedirectUnreachable {
        /// The redirect's target.
        url: String,
        /// Why the connection failed.
        message: String,
    },
    /// The answer's body is not the JSON expected.
    #[error("unexpected answer from {url}: {status} {body}")]
    Unexpected {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
}

impl ClientError {
    /// Whether the connection closed (or was reset) before the server answered anything: the node
    /// may or may not have handled the request.
    pub fn closed_before_answer(&self) -> bool {
        match self {
            ClientError::Http { message, .. } => {
                message.contains("IncompleteMessage") || message.contains("ConnectionReset")
            }
            _ => false,
        }
    }

    /// Whether the request may have reached the node without an answer coming back (the
    /// connection closed, or the client's timeout ran out): a write's outcome is unknown.
    pub fn outcome_unknown(&self) -> bool {
        self.closed_before_answer() || matches!(self, ClientError::Timeout(_))
    }

    /// Whether the request was sent nowhere that could have handled it: a redirect's target could
    /// not be connected to. Another attempt is safe, a write's included.
    pub fn not_sent(&self) -> bool {
        matches!(self, ClientError::RedirectUnreachable { .. })
    }
}

/// A server's answer: its status and JSON body (`Value::Null` if the body is not JSON), and the
/// URL that finally answered.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body as JSON.
    pub body: Value,
    /// The URL that answered (after redirects).
    pub url: String,
    /// The `Log-Index` header: where a write was applied, what a read reflects.
    pub log_index: Option<u64>,
    /// Whether the answer is a retried write's first answer, replayed from its session
    /// (`Session-Duplicate: true`).
    pub duplicate: bool,
    /// How many attempts the call took (1 without a retry).
    pub attempts: u32,
}

impl Reply {
    /// The body's `error` code (e.g. `not_found`, `outcome_unknown`), if it is an error.
    pub fn error_code(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// Whether a write answered this may or may not have been applied (`500 outcome_unknown`,
    /// `504 timeout`).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            (self.status, self.error_code()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("outcome_unknown"))
                | (StatusCode::GATEWAY_TIMEOUT, Some("timeout"))
        )
    }

    /// Whether nothing was done and a retry may succeed (`503`: no leader, overloaded, a read not
    /// confirmed).
    pub fn unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A client session: its id and the number of its next write.
#[derive(Debug)]
struct Session {
    client_id: u64,
    next_seq: u64,
}

impl Session {
    fn new() -> Self {
        Session {
            client_id: random_id(),
            next_seq: 1,
        }
    }
}

/// A random 64-bit session id, from the standard library's randomly keyed hasher (no extra
/// dependency), mixed with the time and a process-wide counter.
fn random_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A client of one node's HTTP API. Connections are pooled and shared by clones; each clone has a
/// session of its own (see the [module docs](self)).
#[derive(Debug)]
pub struct KvClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    /// `Bearer <token>`, sent with every request when set.
    authorization: Option<HeaderValue>,
    /// At most this many attempts per write or read.
    attempts: u32,
    /// Held for the whole of a write: one write in flight per session.
    session: Arc<tokio::sync::Mutex<Session>>,
}

impl Clone for KvClient {
    /// The same node, settings and connection pool, with a new session.
    fn clone(&self) -> Self {
        KvClient {
            client: self.client.clone(),
            base: self.base.clone(),
            timeout: self.timeout,
            authorization: self.authorization.clone(),
            attempts: self.attempts,
            session: Arc::new(tokio::sync::Mutex::new(Session::new())),
        }
    }
}

/// Percent-encodes a key for a path segment.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl KvClient {
    /// A client of the node at `addr` (`host:port` or `http://host:port`), with a 15 s timeout
    /// per request (hop).
    pub fn new(addr: &str) -> Self {
        let base = if addr.starts_with("http://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        KvClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
            timeout: Duration::from_secs(15),
            authorization: None,
            attempts: DEFAULT_ATTEMPTS,
            session: Arc::new(tokio::sync::Mutex::new(Session::new())),
        }
    }

    /// Sets how many times a write or read is sent at most (at least 1: no retry).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// This client's session id (`Client-Id`).
    pub async fn client_id(&self) -> u64 {
        self.session.lock().await.client_id
    }

    /// This client's session id and the number its last write went with (0 before any write):
    /// what a caller needs to send that write again itself ([`request_in_session`]) after this
    /// client gave up on it.
    ///
    /// [`request_in_session`]: Self::request_in_session
    pub async fn last_write(&self) -> (u64, u64) {
        let session = self.session.lock().await;
        (session.client_id, session.next_seq - 1)
    }

    /// Sets the timeout of each request (each hop of a redirect chain).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `token` with every request (`Authorization: Bearer`), for nodes that require it.
    pub fn with_token(mut self, token: ApiToken) -> Self {
        self.authorization = token.header_value();
        self
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with `body`, following `307` redirects; returns the final answer, whatever
    /// its status.
    ///
    /// # Errors
    /// Transport failures, timeouts, too many redirects.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Reply, ClientError> {
        self.send(method, path, body.as_ref(), None).await
    }

    /// [`request`](Self::request) with the session headers of write `seq` of `client_id`, if given.
    ///
    /// # Errors
    /// Transport failures, timeouts, too many redirects.
    pub async fn request_in_session(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        client_id: u64,
        seq: u64,
    ) -> Result<Reply, ClientError> {
        self.send(method, path, body.as_ref(), Some((client_id, seq)))
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(Bytes, &'static str)>,
        session: Option<(u64, u64)>,
    ) -> Result<Reply, ClientError> {
        let mut url = format!("{}{}", self.base, path);
        for hop in 0..=MAX_REDIRECTS {
            let mut builder = Request::builder().method(method.clone()).uri(&url);
            if let Some(authorization) = &self.authorization {
                builder = builder.header(header::AUTHORIZATION, authorization.clone());
            }
            if let Some((client_id, seq)) = session {
                builder = builder
                    .header(CLIENT_ID_HEADER, client_id)
                    .header(CLIENT_SEQ_HEADER, seq);
            }
            let payload = match body {
                Some((bytes, content_type)) => {
                    builder = builder.header(header::CONTENT_TYPE, *content_type);
                    bytes.clone()
                }
                None => Bytes::new(),
            };
            let request = builder
                .body(Full::new(payload))
                .map_err(|_| ClientError::Url(url.clone()))?;
            let exchange = async {
                let response = self.client.request(request).await.map_err(|e| {
                    let (url, message) = (url.clone(), format!("{e:?}"));
                    if hop > 0 && e.is_connect() {
                        ClientError::RedirectUnreachable { url, message }
                    } else {
                        ClientError::Http { url, message }
                    }
                })?;
                let status = response.status();
                let headers = response.headers();
                let location = headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let log_index = headers
                    .get(LOG_INDEX_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let duplicate = headers
                    .get(SESSION_DUPLICATE_HEADER)
                    .is_some_and(|v| v.as_bytes() == b"true");
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Http {
                        url: url.clone(),
                        message: e.to_string(),
                    })?
                    .to_bytes();
                Ok::<_, ClientError>((status, location, log_index, duplicate, bytes))
            };
            let (status, location, log_index, duplicate, bytes) =
                tokio::time::timeout(self.timeout, exchange)
                    .await
                    .map_err(|_| ClientError::Timeout(url.clone()))??;
            if status == StatusCode::TEMPORARY_REDIRECT {
                url = location.ok_or_else(|| ClientError::Redirect(url.clone()))?;
                continue;
            }
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Reply {
                status,
                body,
                url,
                log_index,
                duplicate,
                attempts: 1,
            });
        }
        Err(ClientError::Redirect(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// The pause before retry number `retry` (1 for the first).
    fn pause(retry: u32) -> Duration {
        FIRST_RETRY_PAUSE
            .saturating_mul(1 << retry.saturating_sub(1).min(10))
            .min(MAX_RETRY_PAUSE)
    }

    /// Sends a write in this client's session (see the [module docs](self)): the next number,
    /// resent with the same number while its outcome is unknown or nothing was proposed, up to the
    /// attempt limit.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Reply, ClientError> {
        let mut session = self.session.lock().await;
        let mut seq = session.next_seq;
        session.next_seq += 1;
        // Whether an earlier attempt of this write may have been applied.
        let mut maybe_applied = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send(
                    method.clone(),
                    path,
                    body.as_ref(),
                    Some((session.client_id, seq)),
                )
                .await;
            let retry = match &result {
                Ok(reply) if reply.outcome_unknown() => {
                    maybe_applied = true;
                    true
                }
                Ok(reply) if reply.unavailable() => true,
                // The cluster forgot the session. Nothing was applied by this attempt; if no earlier
                // one can have been, the write goes again as the first of a new session. Otherwise
                // its outcome stays unknown: answered as is.
                Ok(reply) if reply.error_code() == Some("session_expired") && !maybe_applied => {
                    *session = Session::new();
                    seq = session.next_seq;
                    session.next_seq += 1;
                    true
                }
                Err(e) if e.outcome_unknown() => {
                    maybe_applied = true;
                    true
                }
                Err(e) if e.not_sent() => true,
                _ => false,
            };
            if !retry || attempt >= self.attempts {
                return result.map(|reply| Reply {
                    attempts: attempt,
                    ..reply
                });
            }
            tokio::time::sleep(Self::pause(attempt)).await;
        }
    }

    /// Sends a read, again while it fails in a way a retry may cure (a failed read read nothing).
    async fn read_retrying(&self, path: &str) -> Result<Reply, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send(Method::GET, path, None, None).await;
            let retry = match &result {
                Ok(reply) => reply.unavailable() || reply.outcome_unknown(),
                Err(e) => e.outcome_unknown() || e.not_sent(),
            };
            if !retry || attempt >= self.attempts {
                return result.map(|reply| Reply {
                    attempts: attempt,
                    ..reply
                });
            }
            tokio::time::sleep(Self::pause(attempt)).await;
        }
    }

    /// `GET /kv/{key}`, linearizable (ReadIndex, served by the node asked, no log entry):
    /// `Some(value)` or `None` on 404; any other answer is returned as `Err(reply)`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get(&self, key: &str) -> Result<Result<Option<String>, Reply>, ClientError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// `GET /kv/{key}?consistency=stale`: this node's own, possibly stale, value.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get_local(&self, key: &str) -> Result<Result<Option<String>, Reply>, ClientError> {
        self.get_with(key, Consistency::Stale).await
    }

    /// `GET /kv/{key}?consistency=...`, decoded as [`get`](Self::get) does.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get_with(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Result<Option<String>, Reply>, ClientError> {
        let reply = self.get_reply(key, consistency).await?;
        Ok(match reply.status {
            StatusCode::OK => match reply.body.get("value").and_then(Value::as_str) {
                Some(v) => Ok(Some(v.to_string())),
                None => Err(reply),
            },
            StatusCode::NOT_FOUND if reply.error_code() == Some("not_found") => Ok(None),
            _ => Err(reply),
        })
    }

    /// `GET /kv/{key}?consistency=...`, the answer as it is (with its `Log-Index`).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get_reply(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Reply, ClientError> {
        let path = format!(
            "/kv/{}?consistency={}",
            encode_key(key),
            consistency.as_str()
        );
        self.read_retrying(&path).await
    }

    /// `PUT /kv/{key}` with `value`, in this client's session.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn put(&self, key: &str, value: &str) -> Result<Reply, ClientError> {
        let path = format!("/kv/{}", encode_key(key));
        let body = Bytes::copy_from_slice(value.as_bytes());
        self.write(
            Method::PUT,
            &path,
            Some((body, "text/plain; charset=utf-8")),
        )
        .await
    }

    /// `DELETE /kv/{key}`, in this client's session.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn delete(&self, key: &str) -> Result<Reply, ClientError> {
        let path = format!("/kv/{}", encode_key(key));
        self.write(Method::DELETE, &path, None).await
    }

    /// `POST /kv/{key}/cas`, in this client's session.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<Reply, ClientError> {
        let path = format!("/kv/{}/cas", encode_key(key));
        let body = serde_json::to_vec(&CasRequest {
            expected: expected.map(str::to_string),
            new: new.to_string(),
        })
        .map_err(|e| ClientError::Url(e.to_string()))?;
        self.write(
            Method::POST,
            &path,
            Some((Bytes::from(body), "application/json")),
        )
        .await
    }

    /// `POST /admin/transfer-leader`: hands leadership to `to`, or to the most up-to-date follower,
    /// and answers once it leads (following the redirect to the leader).
    ///
    /// # Errors
    /// Transport failures.
    pub async fn transfer_leader(&self, to: Option<u64>) -> Result<Reply, ClientError> {
        let body = match to {
            Some(to) => Some((
                Bytes::from(
                    serde_json::to_vec(&crate::http_admin::TransferRequest { to })
                        .map_err(|e| ClientError::Url(e.to_string()))?,
                ),
                "application/json",
            )),
            None => None,
        };
        self.request(Method::POST, "/admin/transfer-leader", body)
            .await
    }

    /// `GET /admin/members`: this node's view of the membership, or with `leader` the leader's
    /// (following the redirect), which carries every member's lag.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn members(&self, leader: bool) -> Result<Reply, ClientError> {
        let path = if leader {
            "/admin/members?leader=true"
        } else {
            "/admin/members"
        };
        self.request(Method::GET, path, None).await
    }

    /// [`members`](Self::members), decoded: `Err` with the answer if it is not a membership.
    ///
    /// # Errors
    /// Transport failures, or an answer that is not a membership (no leader, say).
    pub async fn members_body(
        &self,
        leader: bool,
    ) -> Result<crate::http_members::MembersBody, ClientError> {
        let reply = self.members(leader).await?;
        if reply.status != StatusCode::OK {
            return Err(unexpected(reply));
        }
        serde_json::from_value(reply.body.clone()).map_err(|_| unexpected(reply))
    }

    /// `POST /admin/members` with `request` (following the redirect to the leader); answers once
    /// the change is committed, or with the error that refused it.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn change_members(
        &self,
        request: &crate::http_members::MembersRequest,
    ) -> Result<Reply, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Url(e.to_string()))?;
        self.request(
            Method::POST,
            "/admin/members",
            Some((Bytes::from(body), "application/json")),
        )
        .await
    }

    /// `GET /status` of this node (no redirect involved).
    ///
    /// # Errors
    /// Transport failures, or an answer that is not a status.
    pub async fn status(&self) -> Result<StatusBody, ClientError> {
        let reply = self.request(Method::GET, "/status", None).await?;
        serde_json::from_value(reply.body.clone()).map_err(|_| unexpected(reply))
    }
}

fn unexpected(reply: Reply) -> ClientError {
    ClientError::Unexpected {
        url: reply.url,
        status: reply.status.as_u16(),
        body: reply.body.to_string(),
    }
}
