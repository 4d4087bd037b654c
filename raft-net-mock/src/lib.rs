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
//! All three RPCs (votes, AppendEntries, InstallSnapshot) go through the same faults. A partitioned,
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
//!
//! Whole simulated clusters on it (crashes and restarts, checks of Raft's five safety properties, of
//! durability and of the linearizability of client histories) are the `raft-sim` crate's.
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
