//! What the router counted and recorded: totals ([`RouterStats`]), per-target counts
//! ([`TargetStats`]) and the order snapshot chunks arrived in.
//!
//! The router passes requests as values, without serializing them, so it has no wire bytes to
//! count. It counts what it can count exactly instead: requests by kind, the log entries
//! AppendEntries requests carry, and the bytes of snapshot data InstallSnapshot requests carry.

use std::collections::BTreeMap;

use raft_core::{LogId, NodeId};

use crate::envelope::{Envelope, RpcKind};

/// Counts of what the router did, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Requests handed to a target node (first copies; see `duplicated`).
    pub delivered: u64,
    /// Messages (requests or responses) lost to `drop_prob`.
    pub dropped: u64,
    /// Requests refused because sender and target cannot talk (partition, isolation, disconnection,
    /// crashed target).
    pub refused: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// InstallSnapshot requests (chunks) handed to a target node, second copies of duplicated ones
    /// included. Per target: [`Router::snapshot_chunks_delivered`](crate::Router::snapshot_chunks_delivered).
    pub snapshot_chunks_delivered: u64,
}

/// Numbers of requests, by RPC kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcCounts {
    /// RequestVote requests.
    pub vote: u64,
    /// Pre-vote requests.
    pub pre_vote: u64,
    /// TimeoutNow requests (leadership transfers).
    pub timeout_now: u64,
    /// AppendEntries requests (heartbeats included).
    pub append_entries: u64,
    /// InstallSnapshot requests (one per chunk).
    pub install_snapshot: u64,
    /// ReadIndex requests (followers' reads, forwarded to the leader).
    pub read_index: u64,
}

impl RpcCounts {
    /// All requests, whatever their kind.
    pub fn total(&self) -> u64 {
        self.vote
            + self.pre_vote
            + self.timeout_now
            + self.append_entries
            + self.install_snapshot
            + self.read_index
    }

    fn add(&mut self, kind: RpcKind) {
        match kind {
            RpcKind::Vote => self.vote += 1,
            RpcKind::PreVote => self.pre_vote += 1,
            RpcKind::TimeoutNow => self.timeout_now += 1,
            RpcKind::AppendEntries => self.append_entries += 1,
            RpcKind::InstallSnapshot => self.install_snapshot += 1,
            RpcKind::ReadIndex => self.read_index += 1,
        }
    }
}

/// What the router carried towards one target node
/// ([`Router::stats_for`](crate::Router::stats_for)).
///
/// `sent` counts what the senders asked for, `delivered` what the target got: the difference is what
/// was refused (unreachable target), lost to `drop_prob`, or cut off while in flight, less the
/// second copies of duplicated requests (which `delivered` counts and `sent` does not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Requests addressed to the target: every call of a node's network for it, whatever became of
    /// the request (delivered, refused, lost).
    pub sent: RpcCounts,
    /// Requests handed to the target, both copies of a duplicated one included.
    pub delivered: RpcCounts,
    /// Log entries in the AppendEntries requests of `sent` (an empty heartbeat carries none).
    pub entries_sent: u64,
    /// Bytes of snapshot data (`InstallSnapshotRequest::data`) in the InstallSnapshot requests of
    /// `sent`. Metadata is not counted: this is snapshot payload, not wire bytes.
    pub snapshot_bytes_sent: u64,
}

/// The router's counts and records, updated as requests go through.
#[derive(Default)]
pub(crate) struct StatsBook {
    totals: RouterStats,
    targets: BTreeMap<NodeId, TargetStats>,
    /// `(snapshot, offset)` of every InstallSnapshot request handed to each target, in order of
    /// arrival, second copies of duplicated ones included.
    snapshot_arrivals: BTreeMap<NodeId, Vec<(LogId, u64)>>,
}

impl StatsBook {
    /// A node's network was asked to send `envelope` to `target`.
    pub(crate) fn sent(&mut self, target: NodeId, envelope: &Envelope) {
        let t = self.targets.entry(target).or_default();
        t.sent.add(envelope.kind);
        t.entries_sent += envelope.entries;
        t.snapshot_bytes_sent += envelope.snapshot_bytes;
    }

    /// The request in `envelope` was handed to `target` (`copy`: the second copy of a duplicated one).
    pub(crate) fn delivered(&mut self, target: NodeId, envelope: &Envelope, copy: bool) {
        if copy {
            self.totals.duplicated += 1;
        } else {
            self.totals.delivered += 1;
        }
        self.targets
            .entry(target)
            .or_default()
            .delivered
            .add(envelope.kind);
        if let Some(chunk) = envelope.chunk {
            self.totals.snapshot_chunks_delivered += 1;
            self.snapshot_arrivals
                .entry(target)
                .or_default()
                .push(chunk);
        }
    }

    /// A request was refused: its sender cannot reach its target.
    pub(crate) fn refused(&mut self) {
        self.totals.refused += 1;
    }

    /// A request or an answer was lost to `drop_prob`.
    pub(crate) fn dropped(&mut self) {
        self.totals.dropped += 1;
    }

    pub(crate) fn totals(&self) -> RouterStats {
        self.totals
    }

    pub(crate) fn target(&self, target: NodeId) -> TargetStats {
        self.targets.get(&target).copied().unwrap_or_default()
    }

    pub(crate) fn targets(&self) -> BTreeMap<NodeId, TargetStats> {
        self.targets.clone()
    }

    pub(crate) fn snapshot_arrivals(&self, target: NodeId) -> &[(LogId, u64)] {
        self.snapshot_arrivals
            .get(&target)
            .map_or(&[], Vec::as_slice)
    }

    /// Forgets every count and record.
    pub(crate) fn reset(&mut self) {
        *self = StatsBook::default();
    }
}
