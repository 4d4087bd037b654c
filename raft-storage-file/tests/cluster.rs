//! A whole cluster on `FileStorage` (fsync on) and the mock network, with the simulation harness of
//! `raft-net-mock`: every node is killed and reopened from its directory several times while a client
//! writes, and all of them at once too. The harness checks, at every restart, that the reopened
//! storage holds exactly what it had acknowledged, and at the end that no acknowledged write is lost,
//! the five Raft properties, and linearizability.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_net_mock::harness::{Cluster, ClusterOptions, Outcome};
use raft_storage_file::{FileStorage, Options};
use tokio::time::sleep;

const SEC: Duration = Duration::from_secs(1);

/// Appends a few bytes of a record that never completed to the last segment in `log_dir`.
fn torn_write(log_dir: &Path, salt: u8) {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    if let Some(last) = segments.last() {
        let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
        // A frame header announcing 200 bytes, then 13 of them.
        let mut junk = vec![200, 0, 0, 0, 0xde, 0xad, 0xbe, salt];
        junk.extend_from_slice(&[salt; 13]);
        f.write_all(&junk).unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn no_acknowledged_write_is_lost_when_nodes_restart_from_their_directories() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let log_dirs: Vec<PathBuf> = paths.iter().map(|p| p.join("log")).collect();
    let opts = ClusterOptions::new(3, 0xF11E).replay(
        "cargo test -p raft-storage-file --test cluster -- --nocapture   (seed {seed} is fixed in the test)",
    );
    // Small segments, so the logs span many files.
    let storage = Options::default().segment_size(2048);
    let c = Cluster::start_with(opts, move |id| {
        let dir = &paths[(id - 1) as usize];
        FileStorage::<u64>::open_with(dir, storage.clone())
            .unwrap_or_else(|e| panic!("node {id} could not reopen {}: {e}", dir.display()))
    })
    .await;
    c.initialize().await;
    c.wait_for_leader(SEC).await;

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
        for dir in &log_dirs {
            torn_write(dir, round as u8);
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
    let log = c.durable_log(c.ids()[0]);
    assert!(
        log.len() > acked,
        "the log holds every acknowledged write ({} entries, {acked} acked)",
        log.len()
    );
    for d in &dirs {
        let segments = std::fs::read_dir(d.path().join("log")).unwrap().count();
        assert!(segments > 1, "the log spans several segments");
    }
    c.shutdown().await;
}
