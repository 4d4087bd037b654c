//! Linearizable reads without log entries (Raft thesis, section 6.4).
//!
//! **ReadIndex.** The leader records its commit index as the read's index, then confirms it still
//! leads: it starts a *round*, whose number every AppendEntries it sends from then on carries and
//! every answer echoes; once a majority of the voters (of both configurations while joint) answered
//! in its term to that round or a later one, no other leader can have been elected before the round
//! began, so nothing committed before the read arrived is missing from the read index. The executor
//! then serves the read once the state machine has applied up to the index. Reads registered in the
//! same batch share one round; heartbeats start rounds too, and replication carries them.
//!
//! **The leader's first commit.** A new leader's commit index may lag what earlier leaders committed
//! until it has committed an entry of its own term (its blank entry); reads that arrive before are
//! parked and registered then.
//!
//! **Leases.** With [`ReadPolicy::Lease`](crate::ReadPolicy), a read asked for in lease mode is
//! served at once while the leader is within `election_timeout_min - clock_drift_bound` of the start
//! of its latest confirmed round: until then, every voter that answered that round refuses to vote
//! for anyone else (stickiness). A transfer in progress suspends the lease, and once its
//! TimeoutNow has left, the lease is gone for the rest of the term: the target's votes ignore
//! stickiness, and they may come after the transfer was abandoned; the config docs state the clock
//! assumption.
//!
//! A leader that steps down fails its reads ([`ReadFailed`]): nothing was read, so a retry is safe.

use std::collections::VecDeque;

use super::Engine;
use crate::types::{LogIndex, NodeId, Role};

use super::NotLeader;

/// Names a read for the executor, which chooses it (unique among its reads in progress).
pub type ReadId = u64;

/// A read that may be served once the state machine has applied up to `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadReady {
    /// The read.
    pub id: ReadId,
    /// Its read index.
    pub index: LogIndex,
}

/// A read that cannot be confirmed: this node stopped leading first. Nothing was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailed {
    /// The read.
    pub id: ReadId,
    /// The leader this node knows of now, if any.
    pub leader_hint: Option<NodeId>,
}

/// How many unconfirmed rounds' start times are kept for the lease. Older ones are forgotten: a
/// later round's confirmation then renews the lease, a forgotten one's cannot (safe, only shorter).
const MAX_TRACKED_ROUNDS: usize = 1024;

/// A leader's reads and confirmation rounds, for its current term.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// The latest round started.
    round: u64,
    /// Whether a round was started since the output was last taken: reads registered meanwhile
    /// join it (its messages have not left yet).
    round_in_batch: bool,
    /// Start times (engine ms) of the rounds not yet confirmed, oldest first.
    starts: VecDeque<(u64, u64)>,
    /// The latest round a majority answered.
    confirmed: u64,
    /// When the latest confirmed round started: the lease runs from there.
    lease_start: Option<u64>,
    /// Registered reads waiting for their round, in round order.
    waiting: VecDeque<WaitingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    parked: Vec<ReadId>,
    /// A TimeoutNow left in this term: no lease until the term ends (see
    /// [`Engine::forfeit_lease`]).
    lease_forfeited: bool,
}

#[derive(Debug)]
struct WaitingRead {
    id: ReadId,
    index: LogIndex,
    round: u64,
}

impl Reads {
    /// The round AppendEntries sent now carry.
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// The state of a leader taking office: its first round is the one its blank entry's
    /// replication carries.
    fn taking_office(now: u64) -> Self {
        Reads {
            round: 1,
            round_in_batch: true,
            starts: VecDeque::from([(1, now)]),
            ..Reads::default()
        }
    }
}

impl<C: Clone> Engine<C> {
    /// Registers read `id` on the leader. With `lease`, and a lease in force
    /// ([`ReadPolicy::Lease`](crate::ReadPolicy)), it is ready at once; otherwise once a round of
    /// heartbeats started now is answered by a majority. Either way it comes out in
    /// `Output::reads` with its read index, or in `Output::reads_failed` if this node stops leading
    /// first.
    ///
    /// # Errors
    /// [`NotLeader`] on a node that does not lead; nothing is registered.
    pub fn read_index(&mut self, id: ReadId, lease: bool) -> Result<(), NotLeader> {
        if self.role != Role::Leader {
            return Err(NotLeader {
                leader_hint: self.leader,
            });
        }
        if !self.committed_in_term() {
            self.reads.parked.push(id);
            return Ok(());
        }
        let index = self.commit_index;
        if lease && self.lease_valid() {
            self.out.reads.push(ReadReady { id, index });
            return Ok(());
        }
        let round = self.start_round();
        self.reads
            .waiting
            .push_back(WaitingRead { id, index, round });
        self.confirm_rounds();
        Ok(())
    }

    /// Whether a lease read could be served now without a round: leases configured, no transfer
    /// in progress and no TimeoutNow sent in this term, an entry of this term committed, and the
    /// latest confirmed round started less than the lease ago.
    pub fn lease_valid(&self) -> bool {
        self.role == Role::Leader
            && self.lease_ms > 0
            && self.transfer.is_none()
            && !self.reads.lease_forfeited
            && self.committed_in_term()
            && self
                .reads
                .lease_start
                .is_some_and(|start| self.now < start.saturating_add(self.lease_ms))
    }

    /// Ends the lease for the rest of this term: a TimeoutNow is leaving. The target's election
    /// ignores stickiness, and it may come at any time from now, after the transfer was abandoned
    /// too (the TimeoutNow, or the target's vote requests, can arrive late), so no confirmed round
    /// can vouch any more that the voters will not elect another leader. Reads go through rounds
    /// until this node leads again.
    pub(super) fn forfeit_lease(&mut self) {
        self.reads.lease_forfeited = true;
    }

    /// Whether the leader has committed an entry of its current term.
    fn committed_in_term(&self) -> bool {
        self.log.term_at(self.commit_index) == Some(self.hard_state.term)
    }

    /// Starts a round (a heartbeat to every follower, carrying the new round number), unless one
    /// was started since the output was last taken; returns the round reads registered now wait for.
    pub(super) fn start_round(&mut self) -> u64 {
        if !self.reads.round_in_batch {
            let reads = &mut self.reads;
            reads.round = reads.round.saturating_add(1);
            reads.round_in_batch = true;
            if reads.starts.len() >= MAX_TRACKED_ROUNDS {
                reads.starts.pop_front();
            }
            reads.starts.push_back((reads.round, self.now));
            self.broadcast_heartbeat();
        }
        self.reads.round
    }

    /// Records that `from` answered round `round` in this leader's term, and releases the reads a
    /// majority has now confirmed. A round above the latest started is a peer's invention: ignored.
    pub(super) fn round_answered(&mut self, from: NodeId, round: u64) {
        if round > self.reads.round {
            return;
        }
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.acked_round = pr.acked_round.max(round);
        }
        // Counting a majority costs a sort per answer: only worth it when a read waits or a lease
        // is to be renewed. Without either, a later read starts a round of its own anyway.
        if self.lease_ms > 0 || !self.reads.waiting.is_empty() {
            self.confirm_rounds();
        }
    }

    /// Moves the confirmed round forward to the latest round a majority of the voters answered (this
    /// leader counts for the latest), renews the lease, and releases the reads waiting for it.
    fn confirm_rounds(&mut self) {
        let own = self.reads.round;
        let confirmed = self.membership.committed_index(|v| {
            if v == self.id {
                own
            } else {
                self.progress.get(&v).map_or(0, |p| p.acked_round)
            }
        });
        let reads = &mut self.reads;
        if confirmed <= reads.confirmed {
            return;
        }
        reads.confirmed = confirmed;
        while let Some(&(round, start)) = reads.starts.front() {
            if round > confirmed {
                break;
            }
            reads.starts.pop_front();
            if round == confirmed {
                reads.lease_start = Some(start);
            }
        }
        while reads.waiting.front().is_some_and(|r| r.round <= confirmed) {
            if let Some(r) = reads.waiting.pop_front() {
                self.out.reads.push(ReadReady {
                    id: r.id,
                    index: r.index,
                });
            }
        }
    }

    /// On a leader that has just committed an entry of its term: registers the reads parked until
    /// then, at the new commit index, in a new round.
    pub(super) fn register_parked_reads(&mut self) {
        if self.reads.parked.is_empty() || !self.committed_in_term() {
            return;
        }
        let index = self.commit_index;
        let round = self.start_round();
        for id in std::mem::take(&mut self.reads.parked) {
            self.reads
                .waiting
                .push_back(WaitingRead { id, index, round });
        }
        self.confirm_rounds();
    }

    /// Fails every read in progress (this node stops leading) and forgets the rounds.
    pub(super) fn fail_reads(&mut self) {
        let reads = std::mem::take(&mut self.reads);
        let leader_hint = self.leader.filter(|&l| l != self.id);
        let ids = reads.waiting.iter().map(|r| r.id).chain(reads.parked);
        self.out
            .reads_failed
            .extend(ids.map(|id| ReadFailed { id, leader_hint }));
    }

    /// Resets the rounds for a leader taking office at engine time `now`.
    pub(super) fn begin_rounds(&mut self) {
        self.reads = Reads::taking_office(self.now);
    }

    /// Marks the end of a batch: the next read starts a new round.
    pub(super) fn end_round_batch(&mut self) {
        self.reads.round_in_batch = false;
    }
}
