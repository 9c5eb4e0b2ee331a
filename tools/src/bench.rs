//! `farmlog bench append`: concurrent appenders against a real, synced log.
//! Each of C threads appends its share of N [`kinds::BENCH`] records in
//! batches of R, and every `append` call (which returns only once its
//! batch is durable) is timed into a per-thread latency histogram; the
//! histograms are merged at the end.
//!
//! Invariants: every input is checked against a named bound before the
//! log is opened, so a bad request never panics and never writes; the
//! directory is left a valid log (closed cleanly) whatever happened; the
//! last line printed is one JSON object with every reported figure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use farmlog_engine::kinds::{self, BenchPayload};
use farmlog_engine::log::format::framed_len;
use farmlog_engine::log::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, PAYLOAD_BYTES_MAX, SEGMENT_BYTES_DEFAULT};
use farmlog_engine::{Log, LogOptions, NewRecord};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::{output_failed, Failure};

/// Most appender threads one run may start.
pub const CONCURRENCY_MAX: usize = 1024;
/// Significant decimal digits the latency histograms keep.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// How far below an unreachable `--size` to look for a reachable one.
const SIZE_SEARCH_BYTES_MAX: usize = 64;
/// The byte the bench bodies are filled with.
const BODY_FILLER: u8 = 0x5a;
/// Term and group of every bench record.
const BENCH_TERM: u64 = 1;
const BENCH_GROUP: u32 = 0;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The log directory (created if missing; an existing log is appended to).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Records to append in total, shared among the appenders.
    #[arg(long, value_name = "N")]
    pub records: u64,
    /// Payload bytes of each record (the whole archived bench payload).
    #[arg(long, value_name = "BYTES")]
    pub size: usize,
    /// Appender threads, at most 1024.
    #[arg(long, value_name = "C")]
    pub concurrency: usize,
    /// Records per `append` call.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub batch: usize,
    /// Capacity of each segment file, for a new log.
    #[arg(long, value_name = "S", default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
    /// Retention while appending: keep only the newest K segments, purging
    /// older ones as the log grows (a log in steady state, whose purged
    /// segment files are reused instead of new ones being zero-filled).
    #[arg(long, value_name = "K")]
    pub retain_segments: Option<usize>,
}

/// How often the retention thread looks at the log.
const RETENTION_INTERVAL: Duration = Duration::from_millis(5);

/// A checked request.
#[derive(Debug)]
struct Plan {
    records: u64,
    size: usize,
    body_len: usize,
    concurrency: usize,
    batch: usize,
    retain_segments: Option<usize>,
}

impl Plan {
    fn check(args: &AppendArgs) -> Result<Self, Failure> {
        if args.records == 0 {
            return Err(Failure::usage("--records must be at least 1"));
        }
        if !(1..=CONCURRENCY_MAX).contains(&args.concurrency) {
            return Err(Failure::usage(format!(
                "--concurrency must be between 1 and {CONCURRENCY_MAX}, got {}",
                args.concurrency
            )));
        }
        if !(1..=BATCH_RECORDS_MAX).contains(&args.batch) {
            return Err(Failure::usage(format!(
                "--batch must be between 1 and {BATCH_RECORDS_MAX}, got {}",
                args.batch
            )));
        }
        if args.retain_segments == Some(0) {
            return Err(Failure::usage("--retain-segments must be at least 1"));
        }
        if args.size > PAYLOAD_BYTES_MAX {
            return Err(Failure::usage(format!(
                "--size must be at most {PAYLOAD_BYTES_MAX} bytes, got {}",
                args.size
            )));
        }
        let body_len = body_len_for(args.size)?;
        let batch_bytes = framed_len(args.size) as u64 * args.batch as u64;
        if batch_bytes > BATCH_BYTES_MAX {
            return Err(Failure::usage(format!(
                "a batch of {} records of {} bytes is {batch_bytes} bytes on disk, more than the engine's {BATCH_BYTES_MAX}; lower --batch or --size",
                args.batch, args.size
            )));
        }
        Ok(Self {
            records: args.records,
            size: args.size,
            body_len,
            concurrency: args.concurrency,
            batch: args.batch,
            retain_segments: args.retain_segments,
        })
    }

    /// How many records appender `appender` writes: an even share, the
    /// first ones taking one more when N does not divide.
    fn share(&self, appender: usize) -> u64 {
        let concurrency = self.concurrency as u64;
        let extra = u64::from((appender as u64) < self.records % concurrency);
        self.records / concurrency + extra
    }
}

/// The body length that makes the archived payload exactly `size` bytes.
fn body_len_for(size: usize) -> Result<usize, Failure> {
    let overhead = kinds::bench_overhead();
    if size < overhead {
        return Err(Failure::usage(format!(
            "--size {size} is smaller than a bench payload with an empty body ({overhead} bytes); use at least {overhead}"
        )));
    }
    let body_len = size - overhead;
    let reached = encoded_len(body_len);
    if reached == size {
        return Ok(body_len);
    }
    let lower = (0..body_len)
        .rev()
        .take(SIZE_SEARCH_BYTES_MAX)
        .map(encoded_len)
        .find(|&len| len < size)
        .unwrap_or(overhead);
    Err(Failure::usage(format!(
        "--size {size} cannot be produced exactly: the archive pads the body to its alignment; use {lower} or {reached}"
    )))
}

fn encoded_len(body_len: usize) -> usize {
    kinds::encode_bench(&BenchPayload {
        appender: 0,
        sequence: 0,
        body: vec![BODY_FILLER; body_len],
    })
    .len()
}

/// What one run measured.
struct Outcome {
    seconds: f64,
    fsyncs: u64,
    latency_ns: Histogram<u64>,
}

/// `farmlog bench append`.
pub fn append(args: &AppendArgs) -> Result<(), Failure> {
    let plan = Plan::check(args)?;
    let options = LogOptions {
        segment_bytes: args.segment_bytes,
        ..LogOptions::default()
    };
    let log = Log::open(&args.dir, options)?;
    let outcome = run(&log, &plan);
    // Closing brings the watermark up to date: the directory is a valid,
    // cleanly closed log even when an appender failed.
    drop(log);
    report(&plan, &outcome?)
}

/// Starts the appenders together, waits for all, and merges their
/// histograms. The first failure stops the others at their next batch.
fn run(log: &Log, plan: &Plan) -> Result<Outcome, Failure> {
    let syncs_before = log.stats().commit_syncs;
    let gate = Gate::default();
    let stop = AtomicBool::new(false);
    let appenders_done = AtomicBool::new(false);
    let (elapsed, results) = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(plan.concurrency);
        for appender in 0..plan.concurrency {
            let (gate, stop) = (&gate, &stop);
            let spawned = std::thread::Builder::new()
                .name(format!("bench-appender-{appender}"))
                .spawn_scoped(scope, move || {
                    gate.wait();
                    let result = append_share(log, plan, appender, stop);
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    handles.clear();
                    gate.open();
                    return (
                        Duration::ZERO,
                        vec![Err(Failure::usage(format!(
                            "starting appender thread {appender}: {error}"
                        )))],
                    );
                }
            }
        }
        let started = Instant::now();
        gate.open();
        let appenders_done = &appenders_done;
        let retention = plan
            .retain_segments
            .map(|keep| scope.spawn(move || retain(log, keep, appenders_done)));
        let results: Vec<_> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(Failure::usage("an appender thread panicked")))
            })
            .collect();
        let elapsed = started.elapsed();
        appenders_done.store(true, Ordering::Relaxed);
        let retained = retention.map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(Failure::usage("the retention thread panicked")))
        });
        let mut results = results;
        if let Some(Err(error)) = retained {
            results.push(Err(error));
        }
        (elapsed, results)
    });
    let mut latency_ns = new_histogram()?;
    for result in results {
        latency_ns
            .add(result?)
            .map_err(|error| Failure::usage(format!("merging latency histograms: {error}")))?;
    }
    Ok(Outcome {
        seconds: elapsed.as_secs_f64(),
        fsyncs: log.stats().commit_syncs - syncs_before,
        latency_ns,
    })
}

/// The retention loop: keeps the newest `keep` segments until the
/// appenders are done. Its histogram is empty; it only purges.
fn retain(log: &Log, keep: usize, done: &AtomicBool) -> Result<Histogram<u64>, Failure> {
    while !done.load(Ordering::Relaxed) {
        let segments = log.segments();
        if segments.len() > keep {
            log.purge_before(segments[segments.len() - keep].first_index)?;
        }
        std::thread::sleep(RETENTION_INTERVAL);
    }
    new_histogram()
}

/// One appender's loop: its share of records, in batches, each `append`
/// timed. Payloads are encoded outside the timed section.
fn append_share(log: &Log, plan: &Plan, appender: usize, stop: &AtomicBool) -> Result<Histogram<u64>, Failure> {
    let mut latency_ns = new_histogram()?;
    let count = plan.share(appender);
    let body = vec![BODY_FILLER; plan.body_len];
    let mut sequence = 0;
    while sequence < count && !stop.load(Ordering::Relaxed) {
        let batch_len = (plan.batch as u64).min(count - sequence);
        let payloads: Vec<Vec<u8>> = (sequence..sequence + batch_len)
            .map(|sequence| {
                kinds::encode_bench(&BenchPayload {
                    appender: appender as u32,
                    sequence,
                    body: body.clone(),
                })
            })
            .collect();
        debug_assert!(payloads.iter().all(|payload| payload.len() == plan.size));
        let batch: Vec<NewRecord<'_>> = payloads
            .iter()
            .map(|payload| NewRecord {
                term: BENCH_TERM,
                group: BENCH_GROUP,
                kind: kinds::BENCH,
                payload,
            })
            .collect();
        let began = Instant::now();
        log.append(&batch)?;
        let nanos = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // `record`, not `saturating_record`: only `record` grows an
        // auto-resizing histogram; the saturating one clamps to its range.
        latency_ns
            .record(nanos.max(1))
            .map_err(|error| Failure::usage(format!("recording a latency of {nanos} ns: {error}")))?;
        sequence += batch_len;
    }
    Ok(latency_ns)
}

/// An auto-resizing histogram: it holds only the range actually seen, so
/// a thousand appenders do not each allocate an hour's worth of buckets.
fn new_histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new(LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|error| Failure::usage(format!("creating a latency histogram: {error}")))
}

fn report(plan: &Plan, outcome: &Outcome) -> Result<(), Failure> {
    let seconds = outcome.seconds.max(f64::MIN_POSITIVE);
    let records_per_sec = plan.records as f64 / seconds;
    let mb_per_sec = (plan.records as f64 * plan.size as f64) / seconds / 1e6;
    let records_per_fsync = (outcome.fsyncs > 0).then(|| plan.records as f64 / outcome.fsyncs as f64);
    let quantile_us = |quantile: f64| outcome.latency_ns.value_at_quantile(quantile) as f64 / 1e3;
    let (p50_us, p99_us, p999_us) = (quantile_us(0.5), quantile_us(0.99), quantile_us(0.999));
    let summary = json!({
        "records": plan.records,
        "size": plan.size,
        "concurrency": plan.concurrency,
        "batch": plan.batch,
        "seconds": outcome.seconds,
        "records_per_sec": records_per_sec,
        "mb_per_sec": mb_per_sec,
        "fsyncs": outcome.fsyncs,
        "records_per_fsync": records_per_fsync,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "p999_us": p999_us,
    });
    let per_fsync = records_per_fsync.map_or_else(|| "n/a (no fsync)".to_owned(), |value| format!("{value:.2}"));
    let text = format!(
        "appended {} records of {} bytes from {} appenders in batches of {} in {:.3} s\n\
         records/s:         {records_per_sec:.1}\n\
         MB/s:              {mb_per_sec:.3}\n\
         fsyncs:            {}\n\
         records per fsync: {per_fsync}\n\
         append latency:    p50 {p50_us:.1} us, p99 {p99_us:.1} us, p999 {p999_us:.1} us\n\
         {summary}",
        plan.records, plan.size, plan.concurrency, plan.batch, outcome.seconds, outcome.fsyncs,
    );
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{text}\n").as_bytes()).map_err(output_failed)
}

/// A one-shot start signal, so that the appenders begin together and the
/// clock does not count thread start-up.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|poison| poison.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|poison| poison.into_inner()) = true;
        self.opened.notify_all();
    }
}
