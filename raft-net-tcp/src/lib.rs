//! # raft-net-tcp
//!
//! [`RaftNetwork`](raft_core::RaftNetwork) over TCP for `raft-core`: [`TcpNetwork`] sends a node's
//! RPCs to its peers, and [`TcpServer`] accepts peers' connections and hands their RPCs to the node's
//! [`Raft`](raft_core::Raft) handle.
//!
//! ## Quick start
//!
//! A three-node cluster on loopback. A server binary does the same for one node: bind its listener,
//! build a [`TcpNetwork`] from the peers' addresses, start the node, serve it.
//!
//! ```
//! use std::time::Duration;
//! use async_trait::async_trait;
//! use raft_core::{Config, Entry, EntryPayload, LogId, Raft, SnapshotMeta, StateMachine, StateMachineError};
//! use raft_net_tcp::{TcpConfig, TcpNetwork, TcpServer};
//! use raft_storage_mem::MemStorage;
//!
//! /// Sums the numbers it is given.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! #[async_trait]
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> { Ok(None) }
//!     async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
//!         Ok(entries.iter().map(|e| {
//!             if let EntryPayload::Command(n) = e.payload { self.0 += n; }
//!             self.0
//!         }).collect())
//!     }
//!     async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> { Ok(self.0.to_le_bytes().to_vec()) }
//!     async fn restore(&mut self, _: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
//!         self.0 = u64::from_le_bytes(data.try_into().map_err(StateMachineError::new)?);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Bind first, so that every node's address is known before the networks are built.
//! let mut listeners = Vec::new();
//! for _ in 1..=3 {
//!     listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
//! }
//! let peers: Vec<(u64, std::net::SocketAddr)> = listeners
//!     .iter()
//!     .zip(1..)
//!     .map(|(l, id)| Ok((id, l.local_addr()?)))
//!     .collect::<Result<_, std::io::Error>>()?;
//!
//! let (mut nodes, mut servers) = (Vec::new(), Vec::new());
//! for (listener, id) in listeners.into_iter().zip(1..) {
//!     let network = TcpNetwork::new("demo", id, peers.clone(), TcpConfig::default())?;
//!     let raft = Raft::start(id, Config::default(), MemStorage::new(), network, Counter::default()).await?;
//!     servers.push(TcpServer::start(listener, raft.clone(), "demo", TcpConfig::default())?);
//!     nodes.push(raft);
//! }
//! for raft in &nodes {
//!     raft.initialize([1, 2, 3]).await?;
//! }
//! let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
//! let leader = &nodes[(leader - 1) as usize];
//! assert_eq!(leader.client_write(40).await?.data, 40);
//! assert_eq!(leader.client_write(2).await?.data, 42);
//!
//! for server in servers {
//!     server.shutdown().await;
//! }
//! for raft in &nodes {
//!     raft.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Wire format
//!
//! **Frames.** Both directions are a sequence of frames: a 4-byte big-endian payload length, then the
//! payload. A frame announcing more than [`TcpConfig::max_frame_length`] (default 64 MiB; 64 KiB
//! until the handshake has succeeded, [`wire::HANDSHAKE_MAX_FRAME_LENGTH`]) closes the connection.
//!
//! **Encoding.** Payloads are [MessagePack](https://msgpack.org) as written by `rmp-serde` with
//! named struct fields ([`wire::encode`]). The format is self-describing, so any serde command type
//! works, including internally tagged or untagged enums and `skip_serializing_if` fields, which
//! schema-less binary formats (bincode, postcard) cannot decode. A payload must be exactly one value;
//! trailing bytes are an error.
//!
//! **Handshake.** The client's first frame is `b"RAFT"`, the protocol version as a big-endian `u16`
//! (now [`wire::PROTOCOL_VERSION`] = 2; version 2 added InstallSnapshot), then a [`wire::Hello`] `{ cluster_id, from, to }`: the
//! cluster id (a string), the client's node id and the node id it expects to reach. The server
//! answers with `b"RAFT"`, its version, and a [`wire::HelloReply`]: `Accepted { node_id }`, or
//! `Refused { reason }` followed by closing the connection. It refuses another cluster id, a `to` that
//! is not its own id, and another protocol version; a first frame without the magic bytes is closed
//! without an answer. The client reports a refusal as
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
//! message or a refused handshake close that one connection with a `tracing` warning. Nothing read
//! from the wire is unwrapped; the server and the node keep running.
//!
//! ## Timeouts and reconnecting
//!
//! * **Connect:** opening the TCP connection plus the handshake must finish within
//!   [`TcpConfig::connect_timeout`] (default 1 s). The server gives a new connection the same time to
//!   send its handshake.
//! * **Request:** a request waits for its response for at most [`TcpConfig::request_timeout`]
//!   (default 5 s), then fails with `NetworkError::Timeout`. The driver bounds every call with its
//!   own `Config::rpc_timeout` (default 250 ms) too, and may drop it earlier; a late response to a
//!   dropped request is discarded.
//! * **One connection per peer,** opened by the first call to it and reused by every call after. A
//!   connection attempt runs on its own task, so a caller that gives up does not abort it; concurrent
//!   callers wait for the same attempt.
//! * **Breaks:** when a connection breaks (peer closed it, reset, bad frame), every request in flight
//!   on it fails at once with `NetworkError::Unreachable`; the next call reconnects.
//! * **Backoff:** after a failed attempt (refused, timed out, handshake refused) the next one waits
//!   [`TcpConfig::reconnect_backoff_min`] (default 50 ms), doubling after each further failure up to
//!   [`TcpConfig::reconnect_backoff_max`] (default 1 s). Calls made while waiting fail at once with
//!   `Unreachable` (the driver retries on its own schedule). A success resets the backoff.
//! * **Size:** a request that encodes to more than `max_frame_length` fails at once with
//!   `Unreachable` ("request too large: ..."), before any connection attempt and without being sent;
//!   the connection, if open, stays up. Keep raft-core's `Config::snapshot_chunk_size` well below
//!   `max_frame_length` ([`TcpConfig::check_raft_config`] checks it), or a snapshot can never reach
//!   a follower.
#![warn(missing_docs)]

mod client;
mod config;
mod server;
pub mod wire;

pub use client::TcpNetwork;
pub use config::{TcpConfig, TcpError, SNAPSHOT_CHUNK_HEADROOM};
pub use server::{serve, TcpServer};
