//! `farmlog.v1.Messages`: upstream messages sent by customers' components,
//! read back from the log by id, source or class, open alarms, and the
//! subscriptions by class through which service modules take the data they
//! care about (seed 000 L173–175), in the caller's tenant.
//!
//! The conversions between the upstream message's protobuf types and the
//! engine's live here, one function per type and direction: requests into
//! the owned command types, and the archived message read from the log
//! into answers. The engine's stateless checks (run by
//! [`Context::write`]) name a bad field; these conversions check only what
//! the engine's types cannot hold (an unspecified enum, a precedence over
//! 255).

use farmlog_engine::state::command::{
    Alarm, AlarmState, ArchivedCommand, ArchivedCommandBody, ArchivedComponentRef, ArchivedContent,
    ArchivedUpstreamMessage, BulkRequest, BulkResponse, CommandBody, ComponentKind, ComponentRef, Content, Data, Event,
    Heartbeat, MessageHeader, MessageResponse, Qos, ResponseStatus, RouteHop, Severity, UpstreamMessage,
};
use farmlog_engine::state::outcome::{AlarmChange, Effect, Verdict};
use farmlog_engine::state::read::EventRecord;
use farmlog_engine::state::{Direction, TenantView};
use tonic::{Request, Response, Status};

use crate::auth::Op;
use crate::context::{Context, Subscription, SUBSCRIPTION_PAGE};
use crate::pb::{self, messages_server::Messages};
use crate::services::streams::{direction, read_limit};
use crate::services::topology::{bad_enum, component_ref_from_pb, kind_from_pb, kind_to_pb, reaches};
use crate::status::{invalid, missing};

/// Most messages one step of a class filter without a subclass reads from
/// the log to find its matches (the engine indexes class and subclass
/// together, so such a filter scans the tenant's messages). A list returns
/// what it found with the position to go on from; a subscription goes on
/// at its next step.
pub const CLASS_SCAN_MAX: usize = 4096;

/// The `farmlog.v1.Messages` service.
pub struct MessagesService {
    context: Context,
}

impl MessagesService {
    /// The service over the node and settings every service shares.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

// ------------------------------------------------------------ requests

fn severity_from_pb(value: i32, field: &str) -> Result<Severity, Status> {
    match pb::Severity::try_from(value) {
        Ok(pb::Severity::Critical) => Ok(Severity::Critical),
        Ok(pb::Severity::Major) => Ok(Severity::Major),
        Ok(pb::Severity::Minor) => Ok(Severity::Minor),
        Ok(pb::Severity::Warning) => Ok(Severity::Warning),
        Ok(pb::Severity::Info) => Ok(Severity::Info),
        Ok(pb::Severity::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn alarm_state_from_pb(value: i32, field: &str) -> Result<AlarmState, Status> {
    match pb::AlarmState::try_from(value) {
        Ok(pb::AlarmState::Raised) => Ok(AlarmState::Raised),
        Ok(pb::AlarmState::Cleared) => Ok(AlarmState::Cleared),
        Ok(pb::AlarmState::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn response_status_from_pb(value: i32, field: &str) -> Result<ResponseStatus, Status> {
    match pb::ResponseStatus::try_from(value) {
        Ok(pb::ResponseStatus::Ok) => Ok(ResponseStatus::Ok),
        Ok(pb::ResponseStatus::Rejected) => Ok(ResponseStatus::Rejected),
        Ok(pb::ResponseStatus::Throttled) => Ok(ResponseStatus::Throttled),
        Ok(pb::ResponseStatus::ReceptionFailed) => Ok(ResponseStatus::ReceptionFailed),
        Ok(pb::ResponseStatus::Unspecified) | Err(_) => Err(bad_enum(field, value)),
    }
}

fn header_from_pb(header: pb::MessageHeader, field: &str) -> Result<MessageHeader, Status> {
    Ok(MessageHeader {
        source_kind: kind_from_pb(header.source_kind, &format!("{field}.source_kind"))?,
        message_id: header.message_id,
        source: header.source,
        source_version: header.source_version,
        customer: header.customer,
        class: header.class,
        subclass: header.subclass,
        created_at_ms: header.created_at_ms,
    })
}

/// A message's quality of service from a request; absent: precedence 0,
/// no expiry, not persistent. `field` names it in errors.
pub fn qos_from_pb(qos: Option<pb::Qos>, field: &str) -> Result<Qos, Status> {
    let qos = qos.unwrap_or_default();
    let precedence = u8::try_from(qos.precedence).map_err(|_| {
        invalid(
            &format!("{field}.precedence"),
            format!("{}, more than 255", qos.precedence),
        )
    })?;
    Ok(Qos {
        precedence,
        expiry_ms: qos.expiry_ms,
        persistence: qos.persistence,
    })
}

/// One hop of a routing trail; `field` names the hop.
pub fn hop_from_pb(hop: pb::RouteHop, field: &str) -> Result<RouteHop, Status> {
    let component = hop.component.ok_or_else(|| missing(&format!("{field}.component")))?;
    Ok(RouteHop {
        component: component_ref_from_pb(component),
        at_ms: hop.at_ms,
    })
}

fn content_from_pb(content: pb::upstream_message::Content, field: &str) -> Result<Content, Status> {
    use pb::upstream_message::Content as In;
    let content = match content {
        In::Alarm(alarm) => Content::Alarm(Alarm {
            severity: severity_from_pb(alarm.severity, &format!("{field}.alarm.severity"))?,
            state: alarm_state_from_pb(alarm.state, &format!("{field}.alarm.state"))?,
            alarm_id: alarm.alarm_id,
            support_instance: alarm.support_instance,
            text: alarm.text,
            data: alarm.data.to_vec(),
        }),
        In::Event(event) => Content::Event(Event {
            severity: severity_from_pb(event.severity, &format!("{field}.event.severity"))?,
            support_instance: event.support_instance,
            text: event.text,
            data: event.data.to_vec(),
        }),
        In::Data(data) => Content::Data(Data {
            mime_type: data.mime_type,
            size: data.size,
            encoding: data.encoding,
            body: data.body.to_vec(),
        }),
        In::Response(response) => Content::Response(MessageResponse {
            status: response_status_from_pb(response.status, &format!("{field}.response.status"))?,
            in_reply_to: response.in_reply_to,
            error: response.error,
        }),
        In::BulkRequest(request) => Content::BulkRequest(BulkRequest {
            size: request.size,
            description: request.description,
        }),
        In::BulkResponse(response) => Content::BulkResponse(BulkResponse {
            request_message_id: response.request_message_id,
            granted: response.granted,
            url: response.url,
            reason: response.reason,
        }),
        In::Heartbeat(heartbeat) => Content::Heartbeat(Heartbeat {
            components: heartbeat.components,
        }),
    };
    Ok(content)
}

/// An upstream message from a request; `field` names the message.
pub fn message_from_pb(message: pb::UpstreamMessage, field: &str) -> Result<UpstreamMessage, Status> {
    let header = message.header.ok_or_else(|| missing(&format!("{field}.header")))?;
    let content = message.content.ok_or_else(|| missing(&format!("{field}.content")))?;
    let routing = message.routing.into_iter().enumerate().map(|(at, hop)| {
        let field = format!("{field}.routing[{at}]");
        hop_from_pb(hop, &field)
    });
    Ok(UpstreamMessage {
        header: header_from_pb(header, &format!("{field}.header"))?,
        qos: qos_from_pb(message.qos, &format!("{field}.qos"))?,
        routing: routing.collect::<Result<_, _>>()?,
        content: content_from_pb(content, &format!("{field}.content"))?,
    })
}

// ------------------------------------------------------------ answers

fn severity_to_pb(severity: Severity) -> pb::Severity {
    match severity {
        Severity::Critical => pb::Severity::Critical,
        Severity::Major => pb::Severity::Major,
        Severity::Minor => pb::Severity::Minor,
        Severity::Warning => pb::Severity::Warning,
        Severity::Info => pb::Severity::Info,
    }
}

fn alarm_state_to_pb(state: AlarmState) -> pb::AlarmState {
    match state {
        AlarmState::Raised => pb::AlarmState::Raised,
        AlarmState::Cleared => pb::AlarmState::Cleared,
    }
}

fn response_status_to_pb(status: ResponseStatus) -> pb::ResponseStatus {
    match status {
        ResponseStatus::Ok => pb::ResponseStatus::Ok,
        ResponseStatus::Rejected => pb::ResponseStatus::Rejected,
        ResponseStatus::Throttled => pb::ResponseStatus::Throttled,
        ResponseStatus::ReceptionFailed => pb::ResponseStatus::ReceptionFailed,
    }
}

fn alarm_change_to_pb(change: AlarmChange) -> pb::AlarmChange {
    match change {
        AlarmChange::Raised => pb::AlarmChange::Raised,
        AlarmChange::Updated => pb::AlarmChange::Updated,
        AlarmChange::Cleared => pb::AlarmChange::Cleared,
        AlarmChange::ClearedUnknown => pb::AlarmChange::ClearedUnknown,
    }
}

fn archived_ref_to_pb(reference: &ArchivedComponentRef) -> pb::ComponentRef {
    pb::ComponentRef {
        id: reference.id.to_string(),
        hosted: reference.hosted,
    }
}

fn bytes_of(data: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(data)
}

fn content_to_pb(content: &ArchivedContent) -> pb::upstream_message::Content {
    use pb::upstream_message::Content as Out;
    match content {
        ArchivedContent::Alarm(alarm) => Out::Alarm(pb::AlarmContent {
            alarm_id: alarm.alarm_id.to_string(),
            support_instance: alarm.support_instance.to_string(),
            severity: severity_to_pb(Severity::from_archived(&alarm.severity)).into(),
            state: alarm_state_to_pb(AlarmState::from_archived(&alarm.state)).into(),
            text: alarm.text.to_string(),
            data: bytes_of(alarm.data.as_slice()),
        }),
        ArchivedContent::Event(event) => Out::Event(pb::EventContent {
            support_instance: event.support_instance.as_ref().map(|id| id.to_string()),
            severity: severity_to_pb(Severity::from_archived(&event.severity)).into(),
            text: event.text.to_string(),
            data: bytes_of(event.data.as_slice()),
        }),
        ArchivedContent::Data(data) => Out::Data(pb::DataContent {
            mime_type: data.mime_type.to_string(),
            size: data.size.to_native(),
            encoding: data.encoding.as_ref().map(|encoding| encoding.to_string()),
            body: bytes_of(data.body.as_slice()),
        }),
        ArchivedContent::Response(response) => Out::Response(pb::ResponseContent {
            in_reply_to: response.in_reply_to.to_string(),
            status: response_status_to_pb(ResponseStatus::from_archived(&response.status)).into(),
            error: response.error.as_ref().map(|error| error.to_string()),
        }),
        ArchivedContent::BulkRequest(request) => Out::BulkRequest(pb::BulkRequestContent {
            size: request.size.to_native(),
            description: request.description.to_string(),
        }),
        ArchivedContent::BulkResponse(response) => Out::BulkResponse(pb::BulkResponseContent {
            request_message_id: response.request_message_id.to_string(),
            granted: response.granted,
            url: response.url.as_ref().map(|url| url.to_string()),
            reason: response.reason.as_ref().map(|reason| reason.to_string()),
        }),
        ArchivedContent::Heartbeat(heartbeat) => Out::Heartbeat(pb::HeartbeatContent {
            components: heartbeat.components.iter().map(|id| id.to_string()).collect(),
        }),
    }
}

/// An upstream message as the log holds it.
fn message_to_pb(message: &ArchivedUpstreamMessage) -> pb::UpstreamMessage {
    let header = &message.header;
    let qos = &message.qos;
    pb::UpstreamMessage {
        header: Some(pb::MessageHeader {
            message_id: header.message_id.to_string(),
            source: header.source.to_string(),
            source_version: header.source_version.to_string(),
            source_kind: kind_to_pb(ComponentKind::from_archived(&header.source_kind)).into(),
            customer: header.customer.to_string(),
            class: header.class.to_string(),
            subclass: header.subclass.to_string(),
            created_at_ms: header.created_at_ms.to_native(),
        }),
        qos: Some(pb::Qos {
            precedence: u32::from(qos.precedence),
            expiry_ms: qos.expiry_ms.as_ref().map(|expiry| expiry.to_native()),
            persistence: qos.persistence,
        }),
        routing: message
            .routing
            .iter()
            .map(|hop| pb::RouteHop {
                component: Some(archived_ref_to_pb(&hop.component)),
                at_ms: hop.at_ms.to_native(),
            })
            .collect(),
        content: Some(content_to_pb(&message.content)),
    }
}

/// The upstream message a command stored: its own, or the one a poll
/// carried.
fn upstream_of(command: &ArchivedCommand) -> Option<&ArchivedUpstreamMessage> {
    match &command.body {
        ArchivedCommandBody::Upstream(message) => Some(message),
        ArchivedCommandBody::Poll(poll) => poll.message.as_ref(),
        _ => None,
    }
}

fn stored_to_pb(event: &EventRecord, message: &ArchivedUpstreamMessage) -> pb::StoredUpstream {
    let command = event.command();
    pb::StoredUpstream {
        position: event.position(),
        principal: command.principal.to_string(),
        proposed_at_ms: command.proposed_at_ms.to_native(),
        message: Some(message_to_pb(message)),
    }
}

/// The message stored at `position`, which must be one of this tenant's.
fn stored(context: &Context, view: &TenantView<'_>, position: u64) -> Result<pb::StoredUpstream, Status> {
    let event = context.event(view, position)?;
    let message = upstream_of(event.command())
        .ok_or_else(|| Status::not_found(format!("no upstream message at position {position}")))?;
    Ok(stored_to_pb(&event, message))
}

// ------------------------------------------------------------ reads

/// Where a read that went through `last` goes on from.
fn after(last: u64, direction: Direction) -> u64 {
    match direction {
        Direction::Forward => last.saturating_add(1),
        Direction::Backward => last.saturating_sub(1),
    }
}

/// A page of messages read from `positions` (in read order), and where the
/// next page starts.
fn page(
    context: &Context,
    view: &TenantView<'_>,
    positions: Vec<u64>,
    from: u64,
    direction: Direction,
) -> Result<pb::ListMessagesResponse, Status> {
    let next_position = positions.last().map_or(from, |&last| after(last, direction));
    let messages = positions
        .into_iter()
        .map(|position| stored(context, view, position))
        .collect::<Result<_, _>>()?;
    Ok(pb::ListMessagesResponse {
        messages,
        next_position,
    })
}

/// Messages of `class` (any subclass) from `from`: at most `limit`, found
/// among at most [`CLASS_SCAN_MAX`] of the tenant's messages, and where the
/// scan stopped.
fn scan_class(
    context: &Context,
    view: &TenantView<'_>,
    class: &str,
    from: u64,
    direction: Direction,
    limit: usize,
) -> Result<pb::ListMessagesResponse, Status> {
    let mut found = Vec::new();
    let mut next_position = from;
    for position in view.messages(from, direction, CLASS_SCAN_MAX) {
        next_position = after(position, direction);
        let event = context.event(view, position)?;
        let message = upstream_of(event.command())
            .ok_or_else(|| Status::internal(format!("position {position} is indexed as a message but is not one")))?;
        if message.header.class.as_str() == class {
            found.push(stored_to_pb(&event, message));
            if found.len() == limit {
                break;
            }
        }
    }
    Ok(pb::ListMessagesResponse {
        messages: found,
        next_position,
    })
}

// ------------------------------------------------------------ service

#[tonic::async_trait]
impl Messages for MessagesService {
    async fn send_upstream(
        &self,
        request: Request<pb::SendUpstreamRequest>,
    ) -> Result<Response<pb::SendUpstreamResponse>, Status> {
        let caller = self.context.caller(&request, Op::SendUpstream)?;
        let pb::SendUpstreamRequest { message, session } = request.into_inner();
        let message = message_from_pb(message.ok_or_else(|| missing("message"))?, "message")?;
        let source = ComponentRef {
            hosted: false,
            id: message.header.source.clone(),
        };
        reaches(&self.context, &caller, &source)?;
        let (written, outcome) = self
            .context
            .applied(&caller, session, CommandBody::Upstream(message))
            .await?;
        let (position, duplicate, alarm) = match outcome.verdict {
            Verdict::Applied(Effect::MessageStored { position, alarm }) => (position, false, alarm),
            Verdict::Applied(Effect::MessageDuplicate { position }) => (position, true, None),
            other => return Err(Status::internal(format!("an upstream message applied as {other:?}"))),
        };
        Ok(Response::new(pb::SendUpstreamResponse {
            position,
            duplicate,
            alarm: alarm.map_or(pb::AlarmChange::Unspecified, alarm_change_to_pb).into(),
            written: Some(written),
        }))
    }

    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::StoredUpstream>, Status> {
        let caller = self.context.caller(&request, Op::ReadMessages)?;
        let id = request.get_ref().message_id.as_str();
        self.context
            .read(&request, &caller, |view, _| {
                let position = view
                    .message(id)
                    .ok_or_else(|| Status::not_found(format!("message {id:?} not found")))?;
                stored(&self.context, &view, position)
            })
            .await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        use pb::list_messages_request::Filter;
        let caller = self.context.caller(&request, Op::ReadMessages)?;
        let body = request.get_ref();
        let (limit, direction) = (read_limit(body.limit)?, direction(body.direction)?);
        let from = body.from_position;
        if let Some(Filter::Class(filter)) = &body.filter {
            if filter.class.is_empty() {
                return Err(missing("class.class"));
            }
        }
        self.context
            .read(&request, &caller, |view, _| {
                let positions = match &body.filter {
                    None => view.messages(from, direction, limit),
                    Some(Filter::Source(source)) => view
                        .messages_by_source(source, from, direction, limit)
                        .ok_or_else(|| Status::not_found(format!("source {source:?} not found")))?,
                    Some(Filter::Class(filter)) if filter.subclass.is_empty() => {
                        return scan_class(&self.context, &view, &filter.class, from, direction, limit);
                    }
                    Some(Filter::Class(filter)) => {
                        view.messages_by_class(&filter.class, &filter.subclass, from, direction, limit)
                    }
                };
                page(&self.context, &view, positions, from, direction)
            })
            .await
    }

    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadMessages)?;
        let body = request.get_ref();
        let limit = read_limit(body.limit)?;
        let only = body.support_instance.as_deref();
        self.context
            .read(&request, &caller, |view, _| {
                let mut open = view
                    .open_alarms()
                    .into_iter()
                    .filter(|alarm| only.is_none_or(|only| alarm.support_instance == only));
                let alarms = open
                    .by_ref()
                    .take(limit)
                    .map(|alarm| {
                        Ok(pb::OpenAlarm {
                            raised_by: Some(stored(&self.context, &view, alarm.position)?),
                            support_instance: alarm.support_instance,
                            alarm_id: alarm.alarm_id,
                        })
                    })
                    .collect::<Result<_, Status>>()?;
                Ok(pb::ListAlarmsResponse {
                    alarms,
                    more: open.next().is_some(),
                })
            })
            .await
    }

    type SubscribeStream = Subscription<pb::StoredUpstream>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeMessagesRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.context.caller(&request, Op::ReadMessages)?;
        let pb::SubscribeMessagesRequest {
            class,
            subclass,
            from_position,
        } = request.into_inner();
        if class.is_empty() && !subclass.is_empty() {
            return Err(invalid("subclass", "a subclass needs its class"));
        }
        let context = self.context.clone();
        let mut next = from_position;
        let messages = self.context.follow(&caller, move |view, _| {
            let forward = Direction::Forward;
            if !class.is_empty() && subclass.is_empty() {
                let found = scan_class(&context, &view, &class, next, forward, SUBSCRIPTION_PAGE)?;
                next = found.next_position;
                return Ok(found.messages);
            }
            let positions = match class.is_empty() {
                true => view.messages(next, forward, SUBSCRIPTION_PAGE),
                false => view.messages_by_class(&class, &subclass, next, forward, SUBSCRIPTION_PAGE),
            };
            let found = page(&context, &view, positions, next, forward)?;
            next = found.next_position;
            Ok(found.messages)
        })?;
        Ok(Response::new(messages))
    }
}
