//! Whole-cluster scenarios of reads without log entries (ReadIndex, leader leases, follower reads)
//! on the mock network, in virtual time: a deposed leader cut off from the cluster serves no read,
//! an expired lease serves no read, a follower read sees every write acknowledged before it, and
//! concurrent reads share a confirmation round. Every scenario ends with the harness's full check,
//! which judges each served read in the linearizability check.

use std::time::Duration;

use raft_core::{Config, NodeId, ReadError, ReadPolicy, Role};
use raft_sim::{Cluster, ClusterOptions, ReadKind, ReadOutcome};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);

/// A cluster of `n` nodes with `seed` and `config`, whose failures print the command that reruns
/// `test`.
async fn cluster(n: u64, seed: u64, config: Config, test: &str) -> MemCluster {
    let opts = ClusterOptions::new(n, seed).config(config).replay(format!(
        "cargo test -p lucid-raft-sim --test reads {test} -- --exact --nocapture   (seed {{seed}} is fixed in the test)"
    ));
    let c = Cluster::with_options(opts).await;
    c.initialize().await;
    c
}

/// Leases on: served for `election_timeout_min - drift` after a confirmed round started.
fn lease_config(drift: Duration) -> Config {
    Config {
        read_policy: ReadPolicy::Lease {
            clock_drift_bound: drift,
        },
        ..Config::default()
    }
}

/// Writes `count` fresh values through the leader; all must succeed. Returns the last index.
async fn write_ok(c: &MemCluster, count: usize) -> u64 {
    let client = c.client();
    let mut last = 0;
    for _ in 0..count {
        let v = client.next_value();
        match client.write(v).await {
            Ok(resp) => last = resp.log_id.index,
            Err(e) => c.fail(&format!("write of {v} failed: {e}")),
        }
    }
    last
}

/// Whether node `id` still says it leads.
fn says_it_leads(c: &MemCluster, id: NodeId) -> bool {
    c.metrics(id).is_some_and(|m| m.role == Role::Leader)
}

/// Waits until a node other than `old` leads (a higher term), and returns it.
async fn wait_new_leader(c: &MemCluster, old: NodeId, timeout: Duration) -> NodeId {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = c.leader().filter(|&l| l != old) {
            return l;
        }
        if Instant::now() >= deadline {
            c.fail(&format!("no new leader within {timeout:?}"));
        }
        sleep(Duration::from_millis(5)).await;
    }
}

/// A leader cut off from the rest keeps believing it leads for a while; a new leader takes writes
/// meanwhile. A ReadIndex read asked of the old leader then is never served (its round finds no
/// majority: it fails once the old leader steps down, or times out), and a read on the new leader
/// sees the new writes.
#[tokio::test(start_paused = true)]
async fn partitioned_old_leader_serves_no_read_index() {
    let c = cluster(
        5,
        11,
        Config::default(),
        "partitioned_old_leader_serves_no_read_index",
    )
    .await;
    let old = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    c.router().isolate(old);
    let new = wait_new_leader(&c, old, 2 * SEC).await;
    let acked = write_ok(&c, 3).await;
    assert!(
        says_it_leads(&c, old),
        "the old leader should not know yet that it was replaced: {}",
        c.describe()
    );
    let client = c.client();
    let on_old = client.read_on(old, ReadKind::Index).await;
    assert!(
        matches!(
            on_old,
            Err(ReadError::LeadershipLost { .. } | ReadError::TimedOut)
        ),
        "a deposed leader answered a read: {on_old:?}"
    );
    let read = client.read_on(new, ReadKind::Index).await;
    match read {
        Ok(v) => assert!(v.seen.index >= acked, "{v:?} misses index {acked}"),
        Err(e) => c.fail(&format!("read on the new leader failed: {e}")),
    }
    let deposed = c
        .read_history()
        .iter()
        .filter(|r| r.on_deposed_leader)
        .count();
    assert_eq!(deposed, 1, "the read on the old leader is counted");
    c.router().heal();
    c.assert_final(10 * SEC).await;
}

/// A leader with a lease serves lease reads at once while the lease holds, even cut off from the
/// rest; once the lease has run out (`election_timeout_min - drift` after its last confirmed round
/// started, which is before the cut) it serves none: they wait for a round no majority answers.
/// The rest elect a leader only after the lease ran out (they refuse votes for a minimum election
/// timeout after they last heard from the old leader).
#[tokio::test(start_paused = true)]
async fn lease_read_is_not_served_once_the_lease_has_expired() {
    let drift = Duration::from_millis(20);
    let config = lease_config(drift);
    let lease = config.election_timeout_min - drift;
    let c = cluster(
        3,
        12,
        config,
        "lease_read_is_not_served_once_the_lease_has_expired",
    )
    .await;
    let old = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    sleep(Duration::from_millis(100)).await; // heartbeats: the lease is fresh
    let client = c.client();
    assert!(client.read_on(old, ReadKind::Lease).await.is_ok());
    let cut = Instant::now();
    c.router().isolate(old);
    // A lease read every 5 ms on the old leader for a second, each in its own task.
    let mut reads = tokio::task::JoinSet::new();
    let mut elected_at = None;
    for _ in 0..200 {
        if elected_at.is_none() && c.leader().is_some_and(|l| l != old) {
            elected_at = Some(Instant::now());
        }
        let client = client.clone();
        reads.spawn(async move {
            let asked = Instant::now();
            let result = client.read_on(old, ReadKind::Lease).await;
            (asked, Instant::now(), result)
        });
        sleep(Duration::from_millis(5)).await;
    }
    let new = wait_new_leader(&c, old, 2 * SEC).await;
    let mut served = 0;
    while let Some(done) = reads.join_next().await {
        let (asked, answered, result) = done.expect("read task");
        if result.is_ok() {
            served += 1;
            assert_eq!(
                asked, answered,
                "a lease read is served at once, without a round"
            );
            assert!(
                answered < cut + lease,
                "lease read served {:?} after the cut, past the lease of {lease:?}",
                answered - cut
            );
        }
    }
    assert!(
        served > 0,
        "the old leader served lease reads while its lease held"
    );
    // The new leader was elected after the lease ran out, and takes writes; its reads see them.
    let elected_at = elected_at.unwrap_or_else(|| c.fail("no new leader while reading"));
    assert!(
        elected_at >= cut + lease,
        "a new leader {:?} after the cut, within the old leader's lease of {lease:?}",
        elected_at - cut
    );
    let acked = write_ok(&c, 2).await;
    match client.read_on(new, ReadKind::Lease).await {
        Ok(v) => assert!(v.seen.index >= acked),
        Err(e) => c.fail(&format!("lease read on the new leader failed: {e}")),
    }
    c.router().heal();
    c.assert_final(10 * SEC).await;
}

/// A follower read sees every write acknowledged before it started, even on a follower that was
/// cut off while those writes committed: it asks the leader for the read index, then waits until
/// it has applied up to it.
#[tokio::test(start_paused = true)]
async fn follower_read_sees_writes_acknowledged_before_it() {
    let c = cluster(
        3,
        13,
        Config::default(),
        "follower_read_sees_writes_acknowledged_before_it",
    )
    .await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 2).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let client = c.client();
    // Up to date: the read sees the writes at once.
    let acked = write_ok(&c, 3).await;
    match client.read_on(follower, ReadKind::Index).await {
        Ok(v) => assert!(v.seen.index >= acked, "{v:?} misses {acked}"),
        Err(e) => c.fail(&format!("follower read failed: {e}")),
    }
    // Behind: cut off while more writes commit (briefly, so it still knows its leader).
    c.router().isolate(follower);
    let acked = write_ok(&c, 5).await;
    c.router().heal();
    let applied = c.metrics(follower).map_or(0, |m| m.last_applied);
    assert!(
        applied < acked,
        "the follower should be behind ({applied} < {acked})"
    );
    let mut seen = None;
    for _ in 0..20 {
        match client.read_on(follower, ReadKind::Index).await {
            Ok(v) => {
                seen = Some(v);
                break;
            }
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
    match seen {
        Some(v) => assert!(v.seen.index >= acked, "{v:?} misses {acked}"),
        None => c.fail("no follower read served after the heal"),
    }
    let reads = c.read_history();
    assert!(reads.iter().all(|r| !r.on_leader));
    assert!(reads
        .iter()
        .any(|r| matches!(r.outcome, ReadOutcome::Served(_))));
    c.assert_final(10 * SEC).await;
}

/// Reads asked together share one confirmation round: 50 concurrent ReadIndex reads on the leader
/// cost about the AppendEntries of one read (one round to each follower), not 50 rounds; 50
/// concurrent follower reads cost one or two `ReadIndex` RPCs (one batch in flight, the rest in the
/// next), not 50.
#[tokio::test(start_paused = true)]
async fn concurrent_reads_share_rounds() {
    const N: usize = 50;
    let c = cluster(5, 14, Config::default(), "concurrent_reads_share_rounds").await;
    let leader = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    let follower = c
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let client = c.client();
    let appends = || -> u64 {
        c.router()
            .target_stats()
            .values()
            .map(|t| t.sent.append_entries)
            .sum()
    };
    // Between heartbeats: no message moves the virtual clock, so nothing else is counted.
    sleep(Duration::from_millis(10)).await;
    c.router().reset_stats();
    assert!(client.read_on(leader, ReadKind::Index).await.is_ok());
    let one = appends();
    assert!(
        one >= 4,
        "one read: a round to each of the 4 followers ({one})"
    );

    let concurrent = |node: NodeId| {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..N {
            let client = client.clone();
            reads.spawn(async move { client.read_on(node, ReadKind::Index).await });
        }
        reads
    };
    sleep(Duration::from_millis(10)).await;
    c.router().reset_stats();
    let mut reads = concurrent(leader);
    while let Some(done) = reads.join_next().await {
        assert!(done.expect("read task").is_ok());
    }
    let many = appends();
    assert!(
        many <= 2 * one,
        "{N} concurrent reads sent {many} AppendEntries, one read {one}"
    );

    sleep(Duration::from_millis(10)).await;
    c.router().reset_stats();
    let mut reads = concurrent(follower);
    while let Some(done) = reads.join_next().await {
        assert!(done.expect("read task").is_ok());
    }
    let forwarded = c.router().stats_for(leader).sent.read_index;
    assert!(
        (1..=2).contains(&forwarded),
        "{N} concurrent follower reads sent {forwarded} ReadIndex RPCs"
    );
    assert!(appends() <= 2 * one, "{}", appends());
    c.assert_final(10 * SEC).await;
}

/// A transfer whose TimeoutNow went out may elect its target at any time after (the target's
/// votes ignore stickiness, and the TimeoutNow or the vote requests may arrive late): the old
/// leader must not serve lease reads afterwards, even once it has abandoned the transfer. Here the
/// target catches up only at the end of the transfer's window, so the TimeoutNow leaves late; the
/// old leader is cut off as the TimeoutNow arrives, the target is elected by the third node, and
/// the old leader abandons the transfer with a round confirmed shortly before: its lease reads must
/// still not be served.
#[tokio::test(start_paused = true)]
async fn no_lease_after_an_abandoned_transfer_whose_timeout_now_left() {
    let config = lease_config(Duration::ZERO);
    let timeout_max = config.election_timeout_max;
    let c = cluster(
        3,
        15,
        config,
        "no_lease_after_an_abandoned_transfer_whose_timeout_now_left",
    )
    .await;
    let old = c.wait_for_leader(SEC).await;
    write_ok(&c, 3).await;
    let mut others = c.ids().into_iter().filter(|&id| id != old);
    let (target, third) = (
        others.next().expect("a target"),
        others.next().expect("a third node"),
    );
    // Every message takes 5 ms, so the old leader can be cut off while the TimeoutNow travels.
    c.router().set_faults(raft_net_mock::Faults {
        delay_ms: (5, 5),
        ..Default::default()
    });
    // The target falls behind, so the TimeoutNow waits for it to catch up.
    c.router().isolate(target);
    write_ok(&c, 3).await;
    let raft = c.raft(old).expect("the leader runs");
    let started = Instant::now();
    tokio::spawn(async move {
        let _ = raft.transfer_leadership(Some(target)).await;
    });
    // The target comes back near the end of the transfer's window.
    sleep(timeout_max - Duration::from_millis(120)).await;
    c.router().heal();
    let delivered = || c.router().stats_for(target).delivered.timeout_now;
    while delivered() == 0 {
        if started.elapsed() > timeout_max {
            c.fail("the TimeoutNow was not delivered within the transfer's window");
        }
        sleep(Duration::from_millis(1)).await;
    }
    c.router().isolate(old);
    let new = wait_new_leader(&c, old, SEC).await;
    assert_eq!(new, target, "{}", c.describe());
    let _ = third;
    let acked = write_ok(&c, 2).await;
    // The old leader abandons the transfer at the end of its window and leads on, cut off.
    let client = c.client();
    let mut reads = tokio::task::JoinSet::new();
    let mut abandoned_and_leading = false;
    for _ in 0..100 {
        abandoned_and_leading |= c
            .metrics(old)
            .is_some_and(|m| m.role == Role::Leader && m.elections.transfers_abandoned > 0);
        if says_it_leads(&c, old) {
            let client = client.clone();
            reads.spawn(async move { client.read_on(old, ReadKind::Lease).await });
        }
        sleep(Duration::from_millis(2)).await;
    }
    while let Some(done) = reads.join_next().await {
        if let Ok(v) = done.expect("read task") {
            assert!(
                v.seen.index >= acked,
                "the old leader served a lease read after its transfer elected {new}: {v:?}, acknowledged \
                 {acked}"
            );
        }
    }
    assert!(
        abandoned_and_leading,
        "the old leader should have abandoned the transfer and led on: {}",
        c.describe()
    );
    c.router().set_faults(raft_net_mock::Faults::default());
    c.router().heal();
    c.assert_final(10 * SEC).await;
}
