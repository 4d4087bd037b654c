#![doc = include_str!("../README.md")]
//!
//! ## What is checked, and how it is observed
//!
//! Every node runs with its storage wrapped in an [`ObservedStorage`], its network in an
//! [`ObservedNetwork`], and a [`LogStateMachine`]. The harness thus sees each node's *durable* state as
//! the storage acknowledges it, every answer to an RPC, and every entry applied; a task per node
//! watches its [`Metrics`](raft_core::Metrics) (`changed().await`) and reports whenever the role is `Leader`, and the
//! clients report every write. All of it goes to one recorder (module `world`), which keeps the shared
//! record (module `record`: each node's durable state as observed, the prefix hash of every entry, the
//! committed entries, the client history) and hands each observation to one checker per property,
//! under `invariants/` (a new property is one more module there, listed in `invariants::all`). The
//! five properties of the Raft paper (figure 3):
//!
//! Each property holds across configurations: every node ever started is recorded and judged, members
//! or not (see *Membership changes* below).
//!
//! 1. **Election Safety** (at most one leader per term), `invariants::election_safety`. Sampled, from
//!    metrics: two nodes seen leading one term; metrics are a `watch`, so a leadership shorter than one
//!    batch of the driver can be missed (the harness also samples all nodes' metrics at every check).
//!    Exactly, from durable state: no node makes two different votes in one term, no two candidates
//!    hold a quorum of durable votes in one term (each counted by the configuration the candidate's
//!    durable log put in force), and no term has two leader no-op entries at different indexes.
//! 2. **Leader Append-Only**, `invariants::leader_append_only`. Exactly: a node never truncates its
//!    durable log while it is the (observed) leader of its current term, and never removes an entry of
//!    its own current term. Sampled: each time a node is seen leading term `T`, its durable log must
//!    still hold, unchanged (compared by a hash chain over the whole prefix), what it held at the
//!    previous sample in `T`.
//! 3. **Log Matching**, `invariants::log_matching`. Exactly, at every append on every node: an entry
//!    with the same index and term as one any node held before sits on an identical prefix (hash
//!    chains). And pairwise over the durable logs at every check; at the end, all logs are the same.
//! 4. **Leader Completeness**, `invariants::leader_completeness`. Each committed entry is recorded when
//!    first applied, with the highest durable term of any node at that moment (the entry was committed
//!    by a leader of at most that term). Each time a node is seen leading a higher term, its durable
//!    log must hold the entry. At the end, every node's log holds every committed entry.
//! 5. **State Machine Safety**, `invariants::state_machine_safety`. Exactly, at every apply: no two
//!    nodes or incarnations apply different entries at one index; each incarnation applies in order,
//!    once, without gaps (continuing after the snapshot it restored last) and never goes back (no
//!    restore of an older snapshot than what it applied); the entry applied is the one in the node's
//!    own durable log, and is durable on a quorum when first applied (of a configuration a leader
//!    could have counted by); the state reached is the committed prefix's. At the end, every state
//!    machine reflects exactly its node's log.
//!
//! ## Snapshots and compaction
//!
//! A node's log may be compacted (purged up to a point its durable snapshot covers) or replaced by a
//! snapshot from the leader. The record keeps, for every node, the hash of its log prefix up to the
//! compaction point (its own hash chain when it purges; the digest the snapshot carries when a
//! snapshot replaces the log, see [`AppliedState`]), so checks that compare logs stay exact for the
//! entries still there and use that hash, compared with the committed prefix's, as the evidence for
//! compacted ones: a committed entry compacted into a snapshot is still held. On top
//! (`invariants::snapshots`):
//! * every snapshot stored or restored carries the committed state up to its last entry (digest,
//!   recent commands) and the membership in force there; a snapshot that does not decode (chunks lost,
//!   duplicated or reordered into the wrong bytes) is a violation;
//! * a purge never goes past the durable snapshot, and a compacted prefix is always the committed one;
//! * storage contract: a stored snapshot is ignored when not newer than the stored one, replaces the
//!   log unless the log holds its last entry; after each purge and snapshot the storage's log state and
//!   snapshot id are read back and compared; each snapshot chunk read is the right slice of the
//!   acknowledged snapshot.
//!
//! ## Durability and linearizability
//!
//! `invariants::durability`: ordering rules 1 and 2 of the driver (a granted vote, the entries a
//! follower acknowledges, and the last entry of a snapshot it answers `Installed` for, are durable by
//! the time the answer arrives), no committed entry is ever truncated, a reopened storage holds
//! exactly what it had acknowledged (snapshot included), and every acknowledged write is in every
//! node's final log at its acknowledged index. A node whose disk lost the tail of its log (below) is
//! allowed to lack those entries, and the answers it gave before the loss are not held against it;
//! the cluster must still never lose a committed entry.
//!
//! `invariants::linearizability`: the client history (see [`Op`] and [`ReadOp`]; recorded in the
//! `history` module) is linearizable for the harness's append-only model, described in the checker's
//! module: unique values, acknowledged indexes, real-time order, at most once for unknown outcomes,
//! never for writes refused with `NotLeader`. Reads without a log entry ([`Client::read_on`]:
//! `Raft::read_index` or `Raft::read_lease`, on the leader or a follower) are recorded with the
//! state the node's state machine held when the call returned, and placed in that order: after the
//! committed writes they saw, before the others, never seeing less than a read that completed
//! before them. A failed read read nothing and is not judged.
//!
//! Violations are recorded as they are seen (observers run inside the nodes' tasks, where a panic would
//! be lost) and reported by [`Cluster::check_safety`] / [`Cluster::assert_safe`] and the final checks.
//! A failure message carries the seed and the command that replays it. To follow a failing run, set
//! `HARNESS_TRACE=1` (module `trace`): every observation (hard states, appends, truncations, applies,
//! leaders, vote answers, rejected AppendEntries, crashes) is printed with its virtual time.
//!
//! ## Crashes
//! [`Cluster::crash`] cuts the node's "power": from that moment its storage refuses every call (nothing
//! more becomes durable), its network sends nothing, it is unregistered from the router (nothing
//! reaches it), and it is shut down. Its durable storage stays with the storage factory.
//! [`Cluster::restart`] reopens the storage through the factory (checking that it holds exactly what it
//! had acknowledged), gives the node a new, empty [`LogStateMachine`] (a new incarnation; the node
//! restores it from its snapshot, if any, and replays the log after it), starts it and registers it
//! again.
//!
//! ## Disk faults
//! [`Cluster::restart_with_lost_tail`] restarts a crashed node as if its disk had lost the last
//! entries of its log (writes it had acknowledged; never below its snapshot), and its storage reports
//! the loss ([`lost_entries_on_open`](raft_core::RaftStorage::lost_entries_on_open)), as a storage
//! that cut a damaged end of its log does: the node then neither votes nor campaigns until it has
//! caught up with a leader. The record keeps what each node lost (the durability checker allows for
//! it, see above). Until the node is back in step
//! ([`Cluster::recovering_from_disk_faults`]), it reports the loss again at every restart (unless
//! [`ClusterOptions::disk_loss_until_caught_up`] is off), and a schedule should not make a second
//! disk lose anything: losing the last copy of a committed entry is reported as the schedule's fault.
//!
//! ## Membership changes
//! A node can start empty, not initialized ([`Cluster::start_new_node`], or
//! [`Cluster::add_learner`], which starts it): the router admits it at once, and it waits, neither
//! campaigning nor voting, until a change makes it a member. Changes go through the leader
//! ([`Cluster::change_membership`] and the shorthands `add_learner`, `promote`, `demote`,
//! `remove_node`, `replace`); each acknowledged one is recorded. A removed node keeps running until
//! [`Cluster::retire`]d: retired nodes keep their record (votes, leaderships, logs: Election Safety
//! and Log Matching still judge them) but the end-of-run checks, which compare the logs of the
//! cluster as it ends, leave them out. [`Cluster::wait_membership_settled`] is the liveness check:
//! a leader whose membership is committed and not joint, in force and committed on every member, and
//! every acknowledged change a committed membership entry, in order, at or before it.
//!
//! Wherever a check counts a quorum (commitment, the durable-vote tally) it uses the configurations
//! in force at the relevant index and the harness's own rule (module `quorum`: majorities of both
//! configurations while joint), never `raft_core::Membership`'s, so a fault in the engine's rule
//! cannot hide from the check that judges it.
#![warn(missing_docs)]

mod append_faults;
mod applied_state;
mod chain;
mod cluster;
mod history;
mod invariant;
mod invariants;
mod node_model;
mod observe;
mod quorum;
mod record;
mod state_machine;
mod stats;
#[cfg(test)]
mod testing;
pub mod timeline;
mod trace;
mod values;
mod world;

pub use append_faults::{AppendFaultStats, OldTermMajority};
pub use applied_state::{AppliedState, RECENT_COMMANDS};
pub use cluster::{Client, Cluster, ClusterOptions, SnapshotTraffic, Violation, WriteError};
pub use history::{History, Op, Outcome, ReadKind, ReadOp, ReadOutcome, ReadValue};
pub use invariants::check_history;
pub use observe::{ObservedNetwork, ObservedStorage};
pub use state_machine::LogStateMachine;
pub use stats::HarnessStats;
