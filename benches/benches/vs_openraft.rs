//! Our `noop_mem` and the same workload on openraft, back to back in one run (feature `openraft`).
//!
//! Run: `cargo bench -p raft-bench --features openraft --bench vs_openraft`
//! (`RAFT_BENCH_RT=multi` for the multi-thread runtime, as for `replication.rs`).
//!
//! For each client count (1, 64, 256, 1,024, 4,096) the bench starts a 3-node cluster of ours
//! (`MemCluster` + `NoopSm`, exactly `replication.rs`'s `noop_mem`), measures it, stops it, then
//! does the same with openraft's (`raft_bench::openraft_noop`: in-memory log, no-op state machine,
//! in-process network), on the same runtime, with the criterion settings of `replication.rs`.
//! Criterion reports each as `vs_openraft/ours/N` and `vs_openraft/openraft/N` (writes/s); at the
//! end the bench prints a table of its own: the median and range of the writes/s of criterion's
//! measurement samples for each side, and the ratio ours / openraft.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_bench::openraft_noop::{run_openraft_clients, OpenraftCluster};
use raft_bench::{run_clients, runtime, runtime_name, MemCluster, NoopSm};

/// The client counts of `noop_mem`.
const CLIENTS: [usize; 5] = [1, 64, 256, 1024, 4096];

/// Criterion's samples per benchmark (as in `replication.rs`).
const SAMPLES: usize = 10;

/// The group settings of `replication.rs`: 10 samples, 1 s warm-up, 3 s measurement, writes/s.
fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    g
}

/// Writes per second of each of criterion's measurement samples of one benchmark.
#[derive(Default)]
struct Rates(Vec<f64>);

impl Rates {
    /// The rates of the last [`SAMPLES`] calls of the routine (criterion calls it during warm-up
    /// first, then once per measurement sample), given each call's writes and wall time.
    fn from_calls(calls: &[(u64, Duration)]) -> Self {
        let measured = &calls[calls.len().saturating_sub(SAMPLES)..];
        let mut rates: Vec<f64> = measured
            .iter()
            .filter(|(_, t)| !t.is_zero())
            .map(|(n, t)| *n as f64 / t.as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        Rates(rates)
    }

    fn median(&self) -> Option<f64> {
        let n = self.0.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(self.0[n / 2]),
            _ => Some((self.0[n / 2 - 1] + self.0[n / 2]) / 2.0),
        }
    }

    fn range(&self) -> Option<(f64, f64)> {
        Some((*self.0.first()?, *self.0.last()?))
    }

    /// `median [min - max]`, or `-` when the benchmark did not run (filtered out).
    fn cell(&self) -> String {
        match (self.median(), self.range()) {
            (Some(m), Some((lo, hi))) => format!("{} [{} - {}]", rate(m), rate(lo), rate(hi)),
            _ => "-".into(),
        }
    }
}

/// `1.23 M/s`, `456 k/s`, `789 /s`.
fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn vs_openraft(c: &mut Criterion) {
    println!("runtime: {}", runtime_name());
    let rt = runtime();
    let mut g = short(c, "vs_openraft");
    let mut rows = Vec::new();
    for clients in CLIENTS {
        let mut calls = Vec::new();
        let cluster = rt.block_on(MemCluster::start(|| NoopSm));
        g.bench_with_input(BenchmarkId::new("ours", clients), &clients, |b, &n| {
            b.iter_custom(|iters| {
                let took = rt.block_on(run_clients(cluster.leader(), n, iters, |_, _| ()));
                calls.push((iters, took));
                took
            });
        });
        rt.block_on(cluster.shutdown());
        let ours = Rates::from_calls(&calls);

        let mut calls = Vec::new();
        let cluster = rt.block_on(OpenraftCluster::start());
        let term_before = cluster.leader_term();
        g.bench_with_input(BenchmarkId::new("openraft", clients), &clients, |b, &n| {
            b.iter_custom(|iters| {
                let took = rt.block_on(run_openraft_clients(cluster.leader(), n, iters));
                calls.push((iters, took));
                took
            });
        });
        if cluster.leader_term() != term_before {
            println!(
                "warning: openraft, {clients} clients: the term changed during the measurement"
            );
        }
        let abandoned = cluster.abandoned_appends();
        if abandoned > 0 {
            println!("warning: openraft, {clients} clients: {abandoned} AppendEntries timed out");
        }
        rt.block_on(cluster.shutdown());
        rows.push((clients, ours, Rates::from_calls(&calls)));
    }
    g.finish();

    println!();
    println!(
        "vs_openraft, runtime {}: writes/s, median [min - max] of criterion's {SAMPLES} measurement samples",
        runtime_name()
    );
    println!(
        "{:>7} | {:<30} | {:<30} | ours / openraft",
        "clients", "ours (noop_mem)", "openraft"
    );
    for (clients, ours, theirs) in &rows {
        let ratio = match (ours.median(), theirs.median()) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        println!(
            "{clients:>7} | {:<30} | {:<30} | {ratio}",
            ours.cell(),
            theirs.cell()
        );
    }
}

criterion_group!(benches, vs_openraft);
criterion_main!(benches);
