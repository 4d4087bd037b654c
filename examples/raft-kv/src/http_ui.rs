//! The live dashboard every node serves: `GET /ui`, a page (HTML, CSS and vanilla JavaScript
//! compiled into the binary, no external resource) that polls its own node and draws the cluster.
//!
//! | request | answer | token |
//! |---|---|---|
//! | `GET /ui`, `GET /ui/app.js`, `GET /ui/style.css` | the page and its script and style | not needed (they hold no data) |
//! | `GET /ui/cluster` | `200` [`ClusterView`]: this node's membership and every member's `/status`, asked by this node with short timeouts (so the browser talks to one origin only) | needed |
//! | `POST /ui/admin/transfer-leader`, `POST /ui/admin/members` | the same bodies and answers as `/admin/transfer-leader` and `/admin/members`, sent on by this node to the leader (a browser cannot follow a redirect to another node's origin with the token) | needed |
//!
//! The admin routes also require the header [`ACTION_HEADER`]`: 1`, which the page sends: a browser
//! lets another site's page send it only after a CORS preflight that no node grants, so without a
//! token a web page the operator visits still cannot change the cluster through these routes
//! (`403 forbidden` without it).
//!
//! `/ui/cluster` answers from a view at most [`VIEW_MAX_AGE`] old: however many browsers poll, a
//! node asks each member at most a few times a second. The page refreshes about once a second,
//! shows each member (role, term, leader, indexes, log size, snapshot, lag from the leader's
//! replication view, unreachable), the membership, a timeline of what changed between polls
//! (elections, leader changes, members lost and back; kept in the browser's `localStorage`, last
//! 50), and buttons for the admin requests. The token, when the node has one, is typed into the
//! page and kept in `sessionStorage` only.
//!
//! DOM hooks (stable, for tests and scripts): every member's card is
//! `<article class="node" data-node-id="ID" data-role="leader|follower|candidate|learner|unreachable">`,
//! `#leader` holds the id of the leader the page believes in (empty when none), `#term` its term,
//! `#node-count` how many members are shown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::KvClient;
use crate::cluster_view::{ClusterView, StatusFetcher, FETCH_TIMEOUT};
use crate::http::{status_of, ApiState};
use crate::http_error::error;
use crate::http_members::{MembersBody, MAX_MEMBERS_BODY_BYTES};

/// How old a [`ClusterView`] may be and still answer `/ui/cluster`.
pub const VIEW_MAX_AGE: Duration = Duration::from_millis(250);

/// How long an admin request sent on to the leader may take (a membership change waits for its
/// commit, and a little more: see [`crate::http_members::CHANGE_GRACE`]).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The header the dashboard's admin requests must carry (value `1`), see the [module docs](self).
pub const ACTION_HEADER: &str = "x-raft-kv-ui";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// What the dashboard's data routes share.
#[derive(Clone)]
struct UiState {
    api: ApiState,
    fetcher: StatusFetcher,
    /// The latest view and when it was gathered; the lock also makes concurrent polls share one
    /// round of requests.
    latest: Arc<Mutex<Option<(Instant, ClusterView)>>>,
}

/// The data routes (`/ui/cluster`, `/ui/admin/...`): merge them where the API token is required.
pub fn api_routes<S>(state: &ApiState) -> Router<S> {
    let ui = UiState {
        api: state.clone(),
        fetcher: StatusFetcher::new(FETCH_TIMEOUT, state.token.as_ref()),
        latest: Arc::new(Mutex::new(None)),
    };
    Router::new()
        .route("/ui/cluster", get(cluster))
        .route("/ui/admin/transfer-leader", post(transfer_leader))
        .route("/ui/admin/members", post(members))
        .with_state(ui)
}

/// The page routes (`/ui`, its script and style): merge them where no token is required.
pub fn page_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/ui",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
}

/// A static file with headers that keep the page to its own origin: no inline script, no
/// framing, no sniffing, no referrer.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

/// `GET /ui/cluster`.
async fn cluster(State(ui): State<UiState>) -> Json<ClusterView> {
    let mut latest = ui.latest.lock().await;
    if let Some((at, view)) = latest.as_ref() {
        if at.elapsed() < VIEW_MAX_AGE {
            return Json(view.clone());
        }
    }
    let members = MembersBody::of(&ui.api.raft.metrics().borrow());
    let own = status_of(&ui.api);
    let view = ui
        .fetcher
        .view(&members, &ui.api.http_addrs, Some(own))
        .await;
    *latest = Some((Instant::now(), view.clone()));
    Json(view)
}

/// `POST /ui/admin/transfer-leader`.
async fn transfer_leader(State(ui): State<UiState>, headers: HeaderMap, body: Bytes) -> Response {
    forward(&ui.api, &headers, "/admin/transfer-leader", body).await
}

/// `POST /ui/admin/members`.
async fn members(State(ui): State<UiState>, headers: HeaderMap, body: Bytes) -> Response {
    forward(&ui.api, &headers, "/admin/members", body).await
}

/// Sends `body` to `path` at the leader this node knows of (else at this node, which answers
/// `503 no_leader`), following redirects, with this node's token; answers what that node
/// answered.
async fn forward(state: &ApiState, headers: &HeaderMap, path: &str, body: Bytes) -> Response {
    if headers
        .get(ACTION_HEADER)
        .is_none_or(|v| v.as_bytes() != b"1")
    {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("dashboard actions carry the header `{ACTION_HEADER}: 1`"),
        );
    }
    if body.len() > MAX_MEMBERS_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("an admin request is at most {MAX_MEMBERS_BODY_BYTES} bytes"),
        );
    }
    let own = state.raft.id();
    let leader = state.raft.metrics().borrow().current_leader;
    let Some(addr) = leader
        .and_then(|l| state.http_addr_of(l))
        .or_else(|| state.http_addr_of(own))
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no leader known, and this node's own HTTP address is not recorded",
        );
    };
    let mut client = KvClient::new(&addr).with_timeout(ADMIN_TIMEOUT);
    if let Some(token) = &state.token {
        client = client.with_token(token.clone());
    }
    let body = (!body.iter().all(u8::is_ascii_whitespace)).then_some((body, "application/json"));
    match client.request(Method::POST, path, body).await {
        Ok(reply) => {
            if reply.body.is_null() {
                return error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!("{} answered {} without JSON", reply.url, reply.status),
                );
            }
            (reply.status, Json(reply.body)).into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": "unreachable", "message": e.to_string() })),
        )
            .into_response(),
    }
}
