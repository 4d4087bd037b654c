//! The address book follows the membership: `RaftNetwork::membership_changed` adds members at the
//! address their membership entry names, drops nodes that are no longer members (closing their
//! connections), reconnects a member that moved, and keeps the configured addresses for members
//! whose entry names none.

mod common;

use common::*;
use raft_core::{Membership, Node as Member, RaftNetwork};
use raft_net_tcp::TcpNetwork;

/// Node 2's network, configured with no peers at all.
fn unconfigured() -> TcpNetwork<u64> {
    TcpNetwork::new(CLUSTER, 2, [], tls(2), test_config()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_reached_at_the_address_its_membership_names() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = unconfigured();
    assert!(assert_unreachable(&vote(&network, 1, 1).await).contains("no address"));

    let membership = Membership::new([1, 2]).with_node(1, Member::new(node.addr().to_string()));
    network.membership_changed(&membership);
    assert_eq!(network.peer_addr(1), Some(node.addr()));
    vote(&network, 1, 1)
        .await
        .expect("reached through the membership's address");
    assert!(network.is_connected(1));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_dropped_and_its_connection_closed() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network = unconfigured();
    let with_1 = Membership::new([1, 2]).with_node(1, Member::new(node.addr().to_string()));
    network.membership_changed(&with_1);
    vote(&network, 1, 1).await.expect("served while a member");

    network.membership_changed(&Membership::new([2]));
    assert_eq!(network.peer_addr(1), None);
    assert!(!network.is_connected(1));
    assert!(assert_unreachable(&vote(&network, 1, 2).await).contains("no address"));

    // Added again (say, as a learner): reachable again.
    let mut back = Membership::new([2]).with_node(1, Member::new(node.addr().to_string()));
    back.learners.insert(1);
    network.membership_changed(&back);
    vote(&network, 1, 3)
        .await
        .expect("served once a member again");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_moved_is_reached_at_its_new_address() {
    init_tracing();
    let first = lone_node(test_config()).await;
    let second = lone_node(test_config()).await;
    let network = unconfigured();
    let at = |addr: std::net::SocketAddr| {
        Membership::new([1, 2]).with_node(1, Member::new(addr.to_string()))
    };
    network.membership_changed(&at(first.addr()));
    vote(&network, 1, 1)
        .await
        .expect("served at the first address");
    network.membership_changed(&at(second.addr()));
    assert_eq!(network.peer_addr(1), Some(second.addr()));
    first.stop().await;
    let (answer, _) = vote_until_ok(&network, 1).await;
    assert_eq!(
        answer.term, 1,
        "the second node answers its first vote request"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_addresses_serve_members_without_one_and_survive_an_empty_membership() {
    init_tracing();
    let node = lone_node(test_config()).await;
    let network =
        TcpNetwork::<u64>::new(CLUSTER, 2, [(1, node.addr())], tls(2), test_config()).unwrap();
    // A node not yet in a cluster knows no membership: the configured peers stay.
    network.membership_changed(&Membership::default());
    assert_eq!(network.peer_addr(1), Some(node.addr()));
    // A membership that names no address for node 1: the configured one is used.
    network.membership_changed(&Membership::new([1, 2]));
    vote(&network, 1, 1)
        .await
        .expect("served at the configured address");
    // One whose address does not parse: the configured one too.
    network
        .membership_changed(&Membership::new([1, 2]).with_node(1, Member::new("not an address")));
    assert_eq!(network.peer_addr(1), Some(node.addr()));
    node.stop().await;
}
