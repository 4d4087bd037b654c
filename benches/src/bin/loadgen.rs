//! A plain load generator over the bench clusters, for profiling (`perf record`) and quick A/B runs
//! outside criterion.
//!
//! `loadgen <noop|kv|filetcp> <clients> <seconds>`: prints writes/s; with 1 client also p50/p99.

use std::time::{Duration, Instant};

use raft_bench::{
    kv_put, latencies, percentiles, run_clients, runtime, runtime_name, FileTcpCluster, MemCluster,
    NoopSm,
};
use raft_kv::KvStateMachine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).map_or("noop", String::as_str).to_string();
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let secs: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rt = runtime();
    let (writes, elapsed, lat) = rt.block_on(async {
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
    if let Some(mut lat) = lat {
        let (p50, p99, mean) = percentiles(&mut lat);
        print!(" p50={p50:?} p99={p99:?} mean={mean:?}");
    }
    println!();
}

/// Runs rounds of writes until `secs` have passed: returns writes, time and (1 client) latencies.
async fn drive<SM, F>(
    leader: &raft_core::Raft<SM>,
    clients: usize,
    secs: f64,
    make: F,
) -> (u64, Duration, Option<Vec<Duration>>)
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
    (writes, elapsed, (clients == 1).then_some(all))
}
