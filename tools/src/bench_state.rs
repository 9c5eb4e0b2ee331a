//! `farmlog bench state`: the state machine against a real log.
//!
//! Four phases, each timed on its own:
//! 1. **write**: N commands from the seeded [`Workload`] are encoded
//!    ([`encode`](farmlog_engine::state::encode)), packed B to a record
//!    ([`BatchBuilder`]) and appended through the real engine, one synced
//!    `Log::append` per record, as a leader appends Raft entries.
//!    Generating and encoding (which includes the workload applying each
//!    command to its own model, to see what polls hand out) are timed
//!    apart from the appends.
//! 2. **apply** (the figure that matters): the log is closed, opened
//!    read-only, and every record is read back with `Log::range` and
//!    folded into a fresh [`State`] on this one thread.
//! 3. **hash and snapshot**: [`State::hash`], [`State::snapshot`] (build
//!    time, compressed and archive sizes).
//! 4. **restore**: [`State::restore`] of that snapshot; the restored
//!    state's hash must equal the original's.
//!
//! The report gives every family's commands and verdicts (from the
//! workload's model, whose totals must equal the fold's: apply does not
//! depend on how commands are packed into records), the rejection rate,
//! what the back-channel did, and the fold's counts and transitions.
//!
//! Invariants: every input is checked against a named bound before
//! anything is written; the directory must be new or empty (the workload
//! assumes a fresh state), and is left a cleanly closed log that `dump`,
//! `verify` and `replay` accept, `replay` giving the hash printed here;
//! the last line printed is one JSON object with every figure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use farmlog_engine::kinds;
use farmlog_engine::log::SEGMENT_BYTES_DEFAULT;
use farmlog_engine::state::batch::BATCH_COMMANDS_MAX;
use farmlog_engine::state::{BatchBuilder, State};
use farmlog_engine::{Log, LogOptions, NewRecord};
use serde_json::{json, Value};

use crate::preview::hex;
use crate::replay::{apply_record, StateCounts, Tally};
use crate::workload::{MixReport, Shape, Workload, CUSTOMERS_MAX};
use crate::{output_failed, Failure};

/// Most commands one run may generate.
pub const EVENTS_MAX: u64 = 1 << 32;
/// Commands per record unless `--batch` says otherwise.
pub const BATCH_DEFAULT: usize = 256;
/// Term and group of every record the bench writes.
const BENCH_TERM: u64 = 1;
const BENCH_GROUP: u32 = 0;
/// The targets the figures are reported against.
const APPLY_EVENTS_PER_SEC_TARGET: f64 = 1e6;
const RESTORE_SECONDS_PER_MILLION_OBJECTS_TARGET: f64 = 2.0;

#[derive(Debug, Args)]
pub struct StateArgs {
    /// The log directory: must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Commands to generate (setup included).
    #[arg(long, value_name = "N")]
    pub events: u64,
    /// Commands per command-batch record.
    #[arg(long, value_name = "B", default_value_t = BATCH_DEFAULT)]
    pub batch: usize,
    /// Customers in the generated farm (each with 2 proxies, 8 integration
    /// modules, 64 support instances and 16 streams).
    /// Each also has a fleet of proxies for the back-channel (2–20; 100–300
    /// for one in 5; 1000 for one in 25).
    #[arg(long, value_name = "C", default_value_t = 100)]
    pub customers: usize,
    /// Leave the back-channel out: no fleets or spool settings in the
    /// setup, and only the upstream part of the mix (messages, streams,
    /// topology), as the workload was before the back-channel.
    #[arg(long)]
    pub no_back_channel: bool,
    /// Seed of the workload's random generator.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Capacity of each segment file.
    #[arg(long, value_name = "BYTES", default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
}

/// A checked request.
struct Plan {
    events: u64,
    batch: usize,
    shape: Shape,
    seed: u64,
}

impl Plan {
    fn check(args: &StateArgs) -> Result<Self, Failure> {
        if !(1..=EVENTS_MAX).contains(&args.events) {
            return Err(Failure::usage(format!(
                "--events must be between 1 and {EVENTS_MAX}, got {}",
                args.events
            )));
        }
        if !(1..=BATCH_COMMANDS_MAX).contains(&args.batch) {
            return Err(Failure::usage(format!(
                "--batch must be between 1 and {BATCH_COMMANDS_MAX}, got {}",
                args.batch
            )));
        }
        if !(1..=CUSTOMERS_MAX).contains(&args.customers) {
            return Err(Failure::usage(format!(
                "--customers must be between 1 and {CUSTOMERS_MAX}, got {}",
                args.customers
            )));
        }
        check_empty(&args.dir)?;
        Ok(Self {
            events: args.events,
            batch: args.batch,
            shape: Shape {
                back_channel: !args.no_back_channel,
                ..Shape::with_customers(args.customers)
            },
            seed: args.seed,
        })
    }
}

/// The workload registers everything from scratch: an existing log would
/// make its commands fail.
fn check_empty(dir: &Path) -> Result<(), Failure> {
    match std::fs::read_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Failure::usage(format!("reading {}: {error}", dir.display()))),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Failure::usage(format!(
                "{} is not empty: bench state writes a new log, give it a new or empty directory",
                dir.display()
            ))),
        },
    }
}

/// What the write phase did.
struct Written {
    records: u64,
    payload_bytes: u64,
    setup_commands: usize,
    generate: Duration,
    append: Duration,
    /// The verdicts the workload's model saw.
    mix: MixReport,
}

/// What the apply phase did.
struct Applied {
    state: State,
    tally: Tally,
    /// Reading the records and applying them.
    elapsed: Duration,
    /// `State::apply` alone.
    apply: Duration,
}

struct Snapshotted {
    hash: [u8; 32],
    hash_time: Duration,
    build: Duration,
    snapshot_bytes: u64,
    archive_bytes: u64,
    restore: Duration,
}

/// `farmlog bench state`.
pub fn state(args: &StateArgs) -> Result<(), Failure> {
    let plan = Plan::check(args)?;
    let options = LogOptions {
        segment_bytes: args.segment_bytes,
        ..LogOptions::default()
    };
    let log = Log::open(&args.dir, options)?;
    let written = write(&log, &plan);
    // Closing brings the watermark up to date: the directory is a valid,
    // cleanly closed log even when writing failed.
    drop(log);
    let written = written?;
    let applied = apply(&args.dir)?;
    let snapshotted = snapshot(&applied.state)?;
    report(&plan, &written, &applied, &snapshotted)?;
    check_model(&written.mix, &applied.tally)
}

/// The workload's model applied every command one to a record; the fold
/// applied them B to a record. Their verdicts must agree.
fn check_model(mix: &MixReport, tally: &Tally) -> Result<(), Failure> {
    let total = mix.total();
    let agrees = (total.commands, total.applied, total.rejected, mix.fired)
        == (tally.commands, tally.applied, tally.rejected, tally.fired);
    match agrees {
        true => Ok(()),
        false => Err(Failure::usage(format!(
            "the workload's model and the fold disagree: model {} commands, {} applied, {} rejected, {} fired; fold {} commands, {} applied, {} rejected, {} fired",
            total.commands, total.applied, total.rejected, mix.fired, tally.commands, tally.applied, tally.rejected, tally.fired
        ))),
    }
}

/// Generates, encodes, packs and appends the commands.
fn write(log: &Log, plan: &Plan) -> Result<Written, Failure> {
    let mut workload = Workload::new(plan.shape, plan.seed);
    let setup_commands = workload.setup_len();
    let mut written = Written {
        records: 0,
        payload_bytes: 0,
        setup_commands,
        generate: Duration::ZERO,
        append: Duration::ZERO,
        mix: MixReport::default(),
    };
    let mut remaining = plan.events;
    while remaining > 0 {
        let began = Instant::now();
        let count = remaining.min(plan.batch as u64);
        let mut batch = BatchBuilder::new();
        for _ in 0..count {
            let encoded = workload.next_encoded().map_err(|invalid| {
                let (command, error) = *invalid;
                Failure::usage(format!(
                    "the workload generated an invalid command ({error}): {command:?}"
                ))
            })?;
            // A record is full by count before it is by bytes: the
            // workload's commands are small.
            batch
                .push(encoded)
                .map_err(|_| Failure::usage("a command batch overflowed"))?;
        }
        let payload = batch.finish();
        written.generate += began.elapsed();
        let record = NewRecord {
            term: BENCH_TERM,
            group: BENCH_GROUP,
            kind: kinds::COMMAND_BATCH,
            payload: &payload,
        };
        let began = Instant::now();
        log.append(&[record])?;
        written.append += began.elapsed();
        written.records += 1;
        written.payload_bytes += payload.len() as u64;
        remaining -= count;
    }
    written.mix = workload.report().clone();
    Ok(written)
}

/// Reads the log back and folds it into a fresh state, timed.
fn apply(dir: &Path) -> Result<Applied, Failure> {
    let log = Log::open_read_only(dir)?;
    let mut state = State::new();
    let mut tally = Tally::default();
    let mut apply = Duration::ZERO;
    let began = Instant::now();
    for item in log.range(..) {
        let record = item?;
        let applying = Instant::now();
        apply_record(&mut state, &record, &mut tally).map_err(|error| Failure::Damaged {
            message: format!("apply stopped: {error}"),
            location: None,
        })?;
        apply += applying.elapsed();
    }
    let elapsed = began.elapsed();
    Ok(Applied {
        state,
        tally,
        elapsed,
        apply,
    })
}

/// Hashes, snapshots and restores the state, each timed.
fn snapshot(state: &State) -> Result<Snapshotted, Failure> {
    let began = Instant::now();
    let hash = state.hash();
    let hash_time = began.elapsed();
    let began = Instant::now();
    let bytes = state.snapshot();
    let build = began.elapsed();
    let info = State::snapshot_info(&bytes).map_err(|error| Failure::usage(format!("a fresh snapshot: {error}")))?;
    let began = Instant::now();
    let restored =
        State::restore(&bytes).map_err(|error| Failure::usage(format!("restoring the snapshot: {error}")))?;
    let restore = began.elapsed();
    if restored.hash() != hash {
        return Err(Failure::usage("the restored state's hash differs from the original's"));
    }
    Ok(Snapshotted {
        hash,
        hash_time,
        build,
        snapshot_bytes: bytes.len() as u64,
        archive_bytes: info.archive_bytes,
        restore,
    })
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

fn report(plan: &Plan, written: &Written, applied: &Applied, snapshotted: &Snapshotted) -> Result<(), Failure> {
    let counts = StateCounts::of(&applied.state);
    let objects = counts.objects();
    let events_per_sec = per_sec(plan.events, applied.elapsed);
    let apply_only_per_sec = per_sec(plan.events, applied.apply);
    let restore_per_million = snapshotted.restore.as_secs_f64() * 1e6 / objects.max(1) as f64;
    let summary = json!({
        "events": plan.events,
        "batch": plan.batch,
        "customers": plan.shape.customers,
        "seed": plan.seed,
        "setup_commands": written.setup_commands,
        "records": written.records,
        "payload_bytes": written.payload_bytes,
        "generate_seconds": written.generate.as_secs_f64(),
        "append_seconds": written.append.as_secs_f64(),
        "apply_seconds": applied.elapsed.as_secs_f64(),
        "apply_only_seconds": applied.apply.as_secs_f64(),
        "apply_events_per_sec": events_per_sec,
        "apply_only_events_per_sec": apply_only_per_sec,
        "hash_seconds": snapshotted.hash_time.as_secs_f64(),
        "snapshot_seconds": snapshotted.build.as_secs_f64(),
        "snapshot_bytes": snapshotted.snapshot_bytes,
        "archive_bytes": snapshotted.archive_bytes,
        "restore_seconds": snapshotted.restore.as_secs_f64(),
        "restore_seconds_per_million_objects": restore_per_million,
        "objects": objects,
        "mix": written.mix.to_json(),
        "state_hash": hex(&snapshotted.hash),
        "counts": counts.to_json(),
        "outcomes": applied.tally.to_json(),
    });
    let mut out = Vec::new();
    write_text(&mut out, plan, written, applied, snapshotted, &counts, &summary).map_err(output_failed)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(output_failed)
}

/// Every family's commands and verdicts, the rejections by family, and
/// what the back-channel did.
fn write_mix(out: &mut impl Write, mix: &MixReport) -> std::io::Result<()> {
    let total = mix.total();
    let percent = |part: u64, whole: u64| 100.0 * part as f64 / whole.max(1) as f64;
    writeln!(
        out,
        "mix:      {} commands, {} applied, {} rejected ({:.3}%); generating included {:.3} s of the model's own apply",
        total.commands,
        total.applied,
        total.rejected,
        percent(total.rejected, total.commands),
        mix.model_apply.as_secs_f64()
    )?;
    for (family, count) in mix.present() {
        writeln!(
            out,
            "  {family:<18} {:>9} ({:>5.2}%) {:>9} applied {:>7} rejected ({:.3}%)",
            count.commands,
            percent(count.commands, total.commands),
            count.applied,
            count.rejected,
            percent(count.rejected, count.commands)
        )?;
    }
    for ((family, kind), count) in &mix.rejections {
        writeln!(out, "  rejected {family} {kind}: {count}")?;
    }
    let back = &mix.back_channel;
    writeln!(
        out,
        "back-channel: {} deliveries published ({} pruned); {} handouts of {} deliveries ({} polls empty); {} handouts left unsettled",
        back.deliveries_published,
        back.pruned,
        back.handouts,
        back.deliveries_handed_out,
        back.polls_empty,
        mix.handouts_dropped
    )?;
    writeln!(
        out,
        "  settled: {} acked, {} respooled, {} parked, {} unchanged; {} re-driven",
        back.acked, back.respooled, back.parked, back.unchanged, back.redriven
    )?;
    writeln!(
        out,
        "  bulk transfers: {} requested, {} granted, {} denied, {} transferred",
        back.transfers_requested, back.transfers_granted, back.transfers_denied, back.transfers_transferred
    )
}

fn write_text(
    out: &mut impl Write,
    plan: &Plan,
    written: &Written,
    applied: &Applied,
    snapshotted: &Snapshotted,
    counts: &StateCounts,
    summary: &Value,
) -> std::io::Result<()> {
    let seconds = |duration: Duration| duration.as_secs_f64();
    let objects = counts.objects();
    let events_per_sec = per_sec(plan.events, applied.elapsed);
    let restore_per_million = seconds(snapshotted.restore) * 1e6 / objects.max(1) as f64;
    writeln!(
        out,
        "generated {} commands ({} of setup; {} customers, seed {}) into {} records of up to {} commands, {} payload bytes",
        plan.events,
        written.setup_commands.min(plan.events as usize),
        plan.shape.customers,
        plan.seed,
        written.records,
        plan.batch,
        written.payload_bytes
    )?;
    writeln!(
        out,
        "write:    generate + encode + pack {:.3} s; append {:.3} s ({} synced appends, {:.1} MB/s)",
        seconds(written.generate),
        seconds(written.append),
        written.records,
        written.payload_bytes as f64 / seconds(written.append).max(f64::MIN_POSITIVE) / 1e6
    )?;
    writeln!(
        out,
        "apply:    {} events from {} records in {:.3} s on one thread: {:.0} events/s (State::apply alone {:.3} s: {:.0} events/s)",
        plan.events,
        written.records,
        seconds(applied.elapsed),
        events_per_sec,
        seconds(applied.apply),
        per_sec(plan.events, applied.apply)
    )?;
    write_mix(out, &written.mix)?;
    applied.tally.write_text(out)?;
    counts.write_text(out)?;
    writeln!(
        out,
        "hash:     {} ({:.3} s)",
        hex(&snapshotted.hash),
        seconds(snapshotted.hash_time)
    )?;
    writeln!(
        out,
        "snapshot: built in {:.3} s, {} bytes ({} bytes of archive before compression)",
        seconds(snapshotted.build),
        snapshotted.snapshot_bytes,
        snapshotted.archive_bytes
    )?;
    writeln!(
        out,
        "restore:  {:.3} s for {objects} objects ({restore_per_million:.3} s per million objects), hash equal",
        seconds(snapshotted.restore)
    )?;
    // The apply target is set for the upstream mix: with the back-channel,
    // one multicast publish is one event that spools up to 1000 deliveries,
    // so events/s is reported but not judged (the spool targets have their
    // own bench: `cargo run --release -p farmlog-benches --bin spools`).
    let apply_verdict = match plan.shape.back_channel {
        false => verdict(events_per_sec >= APPLY_EVENTS_PER_SEC_TARGET).to_owned(),
        true => "judged on --no-back-channel".to_owned(),
    };
    writeln!(
        out,
        "targets:  apply >= 1000000 events/s: {apply_verdict} ({events_per_sec:.0}); restore of 1 M objects < 2 s: {} ({restore_per_million:.3} s per million, measured on {objects})",
        verdict(restore_per_million < RESTORE_SECONDS_PER_MILLION_OBJECTS_TARGET)
    )?;
    writeln!(out, "{summary}")
}
