//! A `raft-kv serve` node whose file descriptor limit (`RLIMIT_NOFILE`, 256) is below the sum of its
//! connection caps (256 on the Raft port, 256 on the HTTP port) is flooded with idle connections,
//! 2,000 on the Raft port and 1,000 on the HTTP port, held open and reopened when the node closes
//! them, while it takes writes that snapshot (and so open files) every 20 entries. It must keep
//! running, every write must commit, and it must serve new clients once the flood ends: connections
//! may be refused, but running out of descriptors must never reach storage.
#![cfg(target_os = "linux")]

mod procs;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procs::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The node's descriptor limit, soft and hard (so it cannot raise it).
const FD_LIMIT: u64 = 256;
const RAFT_FLOOD: usize = 2_000;
const HTTP_FLOOD: usize = 1_000;
/// Writes made while the flood holds the node at its descriptor limit, at least: with a snapshot
/// every 20 entries, several snapshots (each opening files) happen under the flood.
const WRITES: usize = 100;
/// How long the writes go on under the flood, at least: several handshake timeouts (1 s) of the
/// Raft port, so that its connections are cut and reopened while the node writes.
const UNDER_FLOOD: Duration = Duration::from_secs(3);
/// How long a flooding connection waits before reconnecting once the node has closed it: 50 to
/// 500 ms, spread over the connections so that the flood refills the node's free descriptors
/// continuously rather than in waves.
fn reconnect_pause(index: usize) -> Duration {
    Duration::from_millis(50 + 50 * (index % 10) as u64)
}

fn set_descriptor_limit(limit: u64) -> std::io::Result<()> {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs the child with `FD_LIMIT` descriptors at most.
fn limit_descriptors(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only calls setrlimit, which
    // is async-signal-safe, and builds an io::Error from errno on failure.
    unsafe {
        command.pre_exec(|| set_descriptor_limit(FD_LIMIT));
    }
}

/// One flooding connection: connects, holds the connection idle until the node closes it, waits
/// [`reconnect_pause`] and connects again, until `stop`. Counts the connections made.
async fn flood_one(index: usize, addr: String, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await
        {
            opened.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 64];
            // Until the node closes it (or sends anything, which it should not), or the flood ends.
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(reconnect_pause(index)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_out_of_descriptors_refuses_connections_but_never_fails_storage() {
    raise_own_descriptor_limit((RAFT_FLOOD + HTTP_FLOOD + 1_000) as u64);
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::cluster(
        root.path(),
        1,
        &["--snapshot-after", "20", "--snapshot-keep-entries", "5"],
    );
    procs.start_with(1, limit_descriptors);
    let pid = procs.pid(1);
    let (raft_addr, http_addr) = (procs.nodes[0].raft.clone(), procs.nodes[0].http.clone());
    let test = async {
        wait_for_leader(&procs, 0).await;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        assert!(
            line.split_whitespace().nth(3) == Some(&FD_LIMIT.to_string()),
            "{line}"
        );
        let idle_fds = open_fds_of(pid).unwrap();

        // A client that connects before the flood and keeps its connection.
        let mut client = RawHttp::connect(&http_addr).await.unwrap();
        let (status, body) = client.request("PUT", "/kv/before", b"x").await.unwrap();
        assert_eq!(status, 200, "{body}");

        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let flood: Vec<_> = std::iter::repeat_n(&raft_addr, RAFT_FLOOD)
            .chain(std::iter::repeat_n(&http_addr, HTTP_FLOOD))
            .enumerate()
            .map(|(index, addr)| {
                tokio::spawn(flood_one(
                    index,
                    addr.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&opened),
                ))
            })
            .collect();

        // Wait until the flood holds the node near its limit.
        let saturated = FD_LIMIT as usize - raft_net_tcp::descriptors::RESERVED as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut peak_fds = 0;
        loop {
            let fds = open_fds_of(pid).expect("the node is running");
            peak_fds = peak_fds.max(fds);
            if fds >= saturated {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the flood did not bring the node to {saturated} descriptors (at {fds}, {} \
                 connections made)\n{}",
                opened.load(Ordering::Relaxed),
                procs.dump_logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Writes under the flood, through the connection made before it: each must commit.
        let mut during_writes = Vec::with_capacity(WRITES);
        let writes_started = Instant::now();
        let mut i = 0;
        while i < WRITES || writes_started.elapsed() < UNDER_FLOOD {
            let (status, body) = client
                .request(
                    "PUT",
                    &format!("/kv/key-{i:03}"),
                    format!("v{i}").as_bytes(),
                )
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}\n{}", procs.dump_logs()));
            assert_eq!(status, 200, "write {i}: {body}\n{}", procs.dump_logs());
            let fds = open_fds_of(pid).expect("the node is running");
            peak_fds = peak_fds.max(fds);
            during_writes.push(fds);
            i += 1;
        }
        let writes = i;
        during_writes.sort_unstable();
        assert!(
            during_writes[writes / 2] + 8 >= saturated,
            "the flood did not hold the node near its limit during the writes: {during_writes:?}"
        );
        let writes_took = writes_started.elapsed();
        let (status, body) = client.request("GET", "/status", b"").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let during: raft_kv::http::StatusBody = serde_json::from_str(&body).unwrap();
        assert_eq!(during.status, "running");
        assert!(
            during.snapshot_index >= writes as u64 / 2,
            "the node took no snapshot under the flood: {during:?}"
        );

        stop.store(true, Ordering::Relaxed);
        for task in flood {
            task.await.unwrap();
        }
        assert!(procs.is_alive(1), "the node exited\n{}", procs.dump_logs());
        assert!(
            peak_fds < FD_LIMIT as usize,
            "the node reached its descriptor limit ({peak_fds} open)"
        );

        // New clients are served again once the flood is gone (the HTTP connections it held are
        // closed as their clients leave).
        let fresh = procs.client(1);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match fresh.put("after", "y").await {
                Ok(reply) if reply.status.is_success() => break,
                other => assert!(
                    Instant::now() < deadline,
                    "a new client is not served after the flood: {other:?}\n{}",
                    procs.dump_logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in (0..writes).step_by(writes / 20) {
            assert_eq!(
                fresh.get(&format!("key-{i:03}")).await.unwrap().unwrap(),
                Some(format!("v{i}"))
            );
        }
        assert!(procs.is_alive(1), "the node exited\n{}", procs.dump_logs());
        eprintln!(
            "descriptors: {idle_fds} idle, {peak_fds} at the peak of the flood; during the \
             {writes} writes ({writes_took:?}, snapshot at {}): min {}, median {}, max {}; {} \
             flooding connections made",
            during.snapshot_index,
            during_writes[0],
            during_writes[writes / 2],
            during_writes[writes - 1],
            opened.load(Ordering::Relaxed)
        );
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}
