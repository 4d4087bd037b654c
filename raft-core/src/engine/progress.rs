//! The leader's view of one follower: how far its log matches, and how replication to it flows.

use std::collections::VecDeque;

use crate::types::{LogId, LogIndex};

/// Replication mode of a follower (as in etcd-io/raft).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the follower's log matches: one AppendEntries at a time, backing
    /// up on conflicts.
    Probe,
    /// The follower's log matches up to `match_index`: AppendEntries are pipelined, several in flight.
    Replicate,
    /// The entries the follower needs are compacted away: the leader sends its snapshot, one chunk at a
    /// time.
    Snapshot,
}

/// A snapshot being sent to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    pub(crate) snapshot: LogId,
    pub(crate) offset: u64,
    pub(crate) in_flight: Option<u64>,
}

impl SnapshotTransfer {
    /// The snapshot being sent (its last log id).
    pub fn snapshot(&self) -> LogId {
        self.snapshot
    }

    /// The byte offset of the next chunk to send: what the follower has confirmed holding.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The offset of the chunk sent and not yet answered, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// A transfer of `snapshot` from its first byte, nothing sent yet.
    pub(crate) fn start(snapshot: LogId) -> Self {
        SnapshotTransfer {
            snapshot,
            offset: 0,
            in_flight: None,
        }
    }
}

/// What the leader knows of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In probe state: whether a probe is outstanding (no more are sent until it is answered or the
    /// next heartbeat).
    pub(crate) probe_sent: bool,
    /// In replicate state: the last index of each AppendEntries in flight, oldest first.
    pub(crate) in_flight: VecDeque<LogIndex>,
    /// When (engine time, ms) the follower last answered in the current term.
    pub(crate) last_ack_ms: u64,
    /// The latest confirmation round the follower answered in this leader's term (see
    /// `engine::read`).
    pub(crate) acked_round: u64,
    pub(crate) transfer: Option<SnapshotTransfer>,
}

impl Progress {
    /// The highest index known to match the leader's log (and to be durable on the follower).
    pub fn match_index(&self) -> LogIndex {
        self.match_index
    }

    /// The next index to send.
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }

    /// Probing, pipelining, or sending a snapshot.
    pub fn state(&self) -> ReplicationState {
        self.state
    }

    /// In snapshot state: the transfer in progress.
    pub fn transfer(&self) -> Option<&SnapshotTransfer> {
        self.transfer.as_ref()
    }

    pub(crate) fn new(next_index: LogIndex, now: u64) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            in_flight: VecDeque::new(),
            last_ack_ms: now,
            acked_round: 0,
            transfer: None,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.in_flight.clear();
        self.transfer = None;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.in_flight.clear();
        self.transfer = None;
    }

    /// Starts (or restarts, from byte 0) sending `snapshot`.
    pub(crate) fn become_snapshot(&mut self, snapshot: LogId) {
        self.state = ReplicationState::Snapshot;
        self.next_index = snapshot.index + 1;
        self.probe_sent = false;
        self.in_flight.clear();
        self.transfer = Some(SnapshotTransfer::start(snapshot));
    }

    /// Records a success that covers `match_index`. Returns whether the match advanced.
    pub(crate) fn on_success(&mut self, match_index: LogIndex) -> bool {
        while self.in_flight.front().is_some_and(|&i| i <= match_index) {
            self.in_flight.pop_front();
        }
        if match_index > self.match_index {
            self.match_index = match_index;
            self.next_index = self.next_index.max(match_index + 1);
            true
        } else {
            false
        }
    }
}
