#![doc = include_str!("../README.md")]
//!
//! ## Security
//!
//! With [`Security::Tls`] (what a [`TlsConfig`] converts into), every connection is TLS 1.3 with
//! certificates on both sides, through rustls and its `ring` crypto provider:
//! * the client checks that the server's certificate chains to the cluster CA and names the node it
//!   dialled (`node-<target>.<cluster id>.raft`);
//! * the server checks that the client's certificate chains to the cluster CA (no certificate, or
//!   one from another CA, fails the TLS handshake) and then that it names the node id the client's
//!   handshake claims (`from`): a node holding node 2's certificate cannot speak as node 1;
//! * the handshake's cluster id must match the server's; a refusal never names the server's own
//!   cluster id.
//!
//! [`Security::Insecure`] speaks the same protocol in plaintext with no authentication: anyone who
//! reaches the port can act as any node. It exists for tests, benchmarks and networks where every
//! host that can reach the port is trusted, and the server logs a warning when it starts that way.
//!
//! [`NodeName`] documents the certificate names; [`TlsConfig`] what a node certificate needs; the
//! `cert-gen` feature (module `cert_gen`) makes a throwaway CA and node certificates for local clusters
//! and tests.
//!
//! ## Wire format
//!
//! **Frames.** Both directions are a sequence of frames: a 4-byte big-endian payload length, then the
//! payload. A request frame announcing more than [`TcpConfig::max_frame_length`] (default 64 MiB;
//! 64 KiB until the handshake has succeeded, [`wire::HANDSHAKE_MAX_FRAME_LENGTH`]) closes the
//! connection, as does a response frame over [`wire::RESPONSE_MAX_FRAME_LENGTH`] (64 KiB). With
//! TLS, the frames travel inside the TLS stream.
//!
//! **Encoding.** Payloads are [MessagePack](https://msgpack.org) as written by `rmp-serde` with
//! named struct fields ([`wire::encode`]). The format is self-describing, so any serde command type
//! works, including internally tagged or untagged enums and `skip_serializing_if` fields, which
//! schema-less binary formats (bincode, postcard) cannot decode. A payload must be exactly one value;
//! trailing bytes are an error.
//!
//! **Handshake.** The client's first frame is `b"RAFT"`, the protocol version as a big-endian `u16`
//! (now [`wire::PROTOCOL_VERSION`] = 2; version 2 added InstallSnapshot), then a [`wire::Hello`]
//! `{ cluster_id, from, to }`: the cluster id (a string), the client's node id and the node id it
//! expects to reach. The server answers with `b"RAFT"`, its version, and a [`wire::HelloReply`]:
//! `Accepted { node_id }`, or `Refused { reason }` followed by closing the connection. It refuses
//! another cluster id (without naming its own), a `to` that is not its own id, with TLS a `from` that
//! the client's certificate does not name, and another protocol version; a first frame without the
//! magic bytes is closed without an answer. The client reports a refusal as
//! [`NetworkError::Unreachable`](raft_core::NetworkError) carrying the reason.
//!
//! **Messages.** After the handshake the client sends [`wire::RequestFrame`] `{ id, request }`, where
//! `request` is a [`raft_core::Request`] (`Vote`, `AppendEntries` or `InstallSnapshot`) and `id` a
//! `u64` unique among the connection's requests in flight. The data of an `InstallSnapshot` chunk is
//! a MessagePack `bin` (an array of integers is accepted too); everything else is serde's derived
//! form of the raft-core types. The server answers each with a [`wire::ResponseFrame`]
//! `{ id, body }`, `body` being `Ok(`[`raft_core::Response`]`)` or `Failed { reason }` (the node
//! has stopped). Many requests may be in flight on one connection; the server handles them
//! concurrently and answers in any order; the client matches answers to requests by id.
//!
//! **Bad input.** Garbage, an over-long frame, a frame cut short by the peer closing, an undecodable
//! message, a failed TLS handshake, a refused handshake or a timeout close that one connection.
//! Nothing read from the wire is unwrapped; the server and the node keep running. Values that
//! decode but make no sense (e.g. a term of `u64::MAX`) are refused by raft-core's engine.
//!
//! ## Limits: what a hostile peer can cost
//!
//! The server bounds what any connection can hold, all settings of [`TcpConfig`]:
//! * **Connections:** at most [`max_connections`](TcpConfig::max_connections) (default 256) at
//!   once; one accepted beyond it is closed at once, before any TLS work.
//! * **Time:** a new connection must finish its TLS and protocol handshakes within
//!   [`handshake_timeout`](TcpConfig::handshake_timeout) (default 1 s); an established one silent
//!   for [`idle_timeout`](TcpConfig::idle_timeout) (default 30 s, well above raft-core's heartbeat
//!   interval) is closed; a frame must be complete within
//!   [`frame_timeout`](TcpConfig::frame_timeout) (default 10 s) of its first byte, and responses
//!   written within it.
//! * **Memory:** the read buffer grows as bytes arrive and is never sized from an announced length
//!   (it asks for at most 64 KiB beyond the bytes received); before the handshake a frame may not announce
//!   more than 64 KiB; after it, each frame holds its length in a byte budget shared by all
//!   connections, [`max_buffered_bytes`](TcpConfig::max_buffered_bytes) (default 256 MiB), from its
//!   length prefix until its request is answered, waiting (within the frame timeout) for room.
//! * **File descriptors:** each connection costs one. The last [`descriptors::RESERVED`] (64)
//!   descriptors below the process's limit (`ulimit -n`) are kept for the node: a connection
//!   accepted into one of them is closed at once, so however many connections flood in, on this
//!   port or on any other server of the process that applies the same rule
//!   ([`descriptors::admit`]), storage can still open its files and the node can reach its peers.
//!   The server warns at start if the limit leaves less than `max_connections` beyond the reserve.
//!   Should `accept` fail anyway (out of descriptors), the server pauses 100 ms and tries again: it
//!   neither spins nor stops, and nothing of it reaches the node.
//! * **Logs:** bad input is logged at WARN at most once per kind (TLS failure, bad handshake, bad
//!   frame, timeout, connection cap, descriptor reserve, accept failure) every 10 s, with the number of events
//!   suppressed since; the rest go to DEBUG.
//!
//! Unauthenticated clients can still occupy connection slots for up to `handshake_timeout` each: a
//! sustained flood of connections can keep peers from opening new connections while it lasts
//! (established ones are not affected). Filter the Raft port to the cluster's hosts where that
//! matters.
//!
//! ## Timeouts and reconnecting
//!
//! * **Connect:** opening the TCP connection plus the TLS and protocol handshakes must finish within
//!   [`TcpConfig::connect_timeout`] (default 80 ms; a handshake takes about 1 ms on loopback).
//! * **Request:** a request waits for its response for at most [`TcpConfig::request_timeout`]
//!   (default 5 s), then fails with `NetworkError::Timeout`. The driver bounds every call with its
//!   own `Config::rpc_timeout` (default 250 ms) too, and may drop it earlier; a late response to a
//!   dropped request is discarded.
//! * **One connection per peer,** opened by the first call to it and reused by every call after. A
//!   connection attempt runs on its own task, so a caller that gives up does not abort it; concurrent
//!   callers wait for the same attempt. A connection unused for half of
//!   [`TcpConfig::idle_timeout`] is closed by the client, before the server's idle timeout would.
//! * **Breaks:** when a connection breaks (peer closed it, reset, bad frame, a frame or write over
//!   [`TcpConfig::frame_timeout`]), every request in flight on it fails at once with
//!   `NetworkError::Unreachable`; the next call reconnects.
//! * **Backoff:** after a failed attempt (refused, timed out, handshake refused) the next one waits
//!   [`TcpConfig::reconnect_backoff_min`] (default 10 ms), doubling after each further failure up to
//!   [`TcpConfig::reconnect_backoff_max`] (default 50 ms). Calls made while waiting fail at once with
//!   `Unreachable` (the driver retries on its own schedule). A success resets the backoff. The cap
//!   is low on purpose: a peer that comes back must be reachable again, within `connect_timeout +
//!   reconnect_backoff_max`, before anyone's election timer fires (raft-core's
//!   `election_timeout_min`, default 150 ms), or its return costs a needless election;
//!   [`TcpConfig::check_raft_config`] checks it.
//! * **Size:** a request that encodes to more than `max_frame_length` fails at once with
//!   `Unreachable` ("request too large: ..."), before any connection attempt and without being sent;
//!   the connection, if open, stays up. Keep raft-core's `Config::snapshot_chunk_size` well below
//!   `max_frame_length` ([`TcpConfig::check_raft_config`] checks it), or a snapshot can never reach
//!   a follower.
#![warn(missing_docs)]

#[cfg(feature = "cert-gen")]
pub mod cert_gen;
mod client;
mod config;
pub mod descriptors;
mod frame;
mod identity;
mod refused;
mod server;
mod tls;
mod tls_error;
mod warn_limit;
pub mod wire;

pub use client::TcpNetwork;
pub use config::{TcpConfig, TcpError, SNAPSHOT_CHUNK_HEADROOM};
pub use identity::{validate_cluster_id, NodeName};
pub use refused::{RefusedConnections, RefusedCounts};
pub use server::{serve, TcpServer};
pub use tls::{Security, TlsConfig, TlsError};
