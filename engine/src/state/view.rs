//! [`TenantView`]: every query, scoped to one tenant's namespace.
//!
//! The service answers clients through this view only, so the namespace
//! rule holds by construction: a name is looked up in the caller's tenant
//! (or, for a hosted reference, among the landlord's components), and an
//! object of another tenant answers `None`, exactly like a missing one.
//! The landlord sees the components below its hosted MLMs, whichever
//! customer they belong to.

use super::command::{CommunicationMode, ComponentKind, ComponentRef, GroupKind, NackReason};
use super::read::{self, EventRecord, ReadError};
use super::spools::DeliveryState;
use super::streams::StreamEvent;
use super::table::Slot;
use super::topology::Liveness;
use super::{Direction, State};
use crate::log::Log;

/// A component, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentInfo {
    pub tenant: String,
    pub id: String,
    pub kind: ComponentKind,
    pub version: String,
    pub mode: CommunicationMode,
    /// (tenant, id) of each parent.
    pub parents: Vec<(String, String)>,
    pub registered: bool,
    pub enabled: bool,
    pub forwarding: bool,
    pub registered_at: u64,
    pub last_seen_ms: u64,
    pub liveness: Liveness,
}

/// A group, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    pub kind: GroupKind,
    pub defined_at: u64,
    /// (tenant, id) of each member, in slot order.
    pub members: Vec<(String, String)>,
    /// (position, member id, added) of every change, oldest first.
    pub history: Vec<(u64, String, bool)>,
}

/// An open alarm: support instance id, alarm id, and the position of the
/// message that raised it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlarmInfo {
    pub support_instance: String,
    pub alarm_id: String,
    pub position: u64,
}

/// A back-channel message, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackMessageInfo {
    pub position: u64,
    pub message_id: String,
    pub source: ComponentRef,
    pub precedence: u8,
    pub expiry_ms: Option<u64>,
    pub persistent: bool,
    pub bulk: bool,
    pub published_at_ms: u64,
    pub destinations: u32,
    /// Deliveries not yet acked, expired or pruned.
    pub open: u32,
    /// Every delivery is done (a bulk message's URL is unpublished).
    pub finished: bool,
}

/// One destination's delivery of a back-channel message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryInfo {
    pub destination: ComponentRef,
    pub state: DeliveryState,
    pub attempts: u16,
    /// Who has it (delivered) or acked it.
    pub holder: Option<ComponentRef>,
    /// Delivered: handed out again at; waiting: retried at.
    pub due_ms: Option<u64>,
    pub nacked: Option<NackReason>,
}

/// A "rejected" response to a publisher: its delivery was pruned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrunedInfo {
    /// The position of the publish that pushed it out.
    pub at: u64,
    pub message: u64,
    pub message_id: String,
    pub destination: ComponentRef,
}

/// An upstream bulk transfer, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferInfo {
    pub request: String,
    pub requester: ComponentRef,
    pub size: u64,
    pub class: String,
    pub subclass: String,
    pub phase: super::outcome::TransferPhase,
    pub requests: u32,
    pub url: Option<String>,
    pub retry_at_ms: Option<u64>,
    /// (position, hop, reason) of the latest denials, oldest first.
    pub denials: Vec<(u64, ComponentRef, String)>,
}

/// One tenant's window on the state.
#[derive(Clone, Copy)]
pub struct TenantView<'a> {
    state: &'a State,
    tenant: Slot,
}

impl State {
    /// The view of a registered tenant (the landlord always is).
    pub fn view(&self, tenant: &str) -> Option<TenantView<'_>> {
        Some(TenantView {
            state: self,
            tenant: self.tenant_slot(tenant)?,
        })
    }
}

impl<'a> TenantView<'a> {
    pub fn tenant(&self) -> &'a str {
        self.state.tenant_name(self.tenant)
    }

    fn info(&self, slot: Slot) -> ComponentInfo {
        let topology = self.state.topology();
        let component = topology.component(slot);
        let name = |slot: Slot| {
            let parent = topology.component(slot);
            (self.state.tenant_name(parent.tenant).to_string(), parent.id.to_string())
        };
        ComponentInfo {
            tenant: self.state.tenant_name(component.tenant).to_string(),
            id: component.id.to_string(),
            kind: component.kind,
            version: component.version.clone(),
            mode: component.mode,
            parents: component.parents.iter().map(|&parent| name(parent)).collect(),
            registered: component.registered,
            enabled: component.enabled,
            forwarding: component.forwarding,
            registered_at: component.registered_at,
            last_seen_ms: component.last_seen_ms,
            liveness: component.liveness,
        }
    }

    fn own(&self, id: &str) -> Option<Slot> {
        self.state.topology().registered(self.tenant, id)
    }

    /// A registered component of this tenant.
    pub fn component(&self, id: &str) -> Option<ComponentInfo> {
        self.own(id).map(|slot| self.info(slot))
    }

    /// Everything registered below one of this tenant's components.
    pub fn reachable_through(&self, id: &str) -> Option<Vec<ComponentInfo>> {
        let slot = self.own(id)?;
        Some(
            self.state
                .topology()
                .reachable_through(slot)
                .into_iter()
                .map(|slot| self.info(slot))
                .collect(),
        )
    }

    /// A component's own liveness and the worst of it and what is below it.
    pub fn status(&self, id: &str) -> Option<(Liveness, Liveness)> {
        self.own(id).map(|slot| self.state.topology().status(slot))
    }

    /// This tenant's late and failed components.
    pub fn not_alive(&self) -> Vec<ComponentInfo> {
        self.state
            .topology()
            .not_alive(self.tenant)
            .into_iter()
            .map(|slot| self.info(slot))
            .collect()
    }

    /// The component a proxy of this tenant maps a management id to.
    pub fn management_id(&self, proxy: &str, management_id: &str) -> Option<ComponentInfo> {
        let proxy = self.own(proxy)?;
        let slot = self.state.topology().management_id(proxy, management_id)?;
        Some(self.info(slot))
    }

    pub fn group(&self, name: &str) -> Option<GroupInfo> {
        let topology = self.state.topology();
        let group = topology.group(self.tenant, name)?;
        let name = |slot: Slot| {
            let component = topology.component(slot);
            (
                self.state.tenant_name(component.tenant).to_string(),
                component.id.to_string(),
            )
        };
        Some(GroupInfo {
            kind: group.kind,
            defined_at: group.defined_at,
            members: group.members.iter().map(|&slot| name(slot)).collect(),
            history: group
                .history
                .iter()
                .map(|change| (change.position, name(change.member).1, change.added))
                .collect(),
        })
    }

    /// The position of the latest message with this id.
    pub fn message(&self, id: &str) -> Option<u64> {
        self.state
            .messages()
            .by_id(self.tenant, id)
            .map(|stored| stored.position)
    }

    pub fn messages(&self, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
        self.state.messages().by_customer(self.tenant, from, direction, limit)
    }

    /// Messages sent by one of this tenant's components (registered now or
    /// once).
    pub fn messages_by_source(&self, source: &str, from: u64, direction: Direction, limit: usize) -> Option<Vec<u64>> {
        let slot = self.state.topology().slot(self.tenant, source)?;
        Some(self.state.messages().by_source(slot, from, direction, limit))
    }

    pub fn messages_by_class(
        &self,
        class: &str,
        subclass: &str,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Vec<u64> {
        self.state
            .messages()
            .by_class(self.tenant, class, subclass, from, direction, limit)
    }

    pub fn open_alarms(&self) -> Vec<AlarmInfo> {
        let topology = self.state.topology();
        let alarms = self.state.messages().open_alarms(self.tenant).into_iter();
        let alarms = alarms.map(|alarm| AlarmInfo {
            support_instance: topology.component(alarm.support_instance).id.to_string(),
            alarm_id: alarm.alarm_id,
            position: alarm.position,
        });
        alarms.collect()
    }

    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        self.state.streams().version(self.tenant, stream)
    }

    pub fn read_stream(&self, stream: &str, from: u64, direction: Direction, limit: usize) -> Option<Vec<StreamEvent>> {
        self.state.streams().read(self.tenant, stream, from, direction, limit)
    }

    /// The version the event at `position` has in `stream`.
    pub fn stream_version_at(&self, stream: &str, position: u64) -> Option<u64> {
        self.state.streams().version_at(self.tenant, stream, position)
    }

    pub fn read_all_streams(&self, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
        self.state.streams().read_all(self.tenant, from, direction, limit)
    }

    pub fn streams(&self) -> Vec<&'a str> {
        self.state.streams().names(self.tenant)
    }

    /// Reads an event of this tenant from the log. Another tenant's event
    /// is [`ReadError::NoSuchPosition`], like a position never given out.
    pub fn event(&self, log: &Log, position: u64) -> Result<EventRecord, ReadError> {
        let event = read::event(log, self.state, position)?;
        match event.command().tenant.as_str() == self.tenant() {
            true => Ok(event),
            false => Err(ReadError::NoSuchPosition { position }),
        }
    }

    // ------------------------------------------------------------ spools

    /// A component of this tenant, or hosted.
    fn resolve(&self, reference: &ComponentRef) -> Option<Slot> {
        self.state
            .topology()
            .resolve(self.tenant, reference.hosted, &reference.id)
    }

    fn reference(&self, slot: Slot) -> ComponentRef {
        let component = self.state.topology().component(slot);
        ComponentRef {
            hosted: component.tenant != self.tenant,
            id: component.id.to_string(),
        }
    }

    fn back_message_info(&self, message: u32) -> BackMessageInfo {
        let spooled = self.state.spools().message(message);
        BackMessageInfo {
            position: spooled.position,
            message_id: spooled.id.to_string(),
            source: self.reference(spooled.source),
            precedence: spooled.precedence,
            expiry_ms: spooled.expiry_ms,
            persistent: spooled.persistent,
            bulk: spooled.bulk,
            published_at_ms: spooled.published_at_ms,
            destinations: spooled.destinations(),
            open: spooled.open(),
            finished: spooled.finished,
        }
    }

    /// The back-channel message published at `position`.
    pub fn back_message(&self, position: u64) -> Option<BackMessageInfo> {
        let message = self.state.spools().message_at(self.tenant, position)?;
        Some(self.back_message_info(message))
    }

    /// The back-channel message with this id.
    pub fn back_message_by_id(&self, id: &str) -> Option<BackMessageInfo> {
        let message = self.state.spools().message_by_id(self.tenant, id)?;
        Some(self.back_message_info(message))
    }

    /// The state of each destination's delivery of the message at
    /// `position`, in destination order.
    pub fn deliveries(&self, position: u64) -> Option<Vec<DeliveryInfo>> {
        let spools = self.state.spools();
        let message = spools.message_at(self.tenant, position)?;
        let info = |delivery: &super::spools::Delivery| DeliveryInfo {
            destination: self.reference(delivery.destination),
            state: delivery.state,
            attempts: delivery.attempts,
            holder: delivery.holder.map(|holder| self.reference(holder)),
            due_ms: matches!(delivery.state, DeliveryState::Delivered | DeliveryState::Waiting)
                .then_some(delivery.due_ms),
            nacked: delivery.nacked,
        };
        Some(spools.deliveries(message).iter().map(info).collect())
    }

    /// This tenant's live deliveries spooled for one destination.
    pub fn spool_depth(&self, destination: &ComponentRef) -> Option<usize> {
        let slot = self.resolve(destination)?;
        Some(self.state.spools().depth(slot, self.tenant))
    }

    /// This tenant's live deliveries, over all destinations.
    pub fn spool_depth_total(&self) -> u64 {
        self.state.spools().tenant_depth(self.tenant)
    }

    /// The live deliveries each destination may hold for this tenant
    /// before the lowest are pruned (the configured capacity, or the
    /// default).
    pub fn spool_capacity(&self) -> u32 {
        self.state.spools().capacity(self.tenant)
    }

    /// This tenant's parked deliveries: (message position, destination),
    /// oldest message first, at most `limit`.
    pub fn parked(&self, limit: usize) -> Vec<(u64, ComponentRef)> {
        let spools = self.state.spools();
        let parked = spools.parked(self.tenant).take(limit).map(|at| {
            let delivery = spools.delivery(at);
            let message = spools.message(delivery.message);
            (message.position, self.reference(delivery.destination))
        });
        parked.collect()
    }

    /// Whether a poll by `caller` would hand anything out: a read, so that
    /// a poll that would find nothing is never proposed. In the landlord's
    /// view, a hosted MLM's poll serves every customer.
    pub fn has_ready(&self, caller: &ComponentRef) -> Option<bool> {
        let slot = self.resolve(caller)?;
        let only = (self.tenant != super::LANDLORD_SLOT).then_some(self.tenant);
        Some(self.state.spools().has_ready(slot, only))
    }

    /// The "rejected" responses a publisher got for this tenant's pruned
    /// deliveries.
    pub fn pruned_responses(&self, publisher: &ComponentRef) -> Option<Vec<PrunedInfo>> {
        let slot = self.resolve(publisher)?;
        let spools = self.state.spools();
        let responses = spools.responses(slot).iter().filter_map(|response| {
            let message = spools.message(response.message);
            (message.tenant == self.tenant).then(|| PrunedInfo {
                at: response.at,
                message: message.position,
                message_id: message.id.to_string(),
                destination: self.reference(response.destination),
            })
        });
        Some(responses.collect())
    }

    /// This tenant's bulk messages (downstream transfers) whose deliveries
    /// are not all done.
    pub fn open_bulk_messages(&self) -> Vec<BackMessageInfo> {
        let spools = self.state.spools();
        spools
            .open_bulk(self.tenant)
            .map(|message| self.back_message_info(message))
            .collect()
    }

    fn transfer_info(&self, request: &str, transfer: &super::transfers::Transfer) -> TransferInfo {
        TransferInfo {
            request: request.to_string(),
            requester: self.reference(transfer.requester),
            size: transfer.size,
            class: transfer.class.to_string(),
            subclass: transfer.subclass.to_string(),
            phase: transfer.phase,
            requests: transfer.requests,
            url: transfer.url.clone(),
            retry_at_ms: transfer.retry_at_ms,
            denials: transfer
                .denials
                .iter()
                .map(|denial| (denial.position, self.reference(denial.hop), denial.reason.clone()))
                .collect(),
        }
    }

    /// The upstream bulk transfer requested by message `request`.
    pub fn transfer(&self, request: &str) -> Option<TransferInfo> {
        let transfer = self.state.transfers().transfer(self.tenant, request)?;
        Some(self.transfer_info(request, transfer))
    }

    /// This tenant's upstream bulk transfers not yet transferred, oldest
    /// first. (Downstream transfers are [`Self::open_bulk_messages`], with
    /// their per-destination state from [`Self::deliveries`].)
    pub fn outstanding_transfers(&self) -> Vec<TransferInfo> {
        let outstanding = self.state.transfers().outstanding(self.tenant).into_iter();
        outstanding
            .map(|(request, transfer)| self.transfer_info(request, transfer))
            .collect()
    }

    /// This tenant's customer MLM farm `name` (an MLM group), once its
    /// throttle rules were set.
    pub fn farm(&self, name: &str) -> Option<&'a super::throttle::Farm> {
        self.state.throttle().farm(self.tenant, name)
    }

    /// May this tenant's component (or a hosted one) send `bytes` at log
    /// time `now_ms`? Answered from the replicated throttle rules and the
    /// farm's shared counters, with the farm and the rule that decided.
    pub fn may_send(
        &self,
        component: &ComponentRef,
        bytes: u64,
        now_ms: u64,
    ) -> Option<super::throttle::ThrottleAnswer> {
        let slot = self.resolve(component)?;
        let throttle = self.state.throttle();
        Some(throttle.may_send(self.state.topology(), self.tenant, slot, bytes, now_ms))
    }
}
