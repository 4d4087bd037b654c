#![doc = include_str!("../README.md")]
//!
//! ## Where things are
//! * [`engine`]: the protocol, pure and synchronous; its module docs give the executor contract.
//! * [`Raft`]: the async handle; its docs give the ordering rules the driver keeps.
//! * [`RaftStorage`], [`RaftNetwork`], [`StateMachine`]: the traits, each method's contract in its docs.
//! * `testing` (feature `testing`): the storage conformance suite.
//! * [`raft_by_questions`]: Raft's classic questions, answered from this code and its tests.
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
pub use raft::{
    ClientWriteResponse, LatencyHistogram, LatencyStats, Metrics, NodeStatus, Proposal,
    ProposalResult, ProposalStats, Raft, SnapshotStats, LATENCY_BOUNDS_US,
};
pub use sessions::{ClientId, SessionCheck, SessionTable};
pub use state_machine::{AppCommand, SnapshotBuild, StateMachine};
pub use storage::{slice_chunk, LogState, RaftStorage, SnapshotChunk};
pub use types::{
    Entry, EntryPayload, HardState, LogId, LogIndex, Membership, Node, NodeId, Role, Snapshot,
    SnapshotMeta, Term,
};
