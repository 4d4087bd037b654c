//! Crash simulation: damage the files of a storage the way a crash (or a bad disk) would, reopen, and
//! check that every complete batch written before the damage comes back, that no damaged record ever
//! comes back, and that damage a crash cannot explain is refused with an error naming the file and
//! offset. A crash leaves no record of a clean shutdown: the cases that model one remove it (see
//! `as_after_crash`). The table of what each kind of damage gives is `tests/corruption.rs`.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use raft_core::{HardState, LogId, Membership, RaftStorage, Snapshot, SnapshotMeta, StorageError};
use raft_storage_file::{CutEntries, FileStorage, FsyncPolicy, Options, TailDamage};
use tempfile::TempDir;

/// A small deterministic random generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn options() -> Options {
    // Small segments, so the log spans several.
    Options::default().segment_size(250)
}

fn reopen_options() -> Options {
    // Reopening copies does not need to be durable; it only needs to recover.
    options().fsync(FsyncPolicy::Never)
}

/// A storage directory holding a hard state and 40 entries in several segments, written with fsync
/// on, cleanly closed; and what it holds.
async fn golden() -> (TempDir, Dump) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
    s.save_hard_state(&HardState {
        term: 3,
        voted_for: Some(2),
    })
    .await
    .unwrap();
    let mut next = 1;
    for (term, n) in [
        (1, 1),
        (1, 5),
        (2, 1),
        (2, 9),
        (2, 2),
        (3, 13),
        (3, 1),
        (3, 8),
    ] {
        s.append(&entries(term, next, n)).await.unwrap();
        next += n;
    }
    let d = dump(&mut s).await.unwrap();
    assert_eq!(d.log.len(), 40);
    drop(s);
    let segs = segments(dir.path());
    assert!(
        segs.len() >= 3,
        "the golden log should span several segments"
    );
    assert!(frames(segs.last().unwrap()).len() >= 3);
    (dir, d)
}

/// Opens a copy of `golden` (cleanly shut down) after `damage` was done to it.
async fn reopen_damaged(
    golden: &Path,
    damage: impl FnOnce(&Path),
) -> (TempDir, Result<FileStorage<Cmd>, StorageError>) {
    let copy = copy_dir(golden);
    damage(copy.path());
    let r = FileStorage::<Cmd>::open_with(copy.path(), reopen_options());
    (copy, r)
}

/// Opens a copy of `golden` as a crash would have left it (no clean shutdown recorded) after
/// `damage` was done to it.
async fn reopen_crashed(
    golden: &Path,
    damage: impl FnOnce(&Path),
) -> (TempDir, Result<FileStorage<Cmd>, StorageError>) {
    reopen_damaged(golden, |d| {
        as_after_crash(d);
        damage(d)
    })
    .await
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut data = fs::read(path).unwrap();
    data[at as usize] ^= mask;
    fs::write(path, data).unwrap();
}

/// Number of entries in all segments but the last (each holds whole batches).
fn entries_before_last_segment(golden: &Path, total: usize) -> usize {
    let segs = segments(golden);
    total - frames(segs.last().unwrap()).len()
}

/// Checks that a recovered storage holds exactly the first `keep` entries of `want` (and the same
/// hard state), and that it keeps working: appends after the cut and reads them back after a reopen.
async fn check_prefix(mut s: FileStorage<Cmd>, want: &Dump, keep: usize, exercise: bool) {
    let got = dump(&mut s).await.unwrap();
    assert_eq!(got.hard_state, want.hard_state);
    assert_eq!(got.log.len(), keep, "recovered log length");
    assert_eq!(got.log, want.log[..keep], "recovered log content");
    if exercise {
        let next = keep as u64 + 1;
        let more = entries(9, next, 3);
        s.append(&more).await.unwrap();
        let dir = s.dir().to_path_buf();
        drop(s);
        let mut s = FileStorage::<Cmd>::open_with(&dir, reopen_options()).unwrap();
        assert!(s.recovery_report().is_clean(), "{:?}", s.recovery_report());
        let got = dump(&mut s).await.unwrap();
        let mut expected = want.log[..keep].to_vec();
        expected.extend(more);
        assert_eq!(got.log, expected, "log after recovering and appending");
    }
}

#[tokio::test]
async fn a_cut_anywhere_in_the_last_segment_after_a_crash_keeps_every_complete_batch() {
    let (golden, want) = golden().await;
    let last = segments(golden.path()).pop().unwrap();
    let name = last.file_name().unwrap().to_owned();
    let batches = batches(&last);
    let before = entries_before_last_segment(golden.path(), want.log.len());
    let len = fs::metadata(&last).unwrap().len();
    let end = batches_end(&last);
    assert!(
        len >= end + END_MARK,
        "the end mark, and maybe free space, follow the batches"
    );
    // Every cut point past the header (a header is written whole before the file gets its name).
    for at in SEGMENT_HEADER..=len {
        let (_copy, r) =
            reopen_crashed(golden.path(), |d| cut(&d.join("log").join(&name), at)).await;
        let s = r.unwrap_or_else(|e| panic!("cut at {at}: refused: {e}"));
        let whole: Vec<&BatchSpan> = batches.iter().filter(|b| b.end <= at).collect();
        let kept = whole.iter().map(|b| b.count as usize).sum::<usize>();
        let report = s.recovery_report();
        assert!(!report.clean_shutdown);
        let at_boundary = at == SEGMENT_HEADER || batches.iter().any(|b| b.end == at);
        if at >= end + END_MARK {
            // Only free space cut: the mark is whole.
            assert!(report.is_clean(), "cut at {at}: {report:?}");
        } else if at > end {
            // Inside the end mark: the mark written in part, holding nothing.
            let torn = report.torn_tail.as_ref().expect("a torn tail");
            assert_eq!(torn.offset, end, "cut at {at}");
            assert_eq!(torn.damage, TailDamage::TornEndMark, "cut at {at}");
            assert_eq!(report.cut_entries(), None, "cut at {at}");
        } else if at_boundary {
            // A lost suffix of complete batches: nothing in the segment shows it.
            assert!(report.is_clean(), "cut at {at}: {report:?}");
            assert_eq!(report.cut_entries(), None);
        } else {
            let torn = report.torn_tail.as_ref().expect("a torn tail");
            let batch = &batches[whole.len()];
            assert_eq!(torn.offset, batch.start, "cut at {at}");
            assert_eq!(torn.discarded_bytes, at - batch.start, "cut at {at}");
            let range = batch.first..=batch.first + u64::from(batch.count) - 1;
            let (damage, entries) = if at - batch.start == 1 {
                // The one byte kept, `r`, also starts an end mark: read as a mark written in part.
                (TailDamage::TornEndMark, CutEntries::None)
            } else if at - batch.start < BATCH_HEADER {
                (TailDamage::ShortHeader, CutEntries::None)
            } else {
                (TailDamage::ShortBatch, CutEntries::Announced(range.clone()))
            };
            assert_eq!(torn.damage, damage, "cut at {at}");
            assert_eq!(torn.entries, entries, "cut at {at}");
            assert_eq!(report.cut_entries(), entries.range());
        }
        check_prefix(s, &want, before + kept, at % 5 == 0).await;
    }
}

#[tokio::test]
async fn a_cut_anywhere_in_the_last_segment_after_a_clean_shutdown_is_refused() {
    let (golden, _want) = golden().await;
    let last = segments(golden.path()).pop().unwrap();
    let name = last.file_name().unwrap().to_owned();
    let len = fs::metadata(&last).unwrap().len();
    let end = batches_end(&last);
    for at in SEGMENT_HEADER..len {
        let (_copy, r) =
            reopen_damaged(golden.path(), |d| cut(&d.join("log").join(&name), at)).await;
        if at == end || at >= end + END_MARK {
            // The mark or free space cut: nothing of the log changed.
            let s = r.unwrap_or_else(|e| panic!("cut at {at} after the batches: {e}"));
            assert!(s.recovery_report().is_clean(), "cut at {at}");
            continue;
        }
        let e = r.expect_err("a shorter log after a clean shutdown");
        assert!(matches!(e, StorageError::Corrupted(_)), "cut at {at}: {e}");
        assert!(e.to_string().contains(name.to_str().unwrap()), "{e}");
    }
}

#[tokio::test]
async fn a_cut_inside_a_segment_header_is_refused() {
    let (golden, _want) = golden().await;
    let last = segments(golden.path()).pop().unwrap();
    let name = last.file_name().unwrap().to_owned();
    for at in 0..SEGMENT_HEADER {
        let (_copy, r) =
            reopen_crashed(golden.path(), |d| cut(&d.join("log").join(&name), at)).await;
        let e = r.expect_err("a damaged header must be refused");
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
        assert!(e.to_string().contains(name.to_str().unwrap()), "{e}");
    }
}

/// After a crash, what follows the last complete batch, in place of its end mark, is cut only if it
/// can be the start of one batch whose other bytes never reached the disk: zero bytes, fewer bytes
/// than a batch header, a header's first bytes then zeros. Anything else there (a header's worth
/// of bytes that is no valid header, followed by more data) is refused. After a clean shutdown, all
/// of it is refused. Each case is tried on a segment that ends with those bytes (one that grows
/// with each append) and on one with zero bytes of free space after them (a preallocated one,
/// whose free space the bytes were written into).
#[tokio::test]
async fn bytes_after_the_last_complete_batch() {
    for free_space in [0, 4096] {
        bytes_after_the_last_complete_batch_with(free_space).await;
    }
}

async fn bytes_after_the_last_complete_batch_with(free_space: u64) {
    let (golden, want) = golden().await;
    let last = segments(golden.path()).pop().unwrap();
    let name = last.file_name().unwrap().to_owned();
    let len = batches_end(&last);
    let mut rng = Rng(0x5eed_1234);
    for case in 0..150 {
        let n = 1 + rng.below(300) as usize;
        let (garbage, damage): (Vec<u8>, Option<TailDamage>) = match case % 4 {
            0 => (vec![0; n], Some(TailDamage::Zeroed)),
            1 => {
                let n = 1 + rng.below(BATCH_HEADER - 1) as usize;
                let mut g: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                g[0] |= 1;
                (g, Some(TailDamage::ShortHeader))
            }
            2 => {
                // A header's first bytes, then zeros: at least a header's worth in all.
                let k = 1 + rng.below(BATCH_HEADER - 1) as usize;
                let mut g = vec![0u8; k.max(n).max(BATCH_HEADER as usize)];
                for b in &mut g[..k] {
                    *b = rng.next() as u8 | 1;
                }
                (g, Some(TailDamage::TornHeader))
            }
            _ => {
                // More non-zero bytes than a header holds: not what a torn write leaves.
                let n = BATCH_HEADER as usize + 1 + n;
                let mut g: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                *g.last_mut().unwrap() |= 1;
                (g, None)
            }
        };
        // Fewer bytes than a header, with free space after them, are a header cut short.
        let damage = match damage {
            Some(TailDamage::ShortHeader) if free_space > 0 => Some(TailDamage::TornHeader),
            d => d,
        };
        let damage_it = |d: &Path| {
            let path = d.join("log").join(&name);
            cut(&path, len);
            cut(&path, len + free_space);
            write_at(&path, len, &garbage);
        };
        let (_copy, r) = reopen_crashed(golden.path(), damage_it).await;
        match damage {
            Some(damage) => {
                let s = r.unwrap_or_else(|e| panic!("case {case}: refused: {e}"));
                let torn = s.recovery_report().torn_tail.expect("a torn tail");
                assert_eq!(torn.offset, len, "case {case}");
                assert_eq!(torn.damage, damage, "case {case}");
                let file_len = (garbage.len() as u64).max(free_space);
                assert_eq!(torn.discarded_bytes, file_len);
                let written = garbage.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                assert_eq!(torn.written_bytes, written as u64, "case {case}");
                check_prefix(s, &want, want.log.len(), case % 10 == 0).await;
            }
            None => assert!(
                is_refusal_at(&r, name.to_str().unwrap(), len),
                "case {case}: {r:?}"
            ),
        }
        let (_copy, r) = reopen_damaged(golden.path(), damage_it).await;
        assert!(
            is_refusal_at(&r, name.to_str().unwrap(), len),
            "case {case} after a clean shutdown: {r:?}"
        );
    }
}

/// Every byte of the last batch, which is complete (its trailer is there): a flip anywhere in it is
/// damage, refused whether or not the shutdown was clean, naming the part that holds it (the batch
/// header, the record, or the trailer).
#[tokio::test]
async fn a_flipped_byte_in_the_last_batch_is_refused() {
    let (golden, _want) = golden().await;
    let last = segments(golden.path()).pop().unwrap();
    let name = last.file_name().unwrap().to_owned();
    let batch = batches(&last).pop().unwrap();
    for at in batch.start..batch.end {
        let part = if at < batch.start + BATCH_HEADER {
            batch.start
        } else if at >= batch.trailer() {
            batch.trailer()
        } else {
            batch
                .records
                .iter()
                .find(|r| r.0 <= at && at < r.1)
                .unwrap()
                .0
        };
        for mask in [0x01, 0x80, 0xff] {
            let flip_it = |d: &Path| flip(&d.join("log").join(&name), at, mask);
            let (_copy, r) = reopen_crashed(golden.path(), flip_it).await;
            assert!(
                is_refusal_at(&r, name.to_str().unwrap(), part),
                "flip {mask:#x} at {at} after a crash: {r:?}"
            );
            let (_copy, r) = reopen_damaged(golden.path(), flip_it).await;
            assert!(
                is_refusal_at(&r, name.to_str().unwrap(), part),
                "flip {mask:#x} at {at} after a clean shutdown: {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_in_an_earlier_record_is_refused() {
    let (golden, want) = golden().await;
    let segs = segments(golden.path());
    let mut rng = Rng(42);
    let mut cases = 0;
    for seg in &segs {
        let name = seg.file_name().unwrap().to_owned();
        let frames = frames(seg);
        for &(start, end) in &frames {
            // The length, the checksum, and a few payload bytes of each record.
            let mut positions: Vec<u64> = (start..start + 8).collect();
            positions.extend((0..4).map(|_| start + 8 + rng.below(end - start - 8)));
            for at in positions {
                let mask = 1u8 << rng.below(8);
                let (_copy, r) = reopen_crashed(golden.path(), |d| {
                    flip(&d.join("log").join(&name), at, mask)
                })
                .await;
                let e = r.expect_err("a damaged record must be refused");
                let msg = e.to_string();
                assert!(matches!(e, StorageError::Corrupted(_)), "{msg}");
                assert!(
                    msg.contains(name.to_str().unwrap()),
                    "names the file: {msg}"
                );
                assert!(
                    msg.contains(&format!("offset {start}")),
                    "names the offset: {msg}"
                );
                cases += 1;
            }
        }
        // The segment header, too.
        for at in 0..SEGMENT_HEADER {
            let (_copy, r) = reopen_damaged(golden.path(), |d| {
                flip(&d.join("log").join(&name), at, 0x04)
            })
            .await;
            assert!(is_corrupted(&r), "flip in the header of {name:?} at {at}");
        }
    }
    assert!(cases > 100 && want.log.len() == 40);
}

#[tokio::test]
async fn a_cut_in_an_earlier_segment_is_refused() {
    let (golden, _want) = golden().await;
    let segs = segments(golden.path());
    let name = segs[1].file_name().unwrap().to_owned();
    let frames = frames(&segs[1]);
    let batches = batches(&segs[1]);
    // Inside a record, inside a batch at a record boundary, and at a batch boundary (the next
    // segment then leaves a gap).
    let last = batches.last().unwrap().start;
    for at in [frames[0].0 + 3, frames.last().unwrap().0, last] {
        let (_copy, r) =
            reopen_crashed(golden.path(), |d| cut(&d.join("log").join(&name), at)).await;
        let e = r.expect_err("refused");
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
    }
}

#[tokio::test]
async fn a_missing_segment_is_refused() {
    let (golden, _want) = golden().await;
    let segs = segments(golden.path());
    for victim in [0, 1, segs.len() - 1] {
        let name = segs[victim].file_name().unwrap().to_owned();
        let (_copy, r) = reopen_damaged(golden.path(), |d| {
            fs::remove_file(d.join("log").join(&name)).unwrap()
        })
        .await;
        let e = r.expect_err("a missing segment must be refused");
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

#[tokio::test]
async fn a_damaged_or_missing_hard_state_is_refused() {
    let (golden, _want) = golden().await;
    let len = fs::metadata(golden.path().join("hard_state"))
        .unwrap()
        .len();
    for at in 0..len {
        let (_copy, r) =
            reopen_damaged(golden.path(), |d| flip(&d.join("hard_state"), at, 0x20)).await;
        let e = r.expect_err("a damaged hard state must be refused");
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
        assert!(e.to_string().contains("hard_state"), "{e}");
    }
    for at in 0..len {
        let (_copy, r) = reopen_damaged(golden.path(), |d| cut(&d.join("hard_state"), at)).await;
        assert!(is_corrupted(&r), "hard state cut at {at}");
    }
    let (_copy, r) = reopen_damaged(golden.path(), |d| {
        fs::remove_file(d.join("hard_state")).unwrap()
    })
    .await;
    assert!(is_corrupted(&r), "missing hard state");
}

#[tokio::test]
async fn damaged_log_metadata_or_snapshot_is_refused() {
    let (golden, _want) = golden().await;
    {
        let mut s = FileStorage::<Cmd>::open_with(golden.path(), options()).unwrap();
        s.install_snapshot(snapshot(LogId::new(2, 12), 7))
            .await
            .unwrap();
        s.purge(12).await.unwrap();
    }
    for file in ["log_meta", "snapshot"] {
        let len = fs::metadata(golden.path().join(file)).unwrap().len();
        for at in 0..len {
            let (_copy, r) = reopen_damaged(golden.path(), |d| flip(&d.join(file), at, 0x08)).await;
            let e = r.expect_err("damage must be refused");
            assert!(e.to_string().contains(file), "{e}");
        }
        let (_copy, r) =
            reopen_damaged(golden.path(), |d| fs::remove_file(d.join(file)).unwrap()).await;
        if file == "log_meta" {
            assert!(is_corrupted(&r), "missing log metadata next to segments");
        } else {
            // Without the snapshot file the storage has no snapshot; the log is intact (nothing
            // records that a snapshot existed: as for the last segment, losing a whole file that
            // nothing refers to is not detected).
            let mut s = r.unwrap();
            assert_eq!(s.snapshot().await.unwrap(), None);
        }
    }
}

#[tokio::test]
async fn leftover_temporary_files_are_removed() {
    let (golden, want) = golden().await;
    let (copy, r) = reopen_damaged(golden.path(), |d| {
        fs::write(d.join("hard_state.tmp"), b"half a hard st").unwrap();
        fs::write(d.join("snapshot.tmp"), b"").unwrap();
        fs::write(d.join("log").join("00000000000000000041.log.tmp"), b"raft").unwrap();
    })
    .await;
    let mut s = r.unwrap();
    assert_eq!(s.recovery_report().removed_temp_files.len(), 3);
    assert_eq!(dump(&mut s).await.unwrap(), want);
    assert!(!copy.path().join("hard_state.tmp").exists());
}

#[tokio::test]
async fn a_record_of_another_command_type_is_refused_when_read() {
    let (golden, _want) = golden().await;
    // Reading `String` commands as `u64`: the checksums are fine, the decoding is not.
    let mut s = FileStorage::<u64>::open_with(golden.path(), reopen_options()).unwrap();
    let e = s.entries(1, 41).await.expect_err("wrong type");
    assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
    assert!(e.to_string().contains("decode"), "{e}");
}

/// Simulates crashes at every point of a run: after each append returns, the segment files are as
/// the kernel would have them; a crash may then lose any part of the *next* append (not yet returned).
/// Whatever part of that unacknowledged write survives, reopening keeps every acknowledged entry.
#[tokio::test]
async fn a_crash_during_any_append_keeps_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options().fsync(FsyncPolicy::Never);
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
    let mut rng = Rng(7);
    let mut acked = Vec::new();
    let mut next = 1;
    for round in 0..25 {
        // State after the previous append returned (acknowledged).
        let before = copy_dir(dir.path());
        let n = 1 + rng.below(6);
        let batch = entries(1 + round / 5, next, n);
        s.append(&batch).await.unwrap();
        next += n;
        // The state the completed write would leave; a crash leaves something between the two.
        let after = copy_dir(dir.path());
        let last_after = segments(after.path()).pop().unwrap();
        let name = last_after.file_name().unwrap().to_owned();
        let full = fs::read(&last_after).unwrap();
        // The segment as it was before the append; a new segment as its creation left it (its
        // header and end mark, then free space), which is durable before the append writes.
        let old = fs::read(before.path().join("log").join(&name)).unwrap_or_else(|_| {
            let mut new_segment = full[..SEGMENT_HEADER as usize].to_vec();
            new_segment.extend(end_mark(SEGMENT_HEADER));
            new_segment.resize(new_segment.len().max(250), 0);
            new_segment
        });
        let old_end = common::batches_end_of(&old) as usize;
        let batch_end = batches_end(&last_after) as usize;
        for _ in 0..6 {
            // The write starts over the old end mark. Some prefix of its bytes reached the disk;
            // after them the file holds what it held before (the rest of the old mark, free space),
            // or zeros where it grew.
            let keep = old_end + rng.below((full.len() - old_end) as u64 + 1) as usize;
            let mut bytes = full.clone();
            for (i, b) in bytes.iter_mut().enumerate().skip(keep) {
                *b = old.get(i).copied().unwrap_or(0);
            }
            if rng.below(2) == 0 {
                // The file's new length did not reach the disk either.
                bytes.truncate(keep.max(old.len()));
            }
            let crashed = copy_dir(after.path());
            fs::write(crashed.path().join("log").join(&name), &bytes).unwrap();
            let mut r = FileStorage::<Cmd>::open_with(crashed.path(), opts.clone())
                .unwrap_or_else(|e| panic!("round {round}: refused after a crash: {e}"));
            let got = dump(&mut r).await.unwrap();
            assert!(
                got.log.len() >= acked.len() && got.log[..acked.len()] == acked[..],
                "round {round}: lost an acknowledged entry"
            );
            // The unacknowledged batch survives whole (if all of it reached the disk) or not at
            // all.
            let complete = keep >= batch_end;
            let survived = if complete { &batch[..] } else { &[] };
            assert_eq!(got.log[acked.len()..], *survived, "round {round}");
            // Nothing is cut if none of the write, or all of it, reached the disk; whatever is cut
            // may have held entries only from the first one not kept.
            let report = r.recovery_report();
            if keep == old_end || keep == full.len() {
                assert!(report.torn_tail.is_none(), "round {round}: {report:?}");
            }
            if keep > old_end && keep < batch_end {
                assert!(report.torn_tail.is_some(), "round {round}: {report:?}");
            }
            if let Some(range) = report.cut_entries() {
                assert_eq!(*range.start(), got.log.len() as u64 + 1, "round {round}");
            }
        }
        acked.extend(batch);
    }
}

/// The snapshot file is checked whole when the storage opens it, then kept open and read through
/// that handle. Damage done to it afterwards, in place, is caught by `snapshot` (which checks the
/// whole file again on every call) and, for a file cut shorter, by a chunk read past its new end;
/// the next open refuses the file either way. (A chunk read inside an intact length is not checked
/// one by one: see the crate docs on snapshots.)
#[tokio::test]
async fn a_snapshot_file_damaged_while_open_is_refused() {
    for cut_it in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
        s.append(&entries(1, 1, 5)).await.unwrap();
        let id = LogId::new(1, 4);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_log_id: id,
                membership: Membership::new([1, 2, 3]),
            },
            data: data.clone(),
        };
        s.install_snapshot(snap).await.unwrap();
        drop(s);
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
        let chunk = s.snapshot_chunk(id, 9_000, 100).await.unwrap().unwrap();
        assert_eq!(chunk.data, data[9_000..9_100]);

        let path = dir.path().join("snapshot");
        let len = fs::metadata(&path).unwrap().len();
        if cut_it {
            cut(&path, len - 5_000);
            let e = s.snapshot_chunk(id, 9_000, 100).await.unwrap_err();
            assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
            assert!(e.to_string().contains("shorter"), "{e}");
        } else {
            flip(&path, len - 5_000, 0x01);
        }
        let e = s.snapshot().await.unwrap_err();
        assert!(matches!(e, StorageError::Corrupted(_)), "{e}");
        assert!(e.to_string().contains("snapshot"), "{e}");
        drop(s);
        let r = FileStorage::<Cmd>::open_with(dir.path(), options());
        assert!(is_corrupted(&r), "reopening a damaged snapshot file");
    }
}

/// The crate docs on snapshots: reads go through the file the storage checked and keeps open, never
/// by name, so a valid snapshot file put in its place from outside (even one with the same id, which
/// the id check cannot tell apart) is not read; the next open checks and serves the new file.
#[cfg(unix)] // renaming over an open file
#[tokio::test]
async fn a_snapshot_file_replaced_from_outside_is_not_read() {
    let id = LogId::new(1, 4);
    let (ours, theirs) = (snapshot(id, 1), snapshot(id, 2));
    let mut stores = Vec::new();
    for snap in [&ours, &theirs] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
        s.append(&entries(1, 1, 5)).await.unwrap();
        s.install_snapshot(snap.clone()).await.unwrap();
        stores.push((dir, s));
    }
    let (other_dir, other) = stores.pop().unwrap();
    drop(other);
    let (dir, mut s) = stores.pop().unwrap();
    fs::rename(
        other_dir.path().join("snapshot"),
        dir.path().join("snapshot"),
    )
    .unwrap();

    let chunk = s.snapshot_chunk(id, 0, 1 << 20).await.unwrap().unwrap();
    assert_eq!(
        chunk.data, ours.data,
        "a chunk of the file the storage opened"
    );
    assert_eq!(s.snapshot().await.unwrap(), Some(ours));
    drop(s);
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
    assert_eq!(s.snapshot().await.unwrap(), Some(theirs));
}

/// A preallocated segment cut at the end of its batches (by recovery cutting a torn tail, or by a
/// truncation at a batch boundary) gets its end mark and free space back: the file is again the
/// segment's size, so appends keep writing inside its length, and a crash right after the cut
/// reopens with nothing to report.
#[tokio::test]
async fn a_cut_gives_a_preallocated_segment_its_free_space_back() {
    const SIZE: u64 = 4096;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(SIZE);
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
    for (first, n) in [(1, 3), (4, 2), (6, 4)] {
        s.append(&entries(1, first, n)).await.unwrap();
    }
    drop(s);
    let seg = segments(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), SIZE, "preallocated");
    let end = batches_end(&seg);

    // A torn append over the mark, after a crash: cut, then the mark and free space restored.
    as_after_crash(dir.path());
    write_at_batches_end(&seg, b"rBAT\x05\x00\x00");
    let s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
    let torn = s.recovery_report().torn_tail.expect("a cut");
    assert_eq!(torn.offset, end);
    assert_eq!(fs::metadata(&seg).unwrap().len(), SIZE);
    assert_eq!(
        batches_end(&seg),
        end,
        "a mark, then zeros, after the batches"
    );
    drop(s);
    as_after_crash(dir.path());
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
    assert!(s.recovery_report().is_clean(), "{:?}", s.recovery_report());

    // A truncation at a batch boundary: the same.
    let last_batch = batches(&seg).pop().unwrap();
    s.truncate(last_batch.first).await.unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), SIZE);
    assert_eq!(batches_end(&seg), last_batch.start);
    s.append(&entries(2, last_batch.first, 1)).await.unwrap();
    drop(s);
    as_after_crash(dir.path());
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts).unwrap();
    assert!(s.recovery_report().is_clean(), "{:?}", s.recovery_report());
    let log = s.entries(1, last_batch.first + 1).await.unwrap();
    assert_eq!(log.last().unwrap().log_id, LogId::new(2, last_batch.first));
    assert_eq!(fs::metadata(&seg).unwrap().len(), SIZE);
}
