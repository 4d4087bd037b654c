//! What the trace says about a step: role and term changes, commits, and the answers clients get.

use raft_core::{LogId, LogIndex, NodeId, Role, Term};

use super::Sim;
use crate::timeline::event::{Event, StepDownReason};

/// What [`Sim::observe`] compares before and after an input.
#[derive(Clone, Copy)]
pub(super) struct Snap {
    pub(super) role: Role,
    pub(super) term: Term,
    pub(super) leader: Option<NodeId>,
    pub(super) deadline: u64,
}

impl Sim {
    /// What [`observe`](Self::observe) compares, read from running node `id` now.
    pub(super) fn snap(&self, id: NodeId) -> Snap {
        let e = self.executor(id).engine();
        Snap {
            role: e.role(),
            term: e.term(),
            leader: e.leader(),
            deadline: e.next_deadline(),
        }
    }

    /// Records role and term changes of node `id` since `before`.
    pub(super) fn observe(&mut self, id: NodeId, before: Snap, cause: Option<NodeId>) {
        let after = self.snap(id);
        let now = self.now;
        let campaigned = after.term > before.term
            && (after.role == Role::Candidate
                || (after.role == Role::Leader && before.role != Role::Leader));
        if campaigned {
            let waited_ms = now - self.node(id).timer_since;
            let asks: Vec<NodeId> = self
                .executor(id)
                .engine()
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|&v| v != id)
                .collect();
            let node = self.node_mut(id);
            node.votes.clear();
            node.votes.insert(id);
            self.record(Event::ElectionTimeout {
                node: id,
                term: after.term,
                waited_ms,
                was: before.role,
                asks,
            });
        }
        if before.role != Role::Follower && after.role == Role::Follower {
            let reason = if after.term > before.term {
                StepDownReason::HigherTerm {
                    term: after.term,
                    from: cause,
                }
            } else if before.role == Role::Leader {
                StepDownReason::CheckQuorum {
                    window_ms: self.config.election_timeout_max.as_millis() as u64,
                }
            } else {
                StepDownReason::LeaderElected {
                    leader: after.leader.or(cause).unwrap_or_default(),
                }
            };
            self.record(Event::SteppedDown {
                node: id,
                was: before.role,
                term: before.term,
                reason,
            });
        }
        if after.role == Role::Leader && before.role != Role::Leader {
            let votes: Vec<NodeId> = self.node(id).votes.iter().copied().collect();
            let blank = self.executor(id).engine().last_log_id();
            self.record(Event::BecameLeader {
                node: id,
                term: after.term,
                votes,
                blank,
            });
        }
        if after.role == Role::Follower {
            if let Some(leader) = after.leader {
                if before.leader != Some(leader) || before.term != after.term {
                    self.record(Event::FollowsLeader {
                        node: id,
                        leader,
                        term: after.term,
                    });
                }
            }
        }
        if after.role != Role::Leader && after.deadline != before.deadline {
            self.node_mut(id).timer_since = now;
        }
    }

    pub(super) fn on_applied(
        &mut self,
        id: NodeId,
        first: LogIndex,
        last: LogId,
        writes: Vec<(LogId, u64)>,
    ) {
        let engine = self.executor(id).engine();
        let by_leader = engine.role() == Role::Leader;
        let writes = if by_leader { writes } else { Vec::new() };
        let holders: Vec<NodeId> = if by_leader {
            let mut h: Vec<NodeId> = engine
                .progress()
                .iter()
                .filter(|(_, p)| p.match_index() >= last.index)
                .map(|(&p, _)| p)
                .collect();
            h.push(id);
            h.sort_unstable();
            h
        } else {
            Vec::new()
        };
        let leader = engine.leader();
        self.record(Event::Committed {
            node: id,
            by_leader,
            leader,
            first,
            last,
            holders,
            writes,
        });
        // Client writes are answered once applied (rule 7).
        let engine = self.executor(id).engine();
        let mut answers = Vec::new();
        let node = &self.node(id);
        for &(at, value) in node.pending.iter().filter(|(at, _)| at.index <= last.index) {
            let committed_here = engine.entry(at.index).map(|e| e.log_id) == Some(at);
            answers.push((at, value, committed_here));
        }
        self.node_mut(id)
            .pending
            .retain(|(at, _)| at.index > last.index);
        for (at, value, ok) in answers {
            self.record(if ok {
                Event::WriteAcked {
                    node: id,
                    value,
                    at,
                }
            } else {
                Event::WriteOutcomeUnknown {
                    node: id,
                    value,
                    at,
                    crashed: false,
                }
            });
        }
    }

    /// Fails the pending writes of a node that is no longer leader of their term (as the driver does).
    pub(super) fn settle_writes(&mut self, id: NodeId) {
        let engine = self.executor(id).engine();
        let (role, term) = (engine.role(), engine.term());
        let node = self.node_mut(id);
        if node.pending.is_empty() {
            return;
        }
        let failed: Vec<(LogId, u64)> = if role != Role::Leader {
            std::mem::take(&mut node.pending)
        } else {
            let (keep, fail) = node.pending.drain(..).partition(|(at, _)| at.term == term);
            node.pending = keep;
            fail
        };
        for (at, value) in failed {
            self.record(Event::WriteOutcomeUnknown {
                node: id,
                value,
                at,
                crashed: false,
            });
        }
    }
}
