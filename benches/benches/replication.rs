//! Replication throughput and latency of a 3-node cluster in one process.
//!
//! Run: `cargo bench -p raft-bench` (a few minutes), or one scenario with a filter, e.g.
//! `cargo bench -p raft-bench -- noop_mem`. Groups:
//! 1. `noop_mem`: the openraft `benchmarks/minimal` workload: `MemStorage`, mock network without
//!    serialization or faults, a no-op state machine, empty commands; 1, 64, 256, 1024 and 4096
//!    client tasks each writing in a loop.
//! 2. `kv_mem`: the replicated hash table (`raft-kv`), 100-byte values, same storage and network.
//! 3. `kv_file_tcp`: the hash table on `FileStorage` (fsync on, temporary directories) and TCP on
//!    loopback; 1, 16 and 256 clients.
//! 4. `latency`: one client's write latency for 1 and 3; criterion reports the mean, and p50 / p99 of
//!    every write timed during the measurement are printed to stdout, followed by the raw fsync of
//!    the same disk (one thread, and three at once as the cluster's nodes do), measured right after.
//! 5. `reads_file_tcp`: reads on the cluster of 3, by mode: `log` (a `Get` through the log, like a
//!    write), `read_index` (one heartbeat round per batch of reads), `lease` (no round while the
//!    leader's lease holds; the cluster runs with `ReadPolicy::Lease`), at 1 and 256 clients, and
//!    `mixed_read_index` (256 clients, 90% reads by ReadIndex, 10% puts). Throughput in operations
//!    per second.
//! 6. `read_latency`: one client's read latency on the cluster of 3, by mode (p50 / p99 printed).
//! 7. `kv_mem_1m`: `kv_mem` with a table of 1,024,000 keys (preloaded by restoring every node from
//!    a generated snapshot), 1,024 clients overwriting them for 60 s: what snapshots of a large
//!    state cost (compare with `RAFT_BENCH_SNAPSHOT_AFTER=0`; the writes over the whole
//!    measurement and the snapshots built meanwhile are printed).
//!
//! Throughput is in writes per second (`Throughput::Elements`, one element per write). The runtime
//! is tokio's current-thread runtime unless `RAFT_BENCH_RT=multi` (2 workers; see the crate docs).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_bench::{
    bench_config, kv_put, latencies, percentiles, preloaded_kv_snapshot, raw_fsync_latencies,
    read_latencies, run_clients, run_readers, runtime, runtime_name, FileTcpCluster, MemCluster,
    NoopSm, RawWrite, ReadMode, PRELOAD_CLIENTS,
};
use raft_core::{Config, ReadPolicy};
use raft_kv::KvStateMachine;

fn short<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    g
}

fn noop_mem(c: &mut Criterion) {
    println!("runtime: {}", runtime_name());
    let rt = runtime();
    let mut g = short(c, "noop_mem");
    for clients in [1usize, 64, 256, 1024, 4096] {
        // Criterion calls the closure once per sample: start the cluster once, outside it.
        let cluster = rt.block_on(MemCluster::start(|| NoopSm));
        g.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, &n| {
            b.iter_custom(|iters| rt.block_on(run_clients(cluster.leader(), n, iters, |_, _| ())));
        });
        rt.block_on(cluster.shutdown());
    }
    g.finish();
}

fn kv_mem(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "kv_mem");
    for clients in [1usize, 64, 256, 1024] {
        let cluster = rt.block_on(MemCluster::start(KvStateMachine::new));
        g.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, &n| {
            b.iter_custom(|iters| rt.block_on(run_clients(cluster.leader(), n, iters, kv_put)));
        });
        rt.block_on(cluster.shutdown());
    }
    g.finish();
}

fn kv_file_tcp(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "kv_file_tcp");
    for clients in [1usize, 16, 256] {
        let cluster = rt.block_on(FileTcpCluster::start());
        g.bench_with_input(BenchmarkId::from_parameter(clients), &clients, |b, &n| {
            b.iter_custom(|iters| rt.block_on(run_clients(cluster.leader(), n, iters, kv_put)));
        });
        rt.block_on(cluster.shutdown());
    }
    g.finish();
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "latency");
    let mut report = Vec::new();

    let cluster = rt.block_on(MemCluster::start(|| NoopSm));
    let mut samples = Vec::new();
    g.bench_function("noop_mem", |b| {
        b.iter_custom(|iters| {
            let lat = rt.block_on(latencies(cluster.leader(), iters, |_, _| ()));
            let total = lat.iter().sum();
            samples.extend(lat);
            total
        });
    });
    rt.block_on(cluster.shutdown());
    report.push(("noop_mem", percentiles(&mut samples), samples.len()));

    let cluster = rt.block_on(FileTcpCluster::start());
    let mut samples = Vec::new();
    g.bench_function("kv_file_tcp", |b| {
        b.iter_custom(|iters| {
            let lat = rt.block_on(latencies(cluster.leader(), iters, kv_put));
            let total = lat.iter().sum();
            samples.extend(lat);
            total
        });
    });
    rt.block_on(cluster.shutdown());
    report.push(("kv_file_tcp", percentiles(&mut samples), samples.len()));
    g.finish();

    for (name, (p50, p99, mean), n) in report {
        println!("latency/{name}: p50 {p50:?}  p99 {p99:?}  mean {mean:?}  ({n} writes, warm-up included)");
    }
    // The yardstick of kv_file_tcp's p50, measured on the same disk right after it.
    for (threads, how) in [
        (1, RawWrite::Append),
        (3, RawWrite::Append),
        (1, RawWrite::Preallocated),
    ] {
        let (p50, p99, _) = percentiles(&mut raw_fsync_latencies(2000, threads, how));
        println!(
            "latency/raw_fsync ({threads} thread(s) at once, {how:?}): p50 {p50:?}  p99 {p99:?}"
        );
    }
}

/// The cluster a read mode runs on: leases need `ReadPolicy::Lease` (a drift bound of a tenth of
/// the bench's minimum election timeout).
async fn read_cluster(mode: ReadMode) -> FileTcpCluster {
    let config = bench_config();
    let config = match mode {
        ReadMode::Lease => Config {
            read_policy: ReadPolicy::Lease {
                clock_drift_bound: config.election_timeout_min / 10,
            },
            ..config
        },
        ReadMode::Log | ReadMode::ReadIndex => config,
    };
    FileTcpCluster::start_with(config).await
}

fn reads_file_tcp(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "reads_file_tcp");
    let modes = [
        ("log", ReadMode::Log),
        ("read_index", ReadMode::ReadIndex),
        ("lease", ReadMode::Lease),
    ];
    for (name, mode) in modes {
        for clients in [1usize, 256] {
            let cluster = rt.block_on(read_cluster(mode));
            g.bench_with_input(BenchmarkId::new(name, clients), &clients, |b, &n| {
                b.iter_custom(|iters| rt.block_on(run_readers(&cluster, n, iters, mode, 0)));
            });
            rt.block_on(cluster.shutdown());
        }
    }
    let cluster = rt.block_on(read_cluster(ReadMode::ReadIndex));
    g.bench_with_input(
        BenchmarkId::new("mixed_read_index", 256),
        &256usize,
        |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(run_readers(&cluster, n, iters, ReadMode::ReadIndex, 10))
            });
        },
    );
    rt.block_on(cluster.shutdown());
    g.finish();
}

fn read_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "read_latency");
    let mut report = Vec::new();
    let modes = [
        ("log", ReadMode::Log),
        ("read_index", ReadMode::ReadIndex),
        ("lease", ReadMode::Lease),
    ];
    for (name, mode) in modes {
        let cluster = rt.block_on(read_cluster(mode));
        let mut samples = Vec::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let lat = rt.block_on(read_latencies(&cluster, iters, mode));
                let total = lat.iter().sum();
                samples.extend(lat);
                total
            });
        });
        rt.block_on(cluster.shutdown());
        report.push((name, percentiles(&mut samples), samples.len()));
    }
    g.finish();
    for (name, (p50, p99, mean), n) in report {
        println!("read_latency/{name}: p50 {p50:?}  p99 {p99:?}  mean {mean:?}  ({n} reads, warm-up included)");
    }
}

fn kv_mem_1m(c: &mut Criterion) {
    let rt = runtime();
    let mut g = short(c, "kv_mem_1m");
    // Long enough for at least one snapshot on every node at the default policy (a log of 4 times
    // the ~120 MB snapshot: about 2.5 M writes), and several at a fixed count of 100,000 entries.
    g.measurement_time(Duration::from_secs(60));
    let started = std::time::Instant::now();
    let snapshot = rt.block_on(preloaded_kv_snapshot(PRELOAD_CLIENTS));
    let built = started.elapsed();
    let cluster = rt.block_on(MemCluster::start_from_snapshot(
        KvStateMachine::new,
        &snapshot,
    ));
    println!(
        "kv_mem_1m: preload snapshot of {} bytes built in {built:?}, cluster restored from it and \
         led after {:?}",
        snapshot.data.len(),
        started.elapsed() - built
    );
    drop(snapshot);
    let snapshots_before = cluster.snapshots_built();
    let total = std::cell::Cell::new((0u64, Duration::ZERO));
    g.bench_with_input(
        BenchmarkId::from_parameter(PRELOAD_CLIENTS),
        &PRELOAD_CLIENTS,
        |b, &n| {
            b.iter_custom(|iters| {
                let took = rt.block_on(run_clients(cluster.leader(), n, iters, kv_put));
                let (writes, time) = total.get();
                total.set((writes + iters, time + took));
                took
            });
        },
    );
    let (writes, time) = total.get();
    println!(
        "kv_mem_1m: {writes} writes in {time:.1?} ({:.0} writes/s, warm-up included); snapshots \
         built by nodes 1, 2, 3 meanwhile: {:?}",
        writes as f64 / time.as_secs_f64(),
        cluster
            .snapshots_built()
            .iter()
            .zip(&snapshots_before)
            .map(|(after, before)| after - before)
            .collect::<Vec<_>>()
    );
    rt.block_on(cluster.shutdown());
    g.finish();
}

criterion_group!(
    benches,
    noop_mem,
    kv_mem,
    kv_file_tcp,
    latency,
    reads_file_tcp,
    read_latency,
    kv_mem_1m
);
criterion_main!(benches);
