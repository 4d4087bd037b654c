//! A plain load generator over the bench clusters, for profiling (`perf record`) and quick A/B runs
//! outside criterion.
//!
//! `loadgen <noop|kv|filetcp> <clients> <seconds>`: prints writes/s; with 1 client also p50/p99.
//! Each run also prints the process's CPU time per write over the measured window (every thread:
//! the three nodes, the clients, the blocking pool) and the share of the machine's time the
//! hypervisor stole meanwhile: on a shared VM the CPU per write is the steadier figure to compare.
//! `filetcp` with 1 client also measures the raw fsync of the same disk before and after the
//! cluster's run (see [`raw_fsync_latencies`]) and prints the p50's ratio to it.

use std::time::{Duration, Instant};

use raft_bench::cpu_use::{CpuUse, CpuWindow};
use raft_bench::{
    kv_put, latencies, percentiles, raw_fsync_latencies, run_clients, runtime, runtime_name,
    FileTcpCluster, MemCluster, NoopSm, RawWrite,
};
use raft_kv::KvStateMachine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).map_or("noop", String::as_str).to_string();
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let secs: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rt = runtime();
    let fsync_yardstick = scenario == "filetcp" && clients == 1;
    let mut fsync = FsyncSamples::default();
    if fsync_yardstick {
        fsync.measure();
    }
    let (writes, elapsed, lat, cpu) = rt.block_on(async {
        match scenario.as_str() {
            "noop" => {
                let c = MemCluster::start(|| NoopSm).await;
                let r = drive(c.leader(), clients, secs, |_, _| ()).await;
                c.shutdown().await;
                r
            }
            "kv" => {
                let c = MemCluster::start(KvStateMachine::new).await;
                let r = drive(c.leader(), clients, secs, kv_put).await;
                c.shutdown().await;
                r
            }
            "filetcp" => {
                let c = FileTcpCluster::start().await;
                let r = drive(c.leader(), clients, secs, kv_put).await;
                c.shutdown().await;
                r
            }
            other => panic!("unknown scenario {other}"),
        }
    });
    let rate = writes as f64 / elapsed.as_secs_f64();
    print!(
        "{scenario} clients={clients} rt={} writes={writes} time={:.2}s writes/s={rate:.0}",
        runtime_name(),
        elapsed.as_secs_f64()
    );
    if let Some(used) = cpu.process {
        print!(
            " cpu_per_write={:.2}µs",
            used.as_secs_f64() * 1e6 / writes.max(1) as f64
        );
    }
    if let Some(steal) = cpu.steal {
        print!(" steal={:.0}%", steal * 100.0);
    }
    if let Some(mut lat) = lat {
        let (p50, p99, mean) = percentiles(&mut lat);
        print!(" p50={p50:?} p99={p99:?} mean={mean:?}");
        if fsync_yardstick {
            fsync.measure();
            let (one, three, prealloc) = fsync.p50s();
            let ratio = |d: Duration| p50.as_secs_f64() / d.as_secs_f64();
            print!(
                " fsync_p50_1thread={one:?} ({:.2}x) fsync_p50_3threads={three:?} ({:.2}x) \
                 fsync_p50_1thread_preallocated={prealloc:?} ({:.2}x)",
                ratio(one),
                ratio(three),
                ratio(prealloc)
            );
        }
    }
    println!();
}

/// Raw fsync samples of one thread alone and of three threads at once, appending, and of one
/// thread writing into a preallocated file, gathered before and after the cluster's run so that a
/// disk that changes speed during the run shows in all of them.
#[derive(Default)]
struct FsyncSamples {
    one_thread: Vec<Duration>,
    three_threads: Vec<Duration>,
    one_thread_preallocated: Vec<Duration>,
}

impl FsyncSamples {
    const ROUNDS: usize = 1000;

    fn measure(&mut self) {
        self.one_thread
            .extend(raw_fsync_latencies(Self::ROUNDS, 1, RawWrite::Append));
        self.three_threads
            .extend(raw_fsync_latencies(Self::ROUNDS, 3, RawWrite::Append));
        self.one_thread_preallocated.extend(raw_fsync_latencies(
            Self::ROUNDS,
            1,
            RawWrite::Preallocated,
        ));
    }

    /// The p50s of one thread's, three threads' and one thread's preallocated samples.
    fn p50s(&mut self) -> (Duration, Duration, Duration) {
        (
            percentiles(&mut self.one_thread).0,
            percentiles(&mut self.three_threads).0,
            percentiles(&mut self.one_thread_preallocated).0,
        )
    }
}

/// Runs rounds of writes until `secs` have passed: returns writes, time, (1 client) latencies and
/// the CPU the measured rounds cost (the warm-up's not counted).
async fn drive<SM, F>(
    leader: &raft_core::Raft<SM>,
    clients: usize,
    secs: f64,
    make: F,
) -> (u64, Duration, Option<Vec<Duration>>, CpuUse)
where
    SM: raft_core::StateMachine,
    F: Fn(usize, u64) -> SM::Command + Send + Sync + Clone + 'static,
{
    // Warm up for a fifth of the time.
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < secs / 5.0 {
        run_clients(leader, clients, (clients as u64) * 16, make.clone()).await;
    }
    let budget = Duration::from_secs_f64(secs);
    let mut writes = 0;
    let mut elapsed = Duration::ZERO;
    let mut all = Vec::new();
    let window = CpuWindow::open();
    while elapsed < budget {
        if clients == 1 {
            let start = Instant::now();
            let mut lat = latencies(leader, 2000, make.clone()).await;
            elapsed += start.elapsed();
            writes += lat.len() as u64;
            all.append(&mut lat);
        } else {
            let n = (clients as u64) * 64;
            elapsed += run_clients(leader, clients, n, make.clone()).await;
            writes += n;
        }
    }
    let cpu = window.close();
    (writes, elapsed, (clients == 1).then_some(all), cpu)
}
