//! Assembling the payload of an AppendEntries request frame from entries encoded once
//! ([`EntryCache`]): byte for byte what [`wire::encode`] writes for the same
//! [`RequestFrame`], so the receiving side decodes it as it always did.
//!
//! MessagePack writes an array as a header (its length) followed by its elements back to back, so
//! the frame is the envelope encoded with no entries (everything up to the `entries` array, the
//! empty array, the fields after it) with the empty array replaced by the real header and the
//! entries' encodings.

use bytes::Bytes;
use raft_core::{AppendEntriesRequest, Request};
use serde::Serialize;

use crate::entry_cache::EntryCache;
use crate::wire::{self, RequestFrame, WireError};

/// MessagePack's empty array (`fixarray` of length 0).
const EMPTY_ARRAY: u8 = 0x90;

/// The fields of [`AppendEntriesRequest`] after `entries`, in declaration order and with its
/// names: encoded as a map, its body is what follows the entries in the request's encoding.
#[derive(Serialize)]
struct FieldsAfterEntries {
    leader_commit: u64,
    round: u64,
}

/// The payload of request frame `id` carrying `request`, its entries' encodings taken from (and
/// added to) `cache`. Falls back to encoding the whole frame if the envelope does not have the
/// expected shape (a field added to the request after `entries`), so the bytes are always those of
/// [`wire::encode`].
///
/// # Errors
/// [`WireError::Encode`] if an entry's `Serialize` fails.
pub(crate) fn encode_append_entries<C: Serialize>(
    id: u64,
    request: AppendEntriesRequest<C>,
    cache: &EntryCache,
) -> Result<Bytes, WireError> {
    let Some((before, after)) = envelope(id, &request)? else {
        return wire::encode(&RequestFrame {
            id,
            request: Request::AppendEntries(request),
        });
    };
    let entries = cache
        .encode(&request.entries)
        .map_err(WireError::Encode)?;
    let header = array_header(request.entries.len());
    let len = before.len()
        + header.len()
        + entries.iter().map(Bytes::len).sum::<usize>()
        + after.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&before);
    out.extend_from_slice(&header);
    for e in &entries {
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&after);
    Ok(Bytes::from(out))
}

/// The encoding of the frame with no entries, split around its empty `entries` array: the bytes
/// before it and after it. `None` if the encoding does not end with the empty array followed by
/// the fields [`FieldsAfterEntries`] names.
fn envelope<C: Serialize>(
    id: u64,
    request: &AppendEntriesRequest<C>,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, WireError> {
    let empty = RequestFrame::<C> {
        id,
        request: Request::AppendEntries(AppendEntriesRequest {
            term: request.term,
            leader_id: request.leader_id,
            prev_log_id: request.prev_log_id,
            entries: Vec::new(),
            leader_commit: request.leader_commit,
            round: request.round,
        }),
    };
    let whole = wire::encode(&empty)?;
    let tail = wire::encode(&FieldsAfterEntries {
        leader_commit: request.leader_commit,
        round: request.round,
    })?;
    // A map of two fields: one header byte (`fixmap` 2), then the fields.
    let (Some(&0x82), Some(fields)) = (tail.first(), tail.get(1..)) else {
        return Ok(None);
    };
    let Some(split) = whole.len().checked_sub(fields.len() + 1) else {
        return Ok(None);
    };
    if whole[split] != EMPTY_ARRAY || &whole[split + 1..] != fields {
        return Ok(None);
    }
    Ok(Some((whole[..split].to_vec(), fields.to_vec())))
}

/// The MessagePack header of an array of `n` elements, in its shortest form (as `rmp` writes
/// it): `fixarray` below 16, `array 16` up to `u16::MAX`, `array 32` above.
fn array_header(n: usize) -> Vec<u8> {
    if n < 16 {
        vec![EMPTY_ARRAY | n as u8]
    } else if let Ok(n) = u16::try_from(n) {
        let mut h = vec![0xdc];
        h.extend_from_slice(&n.to_be_bytes());
        h
    } else {
        // A frame holds at most 4 GiB, so never more than u32::MAX entries.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut h = vec![0xdd];
        h.extend_from_slice(&n.to_be_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft_core::{Entry, EntryPayload, LogId, Membership, Node};
    use serde::Deserialize;

    /// A command tagged like raft-kv's, with optional and nested fields.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Command {
        Put { key: String, value: String },
        Cas { key: String, expected: Option<String>, new: Vec<u8> },
        Plain { n: u64 },
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (".{0,40}", ".{0,300}").prop_map(|(key, value)| Command::Put { key, value }),
            (".{0,10}", proptest::option::of(".{0,10}"), proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(key, expected, new)| Command::Cas { key, expected, new }),
            any::<u64>().prop_map(|n| Command::Plain { n }),
        ]
    }

    fn payload() -> impl Strategy<Value = EntryPayload<Command>> {
        prop_oneof![
            Just(EntryPayload::Blank),
            command().prop_map(EntryPayload::Command),
            (1u64..6, ".{0,12}").prop_map(|(n, addr)| {
                let mut m = Membership::new(1..=n);
                m.nodes.insert(1, Node { addr, data: String::new() });
                EntryPayload::Membership(m)
            }),
        ]
    }

    fn request() -> impl Strategy<Value = AppendEntriesRequest<Command>> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<(u64, u64)>(),
            proptest::collection::vec(payload(), 0..40),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(term, leader_id, (pt, pi), payloads, leader_commit, round)| {
                let entries = payloads
                    .into_iter()
                    .enumerate()
                    .map(|(k, p)| Entry::new(LogId::new(term, pi.wrapping_add(k as u64 + 1)), p))
                    .collect();
                AppendEntriesRequest {
                    term,
                    leader_id,
                    prev_log_id: LogId::new(pt, pi),
                    entries,
                    leader_commit,
                    round,
                }
            })
    }

    fn plain(id: u64, request: &AppendEntriesRequest<Command>) -> Bytes {
        wire::encode(&RequestFrame {
            id,
            request: Request::AppendEntries(request.clone()),
        })
        .expect("encode")
    }

    proptest! {
        /// The assembled frame is byte for byte rmp-serde's, from an empty cache and from one
        /// that already holds the entries (the second follower), and decodes to the request.
        #[test]
        fn assembled_frames_are_rmp_serde_frames(id in any::<u64>(), request in request()) {
            prop_assert!(envelope(id, &request).expect("encode").is_some(), "the fast path is taken");
            let cache = EntryCache::new(1 << 16, 1 << 24);
            let want = plain(id, &request);
            let cold = encode_append_entries(id, request.clone(), &cache).expect("encode");
            let warm = encode_append_entries(id, request.clone(), &cache).expect("encode");
            prop_assert_eq!(&cold[..], &want[..]);
            prop_assert_eq!(&warm[..], &want[..]);
            let decoded: RequestFrame<Command> = wire::decode(&warm).expect("decode");
            prop_assert_eq!(decoded, RequestFrame { id, request: Request::AppendEntries(request) });
        }
    }

    /// Array headers at the boundaries of each form, against rmp-serde's own.
    #[test]
    fn array_headers_match_rmp() {
        for n in [0usize, 1, 15, 16, 17, 65_535, 65_536, 70_000] {
            let encoded = rmp_serde::to_vec(&vec![(); n]).expect("encode");
            // `()` encodes as nil, one byte each, after the header.
            assert_eq!(array_header(n), encoded[..encoded.len() - n], "n = {n}");
        }
    }
}
