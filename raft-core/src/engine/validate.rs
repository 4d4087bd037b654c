//! What a well-formed message looks like. Every message from a peer passes through one of these
//! checks before the engine acts on it; a message that fails is refused (or, for an answer, ignored)
//! and changes nothing.
//!
//! Besides the invariants a correct sender always keeps (entries consecutive, terms not above the
//! request's), terms and indexes are bounded by [`MAX_TERM`] and [`MAX_INDEX`], so every increment the
//! engine makes of a value it took from a message (a new election's term, the index after the last
//! entry) fits a `u64`: a hostile `term = u64::MAX` can neither wrap a node's term around to 0 nor
//! make it adopt a term after which no election is possible.

use crate::message::{
    AppendEntriesRequest, AppendEntriesResponse, AppendResult, InstallSnapshotRequest,
    InstallSnapshotResponse, PreVoteRequest, PreVoteResponse, SnapshotResult, TimeoutNowRequest,
    TimeoutNowResponse, VoteRequest, VoteResponse,
};
use crate::types::{EntryPayload, LogId, LogIndex, Term};

/// The largest term a message may carry: the engine adds 1 to a term it adopts (to campaign), and a
/// term that cannot be incremented twice is refused as malformed.
pub const MAX_TERM: Term = u64::MAX - 2;

/// The largest log index a message may carry (or imply: the last entry of an AppendEntries), for the
/// same reason as [`MAX_TERM`].
pub const MAX_INDEX: LogIndex = u64::MAX - 2;

fn term_ok(what: &str, term: Term) -> Result<(), String> {
    if term > MAX_TERM {
        return Err(format!(
            "{what} {term} is above the largest term {MAX_TERM}"
        ));
    }
    Ok(())
}

fn index_ok(what: &str, index: LogIndex) -> Result<(), String> {
    if index > MAX_INDEX {
        return Err(format!(
            "{what} {index} is above the largest index {MAX_INDEX}"
        ));
    }
    Ok(())
}

/// A RequestVote: bounded term and last log id, and a last log entry no newer than the election.
pub fn vote_request(req: &VoteRequest) -> Result<(), String> {
    ballot(req.term, req.last_log_id)
}

/// A pre-vote: the same rules as a RequestVote, for the term it asks about.
pub fn pre_vote_request(req: &PreVoteRequest) -> Result<(), String> {
    ballot(req.term, req.last_log_id)
}

fn ballot(term: Term, last_log_id: LogId) -> Result<(), String> {
    term_ok("term", term)?;
    index_ok("last log index", last_log_id.index)?;
    if last_log_id.term > term {
        return Err(format!(
            "last log id {last_log_id} is newer than the election's term {term}"
        ));
    }
    Ok(())
}

/// A TimeoutNow: a bounded term.
pub fn timeout_now_request(req: &TimeoutNowRequest) -> Result<(), String> {
    term_ok("term", req.term)
}

/// An AppendEntries: bounded term and indexes; entries consecutive after `prev_log_id`, their terms
/// never decreasing, none newer than the request's term.
pub fn append_request<C>(req: &AppendEntriesRequest<C>) -> Result<(), String> {
    term_ok("term", req.term)?;
    index_ok("prev_log_id index", req.prev_log_id.index)?;
    index_ok("leader_commit", req.leader_commit)?;
    let count = u64::try_from(req.entries.len()).unwrap_or(u64::MAX);
    match req.prev_log_id.index.checked_add(count) {
        Some(last) => index_ok("last entry index", last)?,
        None => return Err("the entries run past the largest index".to_string()),
    }
    if req.prev_log_id.term > req.term {
        return Err(format!(
            "prev_log_id {} is newer than the request's term {}",
            req.prev_log_id, req.term
        ));
    }
    let mut expected = req.prev_log_id;
    for e in &req.entries {
        if e.log_id.index != expected.index + 1
            || e.log_id.term < expected.term
            || e.log_id.term > req.term
        {
            return Err(format!(
                "entry {} does not follow {} in a request of term {}",
                e.log_id, expected, req.term
            ));
        }
        expected = e.log_id;
        if let EntryPayload::Membership(m) = &*e.payload {
            m.check()
                .map_err(|reason| format!("entry {} holds a bad membership: {reason}", e.log_id))?;
        }
    }
    Ok(())
}

/// An InstallSnapshot chunk: bounded term and snapshot id, a snapshot of an entry no newer than the
/// request, with a well-formed membership, and a chunk whose end fits a `u64`.
pub fn snapshot_request(req: &InstallSnapshotRequest) -> Result<(), String> {
    term_ok("term", req.term)?;
    let id = req.meta.last_log_id;
    index_ok("snapshot index", id.index)?;
    if id.term > req.term || id.index == 0 {
        return Err(format!(
            "snapshot {id} (term {}) cannot come from a leader of term {}",
            id.term, req.term
        ));
    }
    req.meta
        .membership
        .check()
        .map_err(|reason| format!("snapshot {id} holds a bad membership: {reason}"))?;
    let len = u64::try_from(req.data.len()).unwrap_or(u64::MAX);
    if req.offset.checked_add(len).is_none() {
        return Err(format!(
            "a chunk of {len} bytes at offset {} ends past the largest offset",
            req.offset
        ));
    }
    Ok(())
}

/// The answer to a RequestVote: a bounded term.
pub fn vote_response(resp: &VoteResponse) -> Result<(), String> {
    term_ok("term", resp.term)
}

/// The answer to a pre-vote: a bounded term.
pub fn pre_vote_response(resp: &PreVoteResponse) -> Result<(), String> {
    term_ok("term", resp.term)
}

/// The answer to a TimeoutNow: a bounded term.
pub fn timeout_now_response(resp: &TimeoutNowResponse) -> Result<(), String> {
    term_ok("term", resp.term)
}

/// The answer to an AppendEntries: a bounded term and bounded indexes.
pub fn append_response(resp: &AppendEntriesResponse) -> Result<(), String> {
    term_ok("term", resp.term)?;
    match resp.result {
        AppendResult::Success { match_index } => index_ok("match_index", match_index),
        AppendResult::Conflict {
            rejected_index,
            conflict_term,
            conflict_index,
        } => {
            index_ok("rejected_index", rejected_index)?;
            index_ok("conflict_index", conflict_index)?;
            conflict_term.map_or(Ok(()), |t| term_ok("conflict_term", t))
        }
        AppendResult::StaleTerm | AppendResult::Invalid => Ok(()),
    }
}

/// The answer to an InstallSnapshot chunk: a bounded term and a bounded snapshot id.
pub fn snapshot_response(resp: &InstallSnapshotResponse) -> Result<(), String> {
    term_ok("term", resp.term)?;
    match resp.result {
        SnapshotResult::Accepted { snapshot, .. } | SnapshotResult::Installed { snapshot } => {
            index_ok("snapshot index", snapshot.index)?;
            term_ok("snapshot term", snapshot.term)
        }
        SnapshotResult::StaleTerm | SnapshotResult::Invalid => Ok(()),
    }
}
