//! Formats 1 and 2 of `raft-kv`'s snapshots (JSON), which this version still reads: nodes of the
//! previous version write them, and send them to upgraded nodes during a rolling upgrade.
//!
//! `{"format":2,"last_applied":{"term":..,"index":..},"data":{key: value, ...},"sessions":{..}}`,
//! keys sorted; format 1 has no `sessions`.

use std::collections::BTreeMap;

use raft_core::{LogId, SessionTable, StateMachineError};
use serde::{Deserialize, Serialize};

use crate::kv_map::{KvMap, KvTable};
use crate::snapshot_binary::Decoded;
use crate::state_machine::{KvSessions, MAX_SESSIONS, SESSION_TTL_MS};

/// The JSON formats: 1 (no sessions) and 2.
pub(crate) const FORMATS: std::ops::RangeInclusive<u32> = 1..=2;

/// The serialized form of a JSON snapshot.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotData {
    format: u32,
    last_applied: Option<LogId>,
    data: BTreeMap<String, String>,
    /// Absent in format 1.
    #[serde(default)]
    sessions: Option<KvSessions>,
}

/// The fields every JSON format starts with, in order.
#[derive(Serialize)]
struct SnapshotPrefix {
    format: u32,
    last_applied: Option<LogId>,
    data: BTreeMap<String, String>,
}

/// The start of a JSON snapshot of format `format` for the state as of `last_applied`, up to the
/// table: what a check compares, without reading the table.
fn prefix(format: u32, last_applied: LogId) -> Result<Vec<u8>, StateMachineError> {
    let mut prefix = serde_json::to_vec(&SnapshotPrefix {
        format,
        last_applied: Some(last_applied),
        data: BTreeMap::new(),
    })
    .map_err(StateMachineError::new)?;
    // `...,"data":{}}` -> `...,"data":`
    prefix.truncate(prefix.len().saturating_sub(3));
    Ok(prefix)
}

/// Whether `data` starts as a JSON snapshot of a format this version reads, covering the log up to
/// `expected`: a check of the first few dozen bytes. On failure, the longest prefix compared, for
/// the error message.
pub(crate) fn check(data: &[u8], expected: LogId) -> Result<(), usize> {
    let mut longest = 0;
    for format in FORMATS {
        let Ok(prefix) = prefix(format, expected) else {
            continue;
        };
        if data.starts_with(&prefix) {
            return Ok(());
        }
        longest = longest.max(prefix.len());
    }
    Err(longest)
}

/// Decodes a JSON snapshot of format 1 or 2 (format 1: restored with no session open).
pub(crate) fn decode(data: &[u8]) -> Result<Decoded, StateMachineError> {
    let snapshot: SnapshotData = serde_json::from_slice(data)
        .map_err(|e| StateMachineError::new(format!("malformed key-value snapshot: {e}")))?;
    let sessions = match (snapshot.format, snapshot.sessions) {
        (1, None) => SessionTable::new(SESSION_TTL_MS, MAX_SESSIONS),
        (2, Some(sessions)) => sessions,
        (1, Some(_)) => {
            return Err(StateMachineError::new(
                "a key-value snapshot of format 1 with sessions (format 1 has none)",
            ))
        }
        (2, None) => {
            return Err(StateMachineError::new(
                "a key-value snapshot of format 2 without its sessions",
            ))
        }
        (other, _) => {
            return Err(StateMachineError::new(format!(
                "unsupported JSON key-value snapshot format {other} (this version reads {} and {} \
                 as JSON)",
                FORMATS.start(),
                FORMATS.end()
            )))
        }
    };
    Ok(Decoded {
        last_applied: snapshot.last_applied,
        data: KvTable::new(snapshot.data.into_iter().collect::<KvMap>()),
        sessions,
    })
}
