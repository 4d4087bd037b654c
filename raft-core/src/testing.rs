//! The storage conformance suite: checks that a [`RaftStorage`] implementation keeps the contract
//! written in the trait's documentation, method by method.
//!
//! Enable the `testing` feature in your dev-dependencies and call the suite from a test:
//!
//! ```toml
//! [dev-dependencies]
//! raft-core = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! use raft_core::{testing, RaftStorage};
//!
//! /// `make` builds a fresh, empty storage; `reopen` drops a storage and opens a new one over the
//! /// same durable state (the same directory, a shared handle), as a restarted node would.
//! async fn conformance<S, F>(make: F, reopen: impl FnMut(S) -> S)
//! where
//!     S: RaftStorage<u64>,
//!     F: FnMut() -> S + Clone,
//! {
//!     testing::run_conformance(make.clone()).await;
//!     testing::run_reopen_conformance(make, reopen).await;
//! }
//! ```
//!
//! `raft-storage-mem` runs it with `MemStorage::new` as `make` and, as `reopen`,
//! `|s: MemStorage<u64>| { let h = s.handle(); drop(s); h.open() }`.
//!
//! The suite stores `u64` commands. Every check is also a public function of its own, so a failing
//! check can be run (and debugged) alone; each panics with a message that names the check, the step
//! and what was expected. Checks use fresh storages and only the trait's methods.
//!
//! What is checked:
//! * a fresh storage is empty: default hard state, default [`LogState`], no snapshot;
//! * the hard state is saved and read back, and is independent of the log;
//! * `append` stores entries (all payload kinds) and `entries` reads back any range; an append with a
//!   gap, a wrong first index or non-consecutive entries is refused with
//!   [`StorageError::InvalidRequest`] and writes nothing; an empty append is a no-op;
//! * `entries` edge cases: an empty range, a range past the end (refused), a range starting in the
//!   purged prefix ([`StorageError::Compacted`] with the right indexes);
//! * `truncate` in the middle, at the last entry, of the whole log, past the end (a no-op), into the
//!   purged prefix (refused), and appending after a truncation;
//! * `purge`: the log start moves to the purged entry's id, entries below become compacted, a purge
//!   at or below the last purged index is a no-op, a purge past the last entry is refused;
//! * `install_snapshot` when the log holds the snapshot's last entry (the log is kept), when the
//!   snapshot is ahead of the log or conflicts with it (the log is discarded and starts after the
//!   snapshot); `snapshot` returns the latest one;
//! * a snapshot at or below the stored snapshot's last index (older, or the same index again) is
//!   ignored: the stored snapshot stays and the log is kept, even where the ignored snapshot
//!   conflicts with it;
//! * `snapshot_chunk` reads back exactly the stored data in chunks of 1 byte, of a middle size and
//!   larger than the data, with `done` on the last chunk only; reads at any offset; an offset at or
//!   past the end gives an empty chunk with `done`; no snapshot, another snapshot's id, or a snapshot
//!   replaced between two chunk reads gives `None`;
//! * [`run_reopen_conformance`]: hard state, log, purges and snapshots survive dropping and reopening;
//!   a reopened storage serves chunks of its snapshot; a restart from a snapshot inside the log,
//!   purged up to a point before it, plus a log tail appended after it gives back exactly the same
//!   log state, entries and snapshot.
//!
//! After every step the checks compare `log_state` and the whole readable log with what they
//! expect.

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::error::StorageError;
use crate::storage::{LogState, RaftStorage, SnapshotChunk};
use crate::types::{
    Entry, EntryPayload, HardState, LogId, LogIndex, Membership, Snapshot, SnapshotMeta, Term,
};

/// Runs each named check under [`guard`], with the name it is written as, so that a failure names
/// the check. `$args` is the parenthesized argument list each check is called with (evaluated anew
/// for each check, so `(make())` gives each its own fresh storage).
macro_rules! run_checks {
    ($args:tt; $($check:ident),+ $(,)?) => {
        $(guard(stringify!($check), $check $args).await;)+
    };
}

/// Runs every check of the suite, each on a fresh storage made by `make`.
///
/// `make` must return an empty storage each time (a new in-memory value, a new temporary directory).
///
/// # Panics
/// On the first check the storage fails, with a message naming the check and the broken rule.
pub async fn run_conformance<S, F>(mut make: F)
where
    S: RaftStorage<u64>,
    F: FnMut() -> S,
{
    run_checks!((make());
        fresh_storage_is_empty,
        hard_state_round_trip,
        append_and_read_back,
        append_refuses_gap_or_wrong_start,
        empty_append_is_noop,
        entries_range_edges,
        truncate_in_the_middle,
        truncate_at_the_last_entry,
        truncate_whole_log,
        truncate_past_the_end_is_noop,
        truncate_into_purged_prefix_is_refused,
        append_after_truncate,
        purge_moves_the_log_start,
        purge_at_or_below_last_purged_is_noop,
        purge_past_the_last_entry_is_refused,
        purge_whole_log,
        install_snapshot_inside_log_keeps_log,
        install_snapshot_ahead_of_log_discards_log,
        install_snapshot_on_empty_storage,
        install_snapshot_conflicting_with_log_discards_log,
        snapshot_returns_latest,
        install_older_or_equal_snapshot_is_ignored,
        snapshot_chunk_reads_back_the_data,
        snapshot_chunk_of_no_or_another_snapshot_is_none,
    );
}

/// Runs the checks that state survives a restart: each starts from a fresh storage made by `make`,
/// changes it, then passes it to `reopen`, which must drop it and return a new storage over the
/// same durable state (for a file storage: open the same directory again), and reads everything
/// back.
///
/// # Panics
/// On the first check the storage fails, with a message naming the check and the broken rule.
pub async fn run_reopen_conformance<S, F, R>(mut make: F, mut reopen: R)
where
    S: RaftStorage<u64>,
    F: FnMut() -> S,
    R: FnMut(S) -> S,
{
    run_checks!((make(), &mut reopen);
        reopen_fresh_storage_is_empty,
        reopen_keeps_hard_state,
        reopen_keeps_log,
        reopen_keeps_truncation_and_purge,
        reopen_keeps_snapshot_inside_log,
        reopen_keeps_snapshot_ahead_of_log,
        reopen_serves_snapshot_chunks,
        reopen_restarts_from_snapshot_and_log_tail,
    );
}

// ----- helpers -----

/// Runs one check; if the storage itself panics (rather than a check's assertion), re-panics with a
/// message that names the check.
async fn guard(name: &str, check: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(check).catch_unwind().await {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied());
        match msg {
            Some(msg) if !msg.starts_with(PANIC_PREFIX) => {
                panic!("{PANIC_PREFIX} `{name}` failed: the storage panicked: {msg}")
            }
            _ => std::panic::resume_unwind(panic),
        }
    }
}

const PANIC_PREFIX: &str = "storage conformance check";

/// The entry the suite stores at `index` in `term`. Payloads vary with the index (membership,
/// command, blank) so that every kind is stored and read back, and commands depend on the term so that
/// a re-appended entry differs from the one it replaces.
fn entry(term: Term, index: LogIndex) -> Entry<u64> {
    let payload = match index % 4 {
        1 => EntryPayload::Membership(Box::new(Membership::new([1, 2, 3 + index]))),
        0 => EntryPayload::Blank,
        _ => EntryPayload::Command(index * 1_000 + term),
    };
    Entry {
        log_id: LogId::new(term, index),
        payload: payload.into(),
    }
}

/// Consecutive entries from index `first`, one per term in `terms`.
fn run(first: LogIndex, terms: &[Term]) -> Vec<Entry<u64>> {
    terms
        .iter()
        .zip(first..)
        .map(|(&term, index)| entry(term, index))
        .collect()
}

fn snapshot(term: Term, index: LogIndex, tag: u8) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: Membership::new([1, 2, 3]),
        },
        data: vec![tag, 0xff, 0x00, tag, (index % 256) as u8],
    }
}

/// A snapshot whose data is `len` bytes that vary with their position and with `index`, so that a
/// chunk read at the wrong offset, or from another snapshot, differs.
fn snapshot_of_len(term: Term, index: LogIndex, len: usize) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: Membership::new([1, 2, 3]),
        },
        data: (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ index as usize) as u8)
            .collect(),
    }
}

/// Snapshot data for a failure message: short data whole, long data by its length and first bytes.
fn show_data(data: &[u8]) -> String {
    if data.len() <= 16 {
        format!("{data:?}")
    } else {
        format!("of {} bytes starting {:?}", data.len(), &data[..8])
    }
}

/// Where two byte strings first differ, for a failure message.
fn data_diff(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => format!(" (data first differs at byte {i})"),
        None if got.len() != want.len() => format!(
            " (the data is {} bytes long instead of {})",
            got.len(),
            want.len()
        ),
        None => String::new(),
    }
}

/// Assertions that name the failing check.
struct Check {
    name: &'static str,
}

impl Check {
    fn fail(&self, what: &str, msg: std::fmt::Arguments<'_>) -> ! {
        panic!("{PANIC_PREFIX} `{}` failed: {what}: {msg}", self.name)
    }

    fn ok<T>(&self, r: Result<T, StorageError>, what: &str) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(what, format_args!("unexpected error: {e}")),
        }
    }

    fn eq<T: PartialEq + Debug>(&self, got: T, want: T, what: &str) {
        if got != want {
            self.fail(what, format_args!("expected {want:?}, got {got:?}"));
        }
    }

    fn invalid<T: Debug>(&self, r: Result<T, StorageError>, what: &str) {
        match r {
            Err(StorageError::InvalidRequest(_)) => {}
            other => self.fail(
                what,
                format_args!("expected Err(StorageError::InvalidRequest(_)), got {other:?}"),
            ),
        }
    }

    fn compacted<T: Debug>(
        &self,
        r: Result<T, StorageError>,
        compacted_upto: LogIndex,
        requested: LogIndex,
        what: &str,
    ) {
        match r {
            Err(StorageError::Compacted {
                compacted_upto: c,
                requested: q,
            }) if c == compacted_upto && q == requested => {}
            other => self.fail(
                what,
                format_args!(
                    "expected Err(StorageError::Compacted {{ compacted_upto: {compacted_upto}, \
                     requested: {requested} }}), got {other:?}"
                ),
            ),
        }
    }

    /// Checks `log_state` and that the whole readable log is exactly `log`, starting after
    /// `last_purged`.
    async fn log<S: RaftStorage<u64>>(
        &self,
        s: &mut S,
        last_purged: LogId,
        log: &[Entry<u64>],
        what: &str,
    ) {
        let last_log_id = log.last().map_or(last_purged, |e| e.log_id);
        if let Some(first) = log.first() {
            assert_eq!(
                first.log_id.index,
                last_purged.index + 1,
                "conformance suite bug in `{}`",
                self.name
            );
        }
        let state = self.ok(s.log_state().await, &format!("{what}: log_state()"));
        self.eq(
            state,
            LogState {
                last_purged,
                last_log_id,
            },
            &format!("{what}: log_state()"),
        );
        let (start, end) = (last_purged.index + 1, last_log_id.index + 1);
        let what = format!("{what}: entries({start}, {end}) (the whole log)");
        let got = self.ok(s.entries(start, end).await, &what);
        self.eq(got.as_slice(), log, &what);
    }

    async fn hard_state<S: RaftStorage<u64>>(&self, s: &mut S, want: HardState, what: &str) {
        let what = format!("{what}: hard_state()");
        let got = self.ok(s.hard_state().await, &what);
        self.eq(got, want, &what);
    }

    async fn snapshot<S: RaftStorage<u64>>(&self, s: &mut S, want: Option<&Snapshot>, what: &str) {
        let what = format!("{what}: snapshot()");
        let got = self.ok(s.snapshot().await, &what);
        if got.as_ref() != want {
            let show = |s: Option<&Snapshot>| {
                s.map_or("None".to_string(), |s| {
                    format!("Some({:?} with data {})", s.meta, show_data(&s.data))
                })
            };
            let diff = match (&got, want) {
                (Some(g), Some(w)) => data_diff(&g.data, &w.data),
                _ => String::new(),
            };
            self.fail(
                &what,
                format_args!("expected {}, got {}{diff}", show(want), show(got.as_ref())),
            );
        }
    }

    /// Installs each of `ignored` (a snapshot and what it is) over the stored snapshot `stored`, and
    /// checks after each that it changed nothing: the snapshot is still `stored`, the log still `log`
    /// after `last_purged`.
    async fn installs_ignored<S: RaftStorage<u64>>(
        &self,
        s: &mut S,
        ignored: &[(Snapshot, &str)],
        stored: &Snapshot,
        (last_purged, log): (LogId, &[Entry<u64>]),
    ) {
        for (snap, what) in ignored {
            self.ok(
                s.install_snapshot(snap.clone()).await,
                &format!(
                    "install_snapshot of {what} over a snapshot at {}",
                    stored.meta.last_log_id
                ),
            );
            let after = format!("after installing {what} (ignored)");
            self.snapshot(s, Some(stored), &after).await;
            self.log(s, last_purged, log, &after).await;
        }
    }

    /// Checks that `snapshot_chunk(id, offset, max_len)` gives `want`.
    async fn chunk<S: RaftStorage<u64>>(
        &self,
        s: &mut S,
        (id, offset, max_len): (LogId, u64, usize),
        want: Option<SnapshotChunk>,
        what: &str,
    ) {
        let what = format!("{what}: snapshot_chunk({id}, {offset}, {max_len})");
        let got = self.ok(s.snapshot_chunk(id, offset, max_len).await, &what);
        if got != want {
            let show = |c: &Option<SnapshotChunk>| {
                c.as_ref().map_or("None".to_string(), |c| {
                    format!("Some(data {}, done: {})", show_data(&c.data), c.done)
                })
            };
            let diff = match (&got, &want) {
                (Some(g), Some(w)) => data_diff(&g.data, &w.data),
                _ => String::new(),
            };
            self.fail(
                &what,
                format_args!("expected {}, got {}{diff}", show(&want), show(&got)),
            );
        }
    }

    /// Reads the data of snapshot `id` from the start in chunks of `max_len` (at least 1) bytes, as a
    /// leader sends it, and checks that the chunks are exactly `data`: each `max_len` bytes long but
    /// the last, `done` set on the last one only.
    async fn chunks<S: RaftStorage<u64>>(
        &self,
        s: &mut S,
        id: LogId,
        max_len: usize,
        data: &[u8],
        what: &str,
    ) {
        assert!(max_len > 0, "conformance suite bug in `{}`", self.name);
        let mut offset: usize = 0;
        loop {
            let end = offset.saturating_add(max_len).min(data.len());
            let want = SnapshotChunk {
                data: data[offset..end].to_vec(),
                done: end == data.len(),
            };
            self.chunk(s, (id, offset as u64, max_len), Some(want), what)
                .await;
            if end == data.len() {
                return;
            }
            offset = end;
        }
    }
}

// ----- checks -----

/// A fresh storage has the default hard state, the default [`LogState`], no entries and no snapshot.
pub async fn fresh_storage_is_empty<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "fresh_storage_is_empty",
    };
    c.hard_state(&mut s, HardState::default(), "fresh storage")
        .await;
    let state = c.ok(s.log_state().await, "fresh storage: log_state()");
    c.eq(state, LogState::default(), "fresh storage: log_state()");
    c.snapshot(&mut s, None, "fresh storage").await;
    let got = c.ok(s.entries(1, 1).await, "fresh storage: entries(1, 1)");
    c.eq(got, Vec::new(), "fresh storage: entries(1, 1)");
    c.invalid(
        s.entries(1, 2).await,
        "fresh storage: entries(1, 2) reads past the end",
    );
}

/// `save_hard_state` replaces the hard state (including clearing the vote) and does not touch the log;
/// log operations do not touch the hard state.
pub async fn hard_state_round_trip<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "hard_state_round_trip",
    };
    let voted = HardState {
        term: 3,
        voted_for: Some(2),
    };
    c.ok(
        s.save_hard_state(&voted).await,
        "save_hard_state(term 3, vote 2)",
    );
    c.hard_state(&mut s, voted, "after saving term 3, vote 2")
        .await;
    c.log(&mut s, LogId::default(), &[], "after saving a hard state")
        .await;

    let cleared = HardState {
        term: 4,
        voted_for: None,
    };
    c.ok(
        s.save_hard_state(&cleared).await,
        "save_hard_state(term 4, no vote)",
    );
    c.hard_state(&mut s, cleared, "after saving term 4, no vote")
        .await;

    let log = run(1, &[1, 1, 4]);
    c.ok(s.append(&log).await, "append 1..=3");
    c.ok(s.truncate(3).await, "truncate(3)");
    c.ok(s.purge(1).await, "purge(1)");
    c.hard_state(&mut s, cleared, "after append, truncate and purge")
        .await;

    let again = HardState {
        term: 4,
        voted_for: Some(1),
    };
    c.ok(
        s.save_hard_state(&again).await,
        "save_hard_state(term 4, vote 1)",
    );
    c.hard_state(&mut s, again, "after saving term 4, vote 1")
        .await;
    c.log(
        &mut s,
        LogId::new(1, 1),
        &log[1..2],
        "after saving a hard state over a log",
    )
    .await;
}

/// Appended entries are read back exactly, in one call or several, and any sub-range is readable.
pub async fn append_and_read_back<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "append_and_read_back",
    };
    let log = run(1, &[0, 1, 1, 2, 2, 2, 5, 5]);
    c.ok(s.append(&log[..3]).await, "append 1..=3 to an empty log");
    c.log(&mut s, LogId::default(), &log[..3], "after appending 1..=3")
        .await;
    c.ok(s.append(&log[3..4]).await, "append 4");
    c.log(&mut s, LogId::default(), &log[..4], "after appending 4")
        .await;
    c.ok(s.append(&log[4..]).await, "append 5..=8");
    c.log(&mut s, LogId::default(), &log, "after appending 5..=8")
        .await;
    for (start, end) in [(1, 2), (2, 5), (3, 9), (8, 9), (5, 7)] {
        let what = format!("entries({start}, {end}) of a log 1..=8");
        let got = c.ok(s.entries(start, end).await, &what);
        c.eq(
            got.as_slice(),
            &log[(start - 1) as usize..(end - 1) as usize],
            &what,
        );
    }
    c.hard_state(&mut s, HardState::default(), "after appends")
        .await;
    c.snapshot(&mut s, None, "after appends").await;
}

/// An append with a gap, a wrong first index (too low or too high) or non-consecutive entries is
/// refused with [`StorageError::InvalidRequest`] and writes nothing.
pub async fn append_refuses_gap_or_wrong_start<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "append_refuses_gap_or_wrong_start",
    };
    c.invalid(
        s.append(&run(2, &[1, 1])).await,
        "append 2..=3 to an empty log (gap)",
    );
    c.log(
        &mut s,
        LogId::default(),
        &[],
        "after a refused append to an empty log",
    )
    .await;

    let log = run(1, &[1, 1, 1]);
    c.ok(s.append(&log).await, "append 1..=3");

    let refused: [(&str, Vec<Entry<u64>>); 5] = [
        ("append 5..=6 after 3 (gap)", run(5, &[1, 1])),
        (
            "append 3..=4 after 3 (overlaps the last entry)",
            run(3, &[2, 2]),
        ),
        ("append 1 after 3 (restarts the log)", run(1, &[2])),
        (
            "append [4, 6] after 3 (entries not consecutive)",
            vec![entry(1, 4), entry(1, 6)],
        ),
        (
            "append [4, 5, 5] after 3 (repeated index)",
            vec![entry(1, 4), entry(1, 5), entry(1, 5)],
        ),
    ];
    for (what, entries) in refused {
        c.invalid(s.append(&entries).await, what);
        c.log(
            &mut s,
            LogId::default(),
            &log,
            &format!("after the refused {what}"),
        )
        .await;
    }
    c.ok(
        s.append(&run(4, &[1])).await,
        "append 4 after refused appends",
    );
    c.log(
        &mut s,
        LogId::default(),
        &run(1, &[1, 1, 1, 1]),
        "after appending 4",
    )
    .await;
}

/// Appending an empty slice changes nothing, on an empty log and on a non-empty one.
pub async fn empty_append_is_noop<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "empty_append_is_noop",
    };
    c.ok(s.append(&[]).await, "empty append to an empty log");
    c.log(&mut s, LogId::default(), &[], "after an empty append")
        .await;
    let log = run(1, &[1, 2]);
    c.ok(s.append(&log).await, "append 1..=2");
    c.ok(s.append(&[]).await, "empty append to log 1..=2");
    c.log(&mut s, LogId::default(), &log, "after an empty append")
        .await;
    c.ok(s.purge(2).await, "purge(2)");
    c.ok(
        s.append(&[]).await,
        "empty append to a log whose entries are all purged",
    );
    c.log(&mut s, LogId::new(2, 2), &[], "after an empty append")
        .await;
}

/// `entries` edge cases: empty ranges are fine, a range ending past the last index plus one is refused
/// with [`StorageError::InvalidRequest`], and a range starting at or below the last purged index is
/// [`StorageError::Compacted`].
pub async fn entries_range_edges<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "entries_range_edges",
    };
    let log = run(1, &[1, 1, 2, 2, 3, 3]);
    c.ok(s.append(&log).await, "append 1..=6");
    for i in [1, 3, 6, 7] {
        let what = format!("entries({i}, {i}) (empty range) of a log 1..=6");
        let got = c.ok(s.entries(i, i).await, &what);
        c.eq(got, Vec::new(), &what);
    }
    for (start, end) in [(1, 8), (6, 8), (7, 8), (3, 100)] {
        c.invalid(
            s.entries(start, end).await,
            &format!("entries({start}, {end}) of a log 1..=6 (ends past the last index + 1)"),
        );
    }
    match s.entries(0, 3).await {
        Err(StorageError::Compacted { .. } | StorageError::InvalidRequest(_)) => {}
        other => c.fail(
            "entries(0, 3) (index 0 never exists)",
            format_args!("expected Compacted or InvalidRequest, got {other:?}"),
        ),
    }

    c.ok(s.purge(3).await, "purge(3)");
    c.log(&mut s, LogId::new(2, 3), &log[3..], "after purge(3)")
        .await;
    for start in [1, 2, 3] {
        c.compacted(
            s.entries(start, 5).await,
            3,
            start,
            &format!("entries({start}, 5) after purge(3)"),
        );
    }
    c.compacted(s.entries(3, 3).await, 3, 3, "entries(3, 3) after purge(3)");
    let got = c.ok(s.entries(4, 4).await, "entries(4, 4) after purge(3)");
    c.eq(got, Vec::new(), "entries(4, 4) after purge(3)");
    let got = c.ok(s.entries(4, 5).await, "entries(4, 5) after purge(3)");
    c.eq(got.as_slice(), &log[3..4], "entries(4, 5) after purge(3)");
    c.invalid(
        s.entries(4, 8).await,
        "entries(4, 8) after purge(3) (ends past the last index + 1)",
    );
}

/// Truncating in the middle deletes that entry and all after it.
pub async fn truncate_in_the_middle<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "truncate_in_the_middle",
    };
    let log = run(1, &[1, 1, 2, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=5");
    c.ok(s.truncate(3).await, "truncate(3) of log 1..=5");
    c.log(&mut s, LogId::default(), &log[..2], "after truncate(3)")
        .await;
    c.invalid(
        s.entries(1, 4).await,
        "entries(1, 4) after truncate(3) (the truncated entry is gone)",
    );
    c.hard_state(&mut s, HardState::default(), "after truncate(3)")
        .await;
}

/// Truncating at the last entry deletes just it.
pub async fn truncate_at_the_last_entry<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "truncate_at_the_last_entry",
    };
    let log = run(1, &[1, 1, 2, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=5");
    c.ok(s.truncate(5).await, "truncate(5) of log 1..=5");
    c.log(&mut s, LogId::default(), &log[..4], "after truncate(5)")
        .await;
}

/// Truncating from the first entry empties the log; the log then ends at the last purged id.
pub async fn truncate_whole_log<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "truncate_whole_log",
    };
    let log = run(1, &[1, 1, 2]);
    c.ok(s.append(&log).await, "append 1..=3");
    c.ok(s.truncate(1).await, "truncate(1) of log 1..=3");
    c.log(&mut s, LogId::default(), &[], "after truncate(1)")
        .await;

    let log = run(1, &[1, 2, 2, 3, 3]);
    c.ok(s.append(&log).await, "append 1..=5 to the emptied log");
    c.ok(s.purge(2).await, "purge(2)");
    c.ok(
        s.truncate(3).await,
        "truncate(3) right after the purged prefix",
    );
    c.log(
        &mut s,
        LogId::new(2, 2),
        &[],
        "after purge(2) and truncate(3)",
    )
    .await;
}

/// Truncating past the last index is a no-op.
pub async fn truncate_past_the_end_is_noop<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "truncate_past_the_end_is_noop",
    };
    c.ok(s.truncate(1).await, "truncate(1) of an empty log");
    c.log(
        &mut s,
        LogId::default(),
        &[],
        "after truncate(1) of an empty log",
    )
    .await;
    let log = run(1, &[1, 1, 2]);
    c.ok(s.append(&log).await, "append 1..=3");
    for from in [4, 5, 1_000] {
        c.ok(
            s.truncate(from).await,
            &format!("truncate({from}) of log 1..=3"),
        );
        c.log(
            &mut s,
            LogId::default(),
            &log,
            &format!("after truncate({from})"),
        )
        .await;
    }
}

/// Truncating at or below the last purged index is refused with [`StorageError::InvalidRequest`] and
/// changes nothing.
pub async fn truncate_into_purged_prefix_is_refused<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "truncate_into_purged_prefix_is_refused",
    };
    let log = run(1, &[1, 1, 2, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=5");
    c.ok(s.purge(3).await, "purge(3)");
    for from in [3, 2, 1] {
        c.invalid(
            s.truncate(from).await,
            &format!("truncate({from}) after purge(3)"),
        );
        c.log(
            &mut s,
            LogId::new(2, 3),
            &log[3..],
            &format!("after the refused truncate({from})"),
        )
        .await;
    }
}

/// After a truncation the log continues from the truncation point: new entries (of a new term) are
/// appended there and read back instead of the old ones; an append at the old end is refused.
pub async fn append_after_truncate<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "append_after_truncate",
    };
    let old = run(1, &[1, 1, 1, 1, 1]);
    c.ok(s.append(&old).await, "append 1..=5 (term 1)");
    c.ok(s.truncate(3).await, "truncate(3)");
    c.invalid(
        s.append(&run(6, &[1])).await,
        "append 6 after truncate(3) (the log now ends at 2)",
    );
    let new = run(3, &[2, 2]);
    c.ok(
        s.append(&new).await,
        "append 3..=4 (term 2) after truncate(3)",
    );
    let mut want = old[..2].to_vec();
    want.extend_from_slice(&new);
    c.log(
        &mut s,
        LogId::default(),
        &want,
        "after truncate(3) and appending 3..=4 of term 2",
    )
    .await;
    c.ok(s.truncate(4).await, "truncate(4)");
    c.ok(s.append(&run(4, &[3, 3, 3])).await, "append 4..=6 (term 3)");
    want.truncate(3);
    want.extend(run(4, &[3, 3, 3]));
    c.log(
        &mut s,
        LogId::default(),
        &want,
        "after truncate(4) and appending 4..=6 of term 3",
    )
    .await;
}

/// A purge makes the purged entry's id the new `last_purged`; entries up to it become compacted,
/// later ones stay readable; appending continues after the last entry.
pub async fn purge_moves_the_log_start<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "purge_moves_the_log_start",
    };
    let log = run(1, &[1, 2, 3, 4, 5, 6]);
    c.ok(s.append(&log).await, "append 1..=6 (term = index)");
    c.ok(s.purge(2).await, "purge(2)");
    c.log(&mut s, LogId::new(2, 2), &log[2..], "after purge(2)")
        .await;
    c.compacted(s.entries(2, 4).await, 2, 2, "entries(2, 4) after purge(2)");
    c.ok(s.purge(4).await, "purge(4)");
    c.log(&mut s, LogId::new(4, 4), &log[4..], "after purge(4)")
        .await;
    c.compacted(s.entries(3, 6).await, 4, 3, "entries(3, 6) after purge(4)");
    c.ok(
        s.append(&run(7, &[6, 7])).await,
        "append 7..=8 after purge(4)",
    );
    let mut want = log[4..].to_vec();
    want.extend(run(7, &[6, 7]));
    c.log(
        &mut s,
        LogId::new(4, 4),
        &want,
        "after purge(4) and appending 7..=8",
    )
    .await;
    c.hard_state(&mut s, HardState::default(), "after purges")
        .await;
    c.snapshot(&mut s, None, "after purges (a purge stores no snapshot)")
        .await;
}

/// A purge at or below the last purged index is a no-op.
pub async fn purge_at_or_below_last_purged_is_noop<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "purge_at_or_below_last_purged_is_noop",
    };
    c.ok(s.purge(0).await, "purge(0) of an empty log");
    c.log(&mut s, LogId::default(), &[], "after purge(0)").await;
    let log = run(1, &[1, 2, 3, 4, 5]);
    c.ok(s.append(&log).await, "append 1..=5");
    c.ok(s.purge(3).await, "purge(3)");
    for upto in [3, 2, 1, 0] {
        c.ok(
            s.purge(upto).await,
            &format!("purge({upto}) after purge(3)"),
        );
        c.log(
            &mut s,
            LogId::new(3, 3),
            &log[3..],
            &format!("after purge({upto}) following purge(3)"),
        )
        .await;
    }
}

/// A purge past the last index is refused with [`StorageError::InvalidRequest`] and changes nothing.
pub async fn purge_past_the_last_entry_is_refused<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "purge_past_the_last_entry_is_refused",
    };
    c.invalid(s.purge(1).await, "purge(1) of an empty log");
    c.log(&mut s, LogId::default(), &[], "after the refused purge(1)")
        .await;
    let log = run(1, &[1, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=3");
    for upto in [4, 10] {
        c.invalid(s.purge(upto).await, &format!("purge({upto}) of log 1..=3"));
        c.log(
            &mut s,
            LogId::default(),
            &log,
            &format!("after the refused purge({upto})"),
        )
        .await;
    }
}

/// Purging up to the last entry empties the log; it then ends at the purged entry, and appending
/// continues after it.
pub async fn purge_whole_log<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "purge_whole_log",
    };
    let log = run(1, &[1, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=3");
    c.ok(s.purge(3).await, "purge(3) of log 1..=3");
    c.log(&mut s, LogId::new(3, 3), &[], "after purge(3)").await;
    c.compacted(s.entries(3, 4).await, 3, 3, "entries(3, 4) after purge(3)");
    c.invalid(
        s.purge(4).await,
        "purge(4) after purging everything (past the last index)",
    );
    c.invalid(
        s.append(&run(5, &[4])).await,
        "append 5 after purging up to 3 (gap)",
    );
    let more = run(4, &[4, 4]);
    c.ok(s.append(&more).await, "append 4..=5 after purge(3)");
    c.log(
        &mut s,
        LogId::new(3, 3),
        &more,
        "after purging everything and appending 4..=5",
    )
    .await;
}

/// Installing a snapshot whose last entry the log holds keeps the log (the caller purges later);
/// `snapshot` returns it.
pub async fn install_snapshot_inside_log_keeps_log<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "install_snapshot_inside_log_keeps_log",
    };
    let log = run(1, &[1, 2, 3, 4, 5]);
    c.ok(s.append(&log).await, "append 1..=5");
    let snap = snapshot(3, 3, 1);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 3-3 over log 1..=5",
    );
    c.snapshot(&mut s, Some(&snap), "after installing a snapshot at 3-3")
        .await;
    c.log(
        &mut s,
        LogId::default(),
        &log,
        "after installing a snapshot at 3-3 (the log holds 3-3: it is kept)",
    )
    .await;
    c.ok(s.purge(3).await, "purge(3) after the snapshot");
    c.log(&mut s, LogId::new(3, 3), &log[3..], "after purge(3)")
        .await;
    let last = snapshot(5, 5, 2);
    c.ok(
        s.install_snapshot(last.clone()).await,
        "install_snapshot at 5-5 (the last entry)",
    );
    c.snapshot(&mut s, Some(&last), "after installing a snapshot at 5-5")
        .await;
    c.log(
        &mut s,
        LogId::new(3, 3),
        &log[3..],
        "after installing a snapshot at the last entry 5-5 (kept)",
    )
    .await;
    c.hard_state(&mut s, HardState::default(), "after snapshots")
        .await;
}

/// Installing a snapshot ahead of the log discards the log; `last_purged` becomes the snapshot's last
/// log id and appending continues after it.
pub async fn install_snapshot_ahead_of_log_discards_log<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "install_snapshot_ahead_of_log_discards_log",
    };
    let log = run(1, &[1, 1, 2]);
    c.ok(s.append(&log).await, "append 1..=3");
    let snap = snapshot(4, 10, 1);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 4-10 over log 1..=3",
    );
    c.snapshot(&mut s, Some(&snap), "after installing a snapshot at 4-10")
        .await;
    c.log(
        &mut s,
        LogId::new(4, 10),
        &[],
        "after installing a snapshot at 4-10 ahead of log 1..=3",
    )
    .await;
    c.compacted(
        s.entries(3, 4).await,
        10,
        3,
        "entries(3, 4) after a snapshot at 4-10",
    );
    c.compacted(
        s.entries(10, 11).await,
        10,
        10,
        "entries(10, 11) after a snapshot at 4-10",
    );
    c.invalid(
        s.append(&run(4, &[2])).await,
        "append 4 after a snapshot at 4-10 (the log now ends at 10)",
    );
    c.invalid(
        s.truncate(10).await,
        "truncate(10) after a snapshot at 4-10 (in the purged prefix)",
    );
    let more = run(11, &[4, 5]);
    c.ok(
        s.append(&more).await,
        "append 11..=12 after a snapshot at 4-10",
    );
    c.log(
        &mut s,
        LogId::new(4, 10),
        &more,
        "after a snapshot at 4-10 and appending 11..=12",
    )
    .await;
    // Ahead of a log that was already purged.
    c.ok(s.purge(11).await, "purge(11)");
    let snap = snapshot(6, 20, 2);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 6-20 over log 12..=12",
    );
    c.snapshot(&mut s, Some(&snap), "after installing a snapshot at 6-20")
        .await;
    c.log(
        &mut s,
        LogId::new(6, 20),
        &[],
        "after installing a snapshot at 6-20 ahead of log 12..=12",
    )
    .await;
}

/// Installing a snapshot on a fresh storage: the log starts after it.
pub async fn install_snapshot_on_empty_storage<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "install_snapshot_on_empty_storage",
    };
    let snap = snapshot(2, 7, 9);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 2-7 on a fresh storage",
    );
    c.snapshot(&mut s, Some(&snap), "after installing a snapshot at 2-7")
        .await;
    c.log(
        &mut s,
        LogId::new(2, 7),
        &[],
        "after installing a snapshot at 2-7 on a fresh storage",
    )
    .await;
    c.hard_state(&mut s, HardState::default(), "after installing a snapshot")
        .await;
    let more = run(8, &[2, 3]);
    c.ok(s.append(&more).await, "append 8..=9 after the snapshot");
    c.log(
        &mut s,
        LogId::new(2, 7),
        &more,
        "after a snapshot at 2-7 and appending 8..=9",
    )
    .await;
}

/// A snapshot whose last index is in the log but with another term: the log does not hold the
/// snapshot's last entry, so it is discarded.
pub async fn install_snapshot_conflicting_with_log_discards_log<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "install_snapshot_conflicting_with_log_discards_log",
    };
    let log = run(1, &[1, 1, 1, 1, 1]);
    c.ok(s.append(&log).await, "append 1..=5 (term 1)");
    let snap = snapshot(2, 3, 1);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 2-3 over log 1..=5 of term 1",
    );
    c.snapshot(
        &mut s,
        Some(&snap),
        "after installing a conflicting snapshot",
    )
    .await;
    c.log(
        &mut s,
        LogId::new(2, 3),
        &[],
        "after installing a snapshot at 2-3 that conflicts with entry 1-3",
    )
    .await;
}

/// `snapshot` returns the latest installed snapshot, with its metadata and data intact.
pub async fn snapshot_returns_latest<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "snapshot_returns_latest",
    };
    let log = run(1, &[1, 1, 2, 2, 3, 3]);
    c.ok(s.append(&log).await, "append 1..=6");
    let first = snapshot(1, 2, 1);
    c.ok(
        s.install_snapshot(first.clone()).await,
        "install_snapshot at 1-2",
    );
    c.snapshot(&mut s, Some(&first), "after the first snapshot")
        .await;
    let second = Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(2, 4),
            membership: Membership::new([4, 5]),
        },
        data: (0..=255).collect(),
    };
    c.ok(
        s.install_snapshot(second.clone()).await,
        "install_snapshot at 2-4",
    );
    c.snapshot(&mut s, Some(&second), "after the second snapshot")
        .await;
    c.snapshot(&mut s, Some(&second), "reading the snapshot twice")
        .await;
    let empty = Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(3, 6),
            membership: Membership::new([1]),
        },
        data: Vec::new(),
    };
    c.ok(
        s.install_snapshot(empty.clone()).await,
        "install_snapshot at 3-6 with empty data",
    );
    c.snapshot(&mut s, Some(&empty), "after a snapshot with empty data")
        .await;
    c.log(
        &mut s,
        LogId::default(),
        &log,
        "after snapshots inside the log",
    )
    .await;
}

/// A snapshot whose last log index is at or below the stored snapshot's is ignored: the stored
/// snapshot stays, and the log is untouched, even where the ignored snapshot conflicts with the log
/// (installing it would have discarded the log) or lies below the purge point.
pub async fn install_older_or_equal_snapshot_is_ignored<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "install_older_or_equal_snapshot_is_ignored",
    };
    let log = run(1, &[1, 1, 2, 2, 2, 3, 3, 3]);
    c.ok(s.append(&log).await, "append 1..=8");
    let stored = snapshot(2, 5, 1);
    c.ok(
        s.install_snapshot(stored.clone()).await,
        "install_snapshot at 2-5 over log 1..=8",
    );
    let ignored = [
        (
            snapshot(1, 2, 2),
            "an older snapshot at 1-2 (inside the log)",
        ),
        (
            snapshot(2, 5, 3),
            "a snapshot at 2-5 again, with other data",
        ),
        (
            snapshot(3, 5, 4),
            "a snapshot at 3-5 (the stored index, another term: it conflicts with entry 2-5)",
        ),
        (
            snapshot(9, 4, 5),
            "an older snapshot at 9-4 (it conflicts with entry 2-4)",
        ),
    ];
    c.installs_ignored(&mut s, &ignored, &stored, (LogId::default(), &log))
        .await;

    c.ok(s.purge(5).await, "purge(5)");
    let ignored = [(
        snapshot(1, 3, 6),
        "an older snapshot at 1-3 (below the purge point 5)",
    )];
    c.installs_ignored(&mut s, &ignored, &stored, (LogId::new(2, 5), &log[5..]))
        .await;

    // After a snapshot that discarded the log, older ones are ignored too.
    let ahead = snapshot(4, 20, 7);
    c.ok(
        s.install_snapshot(ahead.clone()).await,
        "install_snapshot at 4-20 (ahead of log 6..=8)",
    );
    let more = run(21, &[4, 4]);
    c.ok(
        s.append(&more).await,
        "append 21..=22 after the snapshot at 4-20",
    );
    let ignored = [
        (
            snapshot(4, 12, 8),
            "an older snapshot at 4-12 (between the old log and 20)",
        ),
        (
            snapshot(5, 20, 9),
            "a snapshot at 5-20 (the stored index, another term)",
        ),
        (
            snapshot(3, 7, 10),
            "an older snapshot at 3-7 (inside the discarded log)",
        ),
    ];
    c.installs_ignored(&mut s, &ignored, &ahead, (LogId::new(4, 20), &more))
        .await;
    c.hard_state(&mut s, HardState::default(), "after ignored snapshots")
        .await;
}

/// `snapshot_chunk` reads back exactly the stored snapshot's data, in chunks of 1 byte, of a middle
/// size, of exactly the data's size and larger than it, with `done` on the last chunk only; reads at
/// any offset; an offset at or past the end gives an empty chunk with `done`; a snapshot with empty
/// data is one empty, final chunk.
pub async fn snapshot_chunk_reads_back_the_data<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "snapshot_chunk_reads_back_the_data",
    };
    let log = run(1, &[1, 1, 2, 2, 2, 3]);
    c.ok(s.append(&log).await, "append 1..=6");
    let snap = snapshot_of_len(2, 3, 1000);
    let id = snap.meta.last_log_id;
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 2-3 with 1000 bytes of data",
    );
    for max_len in [1, 7, 333, 999, 1000, 1001, 1 << 20, usize::MAX] {
        c.chunks(
            &mut s,
            id,
            max_len,
            &snap.data,
            &format!("reading the 1000-byte snapshot in chunks of {max_len}"),
        )
        .await;
    }
    for (offset, max_len) in [
        (0, 10),
        (500, 500),
        (500, 499),
        (990, 100),
        (999, 1),
        (998, 1),
    ] {
        let end = (offset + max_len).min(1000);
        let want = SnapshotChunk {
            data: snap.data[offset..end].to_vec(),
            done: end == 1000,
        };
        c.chunk(
            &mut s,
            (id, offset as u64, max_len),
            Some(want),
            "a read at an arbitrary offset",
        )
        .await;
    }
    let end = SnapshotChunk {
        data: Vec::new(),
        done: true,
    };
    for offset in [1000, 1001, 5000, u64::MAX] {
        c.chunk(
            &mut s,
            (id, offset, 100),
            Some(end.clone()),
            "a read at or past the end of the data",
        )
        .await;
    }
    c.snapshot(&mut s, Some(&snap), "after chunk reads").await;
    c.log(&mut s, LogId::default(), &log, "after chunk reads")
        .await;

    let empty = snapshot_of_len(3, 6, 0);
    c.ok(
        s.install_snapshot(empty.clone()).await,
        "install_snapshot at 3-6 with empty data",
    );
    for max_len in [1, 100] {
        c.chunk(
            &mut s,
            (empty.meta.last_log_id, 0, max_len),
            Some(end.clone()),
            "reading a snapshot with empty data",
        )
        .await;
    }
}

/// `snapshot_chunk` gives `None` when there is no snapshot (whatever the id, the default one too),
/// for an id that is not the stored snapshot's (another index or another term), and for a snapshot
/// replaced between two chunk reads: never bytes of another snapshot.
pub async fn snapshot_chunk_of_no_or_another_snapshot_is_none<S: RaftStorage<u64>>(mut s: S) {
    let c = Check {
        name: "snapshot_chunk_of_no_or_another_snapshot_is_none",
    };
    for id in [LogId::default(), LogId::new(1, 1)] {
        c.chunk(&mut s, (id, 0, 100), None, "a fresh storage (no snapshot)")
            .await;
    }
    let log = run(1, &[1, 1, 1, 2, 2, 2]);
    c.ok(s.append(&log).await, "append 1..=6");
    c.chunk(
        &mut s,
        (LogId::new(1, 2), 0, 100),
        None,
        "a log but no snapshot",
    )
    .await;

    let first = snapshot_of_len(1, 3, 300);
    let first_id = first.meta.last_log_id;
    c.ok(
        s.install_snapshot(first.clone()).await,
        "install_snapshot at 1-3 with 300 bytes",
    );
    let head = SnapshotChunk {
        data: first.data[..100].to_vec(),
        done: false,
    };
    c.chunk(
        &mut s,
        (first_id, 0, 100),
        Some(head),
        "the first chunk of the snapshot at 1-3",
    )
    .await;
    for id in [
        LogId::new(2, 3),
        LogId::new(1, 2),
        LogId::new(1, 4),
        LogId::default(),
    ] {
        c.chunk(
            &mut s,
            (id, 0, 100),
            None,
            "another id than the stored snapshot's (1-3)",
        )
        .await;
    }

    let second = snapshot_of_len(2, 5, 200);
    c.ok(
        s.install_snapshot(second.clone()).await,
        "install_snapshot at 2-5 while the snapshot at 1-3 is being read",
    );
    for offset in [100, 0] {
        c.chunk(
            &mut s,
            (first_id, offset, 100),
            None,
            "the replaced snapshot at 1-3",
        )
        .await;
    }
    c.chunks(
        &mut s,
        second.meta.last_log_id,
        64,
        &second.data,
        "the new snapshot at 2-5",
    )
    .await;
    c.ok(
        s.install_snapshot(first.clone()).await,
        "install_snapshot at 1-3 again (older: ignored)",
    );
    c.chunk(
        &mut s,
        (first_id, 0, 100),
        None,
        "the snapshot at 1-3, installed again but ignored",
    )
    .await;
    c.chunks(
        &mut s,
        second.meta.last_log_id,
        1000,
        &second.data,
        "the snapshot at 2-5 after an ignored install",
    )
    .await;
}

// ----- reopen checks -----

/// A fresh storage reopened is still empty.
pub async fn reopen_fresh_storage_is_empty<S, R>(s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_fresh_storage_is_empty",
    };
    let mut s = reopen(s);
    c.hard_state(&mut s, HardState::default(), "reopened fresh storage")
        .await;
    c.log(&mut s, LogId::default(), &[], "reopened fresh storage")
        .await;
    c.snapshot(&mut s, None, "reopened fresh storage").await;
}

/// The last saved hard state survives a reopen.
pub async fn reopen_keeps_hard_state<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_keeps_hard_state",
    };
    let first = HardState {
        term: 5,
        voted_for: Some(3),
    };
    c.ok(
        s.save_hard_state(&first).await,
        "save_hard_state(term 5, vote 3)",
    );
    let mut s = reopen(s);
    c.hard_state(&mut s, first, "after reopening").await;
    let second = HardState {
        term: 6,
        voted_for: None,
    };
    c.ok(
        s.save_hard_state(&second).await,
        "save_hard_state(term 6, no vote) after reopening",
    );
    let mut s = reopen(s);
    c.hard_state(&mut s, second, "after reopening twice").await;
    c.log(&mut s, LogId::default(), &[], "after reopening twice")
        .await;
}

/// Appended entries survive a reopen, and the reopened storage appends after them.
pub async fn reopen_keeps_log<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_keeps_log",
    };
    let log = run(1, &[0, 1, 1, 2, 2, 2, 3, 3, 3]);
    c.ok(s.append(&log[..4]).await, "append 1..=4");
    c.ok(s.append(&log[4..6]).await, "append 5..=6");
    let mut s = reopen(s);
    c.log(&mut s, LogId::default(), &log[..6], "after reopening")
        .await;
    c.ok(s.append(&log[6..]).await, "append 7..=9 after reopening");
    let mut s = reopen(s);
    c.log(&mut s, LogId::default(), &log, "after reopening twice")
        .await;
    c.hard_state(&mut s, HardState::default(), "after reopening twice")
        .await;
    c.snapshot(&mut s, None, "after reopening twice").await;
}

/// Truncations and purges survive a reopen.
pub async fn reopen_keeps_truncation_and_purge<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_keeps_truncation_and_purge",
    };
    let old = run(1, &[1, 1, 1, 1, 1, 1]);
    c.ok(s.append(&old).await, "append 1..=6 (term 1)");
    c.ok(s.truncate(4).await, "truncate(4)");
    let mut s = reopen(s);
    c.log(
        &mut s,
        LogId::default(),
        &old[..3],
        "after truncate(4) and reopening",
    )
    .await;
    let new = run(4, &[2, 2, 2]);
    c.ok(s.append(&new).await, "append 4..=6 (term 2)");
    c.ok(s.purge(2).await, "purge(2)");
    let mut s = reopen(s);
    let mut want = old[2..3].to_vec();
    want.extend_from_slice(&new);
    c.log(
        &mut s,
        LogId::new(1, 2),
        &want,
        "after appending 4..=6 of term 2, purge(2) and reopening",
    )
    .await;
    c.ok(s.purge(6).await, "purge(6) (everything)");
    let mut s = reopen(s);
    c.log(
        &mut s,
        LogId::new(2, 6),
        &[],
        "after purging everything and reopening",
    )
    .await;
}

/// A snapshot inside the log survives a reopen, with the log.
pub async fn reopen_keeps_snapshot_inside_log<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_keeps_snapshot_inside_log",
    };
    let log = run(1, &[1, 1, 2, 2]);
    c.ok(s.append(&log).await, "append 1..=4");
    let snap = snapshot(1, 2, 7);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 1-2",
    );
    let mut s = reopen(s);
    c.snapshot(&mut s, Some(&snap), "after reopening").await;
    c.log(&mut s, LogId::default(), &log, "after reopening")
        .await;
    c.ok(s.purge(2).await, "purge(2) after reopening");
    let mut s = reopen(s);
    c.snapshot(&mut s, Some(&snap), "after purge(2) and reopening")
        .await;
    c.log(
        &mut s,
        LogId::new(1, 2),
        &log[2..],
        "after purge(2) and reopening",
    )
    .await;
}

/// A snapshot ahead of the log survives a reopen: the log still starts after it.
pub async fn reopen_keeps_snapshot_ahead_of_log<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_keeps_snapshot_ahead_of_log",
    };
    let hs = HardState {
        term: 4,
        voted_for: Some(2),
    };
    c.ok(
        s.save_hard_state(&hs).await,
        "save_hard_state(term 4, vote 2)",
    );
    c.ok(s.append(&run(1, &[1, 2])).await, "append 1..=2");
    let snap = snapshot(3, 9, 3);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 3-9 over log 1..=2",
    );
    let mut s = reopen(s);
    c.snapshot(&mut s, Some(&snap), "after reopening").await;
    c.log(&mut s, LogId::new(3, 9), &[], "after reopening")
        .await;
    c.hard_state(&mut s, hs, "after reopening").await;
    let more = run(10, &[4]);
    c.ok(s.append(&more).await, "append 10 after reopening");
    let mut s = reopen(s);
    c.log(
        &mut s,
        LogId::new(3, 9),
        &more,
        "after appending 10 and reopening",
    )
    .await;
}

/// A reopened storage serves chunks of its snapshot, inside the log and ahead of it, and still
/// ignores older snapshots.
pub async fn reopen_serves_snapshot_chunks<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_serves_snapshot_chunks",
    };
    c.ok(s.append(&run(1, &[1, 1, 1, 2])).await, "append 1..=4");
    let inside = snapshot_of_len(1, 3, 777);
    let inside_id = inside.meta.last_log_id;
    c.ok(
        s.install_snapshot(inside.clone()).await,
        "install_snapshot at 1-3 with 777 bytes",
    );
    let mut s = reopen(s);
    for max_len in [100, 777, 1000] {
        c.chunks(
            &mut s,
            inside_id,
            max_len,
            &inside.data,
            "the snapshot at 1-3 after reopening",
        )
        .await;
    }
    c.chunk(
        &mut s,
        (LogId::new(2, 3), 0, 100),
        None,
        "another id after reopening",
    )
    .await;

    let ahead = snapshot_of_len(5, 30, 1500);
    c.ok(
        s.install_snapshot(ahead.clone()).await,
        "install_snapshot at 5-30 with 1500 bytes (ahead of the log)",
    );
    let mut s = reopen(s);
    c.chunks(
        &mut s,
        ahead.meta.last_log_id,
        256,
        &ahead.data,
        "the snapshot at 5-30 after reopening",
    )
    .await;
    c.chunk(
        &mut s,
        (inside_id, 0, 100),
        None,
        "the replaced snapshot at 1-3 after reopening",
    )
    .await;
    c.ok(
        s.install_snapshot(inside.clone()).await,
        "install_snapshot at 1-3 again after reopening (older: ignored)",
    );
    let mut s = reopen(s);
    c.snapshot(
        &mut s,
        Some(&ahead),
        "after an ignored older snapshot and reopening",
    )
    .await;
    c.log(
        &mut s,
        LogId::new(5, 30),
        &[],
        "after an ignored older snapshot and reopening",
    )
    .await;
}

/// A restart from a snapshot plus the log tail: a snapshot inside the log, a purge up to a point
/// before it (the entries kept for followers just behind), more entries appended; after reopening,
/// the log state, the entries and the snapshot are exactly as before, and the log goes on.
pub async fn reopen_restarts_from_snapshot_and_log_tail<S, R>(mut s: S, reopen: &mut R)
where
    S: RaftStorage<u64>,
    R: FnMut(S) -> S,
{
    let c = Check {
        name: "reopen_restarts_from_snapshot_and_log_tail",
    };
    let hs = HardState {
        term: 3,
        voted_for: Some(1),
    };
    c.ok(
        s.save_hard_state(&hs).await,
        "save_hard_state(term 3, vote 1)",
    );
    let log = run(1, &[1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3]);
    c.ok(s.append(&log[..10]).await, "append 1..=10");
    let snap = snapshot_of_len(2, 7, 300);
    c.ok(
        s.install_snapshot(snap.clone()).await,
        "install_snapshot at 2-7 over log 1..=10",
    );
    c.ok(s.purge(4).await, "purge(4) (before the snapshot at 7)");
    c.ok(
        s.append(&log[10..12]).await,
        "append 11..=12 after the snapshot",
    );
    let purged = log[3].log_id;
    let what = "after a snapshot at 2-7, purge(4) and appending 11..=12";
    c.log(&mut s, purged, &log[4..12], what).await;
    c.snapshot(&mut s, Some(&snap), what).await;

    let mut s = reopen(s);
    let what = "after a snapshot at 2-7, purge(4), appending 11..=12 and reopening";
    c.log(&mut s, purged, &log[4..12], what).await;
    c.snapshot(&mut s, Some(&snap), what).await;
    c.hard_state(&mut s, hs, what).await;
    c.chunks(&mut s, snap.meta.last_log_id, 128, &snap.data, what)
        .await;

    c.ok(s.append(&log[12..]).await, "append 13 after reopening");
    let mut s = reopen(s);
    let what = "after appending 13 and reopening again";
    c.log(&mut s, purged, &log[4..], what).await;
    c.snapshot(&mut s, Some(&snap), what).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `check` panics with, through [`guard`] as the runners call it.
    async fn guarded_panic(check: impl Future<Output = ()>) -> String {
        let panic = AssertUnwindSafe(guard("some_check", check))
            .catch_unwind()
            .await
            .expect_err("the check panics");
        match panic.downcast::<String>() {
            Ok(msg) => *msg,
            Err(panic) => panic.downcast_ref::<&str>().unwrap().to_string(),
        }
    }

    #[tokio::test]
    async fn a_panic_inside_the_storage_is_reported_with_the_check_name() {
        let msg = guarded_panic(async { panic!("disk on fire") }).await;
        assert_eq!(
            msg,
            "storage conformance check `some_check` failed: the storage panicked: disk on fire"
        );
    }

    #[tokio::test]
    async fn a_failed_assertion_of_a_check_is_reported_unchanged() {
        let c = Check { name: "some_check" };
        let msg = guarded_panic(async move { c.eq(1, 2, "a step") }).await;
        assert_eq!(
            msg,
            "storage conformance check `some_check` failed: a step: expected 2, got 1"
        );
    }
}
