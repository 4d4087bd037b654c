//! Append throughput of `FileStorage` with fsync on, for batches of 1, 16 and 256 entries (one
//! `append` call, hence one fsync, per batch), next to the raw rate of small write + fdatasync
//! pairs on the same file system, which bounds the batch-of-1 case.
//!
//! Run: `cargo bench -p lucid-raft-storage-file --bench append`. Entries carry a 100-byte string command; the
//! bytes written per entry are printed at the start, so MB/s = entries/s x that.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::{Entry, EntryPayload, LogId, RaftStorage};
use raft_storage_file::{FileStorage, FsyncPolicy, Options};

const COMMAND_BYTES: usize = 100;

fn batch(first: u64, n: usize) -> Vec<Entry<String>> {
    (0..n as u64)
        .map(|i| Entry {
            log_id: LogId::new(1, first + i),
            payload: EntryPayload::Command("k".repeat(COMMAND_BYTES)).into(),
        })
        .collect()
}

/// Bytes on disk per entry: append 1000 entries and look at the segment sizes (not preallocated,
/// so a segment's length is its header, its batches and its end mark).
fn bytes_per_entry(rt: &tokio::runtime::Runtime) -> f64 {
    const HEADER_AND_END_MARK: u64 = 24 + 16;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .fsync(FsyncPolicy::Never)
        .preallocate(false);
    let mut s = FileStorage::<String>::open_with(dir.path(), opts).unwrap();
    rt.block_on(s.append(&batch(1, 1000))).unwrap();
    drop(s);
    let total: u64 = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() - HEADER_AND_END_MARK)
        .sum();
    total as f64 / 1000.0
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let per_entry = bytes_per_entry(&rt);
    println!("append bench: {COMMAND_BYTES}-byte commands, {per_entry:.1} bytes on disk per entry");

    // Segments preallocated (the default), then growing with each append, for comparison.
    for (name, preallocate) in [
        ("append_fsync", true),
        ("append_fsync_not_preallocated", false),
    ] {
        append_fsync(c, &rt, name, Options::default().preallocate(preallocate));
    }

    // The same with fsync off: the CPU and page-cache cost alone, for comparison.
    let mut group = c.benchmark_group("append_no_fsync");
    group.throughput(Throughput::Elements(256));
    group.bench_function("256", |b| {
        bench_appends(b, &rt, Options::default().fsync(FsyncPolicy::Never), 256)
    });
    group.finish();
}

/// Appends of 1, 16 and 256 entries with fsync on, each one `append` call, into a storage opened
/// with `opts`.
fn append_fsync(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, opts: Options) {
    let mut group = c.benchmark_group(name);
    for size in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            bench_appends(b, rt, opts.clone(), size)
        });
    }
    group.finish();
}

/// Times appends of `size` entries each, one `append` call each, into a new storage opened with
/// `opts`.
fn bench_appends(
    b: &mut criterion::Bencher<'_>,
    rt: &tokio::runtime::Runtime,
    opts: Options,
    size: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::<String>::open_with(dir.path(), opts).unwrap();
    let mut next = 1;
    let mut entries = batch(next, size);
    b.iter_custom(|iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                for (i, e) in entries.iter_mut().enumerate() {
                    e.log_id.index = next + i as u64;
                }
                s.append(&entries).await.unwrap();
                next += size as u64;
            }
            start.elapsed()
        })
    });
}

/// The machine's raw rate of "append 128 bytes to a file, fdatasync": what one append of one entry
/// can at best reach. Printed as percentiles of 500 timed pairs first (robust to the outliers a shared
/// disk produces), then measured by criterion.
fn raw_fsync(c: &mut Criterion) {
    {
        let dir = tempfile::tempdir().unwrap();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut times: Vec<Duration> = (0..500)
            .map(|_| {
                let start = Instant::now();
                f.write_all(&[0x5A; 128]).unwrap();
                f.sync_data().unwrap();
                start.elapsed()
            })
            .collect();
        times.sort();
        let p = |q: usize| times[times.len() * q / 100];
        println!(
            "raw fsync (write 128 B + fdatasync, 500 times): p10 {:?}, median {:?}, p90 {:?}: \
             {:.0} fsync/s at the median",
            p(10),
            p(50),
            p(90),
            1.0 / p(50).as_secs_f64()
        );
    }
    let mut group = c.benchmark_group("raw_fsync");
    group.throughput(Throughput::Elements(1));
    group.bench_function("write_128B_fdatasync", |b| {
        let dir = tempfile::tempdir().unwrap();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("f"))
            .unwrap();
        let buf = [0x5Au8; 128];
        b.iter(|| {
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = raw_fsync, append
}
criterion_main!(benches);
