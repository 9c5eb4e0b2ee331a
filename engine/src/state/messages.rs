//! Upstream messages: stored once (in the log), indexed by id, customer,
//! source and class/subclass; alarms with state; heartbeats feed liveness.
//!
//! Every index is a list of positions in ascending (log) order, so a read
//! "from a position" is a binary search and a slice. A resend of a message
//! id by the same source within [`MESSAGE_DEDUPE_WINDOW_MS`] of log time is
//! recognized and not stored again.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use super::command::*;
use super::outcome::{AlarmChange, Effect, Object, Rejection, Verdict};
use super::table::{Name, Slot, Table};
use super::topology::Topology;
use super::{page, per_slot, Context, Direction};

/// How long a resent message id from the same source is recognized.
pub const MESSAGE_DEDUPE_WINDOW_MS: u64 = 15 * 60 * 1000;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Messages {
    /// Per tenant slot: message id → its latest copy.
    by_id: Vec<Table<Name, StoredMessage>>,
    /// Per tenant slot: positions of all its messages.
    by_customer: Vec<Vec<u64>>,
    /// Per component slot: positions of the messages it sent.
    by_source: Vec<Vec<u64>>,
    /// Per tenant slot: class → subclass → positions.
    by_class: Vec<Table<Name, Table<Name, Vec<u64>>>>,
    /// Per tenant slot: support instance slot → alarm id → position of the
    /// message that raised (or last updated) the open alarm.
    open_alarms: Vec<BTreeMap<Slot, BTreeMap<Name, u64>>>,
    stored: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
pub struct StoredMessage {
    pub position: u64,
    pub source: Slot,
    pub stored_at_ms: u64,
}

/// An open alarm, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlarm {
    pub support_instance: Slot,
    pub alarm_id: String,
    pub position: u64,
}

type Outcome<T> = Result<T, Rejection>;

impl Messages {
    pub(super) fn store(
        &mut self,
        context: &mut Context<'_>,
        topology: &mut Topology,
        message: &ArchivedUpstreamMessage,
    ) -> Verdict {
        match self.try_store(context, topology, message) {
            Ok(effect) => Verdict::Applied(effect),
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }

    fn try_store(
        &mut self,
        context: &mut Context<'_>,
        topology: &mut Topology,
        message: &ArchivedUpstreamMessage,
    ) -> Outcome<Effect> {
        let tenant = context.tenant;
        let header = &message.header;
        let source = topology.registered(tenant, header.source.as_str());
        let source = source.ok_or(Rejection::NotFound { object: Object::Source })?;
        let registered = topology.component(source).kind;
        if registered != ComponentKind::from_archived(&header.source_kind) {
            return Err(Rejection::SourceKindMismatch { registered });
        }
        let ids = per_slot(&mut self.by_id, tenant);
        let previous = ids.slot(header.message_id.as_str());
        if let Some(previous) = previous.map(|slot| *ids.get(slot)) {
            let recent = context.now_ms < previous.stored_at_ms.saturating_add(MESSAGE_DEDUPE_WINDOW_MS);
            match (recent, previous.source == source) {
                (true, true) => {
                    return Ok(Effect::MessageDuplicate {
                        position: previous.position,
                    })
                }
                (true, false) => return Err(Rejection::MessageIdInUse),
                (false, _) => {}
            }
        }
        // Resolve everything the content refers to before anything changes.
        let effect = content_target(tenant, topology, &message.content)?;
        let position = context.assign_position();
        let stored = StoredMessage {
            position,
            source,
            stored_at_ms: context.now_ms,
        };
        let ids = per_slot(&mut self.by_id, tenant);
        match previous {
            Some(slot) => *ids.get_mut(slot) = stored,
            None => {
                ids.insert(Name::from(header.message_id.as_str()), stored);
            }
        }
        per_slot(&mut self.by_customer, tenant).push(position);
        per_slot(&mut self.by_source, source).push(position);
        let classes = per_slot(&mut self.by_class, tenant);
        let class = match classes.slot(header.class.as_str()) {
            Some(slot) => classes.get_mut(slot),
            None => {
                let slot = classes.insert(Name::from(header.class.as_str()), Table::default());
                classes.get_mut(slot)
            }
        };
        match class.slot(header.subclass.as_str()) {
            Some(slot) => class.get_mut(slot).push(position),
            None => {
                class.insert(Name::from(header.subclass.as_str()), vec![position]);
            }
        }
        self.stored += 1;
        let alarm = match effect {
            Target::Alarm {
                support_instance,
                raised,
            } => {
                let ArchivedContent::Alarm(alarm) = &message.content else {
                    unreachable!("alarm target")
                };
                Some(self.change_alarm(tenant, support_instance, alarm.alarm_id.as_str(), raised, position))
            }
            Target::Seen(components) => {
                topology.seen(source, context.now_ms, context.timers);
                for component in components {
                    topology.seen(component, context.now_ms, context.timers);
                }
                None
            }
            Target::Nothing => None,
        };
        Ok(Effect::MessageStored { position, alarm })
    }

    fn change_alarm(
        &mut self,
        tenant: Slot,
        instance: Slot,
        alarm_id: &str,
        raised: bool,
        position: u64,
    ) -> AlarmChange {
        let open = per_slot(&mut self.open_alarms, tenant).entry(instance).or_default();
        let change = match (raised, open.get_mut(alarm_id)) {
            (true, Some(open_at)) => {
                *open_at = position;
                AlarmChange::Updated
            }
            (true, None) => {
                open.insert(Name::from(alarm_id), position);
                AlarmChange::Raised
            }
            (false, Some(_)) => {
                open.remove(alarm_id);
                AlarmChange::Cleared
            }
            (false, None) => AlarmChange::ClearedUnknown,
        };
        if open.is_empty() {
            self.open_alarms[tenant as usize].remove(&instance);
        }
        change
    }

    // ------------------------------------------------------------ queries

    /// The latest copy of message `id` in the tenant.
    pub fn by_id(&self, tenant: Slot, id: &str) -> Option<StoredMessage> {
        let ids = self.by_id.get(tenant as usize)?;
        Some(*ids.get(ids.slot(id)?))
    }

    pub fn by_customer(&self, tenant: Slot, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
        self.by_customer
            .get(tenant as usize)
            .map_or_else(Vec::new, |all| page(all, from, limit, direction))
    }

    /// Messages sent by the component at `source` (a slot the caller found
    /// in its own namespace).
    pub fn by_source(&self, source: Slot, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
        self.by_source
            .get(source as usize)
            .map_or_else(Vec::new, |all| page(all, from, limit, direction))
    }

    pub fn by_class(
        &self,
        tenant: Slot,
        class: &str,
        subclass: &str,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Vec<u64> {
        let Some(classes) = self.by_class.get(tenant as usize) else {
            return Vec::new();
        };
        let Some(class) = classes.slot(class).map(|slot| classes.get(slot)) else {
            return Vec::new();
        };
        match class.slot(subclass) {
            Some(slot) => page(class.get(slot), from, limit, direction),
            None => Vec::new(),
        }
    }

    /// A tenant's open alarms, by support instance and alarm id.
    pub fn open_alarms(&self, tenant: Slot) -> Vec<OpenAlarm> {
        let Some(open) = self.open_alarms.get(tenant as usize) else {
            return Vec::new();
        };
        let alarms = open.iter().flat_map(|(&support_instance, alarms)| {
            alarms.iter().map(move |(alarm_id, &position)| OpenAlarm {
                support_instance,
                alarm_id: alarm_id.to_string(),
                position,
            })
        });
        alarms.collect()
    }

    pub fn stored_count(&self) -> u64 {
        self.stored
    }

    pub fn open_alarm_count(&self) -> usize {
        self.open_alarms
            .iter()
            .flat_map(BTreeMap::values)
            .map(BTreeMap::len)
            .sum()
    }

    pub(super) fn rebuild(&mut self) {
        self.by_id.iter_mut().for_each(Table::rebuild);
        for classes in &mut self.by_class {
            classes.rebuild();
            for slot in 0..classes.len() as Slot {
                classes.get_mut(slot).rebuild();
            }
        }
    }
}

/// What a message's content changes besides the indexes.
enum Target {
    Alarm { support_instance: Slot, raised: bool },
    Seen(Vec<Slot>),
    Nothing,
}

/// Checks what the content refers to, in the tenant's namespace.
fn content_target(tenant: Slot, topology: &Topology, content: &ArchivedContent) -> Outcome<Target> {
    let support_instance = |id: &str| {
        let slot = topology.registered(tenant, id).ok_or(Rejection::NotFound {
            object: Object::SupportInstance,
        })?;
        match topology.component(slot).kind {
            ComponentKind::SupportInstance => Ok(slot),
            kind => Err(Rejection::WrongKind {
                object: Object::SupportInstance,
                kind,
            }),
        }
    };
    match content {
        ArchivedContent::Alarm(alarm) => Ok(Target::Alarm {
            support_instance: support_instance(alarm.support_instance.as_str())?,
            raised: AlarmState::from_archived(&alarm.state) == AlarmState::Raised,
        }),
        ArchivedContent::Event(event) => {
            if let Some(id) = event.support_instance.as_ref() {
                support_instance(id.as_str())?;
            }
            Ok(Target::Nothing)
        }
        ArchivedContent::Heartbeat(heartbeat) => {
            let components = heartbeat.components.iter().map(|id| {
                topology.registered(tenant, id.as_str()).ok_or(Rejection::NotFound {
                    object: Object::Component,
                })
            });
            Ok(Target::Seen(components.collect::<Outcome<Vec<_>>>()?))
        }
        _ => Ok(Target::Nothing),
    }
}
