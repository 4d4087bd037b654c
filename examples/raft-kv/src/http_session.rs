//! Client sessions over HTTP: the request headers that make a write exactly-once
//! ([`SessionHeaders`]), and the answer headers that say where a write or read sits in the log.
//!
//! A write (`PUT`, `DELETE`, `POST .../cas`) that carries both `Client-Id` and `Client-Seq` is
//! proposed as command `Client-Seq` of session `Client-Id` ([`crate::KvCommand::Session`]), stamped
//! with the leader's wall clock. The state machine applies it at most once: a retry with the same
//! pair is answered with the first answer (and `Session-Duplicate: true`), never applied again.
//!
//! | header | in | value |
//! |---|---|---|
//! | `Client-Id` | request | the session: a decimal `u64`, chosen by the client (at random) |
//! | `Client-Seq` | request | the write's number in the session: a decimal `u64` from 1, one more per new write; a retry repeats it |
//! | `Log-Index` | answer | a write: the log index where it was applied (for a duplicate, where it was first applied); a read: the index of the last entry applied to the state read |
//! | `Session-Duplicate` | answer | `true` when the answer is the stored answer of a retried write |
//!
//! Both request headers or neither; each at most once, digits only (`Client-Seq` at least 1):
//! anything else is `400 bad_request`, and nothing is proposed. Reads ignore them.

// The parser returns the early HTTP answer as its error (`Result<_, Response>`).
#![allow(clippy::result_large_err)]

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use raft_core::{ClientId, LogIndex};

use crate::http_error::error;

/// The request header carrying the session id.
pub const CLIENT_ID_HEADER: &str = "client-id";
/// The request header carrying the write's sequence number in its session.
pub const CLIENT_SEQ_HEADER: &str = "client-seq";
/// The answer header carrying the log index the answer reflects.
pub const LOG_INDEX_HEADER: &str = "log-index";
/// The answer header marking an answer replayed from the session table.
pub const SESSION_DUPLICATE_HEADER: &str = "session-duplicate";

/// A write's session, from its request headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionHeaders {
    /// `Client-Id`.
    pub client_id: ClientId,
    /// `Client-Seq` (at least 1).
    pub seq: u64,
}

impl SessionHeaders {
    /// The session a request's headers name: `Ok(None)` without either header.
    ///
    /// # Errors
    /// `400 bad_request` for one header without the other, a header given twice, a value that is
    /// not a decimal `u64`, or `Client-Seq: 0`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Response> {
        let client_id = single_number(headers, CLIENT_ID_HEADER)?;
        let seq = single_number(headers, CLIENT_SEQ_HEADER)?;
        match (client_id, seq) {
            (None, None) => Ok(None),
            (Some(_), Some(0)) => Err(bad_request("Client-Seq starts at 1")),
            (Some(client_id), Some(seq)) => Ok(Some(SessionHeaders { client_id, seq })),
            _ => Err(bad_request(
                "Client-Id and Client-Seq go together: give both or neither",
            )),
        }
    }
}

/// The value of header `name` as a decimal `u64`, if present once.
fn single_number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Response> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_request(format!("header {name} given more than once")));
    }
    let text = value.to_str().unwrap_or("");
    // Digits only: no sign, no spaces, no hex (u64::from_str would take a leading '+').
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(format!(
            "header {name} must be a decimal number from 0 to {}",
            u64::MAX
        )));
    }
    text.parse()
        .map(Some)
        .map_err(|_| bad_request(format!("header {name} is over {}", u64::MAX)))
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// This node's wall clock in ms since the Unix epoch: the timestamp a leader writes into a session
/// command (0 for a clock before 1970, which only delays expiry).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Adds `Log-Index: index` (and `Session-Duplicate: true` if `duplicate`) to `response`.
pub fn with_position(mut response: Response, index: LogIndex, duplicate: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(LOG_INDEX_HEADER, HeaderValue::from(index));
    if duplicate {
        headers.insert(SESSION_DUPLICATE_HEADER, HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &[u8])]) -> Result<Option<SessionHeaders>, StatusCode> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        SessionHeaders::from_headers(&headers).map_err(|r| r.status())
    }

    #[test]
    fn valid_headers_parse_and_everything_else_is_400() {
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(
            parse(&[("Client-Id", b"7"), ("client-seq", b"1")]),
            Ok(Some(SessionHeaders {
                client_id: 7,
                seq: 1
            }))
        );
        let max = u64::MAX.to_string();
        assert!(matches!(
            parse(&[
                ("client-id", max.as_bytes()),
                ("client-seq", max.as_bytes())
            ]),
            Ok(Some(_))
        ));
        let bad: &[&[(&str, &[u8])]] = &[
            &[("client-id", b"7")],
            &[("client-seq", b"1")],
            &[("client-id", b"7"), ("client-seq", b"0")],
            &[("client-id", b"-7"), ("client-seq", b"1")],
            &[("client-id", b"+7"), ("client-seq", b"1")],
            &[("client-id", b" 7"), ("client-seq", b"1")],
            &[("client-id", b"0x7"), ("client-seq", b"1")],
            &[("client-id", b""), ("client-seq", b"1")],
            &[("client-id", b"18446744073709551616"), ("client-seq", b"1")],
            &[
                ("client-id", b"99999999999999999999999"),
                ("client-seq", b"1"),
            ],
            &[("client-id", b"7"), ("client-seq", b"1.5")],
            &[("client-id", b"7"), ("client-seq", b"\xff")],
            &[
                ("client-id", b"7"),
                ("client-id", b"8"),
                ("client-seq", b"1"),
            ],
        ];
        for pairs in bad {
            assert_eq!(parse(pairs), Err(StatusCode::BAD_REQUEST), "{pairs:?}");
        }
    }
}
