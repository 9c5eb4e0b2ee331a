//! `farmlog.v1.Spools`: the back-channel (seed 001 L483–573) — publish,
//! poll, settle, redrive, configure, the spool reads, and the ready
//! notifications that let a component long-poll.
//!
//! Scope: the state machine decides what is reachable through a component;
//! this service decides which components a caller may act as
//! ([`Context::acts_as`], for every write that names one) and which it may
//! read about ([`Visible`]). Both answer NOT_FOUND outside the scope.
//!
//! Invariant (ARCHITECTURE.md): a poll that would find nothing is answered
//! by a read ([`TenantView::has_ready`]) and never proposed (unless it
//! carries an upstream message, which must be stored).
//!
//! Conversions of the types other families own are theirs (component
//! references in [`crate::services::topology`], QoS, route hops and
//! upstream messages in [`crate::services::messages`]); this module holds
//! the back-channel's, and what the transfer and throttle services share
//! with it ([`component_ref_to_pb`], [`Visible`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use farmlog_engine::state::command::{
    ArchivedCommandBody, ArchivedComponentRef, ArchivedPayload, BackHeader, CommandBody, ComponentRef, ConfigureSpool,
    NackReason, Payload, Poll, Publish, Redrive, Settle, Settlement, UpstreamMessage, BODY_BYTES_MAX, NAME_BYTES_MAX,
    POLL_BYTES_MAX, POLL_DELIVERIES_MAX, ROUTE_HOPS_MAX, VISIBILITY_MS_MAX, VISIBILITY_MS_MIN,
};
use farmlog_engine::state::outcome::{Effect, Handout, Verdict};
use farmlog_engine::state::spools::DeliveryState;
use farmlog_engine::state::view::{BackMessageInfo, DeliveryInfo};
use farmlog_engine::state::TenantView;
use farmlog_replica::state_machine::Applier;
use tonic::{Request, Response, Status};

use crate::auth::{Op, Scope};
use crate::context::{Caller, Context, Subscription};
use crate::pb::{self, spools_server::Spools};
use crate::services::messages::{hop_from_pb, message_from_pb, qos_from_pb};
use crate::services::streams::read_limit;
use crate::services::topology::{component_ref_from_pb, reaches, required_ref};
use crate::status::{invalid, missing};

/// Deliveries a poll that names no maximum hands out at most.
pub const POLL_DELIVERIES_DEFAULT: u32 = 100;
/// Body bytes a poll that names no maximum hands out at most.
pub const POLL_BYTES_DEFAULT: u64 = 4 << 20;
/// Most body bytes one poll through this API may ask for: below the
/// engine's bound, so that the answer fits one response (checked below).
pub const POLL_BYTES_API_MAX: u64 = 16 << 20;
/// An upper bound on what one handout adds to a poll's answer besides its
/// body: its names and numbers, and its routing trail.
pub const HANDOUT_ENVELOPE_BYTES_MAX: usize = 16 * (NAME_BYTES_MAX + 16) + ROUTE_HOPS_MAX * (NAME_BYTES_MAX + 32);
/// An upper bound on one destination reference in a handout.
pub const DESTINATION_ENVELOPE_BYTES_MAX: usize = NAME_BYTES_MAX + 16;
/// Most parked deliveries a read scoped to a component or group looks at.
pub const PARKED_SCAN_MAX: usize = 65_536;
/// While deliveries stay ready, a subscriber is reminded this often.
pub const READY_REMINDER: Duration = Duration::from_secs(2);

const _: () = assert!(POLL_DELIVERIES_DEFAULT <= POLL_DELIVERIES_MAX);
const _: () = assert!(POLL_BYTES_DEFAULT <= POLL_BYTES_API_MAX);
const _: () = assert!(POLL_BYTES_API_MAX <= POLL_BYTES_MAX);
// The worst poll: every delivery its own handout, the budget full, plus
// the one body a poll hands out whatever its size.
const _: () = assert!(
    POLL_BYTES_API_MAX as usize
        + BODY_BYTES_MAX
        + POLL_DELIVERIES_MAX as usize * (HANDOUT_ENVELOPE_BYTES_MAX + DESTINATION_ENVELOPE_BYTES_MAX)
        <= crate::server::RESPONSE_BYTES_MAX
);

/// The `farmlog.v1.Spools` service.
pub struct SpoolsService {
    context: Context,
}

impl SpoolsService {
    /// The service, answering every call through `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

// ------------------------------------------------------------ conversions

/// A required field: INVALID_ARGUMENT naming it when absent.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| missing(field))
}

/// A component reference, as the API answers it.
pub fn component_ref_to_pb(reference: &ComponentRef) -> pb::ComponentRef {
    pb::ComponentRef {
        id: reference.id.clone(),
        hosted: reference.hosted,
    }
}

fn archived_component_pb(reference: &ArchivedComponentRef) -> pb::ComponentRef {
    pb::ComponentRef {
        id: reference.id.to_string(),
        hosted: reference.hosted,
    }
}

fn back_header(header: Option<pb::BackHeader>) -> Result<BackHeader, Status> {
    let header = required("header", header)?;
    Ok(BackHeader {
        message_id: header.message_id,
        source: required_ref(header.source, "header.source")?,
        class: header.class,
        subclass: header.subclass,
        created_at_ms: header.created_at_ms,
    })
}

fn payload(payload: Option<pb::publish_request::Payload>) -> Result<Payload, Status> {
    Ok(match required("payload", payload)? {
        pb::publish_request::Payload::Inline(inline) => Payload::Inline {
            mime_type: inline.mime_type,
            body: inline.body.to_vec(),
        },
        pb::publish_request::Payload::Bulk(bulk) => Payload::Bulk {
            url: bulk.url,
            size: bulk.size,
        },
    })
}

fn publish(request: pb::PublishRequest) -> Result<Publish, Status> {
    let max_attempts = u16::try_from(request.max_attempts).map_err(|_| {
        invalid(
            "max_attempts",
            format!("{}, more than {}", request.max_attempts, u16::MAX),
        )
    })?;
    let routing = request.routing.into_iter().enumerate();
    let routing = routing.map(|(at, hop)| hop_from_pb(hop, &format!("routing[{at}]")));
    Ok(Publish {
        header: back_header(request.header)?,
        qos: qos_from_pb(request.qos, "qos")?,
        routing: routing.collect::<Result<_, _>>()?,
        payload: payload(request.payload)?,
        destinations: request.destinations.into_iter().map(component_ref_from_pb).collect(),
        groups: request.groups,
        max_attempts,
    })
}

/// The poll's limits, with their defaults. Checked here (the engine's
/// encode checks them again) because a poll that finds nothing is never
/// encoded, and a bad request must fail whether or not anything is ready.
fn poll(request: &pb::PollRequest, caller: ComponentRef, message: Option<UpstreamMessage>) -> Result<Poll, Status> {
    let max_deliveries = match request.max_deliveries {
        0 => POLL_DELIVERIES_DEFAULT,
        count @ 1..=POLL_DELIVERIES_MAX => count,
        count => {
            return Err(invalid(
                "max_deliveries",
                format!("{count}, more than {POLL_DELIVERIES_MAX}"),
            ))
        }
    };
    let max_bytes = match request.max_bytes {
        0 => POLL_BYTES_DEFAULT,
        bytes @ 1..=POLL_BYTES_API_MAX => bytes,
        bytes => return Err(invalid("max_bytes", format!("{bytes}, more than {POLL_BYTES_API_MAX}"))),
    };
    let visibility_ms = request.visibility_ms;
    if visibility_ms != 0 && !(VISIBILITY_MS_MIN..=VISIBILITY_MS_MAX).contains(&visibility_ms) {
        return Err(invalid(
            "visibility_ms",
            format!("{visibility_ms}, not within {VISIBILITY_MS_MIN}..={VISIBILITY_MS_MAX} (0: the default)"),
        ));
    }
    Ok(Poll {
        caller,
        max_deliveries,
        max_bytes,
        visibility_ms,
        message,
    })
}

fn nack_reason(field: &str, reason: i32) -> Result<NackReason, Status> {
    match pb::NackReason::try_from(reason) {
        Ok(pb::NackReason::Rejected) => Ok(NackReason::Rejected),
        Ok(pb::NackReason::Throttled) => Ok(NackReason::Throttled),
        Ok(pb::NackReason::ReceptionFailed) => Ok(NackReason::ReceptionFailed),
        Ok(pb::NackReason::Unspecified) => Err(invalid(field, "NACK_REASON_UNSPECIFIED: say why")),
        Err(_) => Err(invalid(field, format!("unknown value {reason}"))),
    }
}

fn nack_reason_pb(reason: NackReason) -> pb::NackReason {
    match reason {
        NackReason::Rejected => pb::NackReason::Rejected,
        NackReason::Throttled => pb::NackReason::Throttled,
        NackReason::ReceptionFailed => pb::NackReason::ReceptionFailed,
    }
}

fn settlement(settlement: Option<pb::settle_request::Settlement>) -> Result<Settlement, Status> {
    match required("settlement", settlement)? {
        pb::settle_request::Settlement::Ack(_) => Ok(Settlement::Ack),
        pb::settle_request::Settlement::Nack(reason) => Ok(Settlement::Nack(nack_reason("nack", reason)?)),
    }
}

fn delivery_state_pb(state: DeliveryState) -> pb::DeliveryState {
    match state {
        DeliveryState::Pending => pb::DeliveryState::Pending,
        DeliveryState::Delivered => pb::DeliveryState::Delivered,
        DeliveryState::Waiting => pb::DeliveryState::Waiting,
        DeliveryState::Acked => pb::DeliveryState::Acked,
        DeliveryState::Parked => pb::DeliveryState::Parked,
        DeliveryState::Expired => pb::DeliveryState::Expired,
        DeliveryState::Pruned => pb::DeliveryState::Pruned,
    }
}

fn delivery_pb(delivery: &DeliveryInfo) -> pb::DeliveryStatus {
    pb::DeliveryStatus {
        destination: Some(component_ref_to_pb(&delivery.destination)),
        state: delivery_state_pb(delivery.state).into(),
        attempts: u32::from(delivery.attempts),
        holder: delivery.holder.as_ref().map(component_ref_to_pb),
        due_ms: delivery.due_ms,
        nacked: delivery
            .nacked
            .map_or(pb::NackReason::Unspecified, nack_reason_pb)
            .into(),
    }
}

fn back_message_pb(message: &BackMessageInfo) -> pb::BackMessageStatus {
    pb::BackMessageStatus {
        position: message.position,
        message_id: message.message_id.clone(),
        source: Some(component_ref_to_pb(&message.source)),
        precedence: u32::from(message.precedence),
        expiry_ms: message.expiry_ms,
        persistent: message.persistent,
        bulk: message.bulk,
        published_at_ms: message.published_at_ms,
        destinations: message.destinations,
        open: message.open,
        finished: message.finished,
    }
}

/// One handout, its message read back from the log. The handout may be
/// another tenant's than the caller's (a hosted MLM polling in the
/// landlord's namespace collects every customer's): the state machine
/// decided the caller may collect it, so it is read in its own tenant.
fn handout_pb(context: &Context, applier: &Applier, handout: &Handout) -> Result<pb::Handout, Status> {
    let position = handout.message;
    let view = applier
        .state
        .view(&handout.tenant)
        .ok_or_else(|| Status::internal(format!("handout of unknown tenant {:?}", handout.tenant)))?;
    let event = context.event(&view, position)?;
    let ArchivedCommandBody::Publish(published) = &event.command().body else {
        return Err(Status::internal(format!(
            "the handout at position {position} is not a publish"
        )));
    };
    let header = &published.header;
    let payload = match &published.payload {
        ArchivedPayload::Inline { mime_type, body } => pb::handout::Payload::Inline(pb::InlinePayload {
            mime_type: mime_type.to_string(),
            body: bytes::Bytes::copy_from_slice(body.as_slice()),
        }),
        ArchivedPayload::Bulk { url, size } => pb::handout::Payload::Bulk(pb::BulkPayload {
            url: url.to_string(),
            size: size.to_native(),
        }),
    };
    let routing = published.routing.iter().map(|hop| pb::RouteHop {
        component: Some(archived_component_pb(&hop.component)),
        at_ms: hop.at_ms.to_native(),
    });
    Ok(pb::Handout {
        position,
        tenant: handout.tenant.clone(),
        header: Some(pb::BackHeader {
            message_id: header.message_id.to_string(),
            source: Some(archived_component_pb(&header.source)),
            class: header.class.to_string(),
            subclass: header.subclass.to_string(),
            created_at_ms: header.created_at_ms.to_native(),
        }),
        qos: Some(pb::Qos {
            precedence: u32::from(published.qos.precedence),
            expiry_ms: published.qos.expiry_ms.as_ref().map(|expiry| expiry.to_native()),
            persistence: published.qos.persistence,
        }),
        routing: routing.collect(),
        payload: Some(payload),
        destinations: handout.destinations.iter().map(component_ref_to_pb).collect(),
    })
}

// ------------------------------------------------------------ scope

/// Whether the caller's principal is narrowed to a component or a group
/// (a landlord principal never is).
pub fn is_scoped(caller: &Caller) -> bool {
    !caller.principal.is_landlord() && caller.principal.scope != Scope::Whole
}

/// Which of the tenant's components a caller's reads may see: all of them
/// for a landlord principal or a whole-customer one; for a principal
/// scoped to a component or a security group, those components and every
/// component reachable through them.
pub enum Visible {
    /// Every component of the tenant, and hosted ones.
    All,
    /// (hosted, id) of each visible component.
    Only(BTreeSet<(bool, String)>),
}

impl Visible {
    /// What `caller` may see in `view`'s tenant.
    pub fn of(caller: &Caller, view: &TenantView<'_>) -> Visible {
        if !is_scoped(caller) {
            return Visible::All;
        }
        let roots: Vec<String> = match &caller.principal.scope {
            Scope::Whole => return Visible::All,
            Scope::Component(id) => vec![id.clone()],
            Scope::Group(group) => view.group(group).map_or_else(Vec::new, |group| {
                let members = group.members.into_iter();
                members
                    .filter(|(tenant, _)| tenant == view.tenant())
                    .map(|(_, id)| id)
                    .collect()
            }),
        };
        let mut visible = BTreeSet::new();
        for root in roots {
            let Some(below) = view.reachable_through(&root) else {
                continue;
            };
            visible.insert((false, root));
            let below = below.into_iter();
            visible.extend(below.map(|info| (info.tenant != view.tenant(), info.id)));
        }
        Visible::Only(visible)
    }

    /// Whether the component is visible.
    pub fn sees(&self, component: &ComponentRef) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(visible) => visible.contains(&(component.hosted, component.id.clone())),
        }
    }

    /// NOT_FOUND, like a missing component, outside the scope.
    pub fn check(&self, component: &ComponentRef) -> Result<(), Status> {
        match self.sees(component) {
            true => Ok(()),
            false => Err(Status::not_found(format!("component {:?} not found", component.id))),
        }
    }
}

/// A tenant-wide write (capacity, throttle rules): refused to a principal
/// scoped to a component or a group.
pub fn whole_tenant(caller: &Caller, what: &str) -> Result<(), Status> {
    match is_scoped(caller) {
        false => Ok(()),
        true => Err(Status::permission_denied(format!(
            "{} is scoped to a component or group and may not {what}",
            caller.principal
        ))),
    }
}

fn message_not_found(message: &pb::message_status_request::Message) -> Status {
    match message {
        pb::message_status_request::Message::Position(position) => {
            Status::not_found(format!("no back-channel message at position {position}"))
        }
        pb::message_status_request::Message::MessageId(id) => {
            Status::not_found(format!("back-channel message {id:?} not found"))
        }
    }
}

// ------------------------------------------------------------ notifications

/// Decides, at each check of a subscription, whether to notify: when
/// deliveries become ready, and every [`READY_REMINDER`] while they stay
/// ready.
#[derive(Debug, Default)]
struct ReadyWatch {
    /// When the last notification went out, while deliveries stayed ready
    /// since; None while nothing is ready.
    notified_at: Option<Instant>,
}

impl ReadyWatch {
    fn check(&mut self, ready: bool, applied_index: u64, now: Instant) -> Option<pb::DeliveriesReady> {
        if !ready {
            self.notified_at = None;
            return None;
        }
        let reminder = match self.notified_at {
            None => false,
            Some(at) if now.duration_since(at) >= READY_REMINDER => true,
            Some(_) => return None,
        };
        self.notified_at = Some(now);
        Some(pb::DeliveriesReady {
            applied_index,
            reminder,
        })
    }
}

// ------------------------------------------------------------ the service

#[tonic::async_trait]
impl Spools for SpoolsService {
    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = self.context.caller(&request, Op::Publish)?;
        let mut request = request.into_inner();
        let session = request.session.take();
        let body = publish(request)?;
        self.context.acts_as(&caller, &body.header.source)?;
        let (written, outcome) = self
            .context
            .applied(&caller, session, CommandBody::Publish(body))
            .await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Published {
                position,
                destinations,
                pruned,
            }) => Ok(Response::new(pb::PublishResponse {
                position,
                destinations,
                pruned,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a publish applied as {other:?}"))),
        }
    }

    async fn poll(&self, mut request: Request<pb::PollRequest>) -> Result<Response<pb::PollResponse>, Status> {
        let caller = self.context.caller(&request, Op::Poll)?;
        let component = required_ref(request.get_ref().caller.clone(), "caller")?;
        let message = request.get_mut().message.take();
        let message = message.map(|message| message_from_pb(message, "message")).transpose()?;
        let body = poll(request.get_ref(), component.clone(), message)?;
        self.context.acts_as(&caller, &component)?;
        match &body.message {
            // The carried message is sent as its source, as through Messages.
            Some(message) => {
                let source = ComponentRef {
                    hosted: false,
                    id: message.header.source.clone(),
                };
                reaches(&self.context, &caller, &source)?;
            }
            // Nothing to store: a poll that would find nothing is a read.
            None => {
                let ready = self
                    .context
                    .read(&request, &caller, |view, _| {
                        view.has_ready(&component)
                            .ok_or_else(|| Status::not_found(format!("component {:?} not found", component.id)))
                    })
                    .await?
                    .into_inner();
                if !ready {
                    return Ok(Response::new(pb::PollResponse::default()));
                }
            }
        }
        let (written, outcome) = self.context.applied(&caller, None, CommandBody::Poll(body)).await?;
        let (handed, stored) = match outcome.verdict {
            Verdict::Applied(Effect::Polled { handed, message, .. }) => (handed, message),
            other => return Err(Status::internal(format!("a poll applied as {other:?}"))),
        };
        let carried = stored.map(|stored| pb::CarriedMessage {
            position: stored.position,
            duplicate: stored.duplicate,
        });
        let mut answer = pb::PollResponse {
            handouts: Vec::new(),
            written: Some(written),
            message: carried,
        };
        if handed.is_empty() {
            return Ok(Response::new(answer));
        }
        let context = &self.context;
        answer.handouts = self
            .context
            .read(&request, &caller, |_, applier| {
                handed
                    .iter()
                    .map(|handout| handout_pb(context, applier, handout))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .into_inner();
        Ok(Response::new(answer))
    }

    async fn settle(&self, request: Request<pb::SettleRequest>) -> Result<Response<pb::SettleResponse>, Status> {
        let caller = self.context.caller(&request, Op::Settle)?;
        let request = request.into_inner();
        let component = required_ref(request.caller, "caller")?;
        let body = Settle {
            caller: component.clone(),
            message: request.position,
            destinations: request.destinations.into_iter().map(component_ref_from_pb).collect(),
            settlement: settlement(request.settlement)?,
        };
        self.context.acts_as(&caller, &component)?;
        let (written, outcome) = self
            .context
            .applied(&caller, request.session, CommandBody::Settle(body))
            .await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Settled {
                position,
                acked,
                respooled,
                parked,
                unchanged,
                unpublished,
            }) => Ok(Response::new(pb::SettleResponse {
                position,
                acked,
                respooled,
                parked,
                unchanged,
                unpublished,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a settle applied as {other:?}"))),
        }
    }

    async fn redrive(&self, request: Request<pb::RedriveRequest>) -> Result<Response<pb::RedriveResponse>, Status> {
        let caller = self.context.caller(&request, Op::Redrive)?;
        let request = request.into_inner();
        let destination = request.destination.map(component_ref_from_pb);
        match (&destination, is_scoped(&caller)) {
            (Some(destination), true) => self.context.acts_as(&caller, destination)?,
            (None, true) => {
                return Err(invalid(
                    "destination",
                    "required: the caller is scoped to a component or group",
                ))
            }
            (_, false) => {}
        }
        let body = Redrive {
            message: request.position,
            destination,
        };
        let (written, outcome) = self
            .context
            .applied(&caller, request.session, CommandBody::Redrive(body))
            .await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Redriven { position, count, more }) => Ok(Response::new(pb::RedriveResponse {
                position,
                count,
                more,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a redrive applied as {other:?}"))),
        }
    }

    async fn configure(
        &self,
        request: Request<pb::ConfigureSpoolRequest>,
    ) -> Result<Response<pb::ConfigureSpoolResponse>, Status> {
        let caller = self.context.caller(&request, Op::ConfigureSpool)?;
        whole_tenant(&caller, "configure the tenant's spools")?;
        let request = request.into_inner();
        let body = CommandBody::ConfigureSpool(ConfigureSpool {
            capacity: request.capacity,
        });
        let (written, outcome) = self.context.applied(&caller, request.session, body).await?;
        match outcome.verdict {
            Verdict::Applied(Effect::Recorded { position }) => Ok(Response::new(pb::ConfigureSpoolResponse {
                position,
                written: Some(written),
            })),
            other => Err(Status::internal(format!("a spool configuration applied as {other:?}"))),
        }
    }

    async fn message_status(
        &self,
        request: Request<pb::MessageStatusRequest>,
    ) -> Result<Response<pb::MessageStatusResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadSpools)?;
        let message = required("message", request.get_ref().message.clone())?;
        self.context
            .read(&request, &caller, |view, _| {
                let found = match &message {
                    pb::message_status_request::Message::Position(position) => view.back_message(*position),
                    pb::message_status_request::Message::MessageId(id) => view.back_message_by_id(id),
                };
                let found = found.ok_or_else(|| message_not_found(&message))?;
                let deliveries = view.deliveries(found.position).unwrap_or_default();
                let visible = Visible::of(&caller, &view);
                let deliveries: Vec<_> = deliveries
                    .iter()
                    .filter(|delivery| visible.sees(&delivery.destination))
                    .map(delivery_pb)
                    .collect();
                // A scoped caller sees only messages to its components.
                if deliveries.is_empty() && matches!(visible, Visible::Only(_)) {
                    return Err(message_not_found(&message));
                }
                Ok(pb::MessageStatusResponse {
                    message: Some(back_message_pb(&found)),
                    deliveries,
                })
            })
            .await
    }

    async fn depth(&self, request: Request<pb::DepthRequest>) -> Result<Response<pb::DepthResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadSpools)?;
        let destination = request.get_ref().destination.clone().map(component_ref_from_pb);
        self.context
            .read(&request, &caller, |view, _| {
                let visible = Visible::of(&caller, &view);
                let depth = match (&destination, &visible) {
                    (Some(destination), _) => {
                        visible.check(destination)?;
                        let depth = view.spool_depth(destination);
                        depth.ok_or_else(|| Status::not_found(format!("component {:?} not found", destination.id)))?
                            as u64
                    }
                    (None, Visible::All) => view.spool_depth_total(),
                    (None, Visible::Only(components)) => components
                        .iter()
                        .map(|(hosted, id)| {
                            let component = ComponentRef {
                                hosted: *hosted,
                                id: id.clone(),
                            };
                            view.spool_depth(&component).unwrap_or(0) as u64
                        })
                        .sum(),
                };
                Ok(pb::DepthResponse {
                    depth,
                    capacity: view.spool_capacity(),
                })
            })
            .await
    }

    async fn parked(&self, request: Request<pb::ParkedRequest>) -> Result<Response<pb::ParkedResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadSpools)?;
        let limit = read_limit(request.get_ref().limit)?;
        self.context
            .read(&request, &caller, |view, _| {
                let visible = Visible::of(&caller, &view);
                let scan = match visible {
                    Visible::All => limit,
                    Visible::Only(_) => PARKED_SCAN_MAX,
                };
                let parked = view
                    .parked(scan)
                    .into_iter()
                    .filter(|(_, destination)| visible.sees(destination))
                    .take(limit)
                    .map(|(position, destination)| pb::ParkedDelivery {
                        position,
                        destination: Some(component_ref_to_pb(&destination)),
                    });
                Ok(pb::ParkedResponse {
                    parked: parked.collect(),
                })
            })
            .await
    }

    async fn pruned_responses(
        &self,
        request: Request<pb::PrunedResponsesRequest>,
    ) -> Result<Response<pb::PrunedResponsesResponse>, Status> {
        let caller = self.context.caller(&request, Op::ReadSpools)?;
        let body = request.get_ref();
        let publisher = required_ref(body.publisher.clone(), "publisher")?;
        let (from, limit) = (body.from_position, read_limit(body.limit)?);
        self.context
            .read(&request, &caller, |view, _| {
                let visible = Visible::of(&caller, &view);
                visible.check(&publisher)?;
                let responses = view
                    .pruned_responses(&publisher)
                    .ok_or_else(|| Status::not_found(format!("component {:?} not found", publisher.id)))?;
                let responses = responses
                    .into_iter()
                    .filter(|response| response.at >= from && visible.sees(&response.destination))
                    .take(limit)
                    .map(|response| pb::PrunedResponse {
                        at: response.at,
                        position: response.message,
                        message_id: response.message_id,
                        destination: Some(component_ref_to_pb(&response.destination)),
                    });
                Ok(pb::PrunedResponsesResponse {
                    responses: responses.collect(),
                })
            })
            .await
    }

    type SubscribeDeliveriesStream = Subscription<pb::DeliveriesReady>;

    async fn subscribe_deliveries(
        &self,
        request: Request<pb::SubscribeDeliveriesRequest>,
    ) -> Result<Response<Self::SubscribeDeliveriesStream>, Status> {
        let caller = self.context.caller(&request, Op::Poll)?;
        let component = required_ref(request.into_inner().caller, "caller")?;
        self.context.acts_as(&caller, &component)?;
        let mut watch = ReadyWatch::default();
        let notifications = self.context.follow(&caller, move |view, applier| {
            let ready = view
                .has_ready(&component)
                .ok_or_else(|| Status::not_found(format!("component {:?} not found", component.id)))?;
            let applied_index = applier.applied.map_or(0, |applied| applied.index);
            Ok(watch.check(ready, applied_index, Instant::now()).into_iter().collect())
        })?;
        Ok(Response::new(notifications))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_notifies_on_ready_then_reminds_and_rearms_when_drained() {
        let mut watch = ReadyWatch::default();
        let start = Instant::now();
        assert!(watch.check(false, 1, start).is_none());
        let first = watch.check(true, 2, start).unwrap();
        assert_eq!((first.applied_index, first.reminder), (2, false));
        assert!(watch.check(true, 3, start + READY_REMINDER / 2).is_none());
        let reminder = watch.check(true, 4, start + READY_REMINDER).unwrap();
        assert!(reminder.reminder);
        assert!(watch.check(false, 5, start + READY_REMINDER).is_none());
        let again = watch.check(true, 6, start + READY_REMINDER).unwrap();
        assert!(!again.reminder);
    }

    #[test]
    fn poll_limits_default_and_name_the_field() {
        let caller = ComponentRef {
            hosted: false,
            id: "p1".into(),
        };
        let defaulted = poll(&pb::PollRequest::default(), caller.clone(), None).unwrap();
        assert_eq!(defaulted.max_deliveries, POLL_DELIVERIES_DEFAULT);
        assert_eq!(defaulted.max_bytes, POLL_BYTES_DEFAULT);
        for (request, field) in [
            (
                pb::PollRequest {
                    max_deliveries: POLL_DELIVERIES_MAX + 1,
                    ..Default::default()
                },
                "max_deliveries",
            ),
            (
                pb::PollRequest {
                    max_bytes: POLL_BYTES_API_MAX + 1,
                    ..Default::default()
                },
                "max_bytes",
            ),
            (
                pb::PollRequest {
                    visibility_ms: VISIBILITY_MS_MIN - 1,
                    ..Default::default()
                },
                "visibility_ms",
            ),
        ] {
            let error = poll(&request, caller.clone(), None).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert!(error.message().contains(field), "{}", error.message());
        }
    }
}
