//! The ratio report: the key figures measured side by side in one process,
//! and a Markdown table of engine-to-disk ratios against the targets.
//!
//! Criterion gives precise absolute figures; this gives robust ratios. A
//! disk's speed drifts (other load, the host's cache), so each engine run
//! is paired with a raw-disk run right before it, round after round, and
//! every figure is the median over rounds; a ratio is the median of the
//! per-round ratios. Nothing is assumed: every number in the table was
//! measured in this process.
//!
//! Settings (environment):
//! - `FARMLOG_REPORT_ROUNDS` (default 5): rounds of every alternation.
//! - `FARMLOG_REPORT_RUN_MS` (default 1000): time bound of one run.
//! - `FARMLOG_BENCH_BIG_LOG_BYTES` (default 4G): size of the big log of
//!   the open-time comparison.
//! - `FARMLOG_BENCH_DIR`: where files go (default `target/farmlog-bench`).
//!
//! The 64 KiB bandwidth target is measured twice: on fresh logs, where
//! every new 64 MiB segment is zero-filled before use (the zeros cost as
//! much disk bandwidth as the records), and in steady state with
//! retention, where a retention thread keeps the newest
//! [`SEGMENTS_KEPT`] segments and new segments reuse purged files. Each
//! steady-state log is warmed up once (until purged files are being
//! reused) and kept open through the rounds: closing it would discard the
//! files kept for reuse.
//!
//! Every run is bounded by a count and a time; files are deleted as soon
//! as a run ends, so the disk holds at most the two open-time logs, the
//! two read logs, the steady-state logs and one run's log at a time.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use farmlog_benches::raw::{self, SyncPattern, SyncedFile, RAW_FILE_BYTES, WATERMARK_BYTES};
use farmlog_benches::workload::{self, AppendShape, Compression, WarmUp};
use farmlog_benches::{env_bytes, env_u64, payload, repeat, scratch, BenchResult, Measured, RunLimit, GIB, KIB, MIB};
use farmlog_engine::log::RECYCLED_SEGMENTS_MAX;
use farmlog_engine::Log;
use tempfile::TempDir;

const ROUNDS_ENV: &str = "FARMLOG_REPORT_ROUNDS";
const ROUNDS_DEFAULT: u64 = 5;
const ROUNDS_MAX: u64 = 100;
const RUN_MS_ENV: &str = "FARMLOG_REPORT_RUN_MS";
const RUN_MS_DEFAULT: u64 = 1000;
const RUN_MS_MAX: u64 = 60_000;
const BIG_LOG_BYTES_ENV: &str = "FARMLOG_BENCH_BIG_LOG_BYTES";
const BIG_LOG_BYTES_DEFAULT: u64 = 4 * GIB;
const SMALL_LOG_BYTES: u64 = 128 * MIB as u64;

/// Appends (or syncs) in one run, at most.
const OPERATIONS_PER_RUN_MAX: u64 = 10_000_000;
/// Bytes written by one run, at most.
const RUN_BYTES_MAX: u64 = 4 * GIB;
/// Sequential passes in one run, at most.
const PASSES_PER_RUN_MAX: u64 = 1000;

const SMALL_RECORD_BYTES: usize = 256;
const LARGE_RECORD_BYTES: usize = 64 * KIB;
const RAW_LARGE_WRITE_BYTES: usize = MIB;
/// Large writes per `fdatasync` of the raw bandwidth baseline: 16 MiB per
/// sync, so that the sync's fixed cost does not hide the bandwidth.
const RAW_LARGE_WRITES_PER_SYNC: usize = 16;
const READ_LOG_PAYLOAD_BYTES: u64 = 256 * MIB as u64;
const READ_RECORD_BYTES: usize = 4 * KIB;
const READ_BUILD_BATCH_RECORDS: usize = 256;
const OPEN_RECORD_BYTES: usize = MIB;
/// Records per append while building: 63 records of 1 MiB fit a 64 MiB
/// segment, so batches of 21 fill segments without leaving gaps.
const OPEN_BUILD_BATCH_RECORDS: usize = 21;
/// Records in the active tail segment of both open-time logs: half a
/// segment, the expected fill at a random moment.
const OPEN_TAIL_RECORDS: usize = 32;
/// Opens of each log per round.
const OPENS_PER_ROUND: usize = 4;
/// Free space kept beyond the logs this report builds.
const SPACE_MARGIN_BYTES: u64 = GIB;

/// Segments a steady-state log keeps: its retention thread purges the
/// older ones.
const SEGMENTS_KEPT: usize = 4;
/// Files of one steady-state log at most: the kept segments, one the
/// retention thread has not purged yet, the new active one, the files
/// kept for reuse and the preallocated spare.
const STEADY_LOG_FILES_MAX: u64 = (SEGMENTS_KEPT + 2 + RECYCLED_SEGMENTS_MAX + 1) as u64;
/// Time bound of one steady-state log's warm-up.
const WARM_UP_TIME_MAX: Duration = Duration::from_secs(60);

/// The targets of the issue.
const TARGET_SINGLE_APPENDER_OF_SYNC_RATE: f64 = 0.80;
const TARGET_BANDWIDTH_OF_DISK: f64 = 0.70;
const TARGET_SMALL_RECORDS_PER_SECOND: f64 = 500_000.0;
const TARGET_SEQUENTIAL_READ_BYTES_PER_SECOND: f64 = 2e9;
const TARGET_OPEN_TIME_RATIO_MAX: f64 = 2.0;

/// The 64 KiB engine configurations compared with the disk's bandwidth.
const LARGE_SHAPES: [AppendShape; 4] = [
    shape(1, LARGE_RECORD_BYTES, 1),
    shape(1, LARGE_RECORD_BYTES, 16),
    shape(16, LARGE_RECORD_BYTES, 1),
    shape(16, LARGE_RECORD_BYTES, 16),
];

/// The 64 KiB configurations also measured in steady state with retention.
const STEADY_SHAPES: [AppendShape; 2] = [STEADY_SHAPE_JUDGED, shape(1, LARGE_RECORD_BYTES, 16)];
/// The steady-state configuration judged against the bandwidth target.
const STEADY_SHAPE_JUDGED: AppendShape = shape(16, LARGE_RECORD_BYTES, 16);

const fn shape(appenders: usize, record_bytes: usize, batch_records: usize) -> AppendShape {
    AppendShape {
        appenders,
        record_bytes,
        batch_records,
    }
}

struct Settings {
    rounds: usize,
    run_time: Duration,
    big_log_bytes: u64,
}

impl Settings {
    fn from_env() -> BenchResult<Self> {
        let rounds = env_u64(ROUNDS_ENV, ROUNDS_DEFAULT)?.clamp(1, ROUNDS_MAX) as usize;
        let run_ms = env_u64(RUN_MS_ENV, RUN_MS_DEFAULT)?.clamp(1, RUN_MS_MAX);
        let big_log_bytes = env_bytes(BIG_LOG_BYTES_ENV, BIG_LOG_BYTES_DEFAULT)?;
        if big_log_bytes < SMALL_LOG_BYTES {
            return Err(format!("{BIG_LOG_BYTES_ENV} must be at least {SMALL_LOG_BYTES}").into());
        }
        Ok(Self {
            rounds,
            run_time: Duration::from_millis(run_ms),
            big_log_bytes,
        })
    }

    fn limit(&self, bytes_per_operation: u64) -> RunLimit {
        RunLimit {
            operations_max: (RUN_BYTES_MAX / bytes_per_operation.max(1)).clamp(1, OPERATIONS_PER_RUN_MAX),
            time_max: self.run_time,
        }
    }
}

/// The runs of one measured series, in round order.
#[derive(Default)]
struct Series {
    runs: Vec<Measured>,
    /// Group-commit syncs of each engine run (empty for raw runs).
    syncs: Vec<u64>,
}

impl Series {
    fn median(&self, metric: fn(&Measured) -> f64) -> f64 {
        median(self.runs.iter().map(metric).collect())
    }

    fn spread(&self, metric: fn(&Measured) -> f64) -> (f64, f64) {
        let values: Vec<f64> = self.runs.iter().map(metric).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (low, high)
    }

    /// The median over rounds of this series' metric divided by the
    /// baseline's, round by round (the runs right next to each other).
    fn paired_ratio(&self, baseline: &Series, metric: fn(&Measured) -> f64) -> f64 {
        let ratios = self
            .runs
            .iter()
            .zip(&baseline.runs)
            .map(|(engine, raw)| metric(engine) / metric(raw))
            .collect();
        median(ratios)
    }

    fn records_per_sync(&self) -> Option<f64> {
        let syncs: u64 = self.syncs.iter().sum();
        let records: u64 = self.runs.iter().map(|run| run.records).sum();
        (syncs > 0).then(|| records as f64 / syncs as f64)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty());
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn records_per_second(run: &Measured) -> f64 {
    run.records_per_second()
}

fn bytes_per_second(run: &Measured) -> f64 {
    run.bytes_per_second()
}

fn seconds(run: &Measured) -> f64 {
    run.elapsed.as_secs_f64()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult<()> {
    let settings = Settings::from_env()?;
    let work = scratch::dir("report")?;
    let steady_logs_bytes = STEADY_SHAPES.len() as u64 * STEADY_LOG_FILES_MAX * RAW_FILE_BYTES;
    let needed =
        settings.big_log_bytes + SMALL_LOG_BYTES + 2 * READ_LOG_PAYLOAD_BYTES + steady_logs_bytes + RUN_BYTES_MAX;
    scratch::require_space(work.path(), needed + SPACE_MARGIN_BYTES, "the report")?;
    eprintln!(
        "report: {} rounds, runs of {:?}, big log {} MiB, files under {}",
        settings.rounds,
        settings.run_time,
        settings.big_log_bytes >> 20,
        work.path().display()
    );
    let writes = measure_writes(&settings, work.path())?;
    let reads = measure_reads(&settings, work.path())?;
    let opens = measure_opens(&settings, work.path())?;
    print!("{}", render(&settings, &writes, &reads, &opens));
    Ok(())
}

/// Every write series, raw and engine.
struct Writes {
    raw_sync: Series,
    raw_sync_watermark: Series,
    single_appender: Series,
    raw_large: Series,
    raw_record: Series,
    large: Vec<(AppendShape, Series)>,
    /// The raw bandwidth baseline run right before the steady-state runs
    /// of each round.
    raw_large_steady: Series,
    steady: Vec<Steady>,
    many_batched: Series,
    many_single: Series,
    preallocation: Series,
}

fn measure_writes(settings: &Settings, work: &Path) -> BenchResult<Writes> {
    let mut file = SyncedFile::preallocate(&work.join("raw"), RAW_FILE_BYTES)?;
    let mut writes = Writes {
        raw_sync: Series::default(),
        raw_sync_watermark: Series::default(),
        single_appender: Series::default(),
        raw_large: Series::default(),
        raw_record: Series::default(),
        large: LARGE_SHAPES.iter().map(|&shape| (shape, Series::default())).collect(),
        raw_large_steady: Series::default(),
        steady: Vec::with_capacity(STEADY_SHAPES.len()),
        many_batched: Series::default(),
        many_single: Series::default(),
        preallocation: Series::default(),
    };
    let mut steady_logs = Vec::with_capacity(STEADY_SHAPES.len());
    for shape in STEADY_SHAPES {
        steady_logs.push(SteadyLog::warmed_up(work, shape)?);
    }
    for round in 0..settings.rounds {
        eprintln!("report: writes, round {} of {}", round + 1, settings.rounds);
        sync_round(&mut writes, &mut file, settings, work)?;
        bandwidth_round(&mut writes, &mut file, settings, work)?;
        steady_round(&mut writes, &mut steady_logs, &mut file, settings)?;
        concurrency_round(&mut writes, settings, work)?;
    }
    // Closes the steady-state logs and deletes them.
    writes.steady = steady_logs.into_iter().map(|log| log.steady).collect();
    Ok(writes)
}

/// The 64 KiB runs of one shape in steady state with retention.
struct Steady {
    shape: AppendShape,
    warm_up: WarmUp,
    series: Series,
    /// Segments started and purged during each measured run.
    segments_started: Vec<u64>,
    segments_purged: Vec<u64>,
    /// `purge_before` calls of each measured run's retention thread.
    purges: Vec<u64>,
}

/// A log appended to in steady state with retention, for one shape: open
/// (and so holding its files kept for reuse) from its warm-up to the end
/// of the write rounds, deleted when dropped.
struct SteadyLog {
    // Declared before `dir`: the log closes before its directory goes.
    log: Log,
    _dir: TempDir,
    steady: Steady,
}

impl SteadyLog {
    /// A fresh log, appended to with retention until purged segment files
    /// are being reused ([`workload::warm_up_retaining`]).
    fn warmed_up(work: &Path, shape: AppendShape) -> BenchResult<Self> {
        eprintln!(
            "report: warming up a log with retention ({SEGMENTS_KEPT} segments kept), 64 KiB {}",
            shape_text(&shape)
        );
        let dir = scratch::dir_in(work, "steady")?;
        let log = workload::open_fresh(dir.path(), shape.record_bytes)?;
        let warm_up = workload::warm_up_retaining(&log, shape, SEGMENTS_KEPT, WARM_UP_TIME_MAX)?;
        Ok(Self {
            log,
            _dir: dir,
            steady: Steady {
                shape,
                warm_up,
                series: Series::default(),
                segments_started: Vec::new(),
                segments_purged: Vec::new(),
                purges: Vec::new(),
            },
        })
    }

    /// One measured run with retention, on the warmed-up log.
    fn run(&mut self, settings: &Settings) -> BenchResult<()> {
        let (log, steady) = (&self.log, &mut self.steady);
        let syncs_before = log.stats().commit_syncs;
        let first_before = workload::first_segment_sequence(log)?;
        let last_before = workload::last_segment_sequence(log)?;
        let limit = settings.limit(steady.shape.bytes_per_append());
        let run = workload::run_appenders_retaining(log, steady.shape, limit, SEGMENTS_KEPT)?;
        steady.series.syncs.push(log.stats().commit_syncs - syncs_before);
        steady.series.runs.push(run.measured);
        steady
            .segments_started
            .push(workload::last_segment_sequence(log)? - last_before);
        steady
            .segments_purged
            .push(workload::first_segment_sequence(log)? - first_before);
        steady.purges.push(run.purges);
        Ok(())
    }
}

/// Raw small syncs (plain, and with a watermark write), then the engine's
/// single appender.
fn sync_round(writes: &mut Writes, file: &mut SyncedFile, settings: &Settings, work: &Path) -> BenchResult<()> {
    let small = payload(SMALL_RECORD_BYTES, 0);
    let watermark = payload(WATERMARK_BYTES, 1);
    let limit = settings.limit(SMALL_RECORD_BYTES as u64);
    let plain = SyncPattern::writes(&small, 1);
    writes.raw_sync.runs.push(raw::run_synced_writes(file, plain, limit)?);
    let with_watermark = plain.with_watermark(&watermark);
    writes
        .raw_sync_watermark
        .runs
        .push(raw::run_synced_writes(file, with_watermark, limit)?);
    engine_run(
        &mut writes.single_appender,
        settings,
        work,
        shape(1, SMALL_RECORD_BYTES, 1),
    )
}

/// Raw durable bandwidth, the engine's 64 KiB configurations, raw 64 KiB
/// syncs, and the cost of preallocating a segment.
fn bandwidth_round(writes: &mut Writes, file: &mut SyncedFile, settings: &Settings, work: &Path) -> BenchResult<()> {
    let large = payload(RAW_LARGE_WRITE_BYTES, 0);
    let pattern = SyncPattern::writes(&large, RAW_LARGE_WRITES_PER_SYNC);
    let limit = settings.limit((RAW_LARGE_WRITE_BYTES * RAW_LARGE_WRITES_PER_SYNC) as u64);
    writes
        .raw_large
        .runs
        .push(raw::run_synced_writes(file, pattern, limit)?);
    for (shape, series) in &mut writes.large {
        engine_run(series, settings, work, *shape)?;
    }
    let record = payload(LARGE_RECORD_BYTES, 0);
    let limit = settings.limit(LARGE_RECORD_BYTES as u64);
    writes
        .raw_record
        .runs
        .push(raw::run_synced_writes(file, SyncPattern::writes(&record, 1), limit)?);
    let elapsed = raw::time_preallocation(work, RAW_FILE_BYTES)?;
    writes.preallocation.runs.push(Measured {
        operations: 1,
        bytes: RAW_FILE_BYTES,
        elapsed,
        ..Measured::default()
    });
    Ok(())
}

/// Raw durable bandwidth again, then the 64 KiB configurations in steady
/// state with retention, on their warmed-up logs.
fn steady_round(
    writes: &mut Writes,
    steady_logs: &mut [SteadyLog],
    file: &mut SyncedFile,
    settings: &Settings,
) -> BenchResult<()> {
    let large = payload(RAW_LARGE_WRITE_BYTES, 0);
    let pattern = SyncPattern::writes(&large, RAW_LARGE_WRITES_PER_SYNC);
    let limit = settings.limit((RAW_LARGE_WRITE_BYTES * RAW_LARGE_WRITES_PER_SYNC) as u64);
    writes
        .raw_large_steady
        .runs
        .push(raw::run_synced_writes(file, pattern, limit)?);
    for steady_log in steady_logs {
        steady_log.run(settings)?;
    }
    Ok(())
}

/// The engine with 64 appenders of 256 B records, batched and not.
fn concurrency_round(writes: &mut Writes, settings: &Settings, work: &Path) -> BenchResult<()> {
    engine_run(
        &mut writes.many_batched,
        settings,
        work,
        shape(64, SMALL_RECORD_BYTES, 16),
    )?;
    engine_run(
        &mut writes.many_single,
        settings,
        work,
        shape(64, SMALL_RECORD_BYTES, 1),
    )
}

/// One engine append run on a fresh log, deleted afterwards.
fn engine_run(series: &mut Series, settings: &Settings, work: &Path, shape: AppendShape) -> BenchResult<()> {
    let dir = scratch::dir_in(work, "append")?;
    let log = workload::open_fresh(dir.path(), shape.record_bytes)?;
    let syncs_before = log.stats().commit_syncs;
    let measured = workload::run_appenders(&log, shape, settings.limit(shape.bytes_per_append()))?;
    series.syncs.push(log.stats().commit_syncs - syncs_before);
    series.runs.push(measured);
    Ok(())
}

struct Reads {
    uncompressed: Series,
    compressed: Series,
    random: Series,
}

fn measure_reads(settings: &Settings, work: &Path) -> BenchResult<Reads> {
    eprintln!("report: building two {} MiB read logs", READ_LOG_PAYLOAD_BYTES >> 20);
    let plain_dir = scratch::dir_in(work, "read-plain")?;
    let plain = read_log(plain_dir.path(), Compression::Uncompressed)?;
    let compressed_dir = scratch::dir_in(work, "read-compressed")?;
    let compressed = read_log(compressed_dir.path(), Compression::All)?;
    eprintln!("report: uncompressed: {}", workload::describe(&plain));
    eprintln!("report: compressed: {}", workload::describe(&compressed));
    let mut reads = Reads {
        uncompressed: Series::default(),
        compressed: Series::default(),
        random: Series::default(),
    };
    let passes = RunLimit {
        operations_max: PASSES_PER_RUN_MAX,
        time_max: settings.run_time,
    };
    let mut rng = workload::rng();
    for round in 0..settings.rounds {
        eprintln!("report: reads, round {} of {}", round + 1, settings.rounds);
        reads
            .uncompressed
            .runs
            .push(repeat(passes, || workload::read_sequential(&plain))?);
        reads
            .compressed
            .runs
            .push(repeat(passes, || workload::read_sequential(&compressed))?);
        let limit = settings.limit(READ_RECORD_BYTES as u64);
        reads.random.runs.push(workload::read_random(&plain, &mut rng, limit)?);
    }
    Ok(reads)
}

fn read_log(dir: &Path, compression: Compression) -> BenchResult<Log> {
    workload::build_sealed_log(
        dir,
        READ_RECORD_BYTES,
        READ_LOG_PAYLOAD_BYTES,
        READ_BUILD_BATCH_RECORDS,
        compression,
    )
}

struct Opens {
    small: Series,
    big: Series,
    /// Closing right after each open (not part of the target).
    closes: Series,
    small_log: OpenLog,
    big_log: OpenLog,
}

/// A log of the open-time comparison.
struct OpenLog {
    dir: tempfile::TempDir,
    segments: usize,
    description: String,
}

fn measure_opens(settings: &Settings, work: &Path) -> BenchResult<Opens> {
    let mut opens = Opens {
        small: Series::default(),
        big: Series::default(),
        closes: Series::default(),
        small_log: open_log(work, SMALL_LOG_BYTES)?,
        big_log: open_log(work, settings.big_log_bytes)?,
    };
    for round in 0..settings.rounds {
        eprintln!("report: opens, round {} of {}", round + 1, settings.rounds);
        for _ in 0..OPENS_PER_ROUND {
            for (log, series) in [(&opens.small_log, &mut opens.small), (&opens.big_log, &mut opens.big)] {
                let timed = workload::time_open(log.dir.path())?;
                series.runs.push(timing(timed.open));
                opens.closes.runs.push(timing(timed.close));
            }
        }
    }
    Ok(opens)
}

/// Builds a log of `bytes` for the open comparison (deleted when dropped),
/// its tail segment holding [`OPEN_TAIL_RECORDS`] records.
fn open_log(work: &Path, bytes: u64) -> BenchResult<OpenLog> {
    eprintln!("report: building a {} MiB log for open times", bytes >> 20);
    let dir = scratch::dir_in(work, "open")?;
    let log = workload::build_log_with_tail(
        dir.path(),
        OPEN_RECORD_BYTES,
        bytes,
        OPEN_BUILD_BATCH_RECORDS,
        OPEN_TAIL_RECORDS,
    )?;
    let segments = log.segments().len();
    let description = workload::describe(&log);
    drop(log);
    Ok(OpenLog {
        dir,
        segments,
        description,
    })
}

/// One timed operation.
fn timing(elapsed: Duration) -> Measured {
    Measured {
        operations: 1,
        elapsed,
        ..Measured::default()
    }
}

/// One row of the results table.
struct Row {
    measure: String,
    engine: String,
    baseline: String,
    ratio: String,
    target: String,
    verdict: String,
}

impl Row {
    fn new(measure: impl Into<String>, engine: String, baseline: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            engine,
            baseline: baseline.into(),
            ratio: "—".into(),
            target: "—".into(),
            verdict: "—".into(),
        }
    }

    fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = percent(ratio);
        self
    }

    /// A target the value must reach at least.
    fn at_least(mut self, value: f64, target: f64, target_text: impl Into<String>) -> Self {
        self.target = target_text.into();
        self.verdict = if value >= target {
            "met".into()
        } else {
            format!("**missed**: {} of target", percent(value / target))
        };
        self
    }
}

fn render(settings: &Settings, writes: &Writes, reads: &Reads, opens: &Opens) -> String {
    let mut rows = write_rows(writes);
    rows.extend(read_rows(reads));
    rows.push(open_row(opens, settings));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## farmlog ratio report\n\n{} rounds, runs of {} ms; engine and raw runs alternate; figures are medians, ratios are medians of per-round ratios.\n",
        settings.rounds,
        settings.run_time.as_millis()
    );
    let _ = writeln!(out, "| Measure | Engine | Disk baseline | Ratio | Target | Verdict |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.measure, row.engine, row.baseline, row.ratio, row.target, row.verdict
        );
    }
    out.push_str(&render_notes(writes, opens));
    out.push_str(&render_spread(writes, reads, opens));
    out
}

fn write_rows(writes: &Writes) -> Vec<Row> {
    let sync_rate = writes.raw_sync.median(records_per_second);
    let single = writes.single_appender.median(records_per_second);
    let single_ratio = writes
        .single_appender
        .paired_ratio(&writes.raw_sync, records_per_second);
    let raw_bandwidth = writes.raw_large.median(bytes_per_second);
    let raw_record = writes.raw_record.median(bytes_per_second);
    let mut rows = vec![Row::new(
        "Single appender, 256 B, 1 record per append",
        rate(single),
        format!("{} (256 B pwrite + fdatasync)", syncs(sync_rate)),
    )
    .ratio(single_ratio)
    .at_least(single_ratio, TARGET_SINGLE_APPENDER_OF_SYNC_RATE, "≥ 80% of raw")];
    let watermark_ratio = writes
        .raw_sync_watermark
        .paired_ratio(&writes.raw_sync, records_per_second);
    rows.push(
        Row::new(
            "Raw 256 B pwrite + 32 B header-page pwrite + fdatasync (the engine's commit pattern, without the engine)",
            "—".into(),
            syncs(writes.raw_sync_watermark.median(records_per_second)),
        )
        .ratio(watermark_ratio),
    );
    let best = writes
        .large
        .iter()
        .max_by(|(_, a), (_, b)| a.median(bytes_per_second).total_cmp(&b.median(bytes_per_second)))
        .expect("LARGE_SHAPES is not empty");
    for (shape, series) in &writes.large {
        let ratio = series.paired_ratio(&writes.raw_large, bytes_per_second);
        let is_best = std::ptr::eq(series, &best.1);
        let mut row = Row::new(
            format!(
                "64 KiB, {}, fresh log, every segment zero-filled{}",
                shape_compact(shape),
                if is_best { " (best)" } else { "" }
            ),
            bandwidth(series.median(bytes_per_second)),
            format!("{} (16 × 1 MiB pwrite + fdatasync)", bandwidth(raw_bandwidth)),
        )
        .ratio(ratio);
        if is_best {
            row = row.at_least(ratio, TARGET_BANDWIDTH_OF_DISK, "≥ 70% of raw");
        }
        rows.push(row);
    }
    let raw_steady = writes.raw_large_steady.median(bytes_per_second);
    for steady in &writes.steady {
        let ratio = steady.series.paired_ratio(&writes.raw_large_steady, bytes_per_second);
        let mut row = Row::new(
            format!(
                "64 KiB, {}, steady state with retention ({SEGMENTS_KEPT} segments kept)",
                shape_compact(&steady.shape)
            ),
            bandwidth(steady.series.median(bytes_per_second)),
            format!("{} (16 × 1 MiB pwrite + fdatasync)", bandwidth(raw_steady)),
        )
        .ratio(ratio);
        if steady.shape == STEADY_SHAPE_JUDGED {
            row = row.at_least(ratio, TARGET_BANDWIDTH_OF_DISK, "≥ 70% of raw");
        }
        rows.push(row);
    }
    rows.push(Row::new(
        "Raw 64 KiB pwrite + fdatasync (the 1 × 1 pattern without the engine)",
        "—".into(),
        bandwidth(raw_record),
    ));
    let batched = writes.many_batched.median(records_per_second);
    rows.push(
        Row::new("256 B records, 64 appenders × batches of 16", rate(batched), "—").at_least(
            batched,
            TARGET_SMALL_RECORDS_PER_SECOND,
            "≥ 500,000 rec/s",
        ),
    );
    rows.push(Row::new(
        "256 B records, 64 appenders × 1 record",
        rate(writes.many_single.median(records_per_second)),
        "—",
    ));
    rows
}

fn read_rows(reads: &Reads) -> Vec<Row> {
    let uncompressed = reads.uncompressed.median(bytes_per_second);
    vec![
        Row::new(
            "Sequential read, uncompressed segments (4 KiB records)",
            bandwidth(uncompressed),
            "—",
        )
        .at_least(uncompressed, TARGET_SEQUENTIAL_READ_BYTES_PER_SECOND, "≥ 2 GB/s"),
        Row::new(
            "Sequential read, compressed segments (4 KiB records)",
            bandwidth(reads.compressed.median(bytes_per_second)),
            "—",
        ),
        Row::new(
            "Random read by index, uncompressed (4 KiB records)",
            rate(reads.random.median(records_per_second)),
            "—",
        ),
    ]
}

fn open_row(opens: &Opens, settings: &Settings) -> Row {
    let small = opens.small.median(seconds);
    let big = opens.big.median(seconds);
    let ratio = big.max(small) / big.min(small).max(f64::MIN_POSITIVE);
    let mut row = Row::new(
        format!("Open, {} MiB log vs 128 MiB log", settings.big_log_bytes >> 20),
        milliseconds(big),
        format!("{} (128 MiB log)", milliseconds(small)),
    );
    row.ratio = format!("{ratio:.2}×");
    row.target = "within 2×".into();
    row.verdict = if ratio <= TARGET_OPEN_TIME_RATIO_MAX {
        "met".into()
    } else {
        format!("**missed**: {ratio:.2}× apart")
    };
    row
}

fn render_notes(writes: &Writes, opens: &Opens) -> String {
    let mut out = String::from("\nNotes:\n");
    let preallocation = writes.preallocation.median(seconds);
    let raw_bandwidth = writes.raw_large.median(bytes_per_second);
    let segment = RAW_FILE_BYTES as f64;
    let ceiling = segment / (segment / raw_bandwidth + preallocation);
    let _ = writeln!(
        out,
        "- Preallocating one 64 MiB segment (zeros + fdatasync + rename + directory sync), measured: {}. Every segment's zeros reach the disk before its records do (inline or from a background preallocator, the disk writes them either way), so with the disk as the bottleneck the write path's ceiling on a fresh log is {} ({} of raw). In steady state with retention, a new segment reuses a purged file instead, whenever a purge has freed one before the rollover.",
        milliseconds(preallocation),
        bandwidth(ceiling),
        percent(ceiling / raw_bandwidth)
    );
    for (name, series) in [
        ("single appender 256 B", &writes.single_appender),
        ("64 appenders × 16 × 256 B", &writes.many_batched),
        ("64 appenders × 1 × 256 B", &writes.many_single),
    ] {
        if let Some(records) = series.records_per_sync() {
            let _ = writeln!(out, "- Records per group-commit sync, {name}: {records:.1}.");
        }
    }
    for (shape, series) in &writes.large {
        if let Some(records) = series.records_per_sync() {
            let _ = writeln!(
                out,
                "- Records per group-commit sync, 64 KiB {}, fresh log: {records:.1}.",
                shape_text(shape)
            );
        }
    }
    let _ = writeln!(
        out,
        "- 64 KiB rows: A×B is A appenders × B records per append. Fresh-log rows pair each run with the raw bandwidth run at the start of its round; steady-state rows with a second raw bandwidth run right before them."
    );
    for steady in &writes.steady {
        let runs = steady.series.runs.len() as u64;
        let _ = writeln!(
            out,
            "- Steady state with retention, 64 KiB {}: warm-up appended {} MiB in {} and purged {} segments (≥ {} needed) before the first measured run; the measured runs started {} segments and purged {} ({} purge calls; fewer calls than segments means purges fell behind, and a rollover that finds no purged file ready takes a zero-filled spare) in {runs} runs{}.",
            shape_text(&steady.shape),
            steady.warm_up.bytes >> 20,
            milliseconds(steady.warm_up.elapsed.as_secs_f64()),
            steady.warm_up.segments_purged,
            SEGMENTS_KEPT + 2,
            steady.segments_started.iter().sum::<u64>(),
            steady.segments_purged.iter().sum::<u64>(),
            steady.purges.iter().sum::<u64>(),
            match steady.series.records_per_sync() {
                Some(records) => format!("; {records:.1} records per group-commit sync"),
                None => String::new(),
            }
        );
    }
    let _ = writeln!(
        out,
        "- Open-time logs (warm page cache), built with the same tail segment: 128 MiB: {}; big: {}.",
        opens.small_log.description, opens.big_log.description
    );
    let _ = writeln!(
        out,
        "- Closing a log right after opening it (untimed in the open figures): {} median.",
        milliseconds(opens.closes.median(seconds))
    );
    let extra_segments = opens.big_log.segments.saturating_sub(opens.small_log.segments);
    if extra_segments > 0 {
        let per_segment = (opens.big.median(seconds) - opens.small.median(seconds)) / extra_segments as f64;
        let _ = writeln!(
            out,
            "- Open time per extra sealed segment: {:.1} µs (median difference over {extra_segments} segments).",
            per_segment * 1e6
        );
    }
    out
}

fn render_spread(writes: &Writes, reads: &Reads, opens: &Opens) -> String {
    let mut out = String::from(
        "\nRuns (min – median – max):\n\n| Series | Unit | Min | Median | Max | Runs |\n|---|---|---|---|---|---|\n",
    );
    let mut line = |name: &str, series: &Series, unit: &str, metric: fn(&Measured) -> f64, scale: f64| {
        let (low, high) = series.spread(metric);
        let _ = writeln!(
            out,
            "| {name} | {unit} | {:.3} | {:.3} | {:.3} | {} |",
            low * scale,
            series.median(metric) * scale,
            high * scale,
            series.runs.len()
        );
    };
    line(
        "raw 256 B + fdatasync",
        &writes.raw_sync,
        "k syncs/s",
        records_per_second,
        1e-3,
    );
    line(
        "raw 256 B + 32 B header + fdatasync",
        &writes.raw_sync_watermark,
        "k syncs/s",
        records_per_second,
        1e-3,
    );
    line(
        "engine 1 × 1 × 256 B",
        &writes.single_appender,
        "k rec/s",
        records_per_second,
        1e-3,
    );
    line(
        "raw 16 × 1 MiB + fdatasync",
        &writes.raw_large,
        "GB/s",
        bytes_per_second,
        1e-9,
    );
    line(
        "raw 64 KiB + fdatasync",
        &writes.raw_record,
        "GB/s",
        bytes_per_second,
        1e-9,
    );
    for (shape, series) in &writes.large {
        line(
            &format!("engine 64 KiB {}, fresh log", shape_text(shape)),
            series,
            "GB/s",
            bytes_per_second,
            1e-9,
        );
    }
    line(
        "raw 16 × 1 MiB + fdatasync (before steady state)",
        &writes.raw_large_steady,
        "GB/s",
        bytes_per_second,
        1e-9,
    );
    for steady in &writes.steady {
        line(
            &format!("engine 64 KiB {}, steady state", shape_text(&steady.shape)),
            &steady.series,
            "GB/s",
            bytes_per_second,
            1e-9,
        );
    }
    line(
        "engine 64 × 16 × 256 B",
        &writes.many_batched,
        "k rec/s",
        records_per_second,
        1e-3,
    );
    line(
        "engine 64 × 1 × 256 B",
        &writes.many_single,
        "k rec/s",
        records_per_second,
        1e-3,
    );
    line("raw 64 MiB preallocation", &writes.preallocation, "ms", seconds, 1e3);
    line(
        "sequential read, uncompressed",
        &reads.uncompressed,
        "GB/s",
        bytes_per_second,
        1e-9,
    );
    line(
        "sequential read, compressed",
        &reads.compressed,
        "GB/s",
        bytes_per_second,
        1e-9,
    );
    line("random read", &reads.random, "k rec/s", records_per_second, 1e-3);
    line("open 128 MiB", &opens.small, "ms", seconds, 1e3);
    line("open big", &opens.big, "ms", seconds, 1e3);
    line("close (both logs)", &opens.closes, "ms", seconds, 1e3);
    out
}

/// `16×16`: appenders × records per append.
fn shape_compact(shape: &AppendShape) -> String {
    format!("{}×{}", shape.appenders, shape.batch_records)
}

fn shape_text(shape: &AppendShape) -> String {
    let appenders = if shape.appenders == 1 { "appender" } else { "appenders" };
    let records = if shape.batch_records == 1 { "record" } else { "records" };
    format!(
        "{} {appenders} × {} {records} per append",
        shape.appenders, shape.batch_records
    )
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

fn bandwidth(bytes_per_second: f64) -> String {
    format!("{:.2} GB/s", bytes_per_second / 1e9)
}

fn rate(per_second: f64) -> String {
    format!("{} rec/s", thousands(per_second))
}

fn syncs(per_second: f64) -> String {
    format!("{} syncs/s", thousands(per_second))
}

fn milliseconds(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
