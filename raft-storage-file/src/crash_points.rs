//! A crash at every file system step of the multi-step operations, through the [`Faults`] seam: for
//! each operation, the test counts the steps it takes (each file create, write, fsync, rename,
//! truncate, unlink and directory fsync), then, for every `k`, runs it again on a copy of the same
//! directory with the process "dying" just before step `k` (that step and every later one fail, so
//! the files are exactly as the first `k` steps left them), reopens the directory, and checks that
//! the storage holds either exactly what it held before the operation or exactly what the completed
//! operation leaves: the same snapshot, purge point, log end and readable entries, nothing else. The
//! recovery of each of those directories is itself crashed at each of its steps, and the next open
//! must reach the same state. Finally the recovered storage must keep working: an append after it
//! survives a clean reopen.
//!
//! What this models is a crash of the process (the page cache survives). A machine crash can also
//! lose steps that were not yet fsynced; the ordering claims that protects are in the crate docs,
//! and `store::tests` covers unlinks reaching the disk out of order.

use std::fs;
use std::path::Path;

use raft_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogState, Membership, Snapshot, SnapshotMeta,
    StorageError, Term,
};
use tempfile::TempDir;

use crate::faults::Faults;
use crate::format::encode_batch;
use crate::store::{Store, LOCK_FILE};
use crate::{FsyncPolicy, Options};

/// Everything a store holds, read back.
#[derive(PartialEq)]
struct State {
    hard_state: HardState,
    log_state: LogState,
    log: Vec<Entry<u64>>,
    snapshot: Option<Snapshot>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let log = self.log.first().zip(self.log.last());
        let snapshot = self.snapshot.as_ref().map(|s| {
            format!(
                "{} ({} bytes, sum {})",
                s.meta.last_log_id,
                s.data.len(),
                s.data.iter().map(|&b| u64::from(b)).sum::<u64>()
            )
        });
        f.debug_struct("State")
            .field("hard_state", &self.hard_state)
            .field("log_state", &self.log_state)
            .field("log (first, last)", &log.map(|(a, b)| (a.log_id, b.log_id)))
            .field("entries", &self.log.len())
            .field("snapshot", &snapshot)
            .finish()
    }
}

fn read_state(s: &mut Store) -> State {
    let log_state = s.log_state();
    let log = s
        .entries(
            log_state.last_purged.index + 1,
            log_state.last_log_id.index + 1,
        )
        .expect("every entry of the log is readable");
    State {
        hard_state: s.hard_state(),
        log_state,
        log,
        snapshot: s.snapshot().expect("the snapshot is readable"),
    }
}

/// Small segments (two or three entries each), so that operations span several; fsync on, so that
/// the fsync steps are taken (and cut) as in production.
fn opts() -> Options {
    Options::default()
        .segment_size(120)
        .fsync(FsyncPolicy::Always)
}

fn entry(term: Term, index: LogIndex) -> Entry<u64> {
    Entry {
        log_id: LogId::new(term, index),
        payload: EntryPayload::Command(index * 100 + term).into(),
    }
}

fn append(s: &mut Store, term: Term, first: LogIndex, n: u64) {
    let entries: Vec<_> = (first..first + n).map(|i| entry(term, i)).collect();
    s.append(&mut encode_batch(first, &entries).unwrap())
        .unwrap();
}

fn snapshot(term: Term, index: LogIndex, len: usize) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: Membership::new([1, 2, 3]),
        },
        data: (0..len).map(|i| (i as u64 * 7 + index) as u8).collect(),
    }
}

/// Copies a storage directory (not its lock file) to a new temporary directory.
fn copy_dir(from: &Path) -> TempDir {
    let to = tempfile::tempdir().unwrap();
    copy_tree(from, to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.file_name() != LOCK_FILE {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Closes a healthy store cleanly (it records a clean shutdown).
fn close(mut s: Store) {
    s.close().expect("a clean close");
}

/// Releases a store as the death of its process would: no clean shutdown is recorded.
fn crash(mut s: Store) {
    s.release();
}

/// One storage call of an operation under test.
type Call<'a> = &'a dyn Fn(&mut Store) -> Result<(), StorageError>;

/// What an operation does when it runs to the end.
struct Run {
    /// The file system steps it took, in order.
    steps: Vec<String>,
    /// The state after each of its calls.
    states: Vec<State>,
}

impl Run {
    fn after(&self) -> &State {
        self.states.last().expect("at least one call")
    }
}

/// Runs `calls` on a copy of `golden` to the end: the steps they take and the state each leaves
/// (the last one a clean reopen gives back).
fn full_run(golden: &Path, calls: &[Call<'_>]) -> Run {
    let dir = copy_dir(golden);
    let mut s = Store::open(dir.path(), opts()).unwrap();
    let base = s.faults().taken();
    let mut states = Vec::new();
    for call in calls {
        call(&mut s).unwrap();
        states.push(read_state(&mut s));
    }
    let steps = s.faults().trace_since(base);
    close(s);
    let mut s = Store::open(dir.path(), opts()).unwrap();
    assert!(s.report().is_clean(), "{:?}", s.report());
    let run = Run { steps, states };
    assert_eq!(
        &read_state(&mut s),
        run.after(),
        "a clean reopen after the operation"
    );
    run
}

/// Crashes an operation (`calls`, one after the other, on a copy of the storage `setup` builds)
/// before each of its file system steps in turn, and checks that every crash recovers to the state
/// before the operation or after one of its calls (each call is all or nothing), never going back
/// as the crash comes later; returns the full run, for checks of the steps taken.
fn crash_at_every_step(name: &str, setup: impl FnOnce(&mut Store), calls: &[Call<'_>]) -> Run {
    let golden = tempfile::tempdir().unwrap();
    let mut s = Store::open(golden.path(), opts().fsync(FsyncPolicy::Never)).unwrap();
    setup(&mut s);
    let before = read_state(&mut s);
    close(s);

    let run = full_run(golden.path(), calls);
    // The acceptable states: before, then after each call.
    let mut states = vec![&before];
    states.extend(run.states.iter());
    for pair in states.windows(2) {
        assert_ne!(pair[0], pair[1], "{name}: a call changes nothing");
    }
    let mut reached = Vec::new();
    for (k, step) in run.steps.iter().enumerate() {
        let what = format!("{name}: crash before step {k} ({step})");
        // The operation, cut before step k.
        let crashed = copy_dir(golden.path());
        let mut s = Store::open(crashed.path(), opts()).unwrap();
        s.faults().allow(Some(k as u64));
        let e = calls
            .iter()
            .try_for_each(|call| call(&mut s))
            .expect_err(&what);
        assert!(e.to_string().contains("injected crash"), "{what}: {e}");
        crash(s);

        // Recovery, uninterrupted.
        let recovered = {
            let dir = copy_dir(crashed.path());
            let mut s = Store::open(dir.path(), opts())
                .unwrap_or_else(|e| panic!("{what}: the reopen is refused: {e}"));
            let state = read_state(&mut s);
            let Some(at) = states.iter().position(|s| **s == state) else {
                panic!(
                    "{what}: recovered to a state that is neither before the operation nor after \
                     one of its calls\nrecovered: {state:?}\nacceptable: {states:#?}"
                );
            };
            reached.push(at);
            check_usable(s, &state, &what);
            state
        };

        // Recovery, itself crashed before each of its steps, then reopened.
        for j in 0.. {
            let dir = copy_dir(crashed.path());
            match Store::open_with_faults(dir.path(), opts(), Faults::crash_after(j)) {
                Ok(s) => {
                    // Its faults would crash the close too.
                    crash(s);
                    break;
                }
                Err(e) => {
                    let what = format!("{what}, then a crash in recovery before its step {j}");
                    assert!(e.to_string().contains("injected crash"), "{what}: {e}");
                    let mut s = Store::open(dir.path(), opts())
                        .unwrap_or_else(|e| panic!("{what}: the reopen is refused: {e}"));
                    assert_eq!(read_state(&mut s), recovered, "{what}");
                }
            }
        }
    }
    // Commit points: a later crash never recovers to an earlier state, and every call's effect is
    // reached by some crash before the last step (each call has a commit point inside it).
    assert!(
        reached.windows(2).all(|w| w[0] <= w[1]),
        "{name}: a later crash recovers to an earlier state: {reached:?} (0: before, i: after \
         call i) for steps {:?}",
        run.steps
    );
    assert_eq!(reached.first(), Some(&0), "{name}: {reached:?}");
    assert_eq!(
        reached.last(),
        Some(&calls.len()),
        "{name}: a crash before the last step ({:?}) does not recover to after the operation: \
         {reached:?}",
        run.steps.last()
    );
    run
}

/// The recovered store keeps working: an entry appended after recovery survives a clean reopen.
fn check_usable(mut s: Store, state: &State, what: &str) {
    let next = state.log_state.last_log_id.index + 1;
    append(&mut s, 9, next, 1);
    let dir = s.dir().to_path_buf();
    close(s);
    let mut s = Store::open(&dir, opts()).unwrap();
    assert!(s.report().is_clean(), "{what}: {:?}", s.report());
    let got = read_state(&mut s);
    let mut log = state.log.clone();
    log.push(entry(9, next));
    assert_eq!(
        got.log, log,
        "{what}: the log after recovering and appending"
    );
    assert_eq!(got.snapshot, state.snapshot, "{what}");
    close(s);
}

fn count(steps: &[String], prefix: &str) -> usize {
    steps.iter().filter(|s| s.starts_with(prefix)).count()
}

/// 20 entries over several segments, a hard state, and an older snapshot at 1-3.
fn base_log(s: &mut Store) {
    s.save_hard_state(HardState {
        term: 2,
        voted_for: Some(1),
    })
    .unwrap();
    append(s, 1, 1, 8);
    for i in 9..=20 {
        append(s, 2, i, 1);
    }
    s.install_snapshot(snapshot(1, 3, 500)).unwrap();
}

#[test]
fn install_snapshot_inside_the_log() {
    let run = crash_at_every_step(
        "install_snapshot at 2-14 inside log 1..=20",
        base_log,
        &[&|s| s.install_snapshot(snapshot(2, 14, 3000))],
    );
    assert_eq!(run.after().log.len(), 20, "the log is kept");
    assert_eq!(run.steps.len(), 5, "{:?}", run.steps);
}

#[test]
fn install_snapshot_inside_the_log_then_purge_before_it() {
    // What the driver does after building a snapshot: store it, then purge up to entries before it.
    let run = crash_at_every_step(
        "install_snapshot at 2-14 then purge(10)",
        base_log,
        &[&|s| s.install_snapshot(snapshot(2, 14, 3000)), &|s| {
            s.purge(10)
        }],
    );
    assert_eq!(run.after().log_state.last_purged, LogId::new(2, 10));
    assert!(count(&run.steps, "unlink") >= 2, "{:?}", run.steps);
}

#[test]
fn install_snapshot_ahead_of_the_log() {
    let run = crash_at_every_step(
        "install_snapshot at 3-30 ahead of log 1..=20",
        |s| {
            base_log(s);
            s.purge(3).unwrap();
        },
        &[&|s| s.install_snapshot(snapshot(3, 30, 3000))],
    );
    assert_eq!(run.after().log, vec![]);
    assert_eq!(run.after().log_state.last_purged, LogId::new(3, 30));
    assert!(count(&run.steps, "unlink") >= 5, "{:?}", run.steps);
}

#[test]
fn install_snapshot_conflicting_with_the_log() {
    let run = crash_at_every_step(
        "install_snapshot at 3-12 over entry 2-12",
        base_log,
        &[&|s| s.install_snapshot(snapshot(3, 12, 100))],
    );
    assert_eq!(run.after().log, vec![]);
    assert_eq!(run.after().log_state.last_purged, LogId::new(3, 12));
}

#[test]
fn purge_removing_several_segments() {
    let run = crash_at_every_step("purge(13) of log 1..=20", base_log, &[&|s| s.purge(13)]);
    assert_eq!(run.after().log_state.last_purged, LogId::new(2, 13));
    assert!(count(&run.steps, "unlink") >= 3, "{:?}", run.steps);
}

#[test]
fn purge_of_the_whole_log() {
    let run = crash_at_every_step("purge(20) of log 1..=20", base_log, &[&|s| s.purge(20)]);
    assert_eq!(run.after().log, vec![]);
    assert!(count(&run.steps, "unlink") >= 5, "{:?}", run.steps);
}

#[test]
fn truncate_across_segments_inside_a_batch() {
    // Entry 6 is inside the batch of entries 1..=8: cutting the file there would leave that batch
    // incomplete, so a truncation record is appended after it instead.
    let run = crash_at_every_step("truncate(6) of log 1..=20", base_log, &[&|s| s.truncate(6)]);
    assert_eq!(run.after().log.len(), 5);
    assert!(count(&run.steps, "unlink") >= 3, "{:?}", run.steps);
    assert_eq!(count(&run.steps, "truncate"), 0, "{:?}", run.steps);
    assert_eq!(
        count(&run.steps, "write 00000000000000000001.log"),
        1,
        "{:?}",
        run.steps
    );
}

#[test]
fn truncate_across_segments_at_a_batch_boundary() {
    // Entries 9..=20 are one batch each: the file is cut where entry 12's batch starts.
    let run = crash_at_every_step(
        "truncate(12) of log 1..=20",
        base_log,
        &[&|s| s.truncate(12)],
    );
    assert_eq!(run.after().log.len(), 11);
    assert!(count(&run.steps, "unlink") >= 2, "{:?}", run.steps);
    assert_eq!(count(&run.steps, "truncate"), 1, "{:?}", run.steps);
    // The cut segment gets its end mark and free space back, each step crashed too.
    assert_eq!(count(&run.steps, "allocate"), 1, "{:?}", run.steps);
}

#[test]
fn truncate_inside_a_batch_of_the_last_segment_then_append() {
    // A truncation record in the last segment, then the entries that replace the deleted ones,
    // after it in the same segment: each call all or nothing.
    let run = crash_at_every_step(
        "truncate(23) inside the batch 21..=25, then append 23..=24",
        |s| {
            base_log(s);
            append(s, 2, 21, 5);
        },
        &[&|s| s.truncate(23), &|s| {
            s.append(&mut encode_batch(23, &[entry(3, 23), entry(3, 24)]).unwrap())
        }],
    );
    let log = &run.after().log;
    assert_eq!(log.len(), 24);
    assert_eq!(log[21..], [entry(2, 22), entry(3, 23), entry(3, 24)]);
    assert_eq!(count(&run.steps, "truncate"), 0, "{:?}", run.steps);
    assert_eq!(
        count(&run.steps, "write 00000000000000000021.log"),
        1,
        "the truncation record: {:?}",
        run.steps
    );
}

#[test]
fn append_starting_a_segment() {
    let run = crash_at_every_step(
        "append 21..=22 into a new segment",
        base_log,
        &[&|s| s.append(&mut encode_batch(21, &[entry(3, 21), entry(3, 22)]).unwrap())],
    );
    assert_eq!(run.after().log.len(), 22);
    assert!(
        run.steps
            .iter()
            .any(|s| s.starts_with("rename") && s.ends_with(".log")),
        "{:?}",
        run.steps
    );
    // The new segment is allocated under its temporary name, before the rename.
    assert_eq!(count(&run.steps, "allocate"), 1, "{:?}", run.steps);
}

#[test]
fn reset_log_to_snapshot_behind_it() {
    // A snapshot at 2-14 inside the log, then the log truncated below it (the storage API allows
    // it; with the driver, entries lost from the end of the log leave the same state).
    let run = crash_at_every_step(
        "reset_log_to_snapshot of log 1..=9 behind snapshot 2-14",
        |s| {
            base_log(s);
            s.install_snapshot(snapshot(2, 14, 300)).unwrap();
            s.truncate(10).unwrap();
            assert_eq!(s.log_state().last_log_id.index, 9);
        },
        &[&|s| s.reset_log_to_snapshot().map(|_| ())],
    );
    assert_eq!(run.after().log, vec![]);
    let at = LogId::new(2, 14);
    assert_eq!(
        run.after().log_state,
        LogState {
            last_purged: at,
            last_log_id: at
        }
    );
    assert_eq!(count(&run.steps, "unlink"), 2, "{:?}", run.steps);
}

/// The steps the seam sees, named: proof that every kind of step of an install that discards the
/// log is a crash point above.
#[test]
fn every_step_of_an_install_that_discards_the_log_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), opts()).unwrap();
    append(&mut s, 1, 1, 4);
    for i in 5..=6 {
        append(&mut s, 1, i, 1);
    }
    let segments: Vec<String> = fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(segments.len() >= 2, "{segments:?}");
    let base = s.faults().taken();
    s.install_snapshot(snapshot(2, 9, 10)).unwrap();
    let dir_name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let steps: Vec<String> = s
        .faults()
        .trace_since(base)
        .into_iter()
        .map(|step| step.replace(&dir_name, "DIR"))
        .collect();
    let mut want: Vec<String> = [
        "create snapshot.tmp",
        "write snapshot.tmp",
        "fsync snapshot.tmp",
        "rename snapshot.tmp to snapshot",
        "fsync directory DIR",
    ]
    .map(String::from)
    .to_vec();
    let mut unlinks: Vec<String> = segments.iter().map(|n| format!("unlink {n}")).collect();
    unlinks.sort();
    unlinks.reverse(); // the last segment first
    want.extend(unlinks);
    want.extend(
        [
            "fsync directory log",
            "create log_meta.tmp",
            "write log_meta.tmp",
            "fsync log_meta.tmp",
            "rename log_meta.tmp to log_meta",
            "fsync directory DIR",
        ]
        .map(String::from),
    );
    assert_eq!(steps, want);
}

/// The crate docs' table: an install of a snapshot at or below the stored one's index (even one that
/// conflicts with the log), `snapshot` and `snapshot_chunk` write nothing: no file system step.
#[test]
fn an_ignored_install_and_snapshot_reads_take_no_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path(), opts()).unwrap();
    base_log(&mut s);
    let stored = snapshot(2, 14, 100);
    s.install_snapshot(stored.clone()).unwrap();
    let base = s.faults().taken();
    for ignored in [snapshot(2, 14, 50), snapshot(1, 3, 50), snapshot(3, 12, 50)] {
        s.install_snapshot(ignored).unwrap();
    }
    assert_eq!(s.snapshot().unwrap(), Some(stored));
    assert!(s
        .snapshot_chunk(LogId::new(2, 14), 10, 20)
        .unwrap()
        .is_some());
    assert_eq!(s.faults().trace_since(base), Vec::<String>::new());
    assert_eq!(read_state(&mut s).log.len(), 20, "the log is kept");
}
