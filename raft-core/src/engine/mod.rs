//! The Raft protocol as a pure, deterministic state machine.
//!
//! [`Engine`] has no I/O, no clock, no tasks and no global randomness: it is driven by method calls
//! (time passing, messages arriving, proposals, acknowledgements of durable writes) and answers with
//! [`Output`] describing what must be done (persist, send, apply). The same inputs give the same
//! outputs, so the protocol is tested by asserting on outputs, and the async driver
//! ([`Raft`](crate::Raft)) only executes them.
//!
//! # Contract with the executor
//! The executor (the async driver, or a test) must, for each [`Output`] taken with
//! [`Engine::take_output`], in this order:
//! 1. persist `hard_state` if set;
//! 2. send `messages` (they may leave before step 3: a leader may replicate entries before its own
//!    copy is durable, thesis 10.2.1, and nothing a peer decides from them needs our log durable);
//! 3. store `snapshot` if set (a snapshot the state machine built, or one received from the leader,
//!    which discards the log), then purge the log up to `purge_upto` if set;
//! 4. truncate the log at `truncate_from` if set, then append `append`, and report the last appended
//!    id with [`Engine::log_persisted`];
//! 5. only then send the replies that the request handlers ([`Engine::handle_append_entries`],
//!    [`Engine::handle_vote_request`], [`Engine::handle_pre_vote_request`],
//!    [`Engine::handle_timeout_now`], [`Engine::handle_install_snapshot`]) returned while producing
//!    this output;
//! 6. send the snapshot chunks `snapshot_sends` asks for (read from storage, which now holds the
//!    snapshot they name), reporting a chunk storage cannot give with [`Engine::snapshot_send_failed`];
//! 7. if `restore_snapshot`, replace the state machine's state with `snapshot`'s; then apply `apply`,
//!    in order.
//!
//! `engine::testing::Executor` (compiled with the `testing` feature) carries out these steps
//! synchronously on an in-memory store: the reference the engine's tests run on, and the one a
//! simulation builds on.

mod election;
mod log;
mod membership;
mod progress;
mod read;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};

pub use election::VoteRefusal;
pub use membership::MembershipChange;
pub use progress::{Progress, ReplicationState, SnapshotTransfer};
pub use read::{ReadFailed, ReadId, ReadReady};
pub use transfer::ElectionStats;

use crate::config::Config;
use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, InstallSnapshotRequest,
    InstallSnapshotResponse, Request, SnapshotResult,
};
use crate::types::{
    Entry, EntryPayload, HardState, LogId, LogIndex, Membership, NodeId, Role, Snapshot,
    SnapshotMeta, Term,
};
use log::MemLog;

/// What the engine needs from storage when it starts.
#[derive(Clone, Debug, Default)]
pub struct RecoveredState<C> {
    /// The saved hard state.
    pub hard_state: HardState,
    /// The id of the last entry before `entries` (compacted or covered by a snapshot).
    pub log_base: LogId,
    /// The stored snapshot's metadata, if there is one; its index is at or after `log_base`. Its
    /// membership is the one in force when the log holds no membership entry.
    pub snapshot: Option<SnapshotMeta>,
    /// Every log entry after `log_base`, in order.
    pub entries: Vec<Entry<C>>,
    /// The last index the state machine already holds (entries up to it are not applied again).
    pub applied_index: LogIndex,
    /// Storage cut entries it may have acknowledged when it opened (see
    /// [`RaftStorage::lost_entries_on_open`](crate::RaftStorage::lost_entries_on_open)): the node
    /// neither votes nor campaigns until its log holds its leader's commit index.
    pub lost_entries: bool,
}

impl<C> RecoveredState<C> {
    /// Checks that the pieces read from storage and the state machine fit together: the snapshot at
    /// or after the log's base, the entries consecutive after the base, and the state machine holding
    /// nothing the log and snapshot do not. An executor refuses to start on an error (it names what
    /// is inconsistent) rather than let the engine paper over it.
    ///
    /// # Errors
    /// What does not fit, in words.
    pub fn check(&self) -> Result<(), String> {
        let base = self.log_base;
        if let Some(snapshot) = &self.snapshot {
            if snapshot.last_log_id.index < base.index {
                return Err(format!(
                    "the log is purged up to {base} but the snapshot covers only up to {}",
                    snapshot.last_log_id
                ));
            }
        } else if base.index > 0 {
            return Err(format!(
                "the log is purged up to {base} but there is no snapshot"
            ));
        }
        let mut expected = base.index;
        for entry in &self.entries {
            expected += 1;
            if entry.log_id.index != expected {
                return Err(format!(
                    "the log has entry {} where index {expected} belongs",
                    entry.log_id
                ));
            }
        }
        let last = self.entries.last().map_or(base.index, |e| e.log_id.index);
        let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.last_log_id.index);
        if let Some(snapshot) = &self.snapshot {
            if last < snapshot_index {
                return Err(format!(
                    "the log ends at index {last}, below the snapshot at {}: a storage must discard \
                     a log its snapshot covers (as when it installs a snapshot from the leader)",
                    snapshot.last_log_id
                ));
            }
        }
        if self.applied_index > last.max(snapshot_index) {
            return Err(format!(
                "the state machine holds entries up to index {} but the log ends at {last}",
                self.applied_index
            ));
        }
        Ok(())
    }
}

/// What the executor must do after feeding the engine. See the [module docs](self) for the order.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<C> {
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Delete stored entries at this index and after, before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append to storage, in order.
    pub append: Vec<Entry<C>>,
    /// Requests to send: `(target, request)`.
    pub messages: Vec<(NodeId, Request<C>)>,
    /// Committed entries to apply, in order; each entry is handed out exactly once.
    pub apply: Vec<Entry<C>>,
    /// A snapshot to store (with [`RaftStorage::install_snapshot`](crate::RaftStorage)).
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` came from the leader: the state machine must be restored from it, before
    /// `apply`. (A snapshot the state machine built itself needs no restore.)
    pub restore_snapshot: bool,
    /// Purge the log up to and including this index (after storing `snapshot`).
    pub purge_upto: Option<LogIndex>,
    /// Snapshot chunks to read from storage and send.
    pub snapshot_sends: Vec<SnapshotSend>,
    /// Reads confirmed (or served on the lease): each may be served once the state machine has
    /// applied up to its index. Independent of the steps above.
    pub reads: Vec<ReadReady>,
    /// Reads that will never be confirmed: this node stopped leading. Nothing was read.
    pub reads_failed: Vec<ReadFailed>,
}

/// A snapshot chunk the executor must read from storage and send as an
/// [`InstallSnapshotRequest`] (with `data` the chunk, `done` whether it ends the snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSend {
    /// The follower.
    pub to: NodeId,
    /// The leader's term.
    pub term: Term,
    /// This node.
    pub leader_id: NodeId,
    /// The snapshot (its last log id names it in storage).
    pub meta: SnapshotMeta,
    /// Where in the snapshot's data the chunk starts.
    pub offset: u64,
}

impl SnapshotSend {
    /// The request carrying `data`, the chunk read at `offset`.
    pub fn request(&self, data: Vec<u8>, done: bool) -> InstallSnapshotRequest {
        InstallSnapshotRequest {
            term: self.term,
            leader_id: self.leader_id,
            meta: self.meta.clone(),
            offset: self.offset,
            data,
            done,
        }
    }
}

impl<C> Default for Output<C> {
    fn default() -> Self {
        Output {
            hard_state: None,
            truncate_from: None,
            append: Vec::new(),
            messages: Vec::new(),
            apply: Vec::new(),
            snapshot: None,
            restore_snapshot: false,
            purge_upto: None,
            snapshot_sends: Vec::new(),
            reads: Vec::new(),
            reads_failed: Vec::new(),
        }
    }
}

impl<C> Output<C> {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.truncate_from.is_none()
            && self.append.is_empty()
            && self.messages.is_empty()
            && self.apply.is_empty()
            && self.snapshot.is_none()
            && self.purge_upto.is_none()
            && self.snapshot_sends.is_empty()
            && self.reads.is_empty()
            && self.reads_failed.is_empty()
    }
}

/// Checks a snapshot received from the leader before it is installed: `Err` (with the reason) refuses
/// it. The driver passes the state machine's [`check_snapshot`](crate::StateMachine::check_snapshot).
pub type SnapshotCheck = fn(&SnapshotMeta, &[u8]) -> Result<(), String>;

/// Estimates the encoded size in bytes of a command (see [`Engine::set_entry_size`]).
pub type EntrySize<C> = fn(&C) -> usize;

/// What an entry adds to an AppendEntries besides its command: its log id and encoding overhead.
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The estimated encoded size of one entry: its command's by `size`, a membership's by its
/// members and addresses, plus [`ENTRY_OVERHEAD_BYTES`].
fn entry_bytes<C>(entry: &Entry<C>, size: EntrySize<C>) -> usize {
    ENTRY_OVERHEAD_BYTES.saturating_add(match &*entry.payload {
        EntryPayload::Command(c) => size(c),
        EntryPayload::Membership(m) => m
            .nodes
            .values()
            .map(|n| n.addr.len().saturating_add(n.data.len()))
            .fold(m.members().len().saturating_mul(16), usize::saturating_add),
        EntryPayload::Blank => 0,
    })
}

/// The longest prefix of `entries` whose estimated size stays within `budget` bytes; never empty
/// when `entries` is not (an entry larger than the budget travels alone).
fn within_budget<C>(entries: &[Entry<C>], size: EntrySize<C>, budget: usize) -> &[Entry<C>] {
    let mut total: usize = 0;
    for (i, entry) in entries.iter().enumerate() {
        total = total.saturating_add(entry_bytes(entry, size));
        if total > budget && i > 0 {
            return &entries[..i];
        }
    }
    entries
}

/// A snapshot being received from the leader, chunk by chunk.
#[derive(Debug)]
struct IncomingSnapshot {
    /// The term of the leader sending it: a new leader's transfer replaces it.
    term: Term,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A proposal was refused because this node is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader this node knows of, if any.
    pub leader_hint: Option<NodeId>,
}

/// The protocol of one node. See the [module docs](self).
#[derive(Debug)]
pub struct Engine<C> {
    id: NodeId,
    election_timeout_ms: (u64, u64),
    heartbeat_ms: u64,
    max_entries_per_append: usize,
    max_append_bytes: usize,
    /// Estimates a command's encoded size, for `max_append_bytes`.
    entry_size: EntrySize<C>,
    max_in_flight: usize,
    snapshot_keep_entries: u64,
    /// Whether a leader steps down when no majority answered for a whole election timeout.
    check_quorum: bool,
    /// Whether an election timeout starts a pre-vote round rather than an election.
    pre_vote: bool,
    /// How far behind a learner may be and still be promoted.
    max_learner_lag: u64,
    /// How long after a confirmed round's start a lease read may be served; 0 without leases.
    lease_ms: u64,
    /// Engine time at which this engine was created: with leases, it refuses votes for a minimum
    /// election timeout from then (it does not remember whom it heard from before a restart).
    started_ms: u64,
    rng: fastrand::Rng,

    now: u64,
    election_deadline: u64,
    heartbeat_deadline: u64,
    quorum_check_deadline: u64,

    hard_state: HardState,
    hard_state_dirty: bool,
    role: Role,
    leader: Option<NodeId>,
    /// When this node last heard from `leader` (an AppendEntries or a snapshot chunk of its term).
    leader_seen_ms: Option<u64>,
    /// The leadership transfer in progress, on a leader.
    transfer: Option<transfer::Transfer>,
    /// Elections, pre-vote rounds and transfers so far.
    stats: ElectionStats,

    log: MemLog<C>,
    /// The effective membership: the latest one in the log, else the base one.
    membership: Membership,
    /// The index of the entry that set `membership` (the base index if it came from the snapshot).
    membership_index: LogIndex,
    base_membership: Membership,
    /// The latest snapshot in storage (default id if none).
    snapshot: SnapshotMeta,
    /// A snapshot being received from the leader.
    incoming: Option<IncomingSnapshot>,
    /// Checks a received snapshot before it is installed.
    snapshot_check: SnapshotCheck,
    commit_index: LogIndex,
    /// The last index handed out in `Output::apply`.
    apply_dispatched: LogIndex,
    /// The last index known durable in local storage.
    durable_index: LogIndex,
    /// The last index storage holds once the outputs handed out so far are executed.
    submitted_index: LogIndex,

    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    /// The leader's reads and confirmation rounds.
    reads: read::Reads,
    /// Followers with something new to send, replicated on `take_output` (so a batch of proposals
    /// becomes one AppendEntries per follower).
    replicate_pending: BTreeSet<NodeId>,
    /// How many times, as leader, this node found a follower missing entries it had acknowledged.
    followers_repaired: u64,
    /// This node lost entries it may have acknowledged and has not yet caught up to its leader's
    /// commit index: it neither votes nor campaigns.
    catching_up: bool,

    out: Output<C>,
}

impl<C: Clone> Engine<C> {
    /// Creates the engine of node `id` from its recovered state, at engine time `now_ms`.
    ///
    /// `config` should have passed [`Config::validate`]; the engine does not re-check it.
    pub fn new(id: NodeId, config: &Config, state: RecoveredState<C>, now_ms: u64) -> Self {
        let seed = election_seed(config.seed, id);
        let snapshot = state.snapshot.unwrap_or_default();
        let base_membership = snapshot.membership.clone();
        let log = MemLog::new(state.log_base, state.entries);
        let last = log.last_index();
        let applied = state.applied_index.min(last).max(state.log_base.index);
        let mut engine = Engine {
            id,
            election_timeout_ms: config.election_timeout_range_ms(),
            heartbeat_ms: config.heartbeat_ms(),
            max_entries_per_append: config.max_entries_per_append,
            max_append_bytes: config.max_append_bytes,
            entry_size: |command| std::mem::size_of_val(command),
            max_in_flight: config.max_in_flight,
            snapshot_keep_entries: config.snapshot_keep_entries,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            max_learner_lag: config.max_learner_lag,
            lease_ms: config.lease_ms(),
            started_ms: now_ms,
            rng: fastrand::Rng::with_seed(seed),
            now: now_ms,
            election_deadline: 0,
            heartbeat_deadline: u64::MAX,
            quorum_check_deadline: u64::MAX,
            hard_state: state.hard_state,
            hard_state_dirty: false,
            role: Role::Follower,
            leader: None,
            leader_seen_ms: None,
            transfer: None,
            stats: ElectionStats::default(),
            log,
            membership: Membership::default(),
            membership_index: 0,
            base_membership,
            snapshot,
            incoming: None,
            snapshot_check: |_, _| Ok(()),
            commit_index: applied,
            apply_dispatched: applied,
            durable_index: last,
            submitted_index: last,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            reads: read::Reads::default(),
            replicate_pending: BTreeSet::new(),
            followers_repaired: 0,
            catching_up: state.lost_entries,
            out: Output::default(),
        };
        engine.refresh_membership();
        engine.reset_election_timer();
        engine
    }

    /// Sets how a command's encoded size is estimated, to fill each AppendEntries up to
    /// `Config::max_append_bytes` (by default: its in-memory size). The driver passes the state
    /// machine's [`command_size`](crate::StateMachine::command_size).
    pub fn set_entry_size(&mut self, size: EntrySize<C>) {
        self.entry_size = size;
    }

    /// Sets the check a snapshot received from the leader must pass before it is installed (by
    /// default every snapshot passes).
    pub fn set_snapshot_check(&mut self, check: SnapshotCheck) {
        self.snapshot_check = check;
    }

    // ----- accessors -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The current term.
    pub fn term(&self) -> Term {
        self.hard_state.term
    }
    /// The current hard state (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }
    /// The leader this node knows of in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    /// The id of the last entry in the log (possibly not yet durable).
    pub fn last_log_id(&self) -> LogId {
        self.log.last_log_id()
    }
    /// The effective membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// The index of the log entry that set the effective membership (the snapshot's index if it
    /// came from the snapshot): the membership is committed once the commit index reaches it.
    pub fn membership_index(&self) -> LogIndex {
        self.membership_index
    }
    /// The entry at `index`, if the in-memory log holds it.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        self.log.get(index)
    }
    /// Every entry in the in-memory log (after the compaction point), in order.
    pub fn entries(&self) -> &[Entry<C>] {
        self.log.entries()
    }
    /// The latest snapshot's metadata (the default if there is none).
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }
    /// The estimated encoded size in bytes of the entries in `from..=to` that the in-memory log
    /// holds (by the same estimate as `Config::max_append_bytes`); compacted entries and entries
    /// past the log's end count nothing. Saturates rather than overflow.
    pub fn log_bytes(&self, from: LogIndex, to: LogIndex) -> u64 {
        self.log.slice(from, to).iter().fold(0u64, |total, entry| {
            let bytes = u64::try_from(entry_bytes(entry, self.entry_size)).unwrap_or(u64::MAX);
            total.saturating_add(bytes)
        })
    }
    /// The membership in force at `index` (at or after the log's base), as this node's log says.
    pub fn membership_at(&self, index: LogIndex) -> Membership {
        // No membership entry follows the latest one: from its index on, it is in force. (The
        // common case, a snapshot or a compaction point past the last change, then costs no walk
        // over the log's entries.)
        if index >= self.membership_index {
            return self.membership.clone();
        }
        self.log
            .slice(self.log.base_index() + 1, index)
            .iter()
            .rev()
            .find_map(|e| match &*e.payload {
                EntryPayload::Membership(m) => Some(Membership::clone(m)),
                _ => None,
            })
            .unwrap_or_else(|| self.base_membership.clone())
    }
    /// The leader's view of each follower; empty unless leader.
    pub fn progress(&self) -> &BTreeMap<NodeId, Progress> {
        &self.progress
    }
    /// The engine time (ms) at which [`tick`](Self::tick) next has something to do.
    pub fn next_deadline(&self) -> u64 {
        match self.role {
            Role::Leader => self
                .heartbeat_deadline
                .min(self.quorum_check_deadline)
                .min(self.transfer.map_or(u64::MAX, |t| t.deadline)),
            _ => self.election_deadline,
        }
    }
    /// The current engine time (ms).
    pub fn now(&self) -> u64 {
        self.now
    }
    /// Whether this node lost entries it may have acknowledged and has not caught up yet (it neither
    /// votes nor campaigns meanwhile).
    pub fn catching_up(&self) -> bool {
        self.catching_up
    }
    /// How many times, as leader, this node found that a follower's log had lost entries the follower
    /// had acknowledged (its disk lost them, or it was restored from an old copy), and replicated them
    /// again. Each is logged as an error: acknowledged entries should never disappear.
    pub fn followers_repaired(&self) -> u64 {
        self.followers_repaired
    }

    // ----- inputs -----

    /// Bootstraps a new cluster: writes the initial membership as the first log entry (index 1,
    /// term 0). Every node given the same membership writes the same entry, so calling it on several
    /// nodes of a new cluster is safe; calling it on one is enough.
    ///
    /// # Errors
    /// If the node already has a log or a term, or `membership` does not contain this node.
    pub fn initialize(&mut self, membership: Membership) -> Result<(), crate::InitializeError> {
        if self.log.last_log_id() != LogId::default() || self.hard_state.term != 0 {
            return Err(crate::InitializeError::AlreadyInitialized);
        }
        membership
            .check()
            .map_err(crate::InitializeError::InvalidMembership)?;
        if membership.is_joint() || !membership.voters.contains(&self.id) {
            return Err(crate::InitializeError::InvalidMembership(format!(
                "node {} is not among the voters {:?} (or the membership is joint)",
                self.id, membership.voters
            )));
        }
        let entry = Entry {
            log_id: LogId::new(0, 1),
            payload: EntryPayload::Membership(Box::new(membership)).into(),
        };
        self.append_local(entry);
        self.reset_election_timer();
        Ok(())
    }

    /// Advances engine time to `now_ms` (never backwards) without firing anything. An executor calls
    /// it before every input, so that what the input does is timed from now: a leader's AppendEntries
    /// resets the election timer from now, and a step-down on a higher term starts the new election
    /// timeout from now rather than from the last tick. Deadlines that passed fire at the next
    /// [`tick`](Self::tick), after the input: a message already received is handled before a timer
    /// that expired while it waited.
    pub fn advance_clock(&mut self, now_ms: u64) {
        self.now = self.now.max(now_ms);
    }

    /// Advances engine time to `now_ms` (never backwards) and fires what is due: a pre-vote round or
    /// an election, a heartbeat, the leader's check that a majority still answers, the end of a
    /// leadership transfer that did not complete.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        match self.role {
            Role::Leader => {
                self.check_transfer_deadline();
                if self.now >= self.quorum_check_deadline {
                    self.check_quorum();
                }
                if self.role == Role::Leader && self.now >= self.heartbeat_deadline {
                    self.heartbeat_deadline = self.now + self.heartbeat_ms;
                    // Every heartbeat is a confirmation round: it keeps the lease fresh.
                    self.start_round();
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.election_timeout();
                }
            }
        }
    }

    /// Handles an AppendEntries and returns the reply. A success reply may be sent only after the
    /// output taken next is persisted (it acknowledges entries that output appends).
    pub fn handle_append_entries(&mut self, req: AppendEntriesRequest<C>) -> AppendEntriesResponse {
        let round = req.round;
        let mut resp = self.append_entries(req);
        resp.round = round;
        resp
    }

    fn append_entries(&mut self, req: AppendEntriesRequest<C>) -> AppendEntriesResponse {
        if req.term < self.hard_state.term {
            return self.append_reply(AppendResult::StaleTerm);
        }
        if let Err(reason) = validate::append_request(&req) {
            tracing::error!(leader = req.leader_id, %reason, "malformed AppendEntries refused");
            return self.append_reply(AppendResult::Invalid);
        }
        if req.term > self.hard_state.term || self.role != Role::Follower {
            self.become_follower(req.term, Some(req.leader_id));
        }
        self.heard_from_leader(req.leader_id);

        let mut prev = req.prev_log_id;
        let mut entries = req.entries;
        let base = self.log.base_index();
        if prev.index < base {
            // Everything up to the base is committed and already here: skip what the request repeats.
            let covered = base - prev.index;
            if covered >= entries.len() as u64 {
                let match_index = prev.index + entries.len() as u64;
                return self.append_reply(AppendResult::Success { match_index });
            }
            entries.drain(..covered as usize);
            prev = self.log_base_id();
        }
        match self.log.term_at(prev.index) {
            None => {
                return self.append_reply(AppendResult::Conflict {
                    rejected_index: req.prev_log_id.index,
                    conflict_term: None,
                    conflict_index: self.log.last_index() + 1,
                });
            }
            Some(t) if t != prev.term => {
                return self.append_reply(AppendResult::Conflict {
                    rejected_index: req.prev_log_id.index,
                    conflict_term: Some(t),
                    conflict_index: self.log.first_index_of_term_run(prev.index, t),
                });
            }
            Some(_) => {}
        }

        let match_index = prev.index + entries.len() as u64;
        let mut new_from = None;
        for (i, entry) in entries.iter().enumerate() {
            match self.log.term_at(entry.log_id.index) {
                Some(t) if t == entry.log_id.term => continue,
                Some(_) => {
                    if entry.log_id.index <= self.commit_index {
                        tracing::error!(
                            index = entry.log_id.index,
                            commit = self.commit_index,
                            "leader sent an entry conflicting with a committed one; ignoring request"
                        );
                        return self.append_reply(AppendResult::Invalid);
                    }
                    self.truncate_local(entry.log_id.index);
                    new_from = Some(i);
                    break;
                }
                None => {
                    new_from = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = new_from {
            for entry in entries.into_iter().skip(i) {
                self.append_local(entry);
            }
        }

        let new_commit = req.leader_commit.min(match_index);
        if new_commit > self.commit_index {
            self.commit_index = new_commit;
        }
        // The leader's commit index covers every committed entry only once it has committed an
        // entry of its own term (a new leader's may still be behind: it is not persisted), so only
        // then does holding it prove this node holds everything it may have helped commit.
        if self.catching_up
            && self.commit_index >= req.leader_commit
            && self.log.term_at(req.leader_commit) == Some(req.term)
        {
            self.catching_up = false;
            tracing::info!(
                commit = self.commit_index,
                "caught up to the leader's commit index: voting again"
            );
        }
        self.append_reply(AppendResult::Success { match_index })
    }

    /// Handles the answer to an AppendEntries this node sent.
    pub fn handle_append_entries_response(&mut self, from: NodeId, resp: AppendEntriesResponse) {
        if let Err(reason) = validate::append_response(&resp) {
            tracing::error!(from, %reason, "malformed AppendEntries answer ignored");
            return;
        }
        if !self.take_answer(from, resp.term) {
            return;
        }
        self.round_answered(from, resp.round);
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if pr.state == ReplicationState::Snapshot {
            // Only the heartbeats of a transfer are answered here; the transfer decides.
            return;
        }
        match resp.result {
            AppendResult::StaleTerm => {}
            AppendResult::Invalid => {
                tracing::error!(from, "follower refused our AppendEntries as malformed");
            }
            AppendResult::Success { match_index } => {
                if match_index > last_index {
                    tracing::warn!(
                        from,
                        match_index,
                        last_index,
                        "follower claims a match past our log; ignoring"
                    );
                    return;
                }
                let advanced = pr.on_success(match_index);
                if pr.state == ReplicationState::Probe
                    && pr.match_index >= pr.next_index.saturating_sub(1)
                {
                    pr.become_replicate();
                } else if pr.state == ReplicationState::Probe {
                    pr.probe_sent = false;
                }
                if pr.next_index <= last_index || pr.state == ReplicationState::Probe {
                    self.replicate_pending.insert(from);
                }
                if advanced {
                    self.maybe_commit();
                    self.maybe_send_timeout_now();
                }
            }
            AppendResult::Conflict {
                rejected_index,
                conflict_term,
                conflict_index,
            } => {
                // The follower's log ends before `conflict_index`, or differs from ours there.
                let holds_below_match = conflict_index <= pr.match_index;
                let lost = match pr.state {
                    // The answer to the current probe, or to a heartbeat anchored at the match
                    // index sent with nothing else in flight: fresh, so the follower really lacks
                    // entries it acknowledged.
                    ReplicationState::Probe => {
                        rejected_index + 1 == pr.next_index && rejected_index <= pr.match_index
                    }
                    ReplicationState::Replicate => {
                        rejected_index == pr.match_index && pr.in_flight.is_empty()
                    }
                    ReplicationState::Snapshot => false,
                } && holds_below_match;
                if lost {
                    tracing::error!(
                        follower = from,
                        match_index = pr.match_index,
                        follower_next = conflict_index,
                        "follower lost entries it had acknowledged; replicating them again"
                    );
                    self.followers_repaired = self.followers_repaired.saturating_add(1);
                    pr.become_probe();
                    pr.match_index = 0;
                    pr.next_index = conflict_index.clamp(1, pr.next_index.max(1));
                    self.replicate_pending.insert(from);
                    return;
                }
                if pr.state == ReplicationState::Replicate && rejected_index == pr.match_index {
                    // Anchored at the match index with requests in flight: a late answer to a
                    // request sent before the follower held that entry, or a follower that lost it
                    // (and answers every request the same way from now on, in flight ones
                    // included: waiting for them to succeed would wait forever). A probe anchored
                    // at the match index tells which; the match index itself stays.
                    let match_index = pr.match_index;
                    pr.become_probe();
                    pr.next_index = match_index + 1;
                    self.replicate_pending.insert(from);
                    return;
                }
                let stale = match pr.state {
                    ReplicationState::Replicate => rejected_index <= pr.match_index,
                    ReplicationState::Probe => rejected_index + 1 != pr.next_index,
                    ReplicationState::Snapshot => true,
                };
                if stale {
                    return;
                }
                let hinted = match conflict_term {
                    Some(t) => match self.log.last_index_of_term(t) {
                        Some(i) => i + 1,
                        None => conflict_index,
                    },
                    None => conflict_index,
                };
                let match_index = pr.match_index;
                pr.become_probe();
                pr.next_index = hinted.min(rejected_index).max(match_index + 1);
                self.replicate_pending.insert(from);
            }
        }
    }

    /// The common start of handling a follower's answer of `term` to a replication request: a higher
    /// term makes this node step down; an answer this node's current leadership asked for is recorded
    /// as contact with `from` (for check-quorum). Returns whether to go on handling it.
    fn take_answer(&mut self, from: NodeId, term: Term) -> bool {
        if term > self.hard_state.term {
            self.become_follower(term, None);
            return false;
        }
        if self.role != Role::Leader || term < self.hard_state.term {
            return false;
        }
        let now = self.now;
        match self.progress.get_mut(&from) {
            Some(pr) => {
                pr.last_ack_ms = now;
                true
            }
            None => false,
        }
    }

    /// Reports that an RPC to `to` got no answer (unreachable, timed out). A leader stops pipelining to
    /// it and probes again at the next heartbeat. A follower already being probed keeps its
    /// `next_index`: resetting it to `match_index + 1` would, for a follower whose match is not yet
    /// known (0), resend the whole log from index 1 instead of backtracking from the end.
    ///
    /// A follower receiving a snapshot resumes at the next heartbeat, from the last byte it confirmed.
    pub fn handle_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            match pr.state {
                ReplicationState::Snapshot => {
                    if let Some(t) = pr.transfer.as_mut() {
                        t.in_flight = None;
                    }
                    return;
                }
                ReplicationState::Replicate => pr.become_probe(),
                ReplicationState::Probe => {}
            }
            pr.probe_sent = true;
        }
    }

    /// Reports that storage could not give the chunk `to` was to receive (the snapshot named was
    /// replaced). The transfer restarts with the current snapshot at the next heartbeat.
    pub fn snapshot_send_failed(&mut self, to: NodeId) {
        let current = self.snapshot.last_log_id;
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ReplicationState::Snapshot {
                tracing::warn!(to, snapshot = %current, "snapshot chunk unavailable; restarting transfer");
                pr.become_snapshot(current);
            }
        }
    }

    /// Handles one chunk of an InstallSnapshot and returns the reply. Like the other replies, it may be
    /// sent only after the output taken next is executed (an `Installed` reply acknowledges a snapshot
    /// that output stores).
    ///
    /// Chunks are assembled in memory; the snapshot replaces the log and the state machine only when
    /// the last chunk arrives, so an interrupted transfer leaves the follower as it was. A chunk at an
    /// unexpected offset is answered with the offset wanted (`Accepted`), so the leader resumes there
    /// (lost chunk, duplicate) or restarts at 0 (this node lost its partial copy, or a new leader).
    pub fn handle_install_snapshot(
        &mut self,
        req: InstallSnapshotRequest,
    ) -> InstallSnapshotResponse {
        if req.term < self.hard_state.term {
            return self.snapshot_reply(SnapshotResult::StaleTerm);
        }
        let id = req.meta.last_log_id;
        if let Err(reason) = validate::snapshot_request(&req) {
            tracing::error!(leader = req.leader_id, snapshot = %id, %reason, "malformed InstallSnapshot refused");
            return self.snapshot_reply(SnapshotResult::Invalid);
        }
        if req.term > self.hard_state.term || self.role != Role::Follower {
            self.become_follower(req.term, Some(req.leader_id));
        }
        self.heard_from_leader(req.leader_id);

        // Already here: committed (so it matches any leader's log), or the same entry is in the log
        // (so, by Log Matching, everything up to it matches, and it is committed).
        let held = self.log.term_at(id.index) == Some(id.term);
        if id.index <= self.commit_index || held {
            self.incoming = None;
            if held && id.index > self.commit_index {
                self.commit_index = id.index;
            }
            return self.snapshot_reply(SnapshotResult::Installed { snapshot: id });
        }
        let wants = |next_offset: u64| SnapshotResult::Accepted {
            snapshot: id,
            offset: req.offset,
            next_offset,
        };
        let incoming = match &mut self.incoming {
            Some(i) if i.term == req.term && i.meta.last_log_id == id => i,
            // A transfer this node does not hold (new, from a new leader, or lost in a restart):
            // only its first chunk can start it.
            _ if req.offset != 0 => return self.snapshot_reply(wants(0)),
            slot => slot.insert(IncomingSnapshot {
                term: req.term,
                meta: req.meta,
                data: Vec::new(),
            }),
        };
        let held_len = incoming.data.len() as u64;
        if req.offset != held_len {
            return self.snapshot_reply(wants(held_len));
        }
        incoming.data.extend_from_slice(&req.data);
        if !req.done {
            let next_offset = incoming.data.len() as u64;
            return self.snapshot_reply(wants(next_offset));
        }
        let Some(incoming) = self.incoming.take() else {
            return self.snapshot_reply(wants(0));
        };
        if let Err(reason) = (self.snapshot_check)(&incoming.meta, &incoming.data) {
            tracing::error!(leader = req.leader_id, snapshot = %id, %reason, "received snapshot refused by the state machine's check");
            return self.snapshot_reply(SnapshotResult::Invalid);
        }
        self.install_from_leader(Snapshot {
            meta: incoming.meta,
            data: incoming.data,
        });
        self.snapshot_reply(SnapshotResult::Installed { snapshot: id })
    }

    /// Handles the answer to an InstallSnapshot chunk this node sent.
    pub fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) {
        if let Err(reason) = validate::snapshot_response(&resp) {
            tracing::error!(from, %reason, "malformed InstallSnapshot answer ignored");
            return;
        }
        if !self.take_answer(from, resp.term) {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        match resp.result {
            SnapshotResult::Accepted {
                snapshot,
                offset,
                next_offset,
            } => {
                let Some(t) = pr.transfer.as_mut() else {
                    return;
                };
                // Only the answer to the chunk in flight moves the transfer: a late or duplicated
                // answer to an earlier chunk would rewind it.
                if t.snapshot == snapshot && t.in_flight == Some(offset) {
                    t.offset = next_offset;
                    t.in_flight = None;
                    self.replicate_pending.insert(from);
                }
            }
            SnapshotResult::Installed { snapshot } => {
                if snapshot.index > self.log.last_index() {
                    tracing::warn!(from, %snapshot, "follower claims a snapshot past our log; ignoring");
                    return;
                }
                let advanced = pr.on_success(snapshot.index);
                if pr.state == ReplicationState::Snapshot {
                    pr.become_replicate();
                    pr.next_index = pr.match_index + 1;
                }
                self.replicate_pending.insert(from);
                if advanced {
                    self.maybe_commit();
                }
            }
            SnapshotResult::StaleTerm => {}
            SnapshotResult::Invalid => {
                tracing::error!(from, "follower refused our InstallSnapshot as malformed");
                if let Some(t) = pr.transfer.as_mut() {
                    // Retried from the start with the next round of replication.
                    t.offset = 0;
                    t.in_flight = None;
                }
            }
        }
    }

    /// Reports that the state machine serialized its state as of `last_log_id` (an applied entry) into
    /// `data`. The engine takes it as its latest snapshot (unless a newer one is already stored), has
    /// the executor store it, and compacts the log up to `snapshot_keep_entries` before it. Transfers
    /// in progress restart with it. Returns whether it was taken.
    pub fn snapshot_built(&mut self, last_log_id: LogId, data: Vec<u8>) -> bool {
        if last_log_id.index <= self.snapshot.last_log_id.index || self.out.restore_snapshot {
            return false;
        }
        if last_log_id.index > self.commit_index
            || self.log.term_at(last_log_id.index) != Some(last_log_id.term)
        {
            tracing::error!(snapshot = %last_log_id, "state machine snapshot does not match the committed log; ignored");
            return false;
        }
        let meta = SnapshotMeta {
            last_log_id,
            membership: self.membership_at(last_log_id.index),
        };
        self.snapshot = meta.clone();
        self.out.snapshot = Some(Snapshot { meta, data });
        let upto = last_log_id.index.saturating_sub(self.snapshot_keep_entries);
        if upto > self.log.base_index() {
            self.base_membership = self.membership_at(upto);
            self.log.compact(upto);
            self.out.purge_upto = Some(upto);
        }
        // Transfers in progress restart with the new snapshot (`send_snapshot_chunk` sees the
        // changed id), at once rather than at the next heartbeat.
        let sending = self
            .progress
            .iter()
            .filter(|(_, pr)| pr.state == ReplicationState::Snapshot)
            .map(|(&id, _)| id);
        self.replicate_pending.extend(sending);
        true
    }

    /// Proposes a command. On the leader, appends it and returns its log id; the entry will be handed
    /// out for applying once committed.
    ///
    /// # Errors
    /// [`NotLeader`] if this node is not the leader, or is handing leadership over (then the hint
    /// names the node taking over).
    pub fn propose(&mut self, command: C) -> Result<LogId, NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(t) = self.transfer {
            return Err(NotLeader {
                leader_hint: Some(t.to),
            });
        }
        let log_id = LogId::new(self.hard_state.term, self.log.last_index() + 1);
        self.append_local(Entry {
            log_id,
            payload: EntryPayload::Command(command).into(),
        });
        self.replicate_pending.extend(self.progress.keys().copied());
        Ok(log_id)
    }

    /// Reports that storage holds, durably, every entry up to `last` handed out for appending.
    pub fn log_persisted(&mut self, last: LogId) {
        if self.log.term_at(last.index) != Some(last.term) {
            return; // superseded by a truncation since
        }
        if last.index > self.durable_index {
            self.durable_index = last.index;
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    /// Takes everything to execute since the last call. Builds the AppendEntries for followers with
    /// something new, so that all proposals since the last call travel together.
    pub fn take_output(&mut self) -> Output<C> {
        if self.role == Role::Leader {
            let pending = std::mem::take(&mut self.replicate_pending);
            for to in pending {
                self.send_append(to, false);
            }
        } else {
            self.replicate_pending.clear();
        }
        self.end_round_batch();
        if self.hard_state_dirty {
            self.out.hard_state = Some(self.hard_state);
            self.hard_state_dirty = false;
        }
        if self.commit_index > self.apply_dispatched {
            let entries = self.log.slice(self.apply_dispatched + 1, self.commit_index);
            self.out.apply.extend_from_slice(entries);
            self.apply_dispatched = self.commit_index;
        }
        self.submitted_index = self.log.last_index();
        std::mem::take(&mut self.out)
    }

    // ----- role changes -----

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hard_state.term {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.hard_state_dirty = true;
            // A transfer from an older leader is abandoned (its chunks would be refused anyway).
            self.incoming = None;
        }
        let was_follower = self.role == Role::Follower;
        if !was_follower {
            tracing::info!(term, "stepping down to follower");
        }
        self.role = Role::Follower;
        if self.leader != leader {
            self.leader_seen_ms = None;
        }
        self.leader = leader;
        self.transfer = None;
        self.fail_reads();
        self.votes.clear();
        self.progress.clear();
        self.replicate_pending.clear();
        self.heartbeat_deadline = u64::MAX;
        self.quorum_check_deadline = u64::MAX;
        // A follower's timer keeps running when it only learns a higher term (say from a candidate
        // it refuses): only a leader's AppendEntries or a granted vote reset it (Raft figure 2), so a
        // candidate with a stale log cannot hold off the elections it will never win.
        if !was_follower {
            self.reset_election_timer();
        }
    }

    fn become_leader(&mut self) {
        tracing::info!(term = self.hard_state.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.leader_seen_ms = None;
        self.transfer = None;
        self.votes.clear();
        let next = self.log.last_index() + 1;
        let now = self.now;
        self.progress = self
            .membership
            .members()
            .into_iter()
            .filter(|&p| p != self.id)
            .map(|p| (p, Progress::new(next, now)))
            .collect();
        self.begin_rounds();
        let blank = Entry {
            log_id: LogId::new(self.hard_state.term, next),
            payload: EntryPayload::Blank.into(),
        };
        self.append_local(blank);
        self.replicate_pending.extend(self.progress.keys().copied());
        self.heartbeat_deadline = self.now + self.heartbeat_ms;
        self.quorum_check_deadline = if self.check_quorum {
            self.now + self.election_timeout_ms.1
        } else {
            u64::MAX
        };
    }

    fn check_quorum(&mut self) {
        let window = self.election_timeout_ms.1;
        let since = self.now.saturating_sub(window);
        let mut active: BTreeSet<NodeId> = self
            .progress
            .iter()
            // Strictly within the window: an answer exactly `window` ago (or the election itself,
            // recorded as each follower's first "ack") is a full election timeout of silence.
            .filter(|(_, p)| p.last_ack_ms > since)
            .map(|(&id, _)| id)
            .collect();
        active.insert(self.id);
        if self.membership.is_quorum(&active) {
            self.quorum_check_deadline = self.now + window;
        } else {
            tracing::warn!(
                term = self.hard_state.term,
                "lost contact with a majority; stepping down"
            );
            let term = self.hard_state.term;
            self.become_follower(term, None);
        }
    }

    // ----- replication -----

    fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to, true);
        }
    }

    /// Sends what `to` needs. `heartbeat`: send even when there is nothing new (a heartbeat anchored
    /// at the follower's match index), and repeat an outstanding probe.
    fn send_append(&mut self, to: NodeId, mut heartbeat: bool) {
        let last_index = self.log.last_index();
        let term = self.hard_state.term;
        let commit = self.commit_index;
        let round = self.reads.round();
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if pr.state != ReplicationState::Snapshot && pr.next_index <= self.log.base_index() {
            // What the follower needs next is compacted away.
            pr.become_snapshot(self.snapshot.last_log_id);
        }
        if pr.state == ReplicationState::Snapshot {
            self.send_snapshot_chunk(to, heartbeat);
            return;
        }
        loop {
            let pipelining = pr.state == ReplicationState::Replicate;
            if pipelining {
                let has_new = pr.next_index <= last_index;
                let window_full = pr.in_flight.len() >= self.max_in_flight;
                if !has_new || window_full {
                    if heartbeat {
                        let anchor = LogId::new(
                            self.log.term_at(pr.match_index).unwrap_or(0),
                            pr.match_index,
                        );
                        self.out.messages.push((
                            to,
                            append_request(term, self.id, anchor, Vec::new(), commit, round),
                        ));
                    }
                    return;
                }
            } else if pr.probe_sent && !heartbeat {
                return;
            }
            let prev_index = pr.next_index - 1;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // Only below the base (checked above), which cannot happen here.
                tracing::error!(to, prev_index, "no term for the entry before next_index");
                return;
            };
            let end = last_index.min(prev_index + self.max_entries_per_append as u64);
            let entries = within_budget(
                self.log.slice(prev_index + 1, end),
                self.entry_size,
                self.max_append_bytes,
            );
            let end = prev_index + entries.len() as u64;
            let entries = entries.to_vec();
            let prev = LogId::new(prev_term, prev_index);
            self.out.messages.push((
                to,
                append_request(term, self.id, prev, entries, commit, round),
            ));
            if !pipelining {
                pr.probe_sent = true;
                return;
            }
            pr.in_flight.push_back(end);
            pr.next_index = end + 1;
            // The entries just sent also serve as the heartbeat; keep filling the window.
            heartbeat = false;
        }
    }

    /// Sends `to` the next chunk of its snapshot transfer, unless one is in flight; with `heartbeat`,
    /// an empty AppendEntries then keeps the follower from starting an election while a chunk travels.
    fn send_snapshot_chunk(&mut self, to: NodeId, heartbeat: bool) {
        let term = self.hard_state.term;
        let base = self.log_base_id();
        let commit = self.commit_index;
        let round = self.reads.round();
        let Some(t) = self.progress.get_mut(&to).and_then(|p| p.transfer.as_mut()) else {
            return;
        };
        if t.snapshot != self.snapshot.last_log_id {
            // Our snapshot changed since the transfer began (a newer one was built): send the new
            // one from the start; answers about the old one no longer match the transfer.
            *t = SnapshotTransfer::start(self.snapshot.last_log_id);
        }
        match t.in_flight {
            None => {
                t.in_flight = Some(t.offset);
                self.out.snapshot_sends.push(SnapshotSend {
                    to,
                    term,
                    leader_id: self.id,
                    meta: self.snapshot.clone(),
                    offset: t.offset,
                });
            }
            Some(_) if heartbeat => {
                self.out.messages.push((
                    to,
                    append_request(term, self.id, base, Vec::new(), commit, round),
                ));
            }
            Some(_) => {}
        }
    }

    fn maybe_commit(&mut self) {
        // A majority of the voters (of both configurations while joint); this leader counts only
        // if it is one of them, and only with what is durable.
        let candidate = self.membership.committed_index(|v| {
            if v == self.id {
                self.durable_index
            } else {
                self.progress.get(&v).map_or(0, |p| p.match_index)
            }
        });
        // Raft paper 5.4.2: only entries of the current term are committed by counting replicas.
        if candidate > self.commit_index
            && self.log.term_at(candidate) == Some(self.hard_state.term)
        {
            self.commit_index = candidate;
            // Followers learn the new commit index with the next AppendEntries or heartbeat.
            self.advance_membership();
            self.register_parked_reads();
        }
    }

    // ----- local log -----

    fn append_local(&mut self, entry: Entry<C>) {
        if let EntryPayload::Membership(m) = &*entry.payload {
            // A membership takes effect as soon as it is in the log (thesis 4.1).
            self.membership = Membership::clone(m);
            self.membership_index = entry.log_id.index;
            self.log.push(entry.clone());
            self.out.append.push(entry);
            self.sync_progress();
            return;
        }
        self.log.push(entry.clone());
        self.out.append.push(entry);
    }

    fn truncate_local(&mut self, from: LogIndex) {
        tracing::info!(from, "truncating conflicting log suffix");
        self.log.truncate(from);
        self.out.append.retain(|e| e.log_id.index < from);
        if from <= self.submitted_index {
            self.out.truncate_from = Some(self.out.truncate_from.map_or(from, |t| t.min(from)));
            self.submitted_index = from - 1;
        }
        self.durable_index = self.durable_index.min(from - 1);
        if from <= self.membership_index {
            self.refresh_membership();
        }
    }

    /// Recomputes the effective membership by scanning the log (at start and after truncating past
    /// the latest membership entry).
    fn refresh_membership(&mut self) {
        let latest = self
            .log
            .entries()
            .iter()
            .rev()
            .find_map(|e| match &*e.payload {
                EntryPayload::Membership(m) => Some((e.log_id.index, Membership::clone(m))),
                _ => None,
            });
        let (index, membership) =
            latest.unwrap_or_else(|| (self.log.base_index(), self.base_membership.clone()));
        self.membership = membership;
        self.membership_index = index;
        self.sync_progress();
    }

    /// Replaces the log and the state with `snapshot`, received from the leader, whose last entry the
    /// log does not hold. Storage discards its log when it stores the snapshot, so appends and
    /// truncations not yet executed are dropped with it.
    fn install_from_leader(&mut self, snapshot: Snapshot) {
        let id = snapshot.meta.last_log_id;
        tracing::info!(snapshot = %id, "installing snapshot from the leader");
        self.log.reset(id);
        self.base_membership = snapshot.meta.membership.clone();
        self.refresh_membership();
        self.commit_index = self.commit_index.max(id.index);
        self.apply_dispatched = id.index;
        self.durable_index = id.index;
        self.submitted_index = id.index;
        self.out.append.clear();
        self.out.truncate_from = None;
        self.out.purge_upto = None;
        self.snapshot = snapshot.meta.clone();
        self.out.snapshot = Some(snapshot);
        self.out.restore_snapshot = true;
    }

    fn snapshot_reply(&self, result: SnapshotResult) -> InstallSnapshotResponse {
        InstallSnapshotResponse {
            term: self.hard_state.term,
            result,
        }
    }

    fn log_base_id(&self) -> LogId {
        LogId::new(
            self.log.term_at(self.log.base_index()).unwrap_or(0),
            self.log.base_index(),
        )
    }

    fn append_reply(&self, result: AppendResult) -> AppendEntriesResponse {
        AppendEntriesResponse {
            term: self.hard_state.term,
            result,
            round: 0,
        }
    }

    /// Records a message from the leader of the current term: it is alive (no vote for anyone else
    /// for a minimum election timeout) and the election timer starts over.
    fn heard_from_leader(&mut self, leader: NodeId) {
        self.leader = Some(leader);
        self.leader_seen_ms = Some(self.now);
        self.reset_election_timer();
    }

    fn reset_election_timer(&mut self) {
        let (min, max) = self.election_timeout_ms;
        self.election_deadline = self.now + self.rng.u64(min..max);
    }
}

/// Multiplies the node id into the seed (the 64-bit golden ratio, as in Fibonacci hashing) so nodes
/// sharing `Config::seed` draw different election timeouts.
const NODE_ID_SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;
/// Keeps the election RNG's stream apart from other generators seeded with the same `Config::seed`.
const ELECTION_STREAM: u64 = 0x5DEE_CE66_D1CE_4E5B;

/// The seed of node `id`'s election-timeout generator: deterministic in (`seed`, `id`), different
/// for every node.
fn election_seed(seed: u64, id: NodeId) -> u64 {
    seed ^ id.wrapping_mul(NODE_ID_SPREAD) ^ ELECTION_STREAM
}

fn append_request<C>(
    term: Term,
    leader_id: NodeId,
    prev_log_id: LogId,
    entries: Vec<Entry<C>>,
    leader_commit: LogIndex,
    round: u64,
) -> Request<C> {
    Request::AppendEntries(AppendEntriesRequest {
        term,
        leader_id,
        prev_log_id,
        entries,
        leader_commit,
        round,
    })
}

#[cfg(test)]
mod tests;
