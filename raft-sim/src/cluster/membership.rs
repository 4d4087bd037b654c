//! Membership changes on a harness [`Cluster`]: nodes that start empty and join later, the changes
//! themselves (through whichever node leads), nodes stopped for good once they have left, and the
//! wait for the configuration to settle at the end of a run.
//!
//! Every change goes through [`Cluster::change_membership`], which finds the leader, follows
//! `NotLeader` hints, and records each acknowledged change (the membership it returned): the end of
//! a run ([`Cluster::wait_membership_settled`]) checks that each is committed and that the final
//! configuration comes at or after the last of them, in force on every one of its members.

use std::time::Duration;

use raft_core::{
    EntryPayload, MembershipChange, MembershipError, Metrics, Node, NodeId, NodeStatus,
    RaftStorage, Role,
};
use tokio::time::Instant;

use super::{poll_until, Cluster, Violation, POLL};
use crate::world::lock;
use raft_core::Membership;

/// The address a node is given in the membership: the mock router reaches nodes by id, so it is
/// only a label, but it travels in the log like a real one.
fn address(id: NodeId) -> Node {
    Node::new(format!("sim-node-{id}"))
}

impl<S: RaftStorage<u64>> Cluster<S> {
    /// Starts node `id` with empty storage (from the factory), not initialized: it holds no
    /// membership, so it neither campaigns nor votes, and answers the leader once a change makes it
    /// a member. It is registered with the router at once (admitted at run time), and from then on
    /// is one of [`ids`](Self::ids): it crashes, restarts and is checked like the initial nodes. A
    /// no-op if `id` was ever started.
    pub async fn start_new_node(&self, id: NodeId) {
        let fresh = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if fresh {
            lock(&self.world).trace(|| format!("node {id}: started empty, to join"));
            self.start_node(id).await;
        }
    }

    /// Carries out `change` through the leader: finds the running node that leads the highest term,
    /// follows `NotLeader` hints, and tries again (every `POLL`) until the cluster's write
    /// deadline ([`ClusterOptions::write_deadline`](crate::ClusterOptions::write_deadline)) passes.
    /// An acknowledged change is recorded (see the docs of the `cluster::membership` module).
    ///
    /// # Errors
    /// The leader's answer (see [`MembershipError`]); `NotLeader` if no leader took the change
    /// before the deadline (nothing was proposed). `TimedOut` and `Stopped` mean the change may
    /// still complete.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<Membership, MembershipError> {
        let deadline = Instant::now() + self.opts.write_deadline;
        let mut hint = None;
        loop {
            let target = hint
                .and_then(|h| self.raft(h))
                .or_else(|| self.leader().and_then(|l| self.raft(l)));
            if let Some(raft) = target {
                let answer = raft.change_membership_with(change.clone()).await;
                lock(&self.world).trace(|| {
                    format!(
                        "node {}: membership change {change:?}: {answer:?}",
                        raft.id()
                    )
                });
                match answer {
                    Ok(m) => {
                        let mut w = lock(&self.world);
                        w.stats.membership_changes += 1;
                        w.record.acknowledged_changes.push(m.clone());
                        return Ok(m);
                    }
                    Err(MembershipError::NotLeader { leader_hint }) => hint = leader_hint,
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(MembershipError::NotLeader { leader_hint: hint });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Adds node `id` as a learner, starting it empty first if it was never started
    /// ([`start_new_node`](Self::start_new_node)).
    ///
    /// # Errors
    /// See [`change_membership`](Self::change_membership).
    pub async fn add_learner(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.start_new_node(id).await;
        self.change_membership(MembershipChange::AddLearner {
            id,
            node: address(id),
        })
        .await
    }

    /// Makes learner `id` a voter (through a joint configuration).
    ///
    /// # Errors
    /// See [`change_membership`](Self::change_membership); `LearnerBehind` for a learner not caught
    /// up (see [`wait_caught_up`](Self::wait_caught_up)).
    pub async fn promote(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership(MembershipChange::Promote { id })
            .await
    }

    /// Makes voter `id` a learner (through a joint configuration).
    ///
    /// # Errors
    /// See [`change_membership`](Self::change_membership).
    pub async fn demote(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership(MembershipChange::Demote { id })
            .await
    }

    /// Removes member `id` (voter or learner). The node keeps running until
    /// [`retire`](Self::retire)d: a removed node must stay quiet on its own.
    ///
    /// # Errors
    /// See [`change_membership`](Self::change_membership).
    pub async fn remove_node(&self, id: NodeId) -> Result<Membership, MembershipError> {
        self.change_membership(MembershipChange::Remove { id })
            .await
    }

    /// Waits (up to `timeout`) until the leader sees member `id` within
    /// [`Config::max_learner_lag`](raft_core::Config) entries of its log, having matched at least
    /// one entry (an answer): what a promotion needs, but for the engine's condition that the
    /// answer be recent, which metrics do not show (a promotion may still be refused as behind, see
    /// [`replace`](Self::replace)). Asks whichever node leads at each poll.
    ///
    /// # Errors
    /// `LearnerBehind` (with the last lag seen) if `timeout` passes first.
    pub async fn wait_caught_up(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<(), MembershipError> {
        let within = self.opts.config.max_learner_lag;
        let mut lag = u64::MAX;
        let caught_up = poll_until(timeout, POLL, || {
            let m = self.metrics(self.leader()?)?;
            let matched = m.replication.get(&id).copied().unwrap_or(0);
            lag = m.lag(id).filter(|_| matched > 0).unwrap_or(u64::MAX);
            (lag <= within).then_some(())
        })
        .await;
        caught_up.ok_or(MembershipError::LearnerBehind { id, lag })
    }

    /// Replaces voter `old` by node `new`: adds `new` as a learner (starting it empty), waits up to
    /// `catch_up` for it to catch up, promotes it, then removes `old` (which keeps running until
    /// retired). Each step is a change of its own; the first that fails ends the replacement and
    /// is returned, leaving the steps before it in force.
    ///
    /// # Errors
    /// That of the first step that failed.
    pub async fn replace(
        &self,
        old: NodeId,
        new: NodeId,
        catch_up: Duration,
    ) -> Result<Membership, MembershipError> {
        self.add_learner(new).await?;
        self.wait_caught_up(new, catch_up).await?;
        // The leader may judge the learner a moment later than the metrics showed it; a promotion
        // refused as behind is retried until `catch_up` has passed again.
        let deadline = Instant::now() + catch_up;
        loop {
            match self.promote(new).await {
                Ok(_) => break,
                Err(MembershipError::LearnerBehind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.remove_node(old).await
    }

    /// Stops node `id` for good (it has left the cluster, or never joined): it is shut down and
    /// unregistered from the router, is no longer one of [`ids`](Self::ids) (never restarted, not
    /// required to run by the final checks, whose comparisons of logs leave it out), and stays in
    /// the record: its votes, leaderships and log keep being judged by every check that holds across
    /// configurations (Election Safety, Log Matching). Also done for a node that is down.
    pub async fn retire(&self, id: NodeId) {
        let slot = self.slots().remove(&id);
        {
            let mut w = lock(&self.world);
            w.trace(|| format!("node {id}: retired"));
            w.record.retired.insert(id);
            w.disk_faults.remove(&id);
        }
        if let Some(slot) = slot {
            self.router.unregister(id);
            slot.raft.shutdown().await;
            if let Some(obs) = lock(&self.world).record.nodes.get_mut(&id) {
                obs.live = false;
            }
        }
    }

    /// The leader's metrics (the running node that leads the highest term), if any.
    pub fn leader_metrics(&self) -> Option<Metrics> {
        self.metrics(self.leader()?)
    }

    /// Waits (up to `timeout`) until the configuration has settled: a leader whose membership is
    /// committed and not joint, and every member of it (learners included) running with that
    /// membership in force and known committed (`Metrics::membership` equal to it,
    /// `membership_committed()`). Then checks the acknowledged changes against the committed log:
    /// each is a committed membership entry, in the order acknowledged, and the final membership
    /// entry comes at or after the last of them. Returns the final membership.
    ///
    /// Start it once faults are healed and every member runs: it is the liveness check of membership
    /// changes (an acknowledged change reaches every member of the final configuration).
    ///
    /// # Errors
    /// A description of the cluster if `timeout` passes first, or which acknowledged change is not
    /// committed where it should be.
    pub async fn wait_membership_settled(
        &self,
        timeout: Duration,
    ) -> Result<Membership, Violation> {
        let settled = poll_until(timeout, POLL, || {
            let lm = self.leader_metrics()?;
            if lm.membership.is_joint() || !lm.membership_committed() {
                return None;
            }
            let all_in_force = lm.membership.members().iter().all(|&id| {
                self.metrics(id).is_some_and(|m| {
                    // Not the same `membership_index`: a node that installed a snapshot knows
                    // the membership only as of the snapshot's last entry.
                    m.status == NodeStatus::Running
                        && m.membership == lm.membership
                        && m.membership_committed()
                        && m.last_applied >= lm.membership_index
                })
            });
            all_in_force.then_some((lm.membership, lm.membership_index))
        })
        .await;
        let Some((membership, index)) = settled else {
            return Err(Violation(format!(
                "liveness: the membership did not settle within {timeout:?} (a leader with a committed, \
                 not joint membership in force and committed on every member): {}",
                self.describe()
            )));
        };
        self.check_acknowledged_changes(index)?;
        Ok(membership)
    }

    /// Each acknowledged change is a committed membership entry, in the order acknowledged, at or
    /// before `final_index` (the index of the membership finally in force).
    fn check_acknowledged_changes(&self, final_index: u64) -> Result<(), Violation> {
        let w = lock(&self.world);
        let record = &w.record;
        let mut after = 0;
        for m in &record.acknowledged_changes {
            let at = record
                .committed
                .range(after..)
                .find(|(_, c)| matches!(&c.payload, EntryPayload::Membership(cm) if **cm == *m))
                .map(|(&i, _)| i);
            match at {
                Some(i) if i <= final_index => after = i,
                Some(i) => {
                    return Err(Violation(format!(
                        "membership: acknowledged change to {m} committed at {i}, after the membership \
                         finally in force (at {final_index})"
                    )))
                }
                None => {
                    return Err(Violation(format!(
                        "membership: acknowledged change to {m} is not a committed membership entry at or \
                         after index {after} (acknowledged changes, in order: {})",
                        record
                            .acknowledged_changes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )))
                }
            }
        }
        Ok(())
    }

    /// Retires ([`retire`](Self::retire)) every node that is not a member of `membership`: nodes
    /// removed (whose removal may have timed out and completed since), and nodes started to join
    /// whose addition never took.
    pub async fn retire_non_members(&self, membership: &Membership) {
        for id in self.ids() {
            if !membership.is_member(id) {
                self.retire(id).await;
            }
        }
    }

    /// Whether node `id` runs and leads.
    pub fn is_leader(&self, id: NodeId) -> bool {
        self.metrics(id)
            .is_some_and(|m| m.role == Role::Leader && m.status == NodeStatus::Running)
    }
}
