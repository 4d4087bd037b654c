//! Reopening after a clean shutdown gives back exactly the same state; the directory lock keeps a
//! second opener out; a cancelled call never leaves the storage half-done or locked.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::*;
use raft_core::{Entry, EntryPayload, HardState, LogId, RaftStorage, StorageError};
use raft_storage_file::{FileStorage, FsyncPolicy, Options};
use serde::{Deserialize, Serialize};

/// A workload touching every method: appends of many sizes over several segments, truncations
/// across segment boundaries, purges, snapshots inside and ahead of the log, hard states.
async fn workload(s: &mut FileStorage<Cmd>) {
    s.save_hard_state(&HardState {
        term: 1,
        voted_for: Some(1),
    })
    .await
    .unwrap();
    let mut next = 1;
    for (i, n) in [1u64, 16, 3, 40, 1, 1, 7, 25].into_iter().enumerate() {
        s.append(&entries(1 + i as u64 / 3, next, n)).await.unwrap();
        next += n;
    }
    s.truncate(60).await.unwrap(); // across segments
    next = 60;
    s.append(&entries(4, next, 10)).await.unwrap();
    next += 10;
    s.save_hard_state(&HardState {
        term: 4,
        voted_for: None,
    })
    .await
    .unwrap();
    s.install_snapshot(snapshot(LogId::new(2, 30), 1))
        .await
        .unwrap();
    s.purge(30).await.unwrap();
    s.truncate(next - 2).await.unwrap(); // inside the last segment
    next -= 2;
    s.append(&entries(5, next, 5)).await.unwrap();
}

#[tokio::test]
async fn reopen_after_clean_shutdown_gives_back_the_same_state() {
    for options in [
        Options::default(),
        Options::default().segment_size(200),
        Options::default().segment_size(1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), options.clone()).unwrap();
        workload(&mut s).await;
        let before = dump(&mut s).await.unwrap();
        assert_eq!(before.log_state.last_purged, LogId::new(2, 30));
        drop(s);
        for round in 0..3 {
            let mut s = FileStorage::<Cmd>::open_with(dir.path(), options.clone()).unwrap();
            assert!(s.recovery_report().is_clean(), "{:?}", s.recovery_report());
            assert_eq!(
                dump(&mut s).await.unwrap(),
                before,
                "{options:?}, reopen {round}"
            );
        }
        // Another segment size reads the same directory.
        let mut s =
            FileStorage::<Cmd>::open_with(dir.path(), Options::default().segment_size(7)).unwrap();
        assert_eq!(dump(&mut s).await.unwrap(), before);
    }
}

#[tokio::test]
async fn a_snapshot_ahead_of_the_log_survives_reopen_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(100);
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
    s.append(&entries(1, 1, 20)).await.unwrap();
    s.install_snapshot(snapshot(LogId::new(3, 50), 9))
        .await
        .unwrap();
    assert!(segments(dir.path()).is_empty(), "the log was discarded");
    s.append(&entries(3, 51, 4)).await.unwrap();
    let before = dump(&mut s).await.unwrap();
    drop(s);
    let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts).unwrap();
    assert!(s.recovery_report().is_clean());
    assert_eq!(dump(&mut s).await.unwrap(), before);
    assert_eq!(before.log.len(), 4);
}

#[tokio::test]
async fn purge_deletes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut s =
        FileStorage::<Cmd>::open_with(dir.path(), Options::default().segment_size(150)).unwrap();
    for i in 0..20 {
        s.append(&entries(1, i * 5 + 1, 5)).await.unwrap();
    }
    let all = segments(dir.path()).len();
    assert!(all >= 10);
    s.purge(50).await.unwrap();
    let left = segments(dir.path());
    assert!(left.len() < all && left.len() > 1);
    // The first segment left holds entry 51 (it may start before it).
    let first: u64 = left[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first <= 51);
    s.purge(100).await.unwrap();
    assert!(segments(dir.path()).is_empty());
    assert_eq!(s.log_state().await.unwrap().last_log_id, LogId::new(1, 100));
    s.append(&entries(1, 101, 1)).await.unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStorage::<Cmd>::open(dir.path()).unwrap();
    let e = FileStorage::<Cmd>::open(dir.path()).expect_err("the directory is locked");
    match &e {
        StorageError::Io { source, .. } => assert_eq!(source.kind(), ErrorKind::WouldBlock),
        other => panic!("expected an I/O error of kind WouldBlock, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("locked"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );

    // Another process is kept out too (`flock(1)` from util-linux, where installed).
    let lock = dir.path().join("LOCK");
    if let Ok(status) = std::process::Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(&lock)
        .arg("true")
        .status()
    {
        assert!(!status.success(), "another process took the lock");
    }

    drop(first);
    let second = FileStorage::<Cmd>::open(dir.path()).expect("the lock is released on drop");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_completes_or_not_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().fsync(FsyncPolicy::Always);
    let batch = entries(1, 1, 50);
    for _ in 0..5 {
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone()).unwrap();
        let next = s.log_state().await.unwrap().last_log_id.index + 1;
        let batch: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| entry(e.log_id.term, next + i as u64))
            .collect();
        // Cancelled after its first poll: the write is already on the blocking pool.
        let _ = tokio::time::timeout(Duration::ZERO, s.append(&batch)).await;
        drop(s); // waits for the write, then unlocks
        let mut s = FileStorage::<Cmd>::open_with(dir.path(), opts.clone())
            .expect("reopen right after dropping a storage with a call in flight");
        assert!(s.recovery_report().is_clean());
        let last = s.log_state().await.unwrap().last_log_id.index;
        assert!(
            last == next - 1 || last == next + 49,
            "all or nothing: {last}"
        );
        let log = s.entries(1, last + 1).await.unwrap();
        assert_eq!(log.len() as u64, last);
    }
}

/// Command types that only a self-describing encoding can decode: tagged like raft-kv's
/// `KvCommand`, untagged, flattened, with skipped fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Tagged {
    Put {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
    },
    Nested(Sparse),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sparse {
    a: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    b: Option<u64>,
    #[serde(flatten)]
    extra: Extra,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Extra {
    Num { n: i64 },
    Text { t: String },
}

#[tokio::test]
async fn any_serde_command_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let commands = vec![
        Tagged::Put {
            key: "apple".into(),
            value: "red".into(),
        },
        Tagged::Cas {
            key: "pear".into(),
            expected: None,
        },
        Tagged::Nested(Sparse {
            a: 1,
            b: None,
            extra: Extra::Num { n: -5 },
        }),
        Tagged::Nested(Sparse {
            a: 2,
            b: Some(3),
            extra: Extra::Text { t: "x".into() },
        }),
    ];
    let log: Vec<Entry<Tagged>> = commands
        .into_iter()
        .zip(1..)
        .map(|(c, i)| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command(c).into(),
        })
        .collect();
    let mut s = FileStorage::<Tagged>::open(dir.path()).unwrap();
    s.append(&log).await.unwrap();
    assert_eq!(s.entries(1, 5).await.unwrap(), log);
    drop(s);
    let mut s = FileStorage::<Tagged>::open(dir.path()).unwrap();
    assert_eq!(s.entries(1, 5).await.unwrap(), log);
}

/// A type whose `Deserialize` cannot read what its `Serialize` wrote is refused before anything is
/// written.
#[tokio::test]
async fn a_command_that_does_not_decode_back_is_refused_before_writing() {
    #[derive(Clone, Debug)]
    struct OneWay;
    impl Serialize for OneWay {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str("one way")
        }
    }
    impl<'de> Deserialize<'de> for OneWay {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u64::deserialize(d).map(|_| OneWay)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::<OneWay>::open(dir.path()).unwrap();
    let e = s
        .append(&[Entry {
            log_id: LogId::new(1, 1),
            payload: EntryPayload::Command(OneWay).into(),
        }])
        .await
        .expect_err("refused");
    assert!(matches!(e, StorageError::InvalidRequest(_)), "{e}");
    assert_eq!(s.log_state().await.unwrap().last_log_id, LogId::default());
    // The storage still works: the refusal wrote nothing.
    s.append(&[Entry {
        log_id: LogId::new(1, 1),
        payload: EntryPayload::Blank.into(),
    }])
    .await
    .unwrap();
}

/// An append's entries are encoded (and decoded back) on the blocking thread that writes them, not
/// on the caller's runtime thread, which a batch's encoding would hold up.
#[tokio::test]
async fn entries_are_encoded_off_the_callers_thread() {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    static ENCODED_ON: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());

    #[derive(Clone, Debug)]
    struct Watched;
    impl Serialize for Watched {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            ENCODED_ON.lock().unwrap().push(std::thread::current().id());
            s.serialize_u64(7)
        }
    }
    impl<'de> Deserialize<'de> for Watched {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            u64::deserialize(d).map(|_| Watched)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::<Watched>::open(dir.path()).unwrap();
    let entries: Vec<_> = (1..=3)
        .map(|i| Entry::new(LogId::new(1, i), EntryPayload::Command(Watched)))
        .collect();
    s.append(&entries).await.unwrap();
    let on = ENCODED_ON.lock().unwrap().clone();
    assert_eq!(on.len(), 3, "each entry encoded once");
    let caller = std::thread::current().id();
    assert!(
        on.iter().all(|&t| t != caller),
        "encoded on the caller's thread"
    );
}
