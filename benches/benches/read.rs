//! Reads: sequential zero-copy passes over a log of uncompressed sealed
//! segments and over the same log compressed (GB/s of payload), and
//! random reads by index (records/s). Every read checks the record's crc,
//! as the engine always does; sequential passes also sum every payload
//! word, so the zero-copy bytes are really touched.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use farmlog_benches::workload::{self, Compression};
use farmlog_benches::{repeat, scratch, RunLimit, KIB, MIB};
use farmlog_engine::Log;

/// Payload bytes of each read benchmark log.
const LOG_PAYLOAD_BYTES: u64 = 256 * MIB as u64;
const RECORD_BYTES: usize = 4 * KIB;
/// Records per append while building (1 MiB per append).
const BUILD_BATCH_RECORDS: usize = 256;
/// One `iter_custom` call may run this long at most; a longer one is cut
/// and its time extrapolated.
const CALL_TIME_MAX: Duration = Duration::from_secs(60);

fn build(dir: &std::path::Path, compression: Compression) -> Log {
    workload::build_sealed_log(dir, RECORD_BYTES, LOG_PAYLOAD_BYTES, BUILD_BATCH_RECORDS, compression)
        .expect("building a log")
}

fn read(c: &mut Criterion) {
    let plain_dir = scratch::dir("read-plain").expect("a scratch directory");
    let plain = build(plain_dir.path(), Compression::Uncompressed);
    let compressed_dir = scratch::dir("read-compressed").expect("a scratch directory");
    let compressed = build(compressed_dir.path(), Compression::All);

    let mut group = c.benchmark_group("read");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, log) in [
        ("sequential_uncompressed", &plain),
        ("sequential_compressed", &compressed),
    ] {
        let pass = workload::read_sequential(log).expect("a first pass");
        assert!(pass.bytes >= LOG_PAYLOAD_BYTES);
        group.throughput(Throughput::Bytes(pass.bytes));
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|passes| {
                let limit = RunLimit::count(passes, CALL_TIME_MAX);
                let measured = repeat(limit, || workload::read_sequential(log)).expect("sequential passes");
                measured.elapsed_for(passes)
            })
        });
    }

    let mut rng = workload::rng();
    group
        .sampling_mode(SamplingMode::Auto)
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("random_uncompressed", |bencher| {
        bencher.iter_custom(|reads| {
            let limit = RunLimit::count(reads, CALL_TIME_MAX);
            let measured = workload::read_random(&plain, &mut rng, limit).expect("random reads");
            measured.elapsed_for(reads)
        })
    });
    group.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
