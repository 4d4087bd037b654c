//! [`KvStateMachine`]: the hash table the replicated log drives, and [`KvReader`] to look at it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use async_trait::async_trait;
use raft_core::{
    Entry, EntryPayload, LogId, LogIndex, SessionCheck, SessionTable, SnapshotBuild, SnapshotMeta,
    StateMachine, StateMachineError,
};
use serde::{Deserialize, Serialize};

use crate::command::{KvCommand, KvResponse};
use crate::kv_map::{KvTable, FOLD_MIN_PER_BATCH};
use crate::{snapshot_binary, snapshot_json};

/// The version of the snapshot format [`KvStateMachine::snapshot`] writes: 3, binary (see the
/// module `snapshot_binary` for the layout: a checksummed header with the last applied log id and
/// the number of keys, length-prefixed key/value records in key order, the client sessions, a
/// CRC-32 of the whole). `restore` also reads the JSON formats of earlier versions: 2 (table and
/// sessions) and 1 (no sessions: restored with none open).
pub const SNAPSHOT_FORMAT: u32 = snapshot_binary::FORMAT;

/// How long a client session lives without a command, by the log's clock: one hour. Far above how
/// long a client keeps retrying one command, so a retry always finds its session.
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;

/// At most this many sessions are kept; opening one more expires the least recently active. Each
/// costs its latest response (for a `PUT`, the replaced value), so this bounds the table's memory.
pub const MAX_SESSIONS: usize = 10_000;

/// What a session remembers of its latest command: where it was applied and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommand {
    /// The log index of the entry that applied it.
    pub index: LogIndex,
    /// Its response.
    pub response: KvResponse,
}

/// The client sessions of the table.
pub type KvSessions = SessionTable<AppliedCommand>;

/// The table, the client sessions and how far into the log they are.
#[derive(Debug)]
struct KvState {
    last_applied: Option<LogId>,
    data: KvTable,
    sessions: KvSessions,
}

impl Default for KvState {
    fn default() -> Self {
        KvState {
            last_applied: None,
            data: KvTable::default(),
            sessions: SessionTable::new(SESSION_TTL_MS, MAX_SESSIONS),
        }
    }
}

/// A replicated hash table from `String` to `String`: the [`StateMachine`] of `raft-kv`.
///
/// * **Ordering:** the table is a hash map whose snapshots write their records sorted by key, so
///   snapshots are deterministic: two nodes that applied the same entries produce byte-identical
///   snapshots.
/// * **Snapshots:** [`begin_snapshot`](StateMachine::begin_snapshot) takes an O(1) view of the
///   table on the apply task (the view shares the map; applies made meanwhile go to an overlay it
///   does not see) and sorts and serializes it (binary format [`SNAPSHOT_FORMAT`]) on tokio's
///   blocking pool while applying goes on.
/// * **In memory:** the state is lost when the node stops. [`last_applied`](StateMachine::last_applied)
///   therefore always answers `None`, and a restarted node gets the whole log (or its latest snapshot
///   and the log after it) replayed from its storage. The index this instance has reached is still
///   tracked, and shown by [`KvReader::last_applied`].
/// * **Checks:** `apply` refuses entries that do not directly follow the last applied one (a gap or a
///   replay would be a bug of the driver), before changing anything; `restore` refuses malformed or
///   inconsistent snapshots and then leaves the state unchanged.
///
/// The state machine moves into the [`Raft`](raft_core::Raft) node; take a [`KvReader`] first with
/// [`reader`](Self::reader) to read the table locally (tests, examples, stale local reads).
#[derive(Debug, Default)]
pub struct KvStateMachine {
    state: Arc<RwLock<KvState>>,
}

impl KvStateMachine {
    /// An empty table, whose sessions expire after [`SESSION_TTL_MS`] and number at most
    /// [`MAX_SESSIONS`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose sessions expire after `ttl_ms` (by the log's clock) and number at most
    /// `max_sessions`. Every replica must use the same settings, or they would expire different
    /// sessions; a snapshot carries them, so a restored replica takes the snapshot's.
    pub fn with_sessions(ttl_ms: u64, max_sessions: usize) -> Self {
        KvStateMachine {
            state: Arc::new(RwLock::new(KvState {
                sessions: SessionTable::new(ttl_ms, max_sessions),
                ..KvState::default()
            })),
        }
    }

    /// A handle that reads this state machine's table; it stays valid (and keeps showing the last state)
    /// after the node stops.
    pub fn reader(&self) -> KvReader {
        KvReader {
            state: Arc::clone(&self.state),
        }
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, KvState>, StateMachineError> {
        self.state
            .write()
            .map_err(|_| StateMachineError::new("the key-value state lock is poisoned"))
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, KvState>, StateMachineError> {
        self.state
            .read()
            .map_err(|_| StateMachineError::new("the key-value state lock is poisoned"))
    }
}

impl KvState {
    /// Applies `command`, the entry at log index `index`.
    fn apply_command(&mut self, command: &KvCommand, index: LogIndex) -> KvResponse {
        match command {
            KvCommand::Session {
                client_id,
                seq,
                timestamp_ms,
                command,
            } => self.apply_in_session(*client_id, *seq, *timestamp_ms, command, index),
            plain => self.apply_plain(plain),
        }
    }

    /// Applies a session's command at most once (see [`KvCommand::Session`]). The table's clock
    /// moves first, so a session idle past its TTL by this entry's timestamp is already expired.
    fn apply_in_session(
        &mut self,
        client_id: u64,
        seq: u64,
        timestamp_ms: u64,
        command: &KvCommand,
        index: LogIndex,
    ) -> KvResponse {
        if matches!(command, KvCommand::Session { .. }) {
            return KvResponse::Refused("a session envelope inside another".to_string());
        }
        self.sessions.advance_clock(timestamp_ms);
        match self.sessions.check(client_id, seq) {
            SessionCheck::New => {
                let response = self.apply_plain(command);
                self.sessions.record(
                    client_id,
                    seq,
                    AppliedCommand {
                        index,
                        response: response.clone(),
                    },
                );
                response
            }
            SessionCheck::Duplicate(applied) => KvResponse::Duplicate {
                index: applied.index,
                response: Box::new(applied.response.clone()),
            },
            SessionCheck::Stale { latest } => KvResponse::SessionStale { latest },
            SessionCheck::Expired => KvResponse::SessionExpired,
        }
    }

    /// Applies a command outside any session.
    fn apply_plain(&mut self, command: &KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => KvResponse::Put {
                previous: self.data.set(key, value),
            },
            KvCommand::Get { key } => KvResponse::Value(self.data.get(key).cloned()),
            KvCommand::Delete { key } => KvResponse::Deleted {
                previous: self.data.remove(key),
            },
            KvCommand::CompareAndSwap { key, expected, new } => {
                let current = self.data.get(key);
                if current == expected.as_ref() {
                    self.data.set(key, new);
                    KvResponse::CasResult {
                        swapped: true,
                        current: Some(new.clone()),
                    }
                } else {
                    KvResponse::CasResult {
                        swapped: false,
                        current: current.cloned(),
                    }
                }
            }
            KvCommand::Session { .. } => {
                KvResponse::Refused("a session envelope inside another".to_string())
            }
        }
    }
}

/// Checks that `entries` directly follow `last` and are in order (consecutive indexes, terms never
/// going down).
fn check_order(last: Option<LogId>, entries: &[Entry<KvCommand>]) -> Result<(), StateMachineError> {
    let mut prev = last.unwrap_or_default();
    for e in entries {
        if e.log_id.index != prev.index + 1 || e.log_id.term < prev.term {
            return Err(StateMachineError::new(format!(
                "entry {} applied out of order: the last applied entry is {}",
                e.log_id, prev
            )));
        }
        prev = e.log_id;
    }
    Ok(())
}

#[async_trait]
impl StateMachine for KvStateMachine {
    type Command = KvCommand;
    type Response = KvResponse;

    /// Always `None`: the table lives in memory only, so after a restart it is restored from the
    /// latest snapshot (if any) and the log after that is replayed.
    async fn last_applied(&mut self) -> Result<Option<LogId>, StateMachineError> {
        Ok(None)
    }

    async fn apply(
        &mut self,
        entries: &[Entry<KvCommand>],
    ) -> Result<Vec<KvResponse>, StateMachineError> {
        let mut state = self.write()?;
        check_order(state.last_applied, entries)?;
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            responses.push(match &*entry.payload {
                EntryPayload::Command(command) => state.apply_command(command, entry.log_id.index),
                EntryPayload::Blank | EntryPayload::Membership(_) => KvResponse::NoOp,
            });
            state.last_applied = Some(entry.log_id);
        }
        // After a snapshot: fold back into the table what was written while it was serialized.
        state.data.fold_some(entries.len().max(FOLD_MIN_PER_BATCH));
        Ok(responses)
    }

    /// The binary snapshot ([`SNAPSHOT_FORMAT`]), serialized here, on the caller's task.
    async fn snapshot(&mut self) -> Result<Vec<u8>, StateMachineError> {
        let state = self.read()?;
        snapshot_binary::encode(
            state.last_applied,
            &state.data.sorted(),
            state.data.records_len(),
            &state.sessions,
        )
    }

    /// Takes a view of the table in O(1) (it shares the table's map; later applies go to an
    /// overlay the view does not see, folded back into the map a bounded number of entries per
    /// applied batch once the view is dropped; a view taken before that is done copies what is
    /// left of the overlay) and clones the
    /// sessions (at most [`MAX_SESSIONS`]) on the apply task, then sorts and serializes the view on
    /// tokio's blocking pool, so applying goes on while the snapshot is written. Same bytes as
    /// [`snapshot`](Self::snapshot).
    async fn begin_snapshot(&mut self) -> Result<SnapshotBuild, StateMachineError> {
        let (last_applied, data, sessions) = {
            let mut state = self.write()?;
            (
                state.last_applied,
                state.data.view(),
                state.sessions.clone(),
            )
        };
        Ok(Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                snapshot_binary::encode(last_applied, &data.sorted(), data.records_len(), &sessions)
            })
            .await
            .map_err(|e| StateMachineError::new(format!("snapshot serialization task: {e}")))?
        }))
    }

    fn command_size(command: &KvCommand) -> usize {
        command.encoded_size()
    }

    /// Refuses a received snapshot that `restore` would refuse, before it is stored: an unknown
    /// format, a snapshot of another position in the log than `meta.last_log_id`, and for the
    /// binary format a damaged one (header, lengths, the CRC-32 of the whole: a pass over the
    /// bytes at checksum speed, several GB/s, without building the table). A JSON snapshot of
    /// formats 1 and 2 is checked by its first few dozen bytes only.
    fn check_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        if snapshot_binary::is_format_3(data) {
            return snapshot_binary::check(data, meta.last_log_id);
        }
        snapshot_json::check(data, meta.last_log_id).map_err(|longest| {
            let head = String::from_utf8_lossy(&data[..data.len().min(longest)]).into_owned();
            StateMachineError::new(format!(
                "not a key-value snapshot up to {} of a format this version reads (binary \
                 format {SNAPSHOT_FORMAT}, JSON formats 1 and 2): it starts {head:?}",
                meta.last_log_id
            ))
        })
    }

    /// Replaces the table with the snapshot's, atomically: the new table is built aside, then
    /// swapped in. Refuses (leaving the state unchanged) bytes that do not parse, a damaged binary
    /// snapshot (checksum, lengths, key order), an unknown format version, and a snapshot whose own
    /// last applied entry is not `meta.last_log_id` (its data would not match the log position the
    /// driver resumes from).
    async fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StateMachineError> {
        let snapshot = if snapshot_binary::is_format_3(data) {
            snapshot_binary::decode(data, meta.last_log_id)?
        } else {
            let snapshot = snapshot_json::decode(data)?;
            let covered = snapshot.last_applied.unwrap_or_default();
            if covered != meta.last_log_id {
                return Err(StateMachineError::new(format!(
                    "snapshot data covers the log up to {covered} but its metadata says {}",
                    meta.last_log_id
                )));
            }
            snapshot
        };
        let mut state = self.write()?;
        state.last_applied = snapshot.last_applied;
        state.data = snapshot.data;
        state.sessions = snapshot.sessions;
        Ok(())
    }
}

/// A cheap, cloneable handle that reads a [`KvStateMachine`]'s table where it runs, without going
/// through the log. What it shows is this node's applied state: on a follower it may lag the leader
/// (a stale read). For a linearizable read, first wait for `Raft::read_index` (or `read_lease`)
/// on this node, then read: the state then holds every write acknowledged before the wait began.
#[derive(Clone, Debug)]
pub struct KvReader {
    state: Arc<RwLock<KvState>>,
}

impl KvReader {
    fn read(&self) -> RwLockReadGuard<'_, KvState> {
        // Every update validates before it mutates, so even a poisoned lock guards a consistent table.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<String> {
        self.read().data.get(key).cloned()
    }

    /// The value of `key`, if present, and the index of the last entry applied to the table it
    /// was read from (0 before the first), read together.
    pub fn get_with_index(&self, key: &str) -> (Option<String>, LogIndex) {
        let state = self.read();
        (
            state.data.get(key).cloned(),
            state.last_applied.map_or(0, |l| l.index),
        )
    }

    /// How many client sessions are open.
    pub fn sessions(&self) -> usize {
        self.read().sessions.len()
    }

    /// A copy of the client sessions (what snapshots carry).
    pub fn session_table(&self) -> KvSessions {
        self.read().sessions.clone()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.read().data.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.read().data.is_empty()
    }

    /// A copy of the whole table, keys sorted. The apply task waits only while a view of the
    /// table is taken (as for a snapshot: O(1) unless writes made during a snapshot are not folded
    /// back yet), not while the copy is made.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        // Every update validates before it mutates, so even a poisoned lock guards a consistent table.
        let view = self
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .view();
        view.records()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The id of the last entry applied to this instance (`None` before the first).
    pub fn last_applied(&self) -> Option<LogId> {
        self.read().last_applied
    }
}

#[cfg(test)]
mod tests {
    use raft_core::Membership;

    use super::*;

    fn entry(term: u64, index: u64, payload: EntryPayload<KvCommand>) -> Entry<KvCommand> {
        Entry {
            log_id: LogId::new(term, index),
            payload: payload.into(),
        }
    }

    /// Entries 1.. of term 1 carrying `commands`.
    fn commands(commands: impl IntoIterator<Item = KvCommand>) -> Vec<Entry<KvCommand>> {
        commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(1, i as u64 + 1, EntryPayload::Command(c)))
            .collect()
    }

    async fn apply_all(sm: &mut KvStateMachine, cmds: Vec<KvCommand>) -> Vec<KvResponse> {
        sm.apply(&commands(cmds)).await.unwrap()
    }

    fn meta(term: u64, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: Membership::new([1, 2, 3]),
        }
    }

    #[tokio::test]
    async fn put_creates_then_replaces() {
        let mut sm = KvStateMachine::new();
        let r = apply_all(
            &mut sm,
            vec![KvCommand::put("a", "1"), KvCommand::put("a", "2")],
        )
        .await;
        assert_eq!(
            r,
            vec![
                KvResponse::Put { previous: None },
                KvResponse::Put {
                    previous: Some("1".into())
                }
            ]
        );
        assert_eq!(sm.reader().get("a").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn get_reads_present_and_absent_keys() {
        let mut sm = KvStateMachine::new();
        let r = apply_all(
            &mut sm,
            vec![
                KvCommand::get("a"),
                KvCommand::put("a", "1"),
                KvCommand::get("a"),
            ],
        )
        .await;
        assert_eq!(r[0], KvResponse::Value(None));
        assert_eq!(r[2], KvResponse::Value(Some("1".into())));
    }

    #[tokio::test]
    async fn delete_reports_previous_value_or_absence() {
        let mut sm = KvStateMachine::new();
        let r = apply_all(
            &mut sm,
            vec![
                KvCommand::put("a", "1"),
                KvCommand::delete("a"),
                KvCommand::delete("a"),
            ],
        )
        .await;
        assert_eq!(
            r[1],
            KvResponse::Deleted {
                previous: Some("1".into())
            }
        );
        assert_eq!(r[2], KvResponse::Deleted { previous: None });
        assert!(sm.reader().is_empty());
    }

    #[tokio::test]
    async fn cas_swaps_only_on_match() {
        let mut sm = KvStateMachine::new();
        let r = apply_all(
            &mut sm,
            vec![
                KvCommand::put("a", "1"),
                KvCommand::compare_and_swap("a", Some("1"), "2"),
                KvCommand::compare_and_swap("a", Some("1"), "3"),
                KvCommand::compare_and_swap("a", None, "4"),
            ],
        )
        .await;
        assert_eq!(
            r[1],
            KvResponse::CasResult {
                swapped: true,
                current: Some("2".into())
            }
        );
        // Mismatch: nothing changes, the current value comes back (an HTTP 409 body).
        assert_eq!(
            r[2],
            KvResponse::CasResult {
                swapped: false,
                current: Some("2".into())
            }
        );
        // Expected absent, but the key exists.
        assert_eq!(
            r[3],
            KvResponse::CasResult {
                swapped: false,
                current: Some("2".into())
            }
        );
        assert_eq!(sm.reader().get("a").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn cas_with_expected_none_creates_an_absent_key() {
        let mut sm = KvStateMachine::new();
        let r = apply_all(
            &mut sm,
            vec![
                KvCommand::compare_and_swap("k", None, "v"),
                KvCommand::compare_and_swap("missing", Some("x"), "y"),
            ],
        )
        .await;
        assert_eq!(
            r[0],
            KvResponse::CasResult {
                swapped: true,
                current: Some("v".into())
            }
        );
        assert_eq!(
            r[1],
            KvResponse::CasResult {
                swapped: false,
                current: None
            }
        );
        assert_eq!(sm.reader().to_map().len(), 1);
    }

    #[tokio::test]
    async fn one_response_per_entry_including_blank_and_membership() {
        let mut sm = KvStateMachine::new();
        let entries = vec![
            entry(
                1,
                1,
                EntryPayload::Membership(Box::new(Membership::new([1, 2, 3]))),
            ),
            entry(1, 2, EntryPayload::Blank),
            entry(1, 3, EntryPayload::Command(KvCommand::put("a", "1"))),
            entry(2, 4, EntryPayload::Blank),
            entry(2, 5, EntryPayload::Command(KvCommand::get("a"))),
        ];
        let r = sm.apply(&entries).await.unwrap();
        assert_eq!(
            r,
            vec![
                KvResponse::NoOp,
                KvResponse::NoOp,
                KvResponse::Put { previous: None },
                KvResponse::NoOp,
                KvResponse::Value(Some("1".into())),
            ]
        );
        assert_eq!(sm.reader().last_applied(), Some(LogId::new(2, 5)));
        // In memory: a restart replays the log, whatever this instance reached.
        assert_eq!(sm.last_applied().await.unwrap(), None);
    }

    #[tokio::test]
    async fn apply_refuses_gaps_and_replays_without_changing_state() {
        let mut sm = KvStateMachine::new();
        sm.apply(&commands([KvCommand::put("a", "1")]))
            .await
            .unwrap();
        // Index 1 again (a replay), then a gap (index 3), then a batch whose second entry is a gap.
        for bad in [
            vec![entry(1, 1, EntryPayload::Command(KvCommand::put("a", "x")))],
            vec![entry(1, 3, EntryPayload::Command(KvCommand::put("a", "x")))],
            vec![
                entry(1, 2, EntryPayload::Command(KvCommand::put("a", "x"))),
                entry(1, 4, EntryPayload::Blank),
            ],
            vec![entry(0, 2, EntryPayload::Blank)],
        ] {
            assert!(sm.apply(&bad).await.is_err(), "{bad:?}");
            assert_eq!(sm.reader().get("a").as_deref(), Some("1"));
            assert_eq!(sm.reader().last_applied(), Some(LogId::new(1, 1)));
        }
    }

    #[tokio::test]
    async fn check_snapshot_accepts_its_own_snapshots_and_refuses_other_formats_or_positions() {
        let mut sm = KvStateMachine::new();
        apply_all(
            &mut sm,
            vec![KvCommand::put("a", "1"), KvCommand::put("b", "2")],
        )
        .await;
        let bytes = sm.snapshot().await.unwrap();
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), &bytes).is_ok());
        let empty = KvStateMachine::new().snapshot().await.unwrap();
        assert!(
            KvStateMachine::check_snapshot(&meta(0, 0), &empty).is_err(),
            "no position"
        );
        assert!(
            KvStateMachine::check_snapshot(&meta(1, 3), &bytes).is_err(),
            "another position"
        );
        // JSON is read in formats 1 and 2 only.
        let json_3 = br#"{"format":3,"last_applied":{"term":1,"index":2},"data":{}}"#;
        let err = KvStateMachine::check_snapshot(&meta(1, 2), json_3)
            .expect_err("another format version");
        assert!(err.to_string().contains("JSON formats 1 and 2"), "{err}");
        // Snapshots of the previous formats are still accepted.
        let v1 = br#"{"format":1,"last_applied":{"term":1,"index":2},"data":{}}"#;
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), v1).is_ok());
        let v2 = br#"{"format":2,"last_applied":{"term":1,"index":2},"data":{},"sessions":{}}"#;
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), v2).is_ok());
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), b"").is_err());
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), b"garbage").is_err());
    }

    #[tokio::test]
    async fn a_background_snapshot_is_the_state_when_it_began() {
        let mut sm = KvStateMachine::new();
        apply_all(
            &mut sm,
            vec![KvCommand::put("a", "1"), KvCommand::put("b", "2")],
        )
        .await;
        let bytes = sm.snapshot().await.unwrap();
        let build = sm.begin_snapshot().await.unwrap();
        // Applied after the build began, before it ran: not in it (a new key, a replaced value,
        // a removed key, all in nodes the view shares with the live table).
        let late = [
            entry(1, 3, EntryPayload::Command(KvCommand::put("z", "late"))),
            entry(1, 4, EntryPayload::Command(KvCommand::put("a", "changed"))),
            entry(1, 5, EntryPayload::Command(KvCommand::delete("b"))),
        ];
        sm.apply(&late).await.unwrap();
        let built = build.await.unwrap();
        assert_eq!(built, bytes, "the same bytes as snapshot() gave then");
        assert_ne!(sm.snapshot().await.unwrap(), bytes);
        let mut restored = KvStateMachine::new();
        restored.restore(&meta(1, 2), &built).await.unwrap();
        let expected: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert_eq!(restored.reader().to_map(), expected);
        assert_eq!(sm.reader().get("a").as_deref(), Some("changed"));
    }

    #[tokio::test]
    async fn snapshot_restore_roundtrip() {
        let mut sm = KvStateMachine::new();
        apply_all(
            &mut sm,
            vec![
                KvCommand::put("b", "2"),
                KvCommand::put("a", "1"),
                KvCommand::put("c", "3"),
                KvCommand::delete("c"),
            ],
        )
        .await;
        let bytes = sm.snapshot().await.unwrap();

        let mut other = KvStateMachine::new();
        let reader = other.reader();
        other.restore(&meta(1, 4), &bytes).await.unwrap();
        assert_eq!(reader.to_map(), sm.reader().to_map());
        assert_eq!(reader.last_applied(), Some(LogId::new(1, 4)));
        assert_eq!(other.snapshot().await.unwrap(), bytes);
        // The restored machine continues from the snapshot's position.
        let r = other
            .apply(&[entry(2, 5, EntryPayload::Command(KvCommand::get("a")))])
            .await
            .unwrap();
        assert_eq!(r, vec![KvResponse::Value(Some("1".into()))]);
    }

    #[tokio::test]
    async fn restore_of_an_empty_snapshot_clears_the_table() {
        let empty = KvStateMachine::new().snapshot().await.unwrap();
        let mut sm = KvStateMachine::new();
        apply_all(&mut sm, vec![KvCommand::put("a", "1")]).await;
        sm.restore(&SnapshotMeta::default(), &empty).await.unwrap();
        assert!(sm.reader().is_empty());
        assert_eq!(sm.reader().last_applied(), None);
    }

    #[tokio::test]
    async fn restore_of_bad_input_fails_and_leaves_state_unchanged() {
        let mut sm = KvStateMachine::new();
        apply_all(
            &mut sm,
            vec![KvCommand::put("a", "1"), KvCommand::put("b", "2")],
        )
        .await;
        let before = sm.snapshot().await.unwrap();
        let valid = |last: &str, format: u32| {
            format!(r#"{{"format":{format},"last_applied":{last},"data":{{"z":"9"}}}}"#)
                .into_bytes()
        };
        let bad_inputs: Vec<(Vec<u8>, SnapshotMeta)> = vec![
            (b"garbage".to_vec(), meta(1, 2)),
            (Vec::new(), meta(1, 2)),
            (vec![0xff, 0xfe, 0x00], meta(1, 2)),
            (before[..before.len() - 1].to_vec(), meta(1, 2)), // truncated
            (br#"{"format":1,"last_applied":null}"#.to_vec(), meta(0, 0)), // missing data
            (
                br#"{"format":1,"last_applied":null,"data":{"a":1}}"#.to_vec(),
                meta(0, 0),
            ), // wrong type
            (valid(r#"{"term":3,"index":7}"#, 2), meta(3, 7)), // unknown format
            (valid(r#"{"term":3,"index":7}"#, 1), meta(3, 8)), // data and meta disagree
            (valid("null", 1), meta(3, 7)),
        ];
        for (data, m) in bad_inputs {
            let err = sm.restore(&m, &data).await;
            assert!(
                err.is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(&data)
            );
            assert_eq!(sm.snapshot().await.unwrap(), before);
        }
        // The well-formed one of the same shape is accepted.
        sm.restore(&meta(3, 7), &valid(r#"{"term":3,"index":7}"#, 1))
            .await
            .unwrap();
        assert_eq!(sm.reader().get("z").as_deref(), Some("9"));
        assert_eq!(sm.reader().len(), 1);
    }

    #[tokio::test]
    async fn same_entries_give_identical_snapshots() {
        let mut entries = vec![entry(1, 1, EntryPayload::Blank)];
        // Keys inserted in an order unrelated to their sort order.
        for i in 0..200u64 {
            let key = format!("k{}", (i * 7919) % 101);
            let cmd = match i % 4 {
                0 => KvCommand::put(key, i.to_string()),
                1 => KvCommand::delete(key),
                2 => KvCommand::compare_and_swap(key, None, i.to_string()),
                _ => KvCommand::get(key),
            };
            entries.push(entry(1, i + 2, EntryPayload::Command(cmd)));
        }
        let (mut a, mut b) = (KvStateMachine::new(), KvStateMachine::new());
        let ra = a.apply(&entries).await.unwrap();
        // b gets the same entries in several batches.
        let mut rb = Vec::new();
        for chunk in entries.chunks(17) {
            rb.extend(b.apply(chunk).await.unwrap());
        }
        assert_eq!(ra, rb);
        assert_eq!(a.snapshot().await.unwrap(), b.snapshot().await.unwrap());
        assert!(!a.reader().is_empty());
    }

    #[test]
    fn commands_roundtrip_through_json() {
        for cmd in [
            KvCommand::put("k", "v"),
            KvCommand::get("k"),
            KvCommand::delete("k"),
            KvCommand::compare_and_swap("k", None, "v"),
            KvCommand::compare_and_swap("k", Some("old"), "v"),
        ] {
            let json = serde_json::to_string(&cmd).unwrap();
            assert_eq!(serde_json::from_str::<KvCommand>(&json).unwrap(), cmd);
            assert_eq!(cmd.key(), "k");
        }
    }

    /// Entry `index` (term 1) carrying `command` in session `client` at `seq`, stamped `at_ms`.
    fn in_session(
        index: u64,
        client: u64,
        seq: u64,
        at_ms: u64,
        command: KvCommand,
    ) -> Entry<KvCommand> {
        entry(
            1,
            index,
            EntryPayload::Command(command.in_session(client, seq, at_ms)),
        )
    }

    #[tokio::test]
    async fn a_retried_cas_or_delete_is_applied_once_and_answered_from_the_session() {
        let mut sm = KvStateMachine::new();
        let r = sm
            .apply(&[
                in_session(1, 7, 1, 1_000, KvCommand::put("k", "a")),
                in_session(
                    2,
                    7,
                    2,
                    1_000,
                    KvCommand::compare_and_swap("k", Some("a"), "b"),
                ),
                // The retry of the CAS: applied again it would not swap (the value is "b" now).
                in_session(
                    3,
                    7,
                    2,
                    1_001,
                    KvCommand::compare_and_swap("k", Some("a"), "b"),
                ),
                in_session(4, 7, 3, 1_002, KvCommand::delete("k")),
                // The retry of the DELETE: applied again it would answer "absent".
                in_session(5, 7, 3, 1_003, KvCommand::delete("k")),
            ])
            .await
            .unwrap();
        let swapped = KvResponse::CasResult {
            swapped: true,
            current: Some("b".into()),
        };
        let deleted = KvResponse::Deleted {
            previous: Some("b".into()),
        };
        assert_eq!(r[1], swapped);
        assert_eq!(
            r[2],
            KvResponse::Duplicate {
                index: 2,
                response: Box::new(swapped)
            }
        );
        assert_eq!(r[3], deleted);
        assert_eq!(
            r[4],
            KvResponse::Duplicate {
                index: 4,
                response: Box::new(deleted)
            }
        );
        assert!(sm.reader().is_empty());
        assert_eq!(sm.reader().sessions(), 1);
    }

    #[tokio::test]
    async fn stale_and_expired_commands_change_nothing() {
        let mut sm = KvStateMachine::with_sessions(1_000, 100);
        let r = sm
            .apply(&[
                in_session(1, 1, 1, 10_000, KvCommand::put("k", "1")),
                in_session(2, 1, 2, 10_000, KvCommand::put("k", "2")),
                // An old retry of seq 1.
                in_session(3, 1, 1, 10_000, KvCommand::put("k", "1")),
                // An unknown client that is not at its first command.
                in_session(4, 2, 5, 10_000, KvCommand::put("k", "x")),
                // Client 1 idle for longer than the TTL, by the log's clock.
                in_session(5, 3, 1, 11_001, KvCommand::put("other", "y")),
                in_session(6, 1, 3, 11_001, KvCommand::put("k", "3")),
            ])
            .await
            .unwrap();
        assert_eq!(r[2], KvResponse::SessionStale { latest: 2 });
        assert_eq!(r[3], KvResponse::SessionExpired);
        assert_eq!(r[5], KvResponse::SessionExpired);
        assert_eq!(sm.reader().get("k").as_deref(), Some("2"));
        // A nested envelope is refused.
        let nested = KvCommand::put("k", "n")
            .in_session(9, 1, 1)
            .in_session(9, 1, 1);
        let r = sm
            .apply(&[entry(1, 7, EntryPayload::Command(nested))])
            .await
            .unwrap();
        assert!(matches!(r[0], KvResponse::Refused(_)), "{r:?}");
        assert_eq!(sm.reader().get("k").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn sessions_survive_a_snapshot_round_trip() {
        let mut sm = KvStateMachine::new();
        sm.apply(&[
            in_session(1, 5, 1, 42, KvCommand::put("k", "v")),
            in_session(
                2,
                6,
                1,
                43,
                KvCommand::compare_and_swap("k", Some("v"), "w"),
            ),
        ])
        .await
        .unwrap();
        let bytes = sm.snapshot().await.unwrap();
        assert!(KvStateMachine::check_snapshot(&meta(1, 2), &bytes).is_ok());
        let mut other = KvStateMachine::new();
        other.restore(&meta(1, 2), &bytes).await.unwrap();
        assert_eq!(other.reader().session_table(), sm.reader().session_table());
        assert_eq!(other.snapshot().await.unwrap(), bytes);
        // The restored replica answers the retry from the session, as the original would.
        let retry = [in_session(
            3,
            6,
            1,
            44,
            KvCommand::compare_and_swap("k", Some("v"), "w"),
        )];
        let a = sm.apply(&retry).await.unwrap();
        let b = other.apply(&retry).await.unwrap();
        assert_eq!(a, b);
        assert!(
            matches!(a[0], KvResponse::Duplicate { index: 2, .. }),
            "{a:?}"
        );
        // The background build carries the sessions too.
        assert_eq!(
            sm.begin_snapshot().await.unwrap().await.unwrap(),
            sm.snapshot().await.unwrap()
        );
    }

    #[tokio::test]
    async fn a_format_1_snapshot_restores_with_no_sessions() {
        let mut sm = KvStateMachine::new();
        sm.apply(&[in_session(1, 5, 1, 42, KvCommand::put("k", "v"))])
            .await
            .unwrap();
        let v1 = br#"{"format":1,"last_applied":{"term":3,"index":7},"data":{"a":"1"}}"#;
        sm.restore(&meta(3, 7), v1).await.unwrap();
        assert_eq!(sm.reader().sessions(), 0);
        assert_eq!(sm.reader().get("a").as_deref(), Some("1"));
        // Re-snapshotted in the current format.
        let bytes = sm.snapshot().await.unwrap();
        assert!(bytes.starts_with(&snapshot_binary::MAGIC));
    }

    #[tokio::test]
    async fn session_expiry_is_the_same_on_every_replica_whatever_the_batching() {
        // Several clients, timestamps from leaders whose clocks disagree (some go backwards), a
        // small table that also expires by count: replicas applying the same log in different
        // batches, at different local times, end with the same table and the same answers.
        let mut entries = Vec::new();
        let mut seqs = BTreeMap::new();
        for i in 0..300u64 {
            let client = (i * 31) % 13;
            let seq = seqs.entry(client).or_insert(0u64);
            // Every fifth command is a retry of the client's latest.
            if i % 5 != 0 || *seq == 0 {
                *seq += 1;
            }
            let at = 1_000 + i * 40 - (i % 7) * 90;
            let cmd = KvCommand::put(format!("k{}", i % 11), i.to_string());
            entries.push(in_session(i + 1, client, *seq, at, cmd));
        }
        let (mut a, mut b) = (
            KvStateMachine::with_sessions(500, 8),
            KvStateMachine::with_sessions(500, 8),
        );
        let ra = a.apply(&entries).await.unwrap();
        let mut rb = Vec::new();
        for chunk in entries.chunks(23) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            rb.extend(b.apply(chunk).await.unwrap());
        }
        assert_eq!(ra, rb);
        assert_eq!(a.reader().session_table(), b.reader().session_table());
        assert_eq!(a.snapshot().await.unwrap(), b.snapshot().await.unwrap());
        assert!(ra.iter().any(|r| matches!(r, KvResponse::SessionExpired)));
        assert!(ra.iter().any(|r| matches!(r, KvResponse::Duplicate { .. })));
    }
}
