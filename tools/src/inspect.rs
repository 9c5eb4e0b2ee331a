//! The offline inspectors: `dump`, `verify` and `stat` (`replay` is in
//! [`crate::replay`]). Each opens the log with [`Log::open_read_only`],
//! which never writes, truncates or takes the directory lock, so they are
//! safe beside a running writer and never change what they look at.
//!
//! Invariants: a torn tail (never acknowledged) is a warning, never a
//! failure; damage or a lost acknowledged record is reported with its
//! segment, offset and index and ends the command with exit code 1; what
//! could be read before the damage is still printed. A command batch whose
//! bytes are intact but which apply would refuse is shown with its error
//! in place and also ends `dump` with exit code 1.

use std::io::{BufWriter, IsTerminal, Write};

use farmlog_engine::{kinds, Error, Log, Record, RecoveryReport, SegmentInfo, TailCase};
use farmlog_replica::entry::MembershipRecord;
use farmlog_replica::schema;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::preview::Preview;
use crate::state_view::BatchView;
use crate::{output_failed, DumpArgs, Failure, StatArgs, VerifyArgs};

/// Most payload bytes a RAW (or unknown) record shows in a dump.
pub const PREVIEW_BYTES_MAX: usize = 64;

/// `farmlog dump`: every record of the range, one line (or JSON object)
/// each; a command batch's text form adds one indented line per command.
/// After a read error it prints the error in the stream as the failing
/// record's crc status, then fails with its location. A command batch that
/// apply would refuse is shown with its error and the dump goes on, then
/// fails (exit 1) naming the first such record.
pub fn dump(args: &DumpArgs) -> Result<(), Failure> {
    let from = args.from.unwrap_or(0);
    let to = args.to.unwrap_or(u64::MAX);
    if from > to {
        return Err(Failure::usage(format!("--from {from} is after --to {to}")));
    }
    let log = Log::open_read_only(&args.dir)?;
    warn_about_torn_tail(log.recovery_report());
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut expected = from.max(log.first_index());
    let mut unsound = UnsoundBatches::default();
    for item in log.range(from..=to) {
        match item {
            Ok(record) => {
                let damage = write_record(&mut out, &record, args.json).map_err(output_failed)?;
                unsound.note(&record, damage);
                expected = record.index() + 1;
            }
            Err(error) => {
                write_read_error(&mut out, expected, &error, args.json).map_err(output_failed)?;
                out.flush().map_err(output_failed)?;
                return Err(Failure::from(error));
            }
        }
    }
    out.flush().map_err(output_failed)?;
    fail_on_lost_records(log.recovery_report())?;
    unsound.into_result()
}

/// Command-batch records whose bytes are intact (crc ok) but which apply
/// would refuse. The dump shows each in place and goes on; the first one
/// fails the command at the end.
#[derive(Default)]
struct UnsoundBatches {
    first: Option<String>,
    count: u64,
}

impl UnsoundBatches {
    fn note(&mut self, record: &Record, damage: Option<String>) {
        let Some(reason) = damage else {
            return;
        };
        self.count += 1;
        if self.first.is_none() {
            let (segment, offset) = record.location();
            self.first = Some(format!(
                "record {} (segment {segment}, offset {offset}) cannot be applied: {reason}",
                record.index()
            ));
        }
    }

    fn into_result(self) -> Result<(), Failure> {
        match self.first {
            None => Ok(()),
            Some(first) => Err(Failure::Damaged {
                message: format!("{first} ({} unsound command batch(es) in the range)", self.count),
                location: None,
            }),
        }
    }
}

/// `farmlog verify`: the engine's full check, with a progress bar on a
/// terminal. A clean log prints one summary line.
pub fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    let log = Log::open_read_only(&args.dir).map_err(verify_failure)?;
    warn_about_torn_tail(log.recovery_report());
    let progress = progress_bar(&log.segments());
    let result = log.verify(&mut |bytes| progress.set_position(bytes));
    progress.finish_and_clear();
    let summary = result.map_err(verify_failure)?;
    println!(
        "ok: {} segments, {} records, {} bytes of records checked",
        summary.segments, summary.records, summary.bytes
    );
    Ok(())
}

/// `farmlog stat`: segments, counts, sizes and indexes.
pub fn stat(args: &StatArgs) -> Result<(), Failure> {
    let log = Log::open_read_only(&args.dir)?;
    let report = log.recovery_report();
    warn_about_torn_tail(report);
    if let TailCase::DurableDamaged(corruption) = &report.tail {
        eprintln!("farmlog: warning: acknowledged record lost: {corruption}; run `farmlog verify`");
    }
    let segments = log.segments();
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        writeln!(out, "{}", stat_json(&log, &segments)).map_err(output_failed)?;
    } else {
        write_stat_text(&mut out, &log, &segments).map_err(output_failed)?;
    }
    out.flush().map_err(output_failed)
}

fn stat_json(log: &Log, segments: &[SegmentInfo]) -> Value {
    let stats = log.stats();
    json!({
        "dir": log.dir().display().to_string(),
        "segment_count": stats.segments,
        "compressed_segments": stats.compressed_segments,
        "records": stats.next_index - stats.first_index,
        "file_bytes": stats.file_bytes,
        "first_index": stats.first_index,
        "last_index": log.last_index(),
        "tail": describe_tail(&log.recovery_report().tail),
        "segments": segments.iter().map(segment_json).collect::<Vec<_>>(),
    })
}

fn verify_failure(error: Error) -> Failure {
    match Failure::from(error) {
        Failure::Damaged { message, location } => Failure::Damaged {
            message: format!("verify failed: {message}"),
            location,
        },
        other => other,
    }
}

/// A bar of framed bytes checked against the segments' capacities (an
/// upper bound: segments are rarely full). Hidden unless stderr is a
/// terminal, so pipes and tests see no escape codes.
fn progress_bar(segments: &[SegmentInfo]) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total = segments.iter().map(|segment| segment.capacity).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("verifying [{bar:30}] {bytes} checked ({bytes_per_sec})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub fn warn_about_torn_tail(report: &RecoveryReport) {
    if let TailCase::TornTail { .. } = &report.tail {
        eprintln!(
            "farmlog: warning: {}; it was never acknowledged durable (normal after a crash) and the next writable open cuts it off",
            describe_tail(&report.tail)
        );
    }
}

/// A read-only open reports a damaged acknowledged record instead of
/// failing; the log then ends before it, so a dump that ended cleanly
/// must still fail.
fn fail_on_lost_records(report: &RecoveryReport) -> Result<(), Failure> {
    match &report.tail {
        TailCase::DurableDamaged(corruption) => Err(Failure::Damaged {
            message: format!("acknowledged record lost: {corruption}; the records printed are all that could be read"),
            location: Some(corruption.clone()),
        }),
        _ => Ok(()),
    }
}

fn describe_tail(tail: &TailCase) -> String {
    match tail {
        TailCase::Sealed => "sealed (no active segment)".to_owned(),
        TailCase::CleanEnd => "clean end".to_owned(),
        TailCase::TornTail {
            segment,
            offset,
            index,
            kind,
        } => format!("torn tail ({kind}) in segment {segment} at offset {offset}, where index {index} would be"),
        TailCase::DurableDamaged(corruption) => format!("acknowledged record lost: {corruption}"),
    }
}

/// Writes one record; returns why its payload cannot be applied, if it
/// is a command batch that is not sound.
fn write_record(out: &mut impl Write, record: &Record, json: bool) -> std::io::Result<Option<String>> {
    let (segment, offset) = record.location();
    let kind = record.kind();
    let payload = record.payload();
    let decoded = Payload::decode(kind, payload);
    let damage = decoded.damage().map(str::to_owned);
    if json {
        let object = json!({
            "index": record.index(),
            "term": record.term(),
            "group": record.group(),
            "type": kind,
            "type_name": kinds::name(kind),
            "length": payload.len(),
            "crc": "ok",
            "segment": segment,
            "offset": offset,
            "payload": decoded.to_json(),
        });
        writeln!(out, "{object}")?;
        return Ok(damage);
    }
    writeln!(
        out,
        "index={} term={} group={} type={}:{} length={} crc=ok segment={} offset={} {}",
        record.index(),
        record.term(),
        record.group(),
        kind,
        kinds::name(kind).unwrap_or("unknown"),
        payload.len(),
        segment,
        offset,
        decoded.to_text(),
    )?;
    if let Payload::Commands(batch) = &decoded {
        batch.write_commands(out)?;
    }
    Ok(damage)
}

/// The failing position in the dump stream: its crc status is the error.
fn write_read_error(out: &mut impl Write, expected: u64, error: &Error, json: bool) -> std::io::Result<()> {
    let corruption = error.corruption();
    let index = corruption.and_then(|corruption| corruption.index).unwrap_or(expected);
    if json {
        let object = json!({
            "index": index,
            "crc": error.to_string(),
            "segment": corruption.map(|corruption| corruption.segment),
            "offset": corruption.map(|corruption| corruption.offset),
        });
        return writeln!(out, "{object}");
    }
    writeln!(out, "index={index} crc=error: {error}")
}

/// A record's payload as a dump shows it.
enum Payload {
    /// A [`kinds::BENCH`] payload, read in place (zero-copy).
    Bench {
        appender: u32,
        sequence: u64,
        body_length: usize,
    },
    /// A BENCH-tagged payload that is not a valid archive.
    InvalidBench(String),
    /// A [`kinds::COMMAND_BATCH`] payload: every command, or why not.
    Commands(BatchView),
    /// A [`kinds::BLANK`] entry (a new leader's first).
    Blank,
    /// A [`kinds::MEMBERSHIP`] entry: the voter sets (two while joint) and
    /// every node's address; or why it cannot be read.
    Membership(Result<MembershipRecord, String>),
    /// A [`kinds::SCHEMA`] entry: the command schema version the cluster
    /// moves to; or why it cannot be read.
    Schema(Result<u16, String>),
    /// The first [`PREVIEW_BYTES_MAX`] bytes of anything else, as text
    /// when they are printable UTF-8, as hex when they are not.
    Preview(Preview),
}

impl Payload {
    fn decode(kind: u16, payload: &[u8]) -> Self {
        match kind {
            kinds::BENCH => match kinds::access_bench(payload) {
                Ok(bench) => Self::Bench {
                    appender: bench.appender.to_native(),
                    sequence: bench.sequence.to_native(),
                    body_length: bench.body.len(),
                },
                Err(reason) => Self::InvalidBench(reason),
            },
            kinds::COMMAND_BATCH => Self::Commands(BatchView::decode(payload)),
            kinds::BLANK => Self::Blank,
            kinds::MEMBERSHIP => {
                Self::Membership(MembershipRecord::decode(payload).map(|membership| MembershipRecord::of(&membership)))
            }
            kinds::SCHEMA => Self::Schema(schema::decode_entry(payload)),
            _ => Self::Preview(Preview::of(payload, PREVIEW_BYTES_MAX)),
        }
    }

    /// Why a record whose bytes are intact still cannot be applied.
    fn damage(&self) -> Option<&str> {
        match self {
            Self::Commands(batch) => batch.error(),
            Self::Membership(Err(reason)) | Self::Schema(Err(reason)) => Some(reason),
            Self::Bench { .. }
            | Self::InvalidBench(_)
            | Self::Preview(_)
            | Self::Blank
            | Self::Membership(Ok(_))
            | Self::Schema(Ok(_)) => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Bench {
                appender,
                sequence,
                body_length,
            } => json!({ "appender": appender, "sequence": sequence, "body_length": body_length }),
            Self::InvalidBench(reason) => json!({ "error": format!("not a valid bench payload: {reason}") }),
            Self::Commands(batch) => batch.to_json(),
            Self::Blank => json!({}),
            Self::Membership(Ok(MembershipRecord { configs, nodes })) => json!({
                "voters": configs,
                "nodes": nodes.iter().map(|(id, address)| json!({ "id": id, "address": address })).collect::<Vec<_>>(),
            }),
            Self::Schema(Ok(version)) => json!({ "schema_version": version }),
            Self::Membership(Err(reason)) | Self::Schema(Err(reason)) => json!({ "error": reason }),
            Self::Preview(preview) => preview.to_json(),
        }
    }

    fn to_text(&self) -> String {
        match self {
            Self::Bench {
                appender,
                sequence,
                body_length,
            } => format!("appender={appender} sequence={sequence} body_length={body_length}"),
            Self::InvalidBench(reason) => format!("payload_error={:?}", format!("not a valid bench payload: {reason}")),
            Self::Commands(batch) => batch.summary_text(),
            Self::Blank => "blank".to_string(),
            Self::Membership(Ok(MembershipRecord { configs, nodes })) => {
                let nodes: Vec<String> = nodes.iter().map(|(id, address)| format!("{id}@{address}")).collect();
                format!("voters={configs:?} nodes=[{}]", nodes.join(","))
            }
            Self::Schema(Ok(version)) => format!("schema_version={version}"),
            Self::Membership(Err(reason)) | Self::Schema(Err(reason)) => format!("payload_error={reason:?}"),
            Self::Preview(preview) => preview.to_text(),
        }
    }
}

fn segment_json(segment: &SegmentInfo) -> Value {
    json!({
        "sequence": segment.sequence,
        "first_index": segment.first_index,
        "records": segment.records,
        "capacity": segment.capacity,
        "sealed": segment.sealed,
        "compressed": segment.compressed,
    })
}

fn write_stat_text(out: &mut impl Write, log: &Log, segments: &[SegmentInfo]) -> std::io::Result<()> {
    let stats = log.stats();
    let last = log
        .last_index()
        .map_or_else(|| "none (empty log)".to_owned(), |last| last.to_string());
    writeln!(out, "directory:           {}", log.dir().display())?;
    writeln!(out, "segments:            {}", stats.segments)?;
    writeln!(out, "compressed segments: {}", stats.compressed_segments)?;
    writeln!(out, "records:             {}", stats.next_index - stats.first_index)?;
    writeln!(out, "bytes on disk:       {}", stats.file_bytes)?;
    writeln!(out, "first index:         {}", stats.first_index)?;
    writeln!(out, "last index:          {last}")?;
    writeln!(
        out,
        "tail:                {}",
        describe_tail(&log.recovery_report().tail)
    )?;
    if segments.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:>20}  {:>20}  {:>10}  {:>12}  {:>6}  {:>10}",
        "sequence", "first_index", "records", "capacity", "sealed", "compressed"
    )?;
    for segment in segments {
        writeln!(
            out,
            "{:>20}  {:>20}  {:>10}  {:>12}  {:>6}  {:>10}",
            segment.sequence,
            segment.first_index,
            segment.records,
            segment.capacity,
            yes_no(segment.sealed),
            yes_no(segment.compressed)
        )?;
    }
    Ok(())
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}
