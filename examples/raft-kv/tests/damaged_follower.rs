//! One follower of a live three-node `raft-kv` cluster (file storage, TCP with mutual TLS, HTTP)
//! is stopped, its data directory damaged, and the follower started again, once per kind of damage.
//! Writes go on throughout, through the two healthy nodes: while the follower is down, and while it
//! comes back. Afterwards every acknowledged write is read back on every running node, and the
//! damaged follower has done one of two things:
//!
//! * refused to start: its process exits with a failure, and its log names the damaged file and the
//!   byte offset (the refusals of `raft-storage-file`'s recovery);
//! * rejoined: it runs, and its state machine reaches the leader's commit index.
//!
//! | damage | stop | outcome |
//! |---|---|---|
//! | a bit flipped in the last record of a complete batch | SIGKILL | refused, at the record |
//! | the last batch torn (the file cut inside its records) | SIGKILL | rejoins; the cut is reported and the node does not vote until caught up |
//! | the last batch lost whole (the file cut at a batch boundary) | SIGKILL | rejoins; nothing on disk shows the loss, the leader sends the entries again |
//! | a zeroed tail (the last batch and a page after it zeroed) | SIGKILL | rejoins; the cut is reported and the node does not vote until caught up |
//! | the whole segment zeroed, header included | SIGKILL | refused, at offset 0 of the segment |
//! | the log cut below the snapshot's index | SIGKILL | rejoins; the log is discarded to the snapshot point |
//! | the first bytes of a batch after the last one, after a clean shutdown | SIGTERM | refused: a clean shutdown recorded where the log ended |
//!
//! The damage is made with the segment format of `raft-storage-file`'s crate docs: a segment is a
//! 24-byte header, then batches (one per `append`) of a 28-byte header, record frames and an 8-byte
//! trailer, then a 16-byte end mark and free space (zeros: the segment is preallocated). A
//! follower's log fits in one segment here (the default segment size is 64 MiB). The
//! follower is stopped while no write is in flight, so its files end with complete batches. The
//! cases run one at a time, with 140 keys each (about a second each in a debug build).

mod procs;

use std::fs::{self, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use procs::*;
use raft_kv::http::StatusBody;
use tokio::sync::Mutex;

/// Keys written with all three nodes up, before the follower stops.
const BEFORE: Range<usize> = 0..60;
/// Keys written while the follower is down.
const WHILE_DOWN: Range<usize> = 60..100;
/// Keys written while the follower comes back.
const WHILE_BACK: Range<usize> = 100..140;

/// Segment header: magic, format version, first index, CRC.
const SEGMENT_HEADER: u64 = 24;
/// Batch header: magic `rBAT`, first index (u64), entry count (u32), records length (u64), CRC (u32).
const BATCH_HEADER: u64 = 28;
/// Batch trailer: magic `rEND`, the header's CRC (u32).
const BATCH_TRAILER: u64 = 8;
/// End mark after the last batch: magic `rEOL`, its offset (u64), CRC (u32).
const END_MARK: u64 = 16;

/// One complete batch of a segment file.
#[derive(Debug)]
struct Batch {
    /// Offset of its header.
    start: u64,
    /// Offset just past its trailer.
    end: u64,
    /// The index of its first entry.
    first: u64,
    /// The byte ranges of its record frames.
    records: Vec<(u64, u64)>,
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

/// The segment files of the storage in data directory `dir`, in log order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// The data directory's last segment.
fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment")
}

/// The batches of a segment file (truncation records, which hold no entry, included), which must
/// hold complete batches only, then the end mark (or nothing).
fn batches(path: &Path) -> Vec<Batch> {
    let data = fs::read(path).unwrap();
    let mut pos = SEGMENT_HEADER as usize;
    let mut out = Vec::new();
    while pos < data.len() {
        if &data[pos..pos + 4] == b"rEOL" {
            break;
        }
        assert_eq!(&data[pos..pos + 4], b"rBAT", "a batch header at {pos}");
        let first = u64_at(&data, pos + 4);
        let count = u32_at(&data, pos + 12);
        let records_len = u64_at(&data, pos + 16) as usize;
        let mut at = pos + BATCH_HEADER as usize;
        let mut records = Vec::new();
        for _ in 0..count {
            let end = at + 8 + u32_at(&data, at) as usize;
            records.push((at as u64, end as u64));
            at = end;
        }
        assert_eq!(at, pos + BATCH_HEADER as usize + records_len);
        assert_eq!(&data[at..at + 4], b"rEND", "a batch trailer at {at}");
        let end = at + BATCH_TRAILER as usize;
        out.push(Batch {
            start: pos as u64,
            end: end as u64,
            first,
            records,
        });
        pos = end;
    }
    out
}

/// The last batch of a segment, which must hold entries (not be a truncation record).
fn last_batch(path: &Path) -> Batch {
    let batch = batches(path).pop().expect("a batch");
    assert!(!batch.records.is_empty(), "the last batch holds entries");
    batch
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Writes `bytes` at byte `at` of the file `path` (which grows if they go past its end).
fn write_at(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

/// How the follower is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL: a crash, no clean shutdown recorded.
    Kill,
    /// SIGTERM: a clean shutdown, recorded in the data directory.
    Terminate,
}

/// What the damaged follower must do when started again.
#[derive(Debug)]
enum Expect {
    /// Refuse to start: exit with a failure, its log naming the storage as corrupted, the damaged
    /// file, the byte offset, and `why`.
    Refused {
        file: PathBuf,
        offset: u64,
        why: Option<&'static str>,
    },
    /// Start, rejoin and catch up; its log says `logged` (or, for `None`, that it does not hold back
    /// its vote: nothing on disk showed a loss). `repaired`: it lost entries it had acknowledged, and
    /// the leader logs that it found its log shorter than its match index and sent them again.
    Rejoins {
        logged: Option<&'static str>,
        repaired: bool,
    },
}

/// What the driver logs when the storage reports that it cut entries.
const NOT_VOTING: &str = "not voting until caught up with a leader";
/// What a leader logs when a follower's log ends below the index it acknowledged.
const REPAIRED: &str = "follower lost entries it had acknowledged; replicating them again";

static ONE_CASE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Snapshot settings of a case: `--snapshot-after` and `--snapshot-keep-entries`.
#[derive(Clone, Copy, Debug)]
struct Snapshots {
    after: u64,
    keep: u64,
}

/// Runs one case: a three-node cluster (with `snapshots`, if given; else none is taken) takes
/// writes; a follower is stopped as `stop` says once it has applied everything; the others take
/// more writes; `damage` edits the follower's data directory (given its status before the stop) and
/// says what must happen; the follower is started again while writes go on; then every acknowledged
/// write is checked on every running node.
async fn damaged_follower(
    snapshots: Option<Snapshots>,
    stop: Stop,
    damage: impl FnOnce(&Path, &StatusBody) -> Expect,
) {
    // One case at a time: each picks free ports, then its processes bind them, and another case's
    // pick in between could take the same ones.
    let _one_at_a_time = ONE_CASE_AT_A_TIME.lock().await;
    let root = tempfile::tempdir().unwrap();
    let flags = snapshots.map(|s| (s.after.to_string(), s.keep.to_string()));
    let flags: Vec<&str> = match &flags {
        Some((after, keep)) => vec!["--snapshot-after", after, "--snapshot-keep-entries", keep],
        None => Vec::new(),
    };
    let mut procs = Procs::with_flags(root.path(), &flags);
    let test = async {
        procs.start_all();
        wait_for_every_running_node(&procs, "answer", |_| true).await;
        let (leader, _) = wait_for_leader(&procs, 0).await;
        let all: Vec<u64> = (1..=NODES).collect();
        let mut acked = write_keys(&procs, &all, BEFORE).await;
        let follower = all.iter().copied().find(|&id| id != leader).unwrap();
        let snapshot_after = snapshots.map_or(u64::MAX, |s| s.after);
        let before = quiet_status(&procs, follower, snapshot_after).await;

        match stop {
            Stop::Kill => procs.kill(follower),
            Stop::Terminate => assert!(
                procs.terminate(follower, Duration::from_secs(10)),
                "node {follower} did not shut down cleanly\n{}",
                procs.dump_logs()
            ),
        }
        let rest = procs.running();
        acked.extend(write_keys(&procs, &rest, WHILE_DOWN).await);

        let dir = procs.nodes[follower as usize - 1].dir.clone();
        // The files hold what the follower reported: the damage hits its last entries.
        let last = last_batch(&last_segment(&dir));
        assert_eq!(
            last.first + last.records.len() as u64 - 1,
            before.last_log_index,
            "the last entry on disk is the follower's last entry: {before:?}"
        );
        let expect = damage(&dir, &before);
        procs.start(follower);
        match expect {
            Expect::Refused { file, offset, why } => {
                let status = procs
                    .wait_exit(follower, Duration::from_secs(20))
                    .unwrap_or_else(|| {
                        panic!(
                            "node {follower} runs on a damaged directory ({} at {offset})\n{}",
                            file.display(),
                            procs.dump_logs()
                        )
                    });
                assert!(!status.success(), "node {follower} exited with {status}");
                let log = procs.log(follower);
                let refusal = log
                    .lines()
                    .find(|l| l.contains("storage is corrupted"))
                    .unwrap_or_else(|| panic!("no refusal in node {follower}'s log:\n{log}"));
                let parts = [file.display().to_string(), format!("offset {offset}:")];
                for part in parts.iter().map(String::as_str).chain(why) {
                    assert!(refusal.contains(part), "{part:?} not in: {refusal}");
                }
                // The cluster goes on without it.
                acked.extend(write_keys(&procs, &rest, WHILE_BACK).await);
            }
            Expect::Rejoins { logged, repaired } => {
                let (more, ()) = tokio::join!(
                    write_keys(&procs, &rest, WHILE_BACK),
                    caught_up(&procs, follower)
                );
                acked.extend(more);
                let log = procs.log(follower);
                match logged {
                    Some(what) => assert!(log.contains(what), "{what:?} not in:\n{log}"),
                    None => assert!(!log.contains(NOT_VOTING), "{log}"),
                }
                if repaired {
                    assert!(
                        rest.iter().any(|&id| procs.log(id).contains(REPAIRED)),
                        "no leader repaired node {follower}'s log\n{}",
                        procs.dump_logs()
                    );
                }
            }
        }
        assert_eq!(acked.len(), WHILE_BACK.end);
        check_everywhere(&procs, &acked).await;
        // A node that rejoined still runs (the checks above saw it answer).
        for id in procs.running() {
            assert!(
                procs.is_alive(id),
                "node {id} exited\n{}",
                procs.dump_logs()
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

/// Waits until node `id` has applied what the leader had committed, and has no snapshot due (one is
/// taken every `snapshot_after` applied entries), so that its files stay as they are until it is
/// stopped; returns its status.
async fn quiet_status(procs: &Procs, id: u64, snapshot_after: u64) -> StatusBody {
    let (leader, _) = wait_for_leader(procs, 0).await;
    let commit = procs.client(leader).status().await.unwrap().commit_index;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = procs.client(id).status().await {
            if s.last_applied >= commit && s.last_applied - s.snapshot_index < snapshot_after {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not apply {commit}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node `id`'s state machine has applied the leader's commit index (as read before
/// each look at the node).
async fn caught_up(procs: &Procs, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = statuses(procs).await;
        let commit = statuses
            .values()
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.commit_index);
        if let (Some(commit), Some(s)) = (commit, statuses.get(&id)) {
            if s.last_applied >= commit {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not catch up with the leader: {statuses:?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flip_in_the_last_record_of_a_complete_batch_is_refused() {
    damaged_follower(None, Stop::Kill, |dir, _| {
        let seg = last_segment(dir);
        let (record, end) = *last_batch(&seg).records.last().unwrap();
        let mut data = fs::read(&seg).unwrap();
        data[((record + end) / 2) as usize] ^= 0x10;
        fs::write(&seg, data).unwrap();
        Expect::Refused {
            file: seg,
            offset: record,
            why: None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_batch_is_cut_and_the_follower_catches_up_before_it_votes() {
    damaged_follower(None, Stop::Kill, |dir, _| {
        let seg = last_segment(dir);
        let batch = last_batch(&seg);
        // Inside the records: the batch's header announces more than the file holds.
        set_len(&seg, batch.records[0].0 + 3);
        Expect::Rejoins {
            logged: Some(NOT_VOTING),
            repaired: true,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_at_a_batch_boundary_opens_shorter_and_the_leader_sends_it_again() {
    damaged_follower(None, Stop::Kill, |dir, _| {
        let seg = last_segment(dir);
        let batch = last_batch(&seg);
        set_len(&seg, batch.start);
        // What a crash before that batch's append leaves: nothing to report, so the node votes at
        // once; the leader finds its log shorter than what it acknowledged and repairs it.
        Expect::Rejoins {
            logged: None,
            repaired: true,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_tail_is_cut_and_the_follower_catches_up_before_it_votes() {
    damaged_follower(None, Stop::Kill, |dir, _| {
        let seg = last_segment(dir);
        let batch = last_batch(&seg);
        // The last batch zeroed in place, with its end mark and a page after it: what a disk that
        // extended the file before the data reached it leaves, over a batch that was complete.
        let zeros = batch.end - batch.start + END_MARK + 4096;
        write_at(&seg, batch.start, &vec![0; zeros as usize]);
        Expect::Rejoins {
            logged: Some(NOT_VOTING),
            repaired: true,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_segment_is_refused() {
    damaged_follower(None, Stop::Kill, |dir, _| {
        let seg = last_segment(dir);
        assert_eq!(segments(dir).len(), 1, "the whole log is in one segment");
        let len = fs::metadata(&seg).unwrap().len();
        fs::write(&seg, vec![0; len as usize]).unwrap();
        Expect::Refused {
            file: seg,
            offset: 0,
            why: None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_below_the_snapshot_is_discarded_to_the_snapshot_and_the_follower_catches_up() {
    let snapshots = Snapshots {
        after: 30,
        keep: 20,
    };
    damaged_follower(Some(snapshots), Stop::Kill, |dir, before| {
        let snapshot = before.snapshot_index;
        let purged = before.last_log_index - before.log_entries;
        assert!(snapshot > 0, "the follower has a snapshot: {before:?}");
        let seg = last_segment(dir);
        // Cut at the start of the batch that holds the snapshot's last entry: the log then ends
        // below the snapshot, above the compaction point.
        let batch = batches(&seg)
            .into_iter()
            .rfind(|b| !b.records.is_empty() && b.first <= snapshot)
            .unwrap();
        assert!(
            batch.first - 1 > purged,
            "the cut at {} ends the log above the compaction point {purged}",
            batch.first
        );
        set_len(&seg, batch.start);
        // The snapshot covers what the log lost (it is the follower's last entry when the cluster
        // is quiet): nothing acknowledged is missing, nothing to repair.
        Expect::Rejoins {
            logged: Some("the log ends below the snapshot; discarding it to the snapshot point"),
            repaired: false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_damage_after_a_clean_shutdown_is_refused() {
    damaged_follower(None, Stop::Terminate, |dir, _| {
        assert!(dir.join("clean").exists(), "the clean shutdown is recorded");
        let seg = last_segment(dir);
        let end = batches(&seg).last().map_or(SEGMENT_HEADER, |b| b.end);
        // The first bytes of a batch after the last one, over the end mark: what a crash during an
        // append leaves, which a clean shutdown rules out.
        let mut junk = b"rBAT".to_vec();
        junk.extend([7u8; 9]);
        junk.extend([0u8; 3]);
        write_at(&seg, end, &junk);
        Expect::Refused {
            file: seg,
            offset: end,
            why: Some("clean shutdown"),
        }
    })
    .await;
}
