//! Streams: the general event store. Named streams in each tenant's
//! namespace, appended with an expected version and an optional
//! idempotency key, read forward or backward, or all of a tenant's streams
//! in log order.
//!
//! A stream holds the positions of its events (version n is the n-th, from
//! 0); the events themselves stay in the log. An idempotency key is kept
//! for its window of log time and forgotten by a timer.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use super::command::{ArchivedExpectedVersion, ArchivedStreamAppend};
use super::outcome::{Effect, Rejection, Verdict};
use super::table::{Name, Slot, Table};
use super::timers::Timer;
use super::{page, per_slot, Context, Direction};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Streams {
    /// Per tenant slot: stream name → stream.
    named: Vec<Table<Name, Stream>>,
    /// Per tenant slot: the positions of all its stream events, ascending.
    all: Vec<Vec<u64>>,
    /// Per tenant slot: idempotency key → the append it made.
    keys: Vec<BTreeMap<Name, KeptAppend>>,
    events: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Stream {
    /// Position of version n at index n.
    positions: Vec<u64>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
struct KeptAppend {
    position: u64,
    version: u64,
    expires_at_ms: u64,
}

/// One event of a stream, as a read returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEvent {
    pub version: u64,
    pub position: u64,
}

impl Streams {
    pub(super) fn append(&mut self, context: &mut Context<'_>, body: &ArchivedStreamAppend) -> Verdict {
        let tenant = context.tenant;
        if let Some(idempotency) = body.idempotency.as_ref() {
            let kept = self
                .keys
                .get(tenant as usize)
                .and_then(|keys| keys.get(idempotency.key.as_str()));
            if let Some(kept) = kept.filter(|kept| kept.expires_at_ms > context.now_ms) {
                return Verdict::Applied(Effect::StreamDuplicate {
                    position: kept.position,
                    version: kept.version,
                });
            }
        }
        let named = per_slot(&mut self.named, tenant);
        let slot = named.slot(body.stream.as_str());
        let current = slot.and_then(|slot| (named.get(slot).positions.len() as u64).checked_sub(1));
        let expected_ok = match &body.expected {
            ArchivedExpectedVersion::Any => true,
            ArchivedExpectedVersion::NoStream => current.is_none(),
            ArchivedExpectedVersion::Exact(version) => current == Some(version.to_native()),
        };
        if !expected_ok {
            return Verdict::Rejected(Rejection::WrongExpectedVersion { current });
        }
        let slot = slot.unwrap_or_else(|| named.insert(Name::from(body.stream.as_str()), Stream::default()));
        let position = context.assign_position();
        let stream = named.get_mut(slot);
        stream.positions.push(position);
        let version = stream.positions.len() as u64 - 1;
        per_slot(&mut self.all, tenant).push(position);
        self.events += 1;
        if let Some(idempotency) = body.idempotency.as_ref() {
            let expires_at_ms = context.now_ms.saturating_add(idempotency.window_ms.to_native());
            let key = Name::from(idempotency.key.as_str());
            per_slot(&mut self.keys, tenant).insert(
                key.clone(),
                KeptAppend {
                    position,
                    version,
                    expires_at_ms,
                },
            );
            context
                .timers
                .schedule(expires_at_ms, Timer::Idempotency { tenant, key });
        }
        Verdict::Applied(Effect::StreamAppended { position, version })
    }

    /// An idempotency timer fired: forget the key unless it was used again
    /// since (then a later timer owns it).
    pub(super) fn expire_key(&mut self, tenant: Slot, key: Name, now_ms: u64) {
        let Some(keys) = self.keys.get_mut(tenant as usize) else {
            return;
        };
        if keys.get(&key).is_some_and(|kept| kept.expires_at_ms <= now_ms) {
            keys.remove(&key);
        }
    }

    fn stream(&self, tenant: Slot, name: &str) -> Option<&Stream> {
        let named = self.named.get(tenant as usize)?;
        Some(named.get(named.slot(name)?))
    }

    /// The version of the stream's last event; None when it does not exist.
    pub fn version(&self, tenant: Slot, name: &str) -> Option<u64> {
        (self.stream(tenant, name)?.positions.len() as u64).checked_sub(1)
    }

    /// Events of one stream from version `from` (inclusive), forward or
    /// backward, at most `limit`. None when the stream does not exist.
    pub fn read(
        &self,
        tenant: Slot,
        name: &str,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Option<Vec<StreamEvent>> {
        let positions = &self.stream(tenant, name)?.positions;
        let versions: Box<dyn Iterator<Item = u64>> = match direction {
            Direction::Forward => Box::new(from..positions.len() as u64),
            Direction::Backward => {
                let top = from.min((positions.len() as u64).saturating_sub(1));
                match positions.is_empty() {
                    true => Box::new(std::iter::empty()),
                    false => Box::new((0..=top).rev()),
                }
            }
        };
        let events = versions.take(limit).map(|version| StreamEvent {
            version,
            position: positions[version as usize],
        });
        Some(events.collect())
    }

    /// The version of the event at `position` in the stream (positions
    /// ascend with versions); None when it is not one of the stream's.
    pub fn version_at(&self, tenant: Slot, name: &str, position: u64) -> Option<u64> {
        let positions = &self.stream(tenant, name)?.positions;
        positions.binary_search(&position).ok().map(|version| version as u64)
    }

    /// The positions of all of a tenant's stream events, in log order, from
    /// `from`.
    pub fn read_all(&self, tenant: Slot, from: u64, direction: Direction, limit: usize) -> Vec<u64> {
        self.all
            .get(tenant as usize)
            .map_or_else(Vec::new, |all| page(all, from, limit, direction))
    }

    /// A tenant's stream names, in order of creation.
    pub fn names(&self, tenant: Slot) -> Vec<&str> {
        self.named.get(tenant as usize).map_or_else(Vec::new, |named| {
            named.iter().map(|(_, name, _)| name.as_str()).collect()
        })
    }

    pub fn stream_count(&self) -> usize {
        self.named.iter().map(Table::len).sum()
    }

    pub fn event_count(&self) -> u64 {
        self.events
    }

    pub fn kept_keys(&self) -> usize {
        self.keys.iter().map(BTreeMap::len).sum()
    }

    pub(super) fn rebuild(&mut self) {
        self.named.iter_mut().for_each(Table::rebuild);
    }
}
