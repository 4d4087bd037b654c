//! The node's Prometheus metrics ([`KvMetrics`]): a `prometheus-client` registry that `GET /metrics`
//! ([`crate::http_metrics`]) encodes in the OpenMetrics text format.
//!
//! Two kinds of families:
//!
//! * `raft_*`: read at scrape time from the node's published [`Metrics`] (one clone of it per
//!   scrape) and from the Raft TCP server's [`RefusedCounts`], by a custom collector. raft-core
//!   keeps the raw figures (counters, [`LatencyHistogram`]s); they are encoded as they are, never
//!   accumulated a second time here.
//! * `raftkv_*`: counted by this crate as requests are served: reads by consistency mode, and the
//!   HTTP request latency by route template, method and status.
//!
//! The histograms carry their unit in their names (`_seconds`) without an OpenMetrics `# UNIT` line:
//! Prometheus ignores it, and some parsers refuse it on histograms.
//!
//! Every label takes values from a fixed set (roles, outcomes, modes, reasons, route templates,
//! methods, status codes) or the cluster's node ids (`peer`), so a scrape's size is bounded by the
//! cluster's size. The README lists every family.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use raft_core::{LatencyHistogram, Metrics, NodeStatus, Role, LATENCY_BOUNDS_US};
use raft_net_tcp::RefusedCounts;
use tokio::sync::watch;

use crate::cluster::KvRaft;
use crate::http_read::Consistency;

/// The content type of [`KvMetrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP request latency buckets, in seconds: 100 µs to 10 s (a write waits at most the write
/// timeout, 10 s by default).
const HTTP_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Labels of `raftkv_reads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    mode: &'static str,
}

/// Labels of `raftkv_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    /// The matched route template (`/kv/{key}`), or `unmatched`.
    pub(crate) route: String,
    /// `GET`, `PUT`, `POST`, `DELETE`, `HEAD`, or `other`.
    pub(crate) method: &'static str,
    /// The response's status code.
    pub(crate) status: u16,
}

type HttpFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS_SECONDS)
}

/// The metrics of one node (see the [module docs](self)). Cloning shares them.
#[derive(Clone)]
pub struct KvMetrics {
    registry: Arc<Registry>,
    reads: Family<ReadLabels, Counter>,
    http: HttpFamily,
}

impl std::fmt::Debug for KvMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvMetrics").finish_non_exhaustive()
    }
}

impl KvMetrics {
    /// The metrics of node `raft`, with the connections its Raft TCP server refused if it has one
    /// (`refused`; the in-process [`Cluster`](crate::Cluster) has none).
    pub fn new(raft: &KvRaft, refused: Option<RefusedCounts>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RaftCollector {
            metrics: raft.metrics(),
            refused,
        }));
        let reads = Family::<ReadLabels, Counter>::default();
        registry.register(
            "raftkv_reads",
            "Reads served (answered 200 or 404), by consistency mode: linearizable (ReadIndex), \
             lease, stale (this node's copy), log (an entry through the log)",
            reads.clone(),
        );
        let http: HttpFamily = Family::new_with_constructor(http_histogram);
        registry.register(
            "raftkv_http_request_duration_seconds",
            "HTTP requests to the client API, by route template, method and status code, from the \
             request reaching the router to its response's head",
            http.clone(),
        );
        // Every mode starts at 0, so a rate over it exists before the first read of a mode.
        for mode in [
            Consistency::Linearizable,
            Consistency::Lease,
            Consistency::Stale,
            Consistency::Log,
        ] {
            let _ = reads.get_or_create(&ReadLabels {
                mode: mode.as_str(),
            });
        }
        // And the scrapes' own series, so the family is never empty (an empty family says
        // nothing, and some parsers refuse it); the first scrape fills it.
        let _ = http.get_or_create(&HttpLabels {
            route: "/metrics".to_owned(),
            method: "GET",
            status: 200,
        });
        KvMetrics {
            registry: Arc::new(registry),
            reads,
            http,
        }
    }

    /// Counts a read served in `mode`.
    pub fn read_served(&self, mode: Consistency) {
        self.reads
            .get_or_create(&ReadLabels {
                mode: mode.as_str(),
            })
            .inc();
    }

    /// Records one HTTP request's latency.
    pub(crate) fn http_request(&self, labels: &HttpLabels, took: Duration) {
        self.http.get_or_create(labels).observe(took.as_secs_f64());
    }

    /// Every family in the OpenMetrics text format, `# EOF` included.
    ///
    /// # Errors
    /// Only a formatting error of the encoder (none is expected writing to a `String`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Encodes the `raft_*` families from the node's published metrics, at scrape time.
#[derive(Debug)]
struct RaftCollector {
    metrics: watch::Receiver<Metrics>,
    refused: Option<RefusedCounts>,
}

impl Collector for RaftCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // One consistent copy, taken without holding the watch's lock while encoding.
        let m = self.metrics.borrow().clone();
        let mut out = Families(&mut encoder);

        out.gauge(
            "raft_up",
            "1 while the Raft node runs, 0 once it stopped (on request or on a storage or state \
             machine failure)",
            u64::from(m.status == NodeStatus::Running),
        )?;
        out.gauge("raft_term", "The node's current term", m.current_term)?;
        {
            let mut family = out.0.encode_descriptor(
                "raft_role",
                "1 for the node's current role, 0 for the others (role: leader, follower, \
                 candidate, pre_candidate)",
                None,
                MetricType::Gauge,
            )?;
            for role in [
                Role::Leader,
                Role::Follower,
                Role::Candidate,
                Role::PreCandidate,
            ] {
                let labels = [("role", role_label(role))];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&u64::from(m.role == role))?;
            }
        }
        out.gauge(
            "raft_leader_id",
            "The id of the leader this node knows of in its term; 0 if it knows none",
            m.current_leader.unwrap_or(0),
        )?;
        out.gauge(
            "raft_commit_index",
            "The highest log index this node knows committed",
            m.commit_index,
        )?;
        out.gauge(
            "raft_applied_index",
            "The last log index applied to the state machine",
            m.last_applied,
        )?;
        out.gauge(
            "raft_last_log_index",
            "The index of the last entry in the node's log",
            m.last_log_id.index,
        )?;
        out.gauge(
            "raft_snapshot_index",
            "The last log index the latest snapshot covers (0: none)",
            m.snapshot.index,
        )?;
        out.gauge(
            "raft_log_entries",
            "Entries in the log after its compaction point (all held in memory)",
            m.log_entries,
        )?;
        out.per_peer(
            "raft_follower_match_index",
            "On the leader: the highest log index known replicated on each other member (peer: its \
             node id); absent on other nodes",
            m.replication.iter().map(|(&peer, &matched)| (peer, matched)),
        )?;
        out.per_peer(
            "raft_follower_lag_entries",
            "On the leader: how many entries each other member lacks (last log index minus its \
             match index); absent on other nodes",
            m.replication
                .keys()
                .map(|&peer| (peer, m.lag(peer).unwrap_or(0))),
        )?;

        let elections = m.elections;
        out.counter(
            "raft_elections_started",
            "Elections this node started (raised its term to campaign)",
            elections.elections_started,
        )?;
        out.counter(
            "raft_pre_votes_lost",
            "Pre-vote rounds this node lost (it stayed in its term)",
            elections.pre_votes_lost,
        )?;
        out.counter(
            "raft_leader_changes",
            "Terms in which this node learned of a leader (itself included): one per new leader",
            m.leader_changes,
        )?;
        out.counter(
            "raft_transfers_started",
            "Leadership transfers this node started as leader",
            elections.transfers_started,
        )?;
        out.counter(
            "raft_transfers_abandoned",
            "Leadership transfers this node abandoned (the target did not take over in time)",
            elections.transfers_abandoned,
        )?;
        out.counter(
            "raft_followers_repaired",
            "Times, as leader, this node found a follower missing entries it had acknowledged \
             (its storage lost data)",
            m.followers_repaired,
        )?;
        {
            let p = m.proposals;
            let mut family = out.0.encode_descriptor(
                "raft_proposals",
                "Client proposals made at this node, by outcome: ok (appended by this node as \
                 leader), not_leader, too_large (refused, nothing appended), outcome_unknown \
                 (appended, then leadership lost before its fate was known; also counted in ok)",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in [
                ("ok", p.accepted),
                ("not_leader", p.not_leader),
                ("too_large", p.too_large),
                ("outcome_unknown", p.outcome_unknown),
            ] {
                let labels = [("outcome", outcome)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        out.counter(
            "raft_snapshots_built",
            "Snapshots of the state machine this node built and stored",
            m.snapshots.built,
        )?;
        out.counter(
            "raft_snapshots_installed",
            "Snapshots received from a leader that this node installed",
            m.snapshots.installed,
        )?;
        if let Some(refused) = &self.refused {
            let counts = refused.get();
            let mut family = out.0.encode_descriptor(
                "raft_peer_connections_refused",
                "Inbound Raft TCP connections closed for bad input or a limit, by reason: tls, \
                 handshake, frame, timeout, connection_cap, descriptor_reserve",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in counts.by_reason() {
                let labels = [("reason", reason)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }

        out.histogram(
            "raft_storage_append_duration_seconds",
            "One storage append call, which returns once the entries are durable (fsync \
             included): one observation per batch appended",
            &m.latency.append,
        )?;
        out.histogram(
            "raft_commit_duration_seconds",
            "On the leader: from a client proposal's acceptance to the node learning it committed",
            &m.latency.commit,
        )?;
        out.histogram(
            "raft_apply_duration_seconds",
            "One state machine apply call: one observation per batch of committed entries",
            &m.latency.apply,
        )?;
        Ok(())
    }
}

/// The `role` label of `role`.
fn role_label(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre_candidate",
    }
}

/// Helpers that encode one family each.
struct Families<'a, 'e>(&'a mut DescriptorEncoder<'e>);

impl Families<'_, '_> {
    fn gauge(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        self.0
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        self.0
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    /// A gauge per peer; nothing at all, not even the family's description, without peers (on a
    /// node that does not lead): an empty family says nothing, and some parsers refuse it.
    fn per_peer(
        &mut self,
        name: &str,
        help: &str,
        values: impl Iterator<Item = (u64, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut values = values.peekable();
        if values.peek().is_none() {
            return Ok(());
        }
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (peer, value) in values {
            let labels = [("peer", peer)];
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    /// A raft-core histogram as a Prometheus one in seconds: its buckets as they are (the encoder
    /// makes them cumulative), the overflow bucket as `+Inf`.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        h: &LatencyHistogram,
    ) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); LATENCY_BOUNDS_US.len() + 1];
        let bounds = LATENCY_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        for ((slot, bound), &count) in buckets.iter_mut().zip(bounds).zip(h.bucket_counts()) {
            *slot = (bound, count);
        }
        let sum_seconds = h.sum_us() as f64 / 1e6;
        self.0
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(sum_seconds, h.count(), &buckets, None)
    }
}
