//! Elections: pre-vote, votes, and the rules that keep a healthy leader in place.
//!
//! # The rules, and why each is there
//! * **Pre-vote** (Raft thesis, section 9.6; [`Config::pre_vote`](crate::Config)): when its election
//!   timer fires, a node first asks the voters whether they *would* vote for it in the next term
//!   ([`PreVoteRequest`]); answering changes nothing on them. Only with a majority of "yes" does it
//!   raise its term and campaign. A node that cannot win (cut off from the majority, or with a log
//!   that is behind) therefore never raises its term, and cannot depose a healthy leader when it
//!   comes back.
//! * **Leader stickiness**: a node that heard from its leader within the minimum election timeout
//!   (or that is the leader) refuses both pre-votes and votes, without adopting the candidate's term:
//!   the leader is alive, so the candidate is the one that is cut off or late. A vote request marked
//!   as a leadership transfer ([`VoteRequest::leadership_transfer`]) is the exception. Stickiness is
//!   on with [`Config::check_quorum`](crate::Config) (as in etcd), because it relies on it: a leader
//!   that can still send but no longer hears its followers (a one-way cut) would otherwise keep them
//!   loyal forever without being able to commit anything; check-quorum makes it step down, which
//!   ends the followers' loyalty within an election timeout.
//! * **Catching up**: a node that lost entries it may have acknowledged gives no vote and no pre-vote
//!   until it holds its leader's commit index, and does not campaign.
//!
//! None of these affects safety (a leader still needs a majority of real votes, each given at most
//! once per term to an up-to-date log); they decide only *whether* an election takes place.

use std::fmt;

use super::{validate, Engine};
use crate::message::{
    PreVoteRequest, PreVoteResponse, Request, TimeoutNowRequest, TimeoutNowResponse, VoteRequest,
    VoteResponse,
};
use crate::types::{HardState, LogId, NodeId, Role, Term};

/// Why a node refuses its vote (or its pre-vote): the first rule, in this order, that says no (see
/// [`Engine::vote_refusal`]). `Display` says it from the voter's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteRefusal {
    /// The request fails [`validate::vote_request`]: no correct candidate sends it. It changes
    /// nothing, not even the voter's term.
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The request's term is older than the voter's current term.
    StaleTerm {
        /// The voter's term.
        voter_term: Term,
    },
    /// The voter heard from its leader within the minimum election timeout (or is the leader): the
    /// leader is alive, so the candidate is the one cut off or late. The request changes nothing,
    /// not even the voter's term. A leadership transfer's request is not refused for this.
    LeaderAlive {
        /// The leader the voter follows (itself, if it leads).
        leader: NodeId,
    },
    /// Leases are in use and the voter started less than a minimum election timeout ago: it may
    /// have heard from a leader before it restarted, whose lease it must not cut short. Changes
    /// nothing, not even the voter's term. A leadership transfer's request is not refused for this.
    JustStarted,
    /// The voter lost log entries it may have acknowledged (its storage cut them when it opened) and
    /// has not yet caught up to the commit index its leader reports: its vote could help elect a
    /// leader that lacks a committed entry, so it gives none.
    CatchingUp,
    /// The voter already voted in the request's term, for another node (possibly itself, as a
    /// candidate).
    AlreadyVoted {
        /// Who it voted for.
        voted_for: NodeId,
    },
    /// The candidate's last log entry is older than the voter's (lower term, or same term and lower
    /// index): the candidate could lack committed entries.
    LogNotUpToDate {
        /// The candidate's last log id.
        candidate_last: LogId,
        /// The voter's last log id.
        voter_last: LogId,
    },
}

impl fmt::Display for VoteRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VoteRefusal::Malformed { reason } => write!(f, "malformed request ({reason})"),
            VoteRefusal::StaleTerm { voter_term } => {
                write!(f, "stale term (the voter is already in term {voter_term})")
            }
            VoteRefusal::LeaderAlive { leader } => write!(
                f,
                "leader {leader} is alive (heard from within the minimum election timeout)"
            ),
            VoteRefusal::JustStarted => write!(
                f,
                "just started (leases are in use: no vote for a minimum election timeout after a start)"
            ),
            VoteRefusal::CatchingUp => write!(
                f,
                "catching up (it lost entries it may have acknowledged; no vote until it holds what is committed)"
            ),
            VoteRefusal::AlreadyVoted { voted_for } => {
                write!(f, "already voted for node {voted_for} in this term")
            }
            VoteRefusal::LogNotUpToDate {
                candidate_last,
                voter_last,
            } => write!(
                f,
                "log not up to date (candidate's last entry {candidate_last} is older than the voter's {voter_last})"
            ),
        }
    }
}

/// What a vote or a pre-vote asks, for the rules they share.
struct Ballot {
    term: Term,
    candidate_id: NodeId,
    last_log_id: LogId,
    /// A leadership transfer's election: not refused because the leader is alive.
    transfer: bool,
}

impl<C: Clone> Engine<C> {
    /// Handles a RequestVote and returns the reply. The reply may be sent only after the output taken
    /// next is persisted (it may record the vote).
    ///
    /// The decision is [`vote_refusal`](Self::vote_refusal)'s, taken before anything changes. A
    /// malformed request, or one refused because the leader is alive, changes nothing. Otherwise a
    /// request of a higher term is adopted (the node becomes a follower of that term, its vote
    /// cleared), granted or not, and a granted vote is recorded and resets the election timer.
    pub fn handle_vote_request(&mut self, req: VoteRequest) -> VoteResponse {
        let refusal = self.vote_refusal(&req);
        match &refusal {
            Some(VoteRefusal::Malformed { reason }) => {
                tracing::error!(candidate = req.candidate_id, %reason, "malformed vote request refused");
            }
            Some(VoteRefusal::LeaderAlive { .. }) => {}
            _ => {
                if req.term > self.hard_state.term {
                    self.become_follower(req.term, None);
                }
            }
        }
        let granted = refusal.is_none();
        if granted {
            if self.hard_state.voted_for != Some(req.candidate_id) {
                self.hard_state.voted_for = Some(req.candidate_id);
                self.hard_state_dirty = true;
            }
            self.reset_election_timer();
        }
        tracing::debug!(
            candidate = req.candidate_id,
            req_term = req.term,
            transfer = req.leadership_transfer,
            granted,
            refusal = refusal.as_ref().map(tracing::field::display),
            "vote request"
        );
        VoteResponse {
            term: self.hard_state.term,
            vote_granted: granted,
        }
    }

    /// Why [`handle_vote_request`](Self::handle_vote_request) would refuse `req` in the current
    /// state, or `None` if it would grant it; changes nothing. The rules, in order: a malformed
    /// request is refused; a request of an older term is refused; while the leader is alive a request
    /// is refused unless it is a leadership transfer's; a catching-up node refuses; a higher term is
    /// adopted first, which clears the vote; then the vote must be free (or already this candidate's,
    /// so a candidate that asks again gets the same answer) and the candidate's last log id at least
    /// this node's (`LogId` orders by term, then index).
    pub fn vote_refusal(&self, req: &VoteRequest) -> Option<VoteRefusal> {
        if let Err(reason) = validate::vote_request(req) {
            return Some(VoteRefusal::Malformed { reason });
        }
        self.ballot_refusal(&Ballot {
            term: req.term,
            candidate_id: req.candidate_id,
            last_log_id: req.last_log_id,
            transfer: req.leadership_transfer,
        })
    }

    /// Why this node would refuse the pre-vote `req`, or `None` if it would grant it: the rules of
    /// [`vote_refusal`](Self::vote_refusal) for a vote in the term the pre-vote names.
    pub fn pre_vote_refusal(&self, req: &PreVoteRequest) -> Option<VoteRefusal> {
        if let Err(reason) = validate::pre_vote_request(req) {
            return Some(VoteRefusal::Malformed { reason });
        }
        self.ballot_refusal(&Ballot {
            term: req.term,
            candidate_id: req.candidate_id,
            last_log_id: req.last_log_id,
            transfer: false,
        })
    }

    fn ballot_refusal(&self, ballot: &Ballot) -> Option<VoteRefusal> {
        let term = self.hard_state.term;
        if ballot.term < term {
            return Some(VoteRefusal::StaleTerm { voter_term: term });
        }
        if !ballot.transfer {
            if let Some(leader) = self.leader_alive() {
                return Some(VoteRefusal::LeaderAlive { leader });
            }
            if self.lease_ms > 0
                && self.now < self.started_ms.saturating_add(self.election_timeout_ms.0)
            {
                return Some(VoteRefusal::JustStarted);
            }
        }
        if self.catching_up {
            return Some(VoteRefusal::CatchingUp);
        }
        // The vote in force once the ballot's term is adopted: none in a newer term.
        let voted_for = if ballot.term > term {
            None
        } else {
            self.hard_state.voted_for
        };
        if let Some(voted_for) = voted_for.filter(|&v| v != ballot.candidate_id) {
            return Some(VoteRefusal::AlreadyVoted { voted_for });
        }
        let voter_last = self.log.last_log_id();
        if ballot.last_log_id < voter_last {
            return Some(VoteRefusal::LogNotUpToDate {
                candidate_last: ballot.last_log_id,
                voter_last,
            });
        }
        None
    }

    /// The leader this node knows is alive: itself if it leads, else the leader it heard from within
    /// the minimum election timeout. While there is one, this node gives no vote and no pre-vote
    /// (except to a leadership transfer). Always `None` without check-quorum: a leader that can send
    /// but no longer hears its followers would otherwise keep them loyal forever.
    pub fn leader_alive(&self) -> Option<NodeId> {
        if !self.check_quorum {
            return None;
        }
        if self.role == Role::Leader {
            return Some(self.id);
        }
        let leader = self.leader?;
        let seen = self.leader_seen_ms?;
        (self.now < seen.saturating_add(self.election_timeout_ms.0)).then_some(leader)
    }

    /// Handles the answer to a RequestVote this node sent.
    pub fn handle_vote_response(&mut self, from: NodeId, resp: VoteResponse) {
        if let Err(reason) = validate::vote_response(&resp) {
            tracing::error!(from, %reason, "malformed vote answer ignored");
            return;
        }
        if resp.term > self.hard_state.term {
            self.become_follower(resp.term, None);
            return;
        }
        if self.role != Role::Candidate || resp.term != self.hard_state.term || !resp.vote_granted {
            return;
        }
        self.votes.insert(from);
        if self.membership.is_quorum(&self.votes) {
            self.become_leader();
        }
    }

    /// Handles a pre-vote and returns the reply. Changes nothing: not the term, not the vote, not the
    /// election timer, so the reply may be sent at once.
    pub fn handle_pre_vote_request(&mut self, req: PreVoteRequest) -> PreVoteResponse {
        let refusal = self.pre_vote_refusal(&req);
        if let Some(VoteRefusal::Malformed { reason }) = &refusal {
            tracing::error!(candidate = req.candidate_id, %reason, "malformed pre-vote refused");
        }
        tracing::debug!(
            candidate = req.candidate_id,
            req_term = req.term,
            granted = refusal.is_none(),
            refusal = refusal.as_ref().map(tracing::field::display),
            "pre-vote request"
        );
        PreVoteResponse {
            term: self.hard_state.term,
            vote_granted: refusal.is_none(),
        }
    }

    /// Handles the answer to a pre-vote this node sent. A majority of grants (this node's own
    /// included) starts the real election; a refusal from a higher term makes this node adopt that
    /// term as a follower.
    pub fn handle_pre_vote_response(&mut self, from: NodeId, resp: PreVoteResponse) {
        if let Err(reason) = validate::pre_vote_response(&resp) {
            tracing::error!(from, %reason, "malformed pre-vote answer ignored");
            return;
        }
        if resp.term > self.hard_state.term && !resp.vote_granted {
            self.become_follower(resp.term, None);
            return;
        }
        if self.role != Role::PreCandidate || !resp.vote_granted {
            return;
        }
        self.votes.insert(from);
        if self.membership.is_quorum(&self.votes) {
            self.start_election(false);
        }
    }

    /// The election timer fired: campaign (through a pre-vote round, if configured), unless this
    /// node must not.
    pub(super) fn election_timeout(&mut self) {
        if self.role == Role::PreCandidate {
            self.stats.pre_votes_lost += 1;
        }
        if self.catching_up {
            // It could win without holding a committed entry: wait for a leader.
            self.reset_election_timer();
        } else if !self.membership.contains(self.id) {
            // Not a voter (or no membership yet): wait for a leader.
            self.reset_election_timer();
        } else if self.pre_vote {
            self.start_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// The term after the current one, if the term can still grow.
    fn next_term(&self) -> Option<Term> {
        let next = self
            .hard_state
            .term
            .checked_add(1)
            .filter(|&t| t <= validate::MAX_TERM);
        if next.is_none() {
            tracing::error!(
                term = self.hard_state.term,
                "the term cannot grow any further: not campaigning"
            );
        }
        next
    }

    fn start_pre_vote(&mut self) {
        let Some(term) = self.next_term() else {
            self.reset_election_timer();
            return;
        };
        self.role = Role::PreCandidate;
        self.leader = None;
        self.leader_seen_ms = None;
        self.votes.clear();
        self.votes.insert(self.id);
        self.reset_election_timer();
        tracing::debug!(term, "election timeout: asking for pre-votes");
        if self.membership.is_quorum(&self.votes) {
            self.start_election(false);
            return;
        }
        let req = PreVoteRequest {
            term,
            candidate_id: self.id,
            last_log_id: self.log.last_log_id(),
        };
        for peer in self.membership.all_voters() {
            if peer != self.id {
                self.out
                    .messages
                    .push((peer, Request::PreVote(req.clone())));
            }
        }
    }

    /// Raises the term, votes for itself and asks the voters for theirs. `transfer` marks the
    /// requests as a leadership transfer's (see [`VoteRequest::leadership_transfer`]).
    pub(super) fn start_election(&mut self, transfer: bool) {
        let Some(term) = self.next_term() else {
            self.reset_election_timer();
            return;
        };
        self.hard_state = HardState {
            term,
            voted_for: Some(self.id),
        };
        self.hard_state_dirty = true;
        self.role = Role::Candidate;
        self.leader = None;
        self.leader_seen_ms = None;
        self.votes.clear();
        self.votes.insert(self.id);
        self.reset_election_timer();
        self.stats.elections_started += 1;
        tracing::info!(term, transfer, "starting election");
        if self.membership.is_quorum(&self.votes) {
            self.become_leader();
            return;
        }
        let req = VoteRequest {
            term,
            candidate_id: self.id,
            last_log_id: self.log.last_log_id(),
            leadership_transfer: transfer,
        };
        for peer in self.membership.all_voters() {
            if peer != self.id {
                self.out.messages.push((peer, Request::Vote(req.clone())));
            }
        }
    }

    /// Handles a leader's TimeoutNow and returns the reply: a voter that is not catching up starts an
    /// election at once, marked as a leadership transfer. The reply may be sent only after the output
    /// taken next is persisted (it records the new term and the vote for itself).
    pub fn handle_timeout_now(&mut self, req: TimeoutNowRequest) -> TimeoutNowResponse {
        let refuse = |engine: &Self| TimeoutNowResponse {
            term: engine.hard_state.term,
            campaigning: false,
        };
        if let Err(reason) = validate::timeout_now_request(&req) {
            tracing::error!(leader = req.leader_id, %reason, "malformed TimeoutNow refused");
            return refuse(self);
        }
        if req.term < self.hard_state.term {
            return refuse(self);
        }
        if req.term > self.hard_state.term {
            // A leader this node has not heard of yet: its log cannot be known up to date.
            self.become_follower(req.term, Some(req.leader_id));
            return refuse(self);
        }
        if self.role == Role::Leader || self.catching_up || !self.membership.contains(self.id) {
            tracing::warn!(
                leader = req.leader_id,
                catching_up = self.catching_up,
                "TimeoutNow refused: this node cannot campaign"
            );
            return refuse(self);
        }
        tracing::info!(
            leader = req.leader_id,
            "leadership transfer: campaigning now"
        );
        self.start_election(true);
        TimeoutNowResponse {
            term: self.hard_state.term,
            campaigning: true,
        }
    }
}
