//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use raft_core::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogState, Membership, RaftStorage, Snapshot,
    SnapshotMeta, StorageError, Term,
};

/// The command type of these tests: strings of varied length, so records have varied sizes.
pub type Cmd = String;

/// The entry at `index` in `term`: every payload kind, commands of 0 to ~60 bytes.
pub fn entry(term: Term, index: LogIndex) -> Entry<Cmd> {
    let payload = match index % 7 {
        0 => EntryPayload::Blank,
        3 => EntryPayload::Membership(Membership::new([1, 2, index % 5 + 3])),
        _ => EntryPayload::Command(format!(
            "cmd-{term}-{index}-{}",
            "x".repeat((index * 7 % 50) as usize)
        )),
    };
    Entry {
        log_id: LogId::new(term, index),
        payload,
    }
}

/// Consecutive entries `first..first + n` in `term`.
pub fn entries(term: Term, first: LogIndex, n: u64) -> Vec<Entry<Cmd>> {
    (first..first + n).map(|i| entry(term, i)).collect()
}

pub fn snapshot(id: LogId, tag: u8) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_log_id: id,
            membership: Membership::new([1, 2, 3]),
        },
        data: vec![tag; (id.index % 97) as usize + 1],
    }
}

/// Everything a storage holds, read through the trait.
#[derive(Debug, PartialEq)]
pub struct Dump {
    pub hard_state: HardState,
    pub log_state: LogState,
    pub log: Vec<Entry<Cmd>>,
    pub snapshot: Option<Snapshot>,
}

pub async fn dump<S: RaftStorage<Cmd>>(s: &mut S) -> Result<Dump, StorageError> {
    let hard_state = s.hard_state().await?;
    let log_state = s.log_state().await?;
    let log = s
        .entries(
            log_state.last_purged.index + 1,
            log_state.last_log_id.index + 1,
        )
        .await?;
    let snapshot = s.snapshot().await?;
    Ok(Dump {
        hard_state,
        log_state,
        log,
        snapshot,
    })
}

/// Copies a storage directory (not its lock file) to a new temporary directory.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("temporary directory");
    copy_tree(from, to.path());
    to
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else if entry.file_name() != "LOCK" {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// The segment files of a storage directory, in log order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Size of a segment header (see the crate docs' format section).
pub const SEGMENT_HEADER: u64 = 24;

/// The byte ranges `(start, end)` of the record frames in a segment file, parsed with the documented
/// format: after the 24-byte header, frames of `len: u32 LE`, `crc: u32 LE`, `len` payload bytes.
pub fn frames(path: &Path) -> Vec<(u64, u64)> {
    let data = fs::read(path).unwrap();
    let mut pos = SEGMENT_HEADER as usize;
    let mut out = Vec::new();
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        assert!(end <= data.len(), "test helper: a frame runs past the end");
        out.push((pos as u64, end as u64));
        pos = end;
    }
    assert_eq!(pos, data.len(), "test helper: trailing bytes in {path:?}");
    out
}

pub fn is_corrupted<T: std::fmt::Debug>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::Corrupted(_)))
}
