//! The whole cluster at a glance: every member's `/status`, fetched with short timeouts, beside the
//! membership as one node sees it ([`ClusterView`]).
//!
//! Two users: `GET /ui/cluster` (the dashboard's data, gathered by the node serving the page, so
//! the browser talks to one origin only; see [`crate::http_ui`]) and `raft-kv status --all` (see
//! [`crate::status_table`]). Both ask every member at once ([`MAX_CONCURRENT_FETCHES`] at most),
//! each with a timeout ([`FETCH_TIMEOUT`] by default) and a bounded answer ([`MAX_STATUS_BYTES`]): a
//! member that is down, stopped or answers garbage is reported as such, never waited on for long.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raft_core::NodeId;
use serde::{Deserialize, Serialize};

use crate::http::StatusBody;
use crate::http_auth::ApiToken;
use crate::http_members::MembersBody;

/// How long one member's `/status` may take by default before it counts as unreachable.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(800);

/// The most `/status` requests in flight at once for one view.
pub const MAX_CONCURRENT_FETCHES: usize = 16;

/// The largest `/status` answer read from a member (its `lag` map grows with the membership; 256 KiB
/// holds thousands of members).
pub const MAX_STATUS_BYTES: usize = 256 * 1024;

/// The most members one view asks (beyond it, members are listed as not asked).
pub const MAX_MEMBERS_ASKED: usize = 256;

/// One member as a [`ClusterView`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The node id.
    pub id: NodeId,
    /// Its HTTP address as the membership records it (`None`: not recorded).
    pub http_addr: Option<String>,
    /// Whether it votes (in either configuration, while joint).
    pub voter: bool,
    /// Whether it is a learner.
    pub learner: bool,
    /// Its `/status`, if it answered in time.
    pub status: Option<StatusBody>,
    /// Why there is no status (timeout, connection refused, not JSON, ...).
    pub error: Option<String>,
    /// How long its answer (or the failure) took, in milliseconds.
    pub elapsed_ms: u64,
}

impl MemberView {
    /// The role to show: `unreachable` without a status, `learner` for a learner, else the role
    /// the node reports (`leader`, `follower`, `candidate`, `pre-candidate`).
    pub fn display_role(&self) -> &str {
        match &self.status {
            None => "unreachable",
            Some(s) if self.learner && s.role == "follower" => "learner",
            Some(s) => &s.role,
        }
    }
}

/// The membership as the node asked sees it, and every member's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that gathered the view (whose membership it is).
    pub via: NodeId,
    /// The voters (of the new configuration, while joint).
    pub voters: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// While joint: the outgoing voters.
    pub old_voters: Option<Vec<NodeId>>,
    /// Whether a change of voters is under way.
    pub joint: bool,
    /// Every member, by id.
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// The leader to believe: among the members that answered and say they lead, the one of the
    /// highest term (a deposed leader cut off from the others may still think it leads, in an
    /// older term).
    pub fn leader(&self) -> Option<&MemberView> {
        self.members
            .iter()
            .filter(|m| m.status.as_ref().is_some_and(|s| s.role == "leader"))
            .max_by_key(|m| m.status.as_ref().map_or(0, |s| s.term))
    }

    /// How many entries member `id` lacks, as the leader's replication view tells (`Some(0)` for
    /// the leader itself; `None` without a leader, or for a member the leader does not track).
    pub fn lag_of(&self, id: NodeId) -> Option<u64> {
        let leader = self.leader()?;
        if leader.id == id {
            return Some(0);
        }
        leader.status.as_ref()?.lag.get(&id).copied()
    }
}

/// Asks members for their `/status`: one pooled HTTP client, a timeout per request, the API token
/// if the nodes require one.
#[derive(Clone, Debug)]
pub struct StatusFetcher {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    authorization: Option<HeaderValue>,
}

/// A member to ask: its id, voter/learner flags and HTTP address.
struct Target {
    id: NodeId,
    voter: bool,
    learner: bool,
    http_addr: Option<String>,
}

impl StatusFetcher {
    /// A fetcher that waits `timeout` per member and sends `token`, if any.
    pub fn new(timeout: Duration, token: Option<&ApiToken>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        StatusFetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            authorization: token.and_then(ApiToken::header_value),
        }
    }

    /// `GET http://{addr}/status`, within the timeout, at most [`MAX_STATUS_BYTES`] read.
    ///
    /// # Errors
    /// What went wrong, in words (for the view's `error`).
    pub async fn status_of(&self, addr: &str) -> Result<StatusBody, String> {
        let url = format!("http://{addr}/status");
        let mut builder = Request::builder().method(Method::GET).uri(&url);
        if let Some(authorization) = &self.authorization {
            builder = builder.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|_| format!("{url:?} is not a valid URL"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| root_cause(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_STATUS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(format!("answered {status}: {text}"));
            }
            serde_json::from_slice::<StatusBody>(&body)
                .map_err(|e| format!("the answer is not a status: {e}"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }

    /// The view of the cluster whose membership is `members` (as node `members.id` sees it):
    /// every member's status, `local` (node `members.id`'s own, when the caller is that node)
    /// taken as is rather than asked over HTTP. Addresses come from the membership, else from
    /// `fallback_addrs`.
    pub async fn view(
        &self,
        members: &MembersBody,
        fallback_addrs: &BTreeMap<NodeId, String>,
        local: Option<StatusBody>,
    ) -> ClusterView {
        let mut ids: Vec<NodeId> = members
            .voters
            .iter()
            .chain(members.learners.iter())
            .chain(members.old_voters.iter().flatten())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let targets: Vec<Target> = ids
            .into_iter()
            .map(|id| Target {
                id,
                voter: members.is_voter(id),
                learner: members.is_learner(id),
                http_addr: members
                    .nodes
                    .get(&id)
                    .map(|n| n.http_addr.clone())
                    .filter(|a| !a.is_empty())
                    .or_else(|| fallback_addrs.get(&id).cloned()),
            })
            .collect();
        let local = local.filter(|s| s.id == members.id);
        let mut views: Vec<MemberView> = stream::iter(targets.into_iter().enumerate())
            .map(|(i, target)| {
                let local = local.clone();
                async move {
                    let started = Instant::now();
                    let outcome = match (&local, &target.http_addr) {
                        (Some(own), _) if own.id == target.id => Ok(own.clone()),
                        _ if i >= MAX_MEMBERS_ASKED => Err(format!(
                            "not asked: a view asks at most {MAX_MEMBERS_ASKED} members"
                        )),
                        (_, Some(addr)) => self.status_of(addr).await,
                        (_, None) => Err("the membership records no HTTP address".to_string()),
                    };
                    // A member answering for another id is not the member asked.
                    let outcome = outcome.and_then(|s| {
                        if s.id == target.id {
                            Ok(s)
                        } else {
                            Err(format!("node {} answered at this address", s.id))
                        }
                    });
                    let elapsed_ms =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let (status, error) = match outcome {
                        Ok(s) => (Some(s), None),
                        Err(e) => (None, Some(e)),
                    };
                    MemberView {
                        id: target.id,
                        http_addr: target.http_addr,
                        voter: target.voter,
                        learner: target.learner,
                        status,
                        error,
                        elapsed_ms,
                    }
                }
            })
            .buffer_unordered(MAX_CONCURRENT_FETCHES)
            .collect()
            .await;
        views.sort_by_key(|m| m.id);
        ClusterView {
            via: members.id,
            voters: members.voters.clone(),
            learners: members.learners.clone(),
            old_voters: members.old_voters.clone(),
            joint: members.joint,
            members: views,
        }
    }
}

/// The innermost source of an error (hyper's outer "client error (Connect)" says little).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
