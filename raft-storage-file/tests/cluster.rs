//! A whole cluster on `FileStorage` (fsync on) and the mock network, with the simulation harness of
//! `raft-sim`: every node is killed and reopened from its directory several times while a client
//! writes, and all of them at once too. The harness checks, at every restart, that the reopened
//! storage holds exactly what it had acknowledged, and at the end that no acknowledged write is lost,
//! the five Raft properties, and linearizability.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_sim::{Cluster, ClusterOptions, Outcome};
use raft_storage_file::{FileStorage, Options};
use tokio::time::sleep;

mod common;

const SEC: Duration = Duration::from_secs(1);

/// Makes the storage directory `dir` as a crash during an append leaves it, at the end of the last
/// segment, and leaves no record of a clean shutdown (the harness's simulated crash shuts the node
/// down, which closes its storage cleanly; a real crash records nothing).
///
/// With `may_hold_entries`: the first bytes of a batch header over the end mark, then zeros (the
/// free space of the preallocated segment, or zeros where the file grew): the open cuts them and
/// reports that they may have held entries, so the node does not vote until it has caught up with
/// a leader. Without: the end mark written only in part (the batch before it complete), as an
/// append whose last sector did not reach the disk leaves it: cut, and reported as holding none.
fn torn_write(dir: &Path, salt: u8, may_hold_entries: bool) {
    let clean = dir.join("clean");
    if clean.exists() {
        std::fs::remove_file(clean).unwrap();
    }
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    if let Some(last) = segments.last() {
        let end = common::batches_end(last);
        if may_hold_entries {
            let mut junk = vec![b'r', b'B', b'A', b'T', 0xde, 0xad, 0xbe, salt];
            junk.extend_from_slice(&[0; common::END_MARK as usize - 8 + 40]);
            common::write_at(last, end, &junk);
        } else {
            let half = common::END_MARK / 2;
            common::write_at(last, end + half, &vec![0; half as usize]);
        }
    }
}

/// Starts a cluster whose node `id` opens, and at every restart reopens, `FileStorage` with `storage`
/// in `paths[id - 1]`; initializes it and waits for a leader.
async fn start_on(
    paths: &[PathBuf],
    opts: ClusterOptions,
    storage: Options,
) -> Cluster<FileStorage<u64>> {
    let paths = paths.to_vec();
    let c = Cluster::start_with(opts, move |id| {
        let dir = &paths[(id - 1) as usize];
        FileStorage::<u64>::open_with(dir, storage.clone())
            .unwrap_or_else(|e| panic!("node {id} could not reopen {}: {e}", dir.display()))
    })
    .await;
    c.initialize().await;
    c.wait_for_leader(SEC).await;
    c
}

#[tokio::test(start_paused = true)]
async fn no_acknowledged_write_is_lost_when_nodes_restart_from_their_directories() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    // Snapshots every 200 applied entries, 50 kept: restarts come back from a snapshot plus the log
    // after it, and followers that fell behind get snapshots, all on FileStorage.
    let config = raft_core::Config {
        snapshot_policy: raft_core::SnapshotPolicy::AfterAppliedEntries(200),
        snapshot_keep_entries: 50,
        snapshot_chunk_size: 64,
        ..raft_core::Config::default()
    };
    // The seed of CI's run; `SEED=n` runs another (the cluster's faults and timings follow it; the
    // storage's threads run in real time, so a replay repeats the faults, not every interleaving).
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xF11E);
    let opts = ClusterOptions::new(3, seed).config(config).replay(
        "SEED={seed} cargo test -p lucid-raft-storage-file --test cluster no_acknowledged -- --nocapture",
    );
    // Small segments, so the logs span many files.
    let storage = Options::default().segment_size(2048);
    let c = start_on(&paths, opts, storage).await;

    let client = c.client();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = client.write(client.next_value()).await;
                // Pace the client: a write takes no virtual time without network delays.
                sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for round in 0..3 {
        for id in c.ids() {
            sleep(Duration::from_millis(150 + 50 * round)).await;
            c.crash(id).await;
            sleep(Duration::from_millis(300)).await;
            c.assert_safe();
            c.restart(id).await;
        }
        // Everyone at once, with writes in flight.
        sleep(Duration::from_millis(200)).await;
        c.crash_all().await;
        // The crash also tore a write no one had acknowledged: junk after each node's last record.
        // On one node the torn bytes may have held entries, which its storage reports: that node
        // does not vote until it has caught up. (On a majority at once, no leader could be elected:
        // a node catching up helps elect no one.)
        for (i, dir) in paths.iter().enumerate() {
            torn_write(dir, round as u8, i == round as usize % paths.len());
        }
        sleep(Duration::from_millis(100)).await;
        c.restart_all().await;
        c.wait_for_leader(3 * SEC).await;
    }
    sleep(SEC).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    c.assert_final(10 * SEC).await;

    let acked = c
        .history()
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Acked(_)))
        .count();
    eprintln!("{acked} writes acknowledged; {} crashes", c.stats().crashes);
    assert!(acked > 50, "only {acked} writes acknowledged");
    assert_eq!(c.stats().crashes, 18);
    let installed: u64 = c
        .ids()
        .iter()
        .map(|&id| c.snapshot_traffic(id).installed)
        .sum();
    eprintln!("{installed} snapshots installed from a leader");
    for id in c.ids() {
        let snapshot = c.metrics(id).map_or(0, |m| m.snapshot.index);
        assert!(
            snapshot > 0,
            "node {id} snapshotted and restarted from its snapshot"
        );
    }
    for d in &dirs {
        let segments = std::fs::read_dir(d.path().join("log")).unwrap().count();
        assert!(segments > 1, "the log spans several segments");
    }
    c.shutdown().await;
}

/// The bytes of every file under `dir`, recursively. The nodes keep running meanwhile (their storage
/// works on the blocking pool, in real time), so a file listed can be gone (a temporary file renamed,
/// a purged segment unlinked) when it is measured: it counts as nothing.
fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            match e.metadata() {
                Ok(meta) if meta.is_dir() => disk_usage(&e.path()),
                Ok(meta) => meta.len(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
                Err(err) => panic!("measuring {}: {err}", e.path().display()),
            }
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn long_run_of_100000_writes_keeps_the_directory_bounded() {
    use raft_core::{Config, SnapshotPolicy};
    const THRESHOLD: u64 = 1_000;
    const KEEP: u64 = 100;
    const SEGMENT: u64 = 64 * 1024;
    // Stated bound per node directory: the entries since the last snapshot point and the ones kept
    // before it (at most 2 * THRESHOLD + KEEP, as in raft-sim's long run) take under 100 bytes
    // each on disk, in at most that many bytes of segments plus the two partly purged or partly
    // filled segments at the ends; the snapshot and small files are a few hundred bytes. 512 KiB
    // holds all of that with room; without compaction 100,000 entries take megabytes.
    const BOUND: u64 = 512 * 1024;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let config = Config {
        snapshot_policy: SnapshotPolicy::AfterAppliedEntries(THRESHOLD),
        snapshot_keep_entries: KEEP,
        ..Config::default()
    };
    let opts = ClusterOptions::new(3, 0x10_0000).config(config).replay(
        "cargo test -p lucid-raft-storage-file --test cluster long_run -- --nocapture   (seed {seed} is fixed in the test)",
    );
    let storage = Options::default().segment_size(SEGMENT);
    let c = start_on(&paths, opts, storage).await;
    let (mut max_bytes, mut max_resident) = (0u64, 0u64);
    for _ in 0..100 {
        if let Err(v) = c.write_concurrently(1_000, 64).await {
            c.fail(&v.0);
        }
        for (id, path) in c.ids().into_iter().zip(&paths) {
            max_bytes = max_bytes.max(disk_usage(path));
            max_resident = max_resident.max(c.metrics(id).map_or(0, |m| m.log_entries));
        }
        if max_bytes > BOUND {
            c.fail(&format!(
                "a node directory grew to {max_bytes} bytes (bound {BOUND})"
            ));
        }
    }
    eprintln!(
        "long run on FileStorage, 100,000 writes: largest node directory {max_bytes} bytes (bound {BOUND}), \
         at most {max_resident} entries resident in an engine"
    );
    c.assert_final(30 * SEC).await;
    c.shutdown().await;
}
