#![doc = include_str!("../README.md")]
//!
//! ## Faults
//!
//! Every RPC (votes, pre-votes, TimeoutNow, AppendEntries, InstallSnapshot, ReadIndex) goes through
//! the same faults. A partitioned,
//! isolated, disconnected or crashed target refuses at once by default, like a refused connection;
//! with [`UnreachableMode::Hang`] the request instead gets no answer for a random while, like a packet
//! into a dead network. A lost message leaves the sender waiting until its own `rpc_timeout`. An InstallSnapshot request, once sent, arrives even if its sender has given up on it,
//! so delayed chunks really arrive after later ones (see [`MockNetwork`]); the router records the order
//! chunks reached each node ([`Router::snapshot_arrivals`]).
//!
//! For suites ported from classic Raft labs: [`Router::disconnect`] / [`Router::connect`] cut one
//! node off and back (independently of partitions), [`Router::set_reply_delay`] holds back only the
//! answers (long reordering), and [`Router::stats_for`] counts RPCs per target and kind, with the
//! entries and snapshot bytes sent.
#![warn(missing_docs)]

mod envelope;
mod faults;
mod links;
mod network;
mod router;
mod state;
mod stats;
mod trip;

pub use faults::{Faults, UnreachableMode};
pub use network::MockNetwork;
pub use router::Router;
pub use stats::{RouterStats, RpcCounts, TargetStats};
