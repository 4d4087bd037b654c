//! Membership changes through the [`Raft`] handle: learners, promotions, removals, joint changes of
//! the voters. The protocol side is [`Engine::change_membership`](crate::Engine::change_membership).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ApiMsg, NodeStatus, Raft};
use crate::engine::MembershipChange;
use crate::error::{MembershipError, StoppedError};
use crate::state_machine::StateMachine;
use crate::types::{LogId, Membership, Node, NodeId, Role};

/// How many election timeouts a change may take before the caller is told it timed out: a change
/// of voters commits two entries, and a leader lost on the way costs an election before the next
/// one finishes the change.
const CHANGE_TIMEOUT_ELECTIONS: u32 = 4;

impl<SM: StateMachine> Raft<SM> {
    /// Adds `id` as a learner reached at `node` (or records a learner's new address), and returns
    /// the membership once the change is committed. The learner receives the log and snapshots from
    /// then on but neither votes nor counts toward commitment. To wait until it has caught up, call
    /// [`wait_caught_up`](Self::wait_caught_up).
    ///
    /// # Errors
    /// See [`change_membership_with`](Self::change_membership_with);
    /// [`MembershipError::AlreadyAVoter`] if `id` votes.
    pub async fn add_learner(&self, id: NodeId, node: Node) -> Result<Membership, MembershipError> {
        self.change_membership_with(MembershipChange::AddLearner { id, node })
            .await
    }

    /// Makes learner `id` a voter, through a joint configuration; returns the membership once the
    /// final configuration is committed.
    ///
    /// # Errors
    /// See [`change_membership_with`](Self::change_membership_with);
    /// [`MembershipError::NotALearner`] or [`MembershipError::LearnerBehind`] for a node that is not
    /// a caught-up learner.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership_with(MembershipChange::Promote { id })
            .await
    }

    /// Makes voter `id` a learner, through a joint configuration.
    ///
    /// # Errors
    /// See [`change_membership_with`](Self::change_membership_with).
    pub async fn demote(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership_with(MembershipChange::Demote { id })
            .await
    }

    /// Removes `id` (voter or learner) from the cluster. Removing the leader itself works: it
    /// manages the change until the new configuration is committed, then hands leadership to the
    /// most up-to-date remaining voter and steps down.
    ///
    /// # Errors
    /// See [`change_membership_with`](Self::change_membership_with).
    pub async fn remove_node(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership_with(MembershipChange::Remove { id })
            .await
    }

    /// Makes `voters` the cluster's voters, through a joint configuration (Raft thesis, section
    /// 4.3). Every new voter must be a caught-up learner; voters left out leave the cluster.
    ///
    /// # Errors
    /// See [`change_membership_with`](Self::change_membership_with).
    pub async fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Membership, MembershipError> {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        self.change_membership_with(MembershipChange::SetVoters { voters })
            .await
    }

    /// Adds `id` as a voter in three steps: as a learner, then waits (up to `catch_up`) until it is
    /// within [`Config::max_learner_lag`](crate::Config) entries of the leader, then promotes it.
    ///
    /// # Errors
    /// Those of [`add_learner`](Self::add_learner), [`wait_caught_up`](Self::wait_caught_up) and
    /// [`promote`](Self::promote). A failure after the first step leaves `id` a learner.
    pub async fn add_voter(
        &self,
        id: NodeId,
        node: Node,
        catch_up: Duration,
    ) -> Result<Membership, MembershipError> {
        let membership = self.add_learner(id, node).await?;
        if membership.contains(id) {
            return Ok(membership);
        }
        self.wait_caught_up(id, self.inner.max_learner_lag, catch_up)
            .await?;
        self.promote(id).await
    }

    /// On the leader: waits until member `id` is at most `within` entries behind the leader's log.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] if this node does not lead (or stops leading);
    /// [`MembershipError::NotAMember`] if `id` is not replicated to;
    /// [`MembershipError::LearnerBehind`] with its lag if it has not caught up within `timeout`;
    /// [`MembershipError::Stopped`].
    pub async fn wait_caught_up(
        &self,
        id: NodeId,
        within: u64,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        let mut rx = self.metrics();
        let mut lag = u64::MAX;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if let NodeStatus::Stopped(reason) = &m.status {
                        return Err(MembershipError::Stopped(StoppedError(reason.clone())));
                    }
                    if m.role != Role::Leader {
                        return Err(MembershipError::NotLeader {
                            leader_hint: m.current_leader,
                        });
                    }
                    if !m.membership.is_member(id) {
                        return Err(MembershipError::NotAMember { id, role: "member" });
                    }
                    if let Some(l) = m.lag(id) {
                        lag = l;
                        if l <= within {
                            return Ok(());
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(MembershipError::Stopped(StoppedError(
                        "node stopped".into(),
                    )));
                }
            }
        })
        .await;
        waited.unwrap_or(Err(MembershipError::LearnerBehind { id, lag }))
    }

    /// Carries out `change` on the leader and waits until the membership it leads to is committed
    /// (for a change of voters: the final configuration, after the joint one); returns that
    /// membership. A change already in force returns the current membership at once. A leader that
    /// has not yet committed an entry of its term is asked again every heartbeat.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] (nothing proposed); [`MembershipError::ChangeInProgress`]
    /// while another change is not finished; the errors of the change itself (see
    /// [`MembershipError`]); [`MembershipError::TimedOut`] if the change was proposed but not seen
    /// committed within four election timeouts (it may still complete);
    /// [`MembershipError::Stopped`].
    pub async fn change_membership_with(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, MembershipError> {
        let deadline = Instant::now()
            + self
                .inner
                .election_timeout_max
                .saturating_mul(CHANGE_TIMEOUT_ELECTIONS);
        let mut rx = self.metrics();
        let target = loop {
            let (reply, reply_rx) = oneshot::channel();
            self.send(ApiMsg::ChangeMembership {
                change: Box::new(change.clone()),
                reply,
            })?;
            match reply_rx.await.map_err(|_| self.stopped())? {
                Ok(Some((_, target))) => break target,
                Ok(None) => return Ok(rx.borrow().membership.clone()),
                Err(MembershipError::LeaderNotReady)
                    if Instant::now() + self.inner.heartbeat_interval < deadline =>
                {
                    tokio::time::sleep(self.inner.heartbeat_interval).await;
                }
                Err(e) => return Err(e),
            }
        };
        let done = tokio::time::timeout_at(deadline, async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if let NodeStatus::Stopped(reason) = &m.status {
                        return Err(MembershipError::Stopped(StoppedError(reason.clone())));
                    }
                    if m.membership == target && m.membership_committed() {
                        return Ok(target.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(MembershipError::Stopped(StoppedError(
                        "node stopped".into(),
                    )));
                }
            }
        })
        .await;
        done.unwrap_or(Err(MembershipError::TimedOut))
    }
}

/// The driver's answer to a change: the log id of the entry it appended and the membership the
/// change ends in; `None` if it was in force already.
pub(crate) type ChangeStarted = Option<(LogId, Membership)>;
