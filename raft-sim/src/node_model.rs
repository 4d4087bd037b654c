//! [`NodeObs`]: the harness's model of one node, built from what its storage acknowledged (its
//! *durable* state) and what its state machines reported.
//!
//! The durable log is modelled as a compaction point `base` (the last purged entry, or the last entry
//! of a snapshot that replaced the log), the hash of the log prefix up to `base`, and the entries
//! after it, each with the hash of the prefix up to it ([`chain_hash`]). How the prefix hash of `base`
//! is known is the recorder's business (see the `world` module); this module only keeps the chain
//! consistent as entries come and go.

use raft_core::{Entry, EntryPayload, HardState, LogId, LogIndex, Snapshot, Term};

use crate::applied_state::AppliedState;
use crate::chain::chain_hash;

/// One start (incarnation) of a node's state machine.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmObs {
    /// Every entry it applied, in order.
    pub(crate) applied: Vec<(LogId, EntryPayload<u64>)>,
    /// Every snapshot it restored: how many entries it had applied before, and the snapshot's last
    /// log id.
    pub(crate) restores: Vec<(usize, LogId)>,
    /// Its state after its latest apply or restore, as the state machine reported it.
    pub(crate) state: AppliedState,
}

/// Entries a node's disk lost: the tail of its durable log gone at a restart (see
/// [`Cluster::restart_with_lost_tail`](crate::Cluster::restart_with_lost_tail)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DiskLoss {
    /// The node's durable term when it lost them (its hard state survives the fault).
    pub(crate) term: Term,
    /// The entries lost, in order.
    pub(crate) entries: Vec<LogId>,
}

/// What the harness knows of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeObs {
    /// The durable hard state.
    pub(crate) hard_state: HardState,
    /// The compaction point: the last purged entry, or the last entry of the snapshot that replaced
    /// the log (the default id if none).
    pub(crate) base: LogId,
    /// The hash of the log prefix up to and including `base`. `None` only once the storage reopened
    /// with a state it had not acknowledged (a durability violation) and no other evidence gave it.
    base_chain: Option<u64>,
    /// The durable log after `base`.
    pub(crate) log: Vec<Entry<u64>>,
    /// `chain[i]` is the hash of the log prefix up to `log[i]` (meaningful when `base_chain` is known).
    chain: Vec<u64>,
    /// The durable snapshot.
    pub(crate) snapshot: Option<Snapshot>,
    /// The current incarnation (1 for the first start; 0 before it).
    pub(crate) incarnation: u32,
    /// Each incarnation's state machine: `sms[incarnation - 1]`.
    pub(crate) sms: Vec<SmObs>,
    /// Whether the node runs.
    pub(crate) live: bool,
    /// Every tail its disk lost, in order.
    pub(crate) disk_losses: Vec<DiskLoss>,
}

impl NodeObs {
    /// The last entry of the durable log, or `base` if none follows it.
    pub(crate) fn last_log_id(&self) -> LogId {
        self.log.last().map_or(self.base, |e| e.log_id)
    }

    /// The entry at `index` if the durable log holds it (not compacted, not past the end).
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry<u64>> {
        if index <= self.base.index {
            return None;
        }
        self.log.get((index - self.base.index - 1) as usize)
    }

    /// The entries a truncation from `index` removes: those from `index` on, none if `index` is past
    /// the end or at or below `base` (the model leaves the compacted prefix alone).
    pub(crate) fn removed_by_truncation(&self, index: LogIndex) -> &[Entry<u64>] {
        if index <= self.base.index {
            return &[];
        }
        let keep = (index - self.base.index - 1) as usize;
        self.log.get(keep..).unwrap_or_default()
    }

    /// The last log id of the durable snapshot.
    pub(crate) fn snapshot_id(&self) -> Option<LogId> {
        self.snapshot.as_ref().map(|s| s.meta.last_log_id)
    }

    /// Whether the node's disk ever lost entry `log_id` (it held it durably before).
    pub(crate) fn lost_to_disk(&self, log_id: LogId) -> bool {
        self.disk_losses.iter().any(|l| l.entries.contains(&log_id))
    }

    /// Whether the node's disk lost entry `log_id` while the node was in term `term`.
    pub(crate) fn lost_to_disk_in(&self, term: Term, log_id: LogId) -> bool {
        self.disk_losses
            .iter()
            .any(|l| l.term == term && l.entries.contains(&log_id))
    }

    /// The current incarnation's state machine.
    pub(crate) fn current_sm(&self) -> Option<&SmObs> {
        self.sms.last()
    }

    /// The hash of the prefix up to `base`, if known.
    pub(crate) fn base_chain(&self) -> Option<u64> {
        self.base_chain
    }

    /// The hash of the prefix up to `index`, for `base` and the entries after it.
    pub(crate) fn chain_at(&self, index: LogIndex) -> Option<u64> {
        let base_chain = self.base_chain?;
        if index == self.base.index {
            return Some(base_chain);
        }
        if index < self.base.index {
            return None;
        }
        self.chain
            .get((index - self.base.index - 1) as usize)
            .copied()
    }

    /// Appends `entry` to the durable log, extending the chain.
    pub(crate) fn push(&mut self, entry: Entry<u64>) {
        let prev = self.chain.last().copied().or(self.base_chain).unwrap_or(0);
        self.chain.push(chain_hash(prev, &entry));
        self.log.push(entry);
    }

    /// Replaces the whole durable log: compaction point `base`, whose prefix hashes to `base_chain`,
    /// followed by `entries`.
    pub(crate) fn set_log(
        &mut self,
        base: LogId,
        base_chain: Option<u64>,
        entries: Vec<Entry<u64>>,
    ) {
        self.base = base;
        self.base_chain = base_chain;
        self.log.clear();
        self.chain.clear();
        for e in entries {
            self.push(e);
        }
    }

    /// Removes the entries from `index` on: [`removed_by_truncation`](Self::removed_by_truncation).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        let keep = self.log.len() - self.removed_by_truncation(index).len();
        self.log.truncate(keep);
        self.chain.truncate(keep);
    }

    /// Compacts the log up to `upto` (or its end, if shorter): the last entry removed becomes `base`,
    /// its prefix hash `base_chain`. Returns whether anything was removed.
    pub(crate) fn purge_upto(&mut self, upto: LogIndex) -> bool {
        if upto <= self.base.index {
            return false;
        }
        let n = ((upto - self.base.index) as usize).min(self.log.len());
        if n == 0 {
            return false;
        }
        let new_base = self.log[n - 1].log_id;
        self.base_chain = self.chain_at(new_base.index);
        self.base = new_base;
        self.log.drain(..n);
        self.chain.drain(..n);
        true
    }
}
