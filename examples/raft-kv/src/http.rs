//! The HTTP/JSON client API of a `raft-kv` node ([`router`]).
//!
//! | request | answer |
//! |---|---|
//! | `GET /kv/{key}` | `200 {"key", "value"}`; `404 {"error": "not_found", ..}`: a linearizable read served by any node without a log entry (ReadIndex) |
//! | `GET /kv/{key}?consistency=linearizable\|lease\|stale\|log` | the same, in that read mode (see [`crate::http_read`]); `stale` reads this node's own state machine at once and may lag the leader; `log` reads through the log at the leader |
//! | `GET /kv/{key}?local=true` | the older spelling of `consistency=stale` |
//! | `PUT /kv/{key}`, body = the value (UTF-8) | `200 {"key", "value", "previous"}` (`previous`: the replaced value or `null`) |
//! | `DELETE /kv/{key}` | `200 {"key", "previous"}`; `404 {"error": "not_found", ..}` if the key did not exist |
//! | `POST /kv/{key}/cas`, body `{"expected": string or null, "new": string}` | `200 {"key", "swapped": true, "current"}`; `409 {"key", "swapped": false, "current"}` with the value that did not match (`null`: absent) |
//! | `GET /metrics` | `200`, the node's metrics in the OpenMetrics text format (Prometheus), without the API token (see [`crate::metrics`]) |
//! | `GET /status` | `200 {"id", "status", "role", "term", "leader", "leader_http", "commit_index", "last_applied", "last_log_index", "snapshot_index", "log_entries", "members", "learners", "joint", "old_voters", "lag", "elections_started", "pre_votes_lost", "transfers_started", "transfers_abandoned"}` (the counters since this process started) |
//! | `POST /admin/transfer-leader`, no body or `{"to": id}` | `200 {"leader": id}` once leadership moved (see [`crate::http_admin`]) |
//! | `GET /admin/members`, `POST /admin/members` | the membership; add a learner, promote, demote, remove, set the voters (see [`crate::http_members`]) |
//!
//! Every `/kv` write is a log entry, answered once the entry is applied; reads write nothing to the
//! log unless asked to (`consistency=log`). A write with the headers `Client-Id` and `Client-Seq` is
//! applied at most once however often it is retried (see [`crate::http_session`]). Every successful
//! `/kv` answer carries `Log-Index` (where the write was applied; what the read reflects). Keys are
//! path segments: percent-encode a `/` in a key as `%2F`.
//!
//! Errors are JSON `{"error": code, "message": text}` (plus `"leader"` where known):
//!
//! | status | `error` | meaning |
//! |---|---|---|
//! | `307` + `Location` | `not_leader` | a write (or a `consistency=log` read) at a node that is not the leader; nothing was proposed; repeat the request at `Location` (the leader's HTTP address, same path and query; this node's own, if it was elected while the write waited; a voter's, from a node removed from the cluster) |
//! | `503` | `no_leader` | not the leader and no leader known (election under way): a write first waits up to 2 s in all for a leader it can redirect to (a node just restarted learns it within a heartbeat, a leader that just handed over learns its successor at its first message, a node joining learns the leader's address with the membership); nothing was proposed (or read), safe to retry |
//! | `503` | `leadership_lost`, `stopped` | a read could not be confirmed; nothing was read, safe to retry (see [`crate::http_read`]) |
//! | `500` | `outcome_unknown` | the entry was proposed but this node lost leadership (or stopped) before it applied: it **may or may not** take effect; safe to retry only with the same `Client-Id`/`Client-Seq` (or for an idempotent request) |
//! | `504` | `timeout` | a write: no answer within the server's write timeout, the outcome is unknown as well; a read: not confirmed in time, nothing was read |
//! | `400` | `session_stale` | a session write numbered below the session's latest: nothing applied (`"latest"`: the latest number) |
//! | `410` | `session_expired` | a session write numbered above 1 for a session the cluster does not know (expired after an hour idle, or evicted): nothing applied by this request; open a new session |
//! | `400`, `415`, `422` | `bad_request` | invalid JSON, a non-UTF-8 value or key, or bad session headers (`400`), a CAS body without `Content-Type: application/json` (`415`), JSON of the wrong shape, e.g. a missing field (`422`) |
//! | `413` | `payload_too_large` | a body over [`MAX_BODY_BYTES`], or a command whose encoded size is over the node's `max_entry_bytes` (nothing was proposed) |
//! | `401` | `unauthorized` | the node has an API token and the request did not carry it as `Authorization: Bearer <token>` |
//! | `403` | `cross_site_request` | a `POST`, `PUT` or `DELETE` that a browser marks as sent by another site's page (`Sec-Fetch-Site`, or an `Origin` that is not the request's `Host`); nothing was done. Clients that are not browsers send neither header (see `http_origin`) |
//! | `404` | `not_found` | no such key, or no such route |
//! | `405` | `method_not_allowed` | the route does not take that method |
//! | `408` | `request_timeout` | the body did not arrive within the server's body read timeout |
//! | `414` | `uri_too_long` | the request target is over 8 KiB |
//! | `431` | `headers_too_large` | the request line and headers are over 16 KiB, or over 100 header lines |
//! | `503` | `overloaded` | the node is handling its maximum of requests at once; nothing was proposed, retry shortly |
//!
//! Connections: at most `HttpLimits::max_connections` are open at once (one over is closed as soon as
//! it is accepted), and a client that does not send its headers within the header read timeout is
//! disconnected (see [`crate::http_limits`]). A target over 8 KiB is `414 uri_too_long`; a head over
//! 16 KiB or 100 header lines is `431 headers_too_large`. Only what hyper refuses while parsing
//! (non-HTTP bytes, a head beyond about 64 KiB or 250 lines) gets hyper's own empty `400`/`431`.
//!
//! `not_leader`/`no_leader` (nothing proposed, retry anywhere) and `outcome_unknown`/`timeout`
//! (maybe applied) are kept apart as the node's `ClientWriteError` keeps them apart.

// The helpers return the early HTTP answer as their error (`Result<_, Response>`): a large `Err`,
// but on a path that ends the request anyway.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use raft_core::{
    ClientWriteError, LogIndex, Metrics, NodeId, NodeStatus, Role, StoppedError, Term,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::KvRaft;
use crate::command::{KvCommand, KvResponse};
use crate::http_auth::{self, ApiToken};
use crate::http_error::error;
use crate::http_limits::{self, HttpLimits, RequestGuard};
use crate::http_session::{now_ms, with_position, SessionHeaders};
use crate::metrics::KvMetrics;
use crate::state_machine::KvReader;

/// The largest request body accepted (a value, or a compare-and-swap request): 1 MiB. Larger
/// bodies get `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest command the API can produce, by [`KvCommand::encoded_size`]: a body at
/// [`MAX_BODY_BYTES`] plus a key as long as a request line can carry (the `http` crate refuses URIs
/// longer than `u16::MAX` bytes) plus the encoding overhead. The node's `max_entry_bytes` must be at
/// least this, or valid requests would be refused with `413` (checked at start).
pub const MAX_COMMAND_BYTES: usize = MAX_BODY_BYTES + u16::MAX as usize + 1024;

/// How long a request waits for its log entry to be applied before answering `504` (default).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP handlers of one node need.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The node.
    pub raft: KvRaft,
    /// Its state machine's reader, for `/status` and `?local=true` reads.
    pub reader: KvReader,
    /// HTTP addresses (`host:port`) given at start (`--peers`), for redirects to the leader. The
    /// address a member's entry in the membership records ([`raft_core::Node::data`]) takes
    /// precedence: see [`ApiState::http_addr_of`].
    pub http_addrs: BTreeMap<NodeId, String>,
    /// How long a request waits for its entry to apply.
    pub write_timeout: Duration,
    /// What one client may take of the node (timeouts, concurrency).
    pub limits: HttpLimits,
    /// The bearer token every request must carry, if any (`/metrics` excepted).
    pub token: Option<ApiToken>,
    /// The node's Prometheus metrics, served at `GET /metrics`.
    pub metrics: KvMetrics,
}

impl ApiState {
    /// The state for `raft`, with the default write timeout.
    pub fn new(raft: KvRaft, reader: KvReader, http_addrs: BTreeMap<NodeId, String>) -> Self {
        let metrics = KvMetrics::new(&raft, None);
        ApiState {
            metrics,
            raft,
            reader,
            http_addrs,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            limits: HttpLimits::default(),
            token: None,
        }
    }
}

impl ApiState {
    /// Node `id`'s HTTP address: the one its entry in the membership records (so a node that
    /// joined after this one started is found), else the one given at start.
    pub fn http_addr_of(&self, id: NodeId) -> Option<String> {
        self.http_addr_in(&self.raft.metrics().borrow(), id)
    }

    /// [`http_addr_of`](Self::http_addr_of) with the metrics already at hand (inside a
    /// `watch::Receiver::wait_for`, where borrowing them again could deadlock).
    fn http_addr_in(&self, metrics: &Metrics, id: NodeId) -> Option<String> {
        let recorded = metrics
            .membership
            .nodes
            .get(&id)
            .map(|node| node.data.clone())
            .filter(|addr| !addr.is_empty());
        recorded.or_else(|| self.http_addrs.get(&id).cloned())
    }
}

/// The axum router of the client API (see the [module docs](self)).
pub fn router(state: ApiState) -> Router {
    let metrics = state.metrics.clone();
    let api = Router::new()
        .route(
            "/kv/{key}",
            get(crate::http_read::get_key)
                .put(put_key)
                .delete(delete_key),
        )
        .route("/kv/{key}/cas", post(cas_key))
        .route("/status", get(status))
        .route(
            "/admin/transfer-leader",
            post(crate::http_admin::transfer_leader),
        )
        .route(
            "/admin/members",
            get(crate::http_members::get_members).post(crate::http_members::post_members),
        )
        .merge(crate::http_ui::api_routes(&state))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            RequestGuard::new(&state.limits, MAX_BODY_BYTES),
            http_limits::guard,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.token.clone(),
            http_auth::require_token,
        ))
        .layer(middleware::from_fn(crate::http_origin::refuse_cross_site))
        .merge(crate::http_ui::page_routes())
        .with_state(state);
    crate::http_metrics::with_metrics(api, metrics)
}

/// The body of `POST /kv/{key}/cas`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasRequest {
    /// The value the key must hold (`null`: the key must be absent).
    pub expected: Option<String>,
    /// The value to set.
    pub new: String,
}

/// `GET /status`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// This node's id.
    pub id: NodeId,
    /// `running`, or `stopped: reason`.
    pub status: String,
    /// `leader`, `follower`, `pre-candidate` or `candidate`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of in its term.
    pub leader: Option<NodeId>,
    /// That leader's HTTP address.
    pub leader_http: Option<String>,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The last index applied to the state machine.
    pub last_applied: u64,
    /// The index of the last entry in the log.
    pub last_log_index: u64,
    /// The last index covered by the latest snapshot (0 if none).
    pub snapshot_index: u64,
    /// How many entries the log holds after its compaction point.
    pub log_entries: u64,
    /// The voters of the membership in force (of the new configuration, while joint).
    pub members: Vec<NodeId>,
    /// Its learners: they receive the log but do not vote.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// Whether a change of voters is under way (the joint configuration).
    #[serde(default)]
    pub joint: bool,
    /// While joint: the outgoing voters.
    #[serde(default)]
    pub old_voters: Option<Vec<NodeId>>,
    /// On the leader: how many entries each other member (learners included) lacks. Empty on
    /// other nodes.
    #[serde(default)]
    pub lag: BTreeMap<NodeId, u64>,
    /// Elections this node started since it started (its term went up to campaign). On a healthy
    /// cluster it stays still: a rising count means leaders are being lost.
    #[serde(default)]
    pub elections_started: u64,
    /// Pre-vote rounds this node lost (it stayed in its term: a node cut off, or behind).
    #[serde(default)]
    pub pre_votes_lost: u64,
    /// Leadership transfers this node started as leader.
    #[serde(default)]
    pub transfers_started: u64,
    /// Leadership transfers this node abandoned (the target did not take over in time).
    #[serde(default)]
    pub transfers_abandoned: u64,
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn body_rejection(status: StatusCode, text: String) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(
            status,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    } else if status.is_client_error() {
        error(status, "bad_request", text)
    } else {
        error(StatusCode::BAD_REQUEST, "bad_request", text)
    }
}

pub(crate) fn key_of(path: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    match path {
        Ok(Path(key)) => Ok(key),
        Err(e) => Err(bad_request(format!("invalid key: {}", e.body_text()))),
    }
}

/// A write's outcome: its response and where it was applied (for a retry answered from the
/// session, where it was first applied).
struct Written {
    response: KvResponse,
    index: LogIndex,
    duplicate: bool,
}

impl Written {
    /// `answer` with the write's position headers.
    fn answer(&self, answer: Response) -> Response {
        with_position(answer, self.index, self.duplicate)
    }
}

/// Proposes the write `command` at this node, in `session` if any (stamped with this node's clock:
/// only the leader accepts the proposal, so it is the leader's), and maps every failure, and a
/// session's refusals, to their HTTP answer.
async fn write(
    state: &ApiState,
    uri: &Uri,
    session: Option<SessionHeaders>,
    command: KvCommand,
) -> Result<Written, Response> {
    let command = match session {
        Some(s) => command.in_session(s.client_id, s.seq, now_ms()),
        None => command,
    };
    match propose(state, uri, command).await? {
        (KvResponse::Duplicate { index, response }, _) => Ok(Written {
            response: *response,
            index,
            duplicate: true,
        }),
        (KvResponse::SessionStale { latest }, _) => Err((
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "session_stale",
                "message": format!("the session is at Client-Seq {latest}; an older number is not applied"),
                "latest": latest,
            })),
        )
            .into_response()),
        (KvResponse::SessionExpired, _) => Err(error(
            StatusCode::GONE,
            "session_expired",
            "the cluster does not know this Client-Id (expired or evicted) and Client-Seq is not 1: \
             nothing was applied by this request; open a new session",
        )),
        (response, index) => Ok(Written {
            response,
            index,
            duplicate: false,
        }),
    }
}

/// Proposes `command` at this node and maps every failure to its HTTP answer; returns the response
/// and the index of the entry that carried it.
pub(crate) async fn propose(
    state: &ApiState,
    uri: &Uri,
    command: KvCommand,
) -> Result<(KvResponse, LogIndex), Response> {
    // No leader known: an election under way, or this node just started and has not heard from
    // the leader yet. Wait (bounded) for one rather than fail the request at once. The waits
    // before and after the proposal share one budget, which starts at the first of them.
    let leader_budget = LEADER_WAIT.min(state.write_timeout);
    let mut leader_wait = None;
    let mut metrics = state.raft.metrics();
    let (leader_known, removed_from) = {
        let m = metrics.borrow();
        (m.current_leader.is_some(), member_after_removal(state, &m))
    };
    if let Some(member) = removed_from {
        return Err(redirect_after_removal(state, uri, member));
    }
    if !leader_known {
        let deadline = *leader_wait.insert(tokio::time::Instant::now() + leader_budget);
        let _ = tokio::time::timeout_at(deadline, metrics.wait_for(|m| m.current_leader.is_some()))
            .await;
    }
    let term_before = metrics.borrow().current_term;
    let write = tokio::time::timeout(state.write_timeout, state.raft.client_write(command)).await;
    match write {
        Ok(Ok(response)) => Ok((response.data, response.log_id.index)),
        Ok(Err(ClientWriteError::NotLeader { leader_hint })) => {
            let me = state.raft.id();
            if let Some(leader) =
                leader_hint.filter(|&l| l != me && state.http_addr_of(l).is_some())
            {
                return Err(redirect(state, uri, Some(leader)));
            }
            // Refused without a node to send the client to: this node has just stepped down (a
            // leadership transfer, a higher term) and has not heard from its successor, or it
            // campaigns, or it names a leader whose address it does not know yet (a learner that
            // joined before the membership reached it, a leader removing itself). Wait (within
            // the same budget) for a leader it can redirect to, rather than answer 503 for a
            // routine hand-over.
            let deadline =
                leader_wait.unwrap_or_else(|| tokio::time::Instant::now() + leader_budget);
            Err(match wait_for_reachable_leader(state, metrics, deadline, term_before).await {
                Some(Reachable::Leader(leader)) if leader == me => redirect_to(
                    state,
                    uri,
                    me,
                    "this node has just been elected leader; nothing was proposed; send the request again"
                        .to_string(),
                ),
                Some(Reachable::Leader(leader)) => redirect(state, uri, Some(leader)),
                Some(Reachable::AfterRemoval(member)) => redirect_after_removal(state, uri, member),
                None => redirect(state, uri, leader_hint),
            })
        }
        Ok(Err(ClientWriteError::OutcomeUnknown { leader_hint })) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "error": "outcome_unknown",
                "message": "this node lost leadership after proposing the request: it may or may not take effect",
                "leader": leader_hint,
            })),
        )
            .into_response()),
        Ok(Err(ClientWriteError::TooLarge { size, max })) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the command is about {size} bytes encoded, over the limit of {max} bytes"),
        )),
        Ok(Err(ClientWriteError::Stopped(StoppedError(reason)))) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "outcome_unknown",
            format!("the node stopped ({reason}): the request may or may not take effect"),
        )),
        Err(_) => Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "not applied within {} ms: the request may or may not take effect",
                state.write_timeout.as_millis()
            ),
        )),
    }
}

/// How long a write that finds no leader known waits for one before it is answered `503`: about
/// one election, so a node that just restarted, or a cluster electing, costs the client a short
/// wait rather than a failed request.
const LEADER_WAIT: Duration = Duration::from_secs(2);

/// When this node knows no leader and is not a member of the latest membership it knows (it was
/// removed), a voter of that membership to send clients to: the first one whose HTTP address is
/// known. A removed node hears from the cluster no more, so waiting for a leader would only delay
/// them. `None` otherwise, and for a node that has not received a membership yet (one joining).
fn member_after_removal(state: &ApiState, m: &Metrics) -> Option<NodeId> {
    let me = state.raft.id();
    if m.current_leader.is_some() || m.membership.is_member(me) {
        return None;
    }
    m.membership
        .voters
        .iter()
        .copied()
        .find(|&id| id != me && state.http_addr_in(m, id).is_some())
}

/// `307` to `member`, a voter of the membership that removed this node.
fn redirect_after_removal(state: &ApiState, uri: &Uri, member: NodeId) -> Response {
    redirect_to(
        state,
        uri,
        member,
        format!(
            "this node is no longer a member of the cluster; nothing was proposed; retry at node {member}"
        ),
    )
}

/// Where a write refused by this node can be sent.
enum Reachable {
    /// The leader (this node itself, once elected in a later term).
    Leader(NodeId),
    /// A voter of the membership that removed this node.
    AfterRemoval(NodeId),
}

/// Waits, until `deadline` at the latest, until this node knows a leader whose HTTP address it
/// knows (itself only if elected in a term after `term_before`: before that, its metrics may still
/// show the leadership it has just lost) or finds itself removed, and says where to send the
/// client; `None` if nowhere by then (an election still under way) or if this node stops meanwhile.
async fn wait_for_reachable_leader(
    state: &ApiState,
    mut metrics: watch::Receiver<Metrics>,
    deadline: tokio::time::Instant,
    term_before: Term,
) -> Option<Reachable> {
    let me = state.raft.id();
    let reachable = |m: &Metrics| {
        let leader = m.current_leader.filter(|&l| {
            (l != me || m.current_term > term_before) && state.http_addr_in(m, l).is_some()
        });
        match leader {
            Some(leader) => Some(Reachable::Leader(leader)),
            None => member_after_removal(state, m).map(Reachable::AfterRemoval),
        }
    };
    let known = tokio::time::timeout_at(
        deadline,
        metrics.wait_for(|m| reachable(m).is_some() || matches!(m.status, NodeStatus::Stopped(_))),
    )
    .await;
    match known {
        Ok(Ok(m)) => reachable(&m),
        _ => None,
    }
}

/// `307` to the leader's HTTP address when a leader other than this node is known, else `503`.
pub(crate) fn redirect(state: &ApiState, uri: &Uri, leader_hint: Option<NodeId>) -> Response {
    match leader_hint.filter(|&l| l != state.raft.id()) {
        Some(leader) => redirect_to(
            state,
            uri,
            leader,
            format!("this node is not the leader; nothing was proposed; retry at node {leader}"),
        ),
        None => no_leader(
            leader_hint,
            "this node is not the leader and knows no leader; nothing was proposed, retry later"
                .to_string(),
        ),
    }
}

/// `307` to node `leader`'s HTTP address (the same path and query) with `message`; `503` if that
/// address is not known.
fn redirect_to(state: &ApiState, uri: &Uri, leader: NodeId, message: String) -> Response {
    let Some(addr) = state.http_addr_of(leader) else {
        return no_leader(
            Some(leader),
            format!(
                "this node is not the leader and does not know the address of the leader (node {leader}); nothing was proposed, retry later"
            ),
        );
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("http://{addr}{path}");
    let mut response = (
        StatusCode::TEMPORARY_REDIRECT,
        Json(json!({
            "error": "not_leader",
            "message": message,
            "leader": leader,
            "location": location,
        })),
    )
        .into_response();
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            response.headers_mut().insert(header::LOCATION, v);
            response
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!("the leader's address {addr:?} is not a valid URL"),
        ),
    }
}

/// `503 no_leader`: nothing was proposed, retry later.
fn no_leader(leader_hint: Option<NodeId>, message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "no_leader",
            "message": message,
            "leader": leader_hint,
        })),
    )
        .into_response()
}

pub(crate) fn unexpected(response: KvResponse) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("unexpected state machine response {response:?}"),
    )
}

pub(crate) fn not_found(key: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "message": "no such key", "key": key })),
    )
        .into_response()
}

async fn put_key(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let session = match SessionHeaders::from_headers(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_rejection(e.status(), e.body_text()),
    };
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return bad_request("the value (request body) is not valid UTF-8");
    };
    let written = match write(
        &state,
        &uri,
        session,
        KvCommand::put(key.clone(), value.clone()),
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    match &written.response {
        KvResponse::Put { previous } => written.answer(
            Json(json!({ "key": key, "value": value, "previous": previous })).into_response(),
        ),
        other => unexpected(other.clone()),
    }
}

async fn delete_key(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let session = match SessionHeaders::from_headers(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let written = match write(&state, &uri, session, KvCommand::delete(key.clone())).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match &written.response {
        KvResponse::Deleted {
            previous: Some(previous),
        } => written.answer(Json(json!({ "key": key, "previous": previous })).into_response()),
        KvResponse::Deleted { previous: None } => written.answer(not_found(&key)),
        other => unexpected(other.clone()),
    }
}

async fn cas_key(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CasRequest>, JsonRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let session = match SessionHeaders::from_headers(&headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return body_rejection(e.status(), e.body_text()),
    };
    let command = KvCommand::CompareAndSwap {
        key: key.clone(),
        expected: request.expected,
        new: request.new,
    };
    let written = match write(&state, &uri, session, command).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match &written.response {
        KvResponse::CasResult { swapped, current } => {
            let status = if *swapped {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            written.answer(
                (
                    status,
                    Json(json!({ "key": key, "swapped": swapped, "current": current })),
                )
                    .into_response(),
            )
        }
        other => unexpected(other.clone()),
    }
}

/// This node's [`StatusBody`].
pub fn status_of(state: &ApiState) -> StatusBody {
    let m = state.raft.metrics().borrow().clone();
    StatusBody {
        id: m.id,
        status: match &m.status {
            NodeStatus::Running => "running".to_string(),
            NodeStatus::Stopped(reason) => format!("stopped: {reason}"),
        },
        role: match m.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        }
        .to_string(),
        term: m.current_term,
        leader: m.current_leader,
        leader_http: m.current_leader.and_then(|l| state.http_addr_of(l)),
        commit_index: m.commit_index,
        last_applied: m.last_applied,
        last_log_index: m.last_log_id.index,
        snapshot_index: m.snapshot.index,
        log_entries: m.log_entries,
        members: m.membership.voters.iter().copied().collect(),
        learners: m.membership.learners.iter().copied().collect(),
        joint: m.membership.is_joint(),
        old_voters: m
            .membership
            .old_voters
            .as_ref()
            .map(|o| o.iter().copied().collect()),
        lag: m
            .replication
            .keys()
            .filter_map(|&id| m.lag(id).map(|lag| (id, lag)))
            .collect(),
        elections_started: m.elections.elections_started,
        pre_votes_lost: m.elections.pre_votes_lost,
        transfers_started: m.elections.transfers_started,
        transfers_abandoned: m.elections.transfers_abandoned,
    }
}

async fn status(State(state): State<ApiState>) -> Json<StatusBody> {
    Json(status_of(&state))
}
