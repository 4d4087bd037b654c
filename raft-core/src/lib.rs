//! # raft-core
//!
//! The Raft consensus protocol as a pure, deterministic [`Engine`], and an async node driver
//! ([`Raft`]) that runs it over three traits you choose implementations of:
//!
//! * [`RaftStorage`]: where the hard state, log and snapshot are kept durably;
//! * [`RaftNetwork`]: how RPCs reach the other nodes;
//! * [`StateMachine`]: the application the committed log drives.
//!
//! ## Quick start
//!
//! A single-node cluster with a tiny in-test storage, network and counter state machine (real
//! programs take `raft-storage-mem` or `raft-storage-file`, and `raft-net-mock` or `raft-net-tcp`):
//!
//! ```
//! # use raft_core::*;
//! # use async_trait::async_trait;
//! # #[derive(Default)]
//! # struct Store { hs: HardState, log: Vec<Entry<u64>> }
//! # #[async_trait]
//! # impl RaftStorage<u64> for Store {
//! #   async fn hard_state(&mut self) -> Result<HardState, StorageError> { Ok(self.hs) }
//! #   async fn save_hard_state(&mut self, s: &HardState) -> Result<(), StorageError> { self.hs = *s; Ok(()) }
//! #   async fn log_state(&mut self) -> Result<LogState, StorageError> {
//! #       Ok(LogState { last_purged: LogId::default(), last_log_id: self.log.last().map(|e| e.log_id).unwrap_or_default() }) }
//! #   async fn entries(&mut self, s: LogIndex, e: LogIndex) -> Result<Vec<Entry<u64>>, StorageError> {
//! #       Ok(self.log[(s - 1) as usize..(e - 1) as usize].to_vec()) }
//! #   async fn append(&mut self, e: &[Entry<u64>]) -> Result<(), StorageError> { self.log.extend_from_slice(e); Ok(()) }
//! #   async fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> { self.log.truncate((from - 1) as usize); Ok(()) }
//! #   async fn purge(&mut self, _: LogIndex) -> Result<(), StorageError> { Ok(()) }
//! #   async fn install_snapshot(&mut self, _: Snapshot) -> Result<(), StorageError> { Ok(()) }
//! #   async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> { Ok(None) }
//! # }
//! # struct NoNetwork;
//! # #[async_trait]
//! # impl RaftNetwork<u64> for NoNetwork {
//! #   async fn append_entries(&self, target: NodeId, _: AppendEntriesRequest<u64>) -> Result<AppendEntriesResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! #   async fn vote(&self, target: NodeId, _: VoteRequest) -> Result<VoteResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! #   async fn pre_vote(&self, target: NodeId, _: PreVoteRequest) -> Result<PreVoteResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! #   async fn timeout_now(&self, target: NodeId, _: TimeoutNowRequest) -> Result<TimeoutNowResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! #   async fn install_snapshot(&self, target: NodeId, _: InstallSnapshotRequest) -> Result<InstallSnapshotResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! #   async fn read_index(&self, target: NodeId, _: ReadIndexRequest) -> Result<ReadIndexResponse, NetworkError> {
//! #       Err(NetworkError::Unreachable { target, reason: "single node".into() }) }
//! # }
//! /// A state machine that sums the numbers it is given.
//! #[derive(Default)]
//! struct Counter { total: u64 }
//!
//! #[async_trait::async_trait]
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> { Ok(None) }
//!     async fn apply(&mut self, entries: &[Entry<u64>]) -> Result<Vec<u64>, StateMachineError> {
//!         Ok(entries.iter().map(|e| {
//!             if let EntryPayload::Command(n) = e.payload { self.total += n; }
//!             self.total
//!         }).collect())
//!     }
//!     async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> { Ok(self.total.to_le_bytes().to_vec()) }
//!     async fn restore(&mut self, _: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
//!         let bytes: [u8; 8] = data.try_into().map_err(StateMachineError::new)?;
//!         self.total = u64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let raft = Raft::start(1, Config::default(), Store::default(), NoNetwork, Counter::default()).await?;
//! raft.initialize([1]).await?;
//! raft.wait_for_leader(std::time::Duration::from_secs(5)).await?;
//! assert_eq!(raft.client_write(40).await?.data, 40);
//! let write = raft.client_write(2).await?;
//! assert_eq!(write.data, 42);
//! // A linearizable read writes nothing to the log: once `read_index` returns, the state machine
//! // holds every acknowledged write.
//! assert!(raft.read_index().await? >= write.log_id.index);
//! raft.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Where things are
//! * [`engine`]: the protocol, pure and synchronous; its module docs give the executor contract.
//! * [`Raft`]: the async handle; its docs give the ordering rules the driver keeps.
//! * [`RaftStorage`], [`RaftNetwork`], [`StateMachine`]: the traits, each method's contract in its docs.
//! * `testing` (feature `testing`): the storage conformance suite.
#![warn(missing_docs)]

mod config;
pub mod engine;
mod error;
mod message;
mod network;
mod raft;
mod sessions;
#[doc = include_str!("../docs/raft-by-questions.md")]
pub mod raft_by_questions {}
mod state_machine;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use config::{Config, ReadPolicy, SnapshotPolicy};
pub use engine::{
    ElectionStats, Engine, EntrySize, MembershipChange, Output, ReadFailed, ReadId, ReadReady,
    RecoveredState, SnapshotCheck, VoteRefusal,
};
pub use error::{
    ClientWriteError, ConfigError, InitializeError, MembershipError, NetworkError, ReadError,
    StartError, StateMachineError, StoppedError, StorageError, TransferError,
};
pub use message::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, InstallSnapshotRequest,
    InstallSnapshotResponse, PreVoteRequest, PreVoteResponse, ReadIndexRequest, ReadIndexResponse,
    ReadIndexResult, Request, Response, SnapshotResult, TimeoutNowRequest, TimeoutNowResponse,
    VoteRequest, VoteResponse,
};
pub use network::RaftNetwork;
pub use raft::{ClientWriteResponse, Metrics, NodeStatus, Proposal, ProposalResult, Raft};
pub use sessions::{ClientId, SessionCheck, SessionTable};
pub use state_machine::{AppCommand, SnapshotBuild, StateMachine};
pub use storage::{slice_chunk, LogState, RaftStorage, SnapshotChunk};
pub use types::{
    Entry, EntryPayload, HardState, LogId, LogIndex, Membership, Node, NodeId, Role, Snapshot,
    SnapshotMeta, Term,
};
