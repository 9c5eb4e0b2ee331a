//! Back-channel spools: multicast messages with one small delivery state
//! per final destination (seed 001 L483–573).
//!
//! A publish stores nothing but positions and small states: the body stays
//! in the log, at the publish's position. Each final destination (the
//! named components plus the members of at most one group, expanded here,
//! inside the one event) gets a [`Delivery`], 32 bytes, and an entry in the
//! ready queue of every component on its back-channel path below the
//! publisher: the destination itself and each session-mode ancestor through
//! which the publisher reaches it (both redundant proxies of a support
//! instance, for instance). So a poll by any component finds, in one
//! ordered queue, everything it may collect for itself and the components
//! reachable through it, and costs time in proportion to what it hands
//! out, not to the spool.
//!
//! Invariants:
//! - **One state per (message, destination).** A delivery is pending (in
//!   the ready queues of its path), delivered (with a caller, until its
//!   visibility timeout), waiting (nacked, until its retry time), or
//!   done: acked, parked (until re-driven), expired or pruned. Every
//!   change is a command or a timer in log time; apply reads no clock.
//! - **Each body once.** A poll hands out each message at most once, with
//!   every one of its ready destinations reachable through the caller;
//!   handed-out deliveries leave every queue of their path, so the other
//!   of two redundant paths stops seeing them. The first ack wins.
//! - **Order.** Within a tenant, ready deliveries go by rank: precedence
//!   first, then age, where a message gains one precedence level for every
//!   [`AGING_STEP_MS`] it has waited, so low precedence is never starved.
//!   Across tenants, a poll takes one message from each tenant in turn
//!   (round robin, resumed where the caller's last poll stopped), so one
//!   customer's flood cannot starve another's deliveries.
//! - **Bounded.** Each destination holds at most its tenant's capacity of
//!   live deliveries per tenant; over it, deliveries are pruned in a fixed
//!   order (lowest precedence, earliest expiry, non-persistent before
//!   persistent, oldest) and the publisher gets a "rejected" response. The
//!   bound is enforced when a spool grows (a publish or a redrive to it),
//!   so lowering a capacity costs nothing at once: a spool over the new
//!   capacity is pruned down to it when it next grows. Timers do bounded
//!   work per firing.

use std::collections::{BTreeMap, BTreeSet};

use rkyv::{Archive, Deserialize, Serialize};

use super::command::*;
use super::outcome::{Effect, Fired, Handout, Object, Rejection, StoredUpstream, Verdict};
use super::table::{Name, Slot, Table};
use super::timers::{Timer, Timers};
use super::topology::Topology;
use super::{per_slot, Context, Names, LANDLORD_SLOT};

/// A waiting message gains one precedence level per this much log time.
pub const AGING_STEP_MS: u64 = 60 * 1000;
/// The retry delay after a first nack; it doubles with each attempt, up to
/// [`RETRY_DELAY_MS_MAX`].
pub const RETRY_DELAY_MS_BASE: u64 = 1000;
pub const RETRY_DELAY_MS_MAX: u64 = 15 * 60 * 1000;
/// Most deliveries one expiry timer expires before it re-arms itself.
pub const EXPIRED_PER_FIRING_MAX: u32 = 1024;
/// Most expired deliveries one poll clears out of its way.
pub const POLL_EXPIRED_MAX: u32 = 4096;
/// Most parked deliveries one redrive looks at.
pub const REDRIVE_SCAN_MAX: u32 = 65_536;

/// Where one delivery stands.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum DeliveryState {
    /// In the ready queues of its path.
    Pending,
    /// Handed out, until its visibility timeout.
    Delivered,
    /// Nacked; back in the queues at its retry time.
    Waiting,
    Acked,
    /// Out of attempts, until re-driven.
    Parked,
    Expired,
    Pruned,
}

impl DeliveryState {
    /// Counts against its destination's capacity.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Delivered | Self::Waiting)
    }

    /// Finished for good: acked, expired or pruned.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Acked | Self::Expired | Self::Pruned)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Waiting => "waiting",
            Self::Acked => "acked",
            Self::Parked => "parked",
            Self::Expired => "expired",
            Self::Pruned => "pruned",
        }
    }
}

/// A published back-channel message. Its deliveries are
/// `first..first + count` in the delivery arena, sorted by destination.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct SpoolMessage {
    pub position: u64,
    pub tenant: Slot,
    pub id: Name,
    pub source: Slot,
    pub precedence: u8,
    pub expiry_ms: Option<u64>,
    pub persistent: bool,
    pub published_at_ms: u64,
    /// What a poll counts against its byte budget: the inline body's
    /// length, or the bulk reference's URL's.
    pub bytes: u64,
    pub bulk: bool,
    pub max_attempts: u16,
    first: u32,
    count: u32,
    /// Deliveries not done (parked ones count: they may be re-driven).
    open: u32,
    /// Deliveries before this one were looked at by the expiry timer.
    expired_through: u32,
    /// Every delivery is done: a bulk message's URL may be unpublished.
    pub finished: bool,
}

impl SpoolMessage {
    fn rank(&self) -> u64 {
        let handicap = u64::from(u8::MAX - self.precedence) * AGING_STEP_MS;
        self.published_at_ms.saturating_add(handicap)
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.expiry_ms.is_some_and(|expiry| expiry <= now_ms)
    }

    pub fn open(&self) -> u32 {
        self.open
    }

    pub fn destinations(&self) -> u32 {
        self.count
    }
}

/// One (message, destination) pair.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Delivery {
    pub message: u32,
    pub destination: Slot,
    /// The interned set of components whose queues hold it while pending.
    route: u32,
    /// The caller it was last handed to (kept through a timeout or a
    /// nack), or the component that acked it; cleared by a redrive.
    pub holder: Option<Slot>,
    /// Delivered: when it is handed out again; waiting: its retry time.
    pub due_ms: u64,
    pub attempts: u16,
    pub state: DeliveryState,
    /// Why it was last nacked.
    pub nacked: Option<NackReason>,
}

/// The response a publisher gets for a pruned delivery (seed 001 L536):
/// "rejected", at the position of the publish that pushed it out.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedResponse {
    pub at: u64,
    pub message: u32,
    pub destination: Slot,
}

/// A component's ready queue: per tenant, (rank, message, delivery).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
struct Queue {
    tenants: BTreeMap<Slot, BTreeSet<(u64, u32, u32)>>,
    /// The tenant served last, where the next poll's round robin resumes.
    cursor: Option<Slot>,
}

/// A destination's live deliveries of one tenant, in prune order:
/// (precedence, expiry or MAX, persistent, message, delivery).
type PruneOrder = BTreeSet<(u8, u64, bool, u32, u32)>;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default)]
pub struct Spools {
    messages: Vec<SpoolMessage>,
    deliveries: Vec<Delivery>,
    /// Interned paths: sorted component slots.
    routes: Table<Vec<Slot>, ()>,
    /// Per component slot.
    queues: Vec<Queue>,
    /// Per destination slot: tenant → live deliveries in prune order.
    live: Vec<BTreeMap<Slot, PruneOrder>>,
    /// Per tenant slot.
    by_id: Vec<Table<Name, u32>>,
    capacity: Vec<u32>,
    depth: Vec<u64>,
    parked: Vec<BTreeSet<u32>>,
    /// (tenant, message) of every bulk message not finished.
    open_bulk: BTreeSet<(Slot, u32)>,
    /// Per publisher slot.
    responses: Vec<Vec<PrunedResponse>>,
}

/// A delivery change derived from log time.
pub enum Transition {
    TimedOut { delivery: u32 },
    Parked { delivery: u32 },
    Expired { message: u32, count: u32 },
    Finished { message: u32 },
}

impl Transition {
    pub(super) fn into_fired(self, names: &Names<'_>, spools: &Spools) -> Fired {
        let delivery = |at: u32| {
            let delivery = &spools.deliveries[at as usize];
            let message = &spools.messages[delivery.message as usize];
            let tenant = names.tenant(message.tenant).to_string();
            (
                tenant,
                message.position,
                names.component(delivery.destination).to_string(),
            )
        };
        match self {
            Transition::TimedOut { delivery: at } => {
                let (tenant, message, destination) = delivery(at);
                Fired::DeliveryTimedOut {
                    tenant,
                    message,
                    destination,
                }
            }
            Transition::Parked { delivery: at } => {
                let (tenant, message, destination) = delivery(at);
                Fired::DeliveryParked {
                    tenant,
                    message,
                    destination,
                }
            }
            Transition::Expired { message, count } => {
                let message = &spools.messages[message as usize];
                Fired::DeliveriesExpired {
                    tenant: names.tenant(message.tenant).to_string(),
                    message: message.position,
                    count,
                }
            }
            Transition::Finished { message } => {
                let message = &spools.messages[message as usize];
                Fired::BulkUnpublished {
                    tenant: names.tenant(message.tenant).to_string(),
                    message: message.position,
                }
            }
        }
    }
}

type Outcome<T> = Result<T, Rejection>;

impl Spools {
    // ------------------------------------------------------------ publish

    pub(super) fn publish(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedPublish,
    ) -> Verdict {
        match self.try_publish(context, topology, body) {
            Ok(effect) => Verdict::Applied(effect),
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }

    fn try_publish(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedPublish,
    ) -> Outcome<Effect> {
        let tenant = context.tenant;
        let header = &body.header;
        let ids = per_slot(&mut self.by_id, tenant);
        if ids.slot(header.message_id.as_str()).is_some() {
            return Err(Rejection::AlreadyExists {
                object: Object::Message,
            });
        }
        let source = topology.resolve(tenant, header.source.hosted, header.source.id.as_str());
        let source = source.ok_or(Rejection::NotFound { object: Object::Source })?;
        let source_kind = topology.component(source).kind;
        if !matches!(
            source_kind,
            ComponentKind::ApplicationsMlm | ComponentKind::ApplicationServer
        ) {
            return Err(Rejection::WrongKind {
                object: Object::Source,
                kind: source_kind,
            });
        }
        let destinations = expand(tenant, topology, body)?;
        // Every destination's path, before anything changes.
        let mut paths = Paths::new(topology, source);
        let routes = destinations
            .iter()
            .map(|&destination| paths.route(destination))
            .collect::<Outcome<Vec<_>>>()?;

        let position = context.assign_position();
        let message_at = u32::try_from(self.messages.len()).expect("fewer than 2^32 back-channel messages");
        let first = u32::try_from(self.deliveries.len()).expect("fewer than 2^32 deliveries");
        let (bytes, bulk) = match &body.payload {
            ArchivedPayload::Inline { body, .. } => (body.len() as u64, false),
            ArchivedPayload::Bulk { url, .. } => (url.len() as u64, true),
        };
        let max_attempts = match body.max_attempts.to_native() {
            0 => DELIVERY_ATTEMPTS_DEFAULT,
            attempts => attempts,
        };
        let count = destinations.len() as u32;
        self.messages.push(SpoolMessage {
            position,
            tenant,
            id: Name::from(header.message_id.as_str()),
            source,
            precedence: body.qos.precedence,
            expiry_ms: body.qos.expiry_ms.as_ref().map(|expiry| expiry.to_native()),
            persistent: body.qos.persistence,
            published_at_ms: context.now_ms,
            bytes,
            bulk,
            max_attempts,
            first,
            count,
            open: count,
            expired_through: 0,
            finished: false,
        });
        per_slot(&mut self.by_id, tenant).insert(Name::from(header.message_id.as_str()), message_at);
        if bulk {
            self.open_bulk.insert((tenant, message_at));
        }
        for (&destination, route) in destinations.iter().zip(routes) {
            let route = match self.routes.slot(route.as_slice()) {
                Some(slot) => slot,
                None => self.routes.insert(route, ()),
            };
            let at = self.deliveries.len() as u32;
            self.deliveries.push(Delivery {
                message: message_at,
                destination,
                route,
                holder: None,
                due_ms: 0,
                attempts: 0,
                state: DeliveryState::Pending,
                nacked: None,
            });
            self.enqueue(at);
            self.add_live(at);
        }
        if let Some(expiry) = self.messages[message_at as usize].expiry_ms {
            context.timers.schedule(expiry, Timer::Expiry { message: message_at });
        }
        let mut pruned = 0;
        for &destination in &destinations {
            pruned += self.prune(tenant, destination, position);
        }
        Ok(Effect::Published {
            position,
            destinations: count,
            pruned,
        })
    }

    /// Prunes `destination`'s live deliveries of `tenant` down to the
    /// tenant's capacity; returns how many it pruned.
    fn prune(&mut self, tenant: Slot, destination: Slot, at: u64) -> u32 {
        let capacity = self.capacity_of(tenant) as usize;
        let mut pruned = 0;
        loop {
            let live = self
                .live
                .get_mut(destination as usize)
                .and_then(|live| live.get_mut(&tenant));
            let Some(live) = live.filter(|live| live.len() > capacity) else {
                break;
            };
            let &(_, _, _, message, delivery) = live.first().expect("over capacity, so not empty");
            let queued = self.deliveries[delivery as usize].state == DeliveryState::Pending;
            self.finish_live(delivery, DeliveryState::Pruned, None, queued);
            let source = self.messages[message as usize].source;
            per_slot(&mut self.responses, source).push(PrunedResponse {
                at,
                message,
                destination,
            });
            pruned += 1;
        }
        pruned
    }

    // ------------------------------------------------------------ poll

    pub(super) fn poll(
        &mut self,
        context: &mut Context<'_>,
        names: &Names<'_>,
        body: &ArchivedPoll,
        stored: Option<StoredUpstream>,
    ) -> Verdict {
        let tenant = context.tenant;
        let caller = names
            .topology
            .resolve(tenant, body.caller.hosted, body.caller.id.as_str());
        let Some(caller) = caller else {
            return Verdict::Rejected(Rejection::NotFound { object: Object::Caller });
        };
        // The landlord's hosted MLMs serve every customer below them; a
        // customer's poll collects only its own deliveries.
        let only = (tenant != LANDLORD_SLOT).then_some(tenant);
        let visibility_ms = match body.visibility_ms.to_native() {
            0 => VISIBILITY_MS_DEFAULT,
            visibility => visibility,
        };
        let now_ms = context.now_ms;
        let mut handed = Vec::new();
        let mut deliveries_left = body.max_deliveries.to_native();
        let mut bytes_left = body.max_bytes.to_native();
        let mut expired_left = POLL_EXPIRED_MAX;
        while deliveries_left > 0 {
            let Some((tenant, message, group)) = self.next_ready(caller, only) else {
                break;
            };
            let spooled = &self.messages[message as usize];
            if spooled.expired(now_ms) {
                // Cleared out of the way, a bounded number per poll; the
                // expiry timer does the rest.
                let group = &group[..group.len().min(expired_left as usize)];
                if group.is_empty() {
                    break;
                }
                expired_left -= group.len() as u32;
                for &delivery in group {
                    self.finish_live(delivery, DeliveryState::Expired, None, true);
                }
                continue;
            }
            // At least one body, whatever its size; then within the budget.
            if !handed.is_empty() && spooled.bytes > bytes_left {
                break;
            }
            bytes_left = bytes_left.saturating_sub(spooled.bytes);
            let group = &group[..group.len().min(deliveries_left as usize)];
            deliveries_left -= group.len() as u32;
            let mut destinations = Vec::with_capacity(group.len());
            for &at in group {
                self.dequeue(at);
                let delivery = &mut self.deliveries[at as usize];
                delivery.state = DeliveryState::Delivered;
                delivery.attempts = delivery.attempts.saturating_add(1);
                delivery.holder = Some(caller);
                delivery.due_ms = now_ms.saturating_add(visibility_ms);
                let timer = Timer::Delivery {
                    delivery: at,
                    attempt: delivery.attempts,
                };
                context.timers.schedule(delivery.due_ms, timer);
                let destination = delivery.destination;
                destinations.push(self.reference(message, destination, names));
            }
            self.queues[caller as usize].cursor = Some(tenant);
            let spooled = &self.messages[message as usize];
            handed.push(Handout {
                message: spooled.position,
                tenant: names.tenant(spooled.tenant).to_string(),
                message_id: spooled.id.to_string(),
                destinations,
            });
        }
        let position = match stored {
            Some(StoredUpstream {
                position,
                duplicate: false,
                ..
            }) => Some(position),
            _ if !handed.is_empty() => Some(context.assign_position()),
            _ => None,
        };
        Verdict::Applied(Effect::Polled {
            position,
            handed,
            message: stored,
        })
    }

    /// The next message a poll by `caller` takes, with its ready deliveries
    /// reachable through the caller: the first by rank of the next tenant
    /// after the caller's cursor (round robin), or of `only`.
    fn next_ready(&self, caller: Slot, only: Option<Slot>) -> Option<(Slot, u32, Vec<u32>)> {
        let queue = self.queues.get(caller as usize)?;
        let (&tenant, ready) = match only {
            Some(tenant) => queue.tenants.get_key_value(&tenant)?,
            None => {
                let after = queue.cursor.map_or(0, |cursor| cursor.saturating_add(1));
                let mut next = queue.tenants.range(after..);
                next.next().or_else(|| queue.tenants.iter().next())?
            }
        };
        let &(_, message, _) = ready.first()?;
        let group = ready
            .iter()
            .take_while(|&&(_, of, _)| of == message)
            .map(|&(_, _, delivery)| delivery)
            .collect();
        Some((tenant, message, group))
    }

    /// Whether a poll by `caller` would hand out anything: a read, so that
    /// a poll that finds nothing writes nothing. (Expired deliveries not
    /// yet cleared count as something: such a poll clears them.)
    pub fn has_ready(&self, caller: Slot, only: Option<Slot>) -> bool {
        let Some(queue) = self.queues.get(caller as usize) else {
            return false;
        };
        match only {
            Some(tenant) => queue.tenants.contains_key(&tenant),
            None => !queue.tenants.is_empty(),
        }
    }

    // ------------------------------------------------------------ settle

    pub(super) fn settle(&mut self, context: &mut Context<'_>, topology: &Topology, body: &ArchivedSettle) -> Verdict {
        match self.try_settle(context, topology, body) {
            Ok(effect) => Verdict::Applied(effect),
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }

    fn try_settle(&mut self, context: &mut Context<'_>, topology: &Topology, body: &ArchivedSettle) -> Outcome<Effect> {
        let tenant = context.tenant;
        let caller = topology.resolve(tenant, body.caller.hosted, body.caller.id.as_str());
        let caller = caller.ok_or(Rejection::NotFound { object: Object::Caller })?;
        let message = self.message_at(tenant, body.message.to_native());
        let message = message.ok_or(Rejection::NotFound {
            object: Object::Message,
        })?;
        let mut named = Vec::with_capacity(body.destinations.len());
        for destination in body.destinations.iter() {
            let slot = topology.resolve(tenant, destination.hosted, destination.id.as_str());
            let slot = slot.ok_or(Rejection::NotFound {
                object: Object::Destination,
            })?;
            let at = self.delivery_of(message, slot).ok_or(Rejection::NotFound {
                object: Object::Destination,
            })?;
            let delivery = &self.deliveries[at as usize];
            let on_path = slot == caller || self.routes.key(delivery.route).binary_search(&caller).is_ok();
            if !on_path {
                return Err(Rejection::NotReachable);
            }
            named.push(at);
        }
        let position = context.assign_position();
        let now_ms = context.now_ms;
        let (mut acked, mut respooled, mut parked, mut unchanged) = (0, 0, 0, 0);
        let was_finished = self.messages[message as usize].finished;
        for at in named {
            let delivery = self.deliveries[at as usize];
            let ack = matches!(body.settlement, ArchivedSettlement::Ack);
            match (ack, delivery.state) {
                (true, state) if state.is_live() => {
                    self.finish_live(at, DeliveryState::Acked, Some(caller), state == DeliveryState::Pending);
                    acked += 1;
                }
                (true, DeliveryState::Parked) => {
                    self.parked[tenant as usize].remove(&at);
                    self.finish(at, DeliveryState::Acked, Some(caller));
                    acked += 1;
                }
                (false, DeliveryState::Delivered) => {
                    let reason = match &body.settlement {
                        ArchivedSettlement::Nack(reason) => NackReason::from_archived(reason),
                        ArchivedSettlement::Ack => unreachable!("matched a nack"),
                    };
                    self.deliveries[at as usize].nacked = Some(reason);
                    if self.give_up(at) {
                        parked += 1;
                    } else {
                        let delay = retry_delay(delivery.attempts);
                        let delivery = &mut self.deliveries[at as usize];
                        delivery.state = DeliveryState::Waiting;
                        delivery.due_ms = now_ms.saturating_add(delay);
                        let timer = Timer::Delivery {
                            delivery: at,
                            attempt: delivery.attempts,
                        };
                        context.timers.schedule(delivery.due_ms, timer);
                        respooled += 1;
                    }
                }
                _ => unchanged += 1,
            }
        }
        let finished = self.messages[message as usize].finished;
        Ok(Effect::Settled {
            position,
            acked,
            respooled,
            parked,
            unchanged,
            unpublished: finished && !was_finished && self.messages[message as usize].bulk,
        })
    }

    // ------------------------------------------------------------ redrive

    pub(super) fn redrive(
        &mut self,
        context: &mut Context<'_>,
        topology: &Topology,
        body: &ArchivedRedrive,
    ) -> Verdict {
        let tenant = context.tenant;
        let message = match body.message.as_ref() {
            None => None,
            Some(position) => match self.message_at(tenant, position.to_native()) {
                Some(message) => Some(message),
                None => {
                    return Verdict::Rejected(Rejection::NotFound {
                        object: Object::Message,
                    })
                }
            },
        };
        let destination = match body.destination.as_ref() {
            None => None,
            Some(reference) => match topology.resolve(tenant, reference.hosted, reference.id.as_str()) {
                Some(slot) => Some(slot),
                None => {
                    return Verdict::Rejected(Rejection::NotFound {
                        object: Object::Destination,
                    })
                }
            },
        };
        let range = match message {
            Some(message) => {
                let message = &self.messages[message as usize];
                message.first..message.first + message.count
            }
            None => 0..u32::MAX,
        };
        let mut chosen = Vec::new();
        let mut more = false;
        if let Some(parked) = self.parked.get(tenant as usize) {
            for (scanned, &at) in parked.range(range).enumerate() {
                if chosen.len() as u32 == REDRIVE_DELIVERIES_MAX || scanned as u32 == REDRIVE_SCAN_MAX {
                    more = true;
                    break;
                }
                let matches = destination.is_none_or(|slot| self.deliveries[at as usize].destination == slot);
                if matches {
                    chosen.push(at);
                }
            }
        }
        let position = context.assign_position();
        let mut destinations = BTreeSet::new();
        for &at in &chosen {
            self.parked[tenant as usize].remove(&at);
            let delivery = &mut self.deliveries[at as usize];
            delivery.state = DeliveryState::Pending;
            delivery.attempts = 0;
            delivery.holder = None;
            destinations.insert(delivery.destination);
            self.enqueue(at);
            self.add_live(at);
        }
        for destination in destinations {
            self.prune(tenant, destination, position);
        }
        Verdict::Applied(Effect::Redriven {
            position,
            count: chosen.len() as u32,
            more,
        })
    }

    pub(super) fn configure(&mut self, context: &mut Context<'_>, body: &ArchivedConfigureSpool) -> Verdict {
        *per_slot(&mut self.capacity, context.tenant) = body.capacity.to_native();
        Verdict::Applied(Effect::Recorded {
            position: context.assign_position(),
        })
    }

    // ------------------------------------------------------------ timers

    /// A delivery's visibility timeout or retry time, due at `due_ms`,
    /// came. Stale timers do nothing: the delivery moved on, or its current
    /// attempt (a redrive starts the count again) has another due time.
    pub(super) fn delivery_due(&mut self, at: u32, attempt: u16, due_ms: u64) -> Option<Transition> {
        let delivery = *self.deliveries.get(at as usize)?;
        if delivery.attempts != attempt || delivery.due_ms != due_ms {
            return None;
        }
        match delivery.state {
            DeliveryState::Delivered if self.give_up(at) => Some(Transition::Parked { delivery: at }),
            DeliveryState::Delivered => {
                self.requeue(at);
                Some(Transition::TimedOut { delivery: at })
            }
            DeliveryState::Waiting => {
                self.requeue(at);
                None
            }
            _ => None,
        }
    }

    /// A message's expiry came: expires its deliveries that are not done,
    /// at most [`EXPIRED_PER_FIRING_MAX`], and re-arms for the rest.
    pub(super) fn expire(&mut self, message: u32, now_ms: u64, timers: &mut Timers) -> Vec<Transition> {
        let Some(spooled) = self.messages.get(message as usize) else {
            return Vec::new();
        };
        if !spooled.expired(now_ms) {
            return Vec::new();
        }
        let (first, count, start) = (spooled.first, spooled.count, spooled.expired_through);
        let end = count.min(start.saturating_add(EXPIRED_PER_FIRING_MAX));
        let was_finished = spooled.finished;
        let mut expired = 0;
        for at in first + start..first + end {
            let state = self.deliveries[at as usize].state;
            if state.is_live() {
                self.finish_live(at, DeliveryState::Expired, None, state == DeliveryState::Pending);
                expired += 1;
            } else if state == DeliveryState::Parked {
                let tenant = self.messages[message as usize].tenant;
                self.parked[tenant as usize].remove(&at);
                self.finish(at, DeliveryState::Expired, None);
                expired += 1;
            }
        }
        let spooled = &mut self.messages[message as usize];
        spooled.expired_through = end;
        if end < count {
            timers.schedule(now_ms, Timer::Expiry { message });
        }
        let mut transitions = Vec::new();
        if expired > 0 {
            transitions.push(Transition::Expired {
                message,
                count: expired,
            });
        }
        if spooled.finished && !was_finished && spooled.bulk {
            transitions.push(Transition::Finished { message });
        }
        transitions
    }

    // ------------------------------------------------------------ moves

    /// Parks a delivery that has used its attempts; returns whether it did.
    fn give_up(&mut self, at: u32) -> bool {
        let delivery = self.deliveries[at as usize];
        let message = &self.messages[delivery.message as usize];
        if delivery.attempts < message.max_attempts {
            return false;
        }
        let tenant = message.tenant;
        self.remove_live(at);
        self.deliveries[at as usize].state = DeliveryState::Parked;
        per_slot(&mut self.parked, tenant).insert(at);
        true
    }

    /// Back in the ready queues after a timeout or a retry time.
    fn requeue(&mut self, at: u32) {
        let delivery = &mut self.deliveries[at as usize];
        delivery.state = DeliveryState::Pending;
        self.enqueue(at);
    }

    /// Ends a live delivery: out of its destination's live set (and out of
    /// the queues when it was pending).
    fn finish_live(&mut self, at: u32, state: DeliveryState, holder: Option<Slot>, queued: bool) {
        if queued {
            self.dequeue(at);
        }
        self.remove_live(at);
        self.finish(at, state, holder);
    }

    /// Marks a delivery done and counts it off its message.
    fn finish(&mut self, at: u32, state: DeliveryState, holder: Option<Slot>) {
        debug_assert!(state.is_done());
        let delivery = &mut self.deliveries[at as usize];
        delivery.state = state;
        if holder.is_some() {
            delivery.holder = holder;
        }
        let message_at = delivery.message;
        let message = &mut self.messages[message_at as usize];
        message.open -= 1;
        if message.open == 0 {
            message.finished = true;
            if message.bulk {
                self.open_bulk.remove(&(message.tenant, message_at));
            }
        }
    }

    fn enqueue(&mut self, at: u32) {
        let delivery = self.deliveries[at as usize];
        let message = &self.messages[delivery.message as usize];
        let key = (message.rank(), delivery.message, at);
        for &component in self.routes.key(delivery.route) {
            let queue = per_slot(&mut self.queues, component);
            queue.tenants.entry(message.tenant).or_default().insert(key);
        }
    }

    fn dequeue(&mut self, at: u32) {
        let delivery = self.deliveries[at as usize];
        let message = &self.messages[delivery.message as usize];
        let key = (message.rank(), delivery.message, at);
        for &component in self.routes.key(delivery.route) {
            let queue = &mut self.queues[component as usize];
            if let Some(ready) = queue.tenants.get_mut(&message.tenant) {
                ready.remove(&key);
                if ready.is_empty() {
                    queue.tenants.remove(&message.tenant);
                }
            }
        }
    }

    fn prune_key(&self, at: u32) -> (u8, u64, bool, u32, u32) {
        let delivery = &self.deliveries[at as usize];
        let message = &self.messages[delivery.message as usize];
        let expiry = message.expiry_ms.unwrap_or(u64::MAX);
        (message.precedence, expiry, message.persistent, delivery.message, at)
    }

    fn add_live(&mut self, at: u32) {
        let key = self.prune_key(at);
        let delivery = self.deliveries[at as usize];
        let tenant = self.messages[delivery.message as usize].tenant;
        let live = per_slot(&mut self.live, delivery.destination);
        live.entry(tenant).or_default().insert(key);
        *per_slot(&mut self.depth, tenant) += 1;
    }

    fn remove_live(&mut self, at: u32) {
        let key = self.prune_key(at);
        let delivery = self.deliveries[at as usize];
        let tenant = self.messages[delivery.message as usize].tenant;
        let live = &mut self.live[delivery.destination as usize];
        if let Some(set) = live.get_mut(&tenant) {
            set.remove(&key);
            if set.is_empty() {
                live.remove(&tenant);
            }
        }
        self.depth[tenant as usize] -= 1;
    }

    fn reference(&self, message: u32, destination: Slot, names: &Names<'_>) -> ComponentRef {
        let component = names.topology.component(destination);
        ComponentRef {
            hosted: component.tenant != self.messages[message as usize].tenant,
            id: component.id.to_string(),
        }
    }

    // ------------------------------------------------------------ queries

    fn capacity_of(&self, tenant: Slot) -> u32 {
        match self.capacity.get(tenant as usize).copied().unwrap_or(0) {
            0 => SPOOL_CAPACITY_DEFAULT,
            capacity => capacity,
        }
    }

    /// The message published at `position`, if it is `tenant`'s.
    pub fn message_at(&self, tenant: Slot, position: u64) -> Option<u32> {
        let at = self.messages.partition_point(|message| message.position < position);
        let message = self.messages.get(at)?;
        (message.position == position && message.tenant == tenant).then_some(at as u32)
    }

    /// The message `id` of `tenant`.
    pub fn message_by_id(&self, tenant: Slot, id: &str) -> Option<u32> {
        let ids = self.by_id.get(tenant as usize)?;
        Some(*ids.get(ids.slot(id)?))
    }

    pub fn message(&self, message: u32) -> &SpoolMessage {
        &self.messages[message as usize]
    }

    /// A message's deliveries, sorted by destination slot.
    pub fn deliveries(&self, message: u32) -> &[Delivery] {
        let message = &self.messages[message as usize];
        &self.deliveries[message.first as usize..(message.first + message.count) as usize]
    }

    fn delivery_of(&self, message: u32, destination: Slot) -> Option<u32> {
        let first = self.messages[message as usize].first;
        let deliveries = self.deliveries(message);
        let at = deliveries.binary_search_by_key(&destination, |delivery| delivery.destination);
        at.ok().map(|at| first + at as u32)
    }

    /// Live deliveries of `tenant` spooled for `destination`.
    pub fn depth(&self, destination: Slot, tenant: Slot) -> usize {
        let live = self.live.get(destination as usize);
        live.and_then(|live| live.get(&tenant)).map_or(0, BTreeSet::len)
    }

    /// Live deliveries of `tenant`, over all destinations.
    pub fn tenant_depth(&self, tenant: Slot) -> u64 {
        self.depth.get(tenant as usize).copied().unwrap_or(0)
    }

    /// A tenant's parked deliveries, oldest message first.
    pub fn parked(&self, tenant: Slot) -> impl Iterator<Item = u32> + '_ {
        self.parked.get(tenant as usize).into_iter().flatten().copied()
    }

    pub fn delivery(&self, at: u32) -> &Delivery {
        &self.deliveries[at as usize]
    }

    /// A tenant's bulk messages whose deliveries are not all done.
    pub fn open_bulk(&self, tenant: Slot) -> impl Iterator<Item = u32> + '_ {
        self.open_bulk
            .range((tenant, 0)..=(tenant, u32::MAX))
            .map(|&(_, message)| message)
    }

    /// The "rejected" responses a publisher got for pruned deliveries.
    pub fn responses(&self, publisher: Slot) -> &[PrunedResponse] {
        self.responses.get(publisher as usize).map_or(&[], Vec::as_slice)
    }

    /// The configured capacity of `tenant`'s spools.
    pub fn capacity(&self, tenant: Slot) -> u32 {
        self.capacity_of(tenant)
    }

    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    pub fn delivery_count(&self) -> usize {
        self.deliveries.len()
    }

    pub(super) fn rebuild(&mut self) {
        self.routes.rebuild();
        self.by_id.iter_mut().for_each(Table::rebuild);
    }
}

/// The retry delay after a nack of attempt `attempts`.
fn retry_delay(attempts: u16) -> u64 {
    let doublings = u32::from(attempts.saturating_sub(1)).min(20);
    (RETRY_DELAY_MS_BASE << doublings).min(RETRY_DELAY_MS_MAX)
}

/// The final destinations: the named components and the members of the
/// group, each once, in slot order.
fn expand(tenant: Slot, topology: &Topology, body: &ArchivedPublish) -> Outcome<Vec<Slot>> {
    let mut destinations = BTreeSet::new();
    for destination in body.destinations.iter() {
        let slot = topology.resolve(tenant, destination.hosted, destination.id.as_str());
        destinations.insert(slot.ok_or(Rejection::NotFound {
            object: Object::Destination,
        })?);
    }
    for name in body.groups.iter() {
        let group = topology.group(tenant, name.as_str());
        let group = group.ok_or(Rejection::NotFound { object: Object::Group })?;
        if group.kind == GroupKind::Security {
            return Err(Rejection::GroupNotDestination);
        }
        destinations.extend(group.members.iter().copied());
        if destinations.len() > PUBLISH_DESTINATIONS_MAX {
            break;
        }
    }
    if destinations.len() > PUBLISH_DESTINATIONS_MAX {
        return Err(Rejection::TooManyDestinations {
            count: destinations.len() as u64,
        });
    }
    Ok(destinations.into_iter().collect())
}

/// Back-channel paths from one publisher, with what one publish learned
/// about which components are on one.
struct Paths<'a> {
    topology: &'a Topology,
    source: Slot,
    /// Component → whether a session-mode path leads from it up to the
    /// source.
    on_path: BTreeMap<Slot, bool>,
}

impl<'a> Paths<'a> {
    fn new(topology: &'a Topology, source: Slot) -> Self {
        Self {
            topology,
            source,
            on_path: BTreeMap::new(),
        }
    }

    /// The sorted components whose queues hold a delivery to `destination`:
    /// it, and every ancestor on a session-mode path up to the source.
    fn route(&mut self, destination: Slot) -> Outcome<Vec<Slot>> {
        if !self.leads_up(destination) {
            let component = self.topology.component(destination);
            let below = destination != self.source && self.topology.is_below(destination, self.source);
            return Err(match below {
                true => Rejection::NoBackChannel {
                    component: component.id.to_string(),
                },
                false => Rejection::NotReachable,
            });
        }
        let mut route = vec![destination];
        let mut stack = vec![destination];
        while let Some(next) = stack.pop() {
            for &parent in &self.topology.component(next).parents {
                if parent != self.source && self.on_path.get(&parent) == Some(&true) && !route.contains(&parent) {
                    route.push(parent);
                    stack.push(parent);
                }
            }
        }
        route.sort_unstable();
        Ok(route)
    }

    /// Whether a session-mode path leads from `slot` up to the source.
    fn leads_up(&mut self, slot: Slot) -> bool {
        if let Some(&known) = self.on_path.get(&slot) {
            return known;
        }
        let component = self.topology.component(slot);
        let mut leads = false;
        if component.registered && component.mode == CommunicationMode::Session {
            for &parent in &component.parents {
                // Every parent is looked at, so that the map knows each
                // redundant path.
                let up = parent == self.source || self.leads_up(parent);
                leads |= up;
            }
        }
        self.on_path.insert(slot, leads);
        leads
    }
}

#[cfg(test)]
const _: () = assert!(std::mem::size_of::<Delivery>() == 32);
