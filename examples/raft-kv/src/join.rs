//! `raft-kv serve --join ADDR`: a running node becomes a voter of an existing cluster, through the
//! cluster's own admin API ([`crate::http_members`]), the same requests an operator would make.
//!
//! [`join`] loops on the leader's view of the membership (`GET /admin/members?leader=true`, sent to
//! `ADDR` and redirected to the leader) and takes the next step from it:
//!
//! 1. not a member (or recorded at other addresses): `{"add_learner": ...}` with this node's
//!    addresses; the leader then replicates the log (or a snapshot) to it;
//! 2. a learner: waits until the leader reports it at most [`CAUGHT_UP_LAG`] entries behind, then
//!    `{"promote": id}` (a `409 learner_behind` sends it back to waiting);
//! 3. a voter of a settled (not joint) configuration: done.
//!
//! So a node restarted with `--join` after it joined finds itself a voter and does nothing, and one
//! restarted half-way (a learner) goes on from there. Answers that say "not now" (no leader, a new
//! leader not ready, another change in progress, a timeout, a node unreachable) are retried after
//! [`RETRY_DELAY`] until the join's deadline; answers that say "never" (bad request, unauthorized,
//! no such route) end it at once, and the node exits with the error.
//!
//! One refusal protects the data: a node whose data directory was new at this start but which the
//! cluster already counts as a voter is not re-added (it lacks what it acknowledged as a voter; a
//! voter with a wiped disk could help lose committed writes). Remove it first, then join it again.

use std::time::Duration;

use hyper::StatusCode;
use raft_core::NodeId;
use tokio::time::Instant;

use crate::client::{KvClient, Reply};
use crate::cluster::KvRaft;
use crate::http_auth::ApiToken;
use crate::http_members::{MembersBody, MembersRequest, NewMember};
use crate::throttle::Throttle;

/// How far behind the leader (entries) a learner may be when it asks to be promoted. The leader
/// checks its own bound (`Config::max_learner_lag`); this one is tighter, so that the new voter
/// does not slow commitment while it catches up the rest.
pub const CAUGHT_UP_LAG: u64 = 64;

/// How long the join waits before asking again after an answer that says "not now".
pub const RETRY_DELAY: Duration = Duration::from_millis(200);

/// How long each request of the join may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How often, at most, progress while catching up, and retries, are logged (a cluster without a
/// leader for minutes would otherwise fill the log five lines a second).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What [`join`] needs.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// The HTTP address of any node of the cluster (it redirects to the leader).
    pub via: String,
    /// How long the whole join may take before it fails.
    pub timeout: Duration,
    /// The API token to present, if the cluster requires one.
    pub token: Option<ApiToken>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused the request for good (bad request, unauthorized, ...).
    #[error("the cluster refused to {what}: {status} {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// The answer's status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// The cluster counts this node as a voter already, but its data directory is new.
    #[error(
        "node {0} is already a voter of the cluster, but this node's data directory is new: \
         refusing to join as that voter (remove node {0} from the cluster first, then join again)"
    )]
    VoterWithNewData(NodeId),
    /// The join did not finish in time.
    #[error("did not join within {} s (last: {last})", timeout.as_secs())]
    TimedOut {
        /// The join's timeout.
        timeout: Duration,
        /// The last thing that kept it from finishing.
        last: String,
    },
    /// This node stopped meanwhile.
    #[error("the node stopped while joining")]
    Stopped,
}

/// Makes node `raft` (reached at `raft_addr` by peers and at `http_addr` by clients) a voter of the
/// cluster `cfg.via` belongs to, as described in the [module docs](self). `new_data` says whether
/// its data directory was created at this start.
///
/// # Errors
/// See [`JoinError`].
pub async fn join(
    raft: &KvRaft,
    raft_addr: &str,
    http_addr: &str,
    new_data: bool,
    cfg: &JoinConfig,
) -> Result<(), JoinError> {
    let id = raft.id();
    let mut client = KvClient::new(&cfg.via).with_timeout(REQUEST_TIMEOUT);
    if let Some(token) = &cfg.token {
        client = client.with_token(token.clone());
    }
    let me = NewMember {
        id,
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
    };
    let deadline = Instant::now() + cfg.timeout;
    let mut last = String::from("nothing yet");
    let mut progress = Throttle::new(PROGRESS_EVERY);
    let mut retries = Throttle::new(PROGRESS_EVERY);
    let mut first_view = true;
    tracing::info!(via = %cfg.via, id, raft_addr, http_addr, "joining the cluster");
    loop {
        if matches!(
            raft.metrics().borrow().status,
            raft_core::NodeStatus::Stopped(_)
        ) {
            return Err(JoinError::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                timeout: cfg.timeout,
                last,
            });
        }
        let view = match client.members(true).await {
            Ok(reply) if reply.status == StatusCode::OK => {
                match serde_json::from_value::<MembersBody>(reply.body.clone()) {
                    Ok(view) => view,
                    Err(e) => {
                        return Err(JoinError::Refused {
                            what: format!("describe its membership ({e})"),
                            status: reply.status.as_u16(),
                            body: reply.body.to_string(),
                        })
                    }
                }
            }
            // Unauthorized, no such route (not a raft-kv node with membership changes): asking
            // again cannot help.
            Ok(reply) if reply.status.is_client_error() => {
                return Err(JoinError::Refused {
                    what: "describe its membership".into(),
                    status: reply.status.as_u16(),
                    body: reply.body.to_string(),
                })
            }
            other => {
                last = match other {
                    Ok(reply) => format!(
                        "cannot read the leader's membership: {} {}",
                        reply.status.as_u16(),
                        reply.error_code().unwrap_or("")
                    ),
                    Err(e) => format!("cannot read the leader's membership: {e}"),
                };
                note_retry(&mut retries, &last);
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        // Only the first view can show a voter this run did not make one.
        if std::mem::take(&mut first_view) && new_data && view.is_voter(id) {
            return Err(JoinError::VoterWithNewData(id));
        }
        match next_step(&view, &me) {
            Step::Done => {
                tracing::info!(
                    id,
                    voters = ?view.voters,
                    learners = ?view.learners,
                    "joined: this node is a voter"
                );
                return Ok(());
            }
            Step::Wait(why) => {
                last = why;
                tokio::time::sleep(RETRY_DELAY).await;
            }
            Step::AddLearner => {
                tracing::info!(id, leader = ?view.leader, "asking to be added as a learner");
                let request = MembersRequest::AddLearner(me.clone());
                last = ask(
                    &client,
                    &request,
                    "add this node as a learner",
                    &mut retries,
                )
                .await?;
            }
            Step::CatchUp(lag) => {
                if progress.allow().is_some() {
                    match lag {
                        Some(lag) => tracing::info!(id, lag, "learner: catching up"),
                        None => tracing::info!(id, "learner: the leader has no answer from it yet"),
                    }
                }
                last = format!("catching up (lag {lag:?})");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            Step::Promote(lag) => {
                tracing::info!(id, lag, "caught up: asking to be promoted to voter");
                let request = MembersRequest::Promote(id);
                last = ask(&client, &request, "promote this node", &mut retries).await?;
            }
        }
    }
}

/// What [`join`] does next, given the leader's view.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// A voter of a settled configuration.
    Done,
    /// Nothing to ask: a change is finishing, or the view is not the leader's.
    Wait(String),
    /// Not a learner at this node's addresses: ask to be one.
    AddLearner,
    /// A learner that lags (by this much, `None` if the leader has not heard from it).
    CatchUp(Option<u64>),
    /// A learner close enough to ask for promotion.
    Promote(u64),
}

fn next_step(view: &MembersBody, me: &NewMember) -> Step {
    let Some(lag) = &view.lag else {
        return Step::Wait("the membership came from a node that does not lead".into());
    };
    if view.is_voter(me.id) {
        if view.joint {
            return Step::Wait("a change of voters is finishing".into());
        }
        return if view.voters.contains(&me.id) {
            Step::Done
        } else {
            Step::Wait("being removed".into())
        };
    }
    let recorded = view
        .nodes
        .get(&me.id)
        .is_some_and(|n| n.raft_addr == me.raft_addr && n.http_addr == me.http_addr);
    if !view.is_learner(me.id) || !recorded {
        return Step::AddLearner;
    }
    match lag.get(&me.id) {
        Some(&l) if l <= CAUGHT_UP_LAG => Step::Promote(l),
        other => Step::CatchUp(other.copied()),
    }
}

/// Sends `request`; returns what to report as the last obstacle when the answer says "not now"
/// (the loop reads the membership again either way), or the error that ends the join.
async fn ask(
    client: &KvClient,
    request: &MembersRequest,
    what: &str,
    retries: &mut Throttle,
) -> Result<String, JoinError> {
    let reply: Reply = match client.change_members(request).await {
        Ok(reply) => reply,
        Err(e) => {
            let last = format!("could not {what}: {e}");
            note_retry(retries, &last);
            tokio::time::sleep(RETRY_DELAY).await;
            return Ok(last);
        }
    };
    if reply.status == StatusCode::OK {
        return Ok(format!("asked to {what}"));
    }
    let code = reply.error_code().unwrap_or("").to_string();
    let retry = matches!(
        reply.status,
        StatusCode::CONFLICT
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::NOT_FOUND
            | StatusCode::INTERNAL_SERVER_ERROR
    );
    if !retry {
        return Err(JoinError::Refused {
            what: what.to_string(),
            status: reply.status.as_u16(),
            body: reply.body.to_string(),
        });
    }
    let last = format!("could not {what} yet: {} {code}", reply.status.as_u16());
    note_retry(retries, &last);
    tokio::time::sleep(RETRY_DELAY).await;
    Ok(last)
}

/// Logs a retry, at most once per [`PROGRESS_EVERY`], with how many were left out.
fn note_retry(retries: &mut Throttle, last: &str) {
    if let Some(left_out) = retries.allow() {
        tracing::info!(left_out, "{last}; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_members::MemberAddrs;

    fn me() -> NewMember {
        NewMember {
            id: 4,
            raft_addr: "127.0.0.1:7004".into(),
            http_addr: "127.0.0.1:8004".into(),
        }
    }

    fn view(voters: &[u64], learners: &[u64], lag: &[(u64, u64)]) -> MembersBody {
        let nodes = voters
            .iter()
            .chain(learners)
            .map(|&id| {
                (
                    id,
                    MemberAddrs {
                        raft_addr: format!("127.0.0.1:700{id}"),
                        http_addr: format!("127.0.0.1:800{id}"),
                    },
                )
            })
            .collect();
        MembersBody {
            id: 1,
            leader: Some(1),
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            old_voters: None,
            joint: false,
            committed: true,
            membership_index: 7,
            nodes,
            lag: Some(lag.iter().copied().collect()),
        }
    }

    #[test]
    fn the_next_step_follows_the_leaders_view() {
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[], &[]), &me()),
            Step::AddLearner
        );
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[4], &[(4, 5000)]), &me()),
            Step::CatchUp(Some(5000))
        );
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[4], &[]), &me()),
            Step::CatchUp(None)
        );
        assert_eq!(
            next_step(&view(&[1, 2, 3], &[4], &[(4, 3)]), &me()),
            Step::Promote(3)
        );
        assert_eq!(next_step(&view(&[1, 2, 3, 4], &[], &[]), &me()), Step::Done);
        let mut joint = view(&[1, 2, 3, 4], &[], &[]);
        joint.joint = true;
        joint.old_voters = Some(vec![1, 2, 3]);
        assert!(matches!(next_step(&joint, &me()), Step::Wait(_)));
        let mut follower = view(&[1, 2, 3], &[], &[]);
        follower.lag = None;
        assert!(matches!(next_step(&follower, &me()), Step::Wait(_)));
        // Recorded at other addresses (restarted on new ports): asks again with the new ones.
        let mut moved = view(&[1, 2, 3], &[4], &[(4, 0)]);
        moved.nodes.get_mut(&4).unwrap().raft_addr = "127.0.0.1:9999".into();
        assert_eq!(next_step(&moved, &me()), Step::AddLearner);
    }
}
