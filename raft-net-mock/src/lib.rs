//! # raft-net-mock
//!
//! An in-process [`RaftNetwork`](raft_core::RaftNetwork): a [`Router`] passes requests straight to the
//! target node's [`Raft`](raft_core::Raft) handle (no serialization), and can partition the cluster, isolate nodes,
//! drop, delay, duplicate and reorder messages. Every random choice comes from one seeded generator,
//! so on tokio's single-threaded runtime with paused time a run replays exactly from its seed.
//!
//! ```
//! # use raft_net_mock::{Router, Faults};
//! # fn demo<SM: raft_core::StateMachine>(router: Router<SM>) {
//! router.set_faults(Faults { drop_prob: 0.05, delay_ms: (1, 20), duplicate_prob: 0.02, reorder_prob: 0.1 });
//! router.partition(&[&[1, 2], &[3]]); // 1 and 2 talk; 3 is cut off from both
//! router.heal();
//! // Lose half of the InstallSnapshot chunks (and their answers); other messages keep the faults above.
//! router.set_snapshot_faults(Some(Faults { drop_prob: 0.5, ..Faults::default() }));
//! # }
//! ```
//!
//! All three RPCs (votes, AppendEntries, InstallSnapshot) go through the same faults: a partitioned,
//! isolated or crashed target refuses at once; a lost message leaves the sender waiting until its own
//! `rpc_timeout`. An InstallSnapshot request, once sent, arrives even if its sender has given up on it,
//! so delayed chunks really arrive after later ones (see [`MockNetwork`]); the router records the order
//! chunks reached each node ([`Router::snapshot_arrivals`]).
//!
//! The [`harness`] module builds whole simulated clusters on it: crashes and restarts, and checks of
//! Raft's five safety properties, of durability and of the linearizability of client histories.
#![warn(missing_docs)]

pub mod harness;
mod network;
mod router;
pub mod timeline;

pub use network::MockNetwork;
pub use router::{Faults, Router, RouterStats};

mod envelope;
mod faults;
mod links;
mod state;
mod stats;
mod trip;

pub use faults::UnreachableMode;
pub use stats::{RpcCounts, TargetStats};
