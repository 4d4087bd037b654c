//! Three `raft-kv serve` processes on loopback (file storage, TCP, HTTP): concurrent writes, the
//! leader killed with SIGKILL and restarted from its data directory, then all three killed and
//! restarted at once. Every acknowledged write must be readable from every node.
//!
//! With snapshots every 50 entries: a follower killed while the others compact their logs past it
//! catches up through InstallSnapshot over TCP, and every node restarts from its snapshot plus the
//! log after it.

mod procs;

use std::process::Child;
use std::time::Duration;

use procs::*;
use raft_kv::http::StatusBody;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_then_everyone_and_lose_no_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    let test = async {
        procs.start_all();
        let (leader, term) = wait_for_leader(&procs, 0).await;
        // Each running node names its process in its data directory.
        for node in &procs.nodes {
            let pid = node.child.as_ref().map(Child::id).expect("running");
            let file = node.dir.join(raft_kv::server::PID_FILE);
            let text = std::fs::read_to_string(&file).expect("the pid file");
            assert_eq!(text.trim(), pid.to_string(), "{}", file.display());
        }

        // Half the keys with everyone up, through every node (followers redirect).
        let all: Vec<u64> = (1..=NODES).collect();
        let mut acked = write_keys(&procs, &all, 0..KEYS / 2).await;
        assert_eq!(acked.len(), KEYS / 2);

        // SIGKILL the leader; the rest elect a new one and keep taking writes.
        procs.kill(leader);
        let (new_leader, _) = wait_for_leader(&procs, term).await;
        assert_ne!(new_leader, leader);
        let rest = procs.running();
        acked.extend(write_keys(&procs, &rest, KEYS / 2..KEYS).await);
        assert_eq!(acked.len(), KEYS);

        // The killed node comes back from its data directory and catches up.
        procs.start(leader);
        check_everywhere(&procs, &acked).await;

        // Kill all three at once, restart them: nothing acknowledged is lost.
        for id in 1..=NODES {
            procs.kill(id);
        }
        procs.start_all();
        check_everywhere(&procs, &acked).await;
    };
    if tokio::time::timeout(Duration::from_secs(100), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

const SNAPSHOT_AFTER: u64 = 50;
const KEEP_ENTRIES: u64 = 10;

/// The index up to which `s`'s log was compacted (entries at or below it are only in its snapshot).
fn purged(s: &StatusBody) -> u64 {
    s.last_log_index.saturating_sub(s.log_entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_the_others_compact_catches_up_by_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let (after, keep) = (SNAPSHOT_AFTER.to_string(), KEEP_ENTRIES.to_string());
    let mut procs = Procs::with_flags(
        root.path(),
        &["--snapshot-after", &after, "--snapshot-keep-entries", &keep],
    );
    let test = async {
        procs.start_all();
        let (leader, _) = wait_for_leader(&procs, 0).await;
        let all: Vec<u64> = (1..=NODES).collect();
        let mut acked = write_keys(&procs, &all, 0..100).await;

        // SIGKILL a follower. It holds no entry past what the survivors hold now.
        let down = all.iter().copied().find(|&id| id != leader).unwrap();
        procs.kill(down);
        let behind = statuses(&procs)
            .await
            .values()
            .map(|s| s.last_log_index)
            .max()
            .unwrap();

        // The others take enough writes to snapshot several times and compact past `behind`.
        let rest = procs.running();
        acked.extend(write_keys(&procs, &rest, 100..400).await);
        assert_eq!(acked.len(), 400);
        wait_for_every_running_node(&procs, &format!("compact past {behind}"), |s| {
            purged(s) > behind
        })
        .await;

        // The killed node restarts: the entries it lacks exist only in the others' snapshots, so it
        // can only catch up through InstallSnapshot.
        procs.start(down);
        check_everywhere(&procs, &acked).await;
        let back = procs.client(down).status().await.unwrap();
        assert!(
            back.snapshot_index > behind,
            "node {down} holds no snapshot past its old log (up to {behind}): {back:?}"
        );

        // Kill all three at once and restart them: each comes back from its snapshot plus the log
        // after it, and nothing acknowledged is lost.
        for id in 1..=NODES {
            procs.kill(id);
        }
        procs.start_all();
        check_everywhere(&procs, &acked).await;
        for (id, s) in statuses(&procs).await {
            assert!(
                s.snapshot_index > behind,
                "node {id} restarted without its snapshot: {s:?}"
            );
            assert!(
                s.log_entries <= SNAPSHOT_AFTER + KEEP_ENTRIES + 50,
                "node {id}'s log is not compacted: {s:?}"
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(100), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}
