//! Membership changes on the leader (Raft thesis, chapter 4).
//!
//! * **Learners** are added and removed in one step: they count for no majority, so the old and the
//!   new configuration have the same quorums.
//! * **Voters** change through the joint configuration C_old,new (section 4.3): the leader appends
//!   it; once it is committed (by majorities of both), the leader appends C_new; once C_new is
//!   committed, a leader that is not one of its voters hands leadership to the most up-to-date
//!   voter with a leadership transfer (so the cluster does not wait an election timeout), and steps
//!   down without one if the transfer fails.
//! * **One change at a time:** a change is refused while a membership entry is uncommitted or a
//!   joint configuration is in force.
//! * **A leader first commits an entry of its own term** (its blank entry) before it starts a change:
//!   until then it cannot know which membership entries of earlier terms are committed, and a change
//!   based on an uncommitted one could give two disjoint majorities (the single-server change bug,
//!   Ongaro on raft-dev, 2015).
//! * **A learner becomes a voter only once caught up** (within `Config::max_learner_lag` entries,
//!   and answering): a voter far behind would hold up commitment.
//!
//! Every node uses the latest membership in its log, committed or not (section 4.1); truncating a
//! membership entry reverts to the one before it (`Engine::refresh_membership`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Engine, Progress, ReplicationState};
use crate::error::MembershipError;
use crate::types::{Entry, EntryPayload, LogId, Membership, Node, NodeId, Role};

/// A change of the cluster's membership, as asked of the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds `id` as a learner reached at `node` (or updates a learner's address).
    AddLearner {
        /// The node.
        id: NodeId,
        /// Where it is reached.
        node: Node,
    },
    /// Makes learner `id` a voter (through a joint configuration).
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Makes voter `id` a learner (through a joint configuration).
    Demote {
        /// The voter.
        id: NodeId,
    },
    /// Removes `id`, voter (through a joint configuration) or learner, from the cluster.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Makes `voters` the set of voters (through a joint configuration). New voters must be
    /// caught-up learners; voters left out are removed from the cluster.
    SetVoters {
        /// The new voters.
        voters: BTreeSet<NodeId>,
    },
}

impl<C: Clone> Engine<C> {
    /// Starts `change` on the leader: appends the joint configuration (a change of voters) or the
    /// new configuration (a change of learners), and returns its log id; `None` when the change is
    /// already in force (nothing appended). A change of voters completes on its own: the leader
    /// appends C_new once the joint configuration commits.
    ///
    /// # Errors
    /// See [`MembershipError`]: not the leader (or handing over), another change in progress, no
    /// entry of this term committed yet, a new voter that is not a caught-up learner, a node that
    /// is not what the change needs, or a resulting membership without voters.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<Option<LogId>, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(t) = self.transfer {
            return Err(MembershipError::NotLeader {
                leader_hint: Some(t.to),
            });
        }
        if self.log.term_at(self.commit_index) != Some(self.hard_state.term) {
            return Err(MembershipError::LeaderNotReady);
        }
        if self.membership_index > self.commit_index || self.membership.is_joint() {
            return Err(MembershipError::ChangeInProgress);
        }
        let Some(target) = self.target_membership(change)? else {
            return Ok(None);
        };
        target.check().map_err(MembershipError::Invalid)?;
        let current = self.membership.clone();
        let next = if target.voters == current.voters {
            target
        } else {
            let mut joint = target;
            joint.old_voters = Some(current.voters.clone());
            for (&id, node) in &current.nodes {
                if joint.is_member(id) {
                    joint.nodes.entry(id).or_insert_with(|| node.clone());
                }
            }
            joint
        };
        tracing::info!(from = %current, to = %next, "membership change");
        Ok(Some(self.append_membership(next)))
    }

    /// The membership `change` leads to from the current one; `None` if it is in force already.
    fn target_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Option<Membership>, MembershipError> {
        let current = &self.membership;
        let mut target = current.clone();
        match change {
            MembershipChange::AddLearner { id, node } => {
                if current.contains(id) {
                    return Err(MembershipError::AlreadyAVoter { id });
                }
                if current.is_learner(id) && current.nodes.get(&id) == Some(&node) {
                    return Ok(None);
                }
                target.learners.insert(id);
                target.nodes.insert(id, node);
            }
            MembershipChange::Promote { id } => {
                if current.contains(id) {
                    return Ok(None);
                }
                self.check_caught_up(id)?;
                target.learners.remove(&id);
                target.voters.insert(id);
            }
            MembershipChange::Demote { id } => {
                if current.is_learner(id) {
                    return Ok(None);
                }
                if !current.contains(id) {
                    return Err(MembershipError::NotAMember { id, role: "voter" });
                }
                target.voters.remove(&id);
                target.learners.insert(id);
            }
            MembershipChange::Remove { id } => {
                if !current.is_member(id) {
                    return Ok(None);
                }
                target.voters.remove(&id);
                target.learners.remove(&id);
                target.nodes.remove(&id);
            }
            MembershipChange::SetVoters { voters } => {
                if voters == current.voters {
                    return Ok(None);
                }
                for &id in voters.difference(&current.voters) {
                    self.check_caught_up(id)?;
                }
                target.learners.retain(|id| !voters.contains(id));
                target.voters = voters;
                let members = target.members();
                target.nodes.retain(|id, _| members.contains(id));
            }
        }
        Ok(Some(target))
    }

    /// Whether `id` is a learner close enough behind to become a voter.
    fn check_caught_up(&self, id: NodeId) -> Result<(), MembershipError> {
        if !self.membership.is_learner(id) {
            return Err(MembershipError::NotALearner { id });
        }
        match self.learner_lag(id) {
            Some(lag) if lag <= self.max_learner_lag => Ok(()),
            lag => Err(MembershipError::LearnerBehind {
                id,
                lag: lag.unwrap_or(u64::MAX),
            }),
        }
    }

    /// On the leader: how many entries member `id` lacks, if it answered within the minimum
    /// election timeout and is not receiving a snapshot; `None` otherwise.
    pub fn learner_lag(&self, id: NodeId) -> Option<u64> {
        let since = self.now.saturating_sub(self.election_timeout_ms.0);
        let pr = self.progress.get(&id)?;
        // A match index of 0 is not an answer yet: every member holds at least the first
        // membership entry once it has answered.
        if pr.last_ack_ms <= since || pr.match_index == 0 || pr.state == ReplicationState::Snapshot
        {
            return None;
        }
        Some(self.log.last_index().saturating_sub(pr.match_index))
    }

    /// Appends `membership` as a new entry of the leader's term and replicates it.
    fn append_membership(&mut self, membership: Membership) -> LogId {
        let log_id = LogId::new(self.hard_state.term, self.log.last_index() + 1);
        self.append_local(Entry {
            log_id,
            payload: EntryPayload::Membership(Box::new(membership)).into(),
        });
        self.replicate_pending.extend(self.progress.keys().copied());
        log_id
    }

    /// On the leader, after the commit index moved: a committed joint configuration is followed by
    /// C_new; a committed configuration this leader is not a voter of makes it step down.
    pub(super) fn advance_membership(&mut self) {
        if self.role != Role::Leader || self.membership_index > self.commit_index {
            return;
        }
        if self.membership.is_joint() {
            let next = self.membership.leave_joint();
            tracing::info!(to = %next, "joint configuration committed; leaving it");
            self.append_membership(next);
        } else if !self.membership.contains(self.id) {
            self.hand_over_removed();
        }
    }

    /// A leader that is no longer a voter of the committed membership hands over: a leadership
    /// transfer to the most up-to-date voter that answered recently (proposals are refused
    /// meanwhile, so the target catches up with a log that stops growing, then TimeoutNow makes it
    /// campaign at once). The target's election deposes this node; if the transfer is abandoned, or
    /// no voter answered recently, it steps down without one. It never campaigns again unless made
    /// a voter.
    fn hand_over_removed(&mut self) {
        if self.transfer.is_some() {
            return;
        }
        match self.transfer_target() {
            Some(to) => {
                tracing::info!(
                    to,
                    membership = %self.membership,
                    "removed from the voters and the change is committed: handing leadership over"
                );
                if self.transfer_leadership(to).is_err() {
                    self.step_down_if_removed();
                }
            }
            None => {
                self.broadcast_heartbeat();
                self.step_down_if_removed();
            }
        }
    }

    /// Steps down a leader that is not a voter of its committed membership (after its hand-over
    /// ended without a new leader).
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role == Role::Leader
            && self.membership_index <= self.commit_index
            && !self.membership.is_joint()
            && !self.membership.contains(self.id)
        {
            tracing::info!(membership = %self.membership, "not a voter any more: stepping down");
            let term = self.hard_state.term;
            self.become_follower(term, None);
        }
    }

    /// On the leader: tracks replication to exactly the members other than itself (new members
    /// start with a probe after the log's end; removed ones are dropped).
    pub(super) fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members = self.membership.members();
        self.progress
            .retain(|id, _| members.contains(id) && *id != self.id);
        self.replicate_pending.retain(|id| members.contains(id));
        let next = self.log.last_index() + 1;
        let now = self.now;
        for id in members {
            if id != self.id && !self.progress.contains_key(&id) {
                let mut pr = Progress::new(next, now);
                // Not heard from yet (an elected leader counts the election as every voter's
                // first answer; a new member has given none).
                pr.last_ack_ms = 0;
                self.progress.insert(id, pr);
                self.replicate_pending.insert(id);
            }
        }
        if self
            .transfer
            .is_some_and(|t| !self.membership.voters.contains(&t.to))
        {
            self.transfer = None;
        }
    }
}
