//! The client side against real servers (mutual TLS) and hand-written ones (plaintext, through
//! `Security::Insecure`): pipelining and response matching, timeouts, broken connections, oversized
//! requests, backoff, and reconnecting after a restart.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use raft_core::{
    AppendEntriesRequest, AppendResult, Entry, EntryPayload, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, Membership, NetworkError, RaftNetwork, Request, Response,
    SnapshotMeta, SnapshotResult, VoteResponse,
};
use raft_net_tcp::wire::{self, HelloReply, RequestFrame, ResponseBody, ResponseFrame};
use raft_net_tcp::{Security, TcpConfig, TcpNetwork};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

/// A hand-written node 1: accepts one connection, accepts its handshake, then runs `script`.
async fn fake_server<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(Reader, Writer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = loopback_listener();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(read, wire::codec(1 << 20));
        let mut writer = FramedWrite::new(write, wire::codec(1 << 20));
        let hello = reader.next().await.unwrap().unwrap();
        let hello = wire::decode_hello(&hello).unwrap();
        assert_eq!(
            (hello.cluster_id.as_str(), hello.from, hello.to),
            (CLUSTER, 2, 1)
        );
        let reply = wire::encode_hello_reply(&HelloReply::Accepted { node_id: 1 }).unwrap();
        writer.send(reply).await.unwrap();
        script(reader, writer).await;
    });
    addr
}

async fn read_request(reader: &mut Reader) -> RequestFrame<u64> {
    let bytes = reader.next().await.unwrap().unwrap();
    wire::decode(&bytes).unwrap()
}

/// Node 2's network to the hand-written node 1 at `addr`, which speaks plaintext.
fn client(addr: SocketAddr, config: TcpConfig) -> TcpNetwork<u64> {
    TcpNetwork::new(CLUSTER, 2, [(1, addr)], Security::Insecure, config).unwrap()
}

/// Node 2's network, with node 2's certificate, to a real node 1 at `addr`.
fn tls_client(addr: SocketAddr, config: TcpConfig) -> TcpNetwork<u64> {
    TcpNetwork::new(CLUSTER, 2, [(1, addr)], tls(2), config).unwrap()
}

fn heartbeat(term: u64, prev_index: u64) -> AppendEntriesRequest<u64> {
    AppendEntriesRequest {
        term,
        leader_id: 2,
        prev_log_id: LogId::new(term, prev_index),
        entries: Vec::new(),
        leader_commit: 0,
        round: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_a_real_node_get_their_own_answers() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = tls_client(node.addr(), test_config());
    const TERM: u64 = 5;

    let mut calls = Vec::new();
    for i in 1..=300u64 {
        let network = network.clone();
        calls.push(tokio::spawn(async move {
            if i % 3 == 0 {
                let r = network.vote(1, vote_request(TERM, 3)).await.expect("vote");
                assert_eq!(r.term, TERM, "vote {i}");
            } else {
                // The node's log is empty, so it rejects with the request's own prev index: the
                // answer names the request it answers.
                let r = network
                    .append_entries(1, heartbeat(TERM, i))
                    .await
                    .expect("append");
                assert_eq!(r.term, TERM);
                match r.result {
                    AppendResult::Conflict { rejected_index, .. } => {
                        assert_eq!(rejected_index, i, "answer matched to the wrong request")
                    }
                    other => panic!("request {i}: unexpected {other:?}"),
                }
            }
        }));
    }
    tokio::time::timeout(PATIENCE, async {
        for call in calls {
            call.await.expect("call task");
        }
    })
    .await
    .expect("calls finished in time");
    assert!(network.is_connected(1), "one connection, still up");
    node.stop().await;
}

#[tokio::test]
async fn responses_out_of_order_are_matched_by_id() {
    init_tracing();
    const N: u64 = 64;
    let addr = fake_server(|mut reader, mut writer| async move {
        let mut requests = Vec::new();
        for _ in 0..N {
            requests.push(read_request(&mut reader).await);
        }
        let ids: std::collections::HashSet<_> = requests.iter().map(|r| r.id).collect();
        assert_eq!(ids.len() as u64, N, "request ids are unique");
        // Answer in reverse order, each with its request's term.
        for req in requests.into_iter().rev() {
            let Request::Vote(v) = req.request else {
                panic!("expected votes")
            };
            let body = ResponseBody::Ok(Response::Vote(VoteResponse {
                term: v.term,
                vote_granted: v.term % 2 == 0,
            }));
            let frame = wire::encode(&ResponseFrame { id: req.id, body }).unwrap();
            writer.send(frame).await.unwrap();
        }
        // Keep the connection open until the client is done.
        let _ = reader.next().await;
    })
    .await;
    let network = client(addr, test_config());
    let answers = tokio::time::timeout(
        PATIENCE,
        futures::future::join_all((1..=N).map(|term| network.vote(1, vote_request(term, 2)))),
    )
    .await
    .expect("answers in time");
    for (term, answer) in (1..=N).zip(answers) {
        let answer = answer.expect("answered");
        assert_eq!(answer.term, term);
        assert_eq!(answer.vote_granted, term % 2 == 0);
    }
}

#[tokio::test]
async fn install_snapshot_calls_are_pipelined_and_matched_by_id() {
    init_tracing();
    const N: u64 = 16;
    let addr = fake_server(|mut reader, mut writer| async move {
        let mut requests = Vec::new();
        for _ in 0..N {
            requests.push(read_request(&mut reader).await);
        }
        // Answer in reverse order; each answer names its chunk's offset.
        for req in requests.into_iter().rev() {
            let Request::InstallSnapshot(chunk) = req.request else {
                panic!("expected InstallSnapshot requests")
            };
            assert_eq!(chunk.data, vec![chunk.offset as u8; 1000], "data intact");
            let body = ResponseBody::Ok(Response::InstallSnapshot(InstallSnapshotResponse {
                term: chunk.term,
                result: SnapshotResult::Accepted {
                    snapshot: chunk.meta.last_log_id,
                    offset: chunk.offset,
                    next_offset: chunk.offset + chunk.data.len() as u64,
                },
            }));
            let frame = wire::encode(&ResponseFrame { id: req.id, body }).unwrap();
            writer.send(frame).await.unwrap();
        }
        let _ = reader.next().await;
    })
    .await;
    let network = client(addr, test_config());
    let meta = SnapshotMeta {
        last_log_id: LogId::new(1, 50),
        membership: Membership::new([1, 2]),
    };
    let calls = (0..N).map(|i| {
        network.install_snapshot(
            1,
            InstallSnapshotRequest {
                term: 1,
                leader_id: 2,
                meta: meta.clone(),
                offset: i,
                data: vec![i as u8; 1000],
                done: false,
            },
        )
    });
    let answers = tokio::time::timeout(PATIENCE, futures::future::join_all(calls))
        .await
        .expect("answers in time");
    for (i, answer) in (0..N).zip(answers) {
        let answer = answer.expect("answered");
        assert_eq!(
            answer.result,
            SnapshotResult::Accepted {
                snapshot: meta.last_log_id,
                offset: i,
                next_offset: i + 1000,
            }
        );
    }
}

#[tokio::test]
async fn a_response_of_the_wrong_kind_is_an_invalid_response() {
    init_tracing();
    let addr = fake_server(|mut reader, mut writer| async move {
        let req = read_request(&mut reader).await;
        let body = ResponseBody::Ok(Response::Vote(VoteResponse {
            term: 1,
            vote_granted: true,
        }));
        let frame = wire::encode(&ResponseFrame { id: req.id, body }).unwrap();
        writer.send(frame).await.unwrap();
        let _ = reader.next().await;
    })
    .await;
    let network = client(addr, test_config());
    let result = network
        .install_snapshot(
            1,
            InstallSnapshotRequest {
                term: 1,
                leader_id: 2,
                meta: SnapshotMeta::default(),
                offset: 0,
                data: Vec::new(),
                done: true,
            },
        )
        .await;
    match result {
        Err(NetworkError::InvalidResponse { target: 1, reason }) => {
            assert!(reason.contains("InstallSnapshot"), "{reason}")
        }
        other => panic!("expected InvalidResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unanswered_request_times_out_and_the_connection_stays() {
    init_tracing();
    let addr = fake_server(|mut reader, mut writer| async move {
        let first = read_request(&mut reader).await;
        // Ignore the first request; answer the second, and the late answer to the first after it.
        let second = read_request(&mut reader).await;
        for req in [second, first] {
            let body = ResponseBody::Ok(Response::Vote(VoteResponse {
                term: 42,
                vote_granted: false,
            }));
            let frame = wire::encode(&ResponseFrame { id: req.id, body }).unwrap();
            writer.send(frame).await.unwrap();
        }
        let _ = reader.next().await;
    })
    .await;
    let config = TcpConfig {
        request_timeout: Duration::from_millis(200),
        ..test_config()
    };
    let network = client(addr, config);
    let first = vote(&network, 1, 1).await;
    assert_eq!(first, Err(NetworkError::Timeout { target: 1 }));
    assert!(network.is_connected(1));
    // The late answer to the first request is discarded; the second gets its own.
    let second = vote(&network, 1, 2).await.expect("second answered");
    assert_eq!(second.term, 42);
    assert!(network.is_connected(1));
}

#[tokio::test]
async fn a_connection_breaking_fails_requests_in_flight_at_once() {
    init_tracing();
    let addr = fake_server(|mut reader, writer| async move {
        read_request(&mut reader).await;
        drop((reader, writer)); // the peer "crashes" with the request in flight
    })
    .await;
    let config = TcpConfig {
        request_timeout: Duration::from_secs(30),
        ..test_config()
    };
    let network = client(addr, config);
    let started = tokio::time::Instant::now();
    let reason = assert_unreachable(&vote(&network, 1, 1).await);
    assert!(reason.contains("closed"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once, not on a timeout"
    );
    assert!(!network.is_connected(1));
}

#[tokio::test]
async fn a_server_answering_with_an_undecodable_frame_breaks_only_that_connection() {
    init_tracing();
    let addr = fake_server(|mut reader, mut writer| async move {
        read_request(&mut reader).await;
        writer
            .send(bytes::Bytes::from_static(&[0xc1]))
            .await
            .unwrap();
        let _ = reader.next().await;
    })
    .await;
    let network = client(addr, test_config());
    let reason = assert_unreachable(&vote(&network, 1, 1).await);
    assert!(reason.contains("undecodable"), "{reason}");
}

#[tokio::test]
async fn an_oversized_request_fails_without_breaking_the_connection() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let config = TcpConfig {
        max_frame_length: wire::HANDSHAKE_MAX_FRAME_LENGTH,
        ..test_config()
    };
    let network = tls_client(node.addr(), config);
    vote(&network, 1, 1).await.expect("served");
    let mut big = heartbeat(1, 0);
    big.entries = (1..=10_000)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command(i).into(),
        })
        .collect();
    let result = network.append_entries(1, big).await;
    match result {
        Err(NetworkError::Unreachable { reason, .. }) => {
            assert!(reason.starts_with("request too large"), "{reason}");
            assert!(reason.contains("AppendEntries"), "{reason}");
            assert!(reason.contains("max_frame_length"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(network.is_connected(1));
    vote(&network, 1, 1).await.expect("still served");
    node.stop().await;
}

#[tokio::test]
async fn an_oversized_request_of_any_kind_fails_before_connecting() {
    init_tracing();
    let closed_port = {
        let listener = loopback_listener();
        listener.local_addr().unwrap()
    };
    let config = TcpConfig {
        max_frame_length: wire::HANDSHAKE_MAX_FRAME_LENGTH,
        reconnect_backoff_min: Duration::from_secs(5),
        reconnect_backoff_max: Duration::from_secs(10),
        ..test_config()
    };
    let network = client(closed_port, config);
    let mut big_append = heartbeat(1, 0);
    big_append.entries = (1..=10_000)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command(i).into(),
        })
        .collect();
    let big_chunk = InstallSnapshotRequest {
        term: 1,
        leader_id: 2,
        meta: SnapshotMeta {
            last_log_id: LogId::new(1, 10),
            membership: Membership::new([1, 2]),
        },
        offset: 0,
        data: vec![7; wire::HANDSHAKE_MAX_FRAME_LENGTH],
        done: true,
    };
    let reasons = [
        (
            "AppendEntries",
            network.append_entries(1, big_append).await.map(drop),
        ),
        (
            "InstallSnapshot",
            network.install_snapshot(1, big_chunk).await.map(drop),
        ),
    ];
    for (kind, result) in reasons {
        match result {
            Err(NetworkError::Unreachable { target: 1, reason }) => {
                assert!(reason.starts_with("request too large"), "{reason}");
                assert!(reason.contains(kind), "{reason}");
            }
            other => panic!("{kind}: expected request too large, got {other:?}"),
        }
    }
    // Neither call tried to connect: the first real call does (and fails, nothing listens), rather
    // than being told to wait out a backoff.
    let first = assert_unreachable(&vote(&network, 1, 1).await);
    assert!(first.contains("connecting to"), "{first}");
    assert!(!first.contains("next connection attempt"), "{first}");
}

#[tokio::test]
async fn failed_connections_back_off() {
    init_tracing();
    let closed_port = {
        let listener = loopback_listener();
        listener.local_addr().unwrap()
    };
    let config = TcpConfig {
        reconnect_backoff_min: Duration::from_secs(5),
        reconnect_backoff_max: Duration::from_secs(10),
        ..test_config()
    };
    let network = client(closed_port, config);
    let first = assert_unreachable(&vote(&network, 1, 1).await);
    assert!(first.contains("connecting to"), "{first}");
    let second = assert_unreachable(&vote(&network, 1, 1).await);
    assert!(second.contains("next connection attempt in"), "{second}");
    assert!(
        second.contains("connecting to"),
        "keeps the cause: {second}"
    );
}

#[tokio::test]
async fn unknown_target_is_unreachable() {
    let network = TcpNetwork::<u64>::new(CLUSTER, 2, [], tls(2), test_config()).unwrap();
    let reason = assert_unreachable(&vote(&network, 7, 1).await);
    assert!(reason.contains("no address"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_peer_restarts() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let addr = node.addr();
    let network = tls_client(addr, test_config());
    vote(&network, 1, 1)
        .await
        .expect("served before the restart");
    assert!(network.is_connected(1));

    // Stop the peer: calls fail with Unreachable (never hang, never panic).
    let storage = node.storage.clone();
    node.stop().await;
    for _ in 0..3 {
        assert_unreachable(&vote(&network, 1, 1).await);
    }
    assert!(!network.is_connected(1));

    // Restart it on the same address, from its storage: calls succeed again.
    let node = start_node(
        1,
        bind_reuse(addr).unwrap(),
        Vec::new(),
        storage.open(),
        test_config(),
    )
    .await;
    let (answer, errors) = vote_until_ok(&network, 1).await;
    assert_eq!(answer.term, 1);
    for e in &errors {
        assert!(matches!(e, NetworkError::Unreachable { .. }), "{e:?}");
    }
    assert!(network.is_connected(1));

    // The connection is reused from now on.
    for term in 2..20 {
        assert_eq!(vote(&network, 1, term).await.expect("served").term, term);
    }
    node.stop().await;
}

#[tokio::test]
async fn dropping_the_network_closes_its_connections() {
    init_tracing();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let addr = fake_server(|mut reader, writer| async move {
        let _keep_open = writer;
        let _ = read_request(&mut reader).await;
        // The client never gets an answer; it is dropped instead. The connection must end.
        let end = reader.next().await;
        let _ = closed_tx.send(end.is_none() || matches!(end, Some(Err(_))));
    })
    .await;
    let network = client(addr, test_config());
    let call = tokio::time::timeout(Duration::from_millis(300), vote(&network, 1, 1)).await;
    assert!(
        call.is_err(),
        "the fake server never answers, yet: {call:?}"
    );
    drop(network);
    let closed = tokio::time::timeout(PATIENCE, closed_rx)
        .await
        .expect("connection closed in time")
        .expect("fake server reported");
    assert!(closed);
}

#[tokio::test]
async fn a_stopped_node_behind_a_running_server_is_unreachable() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = tls_client(node.addr(), test_config());
    vote(&network, 1, 1).await.expect("served");
    node.raft.shutdown().await;
    let reason = assert_unreachable(&vote(&network, 1, 2).await);
    assert!(reason.contains("could not answer"), "{reason}");
    assert!(network.is_connected(1), "the connection itself is fine");
    node.server.shutdown().await;
}

#[tokio::test]
async fn disconnect_all_closes_and_the_next_call_reconnects() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = tls_client(node.addr(), test_config());
    vote(&network, 1, 1).await.expect("served");
    assert!(network.is_connected(1));
    network.disconnect_all();
    assert!(!network.is_connected(1));
    vote(&network, 1, 2).await.expect("reconnected at once");
    assert!(network.is_connected(1));
    node.stop().await;
}
