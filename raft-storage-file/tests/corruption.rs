//! The corruption matrix: one test per kind of damage, each asserting what `FileStorage::open`
//! returns: the log it keeps (its last index) and the recovery report, or a refusal naming the file
//! and the byte offset. Every damaged directory is built by writing through `FileStorage`, dropping
//! it (which records a clean shutdown), then editing files; the cases that model a crash remove that
//! record, as a crash leaves none. The rule these rows follow is in the crate docs ("Recovery, and
//! why it is correct").

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use raft_core::{HardState, LogId, LogState, RaftStorage, StorageError};
use raft_storage_file::{
    CutEntries, FileStorage, FsyncPolicy, LogBehindSnapshot, Options, TailDamage, MIN_RECORD_BYTES,
};
use tempfile::TempDir;

/// How many entries each `append` of the golden log writes: each is one batch.
const BATCHES: [u64; 8] = [3, 1, 5, 3, 4, 2, 6, 3];
/// The golden log's last index.
const LAST: u64 = 27;

fn options() -> Options {
    // Small segments, so the log spans several, the last one holding several batches.
    Options::default().segment_size(700)
}

/// A storage holding a hard state and entries 1..=27 in batches of `BATCHES`, written with fsync on
/// and closed cleanly; and its last segment.
async fn golden() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), options()).unwrap();
    s.save_hard_state(&HardState {
        term: 3,
        voted_for: Some(2),
    })
    .await
    .unwrap();
    let mut next = 1;
    for (i, n) in BATCHES.into_iter().enumerate() {
        s.append(&entries(1 + i as u64 / 3, next, n)).await.unwrap();
        next += n;
    }
    assert_eq!(next - 1, LAST);
    s.close().await.unwrap();
    assert!(dir.path().join(CLEAN_FILE).exists());
    let segs = segments(dir.path());
    assert!(segs.len() >= 2, "the log spans several segments");
    let last = segs.last().unwrap().clone();
    assert!(
        batches(&last).len() >= 2,
        "the last segment holds several batches"
    );
    (dir, last)
}

/// How a damaged copy is opened: after a clean shutdown (its record kept) or after a crash (its
/// record removed).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shutdown {
    Clean,
    Crash,
}

/// Opens a copy of `golden` after `damage`, as after `shutdown`.
fn open_damaged(
    golden: &Path,
    shutdown: Shutdown,
    damage: impl FnOnce(&Path),
) -> (TempDir, Result<FileStorage<Cmd>, StorageError>) {
    let copy = copy_dir(golden);
    if shutdown == Shutdown::Crash {
        as_after_crash(copy.path());
    }
    damage(copy.path());
    let r = FileStorage::open_with(copy.path(), options().fsync(FsyncPolicy::Never));
    (copy, r)
}

/// The same path inside another storage directory.
fn in_dir(dir: &Path, file: &Path) -> PathBuf {
    dir.join("log").join(file.file_name().unwrap())
}

fn name(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().into_owned()
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn zero(path: &Path, from: u64, to: u64) {
    let mut data = fs::read(path).unwrap();
    data[from as usize..to as usize].fill(0);
    fs::write(path, data).unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// The log a storage holds: its state and every entry, which must read back as written.
async fn check_log(s: &mut FileStorage<Cmd>, last: u64) {
    let st = s.log_state().await.unwrap();
    assert_eq!(st.last_log_id.index, last, "last index");
    let log = s.entries(1, last + 1).await.unwrap();
    let mut want = Vec::new();
    let mut next = 1;
    for (i, n) in BATCHES.into_iter().enumerate() {
        want.extend(entries(1 + i as u64 / 3, next, n));
        next += n;
    }
    assert_eq!(log, want[..last as usize]);
}

/// Row: a bit flipped in the last record of a complete batch (the last batch of the log). Its
/// trailer shows the write completed, so this is damage: refused, naming the record's offset,
/// whether the shutdown was clean or not.
#[tokio::test]
async fn a_bit_flip_in_the_last_record_of_a_complete_batch_is_refused() {
    let (golden, last) = golden().await;
    let batch = batches(&last).pop().unwrap();
    let (record, end) = *batch.records.last().unwrap();
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        for at in [record, record + 5, (record + end) / 2, end - 1] {
            let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
                let p = in_dir(d, &last);
                let mut data = fs::read(&p).unwrap();
                data[at as usize] ^= 0x10;
                fs::write(&p, data).unwrap();
            });
            assert!(
                is_refusal_at(&r, &name(&last), record),
                "{shutdown:?}, flip at {at}: {r:?}"
            );
        }
    }
}

/// Row: a torn last batch, its file cut inside its records (a crash during its `append`, which
/// never returned). After a crash: cut; the log ends before that batch, and the report names the
/// file, the byte range and the entries the batch's header announced. After a clean shutdown: every
/// write was complete, so this is damage: refused.
#[tokio::test]
async fn a_torn_last_batch_is_cut_after_a_crash_only() {
    let (golden, last) = golden().await;
    let len = fs::metadata(&last).unwrap().len();
    let batch = batches(&last).pop().unwrap();
    let at = batch.records[1].0 + 3;

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, |d| {
        set_len(&in_dir(d, &last), at)
    });
    let mut s = r.unwrap();
    let report = s.recovery_report();
    assert!(!report.clean_shutdown);
    let torn = report.torn_tail.clone().expect("a cut");
    assert_eq!(torn.segment.file_name(), last.file_name());
    assert_eq!(torn.offset, batch.start);
    assert_eq!(torn.discarded_bytes, at - batch.start);
    assert_eq!(torn.damage, TailDamage::ShortBatch);
    let range = batch.first..=LAST;
    assert_eq!(torn.entries, CutEntries::Announced(range.clone()));
    assert_eq!(report.cut_entries(), Some(range));
    // The node above is told: it will not vote until it has caught up with a leader.
    assert!(s.lost_entries_on_open().await.unwrap());
    check_log(&mut s, batch.first - 1).await;
    assert!(len > at);

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, |d| {
        set_len(&in_dir(d, &last), at)
    });
    assert!(is_refusal_at(&r, &name(&last), batch.start), "{r:?}");
    assert!(format!("{r:?}").contains("clean shutdown"), "{r:?}");
}

/// Row: the last segment truncated exactly at a batch boundary (a complete batch lost whole). After
/// a crash nothing shows it: the segment holds complete batches only, `log_meta` names the newest
/// segment but not its length (it is not rewritten per append), and the result is the state a crash
/// before that batch's `append` would have left. The open returns the shorter log and reports
/// nothing. After a clean shutdown, its record holds the segment's length: refused.
#[tokio::test]
async fn a_truncation_at_a_batch_boundary_is_detected_after_a_clean_shutdown_only() {
    let (golden, last) = golden().await;
    let end = batches_end(&last);
    let batch = batches(&last).pop().unwrap();

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, |d| {
        set_len(&in_dir(d, &last), batch.start)
    });
    let mut s = r.unwrap();
    let report = s.recovery_report();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.cut_entries(), None);
    assert!(!s.lost_entries_on_open().await.unwrap());
    check_log(&mut s, batch.first - 1).await;

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, |d| {
        set_len(&in_dir(d, &last), batch.start)
    });
    assert!(is_refusal_at(&r, &name(&last), batch.start), "{r:?}");
    let msg = format!("{r:?}");
    assert!(msg.contains(&format!("ended at byte {end}")), "{msg}");
}

/// Row: a zeroed tail, zero bytes where the next batch would start, the end mark included (a file
/// system that extended the file before the data of an `append` reached the disk, or a lost end
/// mark: a lost batch leaves the same bytes). After a crash: cut, reported as a zeroed tail that may
/// have held entries from the next index on, as many as fit. After a clean shutdown: refused at the
/// offset where the zeros start.
#[tokio::test]
async fn a_zeroed_tail_is_cut_after_a_crash_only() {
    let (golden, last) = golden().await;
    let end = batches_end(&last);
    let zeros = 4096u64;
    let zero_tail = |d: &Path| write_at_batches_end(&in_dir(d, &last), &vec![0; zeros as usize]);

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, zero_tail);
    let mut s = r.unwrap();
    let torn = s.recovery_report().torn_tail.expect("a cut");
    assert_eq!((torn.offset, torn.discarded_bytes), (end, zeros));
    assert_eq!(torn.written_bytes, 0);
    assert_eq!(torn.damage, TailDamage::Zeroed);
    let at_most = (zeros - BATCH_HEADER).div_ceil(MIN_RECORD_BYTES);
    assert_eq!(torn.entries, CutEntries::AtMost(LAST + 1..=LAST + at_most));
    check_log(&mut s, LAST).await;
    assert_eq!(
        fs::metadata(s.dir().join("log").join(last.file_name().unwrap()))
            .unwrap()
            .len(),
        end
    );

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, zero_tail);
    assert!(is_refusal_at(&r, &name(&last), end), "{r:?}");
}

/// Row: the end mark damaged (a flipped byte). Without a valid mark, what follows the last batch is
/// the start of a batch that never completed: after a crash it is cut, every entry kept; after a
/// clean shutdown it is refused at the mark's offset.
#[tokio::test]
async fn a_damaged_end_mark_is_cut_after_a_crash_only() {
    let (golden, last) = golden().await;
    let end = batches_end(&last);
    for at in end..end + END_MARK {
        let flip_it = |d: &Path| {
            let path = in_dir(d, &last);
            let mut data = fs::read(&path).unwrap();
            data[at as usize] ^= 0x10;
            fs::write(&path, data).unwrap();
        };
        let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, flip_it);
        let mut s = r.unwrap_or_else(|e| panic!("flip at {at}: {e}"));
        let torn = s.recovery_report().torn_tail.expect("a cut");
        assert_eq!(torn.offset, end, "flip at {at}");
        check_log(&mut s, LAST).await;

        let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, flip_it);
        assert!(is_refusal_at(&r, &name(&last), end), "flip at {at}: {r:?}");
    }
}

/// Row: data in the free space after the end mark (a preallocated segment's zeros). An append
/// writes over the mark first, so no crash leaves data after an intact mark: refused either way,
/// naming the offset of the data.
#[tokio::test]
async fn data_after_the_end_mark_is_refused() {
    let (golden, last) = golden().await;
    let end = batches_end(&last);
    let at = end + END_MARK + 100;
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
            let path = in_dir(d, &last);
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"rBAT", at).unwrap();
        });
        assert!(is_refusal_at(&r, &name(&last), at), "{shutdown:?}: {r:?}");
        assert!(format!("{r:?}").contains("free space"), "{r:?}");
    }
}

/// Row (a variant of the zeroed tail): the last complete batch zeroed in place, header to trailer,
/// with the end mark written after it. The same bytes as a zeroed tail where that batch started:
/// after a crash the storage cannot tell them apart (see the crate docs), cuts them, and reports
/// that they may have held entries from that batch's first index on. After a clean shutdown:
/// refused. The batch zeroed but its mark intact is no crash's doing: refused either way.
#[tokio::test]
async fn a_zeroed_last_batch_is_cut_and_reported_after_a_crash_refused_after_a_clean_shutdown() {
    let (golden, last) = golden().await;
    let batch = batches(&last).pop().unwrap();
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
            zero(&in_dir(d, &last), batch.start, batch.end)
        });
        assert!(
            is_refusal_at(&r, &name(&last), batch.start),
            "{shutdown:?}: {r:?}"
        );
    }
    let zero_it = |d: &Path| zero(&in_dir(d, &last), batch.start, batch.end + END_MARK);

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, zero_it);
    let mut s = r.unwrap();
    let report = s.recovery_report();
    let torn = report.torn_tail.as_ref().expect("a cut");
    assert_eq!(torn.offset, batch.start);
    assert_eq!(torn.damage, TailDamage::Zeroed);
    let cut = report.cut_entries().expect("entries may have been cut");
    assert_eq!(*cut.start(), batch.first);
    assert!(*cut.end() >= LAST, "{cut:?} covers the lost batch");
    check_log(&mut s, batch.first - 1).await;

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, zero_it);
    assert!(is_refusal_at(&r, &name(&last), batch.start), "{r:?}");
}

/// Row: a zeroed whole last segment. With its header zeroed too: refused either way (a segment
/// header is written whole, under a temporary name, before the segment is named). With only its
/// body zeroed (every batch): after a clean shutdown, refused; after a crash, cut to the segment's
/// first index and reported as entries from there on that may have been lost (the node above must
/// treat them as possibly acknowledged).
#[tokio::test]
async fn a_zeroed_last_segment() {
    let (golden, last) = golden().await;
    let len = fs::metadata(&last).unwrap().len();
    let first = batches(&last)[0].first;
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| zero(&in_dir(d, &last), 0, len));
        assert!(is_refusal_at(&r, &name(&last), 0), "{shutdown:?}: {r:?}");
    }

    let zero_body = |d: &Path| zero(&in_dir(d, &last), SEGMENT_HEADER, len);
    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, zero_body);
    assert!(is_refusal_at(&r, &name(&last), SEGMENT_HEADER), "{r:?}");

    let (_copy, r) = open_damaged(golden.path(), Shutdown::Crash, zero_body);
    let mut s = r.unwrap();
    let report = s.recovery_report();
    let torn = report.torn_tail.as_ref().expect("a cut");
    assert_eq!(
        (torn.offset, torn.damage),
        (SEGMENT_HEADER, TailDamage::Zeroed)
    );
    let cut = report.cut_entries().expect("entries may have been cut");
    assert_eq!(*cut.start(), first);
    assert!(*cut.end() >= LAST);
    check_log(&mut s, first - 1).await;
}

/// Row: damage at the end of the log after a clean shutdown. The first bytes of a batch (what a
/// crash during an `append` leaves, and what the crash case cuts) after a clean shutdown are
/// refused: the shutdown recorded that every write was complete.
#[tokio::test]
async fn tail_damage_after_a_clean_shutdown_is_refused() {
    let (golden, last) = golden().await;
    let len = batches_end(&last);
    // Over the end mark, as the next append writes; the file then ends after those bytes.
    let torn_start = |d: &Path| {
        let path = in_dir(d, &last);
        set_len(&path, len);
        let mut junk = b"rBAT".to_vec();
        junk.extend([7u8; 9]);
        append_bytes(&path, &junk)
    };
    let (_copy, r) = open_damaged(golden.path(), Shutdown::Clean, torn_start);
    assert!(is_refusal_at(&r, &name(&last), len), "{r:?}");
    let (copy, r) = open_damaged(golden.path(), Shutdown::Crash, torn_start);
    let mut s = r.unwrap();
    let torn = s.recovery_report().torn_tail.expect("a cut");
    assert_eq!((torn.offset, torn.damage), (len, TailDamage::ShortHeader));
    assert_eq!(torn.entries, CutEntries::None);
    assert_eq!(s.recovery_report().cut_entries(), None);
    check_log(&mut s, LAST).await;
    // The storage goes on, and its next clean shutdown is recorded and checked.
    s.append(&entries(9, LAST + 1, 2)).await.unwrap();
    drop(s);
    let s = FileStorage::<Cmd>::open_with(copy.path(), options()).unwrap();
    let report = s.recovery_report();
    assert!(report.clean_shutdown && report.is_clean(), "{report:?}");
}

/// Row: damage inside a batch of a segment that is not the last one. Appends write to the last
/// segment only, so no crash explains it: refused either way.
#[tokio::test]
async fn an_incomplete_batch_in_an_earlier_segment_is_refused() {
    let (golden, _last) = golden().await;
    let first_seg = segments(golden.path())[0].clone();
    let batch = batches(&first_seg).pop().unwrap();
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
            set_len(&in_dir(d, &first_seg), batch.trailer())
        });
        assert!(
            is_refusal_at(&r, &name(&first_seg), batch.start),
            "{shutdown:?}: {r:?}"
        );
    }
}

/// Row (storage level): a log that ends below the stored snapshot's index. The snapshot covers the
/// missing entries, and nothing else is inconsistent, so the open does not refuse: it returns the
/// log as it is (its last entry before the snapshot's) and reports the state; the storage does not
/// change it. `reset_log_to_snapshot` then makes the log go on after the snapshot.
#[tokio::test]
async fn a_log_that_ends_below_the_snapshot_index_is_reported() {
    let (golden, last) = golden().await;
    let batch = batches(&last).pop().unwrap();
    let snapshot_id = LogId::new(3, LAST - 1);
    {
        let mut s = FileStorage::<Cmd>::open_with(golden.path(), options()).unwrap();
        s.install_snapshot(snapshot(snapshot_id, 5)).await.unwrap();
        // Inside the log: the log is kept.
        assert_eq!(s.log_state().await.unwrap().last_log_id.index, LAST);
    }
    // The last batch (it holds the snapshot's entry) lost whole, after a crash.
    let (copy, r) = open_damaged(golden.path(), Shutdown::Crash, |d| {
        set_len(&in_dir(d, &last), batch.start)
    });
    let mut s = r.unwrap();
    let behind = LogBehindSnapshot {
        last_log_id: LogId::new(3, batch.first - 1),
        snapshot: snapshot_id,
    };
    let report = s.recovery_report();
    assert_eq!(report.log_behind_snapshot, Some(behind));
    assert!(report.is_clean(), "nothing was repaired: {report:?}");
    check_log(&mut s, batch.first - 1).await;
    assert_eq!(
        s.snapshot().await.unwrap().unwrap().meta.last_log_id,
        snapshot_id
    );

    // Reported again after a clean shutdown: the state is faithful, not repaired behind the
    // caller's back.
    drop(s);
    let mut s = FileStorage::<Cmd>::open_with(copy.path(), options()).unwrap();
    let report = s.recovery_report();
    assert!(report.clean_shutdown);
    assert_eq!(report.log_behind_snapshot, Some(behind));

    // The log goes on after the snapshot.
    assert_eq!(s.reset_log_to_snapshot().await.unwrap(), Some(snapshot_id));
    assert_eq!(s.reset_log_to_snapshot().await.unwrap(), None);
    let after = LogState {
        last_purged: snapshot_id,
        last_log_id: snapshot_id,
    };
    assert_eq!(s.log_state().await.unwrap(), after);
    s.append(&entries(4, LAST, 2)).await.unwrap();
    drop(s);
    let mut s = FileStorage::<Cmd>::open_with(copy.path(), options()).unwrap();
    let report = s.recovery_report();
    assert!(
        report.is_clean() && report.log_behind_snapshot.is_none(),
        "{report:?}"
    );
    assert_eq!(
        s.entries(LAST, LAST + 2).await.unwrap(),
        entries(4, LAST, 2)
    );
}

/// Row: files of an older format version. Refused at open, the message naming both versions.
#[tokio::test]
async fn an_older_format_version_is_refused_naming_both_versions() {
    let (golden, last) = golden().await;
    // Rewrites the version field (u32 at byte 8 of every file) to 2, and the checksum that covers
    // it, as a build of version 2 wrote them.
    fn as_version_2(path: &Path, crc_at: impl Fn(usize) -> usize) {
        let mut data = fs::read(path).unwrap();
        data[8..12].copy_from_slice(&2u32.to_le_bytes());
        let at = crc_at(data.len());
        let c = crc32fast::hash(&data[..at]);
        data[at..at + 4].copy_from_slice(&c.to_le_bytes());
        fs::write(path, data).unwrap();
    }
    for shutdown in [Shutdown::Crash, Shutdown::Clean] {
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
            as_version_2(&d.join("hard_state"), |len| len - 4)
        });
        let msg = r.expect_err("refused").to_string();
        assert!(msg.contains("hard_state"), "{msg}");
        assert!(msg.contains("format version 2"), "{msg}");
        assert!(msg.contains("format version 3"), "{msg}");

        // A segment header: the checksum at byte 20 covers the 20 bytes before it.
        let (_copy, r) = open_damaged(golden.path(), shutdown, |d| {
            as_version_2(&in_dir(d, &last), |_| 20)
        });
        let msg = r.expect_err("refused").to_string();
        assert!(msg.contains(&name(&last)), "{msg}");
        assert!(msg.contains("format version 2"), "{msg}");
        assert!(msg.contains("format version 3"), "{msg}");
    }
}
