//! `GET /kv/{key}`: the read modes ([`Consistency`]) and how each is served.
//!
//! | `?consistency=` | served by | guarantee | log entry |
//! |---|---|---|---|
//! | `linearizable` (default) | any node: `Raft::read_index` (the leader confirms it still leads with one heartbeat round; a follower asks the leader for its read index and waits for its own apply to reach it), then the node's state machine | linearizable: sees every write acknowledged before the read began | none |
//! | `lease` | like `linearizable`, but the leader skips the round while its lease holds (`serve --read-lease-drift-ms`); without that flag it *is* `linearizable` | linearizable **if** clock rates differ by at most the drift bound (see the README) | none |
//! | `stale` (alias `local=true`) | this node's state machine, at once | may lag the leader (any age); never a value that was not committed | none |
//! | `log` | a `Get` entry through the log, at the leader (followers redirect with `307`) | linearizable | one per read |
//!
//! Every successful read carries `Log-Index`: the index of the last entry applied to the state it
//! read. A read that fails wrote nothing and read nothing: retrying it is always safe.
//!
//! | status | `error` | meaning |
//! |---|---|---|
//! | `503` | `no_leader` | no leader known (or the node asked does not lead): election under way |
//! | `503` | `leadership_lost` | the leader lost office (or could not be reached) before confirming the read |
//! | `503` | `stopped` | this node is shutting down |
//! | `504` | `timeout` | not confirmed, or not applied up to the read index, in time |
//!
//! The `503`s carry `"leader"` (the node believed to lead, or `null`) and `"leader_http"`.

// The helpers return the early HTTP answer as their error (`Result<_, Response>`).
#![allow(clippy::result_large_err)]

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_core::{NodeId, ReadError};
use serde::Deserialize;
use serde_json::json;

use crate::command::{KvCommand, KvResponse};
use crate::http::{key_of, not_found, propose, unexpected, ApiState};
use crate::http_error::error;
use crate::http_session::with_position;

/// How a `GET /kv/{key}` is served (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// ReadIndex: no log entry, any node.
    #[default]
    Linearizable,
    /// The leader's lease when configured, else ReadIndex.
    Lease,
    /// This node's state machine as it is.
    Stale,
    /// A `Get` entry through the log.
    Log,
}

impl Consistency {
    /// The query parameter's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
            Consistency::Log => "log",
        }
    }
}

/// Query parameters of `GET /kv/{key}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ReadQuery {
    /// `true`: a stale read (the older spelling of `consistency=stale`).
    #[serde(default)]
    local: Option<bool>,
    #[serde(default)]
    consistency: Option<Consistency>,
}

impl ReadQuery {
    /// The mode asked for: `local=true` is `stale`; asking for two different modes is an error.
    fn mode(&self) -> Result<Consistency, String> {
        match (self.local, self.consistency) {
            (Some(true), Some(c)) if c != Consistency::Stale => Err(format!(
                "local=true (a stale read) contradicts consistency={}",
                c.as_str()
            )),
            (Some(true), _) => Ok(Consistency::Stale),
            (_, Some(c)) => Ok(c),
            (_, None) => Ok(Consistency::default()),
        }
    }
}

pub(crate) async fn get_key(
    State(state): State<ApiState>,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let mode = match query.map_err(|e| e.body_text()).and_then(|Query(q)| q.mode()) {
        Ok(mode) => mode,
        Err(why) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "invalid query ({why}): the parameters are consistency=linearizable|lease|stale|log \
                     and local=true|false"
                ),
            )
        }
    };
    let read = match mode {
        Consistency::Stale => Ok(state.reader.get_with_index(&key)),
        Consistency::Linearizable | Consistency::Lease => {
            confirm(&state, mode == Consistency::Lease)
                .await
                .map(|()| state.reader.get_with_index(&key))
        }
        Consistency::Log => match propose(&state, &uri, KvCommand::get(key.clone())).await {
            Ok((KvResponse::Value(v), index)) => Ok((v, index)),
            Ok((other, _)) => Err(unexpected(other)),
            Err(r) => Err(r),
        },
    };
    let (value, index) = match read {
        Ok(read) => read,
        Err(r) => return r,
    };
    state.metrics.read_served(mode);
    let answer = match value {
        Some(value) => Json(json!({ "key": key, "value": value })).into_response(),
        None => not_found(&key),
    };
    with_position(answer, index, false)
}

/// Waits until this node may serve a linearizable read (its state machine then holds every write
/// acknowledged before the call).
async fn confirm(state: &ApiState, lease: bool) -> Result<(), Response> {
    let wait = async {
        if lease {
            state.raft.read_lease().await
        } else {
            state.raft.read_index().await
        }
    };
    match tokio::time::timeout(state.write_timeout, wait).await {
        Ok(Ok(_index)) => Ok(()),
        Ok(Err(e)) => Err(read_failed(state, e)),
        Err(_) => Err(read_failed(state, ReadError::TimedOut)),
    }
}

/// The answer to a read that could not be confirmed (nothing was read).
fn read_failed(state: &ApiState, e: ReadError) -> Response {
    let (status, code, hint, message) = match e {
        ReadError::NotLeader { leader_hint } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            leader_hint,
            "no leader known to confirm the read; nothing was read, retry".to_string(),
        ),
        ReadError::LeadershipLost { leader_hint } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership_lost",
            leader_hint,
            "leadership was lost before the read was confirmed; nothing was read, retry"
                .to_string(),
        ),
        ReadError::TimedOut => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            None,
            "the read was not confirmed in time; nothing was read, retry".to_string(),
        ),
        ReadError::Stopped(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "stopped",
            None,
            format!("this node is stopping ({reason}); nothing was read, retry at another node"),
        ),
    };
    let leader_http = hint.and_then(|l: NodeId| state.http_addr_of(l));
    (
        status,
        Json(json!({
            "error": code,
            "message": message,
            "leader": hint,
            "leader_http": leader_http,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(local: Option<bool>, consistency: Option<Consistency>) -> ReadQuery {
        ReadQuery { local, consistency }
    }

    #[test]
    fn local_is_an_alias_of_stale_and_contradictions_are_refused() {
        use Consistency::*;
        assert_eq!(query(None, None).mode(), Ok(Linearizable));
        assert_eq!(query(Some(false), None).mode(), Ok(Linearizable));
        assert_eq!(query(Some(true), None).mode(), Ok(Stale));
        assert_eq!(query(Some(true), Some(Stale)).mode(), Ok(Stale));
        assert_eq!(query(Some(false), Some(Lease)).mode(), Ok(Lease));
        assert_eq!(query(None, Some(Log)).mode(), Ok(Log));
        assert!(query(Some(true), Some(Linearizable)).mode().is_err());
        assert!(query(Some(true), Some(Log)).mode().is_err());
    }
}
