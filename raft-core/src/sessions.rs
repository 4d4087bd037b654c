//! Client sessions: exactly-once application of retried commands (see [`SessionTable`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Identifies a client session; chosen by the client (e.g. random 64 bits), unique among clients.
pub type ClientId = u64;

/// What the table says about a command `(client, seq)` before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCheck<'a, R> {
    /// Not seen before: apply it, then [`record`](SessionTable::record) its response.
    New,
    /// The latest command of this client, already applied: answer with this response, apply
    /// nothing.
    Duplicate(&'a R),
    /// Older than this client's latest command: its response is forgotten; apply nothing and tell
    /// the client so.
    Stale {
        /// The client's latest applied sequence number.
        latest: u64,
    },
    /// The client is unknown and the command is not its first (sequence number 1): its session
    /// expired, so a retry could not be told from a new command. Apply nothing; the client must
    /// open a new session.
    Expired,
}

/// One client's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session<R> {
    /// The highest sequence number applied.
    seq: u64,
    /// The response to it.
    response: R,
    /// The table's clock when the session last applied a command.
    last_active_ms: u64,
}

/// The sessions of a state machine's clients: for each, the latest command applied and its
/// response. Part of the state machine's state: serialize it into snapshots and restore it with
/// them. (Raft thesis, section 6.3.)
///
/// A client that gets no answer to a write (a timeout, a leader that lost office with the write
/// pending: [`ClientWriteError::OutcomeUnknown`](crate::ClientWriteError)) cannot tell whether it
/// was applied. Retrying is safe only if the state machine recognizes the retry. With a session,
/// each command carries the client's id and a sequence number that grows by one per new command;
/// the state machine keeps, per client, the highest number it applied and the response it gave,
/// and answers a retry with that response instead of applying it again.
///
/// This table is that memory, for any [`StateMachine`](crate::StateMachine): call
/// [`check`](SessionTable::check) before applying a command, [`record`](SessionTable::record)
/// after, keep the table in the snapshot (it is serde), and let it expire idle sessions with
/// [`advance_clock`](SessionTable::advance_clock).
///
/// # Deterministic expiry
/// Every replica must expire exactly the same sessions at exactly the same point of the log, or
/// replicas would answer the same retry differently. So the table's clock is never a node's local
/// clock: it is the largest timestamp seen *in the log*. The leader stamps each command with its
/// wall clock when it proposes it (the timestamp is part of the entry, so every replica reads the
/// same value), and the state machine hands it to `advance_clock` as it applies. Leaders' clocks
/// may disagree: the table's clock only moves forward, so a leader whose clock is behind merely
/// delays expiry.
///
/// # The client's side
/// * One command in flight per client id at a time, numbered 1, 2, 3, ...: a retry repeats the
///   number. A client that needs concurrency uses several ids.
/// * A retry of an older number than the latest is [`SessionCheck::Stale`] (its response is no
///   longer kept, and the client already moved on, so it has seen it or given up on it).
/// * An unknown client whose number is not 1 is [`SessionCheck::Expired`]: its session expired (or
///   was never opened), so a retry could not be recognized; the client must start a new id. Keep the
///   expiry (`ttl_ms`) far above how long clients keep retrying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTable<R> {
    sessions: BTreeMap<ClientId, Session<R>>,
    /// The largest timestamp seen in the log (ms).
    clock_ms: u64,
    /// How long a session lives without a command (ms).
    ttl_ms: u64,
    /// At most this many sessions; when full, the least recently active one is expired first.
    max_sessions: usize,
}

impl<R> SessionTable<R> {
    /// An empty table whose sessions expire after `ttl_ms` without a command (by the log's clock),
    /// holding at most `max_sessions` (the least recently active goes first when full).
    pub fn new(ttl_ms: u64, max_sessions: usize) -> Self {
        SessionTable {
            sessions: BTreeMap::new(),
            clock_ms: 0,
            ttl_ms,
            max_sessions: max_sessions.max(1),
        }
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The table's clock: the largest log timestamp given to [`advance_clock`](Self::advance_clock).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// What to do with command `seq` of `client` (see [`SessionCheck`]).
    pub fn check(&self, client: ClientId, seq: u64) -> SessionCheck<'_, R> {
        match self.sessions.get(&client) {
            None if seq <= 1 => SessionCheck::New,
            None => SessionCheck::Expired,
            Some(s) if seq > s.seq => SessionCheck::New,
            Some(s) if seq == s.seq => SessionCheck::Duplicate(&s.response),
            Some(s) => SessionCheck::Stale { latest: s.seq },
        }
    }

    /// Records that command `seq` of `client` was applied with `response`. Opening a session when
    /// the table is full expires the least recently active one.
    pub fn record(&mut self, client: ClientId, seq: u64, response: R) {
        if !self.sessions.contains_key(&client) && self.sessions.len() >= self.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(&id, s)| (s.last_active_ms, id))
                .map(|(&id, _)| id);
            if let Some(id) = oldest {
                self.sessions.remove(&id);
            }
        }
        self.sessions.insert(
            client,
            Session {
                seq,
                response,
                last_active_ms: self.clock_ms,
            },
        );
    }

    /// Moves the table's clock to `log_timestamp_ms` (a timestamp read from the entry being
    /// applied; never backwards) and expires the sessions idle for longer than the TTL. Returns how
    /// many expired. Deterministic: it depends on the log alone.
    pub fn advance_clock(&mut self, log_timestamp_ms: u64) -> usize {
        if log_timestamp_ms <= self.clock_ms {
            return 0;
        }
        self.clock_ms = log_timestamp_ms;
        let before = self.sessions.len();
        let horizon = self.clock_ms.saturating_sub(self.ttl_ms);
        self.sessions.retain(|_, s| s.last_active_ms >= horizon);
        before - self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_answered_from_the_table_and_a_new_command_is_applied() {
        let mut t = SessionTable::new(1_000, 10);
        assert_eq!(t.check(7, 1), SessionCheck::New);
        t.record(7, 1, "ok-1");
        assert_eq!(t.check(7, 1), SessionCheck::Duplicate(&"ok-1"));
        assert_eq!(t.check(7, 2), SessionCheck::New);
        t.record(7, 2, "ok-2");
        assert_eq!(t.check(7, 1), SessionCheck::Stale { latest: 2 });
        assert_eq!(t.check(7, 2), SessionCheck::Duplicate(&"ok-2"));
        // Another client is independent.
        assert_eq!(t.check(8, 1), SessionCheck::New);
        assert_eq!(t.check(8, 5), SessionCheck::Expired);
    }

    #[test]
    fn sessions_expire_by_the_logs_clock_only() {
        let mut t = SessionTable::new(1_000, 10);
        t.advance_clock(10_000);
        t.record(1, 1, ());
        t.advance_clock(10_500);
        t.record(2, 1, ());
        // A leader whose clock is behind does not move the table's clock back.
        assert_eq!(t.advance_clock(9_000), 0);
        assert_eq!(t.clock_ms(), 10_500);
        assert_eq!(t.advance_clock(11_000), 0, "exactly the TTL is still alive");
        assert_eq!(t.advance_clock(11_001), 1);
        assert_eq!(t.check(1, 2), SessionCheck::Expired);
        assert_eq!(t.check(2, 1), SessionCheck::Duplicate(&()));
    }

    #[test]
    fn a_full_table_expires_the_least_recently_active_session() {
        let mut t = SessionTable::new(u64::MAX, 2);
        t.advance_clock(1);
        t.record(1, 1, ());
        t.advance_clock(2);
        t.record(2, 1, ());
        t.advance_clock(3);
        t.record(1, 2, ());
        t.record(3, 1, ());
        assert_eq!(t.len(), 2);
        assert_eq!(t.check(2, 2), SessionCheck::Expired, "2 was idle longest");
        assert_eq!(t.check(1, 2), SessionCheck::Duplicate(&()));
    }

    #[test]
    fn the_table_survives_a_snapshot_round_trip() {
        let mut t = SessionTable::new(500, 4);
        t.advance_clock(42);
        t.record(9, 3, String::from("done"));
        let bytes = serde_json::to_vec(&t).unwrap();
        let back: SessionTable<String> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            back.check(9, 3),
            SessionCheck::Duplicate(&String::from("done"))
        );
    }
}
