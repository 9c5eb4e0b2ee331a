//! `farmlog replay`: folds a log directory into a fresh [`State`], offline,
//! and prints what the projections hold and the state hash.
//!
//! Every command-batch record up to `--to` is applied with
//! [`State::apply`]; any other record is [`State::skip`]ped, as a node
//! does. [`Tally`] counts the outcomes and [`StateCounts`] the projections;
//! `farmlog bench state` reports through the same two.
//!
//! Invariants: the log is opened read-only and never modified; the same
//! records give the same hash on every run (apply is deterministic); a
//! record apply refuses stops the replay with exit code 1 and nothing is
//! printed as if the state were complete.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use farmlog_engine::state::{ApplyError, Fired, Outcome, State, Verdict};
use farmlog_engine::{kinds, Log, Record, TailCase};
use serde_json::{json, Value};

use crate::inspect::warn_about_torn_tail;
use crate::preview::hex;
use crate::state_view::aligned_copy;
use crate::{output_failed, Failure};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The log directory.
    pub dir: PathBuf,
    /// Last index to apply, inclusive (default: the log's last).
    #[arg(long, value_name = "INDEX")]
    pub to: Option<u64>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the state's snapshot (`State::snapshot`) to this file.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// List every time-driven transition (a component late or failed, a
    /// session expired, a back-channel delivery timed out, parked or
    /// expired, a bulk message's URL unpublished, a denied transfer
    /// retried) with the record and slot whose command set it off (at most
    /// 100,000; the count covers all).
    #[arg(long)]
    pub transitions: bool,
}

/// What apply returned, summed over records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Command-batch records applied.
    pub batches: u64,
    /// Other records, skipped.
    pub skipped: u64,
    pub commands: u64,
    pub applied: u64,
    pub rejected: u64,
    /// Commands that were retries in a client session (counted in applied
    /// or rejected too, by their first verdict).
    pub retried: u64,
    /// Time-driven transitions fired, and by kind (the variant's name).
    pub fired: u64,
    pub fired_kinds: BTreeMap<&'static str, u64>,
    /// Rejections by kind (the variant's name).
    pub rejections: BTreeMap<String, u64>,
    /// When kept: the first [`TRANSITIONS_SHOWN_MAX`] transitions, with the
    /// log index and slot of the command whose log time set them off.
    pub transitions: Option<Vec<(u64, u32, Fired)>>,
}

/// Most transitions `replay --transitions` lists.
pub const TRANSITIONS_SHOWN_MAX: usize = 100_000;

impl Tally {
    pub fn add(&mut self, index: u64, outcomes: &[Outcome]) {
        self.batches += 1;
        self.commands += outcomes.len() as u64;
        for (slot, outcome) in (0u32..).zip(outcomes) {
            self.fired += outcome.fired.len() as u64;
            for fired in &outcome.fired {
                *self.fired_kinds.entry(fired_kind(fired)).or_default() += 1;
            }
            if let Some(kept) = &mut self.transitions {
                let room = TRANSITIONS_SHOWN_MAX.saturating_sub(kept.len());
                kept.extend(
                    outcome
                        .fired
                        .iter()
                        .take(room)
                        .map(|fired| (index, slot, fired.clone())),
                );
            }
            self.retried += u64::from(outcome.retried);
            match &outcome.verdict {
                Verdict::Applied(_) => self.applied += 1,
                Verdict::Rejected(rejection) => {
                    self.rejected += 1;
                    *self.rejections.entry(variant_name(rejection)).or_default() += 1;
                }
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "batches": self.batches,
            "skipped_records": self.skipped,
            "commands": self.commands,
            "applied": self.applied,
            "rejected": self.rejected,
            "retried": self.retried,
            "fired_transitions": self.fired,
            "fired_by_kind": self.fired_kinds,
            "rejections": self.rejections,
            "transitions": self.transitions.as_ref().map(|kept| {
                kept.iter()
                    .map(|(index, slot, fired)| json!({ "index": index, "slot": slot, "transition": fired }))
                    .collect::<Vec<_>>()
            }),
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "records:           {} command batches applied, {} other records skipped",
            self.batches, self.skipped
        )?;
        writeln!(
            out,
            "commands:          {} ({} applied, {} rejected, {} retried)",
            self.commands, self.applied, self.rejected, self.retried
        )?;
        for (kind, count) in &self.rejections {
            writeln!(out, "  rejected {kind}: {count}")?;
        }
        writeln!(out, "fired transitions: {}", self.fired)?;
        for (kind, count) in &self.fired_kinds {
            writeln!(out, "  fired {kind}: {count}")?;
        }
        for (index, slot, fired) in self.transitions.iter().flatten() {
            writeln!(out, "  index={index} slot={slot} {}", describe(fired))?;
        }
        Ok(())
    }
}

/// The name of an enum value's variant, from its serde form
/// (`"TenantUnknown"` or `{"NotFound": {...}}`).
pub(crate) fn variant_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(Value::Object(fields)) => fields.keys().next().cloned().unwrap_or_default(),
        _ => "unknown".to_owned(),
    }
}

/// What the projections of a state hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCounts {
    /// Registered tenants, the landlord included.
    pub tenants: u64,
    pub components_registered: u64,
    /// Every component slot, deregistered ones included.
    pub components_total: u64,
    pub groups: u64,
    pub messages_stored: u64,
    pub open_alarms: u64,
    pub streams: u64,
    pub stream_events: u64,
    pub idempotency_keys: u64,
    pub sessions: u64,
    /// Back-channel messages published.
    pub back_messages: u64,
    /// Their (message, destination) deliveries, in every state.
    pub deliveries: u64,
    /// Deliveries pending, handed out or waiting to be retried: the spools'
    /// depth, over all tenants and destinations.
    pub deliveries_live: u64,
    /// Deliveries that used their attempts, until re-driven.
    pub deliveries_parked: u64,
    /// Upstream bulk transfers, in any phase.
    pub transfers: u64,
    pub pending_timers: u64,
    pub last_position: u64,
    pub last_applied: u64,
    pub log_time_ms: u64,
}

impl StateCounts {
    pub fn of(state: &State) -> Self {
        let spools = state.spools();
        let tenant_slots = || state.tenants().filter_map(|(name, _)| state.tenant_slot(name));
        Self {
            tenants: state.tenants().count() as u64,
            components_registered: state.topology().registered_count() as u64,
            components_total: state.topology().component_count() as u64,
            groups: state.topology().group_count() as u64,
            messages_stored: state.messages().stored_count(),
            open_alarms: state.messages().open_alarm_count() as u64,
            streams: state.streams().stream_count() as u64,
            stream_events: state.streams().event_count(),
            idempotency_keys: state.streams().kept_keys() as u64,
            sessions: state.sessions().len() as u64,
            back_messages: spools.message_count() as u64,
            deliveries: spools.delivery_count() as u64,
            deliveries_live: tenant_slots().map(|tenant| spools.tenant_depth(tenant)).sum(),
            deliveries_parked: tenant_slots().map(|tenant| spools.parked(tenant).count() as u64).sum(),
            transfers: state.transfers().count() as u64,
            pending_timers: state.pending_timers() as u64,
            last_position: state.last_position(),
            last_applied: state.last_applied(),
            log_time_ms: state.log_time_ms(),
        }
    }

    /// The objects a client names or reads: tenants, components (every
    /// slot), groups, stored messages, open alarms, streams, stream events,
    /// back-channel messages, their deliveries and bulk transfers.
    pub fn objects(&self) -> u64 {
        self.tenants
            + self.components_total
            + self.groups
            + self.messages_stored
            + self.open_alarms
            + self.streams
            + self.stream_events
            + self.back_messages
            + self.deliveries
            + self.transfers
    }

    pub fn to_json(&self) -> Value {
        json!({
            "tenants": self.tenants,
            "components_registered": self.components_registered,
            "components_total": self.components_total,
            "groups": self.groups,
            "messages_stored": self.messages_stored,
            "open_alarms": self.open_alarms,
            "streams": self.streams,
            "stream_events": self.stream_events,
            "idempotency_keys": self.idempotency_keys,
            "sessions": self.sessions,
            "back_messages": self.back_messages,
            "deliveries": self.deliveries,
            "deliveries_live": self.deliveries_live,
            "deliveries_parked": self.deliveries_parked,
            "transfers": self.transfers,
            "pending_timers": self.pending_timers,
            "last_position": self.last_position,
            "last_applied": self.last_applied,
            "log_time_ms": self.log_time_ms,
            "objects": self.objects(),
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "tenants:           {}", self.tenants)?;
        writeln!(
            out,
            "components:        {} registered / {} total",
            self.components_registered, self.components_total
        )?;
        writeln!(out, "groups:            {}", self.groups)?;
        writeln!(out, "messages stored:   {}", self.messages_stored)?;
        writeln!(out, "open alarms:       {}", self.open_alarms)?;
        writeln!(out, "streams:           {}", self.streams)?;
        writeln!(out, "stream events:     {}", self.stream_events)?;
        writeln!(out, "idempotency keys:  {}", self.idempotency_keys)?;
        writeln!(out, "sessions:          {}", self.sessions)?;
        writeln!(out, "back-channel:      {} messages", self.back_messages)?;
        writeln!(
            out,
            "deliveries:        {} ({} live, {} parked)",
            self.deliveries, self.deliveries_live, self.deliveries_parked
        )?;
        writeln!(out, "bulk transfers:    {}", self.transfers)?;
        writeln!(out, "pending timers:    {}", self.pending_timers)?;
        writeln!(out, "last position:     {}", self.last_position)?;
        writeln!(out, "last applied:      {}", self.last_applied)?;
        writeln!(out, "log time ms:       {}", self.log_time_ms)?;
        writeln!(out, "objects:           {}", self.objects())
    }
}

/// Applies one record to the state, as a node does: a command batch is
/// applied and its outcomes tallied, anything else is skipped.
pub fn apply_record(state: &mut State, record: &Record, tally: &mut Tally) -> Result<(), ApplyError> {
    if record.kind() != kinds::COMMAND_BATCH {
        state.skip(record.index())?;
        tally.skipped += 1;
        return Ok(());
    }
    let payload = record.payload();
    // Log payloads are 8-aligned, as `State::apply` requires; the copy is
    // a guard that never runs on a sound log.
    let outcomes = match (payload.as_ptr() as usize).is_multiple_of(8) {
        true => state.apply(record.index(), record.kind(), payload)?,
        false => state.apply(record.index(), record.kind(), &aligned_copy(payload))?,
    };
    tally.add(record.index(), &outcomes);
    Ok(())
}

/// Folds records `..=to` of an open log into a fresh state.
pub fn fold(log: &Log, to: u64, keep_transitions: bool) -> Result<(State, Tally), Failure> {
    let mut state = State::new();
    let mut tally = Tally {
        transitions: keep_transitions.then(Vec::new),
        ..Tally::default()
    };
    for item in log.range(..=to) {
        let record = item?;
        // The error names the record ("record N: …").
        apply_record(&mut state, &record, &mut tally).map_err(|error| Failure::Damaged {
            message: format!("replay stopped: {error}"),
            location: None,
        })?;
    }
    Ok((state, tally))
}

/// `farmlog replay`.
pub fn replay(args: &ReplayArgs) -> Result<(), Failure> {
    let log = Log::open_read_only(&args.dir)?;
    let report = log.recovery_report();
    warn_about_torn_tail(report);
    let Some(last) = log.last_index() else {
        return Err(Failure::usage(format!("{} holds no records", args.dir.display())));
    };
    let to = args.to.unwrap_or(last);
    if to > last {
        return Err(Failure::usage(format!("--to {to} is past the log's last index {last}")));
    }
    if to < log.first_index() {
        return Err(Failure::usage(format!(
            "--to {to} is before the log's first index {}",
            log.first_index()
        )));
    }
    // A lost acknowledged record ends the readable log early: a full
    // replay of what is left would be silently short. (`--to` names an
    // index, and every index up to `last` is readable.)
    if let (None, TailCase::DurableDamaged(corruption)) = (args.to, &report.tail) {
        return Err(Failure::Damaged {
            message: format!("acknowledged record lost: {corruption}; the state cannot be replayed past it"),
            location: Some(corruption.clone()),
        });
    }
    if log.first_index() > 1 {
        eprintln!(
            "farmlog: warning: records before index {} were purged; the state is folded from index {} on only",
            log.first_index(),
            log.first_index()
        );
    }
    let (state, tally) = fold(&log, to, args.transitions)?;
    let counts = StateCounts::of(&state);
    let hash = hex(&state.hash());
    let snapshot = args
        .snapshot
        .as_deref()
        .map(|file| write_snapshot(&state, file).map(|bytes| (file, bytes)))
        .transpose()?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        let mut object = json!({
            "dir": args.dir.display().to_string(),
            "to": to,
            "state_hash": hash,
            "counts": counts.to_json(),
            "outcomes": tally.to_json(),
        });
        if let Some((file, bytes)) = snapshot {
            object["snapshot"] = json!({ "file": file.display().to_string(), "bytes": bytes });
        }
        writeln!(out, "{object}").map_err(output_failed)?;
    } else {
        write_text(&mut out, args, to, &tally, &counts, &hash, snapshot).map_err(output_failed)?;
    }
    out.flush().map_err(output_failed)
}

fn write_text(
    out: &mut impl Write,
    args: &ReplayArgs,
    to: u64,
    tally: &Tally,
    counts: &StateCounts,
    hash: &str,
    snapshot: Option<(&Path, u64)>,
) -> std::io::Result<()> {
    writeln!(out, "replayed {} through index {to}", args.dir.display())?;
    tally.write_text(out)?;
    counts.write_text(out)?;
    if let Some((file, bytes)) = snapshot {
        writeln!(out, "snapshot:          {} ({bytes} bytes)", file.display())?;
    }
    writeln!(out, "state hash:        {hash}")
}

/// Writes the snapshot to `file` and syncs it; returns its length.
fn write_snapshot(state: &State, file: &Path) -> Result<u64, Failure> {
    let bytes = state.snapshot();
    let failed = |error: std::io::Error| Failure::usage(format!("writing the snapshot {}: {error}", file.display()));
    let mut handle = std::fs::File::create(file).map_err(failed)?;
    handle.write_all(&bytes).map_err(failed)?;
    handle.sync_all().map_err(failed)?;
    Ok(bytes.len() as u64)
}

/// A transition's kind: its variant's name.
fn fired_kind(fired: &Fired) -> &'static str {
    match fired {
        Fired::ComponentLate { .. } => "ComponentLate",
        Fired::ComponentFailed { .. } => "ComponentFailed",
        Fired::SessionExpired { .. } => "SessionExpired",
        Fired::DeliveryTimedOut { .. } => "DeliveryTimedOut",
        Fired::DeliveryParked { .. } => "DeliveryParked",
        Fired::DeliveriesExpired { .. } => "DeliveriesExpired",
        Fired::BulkUnpublished { .. } => "BulkUnpublished",
        Fired::TransferRetry { .. } => "TransferRetry",
    }
}

/// One line for a transition.
fn describe(fired: &Fired) -> String {
    match fired {
        Fired::ComponentLate { tenant, component } => format!("ComponentLate tenant={tenant} component={component}"),
        Fired::ComponentFailed { tenant, component } => {
            format!("ComponentFailed tenant={tenant} component={component}")
        }
        Fired::SessionExpired { client_id } => format!("SessionExpired client_id={client_id}"),
        Fired::DeliveryTimedOut {
            tenant,
            message,
            destination,
        } => format!("DeliveryTimedOut tenant={tenant} message={message} destination={destination}"),
        Fired::DeliveryParked {
            tenant,
            message,
            destination,
        } => format!("DeliveryParked tenant={tenant} message={message} destination={destination}"),
        Fired::DeliveriesExpired { tenant, message, count } => {
            format!("DeliveriesExpired tenant={tenant} message={message} count={count}")
        }
        Fired::BulkUnpublished { tenant, message } => format!("BulkUnpublished tenant={tenant} message={message}"),
        Fired::TransferRetry { tenant, request } => format!("TransferRetry tenant={tenant} request={request}"),
    }
}
