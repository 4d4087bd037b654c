//! Every kind of bad input closes that one connection, and the server goes on serving: both a client
//! connected before the bad input (its connection untouched) and a new one.
//!
//! These tests speak the protocol in plaintext, through `Security::Insecure`, so that they can write
//! any byte where they like: the framing, the handshake and the decoding they exercise are the same
//! inside TLS. `hostile.rs` covers what TLS adds (authentication, identities) and the limits.

mod common;

use std::time::Duration;

use common::*;
use raft_core::{
    InstallSnapshotRequest, LogId, Membership, NetworkError, RaftNetwork, Request, SnapshotMeta,
};
use raft_net_tcp::wire::{self, Hello, HelloReply, RequestFrame, PROTOCOL_VERSION};
use raft_net_tcp::{Security, TcpConfig, TcpNetwork};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MAX_FRAME: usize = 1 << 20;

struct Setup {
    node: Node,
    /// Connected before the bad input; must stay connected and served.
    good: TcpNetwork<u64>,
}

async fn setup() -> Setup {
    init_tracing();
    let config = TcpConfig {
        max_frame_length: MAX_FRAME,
        handshake_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let node = lone_node_insecure(config).await;
    let good = network_to(node.addr(), 2, Security::Insecure);
    vote(&good, 1, 1)
        .await
        .expect("served before the bad input");
    assert!(good.is_connected(1));
    Setup { node, good }
}

impl Setup {
    /// The connection was closed by the server; the server still serves the old and a new client.
    async fn assert_closed_and_serving(self, stream: &mut TcpStream) -> Vec<u8> {
        let received = read_until_closed(stream).await;
        self.assert_serving().await;
        received
    }

    /// The server still serves the old and a new client.
    async fn assert_serving(self) {
        vote(&self.good, 1, 1)
            .await
            .expect("the earlier client is still served");
        assert!(
            self.good.is_connected(1),
            "the earlier client's connection was disturbed"
        );
        assert_serves_with(self.node.addr(), Security::Insecure).await;
        self.node.stop().await;
    }

    async fn handshaken(&self) -> TcpStream {
        let mut stream = raw_connect(self.node.addr()).await;
        assert_eq!(
            raw_handshake(&mut stream, &good_hello()).await,
            HelloReply::Accepted { node_id: 1 }
        );
        stream
    }
}

#[tokio::test]
async fn garbage_before_the_handshake() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    // Read as a length prefix, "GET " announces a frame of over a gigabyte.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: raft\r\n\r\n")
        .await
        .unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    assert!(received.is_empty(), "a stranger gets no answer");
}

#[tokio::test]
async fn frame_without_magic_bytes() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    stream
        .write_all(&frame(b"definitely not a handshake"))
        .await
        .unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    assert!(received.is_empty(), "a stranger gets no answer");
}

#[tokio::test]
async fn closed_connections_are_counted_by_reason() {
    let s = setup().await;
    assert_eq!(s.node.server.refused_counts().get().total(), 0);
    let mut stream = raw_connect(s.node.addr()).await;
    stream
        .write_all(&frame(b"definitely not a handshake"))
        .await
        .unwrap();
    read_until_closed(&mut stream).await;
    let mut stream = s.handshaken().await;
    stream.write_all(&[0xff; 64]).await.unwrap(); // a length prefix far over the limit
    read_until_closed(&mut stream).await;
    // Counted once each connection's task has ended, which may be just after the close is seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let counts = loop {
        let counts = s.node.server.refused_counts().get();
        if counts.total() >= 2 || tokio::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (counts.handshake, counts.frame, counts.total()),
        (1, 1, 2),
        "{counts:?}"
    );
    s.assert_serving().await;
}

#[tokio::test]
async fn garbage_after_the_handshake() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    let garbage: Vec<u8> = (0..256u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    stream.write_all(&garbage).await.unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn length_prefix_over_the_limit() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    stream
        .write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
        .await
        .unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn length_prefix_over_the_handshake_limit() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    // Within max_frame_length, but a stranger may not announce more than the handshake limit.
    stream
        .write_all(&((wire::HANDSHAKE_MAX_FRAME_LENGTH + 1) as u32).to_be_bytes())
        .await
        .unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn truncated_frame_after_the_handshake() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    stream.write_all(&100u32.to_be_bytes()).await.unwrap();
    stream.write_all(&[0x82; 10]).await.unwrap();
    stream.shutdown().await.unwrap(); // closes mid-frame
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn truncated_handshake() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    let hello = wire::encode_hello(&good_hello()).unwrap();
    let framed = frame(&hello);
    stream.write_all(&framed[..framed.len() - 3]).await.unwrap();
    stream.shutdown().await.unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    assert!(received.is_empty());
}

#[tokio::test]
async fn undecodable_payload() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    // 0xc1 is the one byte MessagePack never uses.
    stream.write_all(&frame(&[0xc1, 1, 2, 3])).await.unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn valid_messagepack_of_the_wrong_shape() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    let wrong = wire::encode(&good_hello()).unwrap();
    stream.write_all(&frame(&wrong)).await.unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

/// A request frame as the wire has it, with any request body.
#[derive(Serialize)]
struct AnyFrame<R> {
    id: u64,
    request: R,
}

/// The `InstallSnapshot` variant of a request, with any body.
#[derive(Serialize)]
enum AnyRequest<T> {
    InstallSnapshot(T),
}

fn valid_chunk(data_len: usize) -> RequestFrame<u64> {
    RequestFrame {
        id: 1,
        request: Request::InstallSnapshot(InstallSnapshotRequest {
            term: 1,
            leader_id: 2,
            meta: SnapshotMeta {
                last_log_id: LogId::new(1, 5),
                membership: Membership::new([1, 2]),
            },
            offset: 0,
            data: vec![0xee; data_len],
            done: true,
        }),
    }
}

#[tokio::test]
async fn install_snapshot_with_fields_of_the_wrong_type() {
    #[derive(Serialize)]
    struct Chunk {
        term: u64,
        leader_id: u64,
        meta: &'static str,
        offset: i64,
        data: &'static str,
        done: bool,
    }
    let s = setup().await;
    let mut stream = s.handshaken().await;
    let bad = rmp_serde::to_vec_named(&AnyFrame {
        id: 1,
        request: AnyRequest::InstallSnapshot(Chunk {
            term: 1,
            leader_id: 2,
            meta: "not a snapshot meta",
            offset: -1,
            data: "not bytes",
            done: true,
        }),
    })
    .unwrap();
    stream.write_all(&frame(&bad)).await.unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    assert!(received.is_empty(), "a bad request gets no answer");
}

#[tokio::test]
async fn install_snapshot_with_fields_missing() {
    #[derive(Serialize)]
    struct Chunk {
        term: u64,
        leader_id: u64,
        offset: u64,
    }
    let s = setup().await;
    let mut stream = s.handshaken().await;
    let bad = rmp_serde::to_vec_named(&AnyFrame {
        id: 1,
        request: AnyRequest::InstallSnapshot(Chunk {
            term: 1,
            leader_id: 2,
            offset: 0,
        }),
    })
    .unwrap();
    stream.write_all(&frame(&bad)).await.unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn install_snapshot_whose_data_runs_past_the_frame() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    // A valid chunk cut short: its data announces 4,000 bytes, the frame ends before them.
    let valid = wire::encode(&valid_chunk(4_000)).unwrap();
    stream
        .write_all(&frame(&valid[..valid.len() - 1_000]))
        .await
        .unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn install_snapshot_whose_data_announces_gigabytes() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    // Rewrite the data's bin32 length to 4 GiB - 1: the decoder must not try to reserve it.
    let mut bad = wire::encode(&valid_chunk(70_000)).unwrap().to_vec();
    let at = bad
        .windows(5)
        .position(|w| w == [0xc6, 0x00, 0x01, 0x11, 0x70])
        .expect("the data is a bin32 of 70,000 bytes");
    bad[at + 1..at + 5].copy_from_slice(&u32::MAX.to_be_bytes());
    stream.write_all(&frame(&bad)).await.unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn deeply_nested_payload() {
    let s = setup().await;
    let mut stream = s.handshaken().await;
    // Half a million nested one-element arrays: must not overflow the stack.
    stream
        .write_all(&frame(&vec![0x91; 500_000]))
        .await
        .unwrap();
    s.assert_closed_and_serving(&mut stream).await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    // Sends nothing; the server's handshake_timeout (500 ms) closes it.
    s.assert_closed_and_serving(&mut stream).await;
}

fn refusal_reason(received: &[u8]) -> String {
    assert!(
        received.len() >= 4,
        "expected a refusal frame, got {received:?}"
    );
    let len = u32::from_be_bytes([received[0], received[1], received[2], received[3]]) as usize;
    assert_eq!(received.len(), 4 + len, "expected exactly one frame");
    match wire::decode_hello_reply(&received[4..]).expect("decodable refusal") {
        HelloReply::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_cluster_id_is_refused() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    let hello = Hello {
        cluster_id: "another-cluster".into(),
        ..good_hello()
    };
    stream
        .write_all(&frame(&wire::encode_hello(&hello).unwrap()))
        .await
        .unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    let reason = refusal_reason(&received);
    assert!(reason.contains("cluster id mismatch"), "{reason}");
    assert!(
        !reason.contains(CLUSTER),
        "the refusal names the server's cluster id: {reason}"
    );
}

#[tokio::test]
async fn wrong_cluster_id_is_unreachable_for_the_client() {
    let s = setup().await;
    let stranger = TcpNetwork::<u64>::new(
        "another-cluster",
        2,
        [(1, s.node.addr())],
        Security::Insecure,
        test_config(),
    )
    .unwrap();
    let result = vote(&stranger, 1, 1).await;
    let reason = assert_unreachable(&result);
    assert!(reason.contains("refused"), "{reason}");
    assert!(reason.contains("cluster id mismatch"), "{reason}");
    assert!(!reason.contains(CLUSTER), "{reason}");
    assert!(!stranger.is_connected(1));
    // While backing off, the next call fails at once with the same reason.
    let again = assert_unreachable(&vote(&stranger, 1, 1).await);
    assert!(again.contains("cluster id mismatch"), "{again}");
    s.node.stop().await;
}

#[tokio::test]
async fn wrong_target_id_is_refused() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    let hello = Hello {
        to: 9,
        ..good_hello()
    };
    stream
        .write_all(&frame(&wire::encode_hello(&hello).unwrap()))
        .await
        .unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    let reason = refusal_reason(&received);
    assert!(reason.contains("wrong node"), "{reason}");
}

#[tokio::test]
async fn wrong_target_id_is_unreachable_for_the_client() {
    let s = setup().await;
    // The client believes node 9 lives at node 1's address.
    let confused = TcpNetwork::<u64>::new(
        CLUSTER,
        2,
        [(9, s.node.addr())],
        Security::Insecure,
        test_config(),
    )
    .unwrap();
    let result = confused
        .vote(9, vote_request(1, 2))
        .await
        .map_err(|e| match e {
            NetworkError::Unreachable { target, reason } => {
                assert_eq!(target, 9);
                reason
            }
            other => panic!("expected Unreachable, got {other:?}"),
        });
    let reason = result.expect_err("must be refused");
    assert!(reason.contains("wrong node"), "{reason}");
    s.node.stop().await;
}

#[tokio::test]
async fn unknown_protocol_version_is_refused() {
    let s = setup().await;
    let mut stream = raw_connect(s.node.addr()).await;
    let mut hello = wire::encode_hello(&good_hello()).unwrap().to_vec();
    let version = PROTOCOL_VERSION + 98;
    hello[4..6].copy_from_slice(&version.to_be_bytes());
    stream.write_all(&frame(&hello)).await.unwrap();
    let received = s.assert_closed_and_serving(&mut stream).await;
    let reason = refusal_reason(&received);
    assert!(
        reason.contains(&format!("unsupported protocol version {version}")),
        "{reason}"
    );
}

#[tokio::test]
async fn many_bad_connections_at_once() {
    let s = setup().await;
    let mut streams = Vec::new();
    for i in 0..50u32 {
        let mut stream = raw_connect(s.node.addr()).await;
        stream
            .write_all(&i.wrapping_mul(0x9E37_79B9).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&[0xff; 16]).await.unwrap();
        stream.shutdown().await.unwrap();
        streams.push(stream);
    }
    for stream in &mut streams {
        read_until_closed(stream).await;
    }
    s.assert_serving().await;
}
