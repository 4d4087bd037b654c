//! Figure 8 of the Raft paper (§5.4.2), played out on a whole cluster of three nodes with the
//! harness's partitions, crashes and AppendEntries truncation, and judged by the harness's checks.
//!
//! A leader may count replicas to commit only entries of its own term. Here a leader `L` holds an
//! entry `e` of an older term that the node `C` replaced with an entry of a later term in its own log;
//! `L`, elected again, brings `e` to a majority without any entry of its own term, and fails. `C` is
//! then elected (its log is more up to date than the rest of that majority's) and replaces `e`
//! everywhere. That is correct only because `L` did not commit `e`: a leader that had committed it by
//! counting replicas has lost a committed entry, which the harness reports (a committed entry
//! truncated, a leader lacking a committed entry, two entries applied at one index).
//!
//! The steps, for nodes `L`, `C` and `V`:
//! 1. `L` leads term `t1`; everything is committed everywhere.
//! 2. `L` is isolated and takes a write it cannot replicate: `e = (t1, i)`, on `L` only. From here on
//!    every AppendEntries leaves with its entries cut to a shorter prefix, so that no entry travels
//!    with the ones after it.
//! 3. `C` and `V` elect `C` (term `t2`); `C` appends its blank entry `(t2, i)`, which never reaches `V`.
//! 4. `C` is cut off; `L` and `V` elect `L` (its log ends with `e`, `V`'s before it), term `t3`. `L`
//!    sends `V` `[e, blank of t3]`; once it arrives cut to `[e]`, `e` is on a majority (`L`, `V`) and
//!    `L` knows it, while `L`'s blank is on `L` only. `L` must not commit `e`.
//! 5. `L` crashes. Truncation stops and the partition heals: `V` votes for `C` (whose last entry,
//!    `(t2, i)`, is more up to date than `e`), `C` leads term `t4`, replaces `e` on `V` and commits a
//!    new write. `L` restarts and the cluster converges; every final log holds `(t2, i)`.

use std::time::Duration;

use raft_core::{EntryPayload, LogId, NodeId, Term};
use raft_sim::{Cluster, ClusterOptions, OldTermMajority};
use raft_storage_mem::MemStorage;
use tokio::time::{sleep, Instant};

type MemCluster = Cluster<MemStorage<u64>>;

const SEC: Duration = Duration::from_secs(1);

const REPLAY: &str = "cargo test -p lucid-raft-sim --test figure8 -- --nocapture   (seed {seed})";

/// Waits until one of `among` leads a term above `above`, and returns it with its term; fails the
/// test after `timeout`.
async fn leader_among(
    c: &MemCluster,
    among: &[NodeId],
    above: Term,
    timeout: Duration,
) -> (NodeId, Term) {
    let deadline = Instant::now() + timeout;
    loop {
        let found = c
            .leaders()
            .into_iter()
            .find(|&(id, term)| among.contains(&id) && term > above);
        if let Some(found) = found {
            return found;
        }
        if Instant::now() >= deadline {
            c.fail(&format!(
                "none of {among:?} became leader above term {above} within {timeout:?}"
            ));
        }
        sleep(Duration::from_millis(1)).await;
    }
}

/// The id of the entry at `index` in node `id`'s durable log, if it holds it (not compacted).
fn durable_id(c: &MemCluster, id: NodeId, index: u64) -> Option<LogId> {
    c.durable_log(id)
        .into_iter()
        .find(|e| e.log_id.index == index)
        .map(|e| e.log_id)
}

/// Waits until leader `l` has learned that a majority holds `e` with nothing of its term; fails the
/// test after `timeout`.
async fn majority_holds(c: &MemCluster, l: NodeId, e: LogId, timeout: Duration) -> OldTermMajority {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = c
            .old_term_majorities()
            .into_iter()
            .find(|m| m.leader == l && m.entry == e);
        if let Some(moment) = seen {
            return moment;
        }
        if Instant::now() >= deadline {
            c.fail(&format!(
                "leader {l} never learned that a majority holds {e} without its own entries"
            ));
        }
        sleep(Duration::from_millis(1)).await;
    }
}

async fn figure_8(seed: u64) {
    let c = Cluster::with_options(ClusterOptions::new(3, seed).replay(REPLAY)).await;
    c.initialize().await;

    // 1. L leads; a few writes, committed everywhere.
    let l = c.wait_for_leader(SEC).await;
    let client = c.client();
    for _ in 0..3 {
        let v = client.next_value();
        if let Err(e) = client.write(v).await {
            c.fail(&format!("write of {v} failed: {e}"));
        }
    }
    if let Err(v) = c.wait_converged(5 * SEC).await {
        c.fail(&v.0);
    }
    let t1 = c.metrics(l).map_or(0, |m| m.current_term);
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != l).collect();

    // 2. L, cut off, takes a write: e, on L only. Entries now travel one prefix at a time.
    c.set_append_truncation(1.0);
    c.router().isolate(l);
    let value = client.next_value();
    let write = tokio::spawn({
        let client = client.clone();
        async move { client.write_to(l, value).await }
    });
    let deadline = Instant::now() + SEC;
    let e = loop {
        let held = c
            .durable_log(l)
            .into_iter()
            .find(|e| *e.payload == EntryPayload::Command(value));
        if let Some(entry) = held {
            break entry.log_id;
        }
        if Instant::now() >= deadline {
            c.fail(&format!("leader {l} did not append the write of {value}"));
        }
        sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(e.term, t1, "e is an entry of L's term");

    // 3. C and V elect C; C's blank entry at e's index stays on C.
    let (c_id, t2) = leader_among(&c, &others, t1, 5 * SEC).await;
    let Some(v_id) = others.iter().copied().find(|&id| id != c_id) else {
        c.fail("three nodes, and no third one");
    };
    let blank = LogId::new(t2, e.index);
    let deadline = Instant::now() + SEC;
    while durable_id(&c, c_id, e.index) != Some(blank) {
        if Instant::now() >= deadline {
            c.fail(&format!(
                "leader {c_id} did not append its blank entry {blank}"
            ));
        }
        sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        durable_id(&c, v_id, e.index),
        None,
        "node {v_id} must not hold {c_id}'s blank entry: {}",
        c.describe()
    );

    // 4. C is cut off; L and V elect L, which brings e (and not its own blank) to V.
    c.router().heal(); // isolation is on top of any partition
    c.router().partition(&[&[c_id], &[l, v_id]]);
    let (_, t3) = leader_among(&c, &[l], t2, 5 * SEC).await;
    majority_holds(&c, l, e, 5 * SEC).await;
    assert_eq!(durable_id(&c, v_id, e.index), Some(e), "{}", c.describe());
    // Time enough for a leader that counts replicas of older terms to commit and apply e (and to
    // tell V, with its heartbeats).
    sleep(Duration::from_millis(200)).await;
    c.assert_safe();
    assert!(
        c.durable_log(v_id)
            .iter()
            .all(|entry| entry.log_id.term < t3),
        "node {v_id} must hold nothing of term {t3} yet: {}",
        c.describe()
    );

    // 5. L fails; C, more up to date than V, is elected and replaces e.
    c.crash(l).await;
    c.set_append_truncation(0.0);
    c.router().heal();
    let (leader, _) = leader_among(&c, &[c_id], t3, 10 * SEC).await;
    c.assert_safe(); // a leader lacking a committed entry is reported here
    let v = client.next_value();
    if let Err(err) = client.write(v).await {
        c.fail(&format!("write of {v} through {leader} failed: {err}"));
    }
    c.assert_safe();
    c.restart(l).await;
    c.assert_final(10 * SEC).await;
    let _ = write.await;
    for id in c.ids() {
        assert_eq!(
            durable_id(&c, id, e.index),
            Some(blank),
            "node {id}: the entry at {} is {c_id}'s blank: {}",
            e.index,
            c.describe()
        );
    }
}

/// Figure 8, for a few seeds (the nodes' election timeouts, and so the roles, differ).
#[tokio::test(start_paused = true)]
async fn an_old_term_entry_on_a_majority_is_not_committed_and_is_replaced() {
    for seed in 0..5 {
        figure_8(seed).await;
    }
}
