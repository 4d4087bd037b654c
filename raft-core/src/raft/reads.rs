//! The driver's side of linearizable reads: who waits for which read, on the leader (local callers
//! and followers' `ReadIndex` RPCs) and on a follower (its callers, whose reads it forwards to the
//! leader in batches), and the wait for the state machine to apply up to each read index.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use crate::engine::{ReadFailed, ReadId, ReadReady};
use crate::error::ReadError;
use crate::message::{ReadIndexRequest, ReadIndexResponse, ReadIndexResult};
use crate::types::{LogIndex, NodeId, Term};

/// Answers a caller of `Raft::read_index`: the read index, once applied.
pub(crate) type ReadReply = oneshot::Sender<Result<LogIndex, ReadError>>;

/// Who waits for a read registered with the engine.
enum Waiter {
    /// A caller on this node: answered once the state machine has applied up to the index.
    Local(ReadReply),
    /// A follower's RPC: answered with the index at once (the follower waits for its own apply).
    Remote(oneshot::Sender<ReadIndexResponse>),
}

/// A caller whose read this follower forwards to the leader.
struct Forwarded {
    lease: bool,
    reply: ReadReply,
}

/// Every read in progress on one node.
#[derive(Default)]
pub(crate) struct Reads {
    next_id: ReadId,
    /// Reads registered with the engine (this node leads, or led when they arrived). Ordered, not
    /// hashed: when the node stops, the waiters are dropped (and their callers woken) in this
    /// map's order, which must not depend on a random hasher, or a seeded simulation would not
    /// replay.
    registered: BTreeMap<ReadId, Waiter>,
    /// Local reads with a read index, waiting for the state machine to apply up to it.
    applying: BTreeMap<LogIndex, Vec<ReadReply>>,
    /// The batch of forwarded reads whose `ReadIndex` RPC is in flight.
    forwarding: Vec<Forwarded>,
    /// Forwarded reads that arrived while one was in flight: the next batch.
    forward_next: Vec<Forwarded>,
}

impl Reads {
    /// A new id for a read to register with the engine, answered by `reply` on this node.
    pub(crate) fn register_local(&mut self, reply: ReadReply) -> ReadId {
        self.register(Waiter::Local(reply))
    }

    /// A new id for a follower's read to register with the engine, answered by `reply`.
    pub(crate) fn register_remote(&mut self, reply: oneshot::Sender<ReadIndexResponse>) -> ReadId {
        self.register(Waiter::Remote(reply))
    }

    fn register(&mut self, waiter: Waiter) -> ReadId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.registered.insert(id, waiter);
        id
    }

    /// A read the engine refused at once (not the leader): answers it.
    pub(crate) fn refuse(&mut self, id: ReadId, term: Term, leader_hint: Option<NodeId>) {
        self.answer_failed(
            ReadFailed { id, leader_hint },
            term,
            ReadError::NotLeader { leader_hint },
        );
    }

    /// The engine confirmed `ready`: a follower gets its index; a local caller waits for the apply.
    pub(crate) fn confirmed(&mut self, ready: ReadReady, term: Term, applied: LogIndex) {
        match self.registered.remove(&ready.id) {
            Some(Waiter::Remote(reply)) => {
                let _ = reply.send(ReadIndexResponse {
                    term,
                    result: ReadIndexResult::Ready { index: ready.index },
                });
            }
            Some(Waiter::Local(reply)) => self.wait_applied(ready.index, reply, applied),
            None => {}
        }
    }

    /// The engine gave up on `failed` (this node stopped leading).
    pub(crate) fn failed(&mut self, failed: ReadFailed, term: Term) {
        let leader_hint = failed.leader_hint;
        self.answer_failed(failed, term, ReadError::LeadershipLost { leader_hint });
    }

    fn answer_failed(&mut self, failed: ReadFailed, term: Term, local: ReadError) {
        match self.registered.remove(&failed.id) {
            Some(Waiter::Remote(reply)) => {
                let _ = reply.send(ReadIndexResponse {
                    term,
                    result: ReadIndexResult::NotLeader {
                        leader_hint: failed.leader_hint,
                    },
                });
            }
            Some(Waiter::Local(reply)) => {
                let _ = reply.send(Err(local));
            }
            None => {}
        }
    }

    /// Answers `reply` once the state machine has applied up to `index` (at once if it has).
    fn wait_applied(&mut self, index: LogIndex, reply: ReadReply, applied: LogIndex) {
        if index <= applied {
            let _ = reply.send(Ok(index));
        } else {
            self.applying.entry(index).or_default().push(reply);
        }
    }

    /// The state machine applied up to `applied`: answers the reads waiting for it.
    pub(crate) fn applied(&mut self, applied: LogIndex) {
        while let Some(entry) = self.applying.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let index = *entry.key();
            for reply in entry.remove() {
                let _ = reply.send(Ok(index));
            }
        }
    }

    /// A read to forward to the leader. Returns the request to send if no batch is in flight (this
    /// read starts one); otherwise it joins the next batch.
    pub(crate) fn forward(
        &mut self,
        lease: bool,
        reply: ReadReply,
        term: Term,
        from: NodeId,
    ) -> Option<ReadIndexRequest> {
        let read = Forwarded { lease, reply };
        if self.forwarding.is_empty() {
            self.forwarding.push(read);
            Some(Self::request(&self.forwarding, term, from))
        } else {
            self.forward_next.push(read);
            None
        }
    }

    /// The leader answered the batch in flight (or it failed): its reads get the index (and wait
    /// for the apply) or an error. Returns the next batch's request, if reads are waiting for one.
    pub(crate) fn forward_answered(
        &mut self,
        answer: Result<ReadIndexResponse, String>,
        applied: LogIndex,
        term: Term,
        from: NodeId,
    ) -> Option<ReadIndexRequest> {
        let batch = std::mem::take(&mut self.forwarding);
        for read in batch {
            match &answer {
                Ok(ReadIndexResponse {
                    result: ReadIndexResult::Ready { index },
                    ..
                }) => self.wait_applied(*index, read.reply, applied),
                Ok(ReadIndexResponse {
                    result: ReadIndexResult::NotLeader { leader_hint },
                    ..
                }) => {
                    let _ = read.reply.send(Err(ReadError::NotLeader {
                        leader_hint: *leader_hint,
                    }));
                }
                Err(_) => {
                    let _ = read
                        .reply
                        .send(Err(ReadError::LeadershipLost { leader_hint: None }));
                }
            }
        }
        if self.forward_next.is_empty() {
            return None;
        }
        self.forwarding = std::mem::take(&mut self.forward_next);
        Some(Self::request(&self.forwarding, term, from))
    }

    /// The request for a batch: a lease read only if every read in it asked for one.
    fn request(batch: &[Forwarded], term: Term, from: NodeId) -> ReadIndexRequest {
        ReadIndexRequest {
            term,
            from,
            lease: batch.iter().all(|r| r.lease),
        }
    }

    /// Fails the forwarded reads waiting for the next batch (no leader to send it to).
    pub(crate) fn fail_queued_forwards(&mut self, leader_hint: Option<NodeId>) {
        for read in self.forward_next.drain(..) {
            let _ = read.reply.send(Err(ReadError::NotLeader { leader_hint }));
        }
    }
}
