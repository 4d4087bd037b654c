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
//! # }
//! ```
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
