//! [`TenantView`]: every query, scoped to one tenant's namespace.
//!
//! The service answers clients through this view only, so the namespace
//! rule holds by construction: a name is looked up in the caller's tenant
//! (or, for a hosted reference, among the landlord's components), and an
//! object of another tenant answers `None`, exactly like a missing one.
//! The landlord sees the components below its hosted MLMs, whichever
//! customer they belong to.

use super::command::{CommunicationMode, ComponentKind, GroupKind};
use super::read::{self, EventRecord, ReadError};
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
}
