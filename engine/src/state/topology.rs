//! The topology of the remote services system: customers' and the
//! landlord's components, the tree they form, groups, management-id
//! mappings, and liveness from heartbeats.
//!
//! Components have a global slot (stable for life, reused when a
//! deregistered component registers again) and are found by id in their
//! tenant's namespace. Customer components hang below their own tenant's
//! components or below hosted (landlord) ones, so everything below a
//! customer's component is that customer's.
//!
//! Reachability ("what is reachable through X") walks the children lists
//! from X: time proportional to the answer. Liveness is derived in log time
//! from named thresholds, by lazy timers.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rkyv::{Archive, Deserialize, Serialize};

use super::command::*;
use super::outcome::{Effect, Fired, Object, Rejection, Verdict};
use super::table::{Name, Slot, Table};
use super::timers::{Timer, Timers};
use super::{per_slot, Context, Tenant, LANDLORD_SLOT};

/// A component not heard from for this long (log time) is late.
pub const LIVENESS_LATE_AFTER_MS: u64 = 5 * 60 * 1000;
/// A component not heard from for this long is failed.
pub const LIVENESS_FAILED_AFTER_MS: u64 = 15 * 60 * 1000;
const _: () = assert!(LIVENESS_LATE_AFTER_MS < LIVENESS_FAILED_AFTER_MS);

/// Alive, late or failed; ordered from best to worst.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[rkyv(derive(Debug))]
pub enum Liveness {
    Alive,
    Late,
    Failed,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct Component {
    pub tenant: Slot,
    pub id: Name,
    pub kind: ComponentKind,
    pub version: String,
    pub mode: CommunicationMode,
    pub parents: Vec<Slot>,
    /// Registered components directly below, in order of registration.
    pub children: Vec<Slot>,
    pub registered: bool,
    /// A support instance is monitored (others: always true).
    pub enabled: bool,
    /// A proxy forwards data (others: always true).
    pub forwarding: bool,
    /// Position of the latest registration.
    pub registered_at: u64,
    pub last_seen_ms: u64,
    pub liveness: Liveness,
    timer_pending: bool,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct Group {
    pub kind: GroupKind,
    pub defined_at: u64,
    pub members: BTreeSet<Slot>,
    pub history: Vec<GroupChange>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupChange {
    pub position: u64,
    pub member: Slot,
    pub added: bool,
}

/// A liveness change found by a timer.
pub struct Transition {
    component: Slot,
    to: Liveness,
}

impl Transition {
    pub(super) fn into_fired(self, tenants: &Table<Name, Tenant>, topology: &Topology) -> Fired {
        let component = &topology.components[self.component as usize];
        let tenant = tenants.key(component.tenant).to_string();
        let id = component.id.to_string();
        match self.to {
            Liveness::Late => Fired::ComponentLate { tenant, component: id },
            Liveness::Failed | Liveness::Alive => Fired::ComponentFailed { tenant, component: id },
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Topology {
    /// By global slot.
    components: Vec<Component>,
    /// Per tenant slot: component id → global slot.
    ids: Vec<Table<Name, Slot>>,
    /// Proxy slot → management id → component slot.
    management_ids: BTreeMap<Slot, BTreeMap<Name, Slot>>,
    /// Per tenant slot: group name → group.
    groups: Vec<Table<Name, Group>>,
    /// (tenant, component) of every registered component that is late or
    /// failed.
    not_alive: BTreeSet<(Slot, Slot)>,
}

type Outcome<T> = Result<T, Rejection>;

impl Topology {
    // ------------------------------------------------------------ lookups

    /// The slot of component `id` in `tenant`'s namespace, registered or not.
    pub fn slot(&self, tenant: Slot, id: &str) -> Option<Slot> {
        let ids = self.ids.get(tenant as usize)?;
        Some(*ids.get(ids.slot(id)?))
    }

    /// The slot of a registered component, by id in `tenant`'s namespace.
    pub fn registered(&self, tenant: Slot, id: &str) -> Option<Slot> {
        self.slot(tenant, id)
            .filter(|&slot| self.components[slot as usize].registered)
    }

    /// Resolves a reference made by `tenant`: its own namespace, or the
    /// landlord's hosted components.
    pub fn resolve(&self, tenant: Slot, hosted: bool, id: &str) -> Option<Slot> {
        self.registered(if hosted { LANDLORD_SLOT } else { tenant }, id)
    }

    pub fn component(&self, slot: Slot) -> &Component {
        &self.components[slot as usize]
    }

    pub fn component_count(&self) -> usize {
        self.components.len()
    }

    pub fn registered_count(&self) -> usize {
        self.components.iter().filter(|component| component.registered).count()
    }

    pub fn group_count(&self) -> usize {
        self.groups.iter().map(Table::len).sum()
    }

    // ------------------------------------------------------------ apply

    pub(super) fn register(&mut self, context: &mut Context<'_>, body: &ArchivedRegisterComponent) -> Verdict {
        verdict(self.try_register(context, body))
    }

    fn try_register(&mut self, context: &mut Context<'_>, body: &ArchivedRegisterComponent) -> Outcome<u64> {
        let tenant = context.tenant;
        let kind = ComponentKind::from_archived(&body.kind);
        let existing = self.slot(tenant, body.id.as_str());
        if let Some(slot) = existing {
            let previous = &self.components[slot as usize];
            if previous.registered {
                return Err(Rejection::AlreadyExists {
                    object: Object::Component,
                });
            }
            // A component that registers again (an integration module that
            // moved, say) keeps its slot, its history and its group
            // memberships, so it must keep its kind.
            if previous.kind != kind {
                return Err(Rejection::WrongKind {
                    object: Object::Component,
                    kind: previous.kind,
                });
            }
        }
        let mut parents = Vec::with_capacity(body.parents.len());
        for parent in body.parents.iter() {
            let slot = self.resolve(tenant, parent.hosted, parent.id.as_str());
            let slot = slot.ok_or(Rejection::NotFound { object: Object::Parent })?;
            let parent_kind = self.components[slot as usize].kind;
            if !kind.allowed_parents().contains(&parent_kind) {
                return Err(Rejection::ParentNotAllowed { parent_kind });
            }
            parents.push(slot);
        }
        let position = context.assign_position();
        let component = Component {
            tenant,
            id: Name::from(body.id.as_str()),
            kind,
            version: body.version.to_string(),
            mode: CommunicationMode::from_archived(&body.mode),
            parents: parents.clone(),
            children: Vec::new(),
            registered: true,
            enabled: true,
            forwarding: true,
            registered_at: position,
            last_seen_ms: context.now_ms,
            liveness: Liveness::Alive,
            timer_pending: false,
        };
        let slot = match existing {
            Some(slot) => {
                let timer_pending = self.components[slot as usize].timer_pending;
                self.components[slot as usize] = Component {
                    timer_pending,
                    ..component
                };
                slot
            }
            None => {
                let slot = Slot::try_from(self.components.len()).expect("fewer than 2^32 components");
                self.components.push(component);
                per_slot(&mut self.ids, tenant).insert(Name::from(body.id.as_str()), slot);
                slot
            }
        };
        for parent in parents {
            self.components[parent as usize].children.push(slot);
        }
        self.schedule_liveness(slot, context.timers);
        Ok(position)
    }

    pub(super) fn set_enabled(&mut self, context: &mut Context<'_>, body: &ArchivedSetEnabled) -> Verdict {
        let tenant = context.tenant;
        let result = (|| {
            let slot = self.registered(tenant, body.component.as_str());
            let slot = slot.ok_or(Rejection::NotFound {
                object: Object::Component,
            })?;
            let component = &mut self.components[slot as usize];
            let (wanted, flag) = match Switch::from_archived(&body.switch) {
                Switch::SupportInstance => (ComponentKind::SupportInstance, &mut component.enabled),
                Switch::ProxyForwarding => (ComponentKind::Proxy, &mut component.forwarding),
            };
            if component.kind != wanted {
                return Err(Rejection::WrongKind {
                    object: Object::Component,
                    kind: component.kind,
                });
            }
            *flag = body.enabled;
            Ok(context.assign_position())
        })();
        verdict(result)
    }

    pub(super) fn deregister(&mut self, context: &mut Context<'_>, body: &ArchivedDeregister) -> Verdict {
        let tenant = context.tenant;
        let result = (|| {
            // Only a tenant's own components: a customer cannot reach into
            // the landlord's namespace to change it.
            if body.component.hosted && tenant != LANDLORD_SLOT {
                return Err(Rejection::NotFound {
                    object: Object::Component,
                });
            }
            let slot = self.registered(tenant, body.component.id.as_str());
            let slot = slot.ok_or(Rejection::NotFound {
                object: Object::Component,
            })?;
            if !self.components[slot as usize].children.is_empty() {
                return Err(Rejection::HasChildren);
            }
            let component = &mut self.components[slot as usize];
            component.registered = false;
            let parents = std::mem::take(&mut component.parents);
            for parent in parents {
                self.components[parent as usize].children.retain(|&child| child != slot);
            }
            self.not_alive.remove(&(tenant, slot));
            Ok(context.assign_position())
        })();
        verdict(result)
    }

    pub(super) fn map_management_id(&mut self, context: &mut Context<'_>, body: &ArchivedMapManagementId) -> Verdict {
        let tenant = context.tenant;
        let result = (|| {
            let proxy = self.registered(tenant, body.proxy.as_str());
            let proxy = proxy.ok_or(Rejection::NotFound { object: Object::Proxy })?;
            let kind = self.components[proxy as usize].kind;
            if kind != ComponentKind::Proxy {
                return Err(Rejection::WrongKind {
                    object: Object::Proxy,
                    kind,
                });
            }
            let management_id = body.management_id.as_str();
            match body.component.as_ref() {
                Some(id) => {
                    let component = self.registered(tenant, id.as_str());
                    let component = component.ok_or(Rejection::NotFound {
                        object: Object::Component,
                    })?;
                    if !self.is_below(component, proxy) {
                        return Err(Rejection::NotReachable);
                    }
                    self.management_ids
                        .entry(proxy)
                        .or_default()
                        .insert(Name::from(management_id), component);
                }
                None => {
                    let mapped = self.management_ids.get_mut(&proxy);
                    let removed = mapped.and_then(|mapped| mapped.remove(management_id));
                    removed.ok_or(Rejection::NotFound {
                        object: Object::Component,
                    })?;
                }
            }
            Ok(context.assign_position())
        })();
        verdict(result)
    }

    pub(super) fn define_group(&mut self, context: &mut Context<'_>, body: &ArchivedDefineGroup) -> Verdict {
        let groups = per_slot(&mut self.groups, context.tenant);
        if groups.slot(body.name.as_str()).is_some() {
            return Verdict::Rejected(Rejection::AlreadyExists { object: Object::Group });
        }
        let position = context.assign_position();
        let group = Group {
            kind: GroupKind::from_archived(&body.kind),
            defined_at: position,
            members: BTreeSet::new(),
            history: Vec::new(),
        };
        groups.insert(Name::from(body.name.as_str()), group);
        Verdict::Applied(Effect::Recorded { position })
    }

    pub(super) fn change_group_member(
        &mut self,
        context: &mut Context<'_>,
        body: &ArchivedChangeGroupMember,
    ) -> Verdict {
        let tenant = context.tenant;
        let result = (|| {
            let group = self
                .groups
                .get(tenant as usize)
                .and_then(|groups| groups.slot(body.group.as_str()));
            let group = group.ok_or(Rejection::NotFound { object: Object::Group })?;
            let kind = self.groups[tenant as usize].get(group).kind;
            let member = self.resolve(tenant, body.member.hosted, body.member.id.as_str());
            let member = member.ok_or(Rejection::NotFound { object: Object::Member })?;
            let member_kind = self.components[member as usize].kind;
            let fits = match kind {
                GroupKind::Mlm => member_kind.is_mlm(),
                GroupKind::Proxy => member_kind == ComponentKind::Proxy,
                GroupKind::Security => self.components[member as usize].tenant == tenant,
            };
            if !fits {
                return Err(Rejection::WrongKind {
                    object: Object::Member,
                    kind: member_kind,
                });
            }
            let group = self.groups[tenant as usize].get_mut(group);
            let changed = match body.add {
                true => group.members.insert(member),
                false => group.members.remove(&member),
            };
            if !changed {
                return Err(if body.add {
                    Rejection::AlreadyMember
                } else {
                    Rejection::NotMember
                });
            }
            let position = context.assign_position();
            group.history.push(GroupChange {
                position,
                member,
                added: body.add,
            });
            Ok(position)
        })();
        verdict(result)
    }

    // ------------------------------------------------------------ liveness

    /// A heartbeat saw the component at `now_ms`.
    pub(super) fn seen(&mut self, slot: Slot, now_ms: u64, timers: &mut Timers) {
        let component = &mut self.components[slot as usize];
        component.last_seen_ms = component.last_seen_ms.max(now_ms);
        if component.liveness != Liveness::Alive {
            component.liveness = Liveness::Alive;
            self.not_alive.remove(&(component.tenant, slot));
        }
        self.schedule_liveness(slot, timers);
    }

    fn schedule_liveness(&mut self, slot: Slot, timers: &mut Timers) {
        let component = &mut self.components[slot as usize];
        if component.timer_pending {
            return;
        }
        let threshold = match component.liveness {
            Liveness::Alive => LIVENESS_LATE_AFTER_MS,
            Liveness::Late => LIVENESS_FAILED_AFTER_MS,
            Liveness::Failed => return,
        };
        component.timer_pending = true;
        timers.schedule(
            component.last_seen_ms.saturating_add(threshold),
            Timer::Liveness { component: slot },
        );
    }

    /// A liveness timer fired: moves the component to late or failed if it
    /// has been silent long enough, or schedules the next check.
    pub(super) fn check_liveness(&mut self, slot: Slot, now_ms: u64, timers: &mut Timers) -> Option<Transition> {
        let component = &mut self.components[slot as usize];
        component.timer_pending = false;
        if !component.registered {
            return None;
        }
        let silent_ms = now_ms.saturating_sub(component.last_seen_ms);
        let to = match component.liveness {
            Liveness::Alive if silent_ms >= LIVENESS_LATE_AFTER_MS => Some(Liveness::Late),
            Liveness::Late if silent_ms >= LIVENESS_FAILED_AFTER_MS => Some(Liveness::Failed),
            _ => None,
        };
        if let Some(to) = to {
            component.liveness = to;
            self.not_alive.insert((component.tenant, slot));
        }
        self.schedule_liveness(slot, timers);
        to.map(|to| Transition { component: slot, to })
    }

    // ------------------------------------------------------------ queries

    /// Everything registered below `slot`, each once, in depth-first order.
    /// Time proportional to the answer.
    pub fn reachable_through(&self, slot: Slot) -> Vec<Slot> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<Slot> = self.components[slot as usize].children.iter().rev().copied().collect();
        while let Some(next) = stack.pop() {
            if !seen.insert(next) {
                continue;
            }
            found.push(next);
            stack.extend(self.components[next as usize].children.iter().rev().copied());
        }
        found
    }

    /// Whether `slot` is (transitively) below `ancestor`.
    pub fn is_below(&self, slot: Slot, ancestor: Slot) -> bool {
        let mut stack = self.components[slot as usize].parents.clone();
        while let Some(next) = stack.pop() {
            if next == ancestor {
                return true;
            }
            stack.extend_from_slice(&self.components[next as usize].parents);
        }
        false
    }

    /// A component's own liveness and the worst of it and everything below
    /// it (a proxy's status includes its integration modules', seed 001
    /// L520).
    pub fn status(&self, slot: Slot) -> (Liveness, Liveness) {
        let own = self.components[slot as usize].liveness;
        let below = self
            .reachable_through(slot)
            .into_iter()
            .map(|child| self.components[child as usize].liveness);
        (own, below.fold(own, Liveness::max))
    }

    /// A tenant's late and failed components.
    pub fn not_alive(&self, tenant: Slot) -> Vec<Slot> {
        self.not_alive
            .range((tenant, 0)..=(tenant, Slot::MAX))
            .map(|&(_, slot)| slot)
            .collect()
    }

    /// The component a proxy maps a management id to.
    pub fn management_id(&self, proxy: Slot, management_id: &str) -> Option<Slot> {
        self.management_ids.get(&proxy)?.get(management_id).copied()
    }

    pub fn group(&self, tenant: Slot, name: &str) -> Option<&Group> {
        let groups = self.groups.get(tenant as usize)?;
        Some(groups.get(groups.slot(name)?))
    }

    /// A group's members as of `position` (inclusive), from its history.
    pub fn group_members_at(&self, tenant: Slot, name: &str, position: u64) -> Option<BTreeSet<Slot>> {
        let group = self.group(tenant, name)?;
        let mut members = BTreeSet::new();
        for change in group.history.iter().take_while(|change| change.position <= position) {
            match change.added {
                true => members.insert(change.member),
                false => members.remove(&change.member),
            };
        }
        Some(members)
    }

    pub(super) fn rebuild(&mut self) {
        self.ids.iter_mut().for_each(Table::rebuild);
        self.groups.iter_mut().for_each(Table::rebuild);
    }
}

fn verdict(result: Outcome<u64>) -> Verdict {
    match result {
        Ok(position) => Verdict::Applied(Effect::Recorded { position }),
        Err(rejection) => Verdict::Rejected(rejection),
    }
}
