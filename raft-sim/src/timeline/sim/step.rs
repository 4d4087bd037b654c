//! One step of one node: the input handed to its engine with the driver's timing, its output
//! executed by the reference executor, and what that did carried out on the network.

use raft_core::engine::testing::Effect;
use raft_core::{AppendResult, EntryPayload, LogIndex, NodeId, Request, Response, Role, Term};

use super::{Input, Sim};
use crate::timeline::event::{AppendRefusal, Event};
use crate::timeline::network::Msg;

impl Sim {
    /// Hands `input` to node `id` and executes what its engine asks for, with the driver's timing:
    /// the engine's clock moves to now before the input (no timer fires), the timers due fire after
    /// it (`tick`), then the output is executed (`flush`).
    pub(super) fn step(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        let before = self.snap(id);
        self.executor_mut(id).engine_mut().advance_clock(now);
        let mut cause = None;
        let mut append_from = None;
        // Shown after the role change it causes (a refused AppendEntries still makes a follower).
        let mut refused = None;
        match input {
            Input::Tick => {}
            Input::Request {
                from,
                from_inc,
                req,
            } => {
                cause = Some(from);
                if matches!(req, Request::AppendEntries(_)) {
                    append_from = Some(from);
                }
                refused = self.receive(id, from, req, before.term);
                self.node_mut(id).reply_to.push_back((from, from_inc));
            }
            Input::Response { from, resp } => {
                cause = Some(from);
                let counts = matches!(&resp, Response::Vote(r)
                    if before.role == Role::Candidate && r.term == before.term && r.vote_granted);
                if counts {
                    self.node_mut(id).votes.insert(from);
                }
                self.executor_mut(id).handle_response(from, resp);
                let engine = self.executor(id).engine();
                if counts && engine.role() == Role::Candidate {
                    let votes = self.node(id).votes.len();
                    let needed = engine.membership().quorum();
                    self.record(Event::VoteCounted {
                        candidate: id,
                        voter: from,
                        term: before.term,
                        votes,
                        needed,
                    });
                }
            }
            Input::Unreachable(to) => self.executor_mut(id).engine_mut().handle_unreachable(to),
            Input::Propose(values) => {
                for value in values {
                    match self.executor_mut(id).engine_mut().propose(value) {
                        Ok(at) => {
                            self.node_mut(id).pending.push((at, value));
                            self.record(Event::Proposed {
                                node: id,
                                value,
                                at,
                            });
                        }
                        Err(e) => self.record(Event::NotLeader {
                            node: id,
                            value,
                            leader_hint: e.leader_hint,
                        }),
                    }
                }
            }
        }
        self.observe(id, before, cause);
        if let Some(event) = refused {
            self.record(event);
        }
        let before = self.snap(id);
        self.executor_mut(id).engine_mut().tick(now);
        self.observe(id, before, None);
        self.flush(id, append_from);
        self.settle_writes(id);
    }

    /// Hands `from`'s request to node `id`'s executor, which holds the reply until the flush, and
    /// narrates the engine's decision: a vote granted or refused (recorded now), or an AppendEntries
    /// refused (returned, to be recorded after the role change it causes).
    fn receive(
        &mut self,
        id: NodeId,
        from: NodeId,
        req: Request<u64>,
        term_before: Term,
    ) -> Option<Event> {
        match req {
            Request::Vote(req) => {
                let refusal = self.executor(id).engine().vote_refusal(&req);
                let reply = self.executor_mut(id).receive(Request::Vote(req.clone()));
                let granted = matches!(&reply, Some(Response::Vote(r)) if r.vote_granted);
                assert_eq!(
                    granted,
                    refusal.is_none(),
                    "node {id} answered {reply:?} to {req:?}, but its engine gave the reason \
                     {refusal:?}"
                );
                self.record(match refusal {
                    None => Event::VoteGranted {
                        voter: id,
                        candidate: req.candidate_id,
                        term: req.term,
                        voter_term_before: term_before,
                    },
                    Some(reason) => Event::VoteRefused {
                        voter: id,
                        candidate: req.candidate_id,
                        term: req.term,
                        reason,
                    },
                });
                None
            }
            Request::AppendEntries(req) => {
                let (term, prev) = (req.term, req.prev_log_id);
                let held_term_at_prev = self.term_at(id, prev.index);
                let last_index = self.executor(id).engine().last_log_id().index;
                let reply = self.executor_mut(id).receive(Request::AppendEntries(req));
                let Some(Response::AppendEntries(resp)) = reply else {
                    unreachable!("an AppendEntries is answered in kind, got {reply:?}")
                };
                let reason = match resp.result {
                    AppendResult::Success { .. } => None,
                    AppendResult::StaleTerm => Some(AppendRefusal::StaleTerm {
                        follower_term: resp.term,
                    }),
                    AppendResult::Conflict { .. } => Some(match held_term_at_prev {
                        Some(t) => AppendRefusal::TermMismatch { held_term: t },
                        None => AppendRefusal::Missing { last_index },
                    }),
                    AppendResult::Invalid => Some(AppendRefusal::Invalid),
                };
                reason.map(|reason| Event::AppendRefused {
                    node: id,
                    leader: from,
                    term,
                    prev,
                    reason,
                })
            }
            // The timeline's nodes build no snapshots, run the paper's elections without pre-votes,
            // transfer no leadership and serve no reads, so none of these is sent; one that
            // arrives is handled all the same, without a line in the trace.
            other @ (Request::InstallSnapshot(_)
            | Request::PreVote(_)
            | Request::TimeoutNow(_)
            | Request::ReadIndex(_)) => {
                self.executor_mut(id).receive(other);
                None
            }
        }
    }

    fn term_at(&self, id: NodeId, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.engine(id)
            .and_then(|e| e.entry(index))
            .map(|e| e.log_id.term)
    }

    /// Executes node `id`'s outputs on its executor ([`Executor::flush`]: the contract's seven steps,
    /// in order) and carries out what it did: each request sent goes on the network, each reply to
    /// the requester it answers, in the order the requests came; truncations, entries stored and
    /// entries applied are narrated. `append_from` is the leader whose AppendEntries this step
    /// handled: the entries appended are the ones it sent.
    pub(super) fn flush(&mut self, id: NodeId, append_from: Option<NodeId>) {
        let executed = match self.executor_mut(id).flush() {
            Ok(executed) => executed,
            Err(violation) => panic!("node {id} broke the executor contract: {violation}"),
        };
        let inc = self.node(id).incarnation;
        for effect in executed.effects {
            match effect {
                Effect::Send { to, request } => self.send(Msg::Request {
                    from: id,
                    from_inc: inc,
                    to,
                    req: request,
                }),
                Effect::Truncate { from, removed } => {
                    if !removed.is_empty() {
                        self.record(Event::Truncated {
                            node: id,
                            from,
                            removed,
                        });
                    }
                }
                Effect::Append(entries) => {
                    if let (Some(leader), Some(first), Some(last)) =
                        (append_from, entries.first(), entries.last())
                    {
                        self.record(Event::Stored {
                            node: id,
                            leader,
                            first: first.log_id,
                            last: last.log_id,
                        });
                    }
                }
                Effect::Reply(resp) => {
                    let (to, to_inc) = self
                        .node_mut(id)
                        .reply_to
                        .pop_front()
                        .expect("the executor releases one reply per request received");
                    self.send(Msg::Response {
                        from: id,
                        to,
                        to_inc,
                        resp,
                    });
                }
                Effect::Apply(entries) => {
                    if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                        let writes = entries
                            .iter()
                            .filter_map(|e| match *e.payload {
                                EntryPayload::Command(v) => Some((e.log_id, v)),
                                _ => None,
                            })
                            .collect();
                        self.on_applied(id, first.log_id.index, last.log_id, writes);
                    }
                }
                // What the trace shows only through its consequences: the hard state behind the
                // votes and terms narrated, and snapshots, which the timeline's nodes never build.
                Effect::SaveHardState(_)
                | Effect::InstallSnapshot { .. }
                | Effect::Purge(_)
                | Effect::SnapshotSendFailed { .. }
                | Effect::Restore(_)
                | Effect::ReadReady(_)
                | Effect::ReadFailed(_) => {}
            }
        }
    }
}
