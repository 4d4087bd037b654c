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
        3 => EntryPayload::Membership(Box::new(Membership::new([1, 2, index % 5 + 3]))),
        _ => EntryPayload::Command(format!(
            "cmd-{term}-{index}-{}",
            "x".repeat((index * 7 % 50) as usize)
        )),
    };
    Entry {
        log_id: LogId::new(term, index),
        payload: payload.into(),
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
/// Size of a batch header: magic `rBAT`, first index (u64), entry count (u32), records length
/// (u64), CRC (u32).
pub const BATCH_HEADER: u64 = 28;
/// Size of a batch trailer: magic `rEND`, the CRC of the batch's header (u32).
pub const BATCH_TRAILER: u64 = 8;
/// Size of an end mark: magic `rEOL`, its own offset (u64), CRC (u32).
pub const END_MARK: u64 = 16;
/// The name of the file a clean shutdown leaves in the storage directory.
pub const CLEAN_FILE: &str = "clean";

/// One batch of a segment file, parsed with the documented format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSpan {
    /// Offset of its header.
    pub start: u64,
    /// Offset just past its trailer.
    pub end: u64,
    /// The index of its first entry (of a truncation record: the first index deleted).
    pub first: u64,
    /// How many entries it holds.
    pub count: u32,
    /// The byte ranges `(start, end)` of its record frames.
    pub records: Vec<(u64, u64)>,
}

impl BatchSpan {
    /// The offset of its trailer.
    pub fn trailer(&self) -> u64 {
        self.end - BATCH_TRAILER
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

/// The batches of a segment file, parsed with the documented format: after the 24-byte header,
/// batches of a 28-byte header (`rBAT`, first index, count, records length, CRC), `count` frames
/// (`len: u32 LE`, `crc: u32 LE`, `len` payload bytes) and an 8-byte trailer (`rEND`, the header's
/// CRC). The file must hold whole batches only, then either nothing or an end mark (`rEOL`) and
/// zero bytes (free space).
pub fn batches(path: &Path) -> Vec<BatchSpan> {
    batches_of(&fs::read(path).unwrap())
}

/// [`batches`] of the bytes of a segment file.
pub fn batches_of(data: &[u8]) -> Vec<BatchSpan> {
    let mut pos = SEGMENT_HEADER as usize;
    let mut out = Vec::new();
    while pos < data.len() {
        if &data[pos..pos + 4] == b"rEOL" {
            assert_eq!(
                u64_at(data, pos + 4),
                pos as u64,
                "test helper: an end mark at {pos}"
            );
            assert!(
                data[pos + END_MARK as usize..].iter().all(|&b| b == 0),
                "test helper: free space after the end mark at {pos}"
            );
            break;
        }
        assert_eq!(
            &data[pos..pos + 4],
            b"rBAT",
            "test helper: a batch header at {pos}"
        );
        let first = u64_at(data, pos + 4);
        let count = u32_at(data, pos + 12);
        let records_len = u64_at(data, pos + 16) as usize;
        let mut at = pos + BATCH_HEADER as usize;
        let mut records = Vec::new();
        for _ in 0..count {
            let end = at + 8 + u32_at(data, at) as usize;
            records.push((at as u64, end as u64));
            at = end;
        }
        assert_eq!(at, pos + BATCH_HEADER as usize + records_len);
        assert_eq!(
            &data[at..at + 4],
            b"rEND",
            "test helper: a batch trailer at {at}"
        );
        let end = at + BATCH_TRAILER as usize;
        out.push(BatchSpan {
            start: pos as u64,
            end: end as u64,
            first,
            count,
            records,
        });
        pos = end;
    }
    out
}

/// Where the batches of a segment file end: where its end mark stands and the next append writes
/// (the file's length, if the file was cut there and has no mark).
pub fn batches_end(path: &Path) -> u64 {
    batches_end_of(&fs::read(path).unwrap())
}

/// [`batches_end`] of the bytes of a segment file.
pub fn batches_end_of(data: &[u8]) -> u64 {
    batches_of(data).last().map_or(SEGMENT_HEADER, |b| b.end)
}

/// The end mark that stands at byte `offset` of a segment: `rEOL`, the offset (u64), the CRC of
/// those 12 bytes.
pub fn end_mark(offset: u64) -> Vec<u8> {
    let mut m = b"rEOL".to_vec();
    m.extend(offset.to_le_bytes());
    let c = crc32fast::hash(&m);
    m.extend(c.to_le_bytes());
    m
}

/// Writes `bytes` where the next append to the segment file would go, over its end mark: what an
/// append that a crash interrupted leaves there.
pub fn write_at_batches_end(path: &Path, bytes: &[u8]) {
    write_at(path, batches_end(path), bytes);
}

/// Writes `bytes` at byte `at` of the file `path` (which grows if they go past its end).
pub fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// The byte ranges `(start, end)` of the record frames in a segment file, in all its batches.
pub fn frames(path: &Path) -> Vec<(u64, u64)> {
    batches(path).into_iter().flat_map(|b| b.records).collect()
}

/// Removes the record of a clean shutdown from a storage directory: it is then as a crash (the
/// death of the process, a power cut) leaves it, which writes no such record.
pub fn as_after_crash(dir: &Path) {
    fs::remove_file(dir.join(CLEAN_FILE)).expect("a clean shutdown was recorded");
}

/// Whether `r` is a refusal as corruption whose message names `file` and `offset {offset}`.
pub fn is_refusal_at<T: std::fmt::Debug>(
    r: &Result<T, StorageError>,
    file: &str,
    offset: u64,
) -> bool {
    match r {
        Err(StorageError::Corrupted(msg)) => {
            msg.contains(file) && msg.contains(&format!("offset {offset}:"))
        }
        _ => false,
    }
}

pub fn is_corrupted<T: std::fmt::Debug>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::Corrupted(_)))
}
