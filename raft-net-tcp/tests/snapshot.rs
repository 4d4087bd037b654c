//! InstallSnapshot over real TCP: a snapshot sent in many chunks through [`TcpNetwork`] and
//! [`TcpServer`](raft_net_tcp::TcpServer) to a node's `Raft` handle is installed (storage and state
//! machine), a malformed chunk is answered `Invalid` on a connection that stays up, and a chunk too
//! large for a frame fails at once on the sending side.

mod common;

use std::time::Duration;

use common::*;
use raft_core::{
    InstallSnapshotRequest, LogId, Membership, NetworkError, RaftNetwork, SnapshotMeta,
    SnapshotResult,
};
use raft_net_tcp::wire::HANDSHAKE_MAX_FRAME_LENGTH;
use raft_net_tcp::{TcpConfig, TcpNetwork};

const LEADER: u64 = 2;
const TERM: u64 = 3;

fn meta(last_log_id: LogId) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id,
        membership: Membership::new([1, 2, 3]),
    }
}

/// Chunk `offset..offset + len` of `data`, as the leader would send it.
fn chunk(meta: &SnapshotMeta, data: &[u8], offset: usize, len: usize) -> InstallSnapshotRequest {
    let end = (offset + len).min(data.len());
    InstallSnapshotRequest {
        term: TERM,
        leader_id: LEADER,
        meta: meta.clone(),
        offset: offset as u64,
        data: data[offset..end].to_vec(),
        done: end == data.len(),
    }
}

async fn install(
    network: &TcpNetwork<u64>,
    request: InstallSnapshotRequest,
) -> Result<raft_core::InstallSnapshotResponse, NetworkError> {
    tokio::time::timeout(PATIENCE, network.install_snapshot(1, request))
        .await
        .expect("an InstallSnapshot call took longer than the test's patience")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_many_chunks_is_installed_through_the_server() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = TcpNetwork::<u64>::new(
        CLUSTER,
        LEADER,
        [(1, node.addr())],
        tls(LEADER),
        test_config(),
    )
    .expect("network");

    let commands: Vec<u64> = (1..=500).map(|i| i * 7).collect();
    let data = encode_applied(&commands); // 4,000 bytes
    let snapshot = LogId::new(2, 600);
    let meta = meta(snapshot);
    const CHUNK: usize = 256;
    let chunks = data.len().div_ceil(CHUNK);
    assert!(chunks > 10, "the test must send many chunks");

    for i in 0..chunks {
        let request = chunk(&meta, &data, i * CHUNK, CHUNK);
        let (offset, len, done) = (request.offset, request.data.len() as u64, request.done);
        let answer = install(&network, request)
            .await
            .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        assert_eq!(answer.term, TERM, "chunk {i}");
        if done {
            assert_eq!(answer.result, SnapshotResult::Installed { snapshot });
        } else {
            assert_eq!(
                answer.result,
                SnapshotResult::Accepted {
                    snapshot,
                    offset,
                    next_offset: offset + len,
                },
                "chunk {i}"
            );
        }
    }

    // Durable in storage, whole; the state machine restored from it; the node follows the sender.
    let stored = node
        .storage
        .state()
        .snapshot
        .expect("the snapshot is stored");
    assert_eq!(stored.meta, meta);
    assert_eq!(stored.data, data, "the chunks were reassembled in order");
    wait_until("the state machine is restored from the snapshot", || {
        node.sm.applied() == commands
    })
    .await;
    wait_until("the metrics report the snapshot", || {
        let m = node.raft.metrics().borrow().clone();
        m.snapshot == snapshot && m.last_applied == snapshot.index
    })
    .await;
    let m = node.raft.metrics().borrow().clone();
    assert_eq!(m.current_term, TERM);
    assert_eq!(m.current_leader, Some(LEADER));
    assert!(
        network.is_connected(1),
        "one connection carried every chunk"
    );
    node.stop().await;
}

#[tokio::test]
async fn an_invalid_chunk_is_answered_invalid_on_a_connection_that_stays_up() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = TcpNetwork::<u64>::new(
        CLUSTER,
        LEADER,
        [(1, node.addr())],
        tls(LEADER),
        test_config(),
    )
    .expect("network");
    // A snapshot ending in a term newer than the leader's own cannot exist.
    let bad = chunk(&meta(LogId::new(TERM + 1, 10)), &[1, 2, 3], 0, 3);
    let answer = install(&network, bad).await.expect("answered");
    assert_eq!(answer.result, SnapshotResult::Invalid);
    assert!(network.is_connected(1));
    assert!(
        node.storage.state().snapshot.is_none(),
        "nothing was changed"
    );
    vote(&network, 1, TERM).await.expect("still served");
    node.stop().await;
}

#[tokio::test]
async fn an_oversized_chunk_fails_at_once_and_nothing_reaches_the_node() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let config = TcpConfig {
        max_frame_length: HANDSHAKE_MAX_FRAME_LENGTH,
        request_timeout: Duration::from_secs(30),
        ..test_config()
    };
    let network = TcpNetwork::<u64>::new(CLUSTER, LEADER, [(1, node.addr())], tls(LEADER), config)
        .expect("network");
    vote(&network, 1, 1).await.expect("served");

    let data = vec![0xa5; HANDSHAKE_MAX_FRAME_LENGTH + 1];
    let started = tokio::time::Instant::now();
    let result = install(
        &network,
        chunk(&meta(LogId::new(2, 9)), &data, 0, data.len()),
    )
    .await;
    match result {
        Err(NetworkError::Unreachable { target, reason }) => {
            assert_eq!(target, 1);
            assert!(reason.starts_with("request too large"), "{reason}");
            assert!(reason.contains("InstallSnapshot"), "{reason}");
            assert!(reason.contains("snapshot_chunk_size"), "{reason}");
        }
        other => panic!("expected Unreachable (request too large), got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at once, not after a timeout"
    );
    assert!(network.is_connected(1), "the connection stays up");
    assert!(node.storage.state().snapshot.is_none());
    assert_eq!(
        node.raft.metrics().borrow().current_term,
        1,
        "the chunk (term {TERM}) never reached the node"
    );
    vote(&network, 1, 1).await.expect("still served");
    node.stop().await;
}
