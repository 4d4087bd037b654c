//! Whole-cluster membership scenarios on the simulation harness: growing and shrinking the voters,
//! replacing one, removing the leader itself, learners that neither vote nor count, one change at a
//! time, nodes the mock router admits at run time, and changes under a partition that heals. All run
//! on tokio's paused clock (virtual time). Each ends with the membership settled (every member of the
//! final configuration has it in force, committed, and every acknowledged change is committed in
//! order: the liveness check of membership changes), nodes that left retired, and the harness's full
//! check of the Raft properties, durability and linearizability.

use std::collections::BTreeSet;
use std::time::Duration;

use raft_core::{EntryPayload, Membership, MembershipError, NodeId, Role};
use raft_sim::{Cluster, ClusterOptions};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);

/// How long the membership may take to settle once the cluster is whole: a few elections and round
/// trips (virtual time).
const SETTLE: Duration = Duration::from_secs(10);

/// A cluster of `n` nodes with `seed`, initialized, whose failures print the command that reruns
/// `test`.
async fn cluster(n: u64, seed: u64, test: &str) -> MemCluster {
    let opts = ClusterOptions::new(n, seed).replay(format!(
        "cargo test -p lucid-raft-sim --test membership {test} -- --exact --nocapture   (seed {{seed}} is fixed in the test)"
    ));
    let c = Cluster::with_options(opts).await;
    c.initialize().await;
    c
}

fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

/// Writes `count` fresh values through the leader; all must succeed.
async fn write_ok(c: &MemCluster, count: usize) {
    let client = c.client();
    for _ in 0..count {
        let v = client.next_value();
        if let Err(e) = client.write(v).await {
            c.fail(&format!("write of {v} failed: {e}"));
        }
    }
}

/// `result`, or the test fails with the cluster's state.
fn ok(c: &MemCluster, what: &str, result: Result<Membership, MembershipError>) -> Membership {
    result.unwrap_or_else(|e| c.fail(&format!("{what}: {e:?}")))
}

/// Learner `id` caught up, or the test fails.
async fn caught_up(c: &MemCluster, id: NodeId) {
    if let Err(e) = c.wait_caught_up(id, 5 * SEC).await {
        c.fail(&format!("learner {id} did not catch up: {e:?}"));
    }
}

/// The end of every scenario: the membership settles, nodes outside it are retired, the cluster
/// converges and passes every check. Returns the final membership.
async fn settle_and_check(c: &MemCluster) -> Membership {
    let m = c
        .wait_membership_settled(SETTLE)
        .await
        .unwrap_or_else(|v| c.fail(&v.0));
    c.retire_non_members(&m).await;
    c.assert_final(SETTLE).await;
    m
}

/// Whether some durable log of the cluster holds a joint configuration (the changes of voters went
/// through C_old,new).
fn saw_joint(c: &MemCluster) -> bool {
    c.ids().into_iter().any(|id| {
        c.durable_log(id)
            .iter()
            .any(|e| matches!(&*e.payload, EntryPayload::Membership(m) if m.is_joint()))
    })
}

#[tokio::test(start_paused = true)]
async fn grow_from_three_to_five_voters() {
    let c = cluster(3, 101, "grow_from_three_to_five_voters").await;
    c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    for id in [4, 5] {
        let m = ok(&c, "add learner", c.add_learner(id).await);
        assert!(m.is_learner(id) && !m.contains(id), "{m}");
    }
    write_ok(&c, 5).await;
    caught_up(&c, 4).await;
    caught_up(&c, 5).await;
    let m = ok(
        &c,
        "set voters",
        c.change_membership(raft_core::MembershipChange::SetVoters {
            voters: set(&[1, 2, 3, 4, 5]),
        })
        .await,
    );
    assert_eq!(m.voters, set(&[1, 2, 3, 4, 5]));
    assert!(!m.is_joint() && m.learners.is_empty(), "{m}");
    assert!(
        saw_joint(&c),
        "the change of voters went through a joint configuration"
    );
    // Two of the original three down: the new voters make the majority (3 of 5).
    let leader = c.wait_for_leader(SEC).await;
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    for &id in &others {
        c.crash(id).await;
    }
    write_ok(&c, 5).await;
    for &id in &others {
        c.restart(id).await;
    }
    let m = settle_and_check(&c).await;
    assert_eq!(m.voters, set(&[1, 2, 3, 4, 5]));
}

#[tokio::test(start_paused = true)]
async fn shrink_from_five_to_three_voters() {
    let c = cluster(5, 102, "shrink_from_five_to_three_voters").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    let leaving: Vec<NodeId> = (1..=5).filter(|&id| id != leader).take(2).collect();
    for &id in &leaving {
        let m = ok(&c, "remove", c.remove_node(id).await);
        assert!(!m.is_member(id), "{m}");
        c.retire(id).await;
    }
    // Three voters left: one more down still leaves a majority (2 of 3), which the old
    // configuration (2 of 5) would not have had.
    let leader = c.wait_for_leader(SEC).await;
    let stays: Vec<NodeId> = (1..=5)
        .filter(|id| !leaving.contains(id) && *id != leader)
        .collect();
    c.crash(stays[0]).await;
    write_ok(&c, 5).await;
    c.restart(stays[0]).await;
    let m = settle_and_check(&c).await;
    assert_eq!(m.voters.len(), 3, "{m}");
    assert!(leaving.iter().all(|&id| !m.is_member(id)), "{m}");
    assert!(saw_joint(&c));
}

#[tokio::test(start_paused = true)]
async fn replace_a_voter() {
    let c = cluster(3, 103, "replace_a_voter").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 10).await;
    let old = (1..=3).find(|&id| id != leader).unwrap_or(1);
    let m = ok(&c, "replace", c.replace(old, 4, 5 * SEC).await);
    assert!(m.contains(4) && !m.is_member(old), "{m}");
    c.retire(old).await;
    // The new voter counts: with the third original node down, the leader and node 4 commit.
    let leader = c.wait_for_leader(SEC).await;
    let third = (1..=3)
        .find(|&id| id != old && id != leader)
        .unwrap_or(leader);
    if third != leader {
        c.crash(third).await;
        write_ok(&c, 5).await;
        c.restart(third).await;
    }
    let m = settle_and_check(&c).await;
    assert_eq!(m.voters.len(), 3);
    assert!(m.voters.contains(&4));
}

#[tokio::test(start_paused = true)]
async fn removing_the_leader_hands_over_and_the_removed_node_stays_quiet() {
    let c = cluster(
        3,
        104,
        "removing_the_leader_hands_over_and_the_removed_node_stays_quiet",
    )
    .await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    let asked = Instant::now();
    let m = ok(&c, "remove the leader", c.remove_node(leader).await);
    assert!(!m.is_member(leader), "{m}");
    // The leader hands over with TimeoutNow once C_new commits: a new leader well within one
    // election timeout of the answer, no waiting for a timer.
    let answered = Instant::now();
    let new_leader = c.wait_for_leader(SEC).await;
    let took = answered.elapsed();
    assert_ne!(new_leader, leader, "{}", c.describe());
    assert!(
        took < Duration::from_millis(150),
        "a new leader {took:?} after the change (asked {:?} before)",
        answered - asked
    );
    // The removed node, still running, never campaigns again: its term stays still while the
    // cluster works on.
    let removed = c
        .metrics(leader)
        .unwrap_or_else(|| c.fail("the removed node stopped"));
    assert_ne!(removed.role, Role::Leader);
    write_ok(&c, 5).await;
    sleep(10 * SEC).await;
    write_ok(&c, 5).await;
    let later = c
        .metrics(leader)
        .unwrap_or_else(|| c.fail("the removed node stopped"));
    assert_eq!(
        later.current_term,
        removed.current_term,
        "the removed node's term moved: {}",
        c.describe()
    );
    assert_eq!(
        later.elections, removed.elections,
        "the removed node campaigned"
    );
    assert!(
        c.observed_leaders()
            .iter()
            .all(|(&term, leaders)| term <= removed.current_term || !leaders.contains(&leader)),
        "the removed node led again"
    );
    let m = settle_and_check(&c).await;
    assert_eq!(m.voters.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn learners_neither_vote_nor_count() {
    let c = cluster(3, 105, "learners_neither_vote_nor_count").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    for id in [4, 5] {
        ok(&c, "add learner", c.add_learner(id).await);
        caught_up(&c, id).await;
    }
    // The leader with only the learners reachable: nothing commits, and check-quorum (which counts
    // voters only) makes it step down.
    let others: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    c.router().partition(&[&[leader, 4, 5], &others]);
    let before = c
        .metrics(leader)
        .unwrap_or_else(|| c.fail("leader down"))
        .commit_index;
    let client = c.client();
    let stuck = client.write_to(leader, client.next_value()).await;
    assert!(
        stuck.is_err(),
        "a write committed with only learners: {stuck:?}"
    );
    let m = c.metrics(leader).unwrap_or_else(|| c.fail("leader down"));
    assert_eq!(m.commit_index, before, "{}", c.describe());
    assert_ne!(
        m.role,
        Role::Leader,
        "check-quorum counted learners: {}",
        c.describe()
    );
    c.router().heal();
    write_ok(&c, 3).await;
    // Only one voter and the two learners running: nobody can be elected.
    let leader = c.wait_for_leader(SEC).await;
    let down: Vec<NodeId> = (1..=3).filter(|&id| id != leader).take(2).collect();
    let lone: NodeId = (1..=3).find(|id| !down.contains(id)).unwrap_or(leader);
    for &id in &down {
        c.crash(id).await;
    }
    c.crash(lone).await;
    c.restart(lone).await;
    sleep(5 * SEC).await;
    assert_eq!(
        c.leader(),
        None,
        "a leader with learners as its majority: {}",
        c.describe()
    );
    for &id in &down {
        c.restart(id).await;
    }
    write_ok(&c, 3).await;
    // No learner ever voted durably, nor was ever leader.
    for (term, votes) in c.all_durable_votes() {
        for learner in [4, 5] {
            assert!(
                !votes.contains_key(&learner),
                "learner {learner} voted in term {term}"
            );
        }
    }
    assert!(c
        .observed_leaders()
        .values()
        .all(|leaders| !leaders.contains(&4) && !leaders.contains(&5)));
    let m = settle_and_check(&c).await;
    assert_eq!(m.learners, set(&[4, 5]));
}

#[tokio::test(start_paused = true)]
async fn a_change_is_refused_while_another_is_in_progress() {
    let c = cluster(3, 106, "a_change_is_refused_while_another_is_in_progress").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    ok(&c, "add learner", c.add_learner(4).await);
    caught_up(&c, 4).await;
    // The leader and the learner alone: the promotion's joint configuration cannot commit (it needs
    // a majority of the old voters too).
    let others: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    c.router().partition(&[&[leader, 4], &others]);
    let raft = c.raft(leader).unwrap_or_else(|| c.fail("leader down"));
    let (promoted, refused) = tokio::join!(raft.promote(4), async {
        sleep(Duration::from_millis(20)).await;
        let m = c.metrics(leader).unwrap_or_else(|| c.fail("leader down"));
        assert!(
            m.membership.is_joint() && !m.membership_committed(),
            "{}",
            c.describe()
        );
        raft.add_learner(5, raft_core::Node::new("sim-node-5"))
            .await
    });
    assert!(
        matches!(refused, Err(MembershipError::ChangeInProgress)),
        "{refused:?}"
    );
    assert!(
        promoted.is_err(),
        "the joint configuration committed: {promoted:?}"
    );
    c.router().heal();
    // Once the cluster is whole, changes go through again (node 4 may or may not be a voter now).
    let m = ok(&c, "add learner 5", c.add_learner(5).await);
    assert!(m.is_member(5));
    caught_up(&c, 5).await;
    ok(&c, "promote 5", c.promote(5).await);
    let m = settle_and_check(&c).await;
    assert!(m.contains(5), "{m}");
}

#[tokio::test(start_paused = true)]
async fn the_router_admits_a_node_at_run_time() {
    let c = cluster(3, 107, "the_router_admits_a_node_at_run_time").await;
    c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    assert!(c.router().node(4).is_none());
    c.start_new_node(4).await;
    assert!(c.router().node(4).is_some());
    assert!(c.router().node_ids().contains(&4));
    // Empty and not a member: it waits, without campaigning.
    sleep(2 * SEC).await;
    let m = c.metrics(4).unwrap_or_else(|| c.fail("node 4 down"));
    assert_eq!(
        (m.current_term, m.last_log_id.index),
        (0, 0),
        "{}",
        c.describe()
    );
    ok(&c, "add learner", c.add_learner(4).await);
    caught_up(&c, 4).await;
    // An added node crashes and restarts like any other, and catches up again.
    c.crash(4).await;
    assert!(c.router().node(4).is_none());
    write_ok(&c, 5).await;
    c.restart(4).await;
    ok(&c, "promote", c.promote(4).await);
    write_ok(&c, 5).await;
    let leader = c.wait_for_leader(SEC).await;
    let applied = c
        .metrics(leader)
        .unwrap_or_else(|| c.fail("leader down"))
        .last_applied;
    if let Err(v) = c.wait_applied(4, applied, 5 * SEC).await {
        c.fail(&v.0);
    }
    let m = settle_and_check(&c).await;
    assert!(m.contains(4));
    // Retiring a node unregisters it.
    ok(&c, "remove", c.remove_node(4).await);
    c.retire(4).await;
    assert!(c.router().node(4).is_none());
    settle_and_check(&c).await;
}

#[tokio::test(start_paused = true)]
async fn changes_under_a_partition_that_heals() {
    let c = cluster(5, 108, "changes_under_a_partition_that_heals").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 5).await;
    // The leader in the minority: a change it takes cannot commit; the majority elects another
    // leader, which takes changes.
    let mut others: Vec<NodeId> = (1..=5).filter(|&id| id != leader).collect();
    let buddy = others.remove(0);
    let mut majority = others.clone();
    majority.push(6);
    c.router().partition(&[&[leader, buddy], &majority]);
    let stale = c.raft(leader).unwrap_or_else(|| c.fail("leader down"));
    c.start_new_node(6).await;
    let in_minority = stale
        .add_learner(6, raft_core::Node::new("sim-node-6"))
        .await;
    assert!(
        in_minority.is_err(),
        "committed in a minority: {in_minority:?}"
    );
    ok(
        &c,
        "add learner on the majority side",
        c.add_learner(6).await,
    );
    // The new node is on the majority's side; it catches up from the majority's leader.
    caught_up(&c, 6).await;
    ok(&c, "promote", c.promote(6).await);
    let removed = others[0];
    ok(&c, "remove", c.remove_node(removed).await);
    c.router().heal();
    write_ok(&c, 5).await;
    let m = settle_and_check(&c).await;
    assert!(m.contains(6) && !m.is_member(removed), "{m}");
    assert_eq!(m.voters.len(), 5);
}
