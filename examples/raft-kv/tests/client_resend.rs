//! `KvClient` sends a write again when the connection closes before any answer (a node that was
//! stopping), `DELETE` and compare-and-swap included, with the same session headers, so the cluster
//! applies it at most once; it sends a write or read again when a node redirects it to a leader
//! that cannot be reached (one that has just stopped); and it gives up after its attempt limit: a
//! scripted server that hangs up on, or redirects, the first requests it is told to, and answers
//! the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_kv::client::{ClientError, KvClient};
use raft_kv::http_read::Consistency;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The `client-id` and `client-seq` header values of each request head received, in order.
type Sessions = Arc<Mutex<Vec<(String, String)>>>;

fn header_of(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// Serves on loopback: the first `hang_ups` connections are closed as soon as a request head has
/// arrived, without an answer; later ones get `200 {}`. Returns the address and the count of
/// request heads received.
async fn scripted(hang_ups: usize) -> (String, Arc<AtomicUsize>) {
    let (addr, seen, _) = scripted_with_sessions(hang_ups).await;
    (addr, seen)
}

/// [`scripted`], also recording each request's session headers.
async fn scripted_with_sessions(hang_ups: usize) -> (String, Arc<AtomicUsize>, Sessions) {
    serve(move |n| {
        if n < hang_ups {
            Answer::HangUp
        } else {
            Answer::Ok
        }
    })
    .await
}

/// What the scripted server does with the request head it received `n`th (from 0).
enum Answer {
    /// Closes the connection without an answer.
    HangUp,
    /// `307` to this URL.
    RedirectTo(String),
    /// `200 {}`.
    Ok,
}

/// Serves on loopback, answering each request as `script` says; returns the address, the count of
/// request heads received and each one's session headers.
async fn serve(
    script: impl Fn(usize) -> Answer + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>, Sessions) {
    let script = Arc::new(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let sessions: Sessions = Arc::default();
    let counter = Arc::clone(&seen);
    let recorded = Arc::clone(&sessions);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            let recorded = Arc::clone(&recorded);
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                recorded.lock().unwrap().push((
                    header_of(&head, "client-id"),
                    header_of(&head, "client-seq"),
                ));
                let answer = match script(counter.fetch_add(1, Ordering::SeqCst)) {
                    Answer::HangUp => return, // dropped: closed with no answer
                    Answer::RedirectTo(url) => format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {url}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    ),
                    Answer::Ok => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_string(),
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, seen, sessions)
}

#[tokio::test]
async fn a_put_whose_connection_closes_before_an_answer_is_sent_once_more() {
    let (addr, seen) = scripted(1).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let reply = client
        .put("k", "v")
        .await
        .expect("answered on the second try");
    assert!(reply.status.is_success(), "{reply:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_write_is_sent_at_most_the_attempt_limit() {
    let (addr, seen) = scripted(10).await;
    let client = KvClient::new(&addr)
        .with_timeout(Duration::from_secs(5))
        .with_attempts(3);
    let err = client.put("k", "v").await.expect_err("three hang-ups");
    assert!(err.closed_before_answer(), "{err:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_delete_and_a_cas_are_sent_again_with_the_same_session_number() {
    let (addr, seen, sessions) = scripted_with_sessions(1).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let reply = client
        .delete("k")
        .await
        .expect("answered on the second try");
    assert!(reply.status.is_success(), "{reply:?}");
    assert_eq!(reply.attempts, 2);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // The next write is the session's next number, whatever the retries before it.
    let (addr2, _, sessions2) = scripted_with_sessions(2).await;
    let client2 = KvClient::new(&addr2).with_timeout(Duration::from_secs(5));
    client2.put("a", "1").await.expect("third try");
    client2.cas("k", Some("x"), "y").await.expect("answered");

    let id = client.client_id().await.to_string();
    assert_eq!(
        *sessions.lock().unwrap(),
        [(id.clone(), "1".to_string()), (id, "1".to_string())]
    );
    let id2 = client2.client_id().await.to_string();
    let seqs: Vec<(String, String)> = sessions2.lock().unwrap().clone();
    assert_eq!(
        seqs,
        [
            (id2.clone(), "1".to_string()),
            (id2.clone(), "1".to_string()),
            (id2.clone(), "1".to_string()),
            (id2, "2".to_string())
        ]
    );
    // A clone is another session.
    assert_ne!(client.clone().client_id().await, client.client_id().await);
}

/// An address nothing listens on: bound, then closed, so connecting is refused.
async fn refusing_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A node that redirects its first `times` requests to a leader that refuses connections, as the
/// other nodes do for a moment after the leader stopped, and answers the later ones.
async fn redirecting_to_a_stopped_leader(times: usize) -> (String, Arc<AtomicUsize>, Sessions) {
    let dead = refusing_address().await;
    serve(move |n| {
        if n < times {
            Answer::RedirectTo(format!("{dead}/kv/k"))
        } else {
            Answer::Ok
        }
    })
    .await
}

#[tokio::test]
async fn a_write_redirected_to_a_stopped_leader_is_sent_again_with_the_same_session_number() {
    let (addr, seen, sessions) = redirecting_to_a_stopped_leader(1).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let reply = client
        .put("k", "v")
        .await
        .expect("answered on the second try");
    assert!(reply.status.is_success(), "{reply:?}");
    assert_eq!(reply.attempts, 2);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    let id = client.client_id().await.to_string();
    assert_eq!(
        *sessions.lock().unwrap(),
        [(id.clone(), "1".to_string()), (id, "1".to_string())]
    );
}

#[tokio::test]
async fn a_read_redirected_to_a_stopped_leader_is_sent_again() {
    let (addr, seen, _) = redirecting_to_a_stopped_leader(2).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let reply = client
        .get_reply("k", Consistency::Linearizable)
        .await
        .expect("answered on the third try");
    assert!(reply.status.is_success(), "{reply:?}");
    assert_eq!(reply.attempts, 3);
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn redirects_to_a_stopped_leader_end_at_the_attempt_limit() {
    let (addr, seen, _) = redirecting_to_a_stopped_leader(usize::MAX).await;
    let client = KvClient::new(&addr)
        .with_timeout(Duration::from_secs(5))
        .with_attempts(2);
    let err = client
        .put("k", "v")
        .await
        .expect_err("the leader stays down");
    assert!(
        matches!(err, ClientError::RedirectUnreachable { .. }) && err.not_sent(),
        "{err:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_clients_own_node_refusing_is_reported_at_once() {
    let client = KvClient::new(&refusing_address().await).with_timeout(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let err = client.put("k", "v").await.expect_err("nothing listens");
    assert!(matches!(err, ClientError::Http { .. }), "{err:?}");
    assert!(!err.not_sent(), "{err:?}");
    // Not sent again: the client's six attempts would pause 50 + 100 + 200 + 400 + 800 ms between
    // them, so a retried call takes over 1.5 s; a refused connection on loopback is answered at once.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the refusal took {:?}: it was retried",
        started.elapsed()
    );
}
