//! [`World`]: the recorder. It receives every observation of one cluster, keeps the shared
//! [`Record`] up to date, and hands each observation to every checker (`invariants`), reporting what
//! they find as violations.
//!
//! Observations arrive from four places, all on the test's single thread:
//! * the storage wrapper ([`ObservedStorage`](crate::ObservedStorage)): every hard state, append,
//!   truncation, purge and snapshot a node's storage acknowledged (the *durable* state), and every
//!   snapshot chunk it read;
//! * the network wrapper ([`ObservedNetwork`](crate::ObservedNetwork)): RPC answers as the sender sees
//!   them;
//! * the test state machine ([`LogStateMachine`](crate::LogStateMachine)): every applied entry and
//!   every restored snapshot;
//! * the metrics watchers: who says it is leader in which term;
//!
//! plus the clients ([`Client`](crate::Client)): every write, its attempts and its outcome. The
//! recorder calls the checkers' hooks at the points [`Invariant`] documents; checks that need the
//! whole record run on demand ([`World::check`], [`World::check_final`]).
//!
//! ## The prefix hash of a compaction point
//!
//! Each node's durable log is modelled as a compaction point `base`, the hash of the log prefix up to
//! it, and the entries after it (`node_model`). The prefix hash of `base` is known exactly: 0 for the
//! empty prefix; the node's own hash of that entry when it purges; and, when a snapshot from the
//! leader replaces the log, the digest the snapshot carries (the hash of every entry the state machine
//! applied, [`AppliedState`]), which is checked against the committed prefix when the snapshot is
//! stored. At a restart it is the one acknowledged before, if the storage still agrees; otherwise the
//! reopened snapshot's digest, or the hash any node held that entry on. So compacted entries are never
//! guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use raft_core::{
    Entry, HardState, LogId, LogIndex, LogState, Membership, NodeId, Snapshot, SnapshotChunk,
    SnapshotMeta, Term,
};

use crate::applied_state::AppliedState;
use crate::history::{Outcome, ReadKind, ReadOutcome};
use crate::invariant::{ChunkRead, Findings, Invariant, Opened};
use crate::node_model::{DiskLoss, SmObs};
use crate::record::Record;
use crate::stats::HarnessStats;
use crate::trace::Tracer;
use crate::values::ClientValues;

/// The world, shared by every observer of one cluster.
pub(crate) type Shared = Arc<Mutex<World>>;

pub(crate) fn lock(world: &Shared) -> MutexGuard<'_, World> {
    // Observers never panic while holding the lock except through a bug in the harness itself, and
    // the state is still the best record we have: keep using it.
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most this many violations are kept (the first ones are the interesting ones).
const MAX_VIOLATIONS: usize = 32;

/// Everything observed about one cluster, and the checkers that judge it.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) replay: String,
    /// What was observed.
    pub(crate) record: Record,
    /// The checkers, in the order their findings on one observation are reported.
    invariants: Vec<Box<dyn Invariant>>,
    pub(crate) violations: Vec<String>,
    pub(crate) stats: HarnessStats,
    /// The values clients write.
    pub(crate) client_values: ClientValues,
    /// The nodes whose disk lost entries and that are not back in step yet (see
    /// [`Cluster::recovering_from_disk_faults`](crate::Cluster::recovering_from_disk_faults)).
    pub(crate) disk_faults: BTreeMap<NodeId, DiskFaulted>,
    /// The indexes counted in [`HarnessStats::joint_new_majority_only`].
    joint_counted: BTreeSet<LogIndex>,
    tracer: Tracer,
}

/// A node whose disk lost entries, until it is back in step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskFaulted {
    /// The last index it lost.
    pub(crate) last_lost: LogIndex,
    /// Whether it has caught up by the engine's rule since it last started reporting the loss: it
    /// answered an AppendEntries with success up to the leader's commit index.
    pub(crate) caught_up: bool,
}

impl World {
    /// The recorder of a cluster of `voters` run from `seed` (`replay` replays it), checking every
    /// invariant of [`invariants::all`](crate::invariants::all).
    pub(crate) fn new(seed: u64, replay: String, voters: BTreeSet<NodeId>) -> Self {
        World {
            seed,
            replay,
            record: Record::new(voters),
            invariants: crate::invariants::all(),
            violations: Vec::new(),
            stats: HarnessStats::default(),
            client_values: ClientValues::default(),
            disk_faults: BTreeMap::new(),
            joint_counted: BTreeSet::new(),
            tracer: Tracer::from_env(),
        }
    }

    /// Prints an observation when tracing is on (`HARNESS_TRACE=1`), stamped with virtual time.
    pub(crate) fn trace(&self, what: impl FnOnce() -> String) {
        self.tracer.trace(what);
    }

    /// Records a violation (once: a repeat of one already recorded is dropped, so that one fault seen
    /// over and over does not crowd out the others).
    pub(crate) fn violation(&mut self, msg: String) {
        self.trace(|| format!("VIOLATION: {msg}"));
        tracing::error!(seed = self.seed, "{msg}");
        if self.violations.len() < MAX_VIOLATIONS && !self.violations.contains(&msg) {
            self.violations.push(msg);
        }
    }

    /// Calls `hook` on every checker with the record as it is now, then reports what they found.
    fn fan_out(&mut self, mut hook: impl FnMut(&mut dyn Invariant, &Record) -> Findings) {
        let mut findings = Vec::new();
        for invariant in &mut self.invariants {
            findings.extend(hook(invariant.as_mut(), &self.record));
        }
        for finding in findings {
            self.violation(finding);
        }
    }

    // ----- storage observations -----

    /// A node (re)opened its storage and read this state.
    pub(crate) fn on_open(
        &mut self,
        id: NodeId,
        hard_state: HardState,
        base: LogId,
        entries: Vec<Entry<u64>>,
        snapshot: Option<Snapshot>,
    ) {
        let opened = Opened {
            hard_state,
            base,
            entries: &entries,
            snapshot: snapshot.as_ref(),
        };
        self.fan_out(|inv, r| inv.on_reopen(r, id, &opened));
        self.trace(|| {
            format!(
                "node {id}: open storage: {hard_state:?}, base {base}, last {:?}, snapshot {:?}",
                entries.last().map(|e| e.log_id),
                snapshot.as_ref().map(|s| s.meta.last_log_id)
            )
        });
        let base_chain = self.reopened_base_chain(id, base, snapshot.as_ref());
        let record = &mut self.record;
        let obs = record.node_mut(id);
        obs.hard_state = hard_state;
        obs.set_log(base, base_chain, entries);
        obs.snapshot = snapshot;
        obs.incarnation += 1;
        obs.sms.push(SmObs::default());
        obs.live = true;
        record.max_term = record.max_term.max(hard_state.term);
        let chained: Vec<(LogId, u64)> = {
            let obs = &record.nodes[&id];
            obs.log
                .iter()
                .filter_map(|e| obs.chain_at(e.log_id.index).map(|h| (e.log_id, h)))
                .collect()
        };
        for (log_id, hash) in chained {
            let first = self.record.record_chain(id, log_id, hash);
            self.fan_out(|inv, r| inv.on_entry_held(r, id, log_id, hash, first));
        }
        self.fan_out(|inv, r| inv.on_opened(r, id));
    }

    /// The prefix hash of compaction point `base`, reopened by node `id` with `snapshot`: the one
    /// acknowledged before if the node still has that base; 0 for none; else the snapshot's digest if
    /// it ends there, or the hash any node held that entry on.
    fn reopened_base_chain(
        &self,
        id: NodeId,
        base: LogId,
        snapshot: Option<&Snapshot>,
    ) -> Option<u64> {
        let known = self.record.nodes.get(&id).and_then(|obs| {
            (obs.incarnation > 0 && obs.base == base)
                .then(|| obs.base_chain())
                .flatten()
        });
        if known.is_some() {
            return known;
        }
        if base.index == 0 {
            return Some(0);
        }
        snapshot
            .filter(|s| s.meta.last_log_id == base)
            .and_then(|s| AppliedState::decode(&s.data).ok())
            .map(|s| s.digest)
            .or_else(|| self.record.chains.get(&(base.index, base)).map(|c| c.hash))
    }

    /// Node `id`'s storage acknowledged saving hard state `hs`.
    pub(crate) fn on_save_hard_state(&mut self, id: NodeId, hs: HardState) {
        self.trace(|| format!("node {id}: save {hs:?}"));
        let record = &mut self.record;
        let old = record.node_mut(id).hard_state;
        record.node_mut(id).hard_state = hs;
        record.max_term = record.max_term.max(hs.term);
        if let Some(candidate) = hs.voted_for {
            record.record_vote(hs.term, id, candidate);
        }
        self.fan_out(|inv, r| inv.on_hard_state(r, id, old, hs));
    }

    /// Node `id`'s storage acknowledged appending `entries`.
    pub(crate) fn on_append(&mut self, id: NodeId, entries: &[Entry<u64>]) {
        self.trace(|| {
            format!(
                "node {id}: append {:?}..={:?}",
                entries.first().map(|e| e.log_id),
                entries.last().map(|e| e.log_id)
            )
        });
        for entry in entries {
            let expected = self
                .record
                .nodes
                .get(&id)
                .map_or(1, |o| o.last_log_id().index + 1);
            if entry.log_id.index != expected {
                self.violation(format!(
                    "harness: node {id}'s storage accepted entry {} but its log ends before {expected}",
                    entry.log_id
                ));
                return;
            }
            let obs = self.record.node_mut(id);
            obs.push(entry.clone());
            if let Some(hash) = obs.chain_at(entry.log_id.index) {
                let first = self.record.record_chain(id, entry.log_id, hash);
                self.fan_out(|inv, r| inv.on_entry_held(r, id, entry.log_id, hash, first));
            }
            self.fan_out(|inv, r| inv.on_entry_appended(r, id, entry));
        }
        if let Some(last) = entries.last() {
            self.note_joint_new_majority(id, last.log_id);
        }
    }

    /// Counts [`HarnessStats::joint_new_majority_only`]: if node `id`'s durable log puts a joint
    /// configuration in force, and entry `log_id` (just appended, not committed) is now held by a
    /// majority of its new voters but not of its old ones.
    fn note_joint_new_majority(&mut self, id: NodeId, log_id: LogId) {
        let record = &self.record;
        if record.committed.contains_key(&log_id.index)
            || self.joint_counted.contains(&log_id.index)
        {
            return;
        }
        let Some(config) = record
            .nodes
            .get(&id)
            .and_then(|obs| crate::quorum::in_force(record, obs))
        else {
            return;
        };
        let Some(old) = &config.old_voters else {
            return;
        };
        let holders: BTreeSet<NodeId> = record
            .nodes
            .iter()
            .filter(|(_, obs)| obs.entry(log_id.index).is_some_and(|e| e.log_id == log_id))
            .map(|(&n, _)| n)
            .collect();
        let new_only = Membership::new(config.voters.iter().copied());
        let old_only = Membership::new(old.iter().copied());
        if crate::quorum::is_quorum(&new_only, &holders)
            && !crate::quorum::is_quorum(&old_only, &holders)
        {
            self.joint_counted.insert(log_id.index);
            self.stats.joint_new_majority_only += 1;
            self.trace(|| {
                format!(
                    "entry {log_id}: held by {holders:?}, a majority of the new voters of {config} but not \
                     of the old"
                )
            });
        }
    }

    /// The ids of the entries of node `id`'s recorded log from index `from` on (none for a node
    /// never recorded).
    fn removed_from(&self, id: NodeId, from: LogIndex) -> Vec<LogId> {
        self.record.nodes.get(&id).map_or_else(Vec::new, |obs| {
            obs.removed_by_truncation(from)
                .iter()
                .map(|e| e.log_id)
                .collect()
        })
    }

    /// Node `id`'s storage acknowledged truncating its log from `from`.
    pub(crate) fn on_truncate(&mut self, id: NodeId, from: LogIndex) {
        self.trace(|| format!("node {id}: truncate from {from}"));
        let removed = self.removed_from(id, from);
        if removed.is_empty() {
            return;
        }
        self.stats.truncations += 1;
        self.fan_out(|inv, r| inv.on_truncate(r, id, from, &removed));
        self.record.node_mut(id).truncate_from(from);
    }

    /// Node `id`'s disk lost its durable log from index `from` on, while the node was down (the node
    /// is about to reopen its storage, which reports the loss). The record keeps what was lost
    /// ([`NodeObs::disk_losses`](crate::node_model::NodeObs)): the node acknowledged those entries
    /// once, so answers it gave before still count them, and so does the majority that committed them.
    pub(crate) fn on_tail_lost(&mut self, id: NodeId, from: LogIndex) {
        let removed = self.removed_from(id, from);
        if removed.is_empty() {
            return;
        }
        self.trace(|| {
            format!(
                "node {id}: disk lost {}..={} ({} entries)",
                removed[0],
                removed[removed.len() - 1],
                removed.len()
            )
        });
        self.stats.disk_faults += 1;
        self.stats.entries_lost_to_disk += removed.len() as u64;
        self.fan_out(|inv, r| inv.on_tail_lost(r, id, from, &removed));
        let last_lost = removed[removed.len() - 1].index;
        let obs = self.record.node_mut(id);
        obs.truncate_from(from);
        obs.disk_losses.push(DiskLoss {
            term: obs.hard_state.term,
            entries: removed,
        });
        let fault = self.disk_faults.entry(id).or_insert(DiskFaulted {
            last_lost,
            caught_up: false,
        });
        fault.last_lost = fault.last_lost.max(last_lost);
        fault.caught_up = false;
    }

    /// Node `id` restarts without a new disk fault. Returns whether its storage reports lost entries:
    /// if it lost some earlier and has not caught up since, and `until_caught_up` (see
    /// [`ClusterOptions::disk_loss_until_caught_up`](crate::ClusterOptions::disk_loss_until_caught_up)).
    /// Otherwise the node starts as one that lost nothing, and votes at once.
    pub(crate) fn on_plain_restart(&mut self, id: NodeId, until_caught_up: bool) -> bool {
        let Some(fault) = self.disk_faults.get_mut(&id) else {
            return false;
        };
        if fault.caught_up {
            return false;
        }
        if !until_caught_up {
            fault.caught_up = true;
            return false;
        }
        self.trace(|| format!("node {id}: reports its earlier loss again"));
        true
    }

    /// Node `follower`, which lost entries, answered an AppendEntries whose leader had committed up
    /// to `leader_commit` (an entry of the leader's term) with success up to `match_index`, from
    /// the incarnation that runs now: if
    /// that covers the leader's commit index (and its log, not just its compacted prefix, matched),
    /// the node has caught up by the engine's rule and votes again.
    pub(crate) fn on_catch_up_answer(
        &mut self,
        follower: NodeId,
        leader_commit: LogIndex,
        match_index: LogIndex,
    ) {
        let base = self.record.nodes.get(&follower).map_or(0, |o| o.base.index);
        if let Some(fault) = self.disk_faults.get_mut(&follower) {
            if !fault.caught_up && match_index >= leader_commit && match_index > base {
                fault.caught_up = true;
                self.trace(|| {
                    format!(
                        "node {follower}: caught up after its disk fault (matches {match_index}, leader commit \
                         {leader_commit})"
                    )
                });
            }
        }
    }

    /// Node `id`'s storage acknowledged purging its log up to `upto`.
    pub(crate) fn on_purge(&mut self, id: NodeId, upto: LogIndex) {
        self.trace(|| format!("node {id}: purge up to {upto}"));
        if !self.record.node_mut(id).purge_upto(upto) {
            return;
        }
        self.stats.purges += 1;
        self.fan_out(|inv, r| inv.on_purged(r, id, upto));
    }

    /// Node `id`'s storage acknowledged storing `snapshot`. The record follows the storage contract:
    /// a snapshot not newer than the stored one is ignored; a newer one replaces it, and replaces the
    /// log too unless the log holds the snapshot's last entry.
    pub(crate) fn on_install_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) {
        let last = snapshot.meta.last_log_id;
        self.trace(|| {
            format!(
                "node {id}: store snapshot of {last} ({} bytes)",
                snapshot.data.len()
            )
        });
        self.stats.snapshot_stores += 1;
        let state = AppliedState::decode(&snapshot.data);
        let decoded = state.as_ref().map_err(String::as_str);
        self.fan_out(|inv, r| inv.on_snapshot_stored(r, id, snapshot, decoded));
        let obs = self.record.node_mut(id);
        if obs
            .snapshot_id()
            .is_some_and(|stored| last.index <= stored.index)
        {
            return; // a snapshot never moves backwards: the storage ignores it
        }
        obs.snapshot = Some(snapshot.clone());
        let holds = obs.base == last || obs.entry(last.index).is_some_and(|e| e.log_id == last);
        if !holds {
            obs.set_log(last, state.ok().map(|s| s.digest), Vec::new());
            self.fan_out(|inv, r| inv.on_log_replaced(r, id));
        }
    }

    /// Node `id`'s storage answered `snapshot_chunk(snapshot, offset, max_len)` with `got`.
    pub(crate) fn on_snapshot_chunk(
        &mut self,
        id: NodeId,
        snapshot: LogId,
        offset: u64,
        max_len: usize,
        got: &Option<SnapshotChunk>,
    ) {
        self.stats.snapshot_chunk_reads += 1;
        let read = ChunkRead {
            snapshot,
            offset,
            max_len,
            got,
        };
        self.fan_out(|inv, r| inv.on_snapshot_chunk_read(r, id, &read));
    }

    /// What node `id`'s storage reports after acknowledging `what`.
    pub(crate) fn on_storage_readback(
        &mut self,
        id: NodeId,
        what: &str,
        log: LogState,
        snapshot: Option<LogId>,
    ) {
        self.fan_out(|inv, r| inv.on_storage_readback(r, id, what, &log, snapshot));
    }

    // ----- state machine observations -----

    /// Incarnation `incarnation` of node `id` restored a snapshot whose data decoded to `state`.
    pub(crate) fn on_restore(
        &mut self,
        id: NodeId,
        incarnation: u32,
        meta: &SnapshotMeta,
        state: &AppliedState,
    ) {
        let last = meta.last_log_id;
        self.trace(|| format!("node {id}/{incarnation}: restore snapshot of {last}"));
        self.stats.restores += 1;
        self.fan_out(|inv, r| inv.on_restore(r, id, incarnation, meta, state));
        if let Some(sm) = self
            .record
            .node_mut(id)
            .sms
            .get_mut(incarnation as usize - 1)
        {
            sm.restores.push((sm.applied.len(), last));
            sm.state = state.clone();
        }
    }

    /// Node `id` was asked to restore a snapshot whose `data_len` bytes do not decode (`reason`).
    pub(crate) fn on_restore_refused(
        &mut self,
        id: NodeId,
        meta: &SnapshotMeta,
        data_len: usize,
        reason: &str,
    ) {
        self.fan_out(|inv, r| inv.on_restore_refused(r, id, meta, data_len, reason));
    }

    /// Incarnation `incarnation` of node `id` applied `entries` and reached state `after`.
    pub(crate) fn on_apply(
        &mut self,
        id: NodeId,
        incarnation: u32,
        entries: &[Entry<u64>],
        after: &AppliedState,
    ) {
        self.trace(|| {
            format!(
                "node {id}/{incarnation}: apply {:?}..={:?}",
                entries.first().map(|e| e.log_id),
                entries.last().map(|e| e.log_id)
            )
        });
        let i = incarnation as usize - 1;
        let mut previous = self
            .record
            .nodes
            .get(&id)
            .and_then(|o| o.sms.get(i))
            .map_or(0, |sm| sm.state.last.index);
        for entry in entries {
            self.fan_out(|inv, r| inv.on_apply_entry(r, id, incarnation, entry, previous));
            previous = entry.log_id.index;
            if !self.record.committed.contains_key(&entry.log_id.index) {
                self.fan_out(|inv, r| inv.on_first_commit(r, id, entry));
                self.record.commit(id, entry);
            }
            if let Some(sm) = self.record.node_mut(id).sms.get_mut(i) {
                sm.applied.push((entry.log_id, (*entry.payload).clone()));
            }
        }
        if let Some(last) = entries.last() {
            self.fan_out(|inv, r| inv.on_applied(r, id, incarnation, last.log_id, after));
        }
        if let Some(sm) = self.record.node_mut(id).sms.get_mut(i) {
            sm.state = after.clone();
        }
    }

    // ----- metrics observations -----

    /// Node `id` said (in its metrics) that it leads `term`. If its durable state agrees (it runs, in
    /// that term), its durable log is sampled as a leader's.
    pub(crate) fn observe_leader(&mut self, id: NodeId, term: Term) {
        let first_time = self.record.leaders.entry(term).or_default().insert(id);
        if first_time {
            self.trace(|| format!("node {id}: leader of term {term}"));
        }
        self.fan_out(|inv, r| inv.on_leader(r, id, term, first_time));
        let Some(obs) = self.record.nodes.get(&id) else {
            return;
        };
        if obs.hard_state.term != term || !obs.live {
            return; // the node has moved on since it published these metrics
        }
        self.fan_out(|inv, r| inv.on_leader_sample(r, id, term));
    }

    // ----- crashes -----

    /// Node `id`'s incarnation, if it runs.
    pub(crate) fn incarnation(&self, id: NodeId) -> Option<u32> {
        self.record
            .nodes
            .get(&id)
            .filter(|o| o.live)
            .map(|o| o.incarnation)
    }

    /// Node `id` crashed: it no longer runs (its durable state stays).
    pub(crate) fn on_crash(&mut self, id: NodeId) {
        self.trace(|| format!("node {id}: crashed"));
        if let Some(obs) = self.record.nodes.get_mut(&id) {
            obs.live = false;
        }
        self.stats.crashes += 1;
    }

    // ----- RPC answers, as the sender saw them -----

    /// Node `follower` answered node `leader`'s AppendEntries of `term`, which carried `sent`, with
    /// success up to `match_index`, in the same term.
    pub(crate) fn on_entries_acknowledged(
        &mut self,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        sent: &[LogId],
        match_index: LogIndex,
    ) {
        self.fan_out(|inv, r| {
            inv.on_entries_acknowledged(r, leader, follower, term, sent, match_index)
        });
    }

    /// Node `voter` granted its vote in `term` to `candidate`, in an answer of term `answer_term`.
    pub(crate) fn on_vote_granted(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
        answer_term: Term,
    ) {
        self.fan_out(|inv, r| inv.on_vote_granted(r, voter, term, candidate, answer_term));
    }

    /// Node `voter` refused its vote (or its pre-vote) in `term` to `candidate`, whose last log id is
    /// `candidate_last`. Counted in [`HarnessStats::votes_withheld_after_disk_fault`] when the
    /// catching-up rule explains it (a pre-vote may also have been refused because the voter still
    /// heard from a leader), and the vote mattered: the voter lost entries to a disk fault and has not
    /// caught up, it had not voted for another candidate in that term, the candidate's log is at
    /// least as up to date as the voter's, and the candidate lacks a committed entry.
    pub(crate) fn on_vote_refused(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
        candidate_last: LogId,
    ) {
        if self.disk_faults.get(&voter).is_none_or(|f| f.caught_up) {
            return;
        }
        let r = &self.record;
        let (Some(v), Some(c)) = (r.nodes.get(&voter), r.nodes.get(&candidate)) else {
            return;
        };
        let free = r
            .durable_votes(term, voter)
            .iter()
            .all(|&voted| voted == candidate);
        let up_to_date = candidate_last >= v.last_log_id();
        let lacks_committed = r.committed.keys().any(|&i| !r.holds_committed(c, i));
        if free && up_to_date && lacks_committed {
            self.stats.votes_withheld_after_disk_fault += 1;
            self.trace(|| {
                format!(
                    "node {voter}: withheld its vote in term {term} from {candidate}, which lacks a committed entry"
                )
            });
        }
    }

    /// Node `follower` answered node `leader`'s InstallSnapshot of `term`, in the same term, that it
    /// installed the snapshot of `installed`.
    pub(crate) fn on_snapshot_installed(
        &mut self,
        leader: NodeId,
        follower: NodeId,
        term: Term,
        installed: LogId,
    ) {
        self.fan_out(|inv, r| inv.on_snapshot_installed(r, leader, follower, term, installed));
    }

    // ----- clients -----

    /// A client invokes a write of `value`. `false` (and a violation) if the value was written before.
    pub(crate) fn on_write_invoked(&mut self, value: u64) -> bool {
        match self.record.history.invoke(value) {
            Ok(()) => true,
            Err(e) => {
                self.violation(e);
                false
            }
        }
    }

    /// The write of `value` is sent to `node`.
    pub(crate) fn on_write_attempt(&mut self, value: u64, node: NodeId) {
        self.record.history.attempt(value, node);
    }

    /// The write of `value` ended with `outcome` (other than an acknowledgement).
    pub(crate) fn on_write_completed(&mut self, value: u64, outcome: Outcome) {
        self.record.history.complete(value, outcome);
    }

    /// Node `node` acknowledged the write of `value` at `log_id`, with `response`.
    pub(crate) fn on_write_acknowledged(
        &mut self,
        node: NodeId,
        value: u64,
        log_id: LogId,
        response: LogIndex,
    ) {
        self.record.history.complete(value, Outcome::Acked(log_id));
        self.fan_out(|inv, r| inv.on_write_acknowledged(r, node, value, log_id, response));
    }

    /// A client invokes a read on node `node`, whose metrics say it leads `leading` (a term) or
    /// not (`None`). Returns the read's number in the history.
    pub(crate) fn on_read_invoked(
        &mut self,
        node: NodeId,
        kind: ReadKind,
        leading: Option<Term>,
    ) -> usize {
        let newest = self.record.leaders.keys().next_back().copied();
        let deposed = leading.is_some_and(|t| newest.is_some_and(|n| n > t));
        if deposed {
            self.stats.reads_on_deposed_leader += 1;
            self.trace(|| {
                format!(
                    "node {node}: read asked while it says it leads term {leading:?}, after a leader of term \
                     {newest:?} was seen"
                )
            });
        }
        self.record
            .history
            .invoke_read(node, kind, leading.is_some(), deposed)
    }

    /// Read number `read` ended with `outcome`; a served read is judged at once (the state it saw
    /// is a committed prefix that covers its read index).
    pub(crate) fn on_read_completed(&mut self, read: usize, outcome: ReadOutcome) {
        let served = matches!(outcome, ReadOutcome::Served(_));
        self.record.history.complete_read(read, outcome);
        let Some(op) = self.record.history.reads.get(read).cloned() else {
            return;
        };
        if !served {
            self.stats.reads_failed += 1;
            return;
        }
        self.stats.reads_served += 1;
        self.stats.follower_reads_served += u64::from(!op.on_leader);
        self.stats.reads_on_deposed_leader_served += u64::from(op.on_deposed_leader);
        self.trace(|| format!("node {}: served read {op:?}", op.node));
        self.fan_out(|inv, r| inv.on_read_served(r, &op));
    }

    /// The state of incarnation `incarnation` of node `id`'s state machine, as last reported.
    pub(crate) fn sm_state(&self, id: NodeId, incarnation: u32) -> Option<AppliedState> {
        let i = (incarnation as usize).checked_sub(1)?;
        self.record
            .nodes
            .get(&id)
            .and_then(|o| o.sms.get(i))
            .map(|sm| sm.state.clone())
    }

    // ----- checks on demand -----

    /// Every checker's [`check`](Invariant::check), in order.
    ///
    /// # Errors
    /// The first violation found.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.invariants
            .iter()
            .try_for_each(|inv| inv.check(&self.record))
    }

    /// Every checker's [`check_final`](Invariant::check_final), in order.
    ///
    /// # Errors
    /// The first violation found.
    pub(crate) fn check_final(&self) -> Result<(), String> {
        self.invariants
            .iter()
            .try_for_each(|inv| inv.check_final(&self.record))
    }
}
