//! `farmlog message ...` and `farmlog alarm list`: the Messages service
//! from the command line — send an upstream message of each content kind,
//! read one back, list by source or class, follow a class live, and list
//! the open alarms.
//!
//! A message's header says who sent it: its source, the source's kind
//! and version, and the customer. The command line asks only for the
//! source; the rest is read from the topology unless given (one read
//! before the write). Writes carry a session, so their retries are safe.

use std::cell::Cell;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use farmlog_api::client::Client;
use farmlog_api::pb::upstream_message::Content;
use farmlog_api::pb::{self, messages_client::MessagesClient, topology_client::TopologyClient};
use serde_json::{json, Value};

use crate::client_cmd::{
    block_on, bytes_json, bytes_text, emit, enum_name, follow, new_message_id, now_ms, ref_json, rpc, say, session,
    written_json, Connect, FollowLimits,
};
use crate::cmd_topology::KindArg;
use crate::Failure;

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Sends an upstream message: alarm, event, data, heartbeat or
    /// response.
    #[command(subcommand)]
    Send(SendCommand),
    /// The latest message with an id.
    Get {
        #[command(flatten)]
        connect: Connect,
        /// The message id.
        message_id: String,
    },
    /// A page of the tenant's messages in log order: all, one source's,
    /// or one class's.
    List {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: ListArgs,
    },
    /// The tenant's messages of a class (and subclass): catches up, then
    /// follows live.
    Subscribe {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        args: SubscribeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// The tenant's open alarms, with the message that raised each.
    List {
        #[command(flatten)]
        connect: Connect,
        /// Only this support instance's alarms.
        #[arg(long)]
        support_instance: Option<String>,
        /// 1..=1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum SendCommand {
    /// A systems management alarm: raised (or, with --clear, cleared) per
    /// support instance and alarm id.
    Alarm {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        #[command(flatten)]
        args: AlarmArgs,
    },
    /// A notification of a change of state.
    Event {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        #[command(flatten)]
        args: EventArgs,
    },
    /// Generic data, typed by its class and subclass.
    Data {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        #[command(flatten)]
        args: DataArgs,
    },
    /// A heartbeat: the components it lists are seen alive.
    Heartbeat {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        /// A component seen alive (repeat; default: the source).
        #[arg(long = "component")]
        components: Vec<String>,
    },
    /// The return status of the processing of a message.
    Response {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        header: HeaderArgs,
        #[command(flatten)]
        args: ResponseArgs,
    },
}

/// The header of an upstream message.
#[derive(Debug, Args)]
pub struct HeaderArgs {
    /// The component the message comes from; the caller acts as it or as
    /// a component above it.
    #[arg(long)]
    pub source: String,
    /// The message id, unique per source for 15 minutes (default: a new
    /// one).
    #[arg(long = "id")]
    pub message_id: Option<String>,
    /// The data classification subscribers choose by (default: by the
    /// content: alarm, event, data, response, bulk).
    #[arg(long)]
    pub class: Option<String>,
    /// Default: `general` (`request` for a bulk request).
    #[arg(long)]
    pub subclass: Option<String>,
    /// The source's kind (default: as registered).
    #[arg(long, value_enum)]
    pub source_kind: Option<KindArg>,
    /// The source's version (default: as registered).
    #[arg(long)]
    pub source_version: Option<String>,
    /// The customer (default: the source's tenant).
    #[arg(long)]
    pub customer: Option<String>,
    /// Higher goes first (0..=255).
    #[arg(long, default_value_t = 0)]
    pub precedence: u32,
    /// When the data expires, in milliseconds since the Unix epoch.
    #[arg(long)]
    pub expiry_ms: Option<u64>,
    /// Ask for persistence.
    #[arg(long)]
    pub persistent: bool,
}

/// How bad an alarm or event is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    Critical,
    Major,
    Minor,
    Warning,
    Info,
}

impl SeverityArg {
    fn to_pb(self) -> pb::Severity {
        match self {
            Self::Critical => pb::Severity::Critical,
            Self::Major => pb::Severity::Major,
            Self::Minor => pb::Severity::Minor,
            Self::Warning => pb::Severity::Warning,
            Self::Info => pb::Severity::Info,
        }
    }
}

/// The return status a response carries.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ResponseStatusArg {
    Ok,
    Rejected,
    Throttled,
    ReceptionFailed,
}

#[derive(Debug, Args)]
pub struct AlarmArgs {
    /// The alarm's id at its support instance.
    #[arg(long)]
    pub alarm_id: String,
    /// The support instance the alarm is about.
    #[arg(long)]
    pub support_instance: String,
    #[arg(long, value_enum, default_value = "major")]
    pub severity: SeverityArg,
    /// Clear the alarm (default: raise it).
    #[arg(long)]
    pub clear: bool,
    /// The alarm message, at most 4096 bytes.
    #[arg(long, default_value = "")]
    pub text: String,
    /// Integration-module specific data (text).
    #[arg(long, default_value = "")]
    pub data: String,
}

#[derive(Debug, Args)]
pub struct EventArgs {
    /// The support instance the event is about.
    #[arg(long)]
    pub support_instance: Option<String>,
    #[arg(long, value_enum, default_value = "info")]
    pub severity: SeverityArg,
    #[arg(long, default_value = "")]
    pub text: String,
    /// Integration-module specific data (text).
    #[arg(long, default_value = "")]
    pub data: String,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "data_body")]
pub struct DataBody {
    /// The body, as text.
    #[arg(long)]
    pub body: Option<String>,
    /// The body, read from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    #[arg(long, default_value = "text/plain")]
    pub mime_type: String,
    /// How a binary body is encoded (base64, say).
    #[arg(long)]
    pub encoding: Option<String>,
    #[command(flatten)]
    pub body: DataBody,
}

#[derive(Debug, Args)]
pub struct ResponseArgs {
    /// The id of the message this answers.
    #[arg(long)]
    pub in_reply_to: String,
    #[arg(long, value_enum, default_value = "ok")]
    pub status: ResponseStatusArg,
    #[arg(long)]
    pub error: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this source's messages.
    #[arg(long, conflicts_with = "class")]
    pub source: Option<String>,
    /// Only this class's messages.
    #[arg(long)]
    pub class: Option<String>,
    /// Only this subclass of the class.
    #[arg(long, requires = "class")]
    pub subclass: Option<String>,
    /// Forward: from this position on; backward: at or below it
    /// (default: the start, or the end when backward).
    #[arg(long)]
    pub from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub backward: bool,
    /// 1..=1000.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Only messages of this class (default: every message).
    #[arg(long, default_value = "")]
    pub class: String,
    /// Only this subclass of the class.
    #[arg(long, default_value = "", requires = "class")]
    pub subclass: String,
    /// The first position to print.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after following for this many milliseconds.
    #[arg(long)]
    pub follow_ms: Option<u64>,
}

/// Runs a `message` subcommand.
pub fn run(command: &MessageCommand) -> Result<(), Failure> {
    match command {
        MessageCommand::Send(command) => send_command(command),
        MessageCommand::Get { connect, message_id } => get(connect, message_id),
        MessageCommand::List { connect, args } => list(connect, args),
        MessageCommand::Subscribe { connect, args } => subscribe(connect, args),
    }
}

/// Runs an `alarm` subcommand.
pub fn run_alarm(command: &AlarmCommand) -> Result<(), Failure> {
    match command {
        AlarmCommand::List {
            connect,
            support_instance,
            limit,
        } => list_alarms(connect, support_instance.clone(), *limit),
    }
}

fn send_command(command: &SendCommand) -> Result<(), Failure> {
    let (connect, header, content, class) = match command {
        SendCommand::Alarm { connect, header, args } => (connect, header, alarm_content(args), "alarm"),
        SendCommand::Event { connect, header, args } => {
            let content = Content::Event(pb::EventContent {
                support_instance: args.support_instance.clone(),
                severity: args.severity.to_pb().into(),
                text: args.text.clone(),
                data: args.data.clone().into_bytes().into(),
            });
            (connect, header, content, "event")
        }
        SendCommand::Data { connect, header, args } => (connect, header, data_content(args)?, "data"),
        SendCommand::Heartbeat {
            connect,
            header,
            components,
        } => {
            let components = match components.is_empty() {
                true => vec![header.source.clone()],
                false => components.clone(),
            };
            let content = Content::Heartbeat(pb::HeartbeatContent { components });
            (connect, header, content, HEARTBEAT_CLASS.0)
        }
        SendCommand::Response { connect, header, args } => {
            let status = match args.status {
                ResponseStatusArg::Ok => pb::ResponseStatus::Ok,
                ResponseStatusArg::Rejected => pb::ResponseStatus::Rejected,
                ResponseStatusArg::Throttled => pb::ResponseStatus::Throttled,
                ResponseStatusArg::ReceptionFailed => pb::ResponseStatus::ReceptionFailed,
            };
            let content = Content::Response(pb::ResponseContent {
                in_reply_to: args.in_reply_to.clone(),
                status: status.into(),
                error: args.error.clone(),
            });
            (connect, header, content, "response")
        }
    };
    let subclass = match class {
        "infrastructure" => HEARTBEAT_CLASS.1,
        _ => DEFAULT_SUBCLASS,
    };
    block_on(async {
        let client = connect.client()?;
        let (id, sent) = send(&client, header, (class, subclass), content).await?;
        print_sent(connect, &id, &sent)
    })
}

/// A heartbeat's class and subclass, which the state machine requires.
pub const HEARTBEAT_CLASS: (&str, &str) = ("infrastructure", "heartbeat");
/// The subclass of a message that names none.
pub const DEFAULT_SUBCLASS: &str = "general";

fn alarm_content(args: &AlarmArgs) -> Content {
    let state = match args.clear {
        true => pb::AlarmState::Cleared,
        false => pb::AlarmState::Raised,
    };
    Content::Alarm(pb::AlarmContent {
        alarm_id: args.alarm_id.clone(),
        support_instance: args.support_instance.clone(),
        severity: args.severity.to_pb().into(),
        state: state.into(),
        text: args.text.clone(),
        data: args.data.clone().into_bytes().into(),
    })
}

fn data_content(args: &DataArgs) -> Result<Content, Failure> {
    let body = match (&args.body.body, &args.body.body_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|error| Failure::usage(format!("{}: {error}", path.display())))?
        }
        (None, None) => return Err(Failure::usage("give --body or --body-file")),
    };
    Ok(Content::Data(pb::DataContent {
        mime_type: args.mime_type.clone(),
        size: body.len() as u64,
        encoding: args.encoding.clone(),
        body: body.into(),
    }))
}

/// Sends one upstream message with `content`; the class and subclass
/// default to `defaults`, the source's kind, version and customer to what
/// the topology holds. Answers the message id and where it was stored.
pub async fn send(
    client: &Client,
    header: &HeaderArgs,
    defaults: (&str, &str),
    content: Content,
) -> Result<(String, pb::SendUpstreamResponse), Failure> {
    let (kind, version, customer) = match (&header.source_kind, &header.source_version, &header.customer) {
        (Some(kind), Some(version), Some(customer)) => (kind.to_pb().into(), version.clone(), customer.clone()),
        _ => {
            let request = pb::GetComponentRequest {
                id: header.source.clone(),
            };
            let info = rpc!(client, TopologyClient::get_component, request)?;
            (
                header.source_kind.map_or(info.kind, |kind| kind.to_pb().into()),
                header.source_version.clone().unwrap_or(info.version),
                header.customer.clone().unwrap_or(info.tenant),
            )
        }
    };
    let message_id = header
        .message_id
        .clone()
        .unwrap_or_else(|| new_message_id(&header.source));
    let message = pb::UpstreamMessage {
        header: Some(pb::MessageHeader {
            message_id: message_id.clone(),
            source: header.source.clone(),
            source_version: version,
            source_kind: kind,
            customer,
            class: header.class.clone().unwrap_or_else(|| defaults.0.into()),
            subclass: header.subclass.clone().unwrap_or_else(|| defaults.1.into()),
            created_at_ms: now_ms(),
        }),
        qos: Some(pb::Qos {
            precedence: header.precedence,
            expiry_ms: header.expiry_ms,
            persistence: header.persistent,
        }),
        routing: Vec::new(),
        content: Some(content),
    };
    let request = pb::SendUpstreamRequest {
        message: Some(message),
        session: session(client).await?,
    };
    let sent = rpc!(client, MessagesClient::send_upstream, request)?;
    Ok((message_id, sent))
}

/// Prints where a sent message was stored.
pub fn print_sent(connect: &Connect, message_id: &str, sent: &pb::SendUpstreamResponse) -> Result<(), Failure> {
    let alarm = match pb::AlarmChange::try_from(sent.alarm) {
        Ok(pb::AlarmChange::Unspecified) => None,
        _ => Some(enum_name::<pb::AlarmChange>(sent.alarm)),
    };
    emit(
        connect.json,
        || {
            json!({
                "message_id": message_id, "position": sent.position, "duplicate": sent.duplicate,
                "alarm": alarm, "written": written_json(sent.written.as_ref()),
            })
        },
        || {
            let mut text = format!("sent {message_id} at position {}", sent.position);
            if sent.duplicate {
                text.push_str(" (duplicate: stored there before)");
            }
            if let Some(alarm) = &alarm {
                text.push_str(&format!("; alarm {alarm}"));
            }
            text
        },
    )
}

fn get(connect: &Connect, message_id: &str) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::GetMessageRequest {
            message_id: message_id.into(),
        };
        let stored = rpc!(&client, MessagesClient::get_message, request)?;
        emit(connect.json, || message_json(&stored), || message_text(&stored))
    })
}

fn list(connect: &Connect, args: &ListArgs) -> Result<(), Failure> {
    let filter = match (&args.source, &args.class) {
        (Some(source), _) => Some(pb::list_messages_request::Filter::Source(source.clone())),
        (None, Some(class)) => Some(pb::list_messages_request::Filter::Class(pb::ClassFilter {
            class: class.clone(),
            subclass: args.subclass.clone().unwrap_or_default(),
        })),
        (None, None) => None,
    };
    let (direction, from) = match args.backward {
        true => (pb::Direction::Backward, args.from.unwrap_or(u64::MAX)),
        false => (pb::Direction::Forward, args.from.unwrap_or(0)),
    };
    let request = pb::ListMessagesRequest {
        from_position: from,
        direction: direction.into(),
        limit: args.limit,
        filter,
    };
    block_on(async {
        let client = connect.client()?;
        let page = rpc!(&client, MessagesClient::list_messages, request)?;
        if connect.json {
            let messages: Vec<Value> = page.messages.iter().map(message_json).collect();
            return say(json!({"messages": messages, "next_position": page.next_position}));
        }
        for stored in &page.messages {
            say(message_text(stored))?;
        }
        if page.messages.is_empty() {
            say("no messages")?;
        }
        say(format!("next page: --from {}", page.next_position))
    })
}

fn subscribe(connect: &Connect, args: &SubscribeArgs) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        // Where a subscription picks up when its node goes away: after
        // the last message printed.
        let next = Cell::new(args.from);
        let open = || {
            let request = pb::SubscribeMessagesRequest {
                class: args.class.clone(),
                subclass: args.subclass.clone(),
                from_position: next.get(),
            };
            let client = &client;
            async move { rpc!(client, MessagesClient::subscribe, request) }
        };
        let each = |stored: pb::StoredUpstream| {
            next.set(stored.position + 1);
            match connect.json {
                true => say(message_json(&stored)),
                false => say(message_text(&stored)),
            }
        };
        follow(&client, FollowLimits::new(args.count, args.follow_ms), open, each).await
    })
}

fn list_alarms(connect: &Connect, support_instance: Option<String>, limit: u32) -> Result<(), Failure> {
    block_on(async {
        let client = connect.client()?;
        let request = pb::ListAlarmsRequest {
            support_instance,
            limit,
        };
        let answer = rpc!(&client, MessagesClient::list_alarms, request)?;
        if connect.json {
            let alarms: Vec<Value> = answer
                .alarms
                .iter()
                .map(|alarm| {
                    json!({
                        "support_instance": alarm.support_instance, "alarm_id": alarm.alarm_id,
                        "raised_by": alarm.raised_by.as_ref().map_or(Value::Null, message_json),
                    })
                })
                .collect();
            return say(json!({"alarms": alarms, "more": answer.more}));
        }
        if answer.alarms.is_empty() {
            return say("no open alarms");
        }
        for alarm in &answer.alarms {
            let raised_by = alarm.raised_by.as_ref().map_or_else(|| "-".into(), message_text);
            say(format!("{} {}: {raised_by}", alarm.support_instance, alarm.alarm_id))?;
        }
        if answer.more {
            say(format!("more alarms are open than --limit {limit} shows"))?;
        }
        Ok(())
    })
}

/// A stored upstream message as JSON.
pub fn message_json(stored: &pb::StoredUpstream) -> Value {
    let message = stored.message.clone().unwrap_or_default();
    let header = message.header.unwrap_or_default();
    let qos = message.qos.unwrap_or_default();
    let routing: Vec<Value> = message
        .routing
        .iter()
        .map(|hop| json!({"component": ref_json(hop.component.as_ref()), "at_ms": hop.at_ms}))
        .collect();
    json!({
        "position": stored.position, "principal": stored.principal, "proposed_at_ms": stored.proposed_at_ms,
        "message_id": header.message_id, "source": header.source, "source_version": header.source_version,
        "source_kind": enum_name::<pb::ComponentKind>(header.source_kind), "customer": header.customer,
        "class": header.class, "subclass": header.subclass, "created_at_ms": header.created_at_ms,
        "qos": {"precedence": qos.precedence, "expiry_ms": qos.expiry_ms, "persistence": qos.persistence},
        "routing": routing,
        "content": message.content.as_ref().map_or(Value::Null, content_json),
    })
}

fn content_json(content: &Content) -> Value {
    match content {
        Content::Alarm(alarm) => json!({
            "alarm": {
                "alarm_id": alarm.alarm_id, "support_instance": alarm.support_instance,
                "severity": enum_name::<pb::Severity>(alarm.severity),
                "state": enum_name::<pb::AlarmState>(alarm.state), "text": alarm.text,
                "data": bytes_json(&alarm.data),
            }
        }),
        Content::Event(event) => json!({
            "event": {
                "support_instance": event.support_instance,
                "severity": enum_name::<pb::Severity>(event.severity), "text": event.text,
                "data": bytes_json(&event.data),
            }
        }),
        Content::Data(data) => json!({
            "data": {
                "mime_type": data.mime_type, "size": data.size, "encoding": data.encoding,
                "body": bytes_json(&data.body),
            }
        }),
        Content::Response(response) => json!({
            "response": {
                "in_reply_to": response.in_reply_to,
                "status": enum_name::<pb::ResponseStatus>(response.status), "error": response.error,
            }
        }),
        Content::BulkRequest(request) => json!({
            "bulk_request": {"size": request.size, "description": request.description}
        }),
        Content::BulkResponse(response) => json!({
            "bulk_response": {
                "request_message_id": response.request_message_id, "granted": response.granted,
                "url": response.url, "reason": response.reason,
            }
        }),
        Content::Heartbeat(heartbeat) => json!({"heartbeat": {"components": heartbeat.components}}),
    }
}

/// A stored upstream message on one line.
pub fn message_text(stored: &pb::StoredUpstream) -> String {
    let message = stored.message.clone().unwrap_or_default();
    let header = message.header.unwrap_or_default();
    let content = message
        .content
        .as_ref()
        .map_or_else(|| "no content".into(), content_text);
    format!(
        "#{} {}/{} {} from {}: {content}",
        stored.position, header.class, header.subclass, header.message_id, header.source
    )
}

fn content_text(content: &Content) -> String {
    match content {
        Content::Alarm(alarm) => format!(
            "alarm {} on {} {} ({}): {}",
            alarm.alarm_id,
            alarm.support_instance,
            enum_name::<pb::AlarmState>(alarm.state),
            enum_name::<pb::Severity>(alarm.severity),
            alarm.text
        ),
        Content::Event(event) => format!(
            "event ({}){}: {}",
            enum_name::<pb::Severity>(event.severity),
            event
                .support_instance
                .as_ref()
                .map_or_else(String::new, |instance| format!(" on {instance}")),
            event.text
        ),
        Content::Data(data) => format!(
            "data {}, {} bytes: {}",
            data.mime_type,
            data.size,
            bytes_text(&data.body)
        ),
        Content::Response(response) => format!(
            "response to {}: {}{}",
            response.in_reply_to,
            enum_name::<pb::ResponseStatus>(response.status),
            response
                .error
                .as_ref()
                .map_or_else(String::new, |error| format!(" ({error})"))
        ),
        Content::BulkRequest(request) => format!("bulk request, {} bytes: {}", request.size, request.description),
        Content::BulkResponse(response) => match (response.granted, &response.url, &response.reason) {
            (true, url, _) => format!(
                "bulk response to {}: granted, send to {}",
                response.request_message_id,
                url.as_deref().unwrap_or("-")
            ),
            (false, _, reason) => format!(
                "bulk response to {}: denied ({})",
                response.request_message_id,
                reason.as_deref().unwrap_or("-")
            ),
        },
        Content::Heartbeat(heartbeat) => format!("heartbeat: {}", heartbeat.components.join(", ")),
    }
}
