//! # raft-kv
//!
//! A replicated hash table on [`raft_core`]: a `String -> String` map that every node of a Raft
//! cluster holds, changed only through the replicated log.
//!
//! * [`KvCommand`] — `Put`, `Get`, `Delete`, `CompareAndSwap`, and the `Session` envelope that
//!   makes a retried write apply at most once. The HTTP API reads without log entries
//!   (`Raft::read_index`, see [`http_read`]); `Get` remains for reads through the log.
//! * [`KvResponse`] — one answer per command, shaped for an HTTP API (`404` on a missing key, `409`
//!   with the current value on a compare-and-swap mismatch).
//! * [`KvStateMachine`] — the [`raft_core::StateMachine`]: a hash map, deterministic where it
//!   matters (a snapshot writes its records sorted by key, so equal states give byte-identical
//!   snapshots), snapshotted without stopping (a snapshot takes an O(1) view of the table and
//!   sorts and serializes it, in a checksummed binary format, while applying goes on), with the
//!   client sessions
//!   ([`raft_core::SessionTable`], in the snapshot), in memory (a restarted node is restored from its
//!   latest snapshot and replays the log after it), with a [`KvReader`] to look at the table
//!   locally.
//! * [`Cluster`] — several nodes in one process on `raft-storage-mem` and `raft-net-mock`: write
//!   through the leader, kill and restart nodes, wait for elections and catch-up.
//! * [`demo`] — the failover scenario behind `cargo run -p raft-kv --example failover`.
//! * The `raft-kv` binary ([`cli`]): `serve` runs one node ([`server`]: `raft-storage-file` in a
//!   data directory, `raft-net-tcp` between nodes, the HTTP/JSON API of [`http`] for clients);
//!   `cluster` starts a local cluster of `serve` processes; `get`/`put`/`delete`/`cas`/`status` are
//!   a client ([`client::KvClient`]) that follows the leader redirects.
//! * Membership changes: `serve --join` ([`join`]) adds a node to a running cluster (learner,
//!   catch-up, promotion); the admin API of [`http_members`] and the `members`, `add-learner`,
//!   `promote`, `demote`, `remove`, `set-voters` subcommands change the membership by hand.
//! * Watching a cluster: the dashboard every node serves at `GET /ui` ([`http_ui`]), fed by a
//!   [`cluster_view::ClusterView`] (every member's `/status`, asked with timeouts), which
//!   `raft-kv status --all` prints as a table ([`status_table`]).
//!
//! ## Quick start
//!
//! Three nodes in one process; write, compare-and-swap, and read back through the log:
//!
//! ```
//! use raft_kv::{Cluster, KvCommand, KvResponse};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] // virtual time: instant elections
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cluster = Cluster::start([1, 2, 3], raft_core::Config::default()).await?;
//! cluster.initialize().await?;
//!
//! let put = cluster.write(KvCommand::put("apple", "red")).await?;
//! assert_eq!(put.data, KvResponse::Put { previous: None });
//!
//! // Swap only if the value is still "red"; a mismatch returns the current value instead.
//! let cas = cluster.write(KvCommand::compare_and_swap("apple", Some("red"), "green")).await?;
//! assert_eq!(cas.data, KvResponse::CasResult { swapped: true, current: Some("green".into()) });
//! let cas = cluster.write(KvCommand::compare_and_swap("apple", Some("red"), "blue")).await?;
//! assert_eq!(cas.data, KvResponse::CasResult { swapped: false, current: Some("green".into()) });
//!
//! assert_eq!(cluster.read("apple").await?.as_deref(), Some("green"));
//! assert_eq!(cluster.read("pear").await?, None);
//!
//! // Every node applies the same log, so every node ends up with the same table.
//! let index = cas.log_id.index;
//! cluster.wait_for_applied(&[1, 2, 3], index).await?;
//! for id in [1, 2, 3] {
//!     assert_eq!(cluster.reader(id).unwrap().get("apple").as_deref(), Some("green"));
//! }
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Using the state machine with your own storage and network is the usual `raft_core` start:
//! `Raft::start(id, config, storage, network, KvStateMachine::new())`, after taking a
//! [`KvStateMachine::reader`] if you want local reads.
#![warn(missing_docs)]

pub mod cli;
pub mod client;
mod cluster;
pub mod cluster_view;
mod command;
mod command_serde;
pub mod demo;
pub mod http;
pub mod http_admin;
pub mod http_auth;
mod http_error;
pub mod http_limits;
pub mod http_members;
pub mod http_metrics;
mod http_origin;
pub mod http_read;
pub mod http_server;
pub mod http_session;
pub mod http_ui;
pub mod join;
mod kv_map;
mod launcher;
pub mod logging;
pub mod metrics;
mod read_flags;
pub mod server;
mod snapshot_binary;
mod snapshot_flags;
mod snapshot_json;
#[cfg(test)]
mod snapshot_tests;
mod state_machine;
pub mod status_table;
mod throttle;
pub mod tls_files;

pub use cluster::{Cluster, ClusterError, KvRaft};
pub use command::{KvCommand, KvResponse};
pub use state_machine::{
    AppliedCommand, KvReader, KvSessions, KvStateMachine, MAX_SESSIONS, SESSION_TTL_MS,
    SNAPSHOT_FORMAT,
};
