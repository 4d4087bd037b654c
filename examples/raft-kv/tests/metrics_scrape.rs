//! `GET /metrics` on three `raft-kv serve` processes under write load, parsed with an OpenMetrics
//! parser (`openmetrics-parser`): every family the README lists is there with its type; after the
//! leader is killed with SIGKILL, the survivors count one more leadership change in a higher term,
//! and on the new leader the dead node's lag grows while writes go on.

mod procs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use procs::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// Every family `/metrics` serves on a node of `raft-kv serve` (once it served an HTTP request),
/// with its type, as the README's table lists them; [`LEADER_FAMILIES`] are on the leader only.
const FAMILIES: &[(&str, OpenMetricsType)] = &[
    ("raft_up", OpenMetricsType::Gauge),
    ("raft_term", OpenMetricsType::Gauge),
    ("raft_role", OpenMetricsType::Gauge),
    ("raft_leader_id", OpenMetricsType::Gauge),
    ("raft_commit_index", OpenMetricsType::Gauge),
    ("raft_applied_index", OpenMetricsType::Gauge),
    ("raft_last_log_index", OpenMetricsType::Gauge),
    ("raft_snapshot_index", OpenMetricsType::Gauge),
    ("raft_log_entries", OpenMetricsType::Gauge),
    ("raft_elections_started", OpenMetricsType::Counter),
    ("raft_pre_votes_lost", OpenMetricsType::Counter),
    ("raft_leader_changes", OpenMetricsType::Counter),
    ("raft_transfers_started", OpenMetricsType::Counter),
    ("raft_transfers_abandoned", OpenMetricsType::Counter),
    ("raft_followers_repaired", OpenMetricsType::Counter),
    ("raft_proposals", OpenMetricsType::Counter),
    ("raft_snapshots_built", OpenMetricsType::Counter),
    ("raft_snapshots_installed", OpenMetricsType::Counter),
    ("raft_peer_connections_refused", OpenMetricsType::Counter),
    (
        "raft_storage_append_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    ("raft_commit_duration_seconds", OpenMetricsType::Histogram),
    ("raft_apply_duration_seconds", OpenMetricsType::Histogram),
    ("raftkv_reads", OpenMetricsType::Counter),
    (
        "raftkv_http_request_duration_seconds",
        OpenMetricsType::Histogram,
    ),
];

/// The families only a leader serves (per follower).
const LEADER_FAMILIES: &[(&str, OpenMetricsType)] = &[
    ("raft_follower_match_index", OpenMetricsType::Gauge),
    ("raft_follower_lag_entries", OpenMetricsType::Gauge),
];

/// `GET /metrics` on `addr` over a plain connection; returns the body, after checking the status
/// and the content type.
async fn scrape_text(addr: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: raft-kv\r\nConnection: close\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("/metrics answered in time")
        .expect("/metrics answered");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_string()
}

/// Scrapes node `id` and parses the answer.
async fn scrape(procs: &Procs, id: u64) -> Exposition {
    let text = scrape_text(&procs.nodes[id as usize - 1].http).await;
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse_openmetrics(&text).unwrap_or_else(|e| panic!("node {id}: {e:?}\n{text}"))
}

/// The value of the sample of `family` whose labels include every pair of `labels` (a counter's
/// total or a gauge's value); `None` if there is none.
fn value(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = exposition.families.get(family)?;
    family.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        let matches = labels
            .iter()
            .all(|(name, v)| set.get_label_value(name) == Some(*v));
        if !matches {
            return None;
        }
        match &sample.value {
            OpenMetricsValue::Gauge(n) => Some(n.as_f64()),
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

/// [`value`] of a family that must be there.
fn must(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    value(exposition, family, labels)
        .unwrap_or_else(|| panic!("no {family} sample with {labels:?}: {exposition:?}"))
}

/// Checks every family of [`FAMILIES`] (and of [`LEADER_FAMILIES`] on the `leader`, none of them
/// elsewhere) is present with its type.
fn assert_families(id: u64, leader: bool, exposition: &Exposition) {
    for (name, _) in LEADER_FAMILIES.iter().filter(|_| !leader) {
        assert!(
            !exposition.families.contains_key(*name),
            "node {id}: {name}"
        );
    }
    let leader_families = LEADER_FAMILIES.iter().filter(|_| leader);
    for (name, kind) in FAMILIES.iter().chain(leader_families) {
        let family = exposition
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("node {id}: no family {name}"));
        assert_eq!(family.family_type, *kind, "node {id}: {name}");
    }
}

/// Writes through the running nodes until `stop`, counting the acknowledged writes.
fn start_writes(
    procs: &Procs,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let clients: Vec<_> = (1..=NODES)
        .map(|id| procs.client(id).with_attempts(1))
        .collect();
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let client = &clients[i as usize % clients.len()];
            let key = format!("load-{}", i % 200);
            match client.put(&key, &i.to_string()).await {
                Ok(reply) if reply.status.is_success() => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                // A dead node, an election under way: the next write goes to another node.
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

/// Scrapes node `id` until `ok` holds of the exposition (up to 20 s); returns it.
async fn scrape_until(
    procs: &Procs,
    id: u64,
    what: &str,
    ok: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = scrape(procs, id).await;
        if ok(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: {what}\n{e:?}\n{}",
            procs.dump_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_its_metrics_and_they_follow_a_failover() {
    let root = tempfile::tempdir().unwrap();
    let mut procs = Procs::new(root.path());
    procs.start_all();
    let (leader, term) = wait_for_leader(&procs, 0).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writes = start_writes(&procs, Arc::clone(&stop), Arc::clone(&acked));

    // Reads in two modes at a follower, so the read counters and the route's histogram move.
    let follower = (1..=NODES).find(|&id| id != leader).expect("a follower");
    let client = procs.client(follower);
    client
        .get("load-1")
        .await
        .expect("a linearizable read")
        .expect("served");
    client
        .get_local("load-1")
        .await
        .expect("a stale read")
        .expect("served");

    let on_leader = scrape_until(&procs, leader, "no writes committed", |e| {
        must(e, "raft_proposals", &[("outcome", "ok")]) >= 20.0
    })
    .await;
    let mut before = HashMap::new();
    for id in 1..=NODES {
        let e = scrape(&procs, id).await;
        assert_families(id, id == leader, &e);
        assert_eq!(must(&e, "raft_up", &[]), 1.0);
        assert_eq!(must(&e, "raft_term", &[]), term as f64, "node {id}");
        assert_eq!(must(&e, "raft_leader_id", &[]), leader as f64, "node {id}");
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(must(&e, "raft_role", &[("role", role)]), 1.0, "node {id}");
        assert!(must(&e, "raft_leader_changes", &[]) >= 1.0, "node {id}");
        // Every node appends and applies; only the leader times commits of its proposals.
        assert!(must(&e, "raft_storage_append_duration_seconds", &[]) > 0.0);
        assert!(must(&e, "raft_apply_duration_seconds", &[]) > 0.0);
        // The HTTP histogram is labelled with route templates, never with raw paths.
        let http = &e.families["raftkv_http_request_duration_seconds"];
        for sample in http.iter_samples() {
            let set = sample.get_labelset().expect("labels");
            let route = set.get_label_value("route").expect("a route label");
            assert!(
                [
                    "/kv/{key}",
                    "/kv/{key}/cas",
                    "/status",
                    "/metrics",
                    "unmatched"
                ]
                .contains(&route)
                    || route.starts_with("/admin/"),
                "node {id}: route label {route:?}"
            );
        }
        assert!(
            value(
                &e,
                "raftkv_http_request_duration_seconds",
                &[("route", "/kv/{key}")]
            )
            .is_some(),
            "node {id}: no /kv/{{key}} requests timed"
        );
        before.insert(id, e);
    }
    // Proposals are timed once committed: some accepted ones may not be yet.
    let committed = must(&on_leader, "raft_commit_duration_seconds", &[]);
    let accepted = must(&on_leader, "raft_proposals", &[("outcome", "ok")]);
    assert!(
        committed >= 1.0 && committed <= accepted,
        "{committed} of {accepted}"
    );
    assert!(
        must(
            &on_leader,
            "raftkv_http_request_duration_seconds",
            &[("route", "/kv/{key}"), ("method", "PUT"), ("status", "200"),]
        ) >= 1.0
    );
    let reads = &before[&follower];
    assert!(must(reads, "raftkv_reads", &[("mode", "linearizable")]) >= 1.0);
    assert!(must(reads, "raftkv_reads", &[("mode", "stale")]) >= 1.0);
    for id in (1..=NODES).filter(|&id| id != leader) {
        let peer = id.to_string();
        assert!(value(&on_leader, "raft_follower_match_index", &[("peer", &peer)]).is_some());
    }

    // SIGKILL the leader; the survivors elect another while the writes go on.
    procs.kill(leader);
    let (new_leader, new_term) = wait_for_leader(&procs, term).await;
    let dead = leader.to_string();
    for id in procs.running() {
        let e = scrape_until(&procs, id, "did not learn of the new leader", |e| {
            must(e, "raft_leader_id", &[]) == new_leader as f64
        })
        .await;
        assert!(must(&e, "raft_term", &[]) >= new_term as f64, "node {id}");
        let changes = must(&e, "raft_leader_changes", &[]);
        let changes_before = must(&before[&id], "raft_leader_changes", &[]);
        assert!(
            changes > changes_before,
            "node {id}: leader changes {changes_before} -> {changes}"
        );
    }
    let first = scrape_until(&procs, new_leader, "no lag for the dead node", |e| {
        value(e, "raft_follower_lag_entries", &[("peer", &dead)]).is_some_and(|lag| lag > 0.0)
    })
    .await;
    let lag = must(&first, "raft_follower_lag_entries", &[("peer", &dead)]);
    let ok = must(&first, "raft_proposals", &[("outcome", "ok")]);
    let second = scrape_until(
        &procs,
        new_leader,
        "the dead node's lag did not grow",
        |e| must(e, "raft_follower_lag_entries", &[("peer", &dead)]) > lag,
    )
    .await;
    assert!(must(&second, "raft_proposals", &[("outcome", "ok")]) > ok);
    assert_eq!(must(&second, "raft_role", &[("role", "leader")]), 1.0);

    stop.store(true, Ordering::Relaxed);
    writes.await.expect("the writer");
    assert!(acked.load(Ordering::Relaxed) > 0);
}
