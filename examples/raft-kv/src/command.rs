//! What clients ask of the hash table ([`KvCommand`]) and what they get back ([`KvResponse`]).

use raft_core::{ClientId, LogIndex};
use serde::{Deserialize, Serialize};

/// A client's request to the replicated hash table, as a log entry: it takes effect (or is
/// answered) when it is committed and applied, in log order, on every node.
///
/// Writes (`Put`, `Delete`, `CompareAndSwap`) may be wrapped in a [`KvCommand::Session`] envelope
/// that makes a retry of them apply at most once. Reads need no log entry at all: the HTTP API
/// serves them with `Raft::read_index` (see [`crate::http`]); [`KvCommand::Get`] remains for
/// callers that want a read through the log.
///
/// Serialized with an `op` tag, so the JSON form is flat:
///
/// ```
/// # use raft_kv::KvCommand;
/// let json = serde_json::to_string(&KvCommand::put("apple", "red")).unwrap();
/// assert_eq!(json, r#"{"op":"put","key":"apple","value":"red"}"#);
/// ```
///
/// `Deserialize` is written by hand (module `command_serde`) for the same encoding: it decodes
/// each field straight into place instead of buffering the whole map first, as serde's derive does
/// for an internally tagged enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KvCommand {
    /// Sets `key` to `value`, creating the key or replacing its value. Answered with
    /// [`KvResponse::Put`].
    Put {
        /// The key to set.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Reads `key` through the log, like a write: the value read is the latest committed one
    /// (linearizable by construction, at the price of a log entry per read). The HTTP API uses it
    /// only for `GET /kv/{key}?consistency=log`; its other reads write nothing to the log.
    /// Answered with [`KvResponse::Value`].
    Get {
        /// The key to read.
        key: String,
    },
    /// Removes `key` (removing an absent key is not an error). Answered with [`KvResponse::Deleted`].
    Delete {
        /// The key to remove.
        key: String,
    },
    /// Sets `key` to `new` only if its current value is `expected` (`None`: only if the key is
    /// absent, i.e. "create if absent"). Answered with [`KvResponse::CasResult`].
    CompareAndSwap {
        /// The key to update.
        key: String,
        /// The value the key must hold for the swap to happen; `None` means the key must not exist.
        expected: Option<String>,
        /// The value to set if it does.
        new: String,
    },
    /// `command` as command `seq` of client `client_id`'s session: applied at most once, however
    /// often it is proposed (see [`raft_core::SessionTable`]). Answered with the inner command's
    /// response the first time, [`KvResponse::Duplicate`] for a retry of the latest command,
    /// [`KvResponse::SessionStale`] for an older one, [`KvResponse::SessionExpired`] when the
    /// session is unknown and `seq` is not 1. An envelope inside an envelope is answered with
    /// [`KvResponse::Refused`] and changes nothing.
    Session {
        /// The client's session id (chosen by the client, e.g. at random).
        client_id: ClientId,
        /// The command's number in the session: 1, 2, 3, ...; a retry repeats it.
        seq: u64,
        /// The proposing leader's wall clock when it proposed the command (ms since the Unix
        /// epoch): the clock by which sessions expire, the same on every replica since it is in the
        /// log.
        timestamp_ms: u64,
        /// The write.
        command: Box<KvCommand>,
    },
}

/// What MessagePack adds to a command's strings, at most: the `op` tag and its value, the field names,
/// and a length header per string.
const ENCODING_OVERHEAD_BYTES: usize = 64;

impl KvCommand {
    /// An upper estimate of the command's encoded size in bytes (MessagePack with named fields, as
    /// on the wire and on disk): its strings plus a fixed overhead. Cheap: no encoding.
    pub fn encoded_size(&self) -> usize {
        let strings = match self {
            KvCommand::Put { key, value } => key.len().saturating_add(value.len()),
            KvCommand::Get { key } | KvCommand::Delete { key } => key.len(),
            KvCommand::CompareAndSwap { key, expected, new } => key
                .len()
                .saturating_add(expected.as_ref().map_or(0, String::len))
                .saturating_add(new.len()),
            // Three numbers and the envelope's field names on top of the inner command.
            KvCommand::Session { command, .. } => {
                return command
                    .encoded_size()
                    .saturating_add(ENCODING_OVERHEAD_BYTES);
            }
        };
        strings.saturating_add(ENCODING_OVERHEAD_BYTES)
    }

    /// A [`KvCommand::Put`].
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`KvCommand::Get`].
    pub fn get(key: impl Into<String>) -> Self {
        KvCommand::Get { key: key.into() }
    }

    /// A [`KvCommand::Delete`].
    pub fn delete(key: impl Into<String>) -> Self {
        KvCommand::Delete { key: key.into() }
    }

    /// A [`KvCommand::CompareAndSwap`].
    pub fn compare_and_swap(
        key: impl Into<String>,
        expected: Option<&str>,
        new: impl Into<String>,
    ) -> Self {
        KvCommand::CompareAndSwap {
            key: key.into(),
            expected: expected.map(str::to_string),
            new: new.into(),
        }
    }

    /// `self` as command `seq` of session `client_id`, stamped with `timestamp_ms` (the proposing
    /// leader's wall clock).
    pub fn in_session(self, client_id: ClientId, seq: u64, timestamp_ms: u64) -> Self {
        KvCommand::Session {
            client_id,
            seq,
            timestamp_ms,
            command: Box::new(self),
        }
    }

    /// The key the command is about.
    pub fn key(&self) -> &str {
        match self {
            KvCommand::Put { key, .. }
            | KvCommand::Get { key }
            | KvCommand::Delete { key }
            | KvCommand::CompareAndSwap { key, .. } => key,
            KvCommand::Session { command, .. } => command.key(),
        }
    }
}

/// What applying a log entry returned. One variant per command, plus [`KvResponse::NoOp`] for the
/// entries that carry no command.
///
/// Each outcome a client must branch on is visible without extra lookups, so an HTTP API maps it
/// directly, as the server's API ([`crate::http`]) does:
///
/// | response | HTTP |
/// |---|---|
/// | `Value(Some(v))` | `200` with `v` |
/// | `Value(None)` | `404` |
/// | `Put { previous: None }` | `200` with `"previous": null` (created) |
/// | `Put { previous: Some(_) }` | `200` with the old value as `"previous"` (replaced) |
/// | `Deleted { previous: Some(_) }` | `200` with the old value |
/// | `Deleted { previous: None }` | `404` (the key did not exist; nothing changed) |
/// | `CasResult { swapped: true, .. }` | `200` |
/// | `CasResult { swapped: false, current }` | `409` with `current` (`None`: the key is absent) |
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvResponse {
    /// The answer to a [`KvCommand::Get`]: the key's value, `None` if the key does not exist.
    Value(Option<String>),
    /// The answer to a [`KvCommand::Put`].
    Put {
        /// The value the key held before; `None` if the put created the key.
        previous: Option<String>,
    },
    /// The answer to a [`KvCommand::Delete`].
    Deleted {
        /// The value the key held before; `None` if the key did not exist (nothing changed).
        previous: Option<String>,
    },
    /// The answer to a [`KvCommand::CompareAndSwap`].
    CasResult {
        /// Whether the key held the expected value, so that the new value was set.
        swapped: bool,
        /// The key's value after the command: the new value if swapped, else the value that did
        /// not match (`None`: the key is absent).
        current: Option<String>,
    },
    /// The response to an entry that carries no client command (a new leader's blank entry, a
    /// membership change). The driver drops it; clients never see it.
    NoOp,
    /// The answer to a retry of a session's latest command: it was applied before, at log index
    /// `index`, and answered `response`; nothing was applied again.
    Duplicate {
        /// Where the command was applied.
        index: LogIndex,
        /// What it answered then.
        response: Box<KvResponse>,
    },
    /// A session command older than the session's latest: nothing was applied (its answer is no
    /// longer kept; the client has moved on from it).
    SessionStale {
        /// The session's latest applied sequence number.
        latest: u64,
    },
    /// A session command with a number above 1 for a session the table does not know (it expired,
    /// or never existed): nothing was applied, and a retry could not be told from a new command.
    /// The client must open a new session (a new id, starting at 1).
    SessionExpired,
    /// A command the state machine refuses as malformed (a session envelope inside another):
    /// nothing was applied.
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_size_is_an_upper_estimate_of_the_messagepack_encoding() {
        let long = "x".repeat(10_000);
        let commands = [
            KvCommand::put("k", "v").in_session(u64::MAX, u64::MAX, u64::MAX),
            KvCommand::compare_and_swap(long.clone(), Some(&long), long.clone())
                .in_session(1, 2, 3),
            KvCommand::put("k", "v"),
            KvCommand::put(long.clone(), long.clone()),
            KvCommand::get(long.clone()),
            KvCommand::delete(""),
            KvCommand::compare_and_swap(long.clone(), Some(&long), long.clone()),
            KvCommand::compare_and_swap("k", None, "v"),
        ];
        for command in commands {
            let encoded = rmp_serde::to_vec_named(&command).expect("encodes");
            assert!(
                command.encoded_size() >= encoded.len(),
                "{} < {} for {command:?}",
                command.encoded_size(),
                encoded.len()
            );
            assert!(command.encoded_size() <= encoded.len() + ENCODING_OVERHEAD_BYTES);
        }
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    #[test]
    fn a_session_envelope_is_flat_json_and_plain_commands_are_unchanged() {
        let json = serde_json::to_string(&KvCommand::delete("k").in_session(7, 2, 1_000)).unwrap();
        assert_eq!(
            json,
            r#"{"op":"session","client_id":7,"seq":2,"timestamp_ms":1000,"command":{"op":"delete","key":"k"}}"#
        );
        let back: KvCommand = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key(), "k");
        let packed = rmp_serde::to_vec_named(&back).unwrap();
        assert_eq!(rmp_serde::from_slice::<KvCommand>(&packed).unwrap(), back);
    }
}
