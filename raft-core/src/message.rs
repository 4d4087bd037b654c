//! The RPC messages nodes exchange. All are serde-derivable, so any transport can encode them.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogId, LogIndex, NodeId, SnapshotMeta, Term};

/// RequestVote (Raft paper, figure 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The candidate's term.
    pub term: Term,
    /// The candidate asking for the vote.
    pub candidate_id: NodeId,
    /// The id of the candidate's last log entry: a voter grants only to a log at least as up-to-date as
    /// its own.
    pub last_log_id: LogId,
    /// The election was started by the leader's [`TimeoutNowRequest`] (a leadership transfer): a
    /// voter that still hears from that leader grants it anyway, where it would otherwise refuse any
    /// candidate while its leader is alive.
    #[serde(default)]
    pub leadership_transfer: bool,
}

/// The answer to a [`VoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// The voter's term after handling the request. Higher than the candidate's: the candidate steps down.
    pub term: Term,
    /// Whether the vote was granted. A granted vote is durable on the voter before this reply leaves.
    pub vote_granted: bool,
}

/// A pre-vote (Raft thesis, section 9.6): "would you vote for me in term `term`?", asked before a
/// node campaigns. Answering changes nothing on the voter, not its term and not its vote, so a node
/// that cannot win (cut off, or behind) asks in vain without disturbing anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The term the candidate would campaign in: its current term plus one.
    pub term: Term,
    /// The node asking.
    pub candidate_id: NodeId,
    /// The id of its last log entry.
    pub last_log_id: LogId,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    /// The voter's current term (not changed by the request). Higher than the asking node's: that
    /// node adopts it and stays a follower.
    pub term: Term,
    /// Whether the voter would grant a real vote in the requested term now.
    pub vote_granted: bool,
}

/// TimeoutNow (Raft thesis, section 3.10): the leader tells an up-to-date follower to campaign at
/// once, to hand leadership over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowRequest {
    /// The leader's term.
    pub term: Term,
    /// The leader.
    pub leader_id: NodeId,
}

/// The answer to a [`TimeoutNowRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowResponse {
    /// The follower's term after handling the request (one above the leader's if it campaigned).
    pub term: Term,
    /// Whether the follower started an election.
    pub campaigning: bool,
}

/// AppendEntries (Raft paper, figure 2); with no entries it is a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesRequest<C> {
    /// The leader's term.
    pub term: Term,
    /// The leader, so followers can redirect clients.
    pub leader_id: NodeId,
    /// The id of the entry just before `entries`: the follower must hold exactly it.
    pub prev_log_id: LogId,
    /// The entries to store, in order, starting at `prev_log_id.index + 1`.
    pub entries: Vec<Entry<C>>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// The leader's latest confirmation round when it sent the request, echoed in the answer: an
    /// answer in the leader's term from a majority to round `r` proves no other leader had been
    /// elected when round `r` began (ReadIndex and leases, thesis 6.4). 0 from senders that do not
    /// count rounds.
    #[serde(default)]
    pub round: u64,
}

/// The answer to an [`AppendEntriesRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// The follower's term after handling the request.
    pub term: Term,
    /// What the follower did.
    pub result: AppendResult,
    /// The request's `round`, echoed.
    #[serde(default)]
    pub round: u64,
}

/// A follower asks the leader for a read index (a follower read, thesis 6.4): the leader confirms
/// it still leads, as for its own reads, and answers with its commit index; the follower serves the
/// read once it has applied up to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// The follower's term.
    pub term: Term,
    /// The follower asking.
    pub from: NodeId,
    /// Whether the reads asked for are lease reads: the leader may answer at once while its lease
    /// holds ([`ReadPolicy::Lease`](crate::ReadPolicy)).
    #[serde(default)]
    pub lease: bool,
}

/// The answer to a [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// The answering node's term.
    pub term: Term,
    /// The read index, or why there is none.
    pub result: ReadIndexResult,
}

/// What a leader answers a follower's [`ReadIndexRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadIndexResult {
    /// A read that applies the log up to `index` is linearizable.
    Ready {
        /// The leader's commit index when the read was registered, confirmed by a round.
        index: LogIndex,
    },
    /// The node asked does not lead (or stopped leading before the read was confirmed).
    NotLeader {
        /// The leader it knows of, if any.
        leader_hint: Option<NodeId>,
    },
}

/// The outcome of an AppendEntries at the follower.
///
/// Each variant carries what the leader needs to match the reply to the request it answers, so that a
/// late, duplicated or reordered reply cannot move the leader's view of the follower backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index` (the request's
    /// `prev_log_id.index` plus its number of entries), and those entries are durable.
    Success {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The follower does not hold the request's `prev_log_id`.
    Conflict {
        /// The request's `prev_log_id.index`, identifying the request this answers.
        rejected_index: LogIndex,
        /// The term of the follower's entry at `rejected_index`, if it has one there.
        conflict_term: Option<Term>,
        /// The first index of `conflict_term` in the follower's log, or, without a conflict term, the
        /// follower's last index plus one: where the leader should try next (fast backtracking).
        conflict_index: LogIndex,
    },
    /// The request came from a term older than the follower's; `term` in the response says which.
    StaleTerm,
    /// The request is malformed (entries not consecutive after `prev_log_id`, terms going backwards or
    /// above the request's term, or a conflict with a committed entry). Nothing was changed.
    Invalid,
}

/// InstallSnapshot (Raft paper, figure 13): one chunk of the leader's snapshot, for a follower whose
/// next entry the leader has compacted away.
///
/// Chunks are sent one at a time, in order. The follower assembles them in memory and installs the
/// snapshot only when the chunk with `done` arrives, so a transfer cut off at any point (lost chunk,
/// new leader, crash) leaves the follower's previous state untouched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotRequest {
    /// The leader's term.
    pub term: Term,
    /// The leader, so followers can redirect clients.
    pub leader_id: NodeId,
    /// The snapshot being sent: its last included entry and the membership at that point.
    pub meta: SnapshotMeta,
    /// The byte offset of `data` within the snapshot's data.
    pub offset: u64,
    /// The chunk. Serialized as bytes (`serialize_bytes`: a MessagePack `bin`, not an array of
    /// integers); read from bytes or from a sequence of integers.
    #[serde(with = "snapshot_data")]
    pub data: Vec<u8>,
    /// Whether this chunk ends the snapshot.
    pub done: bool,
}

/// The answer to an [`InstallSnapshotRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The follower's term after handling the request.
    pub term: Term,
    /// What the follower did.
    pub result: SnapshotResult,
}

/// The outcome of an InstallSnapshot chunk at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotResult {
    /// The follower holds the snapshot's bytes up to `next_offset` and wants the chunk there next. A
    /// `next_offset` other than `offset + data.len()` asks the leader to resume (after a lost chunk)
    /// or restart (after the follower lost what it had, at 0).
    Accepted {
        /// The snapshot the answer is about.
        snapshot: LogId,
        /// The request's `offset`, identifying the chunk this answers.
        offset: u64,
        /// Where the follower wants the next chunk to start.
        next_offset: u64,
    },
    /// The follower's log now matches the leader's up to `snapshot` (it installed the snapshot, durably,
    /// or it already held that entry).
    Installed {
        /// The snapshot's last log id.
        snapshot: LogId,
    },
    /// The request came from a term older than the follower's; `term` in the response says which.
    StaleTerm,
    /// The request is malformed (a last log id newer than the request's term, an empty membership).
    /// Nothing was changed.
    Invalid,
}

/// Every RPC request a node sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<C> {
    /// A RequestVote.
    Vote(VoteRequest),
    /// A pre-vote.
    PreVote(PreVoteRequest),
    /// A leader's order to campaign now.
    TimeoutNow(TimeoutNowRequest),
    /// An AppendEntries.
    AppendEntries(AppendEntriesRequest<C>),
    /// A chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest),
    /// A follower's request for a read index. Sent by the driver, never by the engine.
    ReadIndex(ReadIndexRequest),
}

/// Every RPC response a node receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to a RequestVote.
    Vote(VoteResponse),
    /// The answer to a pre-vote.
    PreVote(PreVoteResponse),
    /// The answer to a TimeoutNow.
    TimeoutNow(TimeoutNowResponse),
    /// The answer to an AppendEntries.
    AppendEntries(AppendEntriesResponse),
    /// The answer to an InstallSnapshot.
    InstallSnapshot(InstallSnapshotResponse),
    /// The answer to a ReadIndex.
    ReadIndex(ReadIndexResponse),
}

/// Serde for snapshot data: written as bytes, so that binary formats carry it as one block (a
/// MessagePack `bin`) rather than one integer per byte, and read back as one block too; a sequence of
/// integers (what formats without a bytes type write, like JSON) is accepted as well.
mod snapshot_data {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(data)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("snapshot data as bytes or a sequence of bytes")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint comes from the peer: cap what it makes us reserve up front.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, Membership};

    fn request(data: Vec<u8>) -> InstallSnapshotRequest {
        InstallSnapshotRequest {
            term: 2,
            leader_id: 1,
            meta: SnapshotMeta {
                last_log_id: LogId::new(2, 9),
                membership: Membership::new([1, 2, 3]),
            },
            offset: 0,
            data,
            done: true,
        }
    }

    #[test]
    fn snapshot_data_round_trips_through_json_as_integers() {
        let req = request(vec![0, 1, 200, 255]);
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"data\":[0,1,200,255]"), "{json}");
        let back: InstallSnapshotRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
        let bad = json.replace("[0,1,200,255]", "[0,1,300]");
        assert!(
            serde_json::from_str::<InstallSnapshotRequest>(&bad).is_err(),
            "300 is no byte"
        );
    }
}
