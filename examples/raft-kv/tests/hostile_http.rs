//! Hostile HTTP clients against a live `raft-kv serve` process (a one-node cluster, default
//! limits): headers dribbled a byte at a time, a thousand idle connections, bodies of 100 MiB. Each
//! attack is cut off as `raft_kv::http_limits` says; the node's resident memory (`VmRSS` of
//! `/proc/<pid>/status`), sampled every 20 ms during the attack, stays bounded; and the node serves
//! reads and writes afterwards.
#![cfg(target_os = "linux")]

mod procs;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procs::*;
use raft_kv::http::MAX_BODY_BYTES;
use raft_kv::http_limits::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// The node's header read timeout (the binary runs with the default limits).
fn header_timeout() -> Duration {
    HttpLimits::default().header_read_timeout
}

/// Samples a process's resident memory every 20 ms until stopped.
struct RssWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
    before: usize,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let before = rss_of(pid).expect("the node runs");
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut peak = before;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_of(pid) {
                        peak = peak.max(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            }
        });
        RssWatch { stop, task, before }
    }

    /// Stops sampling; returns (before, peak) in bytes.
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        (self.before, self.task.await.unwrap())
    }
}

/// A one-node cluster, started and leading.
async fn one_node(root: &std::path::Path) -> Procs {
    let mut procs = Procs::cluster(root, 1, &[]);
    procs.start(1);
    wait_for_leader(&procs, 0).await;
    procs
}

/// The node serves a write and a linearizable read through a new connection, and a local read.
async fn assert_serves(procs: &Procs, key: &str) {
    let client = procs.client(1);
    let reply = client.put(key, "after").await.unwrap();
    assert!(
        reply.status.is_success(),
        "{reply:?}\n{}",
        procs.dump_logs()
    );
    assert_eq!(
        client.get(key).await.unwrap().unwrap().as_deref(),
        Some("after")
    );
    assert_eq!(
        client.get_local(key).await.unwrap().unwrap().as_deref(),
        Some("after")
    );
}

/// Reads from `stream` until the server closes it; returns how many bytes it sent.
async fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut buf = [0u8; 1024];
    let mut got = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n,
        }
    }
}

/// Writes and reads through `client` every 100 ms until `stop`; returns how many round trips
/// succeeded, panicking on the first failure.
fn keep_using(mut client: RawHttp, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("/kv/during-{done}");
            let (status, body) = client.request("PUT", &key, b"v").await.unwrap();
            assert_eq!(status, 200, "write during the attack: {body}");
            let (status, body) = client.request("GET", &key, b"").await.unwrap();
            assert_eq!(status, 200, "read during the attack: {body}");
            done += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done
    })
}

const DRIBBLERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_dribbled_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let root = tempfile::tempdir().unwrap();
    let procs = one_node(root.path()).await;
    let addr = procs.nodes[0].http.clone();
    let timeout = header_timeout();
    let test = async {
        let stop = Arc::new(AtomicBool::new(false));
        let user = keep_using(RawHttp::connect(&addr).await.unwrap(), Arc::clone(&stop));
        let rss = RssWatch::start(procs.pid(1));

        // Each sends a request line, then one byte of a header every 100 ms, forever.
        let dribblers: Vec<_> = (0..DRIBBLERS)
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(&addr).await.unwrap();
                    let started = Instant::now();
                    let _ = stream.write_all(b"PUT /kv/slow HTTP/1.1\r\nx-slow: ").await;
                    let mut answered = 0;
                    let mut buf = [0u8; 256];
                    loop {
                        tokio::select! {
                            read = stream.read(&mut buf) => match read {
                                Ok(0) | Err(_) => break,
                                Ok(n) => answered += n,
                            },
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                                if stream.write_all(b"a").await.is_err() {
                                    answered += read_until_closed(&mut stream).await;
                                    break;
                                }
                            }
                        }
                    }
                    (started.elapsed(), answered)
                })
            })
            .collect();

        // While they dribble, a new client is served too.
        tokio::time::sleep(timeout / 2).await;
        assert_serves(&procs, "while-dribbling").await;

        let mut cut_after = Vec::new();
        for d in dribblers {
            let (after, answered) = d.await.unwrap();
            assert_eq!(answered, 0, "a dribbler got an answer");
            cut_after.push(after);
        }
        stop.store(true, Ordering::Relaxed);
        let round_trips = user.await.unwrap();
        let (before, peak) = rss.stop().await;

        cut_after.sort();
        let (first, last) = (cut_after[0], cut_after[DRIBBLERS - 1]);
        assert!(
            first >= timeout - Duration::from_millis(200)
                && last < timeout + Duration::from_secs(3),
            "dribblers were cut between {first:?} and {last:?}, not at the {timeout:?} header \
             timeout"
        );
        assert!(round_trips > 0);
        let growth = peak.saturating_sub(before);
        assert!(
            growth < 16 * MIB,
            "resident memory grew by {} MiB under {DRIBBLERS} dribblers",
            growth / MIB
        );
        assert_serves(&procs, "after-dribbling").await;
        eprintln!(
            "{DRIBBLERS} dribblers cut after {first:?}..{last:?}; {round_trips} round trips \
             meanwhile; RSS {} MiB before, peak +{} KiB",
            before / MIB,
            growth / 1024
        );
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

const IDLE: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_meet_the_cap_and_the_node_still_serves() {
    raise_own_descriptor_limit(IDLE as u64 + 500);
    let root = tempfile::tempdir().unwrap();
    let procs = one_node(root.path()).await;
    let addr = procs.nodes[0].http.clone();
    let limits = HttpLimits::default();
    let test = async {
        // A client connected before the flood: it holds one of the slots.
        let stop = Arc::new(AtomicBool::new(false));
        let user = keep_using(RawHttp::connect(&addr).await.unwrap(), Arc::clone(&stop));
        let rss = RssWatch::start(procs.pid(1));

        // Opened in waves of 100, each connected before the next starts, so that the listen
        // backlog never overflows (a connection the kernel drops from a full backlog is accepted
        // seconds later, which would blur "closed at once"). Each records how long it stayed
        // open after connecting.
        let started = Instant::now();
        let closed = Arc::new(AtomicUsize::new(0));
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE / 100 {
            let mut wave = Vec::with_capacity(100);
            for _ in 0..100 {
                let addr = addr.clone();
                let (connected_tx, connected) = tokio::sync::oneshot::channel();
                let closed = Arc::clone(&closed);
                idle.push(tokio::spawn(async move {
                    let mut stream = TcpStream::connect(&addr).await.unwrap();
                    let connected_at = Instant::now();
                    let _ = connected_tx.send(());
                    let answered = read_until_closed(&mut stream).await;
                    closed.fetch_add(1, Ordering::Relaxed);
                    (connected_at.elapsed(), answered)
                }));
                wave.push(connected);
            }
            for connected in wave {
                connected.await.unwrap();
            }
        }

        // The excess is closed at once: wait for it; then a new connection is closed at once too
        // (the cap is full) while the client connected before is still served.
        let excess = IDLE + 1 - limits.max_connections;
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::Relaxed) < excess {
            assert!(
                Instant::now() < deadline,
                "only {} of the {excess} connections over the cap were closed",
                closed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let excess_closed_by = started.elapsed();
        let mut refused = TcpStream::connect(&addr).await.unwrap();
        let refused_at = Instant::now();
        assert_eq!(read_until_closed(&mut refused).await, 0);
        let refused_in = refused_at.elapsed();

        let mut closed_after = Vec::with_capacity(IDLE);
        for task in idle {
            let (after, answered) = task.await.unwrap();
            assert_eq!(answered, 0, "an idle connection got an answer");
            closed_after.push(after);
        }
        stop.store(true, Ordering::Relaxed);
        let round_trips = user.await.unwrap();
        let (before, peak) = rss.stop().await;

        closed_after.sort();
        let at_once = closed_after
            .iter()
            .filter(|&&t| t < Duration::from_secs(2))
            .count();
        assert_eq!(
            at_once, excess,
            "connections closed at once (the rest must be held until the header timeout): \
             {closed_after:?}"
        );
        let held = &closed_after[excess..];
        let timeout = limits.header_read_timeout;
        assert!(
            held[0] >= timeout - Duration::from_millis(200)
                && held[held.len() - 1] < timeout + Duration::from_secs(5),
            "the connections within the cap were closed between {:?} and {:?}, not at the \
             {timeout:?} header timeout",
            held[0],
            held[held.len() - 1]
        );
        assert!(refused_in < Duration::from_secs(1), "{refused_in:?}");
        assert!(round_trips > 0);
        let growth = peak.saturating_sub(before);
        assert!(
            growth < 16 * MIB,
            "resident memory grew by {} MiB under {IDLE} idle connections",
            growth / MIB
        );
        assert_serves(&procs, "after-idle").await;
        eprintln!(
            "{IDLE} idle connections: {excess} closed at once (all by {excess_closed_by:?}), {} \
             held until {:?}..{:?}; {round_trips} round trips meanwhile; RSS {} MiB before, \
             peak +{} KiB",
            held.len(),
            held[0],
            held[held.len() - 1],
            before / MIB,
            growth / 1024
        );
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}

const HUGE: usize = 100 * MIB;
const HUGE_UPLOADS: usize = 8;

/// What one upload of [`HUGE`] bytes saw: the answer's bytes and how much of the body went out
/// before the server closed the connection.
struct Upload {
    answer: String,
    sent: usize,
}

/// Sends a PUT announcing [`HUGE`] bytes (with `Content-Length`, or chunked without a length) and
/// sends the body as fast as the server takes it, while reading the answer.
async fn upload(addr: String, chunked: bool) -> Upload {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            let head = if chunked {
                "PUT /kv/huge HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_string()
            } else {
                format!("PUT /kv/huge HTTP/1.1\r\nhost: x\r\ncontent-length: {HUGE}\r\n\r\n")
            };
            wr.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; 64 * 1024];
            let chunk_head = format!("{:x}\r\n", block.len());
            while sent.load(Ordering::Relaxed) < HUGE {
                if chunked {
                    wr.write_all(chunk_head.as_bytes()).await?;
                }
                wr.write_all(&block).await?;
                if chunked {
                    wr.write_all(b"\r\n").await?;
                }
                sent.fetch_add(block.len(), Ordering::Relaxed);
            }
            if chunked {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            std::io::Result::Ok(())
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    let _ = writer.await;
    Upload {
        answer: String::from_utf8_lossy(&answer).to_string(),
        sent: sent.load(Ordering::Relaxed),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_100_mib_are_refused_with_413_without_being_buffered() {
    let root = tempfile::tempdir().unwrap();
    let procs = one_node(root.path()).await;
    let addr = procs.nodes[0].http.clone();
    let test = async {
        let stop = Arc::new(AtomicBool::new(false));
        let user = keep_using(RawHttp::connect(&addr).await.unwrap(), Arc::clone(&stop));
        let rss = RssWatch::start(procs.pid(1));
        let started = Instant::now();
        // Half announce their length, half are chunked (read up to the limit, then refused).
        let uploads =
            futures::future::join_all((0..HUGE_UPLOADS).map(|i| upload(addr.clone(), i % 2 == 1)))
                .await;
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let round_trips = user.await.unwrap();
        let (before, peak) = rss.stop().await;

        let mut most_sent = 0;
        for (i, u) in uploads.iter().enumerate() {
            let chunked = i % 2 == 1;
            assert!(
                u.answer.starts_with("HTTP/1.1 413 "),
                "upload {i} (chunked: {chunked}) got {:?} after sending {} MiB",
                u.answer,
                u.sent / MIB
            );
            let body = &u.answer[u.answer.find("\r\n\r\n").expect("a complete head") + 4..];
            let json: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("upload {i}: not JSON ({e}): {body:?}"));
            assert_eq!(json["error"], "payload_too_large", "{json}");
            most_sent = most_sent.max(u.sent);
        }
        // The node read at most the limit of each body: what went out beyond is socket buffers.
        assert!(
            most_sent < 32 * MIB,
            "an upload sent {} MiB before the node closed it",
            most_sent / MIB
        );
        // At most one body's limit each is read (the chunked ones), about 8 MiB in all.
        let growth = peak.saturating_sub(before);
        assert!(
            growth < 32 * MIB,
            "resident memory grew by {} MiB under {HUGE_UPLOADS} uploads of {} MiB",
            growth / MIB,
            HUGE / MIB
        );
        assert!(round_trips > 0);
        assert_serves(&procs, "after-uploads").await;
        eprintln!(
            "{HUGE_UPLOADS} uploads of {} MiB refused in {took:?}, at most {} KiB sent each; \
             limit {} KiB; {round_trips} round trips meanwhile; RSS {} MiB before, peak +{} KiB",
            HUGE / MIB,
            most_sent / 1024,
            MAX_BODY_BYTES / 1024,
            before / MIB,
            growth / 1024
        );
    };
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("the test timed out\n{}", procs.dump_logs());
    }
}
