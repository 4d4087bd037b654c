//! Twenty authenticated connections each announce a 64 MiB frame and start sending it: the node's
//! memory stays bounded (the frames wait for the server's byte budget, and no buffer is sized from
//! an announced length), the connections are cut by the frame timeout, and the node goes on serving.
//!
//! Alone in its test binary: the node runs in this process, and its resident memory is read from
//! `/proc/self/status` (Linux only), which other tests' allocations would disturb.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::*;
use raft_core::Config;
use raft_net_tcp::{Security, TcpConfig};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;
const CONNECTIONS: usize = 20;
const ANNOUNCED: usize = 64 * MIB;
/// How much of its frame each connection tries to send: 160 MiB in all.
const SENT_PER_CONNECTION: usize = 8 * MIB;

/// The process's resident set size in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_announced_64_mib_frames_leave_memory_bounded() {
    init_tracing();
    let frame_timeout = Duration::from_secs(3);
    let config = TcpConfig {
        max_frame_length: ANNOUNCED,
        max_buffered_bytes: ANNOUNCED,
        frame_timeout,
        ..test_config()
    };
    let nodes = start_cluster(1, config, Config::default()).await;
    assert_cluster_serves_writes(&nodes, 1).await;
    let addr = nodes[0].addr();
    let before = rss();

    let zeros = vec![0u8; 64 * 1024];
    let attacks = (0..CONNECTIONS).map(|_| {
        let zeros = zeros.clone();
        async move {
            let mut stream = authenticated(addr, 2).await;
            let started = Instant::now();
            let sent = async {
                stream.write_all(&(ANNOUNCED as u32).to_be_bytes()).await?;
                let mut sent = 0;
                while sent < SENT_PER_CONNECTION {
                    stream.write_all(&zeros).await?;
                    sent += zeros.len();
                }
                stream.flush().await
            };
            // Writing stops when the server closes the connection (or the test's patience ends).
            let _ = tokio::time::timeout(PATIENCE, sent).await;
            read_until_closed(&mut stream).await;
            started.elapsed()
        }
    });
    let attack = tokio::spawn(futures::future::join_all(attacks));

    let mut peak = before;
    while !attack.is_finished() {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let durations = attack.await.expect("attack task");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 64 * MIB,
        "resident memory grew by {} MiB under {CONNECTIONS} announced {} MiB frames",
        growth / MIB,
        ANNOUNCED / MIB
    );
    for after in durations {
        assert!(
            after >= frame_timeout - Duration::from_millis(100) && after < PATIENCE,
            "a connection was closed after {after:?}"
        );
    }
    eprintln!(
        "resident memory: {} MiB before, peak growth {} MiB",
        before / MIB,
        growth / MIB
    );

    assert_cluster_serves_writes(&nodes, 2).await;
    assert_serves_with(addr, Security::Tls(tls(2))).await;
    stop_all(nodes).await;
}
