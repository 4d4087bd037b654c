//! The wire format: frames, the handshake and the message envelopes.
//!
//! Public so that tests, tools and other implementations can speak the protocol; a node only needs
//! [`TcpNetwork`](crate::TcpNetwork) and [`TcpServer`](crate::TcpServer). The layout is described in
//! the [crate docs](crate#wire-format).
//!
//! Every function here takes or returns the *payload* of one frame; the 4-byte length prefix is added
//! by the codec ([`codec`]) when writing, and checked by the crate's own frame reader when reading.

use bytes::Bytes;
use raft_core::{NodeId, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The first four bytes of both handshake payloads.
pub const MAGIC: [u8; 4] = *b"RAFT";

/// The protocol version this crate speaks. A server refuses any other.
///
/// Version 2 added `InstallSnapshot` requests; a version 1 node could not decode them, so the two
/// refuse each other at the handshake rather than fail on the first snapshot.
pub const PROTOCOL_VERSION: u16 = 2;

/// The largest frame accepted before the handshake has succeeded (64 KiB), so that a stranger cannot
/// make the server reserve a large buffer for one announced frame.
pub const HANDSHAKE_MAX_FRAME_LENGTH: usize = 64 * 1024;

/// The largest response frame (64 KiB): a server never sends more, a client closes a connection
/// that announces more. Responses carry a few integers, or a short reason when the node could not
/// answer, so a client never needs to buffer much for one, whatever the server sends.
pub const RESPONSE_MAX_FRAME_LENGTH: usize = 64 * 1024;

/// The handshake a client sends as its first frame (after [`MAGIC`] and the version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster the client belongs to; the server refuses any other.
    pub cluster_id: String,
    /// The client's node id.
    pub from: NodeId,
    /// The node id the client expects to reach; the server refuses if it is not its own.
    pub to: NodeId,
}

/// The server's answer to a [`Hello`] (after [`MAGIC`] and the version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is open for requests.
    Accepted {
        /// The server's node id.
        node_id: NodeId,
    },
    /// The server refuses the connection and closes it.
    Refused {
        /// Why, for the client's logs and errors.
        reason: String,
    },
}

/// A request as carried by one frame: the id the response will carry back, and the RPC, in
/// [`raft_core::Request`]'s derived serde form. (The data of an `InstallSnapshot` chunk travels as a
/// MessagePack `bin`, its length then the bytes, and is read back as one block: raft-core's
/// [`InstallSnapshotRequest`](raft_core::InstallSnapshotRequest) declares it as bytes. The older
/// form, an array of integers, is still read.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "C: Serialize", deserialize = "C: DeserializeOwned"))]
pub struct RequestFrame<C> {
    /// Chosen by the client, unique among the requests in flight on the connection.
    pub id: u64,
    /// The RPC.
    pub request: Request<C>,
}

/// A response as carried by one frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The id of the request this answers.
    pub id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// What the server made of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The node answered.
    Ok(Response),
    /// The node could not answer (it has stopped); the client reports the peer as unreachable.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A payload that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A handshake payload does not start with [`MAGIC`]: the peer does not speak this protocol.
    #[error("not a raft-net-tcp peer (bad magic bytes)")]
    BadMagic,
    /// A handshake payload carries a protocol version this side does not speak.
    #[error("unsupported protocol version {0} (this node speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// The payload is not a valid message.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The value could not be encoded (a command type whose `Serialize` fails).
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// A codec for the frame layout: a 4-byte big-endian length prefix followed by that many payload
/// bytes; a frame whose length is above `max_frame_length` is an error.
///
/// This crate writes frames with it. It does not read with it: when decoding, the codec reserves
/// the whole announced length as soon as it has read a prefix, which lets every peer make the reader
/// set aside `max_frame_length` bytes before sending any payload. The crate's own reader grows its
/// buffer as bytes arrive, bounds each frame's duration, and shares a byte budget between
/// connections. Decoding with this codec is fine for a peer you trust (tests, tools).
pub fn codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .big_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

/// Encodes a value as MessagePack with named struct fields (the payload of a request or response
/// frame).
///
/// # Errors
/// [`WireError::Encode`] if the value's `Serialize` fails.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, WireError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| WireError::Encode(e.to_string()))
}

/// Decodes a payload produced by [`encode`]. The whole payload must be one value: trailing bytes are an
/// error.
///
/// # Errors
/// [`WireError::Decode`] if the bytes are not exactly one valid `T`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    // Read straight from the slice: strings and byte arrays are handed to the visitors borrowed,
    // where a reader-based deserializer copies each through `read_to_end` into a scratch buffer.
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    let value = T::deserialize(&mut de).map_err(|e| WireError::Decode(e.to_string()))?;
    if !at_end(&mut de) {
        return Err(WireError::Decode(format!(
            "{} trailing bytes after the message",
            trailing_bytes::<T>(payload)
        )));
    }
    Ok(value)
}

/// Whether `de` has consumed its whole input: reading one more value must fail for want of even
/// its first byte (a marker). Any byte left, a whole value or not, is trailing.
fn at_end<'de>(
    de: &mut rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'de, [u8]>>,
) -> bool {
    matches!(
        serde::de::IgnoredAny::deserialize(de),
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof
    )
}

/// How many bytes of `payload` follow the `T` it starts with (which decodes): counted with the
/// position-tracking reader, on the error path only.
fn trailing_bytes<T: DeserializeOwned>(payload: &[u8]) -> u64 {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
    match T::deserialize(&mut de) {
        Ok(_) => payload.len() as u64 - de.position(),
        Err(_) => 0,
    }
}

fn encode_handshake<T: Serialize>(value: &T) -> Result<Bytes, WireError> {
    let body = rmp_serde::to_vec_named(value).map_err(|e| WireError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(6 + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(Bytes::from(out))
}

/// Checks the magic and the version, returning the rest of the payload.
fn handshake_body(payload: &[u8]) -> Result<&[u8], WireError> {
    if payload.len() < MAGIC.len() || payload[..MAGIC.len()] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let rest = &payload[MAGIC.len()..];
    let (version, body) = match rest {
        [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
        _ => return Err(WireError::Decode("handshake too short".into())),
    };
    if version != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    Ok(body)
}

/// Encodes a client's handshake: [`MAGIC`], [`PROTOCOL_VERSION`] (u16, big-endian), then the
/// MessagePack [`Hello`].
///
/// # Errors
/// [`WireError::Encode`] (not expected for these types).
pub fn encode_hello(hello: &Hello) -> Result<Bytes, WireError> {
    encode_handshake(hello)
}

/// Decodes a client's handshake.
///
/// # Errors
/// [`WireError::BadMagic`], [`WireError::UnsupportedVersion`] or [`WireError::Decode`].
pub fn decode_hello(payload: &[u8]) -> Result<Hello, WireError> {
    decode(handshake_body(payload)?)
}

/// Encodes a server's handshake answer: [`MAGIC`], [`PROTOCOL_VERSION`], then the MessagePack
/// [`HelloReply`].
///
/// # Errors
/// [`WireError::Encode`] (not expected for these types).
pub fn encode_hello_reply(reply: &HelloReply) -> Result<Bytes, WireError> {
    encode_handshake(reply)
}

/// Decodes a server's handshake answer.
///
/// # Errors
/// [`WireError::BadMagic`], [`WireError::UnsupportedVersion`] or [`WireError::Decode`].
pub fn decode_hello_reply(payload: &[u8]) -> Result<HelloReply, WireError> {
    decode(handshake_body(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{
        AppendEntriesRequest, Entry, EntryPayload, InstallSnapshotRequest, LogId, Membership,
        SnapshotMeta, VoteRequest,
    };

    /// Commands tagged like raft-kv's, which non-self-describing formats cannot decode.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Tagged {
        Put {
            key: String,
            value: String,
        },
        Cas {
            key: String,
            expected: Option<String>,
        },
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    struct Sparse {
        a: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        b: Option<u64>,
        c: u64,
    }

    fn roundtrip<C>(cmd: C)
    where
        C: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
    {
        let frame = RequestFrame {
            id: 7,
            request: Request::AppendEntries(AppendEntriesRequest {
                term: 3,
                leader_id: 1,
                prev_log_id: LogId::new(2, 5),
                entries: vec![
                    Entry {
                        log_id: LogId::new(3, 6),
                        payload: EntryPayload::Blank.into(),
                    },
                    Entry {
                        log_id: LogId::new(3, 7),
                        payload: EntryPayload::Command(cmd).into(),
                    },
                ],
                leader_commit: 5,
                round: 0,
            }),
        };
        let bytes = encode(&frame).expect("encode");
        assert_eq!(decode::<RequestFrame<C>>(&bytes), Ok(frame));
    }

    #[test]
    fn any_serde_command_roundtrips() {
        roundtrip(42u64);
        roundtrip(Tagged::Put {
            key: "k".into(),
            value: "v".into(),
        });
        roundtrip(Tagged::Cas {
            key: "k".into(),
            expected: None,
        });
        roundtrip(Sparse {
            a: 1,
            b: None,
            c: 3,
        });
        roundtrip(vec![0u8, 255, 128]);
    }

    fn snapshot_chunk(data: Vec<u8>) -> RequestFrame<u64> {
        RequestFrame {
            id: 9,
            request: Request::InstallSnapshot(InstallSnapshotRequest {
                term: 4,
                leader_id: 2,
                meta: SnapshotMeta {
                    last_log_id: LogId::new(3, 1_000),
                    membership: Membership::new([1, 2, 3]),
                },
                offset: 1 << 20,
                data,
                done: false,
            }),
        }
    }

    /// An InstallSnapshot frame as a peer writes it whose serde treats the data as a plain
    /// `Vec<u8>` (an array of integers): variant and field names as `Request`'s.
    #[derive(Serialize)]
    struct PlainFrame<'a> {
        id: u64,
        request: PlainRequest<'a>,
    }

    #[derive(Serialize)]
    enum PlainRequest<'a> {
        InstallSnapshot(PlainInstall<'a>),
    }

    #[derive(Serialize)]
    struct PlainInstall<'a> {
        term: u64,
        leader_id: NodeId,
        meta: &'a SnapshotMeta,
        offset: u64,
        data: &'a [u8],
        done: bool,
    }

    #[test]
    fn install_snapshot_roundtrips_with_its_data_as_bin() {
        // Bytes >= 0x80 would take two bytes each as MessagePack integers.
        let data: Vec<u8> = (0..1024 * 1024).map(|i| 0x80 | (i % 128) as u8).collect();
        let frame = snapshot_chunk(data.clone());
        let bytes = encode(&frame).expect("encode");
        assert!(
            bytes.len() < data.len() + 256,
            "{} bytes for {} bytes of data: not encoded as bin",
            bytes.len(),
            data.len()
        );
        assert_eq!(decode::<RequestFrame<u64>>(&bytes), Ok(frame.clone()));
        // A peer that encodes the data as an array (plain serde) is understood too.
        let Request::InstallSnapshot(r) = &frame.request else {
            unreachable!("built as an InstallSnapshot");
        };
        let plain = rmp_serde::to_vec_named(&PlainFrame {
            id: frame.id,
            request: PlainRequest::InstallSnapshot(PlainInstall {
                term: r.term,
                leader_id: r.leader_id,
                meta: &r.meta,
                offset: r.offset,
                data: &r.data,
                done: r.done,
            }),
        })
        .expect("encode plain");
        assert!(plain.len() > bytes.len() + data.len() / 2);
        assert_eq!(decode::<RequestFrame<u64>>(&plain), Ok(frame));
        let empty = snapshot_chunk(Vec::new());
        assert_eq!(
            decode::<RequestFrame<u64>>(&encode(&empty).expect("encode")),
            Ok(empty)
        );
    }

    #[test]
    fn vote_and_append_entries_encode_as_plain_serde() {
        let requests = [
            Request::Vote(VoteRequest {
                term: 3,
                candidate_id: 2,
                last_log_id: LogId::new(2, 8),
                leadership_transfer: false,
            }),
            Request::AppendEntries(AppendEntriesRequest {
                term: 3,
                leader_id: 1,
                prev_log_id: LogId::new(2, 5),
                entries: vec![Entry {
                    log_id: LogId::new(3, 6),
                    payload: EntryPayload::Command(77u64).into(),
                }],
                leader_commit: 5,
                round: 0,
            }),
        ];
        /// The frame as serde derives it for any struct of an id and a `Request`: a custom encoding
        /// of `RequestFrame` must not change how votes and AppendEntries travel.
        #[derive(Serialize)]
        struct DerivedFrame<'a> {
            id: u64,
            request: &'a Request<u64>,
        }
        for request in requests {
            let plain = rmp_serde::to_vec_named(&DerivedFrame {
                id: 1,
                request: &request,
            })
            .expect("encode plain");
            let frame = encode(&RequestFrame { id: 1, request }).expect("encode");
            assert_eq!(frame.as_ref(), plain.as_slice());
        }
    }

    #[test]
    fn handshake_roundtrips_and_checks_magic_and_version() {
        let hello = Hello {
            cluster_id: "c".into(),
            from: 1,
            to: 2,
        };
        let bytes = encode_hello(&hello).expect("encode");
        assert_eq!(&bytes[..4], b"RAFT");
        assert_eq!(&bytes[4..6], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(PROTOCOL_VERSION, 2);
        assert_eq!(decode_hello(&bytes), Ok(hello));

        let mut other_version = bytes.to_vec();
        other_version[5] = 9;
        assert_eq!(
            decode_hello(&other_version),
            Err(WireError::UnsupportedVersion(9))
        );
        assert_eq!(decode_hello(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        assert_eq!(decode_hello(b"RA"), Err(WireError::BadMagic));
        assert!(matches!(decode_hello(b"RAFT\0"), Err(WireError::Decode(_))));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        let vote = RequestFrame::<u64> {
            id: 1,
            request: Request::Vote(VoteRequest {
                term: 1,
                candidate_id: 1,
                last_log_id: LogId::default(),
                leadership_transfer: false,
            }),
        };
        let mut bytes = encode(&vote).expect("encode").to_vec();
        bytes.push(0);
        assert!(matches!(
            decode::<RequestFrame<u64>>(&bytes),
            Err(WireError::Decode(_))
        ));
        for garbage in [
            &[][..],
            &[0xc1],
            &[0xff; 64],
            &[0x91; 100_000],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode::<RequestFrame<u64>>(garbage).is_err());
        }
    }

    /// Any byte after the message is refused, a whole second value, the start of one or a lone
    /// marker, and the error counts them.
    #[test]
    fn every_kind_of_trailing_bytes_is_counted_and_refused() {
        let frame = RequestFrame::<String> {
            id: 3,
            request: Request::Vote(VoteRequest {
                term: 2,
                candidate_id: 1,
                last_log_id: LogId::new(1, 4),
                leadership_transfer: false,
            }),
        };
        let bytes = encode(&frame).expect("encode").to_vec();
        assert_eq!(decode::<RequestFrame<String>>(&bytes), Ok(frame.clone()));
        let second = encode(&frame).expect("encode").to_vec();
        for (tail, n) in [
            (second.clone(), second.len()),
            (second[..3].to_vec(), 3),
            (vec![0xd9], 1),
            (vec![0xc0], 1),
            (vec![0xc1, 0xc1], 2),
        ] {
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(&tail);
            assert_eq!(
                decode::<RequestFrame<String>>(&with_tail),
                Err(WireError::Decode(format!(
                    "{n} trailing bytes after the message"
                ))),
                "tail {tail:?}"
            );
        }
    }

    /// Strings and arrays decode the same from the slice as with a reader (which copies them).
    #[test]
    fn strings_and_bytes_decode_as_with_a_reader() {
        let values = (
            String::from("é ünïcödé"),
            vec![String::new(), "x".repeat(300), "y".repeat(70_000)],
            vec![1u8, 2, 3],
        );
        let bytes = rmp_serde::to_vec_named(&values).expect("encode");
        type Values = (String, Vec<String>, Vec<u8>);
        let from_reader: Values =
            rmp_serde::decode::from_read(std::io::Cursor::new(&bytes)).expect("reader");
        assert_eq!(decode::<Values>(&bytes), Ok(from_reader));
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 1);
        assert!(decode::<Values>(&cut).is_err());
    }
}
