//! `KvClient` sends a `PUT` once more when the connection closes before any answer (a node that was
//! stopping), and never a `DELETE`: a scripted server that hangs up on the first request of each
//! connection it is told to, and answers the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft_kv::client::KvClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves on loopback: the first `hang_ups` connections are closed as soon as a request head has
/// arrived, without an answer; later ones get `200 {}`. Returns the address and the count of
/// request heads received.
async fn scripted(hang_ups: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n < hang_ups {
                    return; // dropped: closed with no answer
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (addr, seen)
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
async fn a_put_is_sent_at_most_twice() {
    let (addr, seen) = scripted(5).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let err = client.put("k", "v").await.expect_err("two hang-ups");
    assert!(err.closed_before_answer(), "{err:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_delete_is_not_sent_again() {
    let (addr, seen) = scripted(1).await;
    let client = KvClient::new(&addr).with_timeout(Duration::from_secs(5));
    let err = client
        .delete("k")
        .await
        .expect_err("one hang-up, no resend");
    assert!(err.closed_before_answer(), "{err:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
