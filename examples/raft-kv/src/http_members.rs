//! Membership requests of the HTTP API: `GET /admin/members` and `POST /admin/members`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/members` | `200` [`MembersBody`]: this node's view of the membership (voters, learners, the outgoing voters while joint, every member's addresses, whether it is committed); `lag` per member only on the leader |
//! | `GET /admin/members?leader=true` | the same, from the leader (a follower answers `307` to it) |
//! | `POST /admin/members`, one of the [`MembersRequest`] bodies | `200` [`MembersBody`] once the change is committed (a change of voters: once the final configuration is) |
//!
//! The bodies of `POST /admin/members` (exactly one key):
//!
//! | body | change |
//! |---|---|
//! | `{"add_learner": {"id": N, "raft_addr": "IP:PORT", "http_addr": "HOST:PORT"}}` | adds N as a learner (or records a learner's new addresses); it receives the log but does not vote |
//! | `{"promote": N}` | makes learner N a voter; it must have caught up (see `lag`) |
//! | `{"demote": N}` | makes voter N a learner |
//! | `{"remove": N}` | removes N, voter or learner (the leader itself too: it hands over and steps down); a node that is not a member is already removed: `200` |
//! | `{"voters": [N, ...]}` | makes these the voters: new ones must be caught-up learners, voters left out leave the cluster |
//!
//! One change at a time: a change of voters goes through a joint configuration (Raft thesis,
//! section 4.3) and is finished when the final one is committed. A change already in force is
//! answered `200` at once.
//!
//! | status | `error` | meaning |
//! |---|---|---|
//! | `307` + `Location` | `not_leader` | only the leader changes the membership; repeat at `Location` |
//! | `400` | `bad_request` | a body that is not one of the above, an id of 0, an address that does not parse |
//! | `400` | `invalid_membership` | the result would be invalid (no voters, say) |
//! | `404` | `not_a_member` | the node named is not a member of the role the change needs (`demote` of a non-voter) |
//! | `409` | `change_in_progress` | another change is not finished yet; retry once it completes |
//! | `409` | `learner_behind` | the learner to promote has not caught up (`lag` entries behind, or silent); retry later |
//! | `409` | `not_a_learner` | a new voter must be a learner first: add it as a learner |
//! | `409` | `already_a_voter` | the node to add as a learner already votes |
//! | `413` | `payload_too_large` | a body over [`MAX_MEMBERS_BODY_BYTES`] |
//! | `503` | `no_leader`, `leader_not_ready`, `stopped` | no leader known; a new leader that has not committed an entry of its term (retry shortly); the node is stopping |
//! | `504` | `timeout` | the change was proposed but not seen complete in time: it **may still complete**; read the membership |

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::{Membership, MembershipError, Metrics, Node, NodeId, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{redirect, ApiState};
use crate::http_error::error;

/// The largest body `POST /admin/members` takes: a list of voters or two addresses fit many times
/// over.
pub const MAX_MEMBERS_BODY_BYTES: usize = 16 * 1024;

/// The most voters `{"voters": [...]}` may name.
pub const MAX_VOTERS: usize = 64;

/// The longest HTTP address (`host:port`) a member may record.
pub const MAX_HTTP_ADDR_BYTES: usize = 255;

/// How long a change answered `TimedOut` by the node is still watched for before the request is
/// answered `504`: the node's own wait is four election timeouts, which a loaded machine may
/// exceed while the change still completes a moment later.
pub const CHANGE_GRACE: Duration = Duration::from_secs(5);

/// The body of `POST /admin/members`: exactly one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MembersRequest {
    /// Add a learner (or record a learner's new addresses).
    AddLearner(NewMember),
    /// Make a caught-up learner a voter.
    Promote(NodeId),
    /// Make a voter a learner.
    Demote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
    /// Make these the voters.
    Voters(Vec<NodeId>),
}

/// A node to add: its id and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The node id (not 0).
    pub id: NodeId,
    /// Its Raft (TCP) address, `IP:PORT`, as other nodes reach it.
    pub raft_addr: String,
    /// Its HTTP API address, `HOST:PORT`, as clients reach it (used in redirects to it).
    pub http_addr: String,
}

/// Where a member is reached, as the membership records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// Its Raft (TCP) address (empty if the membership does not record one).
    pub raft_addr: String,
    /// Its HTTP address (empty if the membership does not record one).
    pub http_addr: String,
}

/// The answer of `GET /admin/members` and of a completed `POST /admin/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersBody {
    /// The node that answered.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The voters (of the new configuration, while joint).
    pub voters: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// While a change of voters is under way: the outgoing voters (`null` otherwise).
    pub old_voters: Option<Vec<NodeId>>,
    /// Whether a change of voters is under way (the joint configuration).
    pub joint: bool,
    /// Whether the entry that set this membership is committed (as far as this node knows).
    pub committed: bool,
    /// The index of that entry.
    pub membership_index: u64,
    /// Where each member is reached.
    pub nodes: BTreeMap<NodeId, MemberAddrs>,
    /// On the leader: how many entries each other member lacks. `null` on other nodes.
    pub lag: Option<BTreeMap<NodeId, u64>>,
}

impl MembersBody {
    /// The body describing `m`, the metrics of node `m.id`.
    pub fn of(m: &Metrics) -> Self {
        let membership = &m.membership;
        let nodes = membership
            .nodes
            .iter()
            .map(|(&id, node)| {
                (
                    id,
                    MemberAddrs {
                        raft_addr: node.addr.clone(),
                        http_addr: node.data.clone(),
                    },
                )
            })
            .collect();
        let lag = (m.role == Role::Leader).then(|| {
            m.replication
                .keys()
                .filter_map(|&id| m.lag(id).map(|lag| (id, lag)))
                .collect()
        });
        MembersBody {
            id: m.id,
            leader: m.current_leader,
            voters: membership.voters.iter().copied().collect(),
            learners: membership.learners.iter().copied().collect(),
            old_voters: membership
                .old_voters
                .as_ref()
                .map(|o| o.iter().copied().collect()),
            joint: membership.is_joint(),
            committed: m.membership_committed(),
            membership_index: m.membership_index,
            nodes,
            lag,
        }
    }

    /// Whether `id` is a voter (of either configuration while joint).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.old_voters.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }
}

impl MembersRequest {
    /// Checks what can be checked without the cluster: ids not 0, addresses that parse, a voter
    /// list that is not empty, not too long and without repeats.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = |id: NodeId| {
            if id == 0 {
                Err("node ids start at 1".to_string())
            } else {
                Ok(())
            }
        };
        match self {
            MembersRequest::AddLearner(new) => {
                id_ok(new.id)?;
                new.raft_addr.parse::<SocketAddr>().map_err(|e| {
                    format!(
                        "raft_addr {:?} is not an IP:PORT address: {e}",
                        new.raft_addr
                    )
                })?;
                check_http_addr(&new.http_addr)
            }
            MembersRequest::Promote(id)
            | MembersRequest::Demote(id)
            | MembersRequest::Remove(id) => id_ok(*id),
            MembersRequest::Voters(voters) => {
                if voters.is_empty() {
                    return Err("the list of voters is empty".into());
                }
                if voters.len() > MAX_VOTERS {
                    return Err(format!("more than {MAX_VOTERS} voters"));
                }
                let unique: BTreeSet<NodeId> = voters.iter().copied().collect();
                if unique.len() != voters.len() {
                    return Err("a voter appears twice".into());
                }
                voters.iter().try_for_each(|&id| id_ok(id))
            }
        }
    }

    /// The change it asks of the node.
    pub fn change(&self) -> raft_core::MembershipChange {
        use raft_core::MembershipChange as C;
        match self {
            MembersRequest::AddLearner(new) => C::AddLearner {
                id: new.id,
                node: Node {
                    addr: new.raft_addr.clone(),
                    data: new.http_addr.clone(),
                },
            },
            MembersRequest::Promote(id) => C::Promote { id: *id },
            MembersRequest::Demote(id) => C::Demote { id: *id },
            MembersRequest::Remove(id) => C::Remove { id: *id },
            MembersRequest::Voters(voters) => C::SetVoters {
                voters: voters.iter().copied().collect(),
            },
        }
    }

    /// Whether `membership` is what the change leads to, its voters settled (not joint).
    pub fn is_done(&self, membership: &Membership) -> bool {
        if membership.is_joint() {
            return false;
        }
        match self {
            MembersRequest::AddLearner(new) => {
                membership.is_learner(new.id)
                    && membership
                        .nodes
                        .get(&new.id)
                        .is_some_and(|n| n.addr == new.raft_addr && n.data == new.http_addr)
            }
            MembersRequest::Promote(id) => membership.voters.contains(id),
            MembersRequest::Demote(id) => membership.is_learner(*id),
            MembersRequest::Remove(id) => !membership.is_member(*id),
            MembersRequest::Voters(voters) => {
                membership.voters == voters.iter().copied().collect::<BTreeSet<_>>()
            }
        }
    }
}

/// Checks an HTTP address as a member records it: `HOST:PORT`, short, and usable in a `Location`
/// header.
///
/// # Errors
/// What is wrong, in words.
pub fn check_http_addr(addr: &str) -> Result<(), String> {
    let bad = || format!("http_addr {addr:?} is not a HOST:PORT address");
    if addr.is_empty() || addr.len() > MAX_HTTP_ADDR_BYTES {
        return Err(bad());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !host_ok || HeaderValue::from_str(&format!("http://{addr}/")).is_err() {
        return Err(bad());
    }
    Ok(())
}

/// Query parameters of `GET /admin/members`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersQuery {
    /// Ask the leader (a follower redirects).
    #[serde(default)]
    leader: bool,
}

/// `GET /admin/members`.
pub(crate) async fn get_members(
    State(state): State<ApiState>,
    uri: Uri,
    query: Result<Query<MembersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid query: the only parameter is leader=true|false",
        );
    };
    let m = state.raft.metrics().borrow().clone();
    if query.leader && m.role != Role::Leader {
        return redirect(&state, &uri, m.current_leader);
    }
    Json(MembersBody::of(&m)).into_response()
}

/// `POST /admin/members`.
pub(crate) async fn post_members(State(state): State<ApiState>, uri: Uri, body: Bytes) -> Response {
    if body.len() > MAX_MEMBERS_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a membership request is at most {MAX_MEMBERS_BODY_BYTES} bytes"),
        );
    }
    let request = match serde_json::from_slice::<MembersRequest>(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the body must be one of {{\"add_learner\": {{\"id\", \"raft_addr\", \
                     \"http_addr\"}}}}, {{\"promote\": id}}, {{\"demote\": id}}, \
                     {{\"remove\": id}}, {{\"voters\": [ids]}}: {e}"
                ),
            )
        }
    };
    if let Err(reason) = request.validate() {
        return error(StatusCode::BAD_REQUEST, "bad_request", reason);
    }
    let outcome = state.raft.change_membership_with(request.change()).await;
    let outcome = match outcome {
        Err(MembershipError::TimedOut) => wait_done(&state, &request).await,
        other => other.map(|_| ()),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(?request, "membership changed");
            Json(MembersBody::of(&state.raft.metrics().borrow())).into_response()
        }
        Err(MembershipError::NotLeader { leader_hint }) => redirect(&state, &uri, leader_hint),
        Err(e) => membership_error(e),
    }
}

/// After the node's own wait ran out: watches this node's membership for up to [`CHANGE_GRACE`]
/// more, as the change may still complete.
async fn wait_done(state: &ApiState, request: &MembersRequest) -> Result<(), MembershipError> {
    let mut rx = state.raft.metrics();
    let watch = async {
        loop {
            {
                let m = rx.borrow_and_update();
                if request.is_done(&m.membership) && m.membership_committed() {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err(MembershipError::TimedOut);
            }
        }
    };
    tokio::time::timeout(CHANGE_GRACE, watch)
        .await
        .unwrap_or(Err(MembershipError::TimedOut))
}

/// The answer to a refused or unfinished change (every variant but `NotLeader`, a redirect).
fn membership_error(e: MembershipError) -> Response {
    let message = e.to_string();
    match e {
        MembershipError::NotLeader { leader_hint } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no_leader", "message": message, "leader": leader_hint })),
        )
            .into_response(),
        MembershipError::ChangeInProgress => {
            error(StatusCode::CONFLICT, "change_in_progress", message)
        }
        MembershipError::LearnerBehind { id, lag } => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "learner_behind",
                "message": message,
                "id": id,
                // `u64::MAX` means "has not answered recently": JSON carries it as null.
                "lag": (lag != u64::MAX).then_some(lag),
            })),
        )
            .into_response(),
        MembershipError::NotALearner { .. } => {
            error(StatusCode::CONFLICT, "not_a_learner", message)
        }
        MembershipError::AlreadyAVoter { .. } => {
            error(StatusCode::CONFLICT, "already_a_voter", message)
        }
        MembershipError::NotAMember { .. } => error(StatusCode::NOT_FOUND, "not_a_member", message),
        MembershipError::Invalid(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_membership", message)
        }
        MembershipError::LeaderNotReady => {
            error(StatusCode::SERVICE_UNAVAILABLE, "leader_not_ready", message)
        }
        MembershipError::TimedOut => error(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
        MembershipError::Stopped(_) => error(StatusCode::SERVICE_UNAVAILABLE, "stopped", message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_their_documented_shapes() {
        let parse = |s: &str| serde_json::from_str::<MembersRequest>(s);
        assert_eq!(
            parse(r#"{"promote": 4}"#).unwrap(),
            MembersRequest::Promote(4)
        );
        assert_eq!(
            parse(r#"{"remove": 1}"#).unwrap(),
            MembersRequest::Remove(1)
        );
        assert_eq!(
            parse(r#"{"demote": 2}"#).unwrap(),
            MembersRequest::Demote(2)
        );
        assert_eq!(
            parse(r#"{"voters": [3, 4, 5]}"#).unwrap(),
            MembersRequest::Voters(vec![3, 4, 5])
        );
        assert_eq!(
            parse(r#"{"add_learner": {"id": 4, "raft_addr": "127.0.0.1:7004", "http_addr": "localhost:8004"}}"#)
                .unwrap(),
            MembersRequest::AddLearner(NewMember {
                id: 4,
                raft_addr: "127.0.0.1:7004".into(),
                http_addr: "localhost:8004".into()
            })
        );
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"promote": 4, "remove": 1}"#,
            r#"{"promote": -1}"#,
            r#"{"promote": "4"}"#,
            r#"{"promote": 18446744073709551616}"#,
            r#"{"add_learner": {"id": 4, "raft_addr": "127.0.0.1:7004"}}"#,
            r#"{"add_learner": {"id": 4, "raft_addr": "a", "http_addr": "b", "x": 1}}"#,
            r#"{"voters": 3}"#,
            r#"{"transfer": 3}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_refuses_what_the_cluster_could_never_use() {
        let add = |raft: &str, http: &str| {
            MembersRequest::AddLearner(NewMember {
                id: 4,
                raft_addr: raft.into(),
                http_addr: http.into(),
            })
        };
        assert!(add("127.0.0.1:7004", "127.0.0.1:8004").validate().is_ok());
        assert!(add("[::1]:7004", "[::1]:8004").validate().is_ok());
        assert!(add("127.0.0.1:7004", "node-4.example:8004")
            .validate()
            .is_ok());
        for (raft, http) in [
            ("localhost:7004", "127.0.0.1:8004"),
            ("127.0.0.1", "127.0.0.1:8004"),
            ("127.0.0.1:7004", "127.0.0.1"),
            ("127.0.0.1:7004", ":8004"),
            ("127.0.0.1:7004", "host:99999"),
            ("127.0.0.1:7004", "a/b:80"),
            ("127.0.0.1:7004", "a\r\nb:80"),
            ("127.0.0.1:7004", "evil@host:80"),
        ] {
            assert!(add(raft, http).validate().is_err(), "{raft} {http}");
        }
        assert!(add("127.0.0.1:7004", &format!("{}:1", "a".repeat(300)))
            .validate()
            .is_err());
        assert!(MembersRequest::Promote(0).validate().is_err());
        assert!(MembersRequest::Voters(vec![]).validate().is_err());
        assert!(MembersRequest::Voters(vec![1, 1]).validate().is_err());
        assert!(MembersRequest::Voters(vec![1, 0]).validate().is_err());
        assert!(MembersRequest::Voters((1..=100).collect())
            .validate()
            .is_err());
        assert!(MembersRequest::Voters(vec![3, 4, 5]).validate().is_ok());
    }

    #[test]
    fn done_means_settled_in_the_target() {
        let mut m = Membership::new([1, 2, 3]);
        assert!(MembersRequest::Remove(4).is_done(&m));
        assert!(!MembersRequest::Promote(4).is_done(&m));
        m.old_voters = Some([1, 2, 3].into());
        m.voters = [1, 2, 3, 4].into();
        assert!(!MembersRequest::Promote(4).is_done(&m), "joint is not done");
        let m = m.leave_joint();
        assert!(MembersRequest::Promote(4).is_done(&m));
        assert!(MembersRequest::Voters(vec![4, 3, 2, 1]).is_done(&m));
    }
}
