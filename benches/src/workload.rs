//! The engine under load: concurrent durable appenders, log building,
//! sequential and random reads, and open.
//!
//! Appenders run on a fresh log ([`open_fresh`], every new segment a new
//! zero-filled file) or beside a retention thread in steady state
//! ([`warm_up_retaining`], then [`run_appenders_retaining`]: a new segment
//! reuses a purged file, writing no zeros, whenever a purge has freed one
//! in time).
//!
//! Logs are opened with [`log_options`]: the defaults (64 MiB segments,
//! synced durability, background flusher) except a small disk reserve.
//! Every run is bounded by a [`RunLimit`]; building a log is bounded by the
//! record count its size implies.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use farmlog_engine::{kinds, Log, LogOptions, NewRecord};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{fill_payload, payload, touch, BenchResult, Measured, RunLimit};

/// Free space the benchmark logs keep in reserve (the default, 256 MiB,
/// would needlessly refuse appends on a nearly full scratch disk).
pub const DISK_RESERVE_BYTES_BENCH: u64 = 64 << 20;
/// Most concurrent appenders a run may start.
pub const APPENDERS_MAX: usize = 256;

/// The options of every benchmark log: see the module comment.
pub fn log_options() -> LogOptions {
    LogOptions {
        disk_reserve_bytes: DISK_RESERVE_BYTES_BENCH,
        ..LogOptions::default()
    }
}

/// What each appender of a run appends, and how many appenders there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendShape {
    /// Concurrent appender threads.
    pub appenders: usize,
    pub record_bytes: usize,
    /// Records per `Log::append` call.
    pub batch_records: usize,
}

impl AppendShape {
    pub fn records_per_append(&self) -> u64 {
        self.batch_records as u64
    }

    pub fn bytes_per_append(&self) -> u64 {
        (self.batch_records * self.record_bytes) as u64
    }
}

/// Opens a new log in `dir` (which should be empty) and appends one record
/// of `record_bytes`, so that its first segment exists before any timing.
pub fn open_fresh(dir: &Path, record_bytes: usize) -> BenchResult<Log> {
    let log = Log::open(dir, log_options())?;
    let warm_up = payload(record_bytes, 0);
    log.append(&[record(&warm_up)])?;
    Ok(log)
}

/// Runs `shape.appenders` threads, each calling `log.append` with a batch
/// of `shape.batch_records` records in a loop, until `limit` has
/// `operations_max` appends in all (claimed from one shared counter, so
/// every thread stays busy to the end) or its time runs out. Times the
/// wall clock from the moment every thread is ready; thread start is not
/// timed. The first failure stops the other appenders at their next append.
pub fn run_appenders(log: &Log, shape: AppendShape, limit: RunLimit) -> BenchResult<Measured> {
    Ok(run_appenders_with(log, shape, limit, None)?.measured)
}

/// How often the retention thread of [`run_appenders_retaining`] looks at
/// the log.
pub const RETENTION_INTERVAL: Duration = Duration::from_millis(5);

/// What a run with a retention thread did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetainedRun {
    /// The appenders' work, timed as [`run_appenders`] times it.
    pub measured: Measured,
    /// `Log::purge_before` calls the retention thread made.
    pub purges: u64,
}

/// [`run_appenders`] with a retention thread beside the appenders: every
/// [`RETENTION_INTERVAL`] it keeps only the newest `segments_kept`
/// segments ([`retain_newest`]), as a log with retention does in steady
/// state, so that purged segment files are reused for new segments. The
/// thread starts with the appenders and stops when they are done, or when
/// `limit`'s time runs out; its failure stops the appenders and is
/// returned.
pub fn run_appenders_retaining(
    log: &Log,
    shape: AppendShape,
    limit: RunLimit,
    segments_kept: usize,
) -> BenchResult<RetainedRun> {
    assert!(segments_kept > 0);
    run_appenders_with(log, shape, limit, Some(segments_kept))
}

/// Purges every segment but the newest `segments_kept` (the oldest kept
/// segment's first record becomes the log's first). True if it purged.
pub fn retain_newest(log: &Log, segments_kept: usize) -> BenchResult<bool> {
    assert!(segments_kept > 0);
    let segments = log.segments();
    if segments.len() <= segments_kept {
        return Ok(false);
    }
    log.purge_before(segments[segments.len() - segments_kept].first_index)?;
    Ok(true)
}

/// What [`warm_up_retaining`] did before the measured runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct WarmUp {
    /// Payload bytes appended.
    pub bytes: u64,
    /// Segments purged (their files recycled, up to the engine's pool).
    pub segments_purged: u64,
    pub elapsed: Duration,
}

/// Appends to `log` with retention ([`run_appenders_retaining`]), one
/// segment's worth at a time, until at least `segments_kept + 2` segments
/// have been written and purged since the call began: from then on, new
/// segments reuse purged files (the engine keeps a few for reuse), as in a
/// long-running log with retention.
/// Fails if `time_max` runs out first. The log must stay open afterwards
/// (closing it removes the files kept for reuse).
pub fn warm_up_retaining(
    log: &Log,
    shape: AppendShape,
    segments_kept: usize,
    time_max: Duration,
) -> BenchResult<WarmUp> {
    assert!(segments_kept > 0);
    let wanted = segments_kept as u64 + 2;
    let first_sequence = first_segment_sequence(log)?;
    let segment_bytes = log
        .segments()
        .last()
        .map_or(log_options().segment_bytes, |segment| segment.capacity);
    let appends_per_chunk = segment_bytes.div_ceil(shape.bytes_per_append()).max(1);
    // Each chunk fills about one segment; `wanted` purged segments need
    // `wanted + segments_kept` filled, and a few more cover chunks cut
    // short or ending just before a purge.
    let chunks_max = 4 * (wanted + segments_kept as u64) + 4;
    let start = Instant::now();
    let mut warm_up = WarmUp::default();
    for _ in 0..chunks_max {
        warm_up.segments_purged = first_segment_sequence(log)? - first_sequence;
        let left = time_max.saturating_sub(start.elapsed());
        if warm_up.segments_purged >= wanted || left.is_zero() {
            break;
        }
        let run = run_appenders_retaining(log, shape, RunLimit::count(appends_per_chunk, left), segments_kept)?;
        warm_up.bytes += run.measured.bytes;
    }
    warm_up.segments_purged = first_segment_sequence(log)? - first_sequence;
    warm_up.elapsed = start.elapsed();
    if warm_up.segments_purged < wanted {
        return Err(format!(
            "warm-up with retention purged {} of {wanted} segments ({} MiB appended in {:?}); the disk is too slow for the warm-up's bounds",
            warm_up.segments_purged,
            warm_up.bytes >> 20,
            warm_up.elapsed
        )
        .into());
    }
    Ok(warm_up)
}

/// The sequence number of the log's oldest segment: it grows by one for
/// every segment purged.
pub fn first_segment_sequence(log: &Log) -> BenchResult<u64> {
    log.segments()
        .first()
        .map(|segment| segment.sequence)
        .ok_or_else(|| "the log has no segment".into())
}

/// The sequence number of the log's newest segment: it grows by one for
/// every segment started.
pub fn last_segment_sequence(log: &Log) -> BenchResult<u64> {
    log.segments()
        .last()
        .map(|segment| segment.sequence)
        .ok_or_else(|| "the log has no segment".into())
}

/// [`run_appenders`], and [`run_appenders_retaining`] when `segments_kept`
/// is given.
fn run_appenders_with(
    log: &Log,
    shape: AppendShape,
    limit: RunLimit,
    segments_kept: Option<usize>,
) -> BenchResult<RetainedRun> {
    assert!((1..=APPENDERS_MAX).contains(&shape.appenders));
    assert!(shape.batch_records > 0);
    let gate = Gate::new(shape.appenders + usize::from(segments_kept.is_some()));
    let claimed = AtomicU64::new(0);
    // Set by the first failure, and when the appenders are done (to stop
    // the retention thread).
    let stop = AtomicBool::new(false);
    let (appends, purges, elapsed) = std::thread::scope(|scope| {
        let (gate, claimed, stop) = (&gate, &claimed, &stop);
        let mut handles = Vec::with_capacity(shape.appenders);
        for seed in 0..shape.appenders {
            let spawned = std::thread::Builder::new()
                .name(format!("appender-{seed}"))
                .spawn_scoped(scope, move || {
                    stopping_on_error(stop, appender(log, shape, seed as u64, gate, claimed, stop, limit))
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    gate.open(false);
                    return Err(format!("starting appender {seed}: {error}").into());
                }
            }
        }
        let retention = match segments_kept {
            Some(kept) => {
                let spawned = std::thread::Builder::new()
                    .name("retention".into())
                    .spawn_scoped(scope, move || {
                        stopping_on_error(stop, retain(log, kept, gate, stop, limit))
                    });
                match spawned {
                    Ok(handle) => Some(handle),
                    Err(error) => {
                        gate.open(false);
                        return Err(format!("starting the retention thread: {error}").into());
                    }
                }
            }
            None => None,
        };
        gate.wait_ready();
        let start = Instant::now();
        gate.open(true);
        let mut appends = 0;
        let mut failure = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(done)) => appends += done,
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(panic) => {
                    stop.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(panic)
                }
            }
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        let purges = match retention.map(|handle| handle.join()) {
            None => 0,
            Some(Ok(Ok(purges))) => purges,
            Some(Ok(Err(error))) => {
                failure.get_or_insert(error);
                0
            }
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        };
        match failure {
            Some(error) => Err(error),
            None => Ok::<_, crate::BenchError>((appends, purges, elapsed)),
        }
    })?;
    Ok(RetainedRun {
        measured: Measured {
            operations: appends,
            records: appends * shape.records_per_append(),
            bytes: appends * shape.bytes_per_append(),
            elapsed,
        },
        purges,
    })
}

/// Passes `result` on, first setting `stop` if it is a failure.
fn stopping_on_error<T>(stop: &AtomicBool, result: BenchResult<T>) -> BenchResult<T> {
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    result
}

fn appender(
    log: &Log,
    shape: AppendShape,
    seed: u64,
    gate: &Gate,
    claimed: &AtomicU64,
    stop: &AtomicBool,
    limit: RunLimit,
) -> BenchResult<u64> {
    let bytes = payload(shape.record_bytes, seed);
    let batch = vec![record(&bytes); shape.batch_records];
    if !gate.arrive_and_wait() {
        return Ok(0);
    }
    let deadline = Instant::now() + limit.time_max;
    let mut appends = 0;
    while claimed.fetch_add(1, Ordering::Relaxed) < limit.operations_max
        && Instant::now() < deadline
        && !stop.load(Ordering::Relaxed)
    {
        log.append(&batch)?;
        appends += 1;
    }
    Ok(appends)
}

/// The retention thread: [`retain_newest`] every [`RETENTION_INTERVAL`]
/// until `stop`, within `limit`'s time (and so at most one check per
/// interval of it). Returns how many times it purged.
fn retain(log: &Log, segments_kept: usize, gate: &Gate, stop: &AtomicBool, limit: RunLimit) -> BenchResult<u64> {
    if !gate.arrive_and_wait() {
        return Ok(0);
    }
    let deadline = Instant::now() + limit.time_max;
    let checks_max = (limit.time_max.as_nanos() / RETENTION_INTERVAL.as_nanos()).saturating_add(1);
    let mut purges = 0;
    let mut checks = 0;
    while checks < checks_max && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if retain_newest(log, segments_kept)? {
            purges += 1;
        }
        checks += 1;
        std::thread::sleep(RETENTION_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
    Ok(purges)
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        term: 1,
        group: 0,
        kind: kinds::RAW,
        payload,
    }
}

/// Where appender threads wait until all are ready and the clock starts.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    expected: usize,
}

struct GateState {
    ready: usize,
    /// `Some(true)`: go; `Some(false)`: abandon the run.
    open: Option<bool>,
}

impl Gate {
    fn new(expected: usize) -> Self {
        Self {
            state: Mutex::new(GateState { ready: 0, open: None }),
            changed: Condvar::new(),
            expected,
        }
    }

    /// Announces a ready thread and waits for the gate; false if the run
    /// was abandoned.
    fn arrive_and_wait(&self) -> bool {
        let mut state = self.lock();
        state.ready += 1;
        self.changed.notify_all();
        loop {
            if let Some(go) = state.open {
                return go;
            }
            state = self.changed.wait(state).unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn wait_ready(&self) {
        let mut state = self.lock();
        while state.ready < self.expected {
            state = self.changed.wait(state).unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn open(&self, go: bool) {
        self.lock().open = Some(go);
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Opens a new log in `dir` and fills it with about `payload_bytes_total`
/// bytes of payload in records of `record_bytes`, appended (durably) in
/// batches of `batch_records` by one appender. Every record's payload is
/// different ([`fill_payload`]), so compression sees realistic data. The
/// log is left as a writer leaves it: its last segment active, unless the
/// caller seals it.
pub fn build_log(dir: &Path, record_bytes: usize, payload_bytes_total: u64, batch_records: usize) -> BenchResult<Log> {
    assert!(record_bytes > 0 && batch_records > 0);
    let log = Log::open(dir, log_options())?;
    append_filled(
        &log,
        record_bytes,
        payload_bytes_total.div_ceil(record_bytes as u64),
        batch_records,
    )?;
    Ok(log)
}

/// A log whose active tail segment holds exactly `tail_records` records
/// whatever its size: [`build_log`] of the rest, sealed, then the tail in
/// one append. Opening scans the tail segment's records (checking each
/// crc), so logs of different sizes built this way differ, for open, only
/// in their number of sealed segments.
pub fn build_log_with_tail(
    dir: &Path,
    record_bytes: usize,
    payload_bytes_total: u64,
    batch_records: usize,
    tail_records: usize,
) -> BenchResult<Log> {
    let tail_bytes = (tail_records * record_bytes) as u64;
    let log = build_log(
        dir,
        record_bytes,
        payload_bytes_total.saturating_sub(tail_bytes),
        batch_records,
    )?;
    log.seal()?;
    append_filled(&log, record_bytes, tail_records as u64, tail_records.max(1))?;
    Ok(log)
}

/// Appends `records_total` records of `record_bytes`, each with its own
/// [`fill_payload`] content, in batches of `batch_records`.
fn append_filled(log: &Log, record_bytes: usize, records_total: u64, batch_records: usize) -> BenchResult<()> {
    let mut payloads = vec![vec![0u8; record_bytes]; batch_records];
    let seed_base = log.next_index();
    let mut records = 0;
    while records < records_total {
        let now = (records_total - records).min(batch_records as u64) as usize;
        for (position, bytes) in payloads[..now].iter_mut().enumerate() {
            fill_payload(bytes, seed_base + records + position as u64);
        }
        let batch: Vec<NewRecord<'_>> = payloads[..now].iter().map(|bytes| record(bytes)).collect();
        log.append(&batch)?;
        records += now as u64;
    }
    Ok(())
}

/// Whether [`build_sealed_log`] compresses the segments it seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Sealed segments stay plain files, read through their maps.
    Uncompressed,
    /// Every segment is sealed and compressed (`compress_cold(0)`).
    All,
}

/// [`build_log`], then seals the last segment and, with
/// [`Compression::All`], compresses every segment.
pub fn build_sealed_log(
    dir: &Path,
    record_bytes: usize,
    payload_bytes_total: u64,
    batch_records: usize,
    compression: Compression,
) -> BenchResult<Log> {
    let log = build_log(dir, record_bytes, payload_bytes_total, batch_records)?;
    log.seal()?;
    if compression == Compression::All {
        log.compress_cold(0)?;
        let stats = log.stats();
        if stats.compressed_segments != stats.segments {
            return Err(format!(
                "{} of {} segments compressed",
                stats.compressed_segments, stats.segments
            )
            .into());
        }
    }
    Ok(log)
}

/// One sequential pass over the whole log with `Log::range`, touching every
/// payload byte ([`touch`]). One operation; bytes are payload bytes.
pub fn read_sequential(log: &Log) -> BenchResult<Measured> {
    let start = Instant::now();
    let mut records = 0;
    let mut bytes = 0;
    let mut sum = 0u64;
    for record in log.range(..) {
        let record = record?;
        sum = sum.wrapping_add(touch(record.payload()));
        bytes += record.payload().len() as u64;
        records += 1;
    }
    black_box(sum);
    Ok(Measured {
        operations: 1,
        records,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// Reads records at uniformly random indexes with `Log::read`, within
/// `limit`, looking at each payload's first and last bytes. One operation
/// per read.
pub fn read_random(log: &Log, rng: &mut SmallRng, limit: RunLimit) -> BenchResult<Measured> {
    let (first, next) = (log.first_index(), log.next_index());
    if first >= next {
        return Err("random reads need a non-empty log".into());
    }
    let start = Instant::now();
    let mut reads = 0;
    let mut bytes = 0;
    while reads < limit.operations_max && start.elapsed() < limit.time_max {
        let read = log.read(rng.gen_range(first..next))?;
        let payload = read.payload();
        black_box((payload.first(), payload.last()));
        bytes += payload.len() as u64;
        reads += 1;
    }
    Ok(Measured {
        operations: reads,
        records: reads,
        bytes,
        elapsed: start.elapsed(),
    })
}

/// A random-number generator for [`read_random`], seeded for repeatability.
pub fn rng() -> SmallRng {
    SmallRng::seed_from_u64(0x00fa_4d10)
}

/// How long opening and closing a log took.
#[derive(Clone, Copy, Debug)]
pub struct OpenClose {
    /// `Log::open` for writing, recovery included.
    pub open: Duration,
    /// Dropping the log right after: stopping its threads and the final
    /// commit.
    pub close: Duration,
}

/// Opens an existing log for writing and closes it at once, timing both.
pub fn time_open(dir: &Path) -> BenchResult<OpenClose> {
    let start = Instant::now();
    let log = Log::open(dir, log_options())?;
    let open = start.elapsed();
    black_box(log.next_index());
    let start = Instant::now();
    drop(log);
    Ok(OpenClose {
        open,
        close: start.elapsed(),
    })
}

/// Segments, records and the tail (active segment) of a log, for reports.
pub fn describe(log: &Log) -> String {
    let segments = log.segments();
    let records: u64 = segments.iter().map(|segment| segment.records).sum();
    let tail = match segments.last() {
        Some(last) if !last.sealed => format!("active tail segment with {} records", last.records),
        Some(_) => "no active tail segment".to_owned(),
        None => "empty".to_owned(),
    };
    let stats = log.stats();
    format!(
        "{} segments ({} compressed), {records} records, {} MiB of files, {tail}",
        stats.segments,
        stats.compressed_segments,
        stats.file_bytes >> 20
    )
}
