//! How `farmlog dump` shows a command-batch record
//! ([`kinds::COMMAND_BATCH`](farmlog_engine::kinds::COMMAND_BATCH)): each
//! command's slot, envelope and body, as text or JSON.
//!
//! Commands are checked exactly as apply checks them ([`Batch::parse`],
//! then [`Batch::command`]: bytecheck and the stateless validation), then
//! deserialized into the engine's owned types, whose serde form is the
//! JSON. A batch that does not parse, or a slot that does not check, is
//! shown as an error in its place; nothing here panics on bytes from disk.
//!
//! Byte fields (an alarm's or event's `data`, a data message's `body`, a
//! stream event's `body`, a back-channel message's inline `body`, and the
//! same fields of the upstream message a poll carries) are never printed
//! whole. Text shows `[LENGTH bytes text="…"]` or `[LENGTH bytes hex=…]`;
//! JSON replaces the byte array by `{"length": LENGTH, "text"|"hex":
//! PREFIX, "truncated": BOOL}` where PREFIX is the first
//! [`BODY_PREVIEW_BYTES_MAX`] bytes, as text when printable UTF-8 and as
//! lowercase hex otherwise. A bulk payload shows its URL and size only. So
//! one command's output is bounded by the command catalog's own limits.

use std::io::Write;

use farmlog_engine::state::command::{
    ComponentRef, Content, Payload, Poll, Publish, Qos, RouteHop, SetThrottle, Settle, ThrottleRule, TransferAction,
    TransferStep, UpstreamMessage,
};
use farmlog_engine::state::{Batch, Command, CommandBody, SCHEMA_VERSION};
use rkyv::util::AlignedVec;
use serde_json::{json, Map, Value};

use crate::preview::Preview;

/// Most bytes of a byte field a dump shows.
pub const BODY_PREVIEW_BYTES_MAX: usize = 32;

/// A decoded command-batch payload.
pub enum BatchView {
    /// The header and offset table are sound; each slot in order.
    Parsed(Vec<SlotView>),
    /// The payload is not a batch this build reads.
    Unreadable(String),
}

/// One slot of a parsed batch.
pub enum SlotView {
    Command(Box<Command>),
    /// The slot's bytes fail bytecheck or the stateless validation.
    Bad(String),
}

impl BatchView {
    pub fn decode(payload: &[u8]) -> Self {
        let copy;
        let payload = match (payload.as_ptr() as usize).is_multiple_of(8) {
            true => payload,
            false => {
                copy = aligned_copy(payload);
                copy.as_slice()
            }
        };
        let batch = match Batch::parse(payload) {
            Ok(batch) => batch,
            Err(error) => return Self::Unreadable(error.to_string()),
        };
        let slots = (0..batch.len()).map(|slot| match batch.command(slot) {
            Ok(archived) => match rkyv::deserialize::<Command, rkyv::rancor::Error>(archived) {
                Ok(command) => SlotView::Command(Box::new(command)),
                Err(error) => SlotView::Bad(format!("command in slot {slot} does not deserialize: {error}")),
            },
            Err(error) => SlotView::Bad(error.to_string()),
        });
        Self::Parsed(slots.collect())
    }

    /// The first problem, if the record is not a sound batch: what apply
    /// would refuse it for.
    pub fn error(&self) -> Option<&str> {
        match self {
            Self::Unreadable(reason) => Some(reason),
            Self::Parsed(slots) => slots.iter().find_map(|slot| match slot {
                SlotView::Bad(reason) => Some(reason.as_str()),
                SlotView::Command(_) => None,
            }),
        }
    }

    /// `{"count": N, "commands": [...]}`, plus `"error"` when something is
    /// wrong; `{"error": …}` alone when the batch does not parse.
    pub fn to_json(&self) -> Value {
        let slots = match self {
            Self::Unreadable(reason) => return json!({ "error": reason }),
            Self::Parsed(slots) => slots,
        };
        let commands: Vec<Value> = slots
            .iter()
            .zip(0u32..)
            .map(|(view, slot)| slot_json(view, slot))
            .collect();
        let mut object = json!({ "schema_version": SCHEMA_VERSION, "count": slots.len(), "commands": commands });
        if let Some(error) = self.error() {
            object["error"] = json!(error);
        }
        object
    }

    /// What follows the record's own fields on its header line.
    pub fn summary_text(&self) -> String {
        match self {
            Self::Unreadable(reason) => format!("payload_error={reason:?}"),
            Self::Parsed(slots) => format!("commands={}", slots.len()),
        }
    }

    /// One indented line per command, after the record's header line.
    pub fn write_commands(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Self::Parsed(slots) = self else {
            return Ok(());
        };
        for (view, slot) in slots.iter().zip(0u32..) {
            match view {
                SlotView::Command(command) => writeln!(out, "  slot={slot} {}", command_text(command))?,
                SlotView::Bad(reason) => writeln!(out, "  slot={slot} error={reason:?}")?,
            }
        }
        Ok(())
    }
}

/// Log payloads are 8-aligned in the segment map, which [`Batch::parse`]
/// requires; a copy keeps the dump working if one ever is not.
pub fn aligned_copy(payload: &[u8]) -> AlignedVec<8> {
    let mut copy = AlignedVec::<8>::with_capacity(payload.len());
    copy.extend_from_slice(payload);
    copy
}

// ---------------------------------------------------------------- JSON

fn slot_json(view: &SlotView, slot: u32) -> Value {
    match view {
        SlotView::Bad(reason) => json!({ "slot": slot, "error": reason }),
        SlotView::Command(command) => {
            let mut object = Map::new();
            object.insert("slot".into(), json!(slot));
            if let Value::Object(fields) = command_json(command) {
                object.extend(fields);
            }
            Value::Object(object)
        }
    }
}

/// The command's serde form, with its byte field (if any) replaced by a
/// bounded preview.
pub fn command_json(command: &Command) -> Value {
    let mut command = command.clone();
    let bytes = byte_field(&mut command.body).map(|(pointer, bytes)| (pointer, std::mem::take(bytes)));
    let mut value = serde_json::to_value(&command).unwrap_or_else(|error| json!({ "error": error.to_string() }));
    if let Some((pointer, bytes)) = bytes {
        if let Some(field) = value.pointer_mut(&pointer) {
            *field = bytes_json(&bytes);
        }
    }
    value
}

/// The one byte field of a body, with its JSON pointer in the command's
/// serde form. Exhaustive, so a new variant must say whether it has one.
fn byte_field(body: &mut CommandBody) -> Option<(String, &mut Vec<u8>)> {
    match body {
        CommandBody::Upstream(message) => {
            content_bytes(&mut message.content).map(|(at, bytes)| (format!("/body/Upstream/content/{at}"), bytes))
        }
        CommandBody::StreamAppend(append) => Some(("/body/StreamAppend/body".to_owned(), &mut append.body)),
        CommandBody::Publish(publish) => match &mut publish.payload {
            Payload::Inline { body, .. } => Some(("/body/Publish/payload/Inline/body".to_owned(), body)),
            Payload::Bulk { .. } => None,
        },
        // The upstream message a poll carries, if any, has its own.
        CommandBody::Poll(poll) => poll
            .message
            .as_mut()
            .and_then(|message| content_bytes(&mut message.content))
            .map(|(at, bytes)| (format!("/body/Poll/message/content/{at}"), bytes)),
        CommandBody::Tick
        | CommandBody::OpenSession
        | CommandBody::RegisterCustomer(_)
        | CommandBody::RegisterComponent(_)
        | CommandBody::SetEnabled(_)
        | CommandBody::Deregister(_)
        | CommandBody::MapManagementId(_)
        | CommandBody::DefineGroup(_)
        | CommandBody::ChangeGroupMember(_)
        | CommandBody::Settle(_)
        | CommandBody::Redrive(_)
        | CommandBody::ConfigureSpool(_)
        | CommandBody::Transfer(_)
        | CommandBody::SetThrottle(_)
        | CommandBody::ReportUsage(_) => None,
    }
}

/// The byte field of an upstream message's content, with its JSON pointer
/// below the content (`Alarm/data`).
fn content_bytes(content: &mut Content) -> Option<(&'static str, &mut Vec<u8>)> {
    match content {
        Content::Alarm(alarm) => Some(("Alarm/data", &mut alarm.data)),
        Content::Event(event) => Some(("Event/data", &mut event.data)),
        Content::Data(data) => Some(("Data/body", &mut data.body)),
        Content::Response(_) | Content::BulkRequest(_) | Content::BulkResponse(_) | Content::Heartbeat(_) => None,
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    let mut value = Preview::of(bytes, BODY_PREVIEW_BYTES_MAX).to_json();
    value["length"] = json!(bytes.len());
    value
}

// ---------------------------------------------------------------- text

/// The envelope, then the body: `tenant="acme" principal="ops"
/// proposed_at_ms=… session=7:3 schema_version=1 StreamAppend stream=…`.
/// Names are quoted (Rust string syntax); enum values use the variant
/// names of the JSON form.
pub fn command_text(command: &Command) -> String {
    let session = command.session.map_or_else(
        || "-".to_owned(),
        |session| format!("{}:{}", session.client_id, session.sequence),
    );
    let encryption = command.encryption.map_or_else(String::new, |slot| {
        format!(
            " encryption=key:{}:nonce:{}",
            slot.key_id,
            crate::preview::hex(&slot.nonce)
        )
    });
    format!(
        "tenant={:?} principal={:?} proposed_at_ms={} session={session} schema_version={}{encryption} {}",
        command.tenant,
        command.principal,
        command.proposed_at_ms,
        command.schema_version,
        body_text(&command.body)
    )
}

fn body_text(body: &CommandBody) -> String {
    match body {
        CommandBody::Tick => "Tick".to_owned(),
        CommandBody::OpenSession => "OpenSession".to_owned(),
        CommandBody::RegisterCustomer(body) => {
            format!(
                "RegisterCustomer name={:?} display_name={:?}",
                body.name, body.display_name
            )
        }
        CommandBody::RegisterComponent(body) => {
            let parents: Vec<String> = body.parents.iter().map(component_ref).collect();
            format!(
                "RegisterComponent id={:?} kind={:?} version={:?} mode={:?} parents=[{}]",
                body.id,
                body.kind,
                body.version,
                body.mode,
                parents.join(",")
            )
        }
        CommandBody::SetEnabled(body) => format!(
            "SetEnabled component={:?} switch={:?} enabled={}",
            body.component, body.switch, body.enabled
        ),
        CommandBody::Deregister(body) => format!("Deregister component={}", component_ref(&body.component)),
        CommandBody::MapManagementId(body) => format!(
            "MapManagementId proxy={:?} management_id={:?} component={}",
            body.proxy,
            body.management_id,
            optional(body.component.as_deref())
        ),
        CommandBody::DefineGroup(body) => format!("DefineGroup name={:?} kind={:?}", body.name, body.kind),
        CommandBody::ChangeGroupMember(body) => format!(
            "ChangeGroupMember group={:?} member={} add={}",
            body.group,
            component_ref(&body.member),
            body.add
        ),
        CommandBody::Upstream(message) => upstream_text(message),
        CommandBody::StreamAppend(body) => {
            let idempotency = body.idempotency.as_ref().map_or_else(
                || "-".to_owned(),
                |idempotency| format!("{:?}/{}ms", idempotency.key, idempotency.window_ms),
            );
            format!(
                "StreamAppend stream={:?} expected={:?} idempotency={idempotency} event_type={:?} body={}",
                body.stream,
                body.expected,
                body.event_type,
                bytes_text(&body.body)
            )
        }
        CommandBody::Publish(body) => publish_text(body),
        CommandBody::Poll(body) => poll_text(body),
        CommandBody::Settle(body) => settle_text(body),
        CommandBody::Redrive(body) => format!(
            "Redrive message={} destination={}",
            body.message
                .map_or_else(|| "-".to_owned(), |position| position.to_string()),
            body.destination.as_ref().map_or_else(|| "-".to_owned(), component_ref)
        ),
        CommandBody::ConfigureSpool(body) => format!("ConfigureSpool capacity={}", body.capacity),
        CommandBody::Transfer(body) => transfer_text(body),
        CommandBody::SetThrottle(body) => set_throttle_text(body),
        CommandBody::ReportUsage(body) => {
            let increments: Vec<String> = body
                .increments
                .iter()
                .map(|usage| format!("(bytes={},messages={})", usage.bytes, usage.messages))
                .collect();
            format!(
                "ReportUsage farm={:?} member={} increments=[{}]",
                body.farm,
                component_ref(&body.member),
                increments.join(",")
            )
        }
    }
}

fn upstream_text(message: &UpstreamMessage) -> String {
    let header = &message.header;
    format!(
        "Upstream message_id={:?} source={:?} source_version={:?} source_kind={:?} customer={:?} class={:?} subclass={:?} created_at_ms={} {} routing=[{}] content={}",
        header.message_id,
        header.source,
        header.source_version,
        header.source_kind,
        header.customer,
        header.class,
        header.subclass,
        header.created_at_ms,
        qos_text(&message.qos),
        routing_text(&message.routing),
        content_text(&message.content)
    )
}

/// `precedence=… expiry_ms=… persistence=…`.
fn qos_text(qos: &Qos) -> String {
    format!(
        "precedence={} expiry_ms={} persistence={}",
        qos.precedence,
        qos.expiry_ms
            .map_or_else(|| "-".to_owned(), |expiry| expiry.to_string()),
        qos.persistence
    )
}

/// `own:"im"@12,hosted:"agg"@13`.
fn routing_text(routing: &[RouteHop]) -> String {
    let hops: Vec<String> = routing
        .iter()
        .map(|hop| format!("{}@{}", component_ref(&hop.component), hop.at_ms))
        .collect();
    hops.join(",")
}

fn component_refs(references: &[ComponentRef]) -> String {
    let references: Vec<String> = references.iter().map(component_ref).collect();
    references.join(",")
}

fn publish_text(publish: &Publish) -> String {
    let header = &publish.header;
    let payload = match &publish.payload {
        Payload::Inline { mime_type, body } => format!("Inline mime_type={mime_type:?} body={}", bytes_text(body)),
        Payload::Bulk { url, size } => format!("Bulk url={url:?} size={size}"),
    };
    let groups: Vec<String> = publish.groups.iter().map(|group| format!("{group:?}")).collect();
    format!(
        "Publish message_id={:?} source={} class={:?} subclass={:?} created_at_ms={} {} routing=[{}] payload={payload} destinations=[{}] groups=[{}] max_attempts={}",
        header.message_id,
        component_ref(&header.source),
        header.class,
        header.subclass,
        header.created_at_ms,
        qos_text(&publish.qos),
        routing_text(&publish.routing),
        component_refs(&publish.destinations),
        groups.join(","),
        publish.max_attempts
    )
}

/// The carried upstream message, if any, comes last, in full.
fn poll_text(poll: &Poll) -> String {
    format!(
        "Poll caller={} max_deliveries={} max_bytes={} visibility_ms={} message={}",
        component_ref(&poll.caller),
        poll.max_deliveries,
        poll.max_bytes,
        poll.visibility_ms,
        poll.message.as_ref().map_or_else(|| "-".to_owned(), upstream_text)
    )
}

fn settle_text(settle: &Settle) -> String {
    format!(
        "Settle caller={} message={} destinations=[{}] settlement={:?}",
        component_ref(&settle.caller),
        settle.message,
        component_refs(&settle.destinations),
        settle.settlement
    )
}

fn transfer_text(step: &TransferStep) -> String {
    let action = match &step.action {
        TransferAction::Grant { url } => format!("Grant url={url:?}"),
        TransferAction::Deny { reason, retry_after_ms } => {
            format!("Deny reason={reason:?} retry_after_ms={retry_after_ms}")
        }
        TransferAction::Transferred => "Transferred".to_owned(),
    };
    format!(
        "Transfer request={:?} hop={} action={action}",
        step.request,
        component_ref(&step.hop)
    )
}

fn set_throttle_text(throttle: &SetThrottle) -> String {
    let optional_count = |count: Option<u64>| count.map_or_else(|| "-".to_owned(), |count| count.to_string());
    let rules: Vec<String> = throttle
        .rules
        .iter()
        .map(|rule| match *rule {
            ThrottleRule::Quiet { from_minute, to_minute } => {
                format!("Quiet(from_minute={from_minute},to_minute={to_minute})")
            }
            ThrottleRule::Limit {
                window_ms,
                max_bytes,
                max_messages,
            } => format!(
                "Limit(window_ms={window_ms},max_bytes={},max_messages={})",
                optional_count(max_bytes),
                optional_count(max_messages)
            ),
        })
        .collect();
    format!("SetThrottle farm={:?} rules=[{}]", throttle.farm, rules.join(","))
}

fn content_text(content: &Content) -> String {
    match content {
        Content::Alarm(alarm) => format!(
            "Alarm alarm_id={:?} support_instance={:?} severity={:?} state={:?} text={:?} data={}",
            alarm.alarm_id,
            alarm.support_instance,
            alarm.severity,
            alarm.state,
            alarm.text,
            bytes_text(&alarm.data)
        ),
        Content::Event(event) => format!(
            "Event support_instance={} severity={:?} text={:?} data={}",
            optional(event.support_instance.as_deref()),
            event.severity,
            event.text,
            bytes_text(&event.data)
        ),
        Content::Data(data) => format!(
            "Data mime_type={:?} size={} encoding={} body={}",
            data.mime_type,
            data.size,
            optional(data.encoding.as_deref()),
            bytes_text(&data.body)
        ),
        Content::Response(response) => format!(
            "Response in_reply_to={:?} status={:?} error={}",
            response.in_reply_to,
            response.status,
            optional(response.error.as_deref())
        ),
        Content::BulkRequest(request) => {
            format!(
                "BulkRequest size={} description={:?}",
                request.size, request.description
            )
        }
        Content::BulkResponse(response) => format!(
            "BulkResponse request_message_id={:?} granted={} url={} reason={}",
            response.request_message_id,
            response.granted,
            optional(response.url.as_deref()),
            optional(response.reason.as_deref())
        ),
        Content::Heartbeat(heartbeat) => {
            let components: Vec<String> = heartbeat.components.iter().map(|id| format!("{id:?}")).collect();
            format!("Heartbeat components=[{}]", components.join(","))
        }
    }
}

/// `own:"im"` or `hosted:"agg"`.
fn component_ref(reference: &ComponentRef) -> String {
    let namespace = if reference.hosted { "hosted" } else { "own" };
    format!("{namespace}:{:?}", reference.id)
}

fn optional(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:?}"))
}

/// `[LENGTH bytes text="…"]`, `[LENGTH bytes hex=…]` or `[0 bytes]`.
fn bytes_text(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "[0 bytes]".to_owned();
    }
    format!(
        "[{} bytes {}]",
        bytes.len(),
        Preview::of(bytes, BODY_PREVIEW_BYTES_MAX).to_text()
    )
}
