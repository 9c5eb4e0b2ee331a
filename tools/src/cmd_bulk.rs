//! `farmlog bulk ...` and `farmlog throttle ...`: upstream bulk transfers
//! (a component's bulk request, sent as an upstream message; a hop's
//! grant or denial; the requester's "transferred"; where a transfer
//! stands) and the farm-wide throttle (rules, usage reports, the send
//! decision).
//!
//! Writes carry a session, so their retries are safe.

use clap::{Args, Subcommand};
use farmlog_api::pb::{self, throttle_client::ThrottleClient, throttle_rule, transfers_client::TransfersClient};
use serde_json::{json, Value};

use crate::client_cmd::{
    block_on, emit, enum_name, opt_ref_text, parse_component_ref, ref_json, ref_text, rpc, say, session, written_json,
    Connect,
};
use crate::cmd_messages::{print_sent, send, HeaderArgs};
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Asks to send bulk data upstream: a bulk-request message from the
    /// source (a proxy, typically).
    Request {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        /// Bytes to send (at least one).
        #[arg(long)]
        size: u64,
        /// What the data is.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Grants a requested transfer with a URL to POST the data to (an
    /// applications MLM or application server, as `--hop`).
    Grant {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        step: StepArgs,
        /// Where to POST the data.
        #[arg(long)]
        url: String,
    },
    /// Refuses a requested transfer for now (a hop on its path); it is
    /// requested again after the retry delay.
    Deny {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        step: StepArgs,
        /// Why (required, at most 4096 bytes).
        #[arg(long)]
        reason: String,
        /// Milliseconds of log time before the request is retried (at
        /// most 86400000; 0: 5 minutes).
        #[arg(long, default_value_t = 0)]
        retry_after_ms: u64,
    },
    /// Marks a granted transfer's data sent (the requester, or a proxy it
    /// is below).
    Transferred {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Where one transfer stands.
    Status {
        #[command(flatten)]
        connect: Connect,
        /// The message id of the bulk request.
        request: String,
    },
    /// The tenant's transfers not yet transferred, oldest request first.
    Outstanding {
        #[command(flatten)]
        connect: Connect,
        /// 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// A step of a transfer: which request, taken by which hop.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// The message id of the bulk request.
    pub request: String,
    /// The component taking the step, which the caller acts as
    /// (`hosted:<id>` for a hosted one).
    #[arg(long, value_parser = parse_component_ref)]
    pub hop: pb::ComponentRef,
}

#[derive(Debug, Subcommand)]
pub enum ThrottleCommand {
    /// A farm's rules and its usage in each limit's current window.
    Show {
        #[command(flatten)]
        connect: Connect,
        /// The farm (an MLM group).
        farm: String,
    },
    /// Replaces a farm's rules (admins); the counters start again.
    Set {
        #[command(flatten)]
        connect: Connect,
        /// The farm (an MLM group).
        farm: String,
        /// A rule, in the order decisions check them (repeat):
        /// `quiet=HH:MM-HH:MM` (UTC of log time; wraps past midnight) or
        /// `window-ms=N[,max-bytes=N][,max-messages=N]`.
        #[arg(long = "rule", value_parser = parse_rule, required_unless_present = "lift")]
        rules: Vec<pb::ThrottleRule>,
        /// Remove every rule: lift the throttle.
        #[arg(long, conflicts_with = "rules")]
        lift: bool,
    },
    /// Reports a farm member's usage since its last report.
    Report {
        #[command(flatten)]
        connect: Connect,
        /// The farm (an MLM group).
        farm: String,
        /// The reporting member, which the caller acts as.
        #[arg(long, value_parser = parse_component_ref)]
        member: pb::ComponentRef,
        #[arg(long, default_value_t = 0)]
        bytes: u64,
        #[arg(long, default_value_t = 0)]
        messages: u64,
    },
    /// May a component send a message of this size now?
    MaySend {
        #[command(flatten)]
        connect: Connect,
        /// The sending component (`hosted:<id>` for a hosted one).
        #[arg(value_parser = parse_component_ref)]
        component: pb::ComponentRef,
        /// The message's size.
        #[arg(long)]
        bytes: u64,
        /// When, in milliseconds since the Unix epoch (default: now).
        #[arg(long)]
        at_ms: Option<u64>,
    },
}

/// `HH:MM` as minutes of the day.
fn parse_minute(text: &str) -> Result<u32, String> {
    let (hours, minutes) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected HH:MM"))?;
    let hours: u32 = hours.parse().map_err(|_| format!("{text:?}: expected HH:MM"))?;
    let minutes: u32 = minutes.parse().map_err(|_| format!("{text:?}: expected HH:MM"))?;
    if hours >= 24 || minutes >= 60 {
        return Err(format!("{text:?}: not a time of day"));
    }
    Ok(hours * 60 + minutes)
}

/// A throttle rule from the command line (see `throttle set --help`).
pub fn parse_rule(text: &str) -> Result<pb::ThrottleRule, String> {
    if let Some(window) = text.strip_prefix("quiet=") {
        let (from, to) = window.split_once('-').ok_or_else(|| "quiet=HH:MM-HH:MM".to_string())?;
        let quiet = pb::QuietWindow {
            from_minute: parse_minute(from)?,
            to_minute: parse_minute(to)?,
        };
        return Ok(pb::ThrottleRule {
            rule: Some(throttle_rule::Rule::Quiet(quiet)),
        });
    }
    let mut limit = pb::UsageLimit::default();
    for part in text.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value"))?;
        let value: u64 = value.parse().map_err(|_| format!("{part:?}: not a number"))?;
        match key {
            "window-ms" => limit.window_ms = value,
            "max-bytes" => limit.max_bytes = Some(value),
            "max-messages" => limit.max_messages = Some(value),
            _ => return Err(format!("{key:?}: expected quiet, window-ms, max-bytes or max-messages")),
        }
    }
    if limit.window_ms == 0 {
        return Err("a limit needs window-ms=N".into());
    }
    Ok(pb::ThrottleRule {
        rule: Some(throttle_rule::Rule::Limit(limit)),
    })
}

/// Runs a `bulk` subcommand.
pub fn run_bulk(command: &BulkCommand) -> Result<(), Failure> {
    match command {
        BulkCommand::Request {
            connect,
            header,
            size,
            description,
        } => block_on(async {
            let client = connect.client()?;
            let content = pb::upstream_message::Content::BulkRequest(pb::BulkRequestContent {
                size: *size,
                description: description.clone(),
            });
            let (id, sent) = send(&client, header, BULK_CLASS, content).await?;
            print_sent(connect, &id, &sent)
        }),
        BulkCommand::Grant { connect, step, url } => block_on(async {
            let client = connect.client()?;
            let request = pb::GrantTransferRequest {
                request: step.request.clone(),
                hop: Some(step.hop.clone()),
                url: url.clone(),
                session: session(&client).await?,
            };
            let answer = rpc!(&client, TransfersClient::grant, request)?;
            stepped(connect, format!("{} granted: send to {url}", step.request), &answer)
        }),
        BulkCommand::Deny {
            connect,
            step,
            reason,
            retry_after_ms,
        } => block_on(async {
            let client = connect.client()?;
            let request = pb::DenyTransferRequest {
                request: step.request.clone(),
                hop: Some(step.hop.clone()),
                reason: reason.clone(),
                retry_after_ms: *retry_after_ms,
                session: session(&client).await?,
            };
            let answer = rpc!(&client, TransfersClient::deny, request)?;
            let what = format!("{} denied by {}: {reason}", step.request, ref_text(&step.hop));
            stepped(connect, what, &answer)
        }),
        BulkCommand::Transferred { connect, step } => block_on(async {
            let client = connect.client()?;
            let request = pb::TransferredRequest {
                request: step.request.clone(),
                hop: Some(step.hop.clone()),
                session: session(&client).await?,
            };
            let answer = rpc!(&client, TransfersClient::transferred, request)?;
            stepped(connect, format!("{} transferred", step.request), &answer)
        }),
        BulkCommand::Status { connect, request } => block_on(async {
            let client = connect.client()?;
            let request = pb::TransferStatusRequest {
                request: request.clone(),
            };
            let info = rpc!(&client, TransfersClient::status, request)?;
            emit(connect.json, || transfer_json(&info), || transfer_text(&info))
        }),
        BulkCommand::Outstanding { connect, limit } => block_on(async {
            let client = connect.client()?;
            let request = pb::OutstandingTransfersRequest { limit: *limit };
            let answer = rpc!(&client, TransfersClient::outstanding, request)?;
            if connect.json {
                let transfers: Vec<Value> = answer.transfers.iter().map(transfer_json).collect();
                return say(json!({ "transfers": transfers }));
            }
            if answer.transfers.is_empty() {
                return say("no outstanding transfers");
            }
            for info in &answer.transfers {
                say(transfer_text(info))?;
            }
            Ok(())
        }),
    }
}

/// The class and subclass of a bulk request that names none.
pub const BULK_CLASS: (&str, &str) = ("bulk", "request");

fn stepped(connect: &Connect, what: String, answer: &pb::TransferStepResponse) -> Result<(), Failure> {
    emit(
        connect.json,
        || json!({"position": answer.position, "written": written_json(answer.written.as_ref())}),
        || format!("{what} (position {})", answer.position),
    )
}

fn transfer_json(info: &pb::TransferInfo) -> Value {
    let denials: Vec<Value> = info
        .denials
        .iter()
        .map(|denial| {
            json!({"position": denial.position, "hop": ref_json(denial.hop.as_ref()), "reason": denial.reason})
        })
        .collect();
    json!({
        "request": info.request, "requester": ref_json(info.requester.as_ref()), "size": info.size,
        "class": info.class, "subclass": info.subclass, "phase": enum_name::<pb::TransferPhase>(info.phase),
        "requests": info.requests, "url": info.url, "retry_at_ms": info.retry_at_ms, "denials": denials,
    })
}

fn transfer_text(info: &pb::TransferInfo) -> String {
    let mut text = format!(
        "{} from {}: {} bytes, {}/{}, {} (requests: {})",
        info.request,
        opt_ref_text(info.requester.as_ref()),
        info.size,
        info.class,
        info.subclass,
        enum_name::<pb::TransferPhase>(info.phase),
        info.requests
    );
    if let Some(url) = &info.url {
        text.push_str(&format!("; send to {url}"));
    }
    if let Some(retry_at_ms) = info.retry_at_ms {
        text.push_str(&format!("; retried at {retry_at_ms} ms"));
    }
    for denial in &info.denials {
        text.push_str(&format!(
            "\n  denied by {} at position {}: {}",
            opt_ref_text(denial.hop.as_ref()),
            denial.position,
            denial.reason
        ));
    }
    text
}

/// Runs a `throttle` subcommand.
pub fn run_throttle(command: &ThrottleCommand) -> Result<(), Failure> {
    match command {
        ThrottleCommand::Show { connect, farm } => block_on(async {
            let client = connect.client()?;
            let request = pb::ShowThrottleRequest { farm: farm.clone() };
            let answer = rpc!(&client, ThrottleClient::show, request)?;
            emit(connect.json, || throttle_json(&answer), || throttle_text(farm, &answer))
        }),
        ThrottleCommand::Set {
            connect,
            farm,
            rules,
            lift,
        } => block_on(async {
            let client = connect.client()?;
            let request = pb::SetThrottleRequest {
                farm: farm.clone(),
                rules: if *lift { Vec::new() } else { rules.clone() },
                session: session(&client).await?,
            };
            let answer = rpc!(&client, ThrottleClient::set, request)?;
            let what = match lift {
                true => format!("{farm}: throttle lifted"),
                false => format!("{farm}: {} rules set", rules.len()),
            };
            throttle_written(connect, what, &answer)
        }),
        ThrottleCommand::Report {
            connect,
            farm,
            member,
            bytes,
            messages,
        } => block_on(async {
            let client = connect.client()?;
            let request = pb::ReportUsageRequest {
                farm: farm.clone(),
                member: Some(member.clone()),
                increments: vec![pb::UsageIncrement {
                    bytes: *bytes,
                    messages: *messages,
                }],
                session: session(&client).await?,
            };
            let answer = rpc!(&client, ThrottleClient::report_usage, request)?;
            let what = format!("{}: {bytes} bytes, {messages} messages reported", ref_text(member));
            throttle_written(connect, what, &answer)
        }),
        ThrottleCommand::MaySend {
            connect,
            component,
            bytes,
            at_ms,
        } => block_on(async {
            let client = connect.client()?;
            let request = pb::MaySendRequest {
                component: Some(component.clone()),
                bytes: *bytes,
                at_ms: *at_ms,
            };
            let answer = rpc!(&client, ThrottleClient::may_send, request)?;
            emit(
                connect.json,
                || {
                    json!({
                        "allowed": answer.allowed, "farm": answer.farm, "rule_index": answer.rule_index,
                        "rule": answer.rule.as_ref().map_or(Value::Null, rule_json), "at_ms": answer.at_ms,
                    })
                },
                || {
                    let verdict = if answer.allowed { "allowed" } else { "denied" };
                    let mut text = format!("{} may send {bytes} bytes: {verdict}", ref_text(component));
                    if let Some(farm) = &answer.farm {
                        text.push_str(&format!(" (farm {farm})"));
                    }
                    if let (Some(index), Some(rule)) = (answer.rule_index, &answer.rule) {
                        text.push_str(&format!(" by rule {index}: {}", rule_text(rule)));
                    }
                    text
                },
            )
        }),
    }
}

fn throttle_written(connect: &Connect, what: String, answer: &pb::ThrottleWriteResponse) -> Result<(), Failure> {
    emit(
        connect.json,
        || json!({"position": answer.position, "written": written_json(answer.written.as_ref())}),
        || format!("{what} at position {}", answer.position),
    )
}

fn rule_json(rule: &pb::ThrottleRule) -> Value {
    match &rule.rule {
        Some(throttle_rule::Rule::Quiet(quiet)) => {
            json!({"quiet": {"from_minute": quiet.from_minute, "to_minute": quiet.to_minute}})
        }
        Some(throttle_rule::Rule::Limit(limit)) => json!({
            "limit": {"window_ms": limit.window_ms, "max_bytes": limit.max_bytes, "max_messages": limit.max_messages}
        }),
        None => Value::Null,
    }
}

fn rule_text(rule: &pb::ThrottleRule) -> String {
    let minute = |minute: u32| format!("{:02}:{:02}", minute / 60, minute % 60);
    match &rule.rule {
        Some(throttle_rule::Rule::Quiet(quiet)) => {
            format!("quiet {}-{}", minute(quiet.from_minute), minute(quiet.to_minute))
        }
        Some(throttle_rule::Rule::Limit(limit)) => {
            let maxima: Vec<String> = [
                limit.max_bytes.map(|bytes| format!("{bytes} bytes")),
                limit.max_messages.map(|messages| format!("{messages} messages")),
            ]
            .into_iter()
            .flatten()
            .collect();
            format!("at most {} per {} ms", maxima.join(" and "), limit.window_ms)
        }
        None => "no rule".into(),
    }
}

fn throttle_json(answer: &pb::ShowThrottleResponse) -> Value {
    let rules: Vec<Value> = answer
        .rules
        .iter()
        .map(|state| {
            json!({
                "rule": state.rule.as_ref().map_or(Value::Null, rule_json),
                "usage": state.usage.as_ref().map_or(Value::Null, |usage| json!({
                    "window_start_ms": usage.window_start_ms, "bytes": usage.bytes, "messages": usage.messages,
                })),
            })
        })
        .collect();
    let reported = answer.reported.unwrap_or_default();
    json!({
        "rules": rules, "set_at": answer.set_at,
        "reported": {"bytes": reported.bytes, "messages": reported.messages}, "at_ms": answer.at_ms,
    })
}

fn throttle_text(farm: &str, answer: &pb::ShowThrottleResponse) -> String {
    if answer.rules.is_empty() {
        return format!("{farm}: no throttle");
    }
    let reported = answer.reported.unwrap_or_default();
    let mut text = format!(
        "{farm}: {} rules, set at position {}; {} bytes and {} messages reported",
        answer.rules.len(),
        answer.set_at,
        reported.bytes,
        reported.messages
    );
    for (index, state) in answer.rules.iter().enumerate() {
        let rule = state.rule.as_ref().map_or_else(|| "no rule".into(), rule_text);
        text.push_str(&format!("\n  {index}: {rule}"));
        if let Some(usage) = &state.usage {
            text.push_str(&format!(
                " (this window: {} bytes, {} messages)",
                usage.bytes, usage.messages
            ));
        }
    }
    text
}
