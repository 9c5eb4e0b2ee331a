//! Durable writes: the disk's own limits (group `disk`) beside the engine's
//! concurrent durable appends (groups `append_256B`, `append_64KiB`), in
//! one criterion suite so that they run under the same conditions.
//!
//! Every benchmark uses `iter_custom`: criterion asks for N operations
//! (syncs, or appends of one batch), the run spreads them over the
//! appender threads and returns the wall-clock time. Bandwidth-heavy
//! benchmarks measure for a short time so that each writes a few GiB at
//! most; logs are purged past [`LOG_FILE_BYTES_MAX`] between samples.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use farmlog_benches::raw::{self, SyncPattern, SyncedFile, RAW_FILE_BYTES, WATERMARK_BYTES};
use farmlog_benches::workload::{self, AppendShape};
use farmlog_benches::{payload, scratch, RunLimit, KIB, MIB};
use farmlog_engine::Log;

/// One `iter_custom` call may run this long at most; a longer one is cut
/// and its time extrapolated.
const CALL_TIME_MAX: Duration = Duration::from_secs(60);
/// A benchmark log is purged between samples once its files exceed this.
const LOG_FILE_BYTES_MAX: u64 = 1 << 30;
/// Concurrent appenders of the append benchmarks.
const APPENDERS: [usize; 3] = [1, 16, 64];
/// Records per append of the append benchmarks.
const BATCHES: [usize; 2] = [1, 16];
const SMALL_RECORD_BYTES: usize = 256;
const LARGE_RECORD_BYTES: usize = 64 * KIB;
/// Bytes of each write of the raw bandwidth baselines.
const RAW_LARGE_WRITE_BYTES: usize = MIB;
/// Writes per `fdatasync` of the second raw bandwidth baseline (16 MiB per
/// sync, so that the sync's fixed cost does not hide the bandwidth).
const RAW_LARGE_WRITES_PER_SYNC: usize = 16;

/// Timing for benchmarks that write little (small records, syncs).
fn configure_small(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// Timing for bandwidth benchmarks: `measurement` plus half a second of
/// warm-up, so that each writes a few GB at most at the disk's speed.
fn configure_large(group: &mut BenchmarkGroup<'_, WallTime>, measurement: Duration) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement);
}

fn disk(c: &mut Criterion) {
    let dir = scratch::dir("disk").expect("a scratch directory");
    let mut file = SyncedFile::preallocate(&dir.path().join("raw"), RAW_FILE_BYTES).expect("a preallocated file");
    let mut group = c.benchmark_group("disk");

    configure_small(&mut group);
    let small = payload(SMALL_RECORD_BYTES, 0);
    group.throughput(Throughput::Elements(1));
    group.bench_function("pwrite_256B_fdatasync", |bencher| {
        bencher.iter_custom(|syncs| {
            let limit = RunLimit::count(syncs, CALL_TIME_MAX);
            let measured =
                raw::run_synced_writes(&mut file, SyncPattern::writes(&small, 1), limit).expect("raw synced writes");
            measured.elapsed_for(syncs)
        })
    });

    let watermark = payload(WATERMARK_BYTES, 1);
    group.bench_function("pwrite_256B_watermark_fdatasync", |bencher| {
        bencher.iter_custom(|syncs| {
            let limit = RunLimit::count(syncs, CALL_TIME_MAX);
            let pattern = SyncPattern::writes(&small, 1).with_watermark(&watermark);
            let measured = raw::run_synced_writes(&mut file, pattern, limit).expect("raw synced writes");
            measured.elapsed_for(syncs)
        })
    });

    // The raw disk runs at up to ~3 GB/s: 1 s of measurement.
    configure_large(&mut group, Duration::from_secs(1));
    let large = payload(RAW_LARGE_WRITE_BYTES, 0);
    group.throughput(Throughput::Bytes(RAW_LARGE_WRITE_BYTES as u64));
    group.bench_function("pwrite_1MiB_fdatasync", |bencher| {
        bencher.iter_custom(|syncs| {
            let limit = RunLimit::count(syncs, CALL_TIME_MAX);
            let measured =
                raw::run_synced_writes(&mut file, SyncPattern::writes(&large, 1), limit).expect("raw synced writes");
            measured.elapsed_for(syncs)
        })
    });
    group.throughput(Throughput::Bytes(
        (RAW_LARGE_WRITE_BYTES * RAW_LARGE_WRITES_PER_SYNC) as u64,
    ));
    group.bench_function("pwrite_16x1MiB_fdatasync", |bencher| {
        bencher.iter_custom(|syncs| {
            let limit = RunLimit::count(syncs, CALL_TIME_MAX);
            let measured =
                raw::run_synced_writes(&mut file, SyncPattern::writes(&large, RAW_LARGE_WRITES_PER_SYNC), limit)
                    .expect("raw synced writes");
            measured.elapsed_for(syncs)
        })
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    for (record_bytes, name) in [
        (SMALL_RECORD_BYTES, "append_256B"),
        (LARGE_RECORD_BYTES, "append_64KiB"),
    ] {
        let mut group = c.benchmark_group(name);
        if record_bytes == SMALL_RECORD_BYTES {
            configure_small(&mut group);
        } else {
            // The engine writes 64 KiB records at well under 1 GB/s today:
            // 2 s, so that each sample holds many rollovers.
            configure_large(&mut group, Duration::from_secs(2));
        }
        for batch_records in BATCHES {
            for appenders in APPENDERS {
                let shape = AppendShape {
                    appenders,
                    record_bytes,
                    batch_records,
                };
                bench_append(&mut group, name, shape);
            }
        }
        group.finish();
    }
}

fn bench_append(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, shape: AppendShape) {
    group.throughput(if shape.record_bytes == SMALL_RECORD_BYTES {
        Throughput::Elements(shape.records_per_append())
    } else {
        Throughput::Bytes(shape.bytes_per_append())
    });
    let dir = scratch::dir(name).expect("a scratch directory");
    let log = workload::open_fresh(dir.path(), shape.record_bytes).expect("a fresh log");
    let id = BenchmarkId::new(
        format!("batch{}", shape.batch_records),
        format!("{}_appenders", shape.appenders),
    );
    group.bench_function(id, |bencher| {
        bencher.iter_custom(|appends| {
            let limit = RunLimit::count(appends, CALL_TIME_MAX);
            let measured = workload::run_appenders(&log, shape, limit).expect("appends");
            bound_log(&log);
            measured.elapsed_for(appends)
        })
    });
}

/// Purges a benchmark log that grew past [`LOG_FILE_BYTES_MAX`] (untimed).
fn bound_log(log: &Log) {
    if log.stats().file_bytes > LOG_FILE_BYTES_MAX {
        log.purge_before(log.next_index()).expect("purging the benchmark log");
    }
}

criterion_group!(benches, disk, append);
criterion_main!(benches);
