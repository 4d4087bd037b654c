//! Watch Raft work: a small cluster with a fixed seed, printed as a readable, time-ordered trace.
//!
//! ```sh
//! cargo run --example timeline -- election      # or split-vote, leader-crash, no-majority, log-repair
//! cargo run --example timeline -- split-vote --seed 7 --nodes 5
//! ```
//!
//! # What runs
//! Each node is the real [`raft_core::Engine`] on the reference executor,
//! [`raft_core::engine::testing::Executor`], which carries out the engine's output contract step by
//! step (persist the hard state, send the messages, store a snapshot and purge, truncate and
//! append then report `log_persisted`, release the held replies, send snapshot chunks, restore and
//! apply). Each input is handed over with the async driver's timing: the engine's clock moves to
//! the current time before the input (`advance_clock`, no timer fires), the timers then due fire
//! after it (`tick`), and the output is executed. What is simulated is everything around the
//! executors, and it is deliberately simple:
//! * a **network** that delivers every message after a delay drawn from a seeded generator (5 to 15 ms
//!   by default) and can be partitioned; a request across a partition or to a crashed node is refused
//!   (the sender hears it is unreachable, as on the mock network). Otherwise nothing is lost,
//!   duplicated or reordered on purpose (different delays alone may reorder);
//! * **storage** that is durable the moment the executor has executed the engine's output (no write
//!   latency);
//! * **crashes** that keep the durable hard state and log and lose everything else (held replies and
//!   messages in flight from or to the crashed node included), and restarts that build a new engine
//!   from the durable state, as `Raft::start` does.
//!
//! [`Sim`] is the simulator; [`run`] plays one of the [`Scenario`]s on it and returns its
//! [`Timeline`]. The split-vote measurement of `raft-core/docs/raft-by-questions.md` (question 4) runs on
//! [`Sim`] too.
//!
//! This is an engine-level simulation, not the tokio driver on [`Router`](raft_net_mock::Router): it is pure,
//! single-threaded and needs no runtime, so the same seed always prints the same trace. Client writes
//! are answered the way the driver answers them (success once applied on the leader; `OutcomeUnknown`
//! when the leader loses office first; `NotLeader` when nothing was proposed).
//!
//! # Why a vote was refused
//! The engine answers a vote request with yes or no; the reason the trace prints is the engine's
//! own, [`Engine::vote_refusal`](raft_core::Engine::vote_refusal), asked just before the request is
//! handed over. The engine decides the request with that same function, so the reasons printed are
//! the rules it applies (the simulator still checks, on every request, that the reason agrees with
//! the answer sent).
//!
//! ```
//! use raft_sim::timeline::{self, Scenario};
//! let trace = timeline::run(Scenario::Election);
//! assert_eq!(trace.leaders().len(), 1);
//! println!("{trace}");
//! ```

mod event;
mod network;
mod scenario;
mod sim;

pub use event::{AppendRefusal, Event, StepDownReason};
pub use scenario::{run, run_with, run_with_seed, Scenario, Timeline};
pub use sim::{Sim, SimOptions};
