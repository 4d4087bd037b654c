//! Property test: random sequences of append / truncate / purge / install_snapshot / save_hard_state
//! / reopen run against `FileStorage` and against the reference `MemStorage`; after every step, every
//! read (entries, snapshot chunks) and every error must be the same.

mod common;

use common::*;
use proptest::prelude::*;
use raft_core::{HardState, LogId, RaftStorage, StorageError};
use raft_storage_file::{FileStorage, FsyncPolicy, Options};
use raft_storage_mem::MemStorage;

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` entries (0 is an empty append), in a new term if `new_term`.
    Append {
        n: u8,
        new_term: bool,
    },
    /// Append with a wrong first index (refused by both).
    AppendGap {
        skip: u8,
    },
    /// Truncate at a position chosen by `pick` (may be in the purged prefix or past the end).
    Truncate {
        pick: u16,
    },
    Purge {
        pick: u16,
    },
    InstallSnapshot {
        pick: u16,
        other_term: bool,
    },
    SaveHardState {
        vote: Option<u8>,
    },
    Read {
        a: u16,
        b: u16,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, prop::bool::weighted(0.2)).prop_map(|(n, new_term)| Op::Append { n, new_term }),
        1 => (0u8..3).prop_map(|skip| Op::AppendGap { skip }),
        2 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        2 => any::<u16>().prop_map(|pick| Op::Purge { pick }),
        1 => (any::<u16>(), any::<bool>())
            .prop_map(|(pick, other_term)| Op::InstallSnapshot { pick, other_term }),
        1 => prop::option::of(0u8..4).prop_map(|vote| Op::SaveHardState { vote }),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Read { a, b }),
        2 => Just(Op::Reopen),
    ]
}

/// An error as both storages must report it.
fn kind(e: StorageError) -> String {
    match e {
        StorageError::Compacted {
            compacted_upto,
            requested,
        } => format!("Compacted({compacted_upto}, {requested})"),
        StorageError::InvalidRequest(_) => "InvalidRequest".to_string(),
        other => panic!("unexpected storage error: {other}"),
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    file: Result<T, StorageError>,
    mem: Result<T, StorageError>,
) -> Result<(), TestCaseError> {
    let file = file.map_err(kind);
    let mem = mem.map_err(kind);
    prop_assert_eq!(file, mem, "{}", what);
    Ok(())
}

/// A position around the current log, from `pick`: from two below the purge point to three past the
/// end.
fn around(pick: u16, first: u64, last: u64) -> u64 {
    let lo = first.saturating_sub(2);
    lo + u64::from(pick) % (last + 4 - lo)
}

async fn run(ops: Vec<Op>, segment_size: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .segment_size(segment_size)
        .fsync(FsyncPolicy::Never);
    let mut file = FileStorage::<Cmd>::open_with(dir.path(), options.clone()).unwrap();
    let mut mem = MemStorage::<Cmd>::new();
    let handle = mem.handle();
    let mut term = 1;
    let mut hs_term = 0;

    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step}: {op:?}");
        let state = mem.log_state().await.unwrap();
        let (purged, last) = (state.last_purged.index, state.last_log_id.index);
        match op {
            Op::Append { n, new_term } => {
                if new_term {
                    term += 1;
                }
                let batch = entries(term.max(state.last_log_id.term), last + 1, u64::from(n));
                same(&what, file.append(&batch).await, mem.append(&batch).await)?;
            }
            Op::AppendGap { skip } => {
                let batch = entries(term, last + 2 + u64::from(skip), 2);
                same(&what, file.append(&batch).await, mem.append(&batch).await)?;
            }
            Op::Truncate { pick } => {
                let from = around(pick, purged + 1, last);
                same(&what, file.truncate(from).await, mem.truncate(from).await)?;
            }
            Op::Purge { pick } => {
                let upto = around(pick, purged, last);
                same(&what, file.purge(upto).await, mem.purge(upto).await)?;
            }
            Op::InstallSnapshot { pick, other_term } => {
                let index = around(pick, purged, last);
                let held = if index > purged && index <= last {
                    mem.entries(index, index + 1).await.unwrap()[0].log_id.term
                } else {
                    state.last_log_id.term
                };
                let t = if other_term { held + 1 } else { held };
                let snap = snapshot(LogId::new(t, index), step as u8);
                same(
                    &what,
                    file.install_snapshot(snap.clone()).await,
                    mem.install_snapshot(snap).await,
                )?;
            }
            Op::SaveHardState { vote } => {
                hs_term += 1;
                let hs = HardState {
                    term: hs_term,
                    voted_for: vote.map(u64::from),
                };
                same(
                    &what,
                    file.save_hard_state(&hs).await,
                    mem.save_hard_state(&hs).await,
                )?;
            }
            Op::Read { a, b } => {
                let start = around(a, purged, last);
                let end = around(b, purged, last);
                same(
                    &what,
                    file.entries(start, end).await,
                    mem.entries(start, end).await,
                )?;
                // A chunk of the stored snapshot (its data is up to 97 bytes long), or of another
                // id one time in four.
                let stored = mem.snapshot().await.unwrap().map(|s| s.meta.last_log_id);
                let mut id = stored.unwrap_or(state.last_purged);
                if a % 4 == 0 {
                    id.term += 1;
                }
                let (offset, max_len) = (u64::from(a % 110), 1 + usize::from(b % 40));
                same(
                    &format!("{what}: snapshot_chunk({id}, {offset}, {max_len})"),
                    file.snapshot_chunk(id, offset, max_len).await,
                    mem.snapshot_chunk(id, offset, max_len).await,
                )?;
            }
            Op::Reopen => {
                drop(file);
                file = FileStorage::open_with(dir.path(), options.clone()).unwrap();
                prop_assert!(
                    file.recovery_report().is_clean(),
                    "{}: {:?}",
                    what,
                    file.recovery_report()
                );
                drop(mem);
                mem = handle.open();
            }
        }
        let f = dump(&mut file).await.unwrap();
        let m = dump(&mut mem).await.unwrap();
        prop_assert_eq!(f, m, "after {}", what);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn file_storage_matches_mem_storage(
        ops in prop::collection::vec(op(), 1..60),
        segment_size in prop_oneof![Just(1u64), 40u64..400, Just(1 << 20)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops, segment_size))?;
    }
}
