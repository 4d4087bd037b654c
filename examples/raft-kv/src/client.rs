//! [`KvClient`]: a small HTTP client of the [`crate::http`] API that follows the `307` redirects of
//! non-leaders to the leader (at most [`MAX_REDIRECTS`] hops).
//!
//! Built on `hyper-util`'s client over the same hyper stack as the axum server (plain HTTP/1.1, no
//! TLS, no extra dependency tree), with a timeout on every request.
//!
//! A `PUT` or a `GET` whose connection closes before any answer (a kept-alive connection the node
//! closed as the request left, say because it is stopping) is sent once more: both are idempotent
//! (a `PUT` sets the same value again), so the retry cannot apply anything twice. `DELETE` and
//! compare-and-swap are not retried (a second `DELETE` answers `404`).

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

/// How many redirects a request follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

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
    /// may or may not have handled the request, so only an idempotent request may be sent again
    /// (a `PUT` of the same value, a read).
    pub fn closed_before_answer(&self) -> bool {
        match self {
            ClientError::Http { message, .. } => {
                message.contains("IncompleteMessage") || message.contains("ConnectionReset")
            }
            _ => false,
        }
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
}

impl Reply {
    /// The body's `error` code (e.g. `not_found`, `outcome_unknown`), if it is an error.
    pub fn error_code(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }
}

/// A client of one node's HTTP API; clone it freely (connections are pooled).
#[derive(Clone, Debug)]
pub struct KvClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
    /// `Bearer <token>`, sent with every request when set.
    authorization: Option<HeaderValue>,
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
        }
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
        let mut url = format!("{}{}", self.base, path);
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = Request::builder().method(method.clone()).uri(&url);
            if let Some(authorization) = &self.authorization {
                builder = builder.header(header::AUTHORIZATION, authorization.clone());
            }
            let payload = match &body {
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
                let response =
                    self.client
                        .request(request)
                        .await
                        .map_err(|e| ClientError::Http {
                            url: url.clone(),
                            message: format!("{e:?}"),
                        })?;
                let status = response.status();
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Http {
                        url: url.clone(),
                        message: e.to_string(),
                    })?
                    .to_bytes();
                Ok::<_, ClientError>((status, location, bytes))
            };
            let (status, location, bytes) = tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| ClientError::Timeout(url.clone()))??;
            if status == StatusCode::TEMPORARY_REDIRECT {
                url = location.ok_or_else(|| ClientError::Redirect(url.clone()))?;
                continue;
            }
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Reply { status, body, url });
        }
        Err(ClientError::Redirect(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// [`request`](Self::request), sent once more if the connection closed before any answer (see
    /// the [module docs](self)): only for idempotent requests.
    async fn request_idempotent(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Reply, ClientError> {
        match self.request(method.clone(), path, body.clone()).await {
            Err(e) if e.closed_before_answer() => self.request(method, path, body).await,
            other => other,
        }
    }

    /// `GET /kv/{key}` (through the log, at the leader): `Some(value)` or `None` on 404; any
    /// other answer is returned as `Err(reply)`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get(&self, key: &str) -> Result<Result<Option<String>, Reply>, ClientError> {
        self.read(key, false).await
    }

    /// `GET /kv/{key}?local=true`: this node's own, possibly stale, value.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get_local(&self, key: &str) -> Result<Result<Option<String>, Reply>, ClientError> {
        self.read(key, true).await
    }

    async fn read(
        &self,
        key: &str,
        local: bool,
    ) -> Result<Result<Option<String>, Reply>, ClientError> {
        let query = if local { "?local=true" } else { "" };
        let path = format!("/kv/{}{query}", encode_key(key));
        let reply = self.request_idempotent(Method::GET, &path, None).await?;
        Ok(match reply.status {
            StatusCode::OK => match reply.body.get("value").and_then(Value::as_str) {
                Some(v) => Ok(Some(v.to_string())),
                None => Err(reply),
            },
            StatusCode::NOT_FOUND if reply.error_code() == Some("not_found") => Ok(None),
            _ => Err(reply),
        })
    }

    /// `PUT /kv/{key}` with `value`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn put(&self, key: &str, value: &str) -> Result<Reply, ClientError> {
        let path = format!("/kv/{}", encode_key(key));
        let body = Bytes::copy_from_slice(value.as_bytes());
        self.request_idempotent(
            Method::PUT,
            &path,
            Some((body, "text/plain; charset=utf-8")),
        )
        .await
    }

    /// `DELETE /kv/{key}`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn delete(&self, key: &str) -> Result<Reply, ClientError> {
        let path = format!("/kv/{}", encode_key(key));
        self.request(Method::DELETE, &path, None).await
    }

    /// `POST /kv/{key}/cas`.
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
        self.request(
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
