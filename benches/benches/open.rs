//! Open time of a 128 MiB log and of a big one (4 GiB, or
//! `FARMLOG_BENCH_BIG_LOG_BYTES`): opening reads each segment's header and
//! footer and scans only the tail segment, so the two should be close.
//!
//! Each log is built once per run, with 1 MiB records appended durably in
//! batches of 21, sealed, then given the same active tail segment of 32
//! records, and deleted at the end. The page cache is warm: these are warm
//! opens.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use farmlog_benches::workload::{self};
use farmlog_benches::{env_bytes, repeat, scratch, Measured, RunLimit, GIB, MIB};

/// Overrides the size of the big log, e.g. `1G` for a quick run.
const BIG_LOG_BYTES_ENV: &str = "FARMLOG_BENCH_BIG_LOG_BYTES";
const BIG_LOG_BYTES_DEFAULT: u64 = 4 * GIB;
/// The big log's default size when the suite runs as a test (`cargo test
/// --benches` runs each benchmark once, without `--bench`).
const BIG_LOG_BYTES_TEST_MODE: u64 = 256 * MIB as u64;
const SMALL_LOG_BYTES: u64 = 128 * MIB as u64;
const RECORD_BYTES: usize = MIB;
/// Records per append while building: 63 records of 1 MiB fit a 64 MiB
/// segment, so batches of 21 fill segments without leaving gaps.
const BUILD_BATCH_RECORDS: usize = 21;
/// Records in the active tail segment of both logs: half a segment, the
/// expected fill at a random moment. Opening scans the tail's records, so
/// both logs get the same tail and differ only in sealed segments.
const TAIL_RECORDS: usize = 32;
/// Free space kept beyond the big log while building it.
const SPACE_MARGIN_BYTES: u64 = GIB;
/// One `iter_custom` call may run this long at most; a longer one is cut
/// and its time extrapolated.
const CALL_TIME_MAX: Duration = Duration::from_secs(60);

fn open(c: &mut Criterion) {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let default = if benchmarking {
        BIG_LOG_BYTES_DEFAULT
    } else {
        BIG_LOG_BYTES_TEST_MODE
    };
    let big_bytes = env_bytes(BIG_LOG_BYTES_ENV, default).expect("a valid size");
    let root = scratch::root();
    let mut logs = Vec::new();
    for bytes in [SMALL_LOG_BYTES, big_bytes] {
        let dir = scratch::dir_in(&root, "open").expect("a scratch directory");
        scratch::require_space(dir.path(), bytes + SPACE_MARGIN_BYTES, "the open benchmark").expect("free space");
        let log = workload::build_log_with_tail(dir.path(), RECORD_BYTES, bytes, BUILD_BATCH_RECORDS, TAIL_RECORDS)
            .expect("building a log");
        eprintln!("open: {} MiB log: {}", bytes >> 20, workload::describe(&log));
        drop(log);
        logs.push((bytes, dir));
    }

    let mut group = c.benchmark_group("open");
    // Flat: closing a log (untimed) can cost more than opening it.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (bytes, dir) in &logs {
        let id = BenchmarkId::new("log", format!("{}MiB", bytes >> 20));
        group.bench_function(id, |bencher| {
            bencher.iter_custom(|opens| {
                let limit = RunLimit::count(opens, CALL_TIME_MAX);
                let measured = repeat(limit, || {
                    let elapsed = workload::time_open(dir.path())?.open;
                    Ok(Measured {
                        operations: 1,
                        elapsed,
                        ..Measured::default()
                    })
                })
                .expect("opens");
                measured.elapsed_for(opens)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, open);
criterion_main!(benches);
