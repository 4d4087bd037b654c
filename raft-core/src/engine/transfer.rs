//! Leadership transfer (Raft thesis, section 3.10): the leader hands over to an up-to-date voter
//! without an election timeout of unavailability.
//!
//! 1. The leader stops taking proposals (they are refused with the target as the leader hint), so
//!    its log stops growing.
//! 2. It replicates to the target until the target's log matches its own to the last entry.
//! 3. It sends [`TimeoutNowRequest`]; the target campaigns at once, with requests marked as a
//!    transfer, which voters grant even though they still hear from the old leader.
//! 4. The old leader steps down when it sees the new term. If that has not happened within an
//!    election timeout (`election_timeout_max`), the transfer is abandoned and the leader takes
//!    proposals again.
//!
//! Safety is the ordinary election's: the target still needs a majority of votes for an up-to-date
//! log. Step 1 only keeps the target's log from falling behind again.

use super::{Engine, ReplicationState};
use crate::error::TransferError;
use crate::message::{Request, TimeoutNowRequest, TimeoutNowResponse};
use crate::types::{NodeId, Role};

use super::validate;

/// A leadership transfer in progress on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Transfer {
    /// The voter taking over.
    pub(super) to: NodeId,
    /// Engine time at which the transfer is abandoned.
    pub(super) deadline: u64,
    /// Whether the TimeoutNow has been sent.
    pub(super) timeout_now_sent: bool,
}

/// How many elections, pre-vote rounds and leadership transfers a node went through: the counters an
/// operator watches for a cluster that is not stable. Every counter saturates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Elections this node started (its term went up to campaign), transfers' included.
    pub elections_started: u64,
    /// Pre-vote rounds that ended without a majority (the node stayed in its term).
    pub pre_votes_lost: u64,
    /// Leadership transfers this node started as leader.
    pub transfers_started: u64,
    /// Leadership transfers this node abandoned (the target did not take over in time, or refused).
    pub transfers_abandoned: u64,
}

impl<C: Clone> Engine<C> {
    /// Starts handing leadership to `to` (Raft thesis, section 3.10): replicate to `to` until its log
    /// matches, then TimeoutNow, which makes it campaign at once. Proposals are refused from now
    /// on, with `to` as the leader hint, until `to` leads or the transfer is abandoned at the next
    /// [`tick`](Self::tick) after an election timeout. Asking again for the same target while its
    /// transfer runs changes nothing; asking for another target replaces it.
    ///
    /// # Errors
    /// [`TransferError::NotLeader`] on a node that is not the leader; [`TransferError::NotAVoter`]
    /// if `to` is this node or not a voter.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id
            || !self.membership.voters.contains(&to)
            || !self.progress.contains_key(&to)
        {
            return Err(TransferError::NotAVoter { target: to });
        }
        if self.transfer.is_some_and(|t| t.to == to) {
            return Ok(());
        }
        tracing::info!(to, "leadership transfer: bringing the target up to date");
        self.stats.transfers_started = self.stats.transfers_started.saturating_add(1);
        self.transfer = Some(Transfer {
            to,
            deadline: self.now.saturating_add(self.election_timeout_ms.1),
            timeout_now_sent: false,
        });
        self.replicate_pending.insert(to);
        self.maybe_send_timeout_now();
        Ok(())
    }

    /// The voter a transfer should go to when the caller names none: among the followers that
    /// answered within the minimum election timeout (a follower that is down or cut off could not
    /// take over), the one whose log matches the most of this leader's (ties go to the one heard
    /// from last), so the hand-over needs the least replication. `None` on a node that is not the
    /// leader, or when no follower answered recently.
    pub fn transfer_target(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        let since = self.now.saturating_sub(self.election_timeout_ms.0);
        self.progress
            .iter()
            .filter(|(id, p)| self.membership.voters.contains(id) && p.last_ack_ms > since)
            .max_by_key(|(&id, p)| {
                (
                    p.state != ReplicationState::Snapshot,
                    p.match_index,
                    p.last_ack_ms,
                    std::cmp::Reverse(id),
                )
            })
            .map(|(&id, _)| id)
    }

    /// The target of the leadership transfer in progress on this leader, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// How many elections, pre-vote rounds and transfers this node went through.
    pub fn election_stats(&self) -> ElectionStats {
        self.stats
    }

    /// Sends the TimeoutNow once the target's log matches this leader's to the last entry.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(transfer) = self.transfer.as_mut() else {
            return;
        };
        if transfer.timeout_now_sent {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get(&transfer.to) else {
            return;
        };
        if pr.match_index < last {
            return;
        }
        transfer.timeout_now_sent = true;
        let to = transfer.to;
        self.forfeit_lease();
        tracing::info!(
            to,
            "leadership transfer: the target is up to date; TimeoutNow"
        );
        self.out.messages.push((
            to,
            Request::TimeoutNow(TimeoutNowRequest {
                term: self.hard_state.term,
                leader_id: self.id,
            }),
        ));
    }

    /// Abandons the transfer in progress if its deadline passed. Called on the leader's tick.
    pub(super) fn check_transfer_deadline(&mut self) {
        if let Some(t) = self.transfer {
            if self.now >= t.deadline {
                tracing::warn!(
                    to = t.to,
                    "leadership transfer abandoned: the target did not take over in time; leading on"
                );
                self.abandon_transfer();
            }
        }
    }

    fn abandon_transfer(&mut self) {
        self.transfer = None;
        self.stats.transfers_abandoned = self.stats.transfers_abandoned.saturating_add(1);
        // A leader handing over because it was removed does not lead on.
        self.step_down_if_removed();
    }

    /// Handles the answer to a TimeoutNow this node sent. A target that did not campaign ends the
    /// transfer at once; one that did answers from its new term, which makes this node step down.
    pub fn handle_timeout_now_response(&mut self, from: NodeId, resp: TimeoutNowResponse) {
        if let Err(reason) = validate::timeout_now_response(&resp) {
            tracing::error!(from, %reason, "malformed TimeoutNow answer ignored");
            return;
        }
        if resp.term > self.hard_state.term {
            self.become_follower(resp.term, None);
            return;
        }
        let ours = self
            .transfer
            .is_some_and(|t| t.to == from && t.timeout_now_sent);
        if self.role == Role::Leader && ours && !resp.campaigning {
            tracing::warn!(
                to = from,
                "leadership transfer abandoned: the target refused to campaign; leading on"
            );
            self.abandon_transfer();
        }
    }
}
