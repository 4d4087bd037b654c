//! Operator requests of the HTTP API: `POST /admin/transfer-leader`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /admin/transfer-leader`, no body, or `{"to": id}` | `200 {"leader": id}` once `id` (with no body: the most up-to-date follower) leads |
//!
//! | status | `error` | meaning |
//! |---|---|---|
//! | `307` + `Location` | `not_leader` | only the leader transfers; repeat at `Location` |
//! | `400` | `bad_request` | a body that is not `{"to": id}`, or an id that is not another voter |
//! | `409` | `no_target` | the cluster has no other voter |
//! | `409` | `transfer_failed` | the target did not take over within an election timeout; this node leads on |
//! | `503` | `no_leader`, `stopped` | no leader known, or the node is stopping |

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::{NodeId, TransferError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{redirect, ApiState};
use crate::http_error::error;

/// The body of `POST /admin/transfer-leader` (optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The voter to hand leadership to.
    pub to: NodeId,
}

/// `POST /admin/transfer-leader`.
pub(crate) async fn transfer_leader(
    State(state): State<ApiState>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<TransferRequest>(&body) {
            Ok(request) => Some(request.to),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body must be empty or {{\"to\": node id}}: {e}"),
                )
            }
        }
    };
    match state.raft.transfer_leadership(to).await {
        Ok(leader) => {
            tracing::info!(leader, "leadership transferred");
            Json(json!({ "leader": leader })).into_response()
        }
        Err(TransferError::NotLeader { leader_hint }) => redirect(&state, &uri, leader_hint),
        Err(e @ TransferError::NotAVoter { .. }) => {
            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
        }
        Err(e @ TransferError::NoTarget) => error(StatusCode::CONFLICT, "no_target", e.to_string()),
        Err(e @ TransferError::TimedOut { .. }) => {
            error(StatusCode::CONFLICT, "transfer_failed", e.to_string())
        }
        Err(e @ TransferError::Stopped(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "stopped", e.to_string())
        }
    }
}
