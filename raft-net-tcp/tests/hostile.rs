//! Hostile peers against live nodes over mutual TLS: each attack is refused or cut off, and the node
//! (or cluster) goes on serving writes and well-behaved peers afterwards.
//!
//! The memory attack (frames announcing 64 MiB) is in `memory.rs`, alone in its test binary so that
//! no other test's allocations disturb its measurements.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use raft_core::{Config, LogId, NetworkError, RaftNetwork, VoteRequest};
use raft_net_tcp::cert_gen::ClusterCa;
use raft_net_tcp::wire::{self, Hello, HelloReply};
use raft_net_tcp::{Security, TcpConfig, TcpNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Election timeouts long enough that no election happens by chance while a test checks that the
/// term did not move.
fn steady_raft_config() -> Config {
    Config {
        election_timeout_min: Duration::from_millis(1_000),
        election_timeout_max: Duration::from_millis(2_000),
        heartbeat_interval: Duration::from_millis(50),
        ..Config::default()
    }
}

/// A one-node cluster (node 1, initialized, leading) with `config`.
async fn lone_leader(config: TcpConfig) -> Vec<Node> {
    start_cluster(1, config, steady_raft_config()).await
}

/// After an attack: the cluster commits a write, and a well-behaved peer (node 2's certificate) is
/// served by node 1.
async fn assert_still_serving(nodes: &[Node], command: u64) {
    assert_cluster_serves_writes(nodes, command).await;
    let network = network_to(nodes[0].addr(), 2, Security::Tls(tls(2)));
    let (answer, _) = vote_until_ok(&network, 1).await;
    assert!(!answer.vote_granted, "a stale vote request is not granted");
}

fn current_terms(nodes: &[Node]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.raft.metrics().borrow().current_term)
        .collect()
}

/// Asserts that the server at `addr` refuses a TLS client using `config` during the TLS handshake:
/// the handshake fails, or (TLS 1.3: the client finishes its side before the server has checked
/// its certificate) the first read brings the server's alert. No handshake answer ever arrives.
async fn assert_refused_at_tls(addr: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>) {
    let mut stream = match raw_tls_connect(addr, config, 1).await {
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            return;
        }
        Ok(stream) => stream,
    };
    // The handshake may go out before the alert comes back; it must get no answer.
    let _ = stream
        .write_all(&frame(&wire::encode_hello(&good_hello()).unwrap()))
        .await;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the server neither answered nor closed");
    match read {
        Ok(0) => {}
        Ok(n) => panic!("the server answered an unauthenticated client with {n} bytes"),
        Err(e) => assert!(e.to_string().contains("alert"), "unexpected error: {e}"),
    }
}

#[tokio::test]
async fn a_forged_from_is_refused() {
    init_tracing();
    let nodes = lone_leader(test_config()).await;
    let addr = nodes[0].addr();
    let term = current_terms(&nodes);

    // A valid certificate for node 2, used to claim to be node 1 (the leader itself).
    let node_2 = rustls_client(ca(), Some(&node_cert(2)));
    let mut forged = raw_tls_connect(addr, node_2.clone(), 1)
        .await
        .expect("TLS handshake: the certificate itself is valid");
    let hello = Hello {
        from: 1,
        ..good_hello()
    };
    match raw_handshake(&mut forged, &hello).await {
        HelloReply::Refused { reason } => assert!(
            reason.contains("certificate does not name node 1"),
            "{reason}"
        ),
        other => panic!("a forged from was accepted: {other:?}"),
    }
    read_until_closed(&mut forged).await;

    // The same certificate telling the truth is accepted: the refusal was about `from`.
    let mut honest = raw_tls_connect(addr, node_2, 1).await.expect("TLS");
    assert_eq!(
        raw_handshake(&mut honest, &good_hello()).await,
        HelloReply::Accepted { node_id: 1 }
    );
    drop(honest);

    assert_eq!(current_terms(&nodes), term);
    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_wrong_cluster_id_is_refused_without_naming_the_right_one() {
    init_tracing();
    let nodes = lone_leader(test_config()).await;
    let addr = nodes[0].addr();
    let mut stream = raw_tls_connect(addr, rustls_client(ca(), Some(&node_cert(2))), 1)
        .await
        .expect("TLS handshake");
    let hello = Hello {
        cluster_id: "guessed-cluster".into(),
        ..good_hello()
    };
    match raw_handshake(&mut stream, &hello).await {
        HelloReply::Refused { reason } => {
            assert!(reason.contains("cluster id mismatch"), "{reason}");
            assert!(
                !reason.contains(CLUSTER),
                "the refusal names the cluster id: {reason}"
            );
        }
        other => panic!("a wrong cluster id was accepted: {other:?}"),
    }
    read_until_closed(&mut stream).await;
    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    init_tracing();
    let nodes = lone_leader(test_config()).await;
    assert_refused_at_tls(nodes[0].addr(), rustls_client(ca(), None)).await;
    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_client_with_a_certificate_from_another_ca_is_refused() {
    init_tracing();
    let nodes = lone_leader(test_config()).await;
    let addr = nodes[0].addr();
    // Another CA for a cluster of the same name: its node 2 trusts our CA, so only the server's
    // check can refuse it.
    let other = ClusterCa::generate(CLUSTER).expect("other CA");
    let impostor = other.issue(2).expect("impostor certificate");
    assert_refused_at_tls(addr, rustls_client(ca(), Some(&impostor))).await;

    // Through TcpNetwork, trusting only the other CA: our server's certificate is refused too.
    let stranger = TcpNetwork::<u64>::new(
        CLUSTER,
        2,
        [(1, addr)],
        other.tls_config(2).expect("config"),
        test_config(),
    )
    .expect("network");
    let reason = assert_unreachable(&vote(&stranger, 1, 1).await);
    assert!(reason.contains("TLS handshake"), "{reason}");
    assert!(!stranger.is_connected(1));

    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_server_certificate_for_another_node_is_refused_by_the_client() {
    init_tracing();
    let nodes = lone_leader(test_config()).await;
    // The client believes node 3 lives at node 1's address: node 1's certificate does not name
    // node 3, so the client refuses it before sending anything.
    let confused =
        TcpNetwork::<u64>::new(CLUSTER, 2, [(3, nodes[0].addr())], tls(2), test_config())
            .expect("network");
    let result = tokio::time::timeout(PATIENCE, confused.vote(3, vote_request(1, 2)))
        .await
        .expect("bounded");
    match result {
        Err(NetworkError::Unreachable { target: 3, reason }) => {
            assert!(reason.contains("TLS handshake"), "{reason}");
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected the TLS handshake to fail, got {other:?}"),
    }
    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_network_whose_certificate_names_another_node_is_not_built() {
    let err = TcpNetwork::<u64>::new(CLUSTER, 1, [], tls(2), test_config())
        .expect_err("node 2's certificate used for node 1");
    assert!(
        err.to_string().contains("node-1.test-cluster.raft"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once_while_the_cluster_serves() {
    init_tracing();
    const CAP: usize = 50;
    const ATTACKERS: usize = 80;
    let config = TcpConfig {
        max_connections: CAP,
        // Long enough that the held connections stay held while the test looks.
        handshake_timeout: Duration::from_secs(10),
        ..test_config()
    };
    let nodes = start_cluster(3, config, steady_raft_config()).await;
    assert_cluster_serves_writes(&nodes, 1).await;
    let target = nodes[0].addr();

    // Idle connections that never start a handshake.
    let mut attackers = Vec::new();
    for _ in 0..ATTACKERS {
        attackers.push(raw_connect(target).await);
    }
    let outcomes = futures::future::join_all(attackers.iter_mut().map(|stream| async move {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true, // closed at once
            Ok(Ok(n)) => panic!("a stranger got {n} bytes"),
            Err(_) => false, // held open, waiting for a handshake
        }
    }))
    .await;
    let closed = outcomes.iter().filter(|c| **c).count();
    // Node 1 also holds up to two connections of its peers.
    assert!(
        (ATTACKERS - CAP..=ATTACKERS - CAP + 2).contains(&closed),
        "{closed} of {ATTACKERS} connections closed at once with a cap of {CAP}"
    );

    // The cluster keeps committing over its established connections.
    for command in 2..=6 {
        assert_cluster_serves_writes(&nodes, command).await;
    }
    // The attack ends; new connections are served again.
    drop(attackers);
    assert_still_serving(&nodes, 7).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_slow_handshake_is_cut_by_the_handshake_timeout() {
    init_tracing();
    let handshake_timeout = Duration::from_millis(300);
    let config = TcpConfig {
        handshake_timeout,
        ..test_config()
    };
    let nodes = lone_leader(config).await;
    let addr = nodes[0].addr();

    // Silent after connecting.
    let silent = async {
        let started = Instant::now();
        let mut stream = raw_connect(addr).await;
        read_until_closed(&mut stream).await;
        started.elapsed()
    };
    // The first bytes of a TLS record header, then nothing.
    let trickling = async {
        let started = Instant::now();
        let mut stream = raw_connect(addr).await;
        stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        read_until_closed(&mut stream).await;
        started.elapsed()
    };
    let (silent, trickling) = tokio::join!(silent, trickling);
    for (what, after) in [("silent", silent), ("trickling", trickling)] {
        assert!(
            after >= handshake_timeout - Duration::from_millis(50) && after < PATIENCE,
            "{what} client closed after {after:?}"
        );
    }

    // TLS done with a valid certificate, but no protocol handshake.
    let started = Instant::now();
    let mut tls_only = raw_tls_connect(addr, rustls_client(ca(), Some(&node_cert(2))), 1)
        .await
        .expect("TLS handshake");
    read_until_closed(&mut tls_only).await;
    let after = started.elapsed();
    assert!(
        after >= handshake_timeout - Duration::from_millis(50),
        "closed after {after:?}"
    );

    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_stalled_frame_is_cut_by_the_frame_timeout() {
    init_tracing();
    let frame_timeout = Duration::from_millis(300);
    let idle_timeout = Duration::from_secs(30);
    let config = TcpConfig {
        frame_timeout,
        idle_timeout,
        ..test_config()
    };
    let nodes = lone_leader(config).await;
    let mut stream = authenticated(nodes[0].addr(), 2).await;
    let started = Instant::now();
    stream.write_all(&1_000u32.to_be_bytes()).await.unwrap();
    stream.write_all(&[0x82; 10]).await.unwrap();
    stream.flush().await.unwrap();
    read_until_closed(&mut stream).await;
    let after = started.elapsed();
    assert!(
        after >= frame_timeout - Duration::from_millis(50) && after < idle_timeout,
        "closed after {after:?}"
    );
    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_a_client_reconnects_without_an_error() {
    init_tracing();
    let idle_timeout = Duration::from_millis(400);
    let config = TcpConfig {
        idle_timeout,
        ..test_config()
    };
    let nodes = lone_leader(config.clone()).await;
    let addr = nodes[0].addr();

    // A raw authenticated connection that says nothing more is closed by the server.
    let mut stream = authenticated(addr, 2).await;
    let started = Instant::now();
    read_until_closed(&mut stream).await;
    let after = started.elapsed();
    assert!(
        after >= idle_timeout - Duration::from_millis(50),
        "closed after {after:?}"
    );

    // A TcpNetwork closes its unused connection first (at half the idle timeout), and its next
    // call opens a new one: no call fails.
    let network = TcpNetwork::<u64>::new(CLUSTER, 2, [(1, addr)], tls(2), config).unwrap();
    vote(&network, 1, 1).await.expect("served");
    wait_until("the unused connection is closed", || {
        !network.is_connected(1)
    })
    .await;
    tokio::time::sleep(idle_timeout).await;
    vote(&network, 1, 1).await.expect("served after idling");
    assert!(network.is_connected(1));

    assert_still_serving(&nodes, 1).await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_with_the_largest_term_leaves_the_cluster_term_alone() {
    init_tracing();
    let nodes = start_cluster(3, test_config(), steady_raft_config()).await;
    assert_cluster_serves_writes(&nodes, 1).await;
    let before = current_terms(&nodes);

    // Node 2's certificate, so the connections are authenticated; the peers are the other two.
    let peers = [(1, nodes[0].addr()), (3, nodes[2].addr())];
    let attacker = TcpNetwork::<u64>::new(CLUSTER, 2, peers, tls(2), test_config()).unwrap();
    for target in [1, 3] {
        let request = VoteRequest {
            term: u64::MAX,
            candidate_id: 2,
            last_log_id: LogId::new(u64::MAX, u64::MAX),
            leadership_transfer: false,
        };
        let answer = tokio::time::timeout(PATIENCE, attacker.vote(target, request))
            .await
            .expect("bounded")
            .expect("the malformed vote is answered, not a broken connection");
        assert!(!answer.vote_granted, "node {target} granted the vote");
        assert!(
            answer.term < u64::MAX - 2,
            "node {target} answered at term {}",
            answer.term
        );
    }
    assert_eq!(current_terms(&nodes), before, "a term moved");
    assert_cluster_serves_writes(&nodes, 2).await;
    assert_eq!(current_terms(&nodes), before, "a term moved");
    stop_all(nodes).await;
}
