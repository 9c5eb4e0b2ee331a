//! Model-based test of the back-channel spools (`farmlog_engine::state::spools`).
//!
//! Random sequences of publish, poll, ack / nack, redrive, capacity
//! changes, ticks of log time and snapshot + restore go through the real
//! path (encode → batch → `State::apply`, by `testing::Harness`), starting
//! from `testing::spool_farm()`. A naive reference model keeps a plain list
//! of (message, destination) deliveries, each with its state, attempts,
//! holder and due time, and decides everything from that list and from the
//! topology written down here (never from the engine's code):
//!
//! - which deliveries a poll by a caller may take: pending ones whose
//!   destination is the caller or is below it on a session-mode path up to
//!   the publisher `apps`; each message once per poll, with all of those
//!   (up to the poll's bound), at least one body and then within the byte
//!   budget;
//! - their order: within a tenant by rank (publish time plus
//!   `(255 − precedence) × AGING_STEP_MS`, then publish order), across
//!   tenants (a landlord poll by `agg`) one message per tenant in turn,
//!   resumed after the tenant the caller served last;
//! - what a settle does (acked / respooled / parked / unchanged, or which
//!   rejection), retry delays, parking after the last attempt (on a nack
//!   or at a visibility timeout), expiry of every delivery not done
//!   (parked ones too), and pruning over capacity per (destination,
//!   tenant) in the documented order, with the publisher's "rejected"
//!   responses;
//! - which timers fire at a command's time (before the command applies, in
//!   (due time, creation) order) and the transitions they report.
//!
//! After every step, every message's deliveries (state, attempts, holder,
//! due time, nack reason), depths, `has_ready` of every caller, parked
//! deliveries, pruned responses, open bulk messages and the capacity bound
//! are compared with the model. After the last step the spools are
//! drained (parked deliveries re-driven, everything collected through
//! `agg` and acked) until every delivery is acked, expired or pruned, and
//! the history of every delivery is checked: handed out to one caller per
//! attempt, never after its ack. A second property nacks one delivery
//! until its retry delay reaches `RETRY_DELAY_MS_MAX`.
//!
//! The sequences are kept short enough that the per-command timer bound
//! (`TIMERS_FIRED_PER_COMMAND_MAX`) never binds: that is asserted before
//! every command. Set `PROPTEST_CASES` for longer runs. The minimal
//! sequences of disagreements found are kept as plain tests at the end.

use std::collections::{BTreeMap, BTreeSet};

use farmlog_engine::state::command::{
    CommandBody, ComponentRef, ConfigureSpool, NackReason, Payload, Poll, Qos, Redrive, Settlement,
    DELIVERY_ATTEMPTS_DEFAULT, LANDLORD, SPOOL_CAPACITY_DEFAULT, VISIBILITY_MS_DEFAULT, VISIBILITY_MS_MIN,
};
use farmlog_engine::state::outcome::{Effect, Fired, Handout, Object, Rejection, Verdict};
use farmlog_engine::state::spools::{DeliveryState, AGING_STEP_MS, RETRY_DELAY_MS_BASE, RETRY_DELAY_MS_MAX};
use farmlog_engine::state::testing::{self, command, hosted, own, settle, spool_farm, Harness};
use farmlog_engine::state::timers::TIMERS_FIRED_PER_COMMAND_MAX;
use farmlog_engine::state::view::DeliveryInfo;
use farmlog_engine::state::State;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;

// ------------------------------------------------------------------ farm

/// The customers, in order of registration (the order a hosted MLM's
/// round robin goes through them).
const TENANTS: [&str; 2] = ["acme", "globex"];
const ACME: usize = 0;
const GLOBEX: usize = 1;

/// The hosted applications MLM every message is published from.
const PUBLISHER: &str = "apps";

/// Log time of the first step; `spool_farm` runs at 1–3.
const START_MS: u64 = 10;

/// Longest random sequence: short enough that the timers one command
/// fires (at most one per delivery handed out, nack and publish) stay
/// under `TIMERS_FIRED_PER_COMMAND_MAX`.
const STEPS_MAX: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Landlord,
    Customer(usize),
}

/// A component of `spool_farm`, as the model knows it.
struct Component {
    id: &'static str,
    owner: Owner,
    parents: &'static [&'static str],
    /// Session mode (a back-channel); otherwise message mode.
    session: bool,
}

const fn customer(tenant: usize, id: &'static str, parents: &'static [&'static str], session: bool) -> Component {
    Component {
        id,
        owner: Owner::Customer(tenant),
        parents,
        session,
    }
}

/// `spool_farm` below the publisher: agg is the landlord's hosted
/// aggregation MLM above every proxy; si2 sits behind both of acme's
/// proxies; mailer talks by message.
const COMPONENTS: [Component; 9] = [
    Component {
        id: "agg",
        owner: Owner::Landlord,
        parents: &[PUBLISHER],
        session: true,
    },
    customer(ACME, "proxy", &["agg"], true),
    customer(ACME, "im", &["proxy"], true),
    customer(ACME, "si", &["im"], true),
    customer(ACME, "proxy2", &["agg"], true),
    customer(ACME, "im2", &["proxy2"], true),
    customer(ACME, "si2", &["im", "im2"], true),
    customer(ACME, "mailer", &["agg"], false),
    customer(GLOBEX, "gproxy", &["agg"], true),
];

/// What each customer publishes to (its session-mode components).
const ACME_DESTINATIONS: [&str; 6] = ["proxy", "im", "si", "proxy2", "im2", "si2"];
const GLOBEX_DESTINATIONS: [&str; 1] = ["gproxy"];
/// acme's proxy group `proxies`.
const PROXIES: [&str; 2] = ["proxy", "proxy2"];

/// Who polls: in a namespace (None: the landlord's), a component, this
/// often (a weight among callers).
struct Caller {
    namespace: Option<usize>,
    id: &'static str,
    weight: u32,
}

const fn caller(namespace: Option<usize>, id: &'static str, weight: u32) -> Caller {
    Caller { namespace, id, weight }
}

const CALLERS: [Caller; 11] = [
    caller(Some(ACME), "proxy", 3),
    caller(Some(ACME), "proxy2", 3),
    caller(Some(ACME), "im", 1),
    caller(Some(ACME), "im2", 1),
    caller(Some(ACME), "si", 1),
    caller(Some(ACME), "si2", 1),
    caller(Some(ACME), "agg", 2),
    caller(Some(ACME), "mailer", 1),
    caller(Some(GLOBEX), "gproxy", 2),
    caller(Some(GLOBEX), "agg", 1),
    caller(None, "agg", 4),
];

/// The index of a caller in [`CALLERS`].
fn caller_at(namespace: Option<usize>, id: &str) -> usize {
    let at = CALLERS
        .iter()
        .position(|caller| caller.namespace == namespace && caller.id == id);
    at.unwrap_or_else(|| panic!("no caller {id} in {namespace:?}"))
}

/// Who may name itself as a settle's caller in each customer's namespace.
fn settle_callers(tenant: usize) -> &'static [&'static str] {
    match tenant {
        ACME => &["proxy", "im", "si", "proxy2", "im2", "si2", "mailer", "agg"],
        _ => &["gproxy", "agg"],
    }
}

fn destinations_of(tenant: usize) -> &'static [&'static str] {
    match tenant {
        ACME => &ACME_DESTINATIONS,
        _ => &GLOBEX_DESTINATIONS,
    }
}

fn component(id: &str) -> &'static Component {
    let found = COMPONENTS.iter().find(|component| component.id == id);
    found.unwrap_or_else(|| panic!("no component {id} in the model"))
}

/// Whether a session-mode path leads from `id` up to the publisher.
fn on_back_channel(id: &str) -> bool {
    let component = component(id);
    component.session
        && component
            .parents
            .iter()
            .any(|&parent| parent == PUBLISHER || on_back_channel(parent))
}

/// The components that may collect a delivery to `destination`: it and
/// every ancestor on a session-mode path up to the publisher.
fn path(destination: &'static str) -> BTreeSet<&'static str> {
    let mut path = BTreeSet::new();
    if !on_back_channel(destination) {
        return path;
    }
    let mut stack = vec![destination];
    while let Some(next) = stack.pop() {
        if path.insert(next) {
            let parents = component(next).parents.iter();
            stack.extend(parents.filter(|&&parent| parent != PUBLISHER && on_back_channel(parent)));
        }
    }
    path
}

fn reaches(caller: &str, destination: &'static str) -> bool {
    path(destination).contains(caller)
}

/// A reference to `id` in a namespace (None: the landlord's).
fn reference(namespace: Option<usize>, id: &str) -> ComponentRef {
    match (namespace, component(id).owner) {
        (Some(_), Owner::Landlord) => hosted(id),
        _ => own(id),
    }
}

fn tenant_name(namespace: Option<usize>) -> &'static str {
    namespace.map_or(LANDLORD, |tenant| TENANTS[tenant])
}

/// The retry delay after a nack of attempt `attempts`: the base, doubled
/// for every attempt after the first, capped.
fn retry_delay(attempts: u16) -> u64 {
    let mut delay = RETRY_DELAY_MS_BASE;
    for _ in 1..attempts {
        delay = (delay * 2).min(RETRY_DELAY_MS_MAX);
    }
    delay.min(RETRY_DELAY_MS_MAX)
}

// ------------------------------------------------------------------ model

/// One event in a delivery's life, for the end-of-run checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Handed { attempt: u16, caller: &'static str },
    Acked,
    Redriven,
}

#[derive(Clone, Debug)]
struct ModelDelivery {
    destination: &'static str,
    state: DeliveryState,
    attempts: u16,
    holder: Option<&'static str>,
    /// Delivered: its visibility timeout; waiting: its retry time.
    due_ms: u64,
    /// When its timer was created, to order timers due at the same time.
    due_created: u64,
    nacked: Option<NackReason>,
    life: Vec<Life>,
}

impl ModelDelivery {
    fn is_live(&self) -> bool {
        matches!(
            self.state,
            DeliveryState::Pending | DeliveryState::Delivered | DeliveryState::Waiting
        )
    }

    fn is_done(&self) -> bool {
        matches!(
            self.state,
            DeliveryState::Acked | DeliveryState::Expired | DeliveryState::Pruned
        )
    }
}

#[derive(Clone, Debug)]
struct ModelMessage {
    tenant: usize,
    id: String,
    position: u64,
    precedence: u8,
    expiry_ms: Option<u64>,
    expiry_created: u64,
    expiry_fired: bool,
    persistent: bool,
    published_at_ms: u64,
    max_attempts: u16,
    bytes: u64,
    bulk: bool,
    deliveries: Vec<ModelDelivery>,
}

impl ModelMessage {
    fn rank(&self) -> u64 {
        self.published_at_ms + u64::from(255 - self.precedence) * AGING_STEP_MS
    }

    fn open(&self) -> usize {
        self.deliveries.iter().filter(|delivery| !delivery.is_done()).count()
    }

    fn finished(&self) -> bool {
        self.open() == 0
    }

    fn delivery(&self, destination: &str) -> Option<usize> {
        self.deliveries
            .iter()
            .position(|delivery| delivery.destination == destination)
    }

    /// Its pending deliveries a poll by `caller` may take.
    fn ready_for(&self, caller: &str) -> BTreeSet<&'static str> {
        let ready = self
            .deliveries
            .iter()
            .filter(|delivery| delivery.state == DeliveryState::Pending && reaches(caller, delivery.destination));
        ready.map(|delivery| delivery.destination).collect()
    }
}

/// A "rejected" response: (position of the command that pruned, message
/// position, destination).
type Response = (u64, u64, &'static str);

#[derive(Debug)]
struct Model {
    now_ms: u64,
    /// In publish order.
    messages: Vec<ModelMessage>,
    capacity: [u32; 2],
    /// (customer, destination) left over a lowered capacity: a spool is
    /// pruned down to its capacity only when it next grows.
    over_capacity: BTreeSet<(usize, &'static str)>,
    /// Per customer, the publisher's responses for pruned deliveries.
    responses: [Vec<Response>; 2],
    /// Per polling component, the customer it served last.
    cursor: BTreeMap<&'static str, usize>,
    /// Counts timers created, in the order the engine creates them.
    timers_created: u64,
    next_id: u64,
    step: usize,
}

/// A timer the model expects to fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Expiry { message: usize },
    Delivery { message: usize, delivery: usize },
}

impl Model {
    fn new() -> Self {
        Self {
            now_ms: START_MS,
            messages: Vec::new(),
            capacity: [SPOOL_CAPACITY_DEFAULT; 2],
            over_capacity: BTreeSet::new(),
            responses: [Vec::new(), Vec::new()],
            cursor: BTreeMap::new(),
            timers_created: 0,
            next_id: 0,
            step: 0,
        }
    }

    fn create_timer(&mut self) -> u64 {
        self.timers_created += 1;
        self.timers_created
    }

    fn live(&self, tenant: usize, destination: &str) -> usize {
        let messages = self.messages.iter().filter(|message| message.tenant == tenant);
        let deliveries = messages.flat_map(|message| &message.deliveries);
        deliveries
            .filter(|delivery| delivery.destination == destination && delivery.is_live())
            .count()
    }

    fn has_ready(&self, tenant: usize, caller: &str) -> bool {
        let mut messages = self.messages.iter().filter(|message| message.tenant == tenant);
        messages.any(|message| !message.ready_for(caller).is_empty())
    }

    /// The first message by rank, then publish order, of `tenant` that
    /// has something ready for `caller`.
    fn first_ready(&self, tenant: usize, caller: &str) -> Option<usize> {
        let ready = (0..self.messages.len()).filter(|&at| {
            let message = &self.messages[at];
            message.tenant == tenant && !message.ready_for(caller).is_empty()
        });
        ready.min_by_key(|&at| (self.messages[at].rank(), at))
    }

    /// The tenant a poll by `caller` in `namespace` serves next.
    fn next_tenant(&self, namespace: Option<usize>, caller: &str) -> Option<usize> {
        if let Some(tenant) = namespace {
            return self.has_ready(tenant, caller).then_some(tenant);
        }
        let ready: Vec<usize> = (0..TENANTS.len())
            .filter(|&tenant| self.has_ready(tenant, caller))
            .collect();
        let last = self.cursor.get(caller).copied();
        let after = ready.iter().find(|&&tenant| last.is_none_or(|last| tenant > last));
        after.or(ready.first()).copied()
    }

    // -------------------------------------------------------- log time

    /// The earliest time a timer of the model is due.
    fn next_due(&self) -> Option<u64> {
        let expiries = self.messages.iter().filter(|message| !message.expiry_fired);
        let expiries = expiries.filter_map(|message| message.expiry_ms);
        let deliveries = self.messages.iter().flat_map(|message| &message.deliveries);
        let deliveries =
            deliveries.filter(|delivery| matches!(delivery.state, DeliveryState::Delivered | DeliveryState::Waiting));
        expiries.chain(deliveries.map(|delivery| delivery.due_ms)).min()
    }

    /// Moves log time; a proposer timestamp behind it does not move it back.
    fn advance(&mut self, advance: Advance) {
        let proposed = match advance {
            Advance::By(ms) => self.now_ms + ms,
            Advance::ToNextDue(offset) => match self.next_due() {
                Some(due) => due.saturating_add_signed(i64::from(offset)),
                None => self.now_ms,
            },
        };
        self.now_ms = self.now_ms.max(proposed);
    }

    /// Fires what is due at the current log time, before a command
    /// applies, in (due time, creation) order; returns what it reports.
    fn fire(&mut self) -> Vec<Fired> {
        let now = self.now_ms;
        let mut due = Vec::new();
        for (at, message) in self.messages.iter().enumerate() {
            match message.expiry_ms {
                Some(expiry) if expiry <= now && !message.expiry_fired => {
                    due.push((expiry, message.expiry_created, Due::Expiry { message: at }));
                }
                _ => {}
            }
            for (index, delivery) in message.deliveries.iter().enumerate() {
                let timed = matches!(delivery.state, DeliveryState::Delivered | DeliveryState::Waiting);
                if timed && delivery.due_ms <= now {
                    let key = Due::Delivery {
                        message: at,
                        delivery: index,
                    };
                    due.push((delivery.due_ms, delivery.due_created, key));
                }
            }
        }
        due.sort();
        let mut fired = Vec::new();
        for (_, _, due) in due {
            match due {
                Due::Expiry { message } => self.expire(message, &mut fired),
                Due::Delivery { message, delivery } => self.delivery_due(message, delivery, &mut fired),
            }
        }
        fired
    }

    fn expire(&mut self, at: usize, fired: &mut Vec<Fired>) {
        let message = &mut self.messages[at];
        message.expiry_fired = true;
        let was_finished = message.finished();
        let mut count = 0;
        for delivery in message.deliveries.iter_mut().filter(|delivery| !delivery.is_done()) {
            delivery.state = DeliveryState::Expired;
            count += 1;
        }
        if count > 0 {
            fired.push(Fired::DeliveriesExpired {
                tenant: TENANTS[message.tenant].to_string(),
                message: message.position,
                count,
            });
        }
        if message.bulk && message.finished() && !was_finished {
            fired.push(Fired::BulkUnpublished {
                tenant: TENANTS[message.tenant].to_string(),
                message: message.position,
            });
        }
    }

    fn delivery_due(&mut self, at: usize, index: usize, fired: &mut Vec<Fired>) {
        let message = &mut self.messages[at];
        let tenant = TENANTS[message.tenant].to_string();
        let delivery = &mut message.deliveries[index];
        let destination = delivery.destination.to_string();
        match delivery.state {
            DeliveryState::Delivered if delivery.attempts >= message.max_attempts => {
                delivery.state = DeliveryState::Parked;
                fired.push(Fired::DeliveryParked {
                    tenant,
                    message: message.position,
                    destination,
                });
            }
            DeliveryState::Delivered => {
                delivery.state = DeliveryState::Pending;
                fired.push(Fired::DeliveryTimedOut {
                    tenant,
                    message: message.position,
                    destination,
                });
            }
            DeliveryState::Waiting => delivery.state = DeliveryState::Pending,
            // Expired by an earlier timer of the same command.
            _ => {}
        }
    }

    // -------------------------------------------------------- capacity

    /// Prunes `tenant`'s live deliveries to `destination` down to the
    /// capacity: lowest precedence, earliest expiry (none is latest),
    /// non-persistent before persistent, oldest. Returns how many.
    fn prune(&mut self, tenant: usize, destination: &str, at: u64) -> u32 {
        self.over_capacity
            .retain(|&(of, over)| (of, over) != (tenant, destination));
        let capacity = self.capacity[tenant] as usize;
        let mut pruned = 0;
        while self.live(tenant, destination) > capacity {
            let candidates = self.messages.iter().enumerate().filter_map(|(order, message)| {
                let index = message.delivery(destination)?;
                let live = message.tenant == tenant && message.deliveries[index].is_live();
                let expiry = message.expiry_ms.unwrap_or(u64::MAX);
                live.then_some(((message.precedence, expiry, message.persistent, order), index))
            });
            let ((_, _, _, order), index) = candidates.min().expect("over capacity, so something is live");
            let message = &mut self.messages[order];
            let delivery = &mut message.deliveries[index];
            delivery.state = DeliveryState::Pruned;
            self.responses[tenant].push((at, message.position, delivery.destination));
            pruned += 1;
        }
        pruned
    }
}

// ------------------------------------------------------------------ ops

#[derive(Clone, Debug)]
struct PublishOp {
    tenant: usize,
    /// Indices into the tenant's destinations; may repeat.
    destinations: Vec<usize>,
    group: bool,
    /// Also names `mailer`, which has no back-channel.
    mailer: bool,
    precedence: u8,
    /// Expiry this long after the publish.
    expiry_after_ms: Option<u64>,
    persistent: bool,
    /// 0: the default.
    max_attempts: u16,
    /// Length of the inline body.
    body_bytes: usize,
    bulk: bool,
    /// Reuses an existing message id of the tenant.
    reuse_id: bool,
}

#[derive(Clone, Debug)]
struct SettleOp {
    /// Which handed-out delivery.
    pick: usize,
    /// None: its holder; else an index into the tenant's settle callers.
    caller: Option<usize>,
    /// Other destinations of the same message named too (may repeat).
    also: Vec<usize>,
    /// Also names a destination the message does not have.
    foreign: bool,
    /// Settles in the other customer's namespace.
    wrong_tenant: bool,
    settlement: Settlement,
}

#[derive(Clone, Debug)]
enum RedriveScope {
    All,
    Message(usize),
    Destination(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Publish(PublishOp),
    Poll {
        caller: usize,
        max_deliveries: u32,
        max_bytes: u64,
        /// 0: the default.
        visibility_ms: u64,
    },
    Settle(SettleOp),
    Redrive {
        tenant: usize,
        scope: RedriveScope,
    },
    ConfigureSpool {
        capacity: u32,
    },
    Tick,
    SnapshotRestore,
}

#[derive(Clone, Debug)]
struct Step {
    advance: Advance,
    op: Op,
}

/// How far log time moves before a step's command.
#[derive(Clone, Copy, Debug)]
enum Advance {
    By(u64),
    /// To the model's next due timer, plus this offset (−1: just before
    /// it, 0: at it, 1: just after).
    ToNextDue(i8),
}

fn publish_op() -> impl Strategy<Value = PublishOp> {
    let target = (
        prop_oneof![3 => Just(ACME), 1 => Just(GLOBEX)],
        vec(0..ACME_DESTINATIONS.len(), 0..=3),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.03),
    );
    let qos = (0u8..=3, prop::option::weighted(0.4, 0u64..=8000), any::<bool>());
    let rest = (
        prop_oneof![6 => 1u16..=3, 1 => Just(0u16)],
        1usize..=30,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.03),
    );
    (target, qos, rest).prop_map(|(target, qos, rest)| {
        let (tenant, destinations, group, mailer) = target;
        let (precedence, expiry_after_ms, persistent) = qos;
        let (max_attempts, body_bytes, bulk, reuse_id) = rest;
        // acme names a group or at least one component; globex has one.
        let (destinations, group, mailer) = match tenant {
            ACME => (destinations.clone(), group || destinations.is_empty(), mailer),
            _ => (vec![0], false, false),
        };
        PublishOp {
            tenant,
            destinations,
            group,
            mailer,
            precedence,
            expiry_after_ms,
            persistent,
            max_attempts,
            body_bytes,
            bulk,
            reuse_id,
        }
    })
}

fn nack() -> impl Strategy<Value = Settlement> {
    prop_oneof![
        Just(Settlement::Nack(NackReason::Rejected)),
        Just(Settlement::Nack(NackReason::Throttled)),
        Just(Settlement::Nack(NackReason::ReceptionFailed)),
    ]
}

fn settlement() -> impl Strategy<Value = Settlement> {
    prop_oneof![1 => Just(Settlement::Ack), 1 => nack()]
}

fn settle_op() -> impl Strategy<Value = SettleOp> {
    (
        any::<usize>(),
        prop_oneof![4 => Just(None), 1 => (0..8usize).prop_map(Some)],
        prop_oneof![3 => Just(vec![]), 1 => vec(any::<usize>(), 1..=2)],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.03),
        settlement(),
    )
        .prop_map(|(pick, caller, also, foreign, wrong_tenant, settlement)| SettleOp {
            pick,
            caller,
            also,
            foreign,
            wrong_tenant,
            settlement,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let poll = (
        Union::new_weighted(
            (CALLERS.iter().enumerate())
                .map(|(at, caller)| (caller.weight, Just(at).boxed()))
                .collect(),
        ),
        (1u32..=4, prop_oneof![3 => Just(1u64 << 20), 1 => 1u64..=40]),
        prop_oneof![6 => VISIBILITY_MS_MIN..=3000u64, 1 => Just(0u64)],
    )
        .prop_map(|(caller, (max_deliveries, max_bytes), visibility_ms)| Op::Poll {
            caller,
            max_deliveries,
            max_bytes,
            visibility_ms,
        });
    let redrive = (
        prop_oneof![4 => Just(ACME), 1 => Just(GLOBEX)],
        prop_oneof![
            2 => Just(RedriveScope::All),
            1 => any::<usize>().prop_map(RedriveScope::Message),
            1 => (0..ACME_DESTINATIONS.len()).prop_map(RedriveScope::Destination),
        ],
    )
        .prop_map(|(tenant, scope)| Op::Redrive { tenant, scope });
    prop_oneof![
        5 => publish_op().prop_map(Op::Publish),
        6 => poll,
        5 => settle_op().prop_map(Op::Settle),
        2 => redrive,
        1 => (1u32..=4).prop_map(|capacity| Op::ConfigureSpool { capacity }),
        3 => Just(Op::Tick),
        1 => Just(Op::SnapshotRestore),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let small = prop_oneof![
        4 => Just(Advance::By(0)),
        6 => (1u64..500).prop_map(Advance::By),
        1 => (-1i8..=1).prop_map(Advance::ToNextDue),
    ];
    let tick = prop_oneof![
        6 => (100u64..4000).prop_map(Advance::By),
        1 => (20_000u64..90_000).prop_map(Advance::By),
        3 => (-1i8..=1).prop_map(Advance::ToNextDue),
    ];
    (small, tick, op()).prop_map(|(small, tick, op)| {
        let advance = match op {
            Op::Tick => tick,
            _ => small,
        };
        Step { advance, op }
    })
}

/// One message to `proxy` with more attempts than it takes to reach the
/// longest retry delay, polled and nacked round after round, with log
/// time moved to about each retry time.
fn retry_rounds() -> impl Strategy<Value = Vec<Step>> {
    let round = (
        prop_oneof![Just(caller_at(Some(ACME), "proxy")), Just(caller_at(None, "agg"))],
        VISIBILITY_MS_MIN..=3000u64,
        nack(),
        prop_oneof![1 => Just(-1i8), 6 => Just(0i8), 1 => Just(1i8)],
    );
    (11u16..=14, vec(round, 11..=16)).prop_map(|(max_attempts, rounds)| {
        let publish = PublishOp {
            tenant: ACME,
            destinations: vec![0],
            group: false,
            mailer: false,
            precedence: 0,
            expiry_after_ms: None,
            persistent: false,
            max_attempts,
            body_bytes: 1,
            bulk: false,
            reuse_id: false,
        };
        let mut steps = vec![Step {
            advance: Advance::By(0),
            op: Op::Publish(publish),
        }];
        for (caller, visibility_ms, settlement, offset) in rounds {
            let poll = Op::Poll {
                caller,
                max_deliveries: 1,
                max_bytes: 1 << 20,
                visibility_ms,
            };
            let nack = SettleOp {
                pick: 0,
                caller: None,
                also: Vec::new(),
                foreign: false,
                wrong_tenant: false,
                settlement,
            };
            steps.extend([
                Step {
                    advance: Advance::By(0),
                    op: poll,
                },
                Step {
                    advance: Advance::By(0),
                    op: Op::Settle(nack),
                },
                Step {
                    advance: Advance::ToNextDue(offset),
                    op: Op::Tick,
                },
            ]);
        }
        steps
    })
}

// ------------------------------------------------------------------ runner

fn farm() -> Harness {
    let mut harness = Harness::new();
    for command in spool_farm() {
        let outcome = harness.apply(command.clone());
        assert!(outcome.is_applied(), "setup {command:?}: {outcome:?}");
    }
    harness
}

/// The transitions of the spools among what fired.
fn spool_fired(fired: &[Fired]) -> Vec<Fired> {
    let spools = fired.iter().filter(|fired| {
        matches!(
            fired,
            Fired::DeliveryTimedOut { .. }
                | Fired::DeliveryParked { .. }
                | Fired::DeliveriesExpired { .. }
                | Fired::BulkUnpublished { .. }
        )
    });
    spools.cloned().collect()
}

/// Applies one command at the model's log time; checks what fired first.
fn apply(harness: &mut Harness, model: &Model, tenant: &str, body: CommandBody, fired: &[Fired]) -> Verdict {
    let before = harness.state.pending_timers();
    assert!(
        before < TIMERS_FIRED_PER_COMMAND_MAX,
        "test too long: {before} timers pending could hit the per-command bound"
    );
    let outcome = harness.apply(command(tenant, model.now_ms, body.clone()));
    assert_eq!(
        spool_fired(&outcome.fired),
        fired,
        "step {}: what fired before {body:?} at {} ms",
        model.step,
        model.now_ms
    );
    outcome.verdict
}

/// Runs the steps, checking after each; then drains every spool and
/// checks that every delivery ended acked, expired or pruned.
fn run(steps: &[Step]) {
    let mut harness = farm();
    let mut model = Model::new();
    for (at, step) in steps.iter().enumerate() {
        model.step = at;
        execute(&mut harness, &mut model, step);
    }
    drain(&mut harness, &mut model, steps.len());
    check_lives(&model);
}

fn execute(harness: &mut Harness, model: &mut Model, step: &Step) {
    let at = model.step;
    if let Op::SnapshotRestore = step.op {
        let restored = State::restore(&harness.state.snapshot()).expect("a snapshot restores");
        assert_eq!(restored.hash(), harness.state.hash(), "step {at}: restored hash");
        harness.state = restored;
        check(&harness.state, model);
        return;
    }
    model.advance(step.advance);
    let fired = model.fire();
    match &step.op {
        Op::Publish(op) => run_publish(harness, model, op, &fired),
        Op::Poll {
            caller,
            max_deliveries,
            max_bytes,
            visibility_ms,
        } => {
            let limits = (*max_deliveries, *max_bytes, *visibility_ms);
            run_poll(harness, model, &CALLERS[*caller], limits, &fired)
        }
        Op::Settle(op) => run_settle(harness, model, op, &fired),
        Op::Redrive { tenant, scope } => run_redrive(harness, model, *tenant, scope, &fired),
        Op::ConfigureSpool { capacity } => {
            let body = CommandBody::ConfigureSpool(ConfigureSpool { capacity: *capacity });
            let verdict = apply(harness, model, TENANTS[ACME], body, &fired);
            let Verdict::Applied(Effect::Recorded { position }) = verdict else {
                panic!("step {at}: {verdict:?}")
            };
            // A lower capacity applies as a spool grows: nothing is
            // pruned now.
            let _ = position;
            model.capacity[ACME] = *capacity;
            for destination in ACME_DESTINATIONS {
                if model.live(ACME, destination) > *capacity as usize {
                    model.over_capacity.insert((ACME, destination));
                }
            }
        }
        Op::Tick => {
            let verdict = apply(harness, model, TENANTS[ACME], CommandBody::Tick, &fired);
            assert_eq!(verdict, Verdict::Applied(Effect::Ticked), "step {at}");
        }
        Op::SnapshotRestore => unreachable!("handled above"),
    }
    check(&harness.state, model);
}

/// Most steps a drain takes: every delivery is settled well before.
const DRAIN_STEPS_MAX: usize = 4000;

/// No delivery lost: re-drives what is parked, lets time run out what is
/// waiting, collects everything through the landlord's `agg` and acks it,
/// until every delivery is acked, expired or pruned.
fn drain(harness: &mut Harness, model: &mut Model, first_step: usize) {
    let landlord_agg = caller_at(None, "agg");
    for at in first_step..first_step + DRAIN_STEPS_MAX {
        model.step = at;
        let handed = handed_out(model);
        let delivered = handed.iter().position(|&(message, delivery)| {
            model.messages[message].deliveries[delivery].state == DeliveryState::Delivered
        });
        let parked = (0..TENANTS.len()).find(|&tenant| {
            let messages = model.messages.iter().filter(|message| message.tenant == tenant);
            let mut deliveries = messages.flat_map(|message| &message.deliveries);
            deliveries.any(|delivery| delivery.state == DeliveryState::Parked)
        });
        let ready = (0..TENANTS.len()).any(|tenant| model.has_ready(tenant, "agg"));
        let (advance, op) = if let Some(pick) = delivered {
            let settle = SettleOp {
                pick,
                caller: None,
                also: Vec::new(),
                foreign: false,
                wrong_tenant: false,
                settlement: Settlement::Ack,
            };
            (Advance::By(0), Op::Settle(settle))
        } else if let Some(tenant) = parked {
            let scope = RedriveScope::All;
            (Advance::By(0), Op::Redrive { tenant, scope })
        } else if ready {
            let poll = Op::Poll {
                caller: landlord_agg,
                max_deliveries: 4,
                max_bytes: 1 << 20,
                visibility_ms: VISIBILITY_MS_MIN,
            };
            // The previous poll's visibility timers (all acked) fire.
            (Advance::By(VISIBILITY_MS_MIN), poll)
        } else if model.next_due().is_some() {
            (Advance::ToNextDue(0), Op::Tick)
        } else {
            break;
        };
        execute(harness, model, &Step { advance, op });
    }
    for message in &model.messages {
        for delivery in &message.deliveries {
            assert!(
                delivery.is_done(),
                "drained, yet {} to {} is {:?}",
                message.id,
                delivery.destination,
                delivery.state
            );
        }
    }
}

/// Every delivery that was ever handed out, as (message, delivery).
fn handed_out(model: &Model) -> Vec<(usize, usize)> {
    let messages = model.messages.iter().enumerate();
    let handed = messages.flat_map(|(at, message)| {
        let deliveries = message.deliveries.iter().enumerate();
        let handed = deliveries.filter(|(_, delivery)| !delivery.life.is_empty());
        handed.map(move |(index, _)| (at, index))
    });
    handed.collect()
}

fn run_publish(harness: &mut Harness, model: &mut Model, op: &PublishOp, fired: &[Fired]) {
    let tenant = op.tenant;
    let existing = model.messages.iter().find(|message| message.tenant == tenant);
    let id = match existing {
        Some(message) if op.reuse_id => message.id.clone(),
        _ => {
            model.next_id += 1;
            format!("m{}", model.next_id)
        }
    };
    let names = destinations_of(tenant);
    let mut named: Vec<&'static str> = op.destinations.iter().map(|&at| names[at % names.len()]).collect();
    if op.mailer {
        named.push("mailer");
    }
    let groups: &[&str] = if op.group { &["proxies"] } else { &[] };
    let expiry_ms = op.expiry_after_ms.map(|after| model.now_ms + after);
    let mut body = testing::publish_qos(
        &id,
        named.iter().map(|&name| own(name)).collect(),
        Qos {
            precedence: op.precedence,
            expiry_ms,
            persistence: op.persistent,
        },
    );
    // What a poll counts against its byte budget: the body, or the URL.
    let (payload, bytes) = match op.bulk {
        true => {
            let url = format!("https://apps.example/{id}");
            let bytes = url.len() as u64;
            (Payload::Bulk { url, size: 1 << 20 }, bytes)
        }
        false => {
            let body = vec![b'x'; op.body_bytes];
            let mime_type = "text/plain".to_string();
            (Payload::Inline { mime_type, body }, op.body_bytes as u64)
        }
    };
    if let CommandBody::Publish(publish) = &mut body {
        publish.groups = groups.iter().map(|group| group.to_string()).collect();
        publish.max_attempts = op.max_attempts;
        publish.payload = payload;
    }
    let verdict = apply(harness, model, TENANTS[tenant], body, fired);
    let step = model.step;

    // What the model expects.
    if op.reuse_id && existing.is_some() {
        let expected = Rejection::AlreadyExists {
            object: Object::Message,
        };
        assert_eq!(verdict, Verdict::Rejected(expected), "step {step}: id {id} again");
        return;
    }
    let mut destinations: BTreeSet<&'static str> = named.iter().copied().collect();
    if op.group {
        destinations.extend(PROXIES);
    }
    if destinations.contains("mailer") {
        let expected = Rejection::NoBackChannel {
            component: "mailer".into(),
        };
        assert_eq!(verdict, Verdict::Rejected(expected), "step {step}: publish to mailer");
        return;
    }
    let Verdict::Applied(Effect::Published {
        position,
        destinations: count,
        pruned,
    }) = verdict
    else {
        panic!("step {step}: publish {id} to {destinations:?}: {verdict:?}")
    };
    assert_eq!(count as usize, destinations.len(), "step {step}: destinations of {id}");
    let expiry_created = match expiry_ms {
        Some(_) => model.create_timer(),
        None => 0,
    };
    let deliveries = destinations.iter().map(|&destination| ModelDelivery {
        destination,
        state: DeliveryState::Pending,
        attempts: 0,
        holder: None,
        due_ms: 0,
        due_created: 0,
        nacked: None,
        life: Vec::new(),
    });
    model.messages.push(ModelMessage {
        tenant,
        id: id.clone(),
        position,
        precedence: op.precedence,
        expiry_ms,
        expiry_created,
        expiry_fired: false,
        persistent: op.persistent,
        published_at_ms: model.now_ms,
        max_attempts: match op.max_attempts {
            0 => DELIVERY_ATTEMPTS_DEFAULT,
            max_attempts => max_attempts,
        },
        bytes,
        bulk: op.bulk,
        deliveries: deliveries.collect(),
    });
    let mut expected_pruned = 0;
    for destination in destinations {
        expected_pruned += model.prune(tenant, destination, position);
    }
    assert_eq!(pruned, expected_pruned, "step {step}: pruned by the publish of {id}");
}

fn run_poll(
    harness: &mut Harness,
    model: &mut Model,
    &Caller {
        namespace, id: caller, ..
    }: &Caller,
    (max_deliveries, max_bytes, visibility_ms): (u32, u64, u64),
    fired: &[Fired],
) {
    let body = CommandBody::Poll(Poll {
        caller: reference(namespace, caller),
        max_deliveries,
        max_bytes,
        visibility_ms,
        message: None,
    });
    let verdict = apply(harness, model, tenant_name(namespace), body, fired);
    let step = model.step;
    let Verdict::Applied(Effect::Polled {
        position,
        handed,
        message: None,
    }) = verdict
    else {
        panic!("step {step}: poll by {caller}: {verdict:?}")
    };
    assert_eq!(
        position.is_some(),
        !handed.is_empty(),
        "step {step}: a poll writes an event when it hands something out"
    );
    let visibility_ms = match visibility_ms {
        0 => VISIBILITY_MS_DEFAULT,
        visibility_ms => visibility_ms,
    };
    let mut left = max_deliveries as usize;
    // At least one body, whatever its size; then within the budget.
    let mut bytes_left = max_bytes;
    let mut handed = handed.iter();
    let mut seen = BTreeSet::new();
    while left > 0 {
        let Some(tenant) = model.next_tenant(namespace, caller) else {
            break;
        };
        let at = model
            .first_ready(tenant, caller)
            .expect("the tenant has something ready");
        let message = &model.messages[at];
        let ready = message.ready_for(caller);
        if !seen.is_empty() && message.bytes > bytes_left {
            break;
        }
        bytes_left = bytes_left.saturating_sub(message.bytes);
        let handout = handed.next().unwrap_or_else(|| {
            panic!(
                "step {step}: poll by {caller} stopped with {left} deliveries left; the model has {} {:?} ready",
                message.id, ready
            )
        });
        let destinations = handout_destinations(handout, step);
        assert_eq!(
            (handout.message, handout.tenant.as_str(), handout.message_id.as_str()),
            (message.position, TENANTS[tenant], message.id.as_str()),
            "step {step}: poll by {caller} in {}: which message next (ready {ready:?})",
            tenant_name(namespace)
        );
        assert!(
            seen.insert(message.position),
            "step {step}: {} handed out twice in one poll",
            message.id
        );
        assert_eq!(
            destinations.len(),
            ready.len().min(left),
            "step {step}: {} handed out for {destinations:?}, ready {ready:?}, {left} left",
            message.id
        );
        for destination in &destinations {
            assert!(
                ready.contains(destination.as_str()),
                "step {step}: {} handed out for {destination}, ready {ready:?}",
                message.id
            );
        }
        for destination in destinations {
            let created = model.create_timer();
            let now = model.now_ms;
            let message = &mut model.messages[at];
            let index = message.delivery(&destination).expect("checked above");
            let delivery = &mut message.deliveries[index];
            delivery.state = DeliveryState::Delivered;
            delivery.attempts += 1;
            delivery.holder = Some(caller);
            delivery.due_ms = now + visibility_ms;
            delivery.due_created = created;
            delivery.life.push(Life::Handed {
                attempt: delivery.attempts,
                caller,
            });
            left -= 1;
        }
        model.cursor.insert(caller, tenant);
    }
    let extra: Vec<_> = handed.collect();
    assert!(
        extra.is_empty(),
        "step {step}: poll by {caller} handed out more than the model: {extra:?}"
    );
}

/// The destination ids of a handout, each once, all in the message's own
/// namespace.
fn handout_destinations(handout: &Handout, step: usize) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for destination in &handout.destinations {
        assert!(!destination.hosted, "step {step}: hosted destination in {handout:?}");
        assert!(
            ids.insert(destination.id.clone()),
            "step {step}: a destination twice in {handout:?}"
        );
    }
    handout
        .destinations
        .iter()
        .map(|destination| destination.id.clone())
        .collect()
}

fn run_settle(harness: &mut Harness, model: &mut Model, op: &SettleOp, fired: &[Fired]) {
    let step = model.step;
    let handed = handed_out(model);
    if handed.is_empty() {
        // Nothing handed out yet to settle: a tick instead.
        let verdict = apply(harness, model, TENANTS[ACME], CommandBody::Tick, fired);
        assert_eq!(verdict, Verdict::Applied(Effect::Ticked), "step {step}");
        return;
    }
    let (at, index) = handed[op.pick % handed.len()];
    let message = &model.messages[at];
    let delivery = &message.deliveries[index];
    let tenant = match op.wrong_tenant {
        true => 1 - message.tenant,
        false => message.tenant,
    };
    let callers = settle_callers(tenant);
    let caller = match op.caller {
        _ if op.wrong_tenant => callers[0],
        None => delivery.holder.unwrap_or(delivery.destination),
        Some(pick) => callers[pick % callers.len()],
    };
    let mut named = vec![delivery.destination];
    for &pick in &op.also {
        named.push(message.deliveries[pick % message.deliveries.len()].destination);
    }
    let foreign = destinations_of(message.tenant)
        .iter()
        .find(|&&destination| message.delivery(destination).is_none());
    if let (true, Some(&foreign)) = (op.foreign, foreign) {
        named.push(foreign);
    }
    let body = settle(
        reference(Some(tenant), caller),
        message.position,
        named.iter().map(|&name| reference(Some(tenant), name)).collect(),
        op.settlement,
    );
    let verdict = apply(harness, model, TENANTS[tenant], body, fired);

    // What the model expects.
    let message = &model.messages[at];
    let refusal = if op.wrong_tenant {
        Some(Rejection::NotFound {
            object: Object::Message,
        })
    } else {
        named
            .iter()
            .find_map(|&destination| match message.delivery(destination) {
                None => Some(Rejection::NotFound {
                    object: Object::Destination,
                }),
                Some(_) if !reaches(caller, destination) => Some(Rejection::NotReachable),
                Some(_) => None,
            })
    };
    if let Some(refusal) = refusal {
        assert_eq!(
            verdict,
            Verdict::Rejected(refusal),
            "step {step}: {caller} settles {} for {named:?}",
            message.id
        );
        return;
    }
    let was_finished = message.finished();
    let (mut acked, mut respooled, mut parked, mut unchanged) = (0, 0, 0, 0);
    for destination in &named {
        let now = model.now_ms;
        let index = model.messages[at].delivery(destination).expect("checked above");
        let max_attempts = model.messages[at].max_attempts;
        let delivery = &model.messages[at].deliveries[index];
        match (op.settlement, delivery.state) {
            // The first ack wins, whatever the delivery is doing, unless
            // it is done.
            (
                Settlement::Ack,
                DeliveryState::Pending | DeliveryState::Delivered | DeliveryState::Waiting | DeliveryState::Parked,
            ) => {
                let delivery = &mut model.messages[at].deliveries[index];
                delivery.state = DeliveryState::Acked;
                delivery.holder = Some(caller);
                delivery.life.push(Life::Acked);
                acked += 1;
            }
            (Settlement::Nack(reason), DeliveryState::Delivered) => {
                let attempts = delivery.attempts;
                let created = match attempts >= max_attempts {
                    true => None,
                    false => Some(model.create_timer()),
                };
                let delivery = &mut model.messages[at].deliveries[index];
                delivery.nacked = Some(reason);
                match created {
                    None => {
                        delivery.state = DeliveryState::Parked;
                        parked += 1;
                    }
                    Some(created) => {
                        delivery.state = DeliveryState::Waiting;
                        delivery.due_ms = now + retry_delay(attempts);
                        delivery.due_created = created;
                        respooled += 1;
                    }
                }
            }
            _ => unchanged += 1,
        }
    }
    let message = &model.messages[at];
    let Verdict::Applied(Effect::Settled {
        acked: got_acked,
        respooled: got_respooled,
        parked: got_parked,
        unchanged: got_unchanged,
        unpublished,
        ..
    }) = verdict
    else {
        panic!(
            "step {step}: {caller} settles {} for {named:?}: {verdict:?}",
            message.id
        )
    };
    assert_eq!(
        (got_acked, got_respooled, got_parked, got_unchanged),
        (acked, respooled, parked, unchanged),
        "step {step}: {caller} settles {} for {named:?} with {:?}: (acked, respooled, parked, unchanged)",
        message.id,
        op.settlement
    );
    let expected = message.bulk && message.finished() && !was_finished;
    assert_eq!(
        unpublished, expected,
        "step {step}: unpublished by the settle of {}",
        message.id
    );
}

fn run_redrive(harness: &mut Harness, model: &mut Model, tenant: usize, scope: &RedriveScope, fired: &[Fired]) {
    let step = model.step;
    let own_messages: Vec<usize> = (0..model.messages.len())
        .filter(|&at| model.messages[at].tenant == tenant)
        .collect();
    let (message, destination) = match scope {
        RedriveScope::Message(pick) if !own_messages.is_empty() => {
            (Some(own_messages[pick % own_messages.len()]), None)
        }
        RedriveScope::Destination(pick) => {
            let names = destinations_of(tenant);
            (None, Some(names[pick % names.len()]))
        }
        _ => (None, None),
    };
    let body = CommandBody::Redrive(Redrive {
        message: message.map(|at| model.messages[at].position),
        destination: destination.map(own),
    });
    let verdict = apply(harness, model, TENANTS[tenant], body, fired);
    let Verdict::Applied(Effect::Redriven { position, count, more }) = verdict else {
        panic!("step {step}: redrive: {verdict:?}")
    };
    let mut chosen = 0;
    let mut destinations = BTreeSet::new();
    for at in own_messages {
        if message.is_some_and(|message| message != at) {
            continue;
        }
        for delivery in &mut model.messages[at].deliveries {
            let matches = destination.is_none_or(|destination| delivery.destination == destination);
            if delivery.state == DeliveryState::Parked && matches {
                delivery.state = DeliveryState::Pending;
                delivery.attempts = 0;
                delivery.holder = None;
                delivery.life.push(Life::Redriven);
                destinations.insert(delivery.destination);
                chosen += 1;
            }
        }
    }
    assert_eq!((count, more), (chosen, false), "step {step}: redriven");
    for destination in destinations {
        model.prune(tenant, destination, position);
    }
}

// ------------------------------------------------------------------ checks

/// Compares the state's queries with the model.
fn check(state: &State, model: &Model) {
    let step = model.step;
    for tenant in 0..TENANTS.len() {
        let view = state.view(TENANTS[tenant]).expect("customers exist");
        let other = state.view(TENANTS[1 - tenant]).expect("customers exist");
        for message in model.messages.iter().filter(|message| message.tenant == tenant) {
            let deliveries = view.deliveries(message.position).expect("the message is the tenant's");
            check_deliveries(message, &deliveries, step);
            assert!(
                other.deliveries(message.position).is_none(),
                "step {step}: {} seen from the other tenant",
                message.id
            );
            let info = view
                .back_message(message.position)
                .expect("the message is the tenant's");
            assert_eq!(
                (info.destinations as usize, info.open as usize, info.finished),
                (message.deliveries.len(), message.open(), message.finished()),
                "step {step}: (destinations, open, finished) of {}",
                message.id
            );
        }
        let mut total = 0;
        for &destination in destinations_of(tenant) {
            let live = model.live(tenant, destination);
            total += live;
            assert_eq!(
                view.spool_depth(&own(destination)),
                Some(live),
                "step {step}: {} depth of {destination}",
                TENANTS[tenant]
            );
            assert!(
                live <= model.capacity[tenant] as usize || model.over_capacity.contains(&(tenant, destination)),
                "step {step}: {destination} holds {live} live deliveries of {}, over its capacity {}",
                TENANTS[tenant],
                model.capacity[tenant]
            );
        }
        assert_eq!(view.spool_depth(&hosted("agg")), Some(0), "step {step}: depth of agg");
        assert_eq!(
            view.spool_depth_total(),
            total as u64,
            "step {step}: {} total depth",
            TENANTS[tenant]
        );
        for &Caller {
            namespace, id: caller, ..
        } in CALLERS.iter().filter(|caller| caller.namespace == Some(tenant))
        {
            assert_eq!(
                view.has_ready(&reference(namespace, caller)),
                Some(model.has_ready(tenant, caller)),
                "step {step}: has_ready of {caller} in {}",
                TENANTS[tenant]
            );
        }
        check_parked(&view.parked(usize::MAX), model, tenant);
        let publisher = view.pruned_responses(&hosted(PUBLISHER)).expect("the publisher exists");
        let mut responses: Vec<(u64, u64, String)> = publisher
            .iter()
            .map(|response| (response.at, response.message, response.destination.id.clone()))
            .collect();
        responses.sort();
        let mut expected: Vec<(u64, u64, String)> = model.responses[tenant]
            .iter()
            .map(|&(at, message, destination)| (at, message, destination.to_string()))
            .collect();
        expected.sort();
        assert_eq!(
            responses, expected,
            "step {step}: pruned responses of {}",
            TENANTS[tenant]
        );
        let open_bulk: Vec<u64> = view.open_bulk_messages().iter().map(|info| info.position).collect();
        let expected: Vec<u64> = (model.messages.iter())
            .filter(|message| message.tenant == tenant && message.bulk && !message.finished())
            .map(|message| message.position)
            .collect();
        assert_eq!(
            open_bulk, expected,
            "step {step}: open bulk messages of {}",
            TENANTS[tenant]
        );
    }
    let landlord = state.view(LANDLORD).expect("the landlord exists");
    let anything = (0..TENANTS.len()).any(|tenant| model.has_ready(tenant, "agg"));
    assert_eq!(
        landlord.has_ready(&own("agg")),
        Some(anything),
        "step {step}: has_ready of agg for the landlord"
    );
    let spools = state.spools();
    let deliveries: usize = model.messages.iter().map(|message| message.deliveries.len()).sum();
    assert_eq!(
        (spools.message_count(), spools.delivery_count()),
        (model.messages.len(), deliveries),
        "step {step}: messages and deliveries spooled"
    );
}

/// One state per (message, destination), and that state the model's.
fn check_deliveries(message: &ModelMessage, deliveries: &[DeliveryInfo], step: usize) {
    let mut by_destination = BTreeMap::new();
    for delivery in deliveries {
        assert!(!delivery.destination.hosted, "step {step}: {delivery:?}");
        let before = by_destination.insert(delivery.destination.id.as_str(), delivery);
        assert!(
            before.is_none(),
            "step {step}: two deliveries of {} to one destination",
            message.id
        );
    }
    let names: Vec<&str> = by_destination.keys().copied().collect();
    let expected: BTreeSet<&str> = message.deliveries.iter().map(|delivery| delivery.destination).collect();
    assert_eq!(
        names,
        expected.into_iter().collect::<Vec<_>>(),
        "step {step}: destinations of {}",
        message.id
    );
    for delivery in &message.deliveries {
        let got = by_destination[delivery.destination];
        let due_ms =
            matches!(delivery.state, DeliveryState::Delivered | DeliveryState::Waiting).then_some(delivery.due_ms);
        let expected = DeliveryInfo {
            destination: own(delivery.destination),
            state: delivery.state,
            attempts: delivery.attempts,
            holder: delivery.holder.map(|holder| reference(Some(message.tenant), holder)),
            due_ms,
            nacked: delivery.nacked,
        };
        assert_eq!(
            got, &expected,
            "step {step}: delivery of {} (precedence {}, expiry {:?}, max attempts {}) to {}",
            message.id, message.precedence, message.expiry_ms, message.max_attempts, delivery.destination
        );
    }
}

/// The parked deliveries, oldest message first.
fn check_parked(parked: &[(u64, ComponentRef)], model: &Model, tenant: usize) {
    let step = model.step;
    let positions: Vec<u64> = parked.iter().map(|(position, _)| *position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] <= pair[1]),
        "step {step}: parked not oldest first: {parked:?}"
    );
    let mut got: Vec<(u64, String)> = parked
        .iter()
        .map(|(position, destination)| (*position, destination.id.clone()))
        .collect();
    got.sort();
    let mut expected: Vec<(u64, String)> = Vec::new();
    for message in model.messages.iter().filter(|message| message.tenant == tenant) {
        let parked = message
            .deliveries
            .iter()
            .filter(|delivery| delivery.state == DeliveryState::Parked);
        expected.extend(parked.map(|delivery| (message.position, delivery.destination.to_string())));
    }
    expected.sort();
    assert_eq!(got, expected, "step {step}: parked deliveries of {}", TENANTS[tenant]);
}

/// No delivery lost or duplicated: in every life of a delivery (from its
/// publish or a redrive on), it was handed out to one caller per attempt,
/// attempts 1, 2, …; never after an ack; and acked at most once.
fn check_lives(model: &Model) {
    for message in &model.messages {
        for delivery in &message.deliveries {
            let what = format!("{} to {}: {:?}", message.id, delivery.destination, delivery.life);
            let mut attempt = 0;
            let mut acked = false;
            for event in &delivery.life {
                match *event {
                    Life::Handed { attempt: handed, .. } => {
                        assert!(!acked, "handed out after its ack: {what}");
                        attempt += 1;
                        assert_eq!(handed, attempt, "attempts out of order: {what}");
                    }
                    Life::Acked => {
                        assert!(!acked, "acked twice: {what}");
                        acked = true;
                    }
                    Life::Redriven => {
                        assert!(!acked, "redriven after its ack: {what}");
                        attempt = 0;
                    }
                }
            }
            assert_eq!(acked, delivery.state == DeliveryState::Acked, "ack and state: {what}");
        }
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(256))]

    #[test]
    fn spools_match_a_list_of_deliveries(steps in vec(step(), 1..=STEPS_MAX)) {
        run(&steps);
    }

    #[test]
    fn retry_delays_double_up_to_the_longest(steps in retry_rounds()) {
        run(&steps);
    }
}

// ------------------------------------------------------------------ found

/// A message published to one of acme's destinations at the current time.
fn publish_step(destination: usize, expiry_after_ms: Option<u64>, max_attempts: u16) -> Step {
    let publish = PublishOp {
        tenant: ACME,
        destinations: vec![destination],
        group: false,
        mailer: false,
        precedence: 0,
        expiry_after_ms,
        persistent: false,
        max_attempts,
        body_bytes: 1,
        bulk: false,
        reuse_id: false,
    };
    Step {
        advance: Advance::By(0),
        op: Op::Publish(publish),
    }
}

fn poll_step(advance_ms: u64, caller: usize, visibility_ms: u64) -> Step {
    let poll = Op::Poll {
        caller,
        max_deliveries: 1,
        max_bytes: 1 << 20,
        visibility_ms,
    };
    Step {
        advance: Advance::By(advance_ms),
        op: poll,
    }
}

/// A lowered capacity applies as a spool grows: nothing is pruned by the
/// configure itself; the next publish to the destination prunes it down to
/// the capacity (the lowest first, the publisher told).
#[test]
fn a_lowered_capacity_prunes_when_the_spool_next_grows() {
    let proxy = 0;
    assert_eq!(ACME_DESTINATIONS[proxy], "proxy");
    run(&[
        publish_step(proxy, None, 1),
        publish_step(proxy, None, 1),
        Step {
            advance: Advance::By(0),
            op: Op::ConfigureSpool { capacity: 1 },
        },
        publish_step(proxy, None, 1),
    ]);
}

/// A visibility timer from a delivery's life before a redrive is stale: it
/// must not act on the same attempt number of the next life, ahead of the
/// timers due before that attempt's own timeout.
#[test]
fn a_timer_from_before_a_redrive_does_nothing() {
    let proxy2 = 3;
    assert_eq!(ACME_DESTINATIONS[proxy2], "proxy2");
    let (proxy2_caller, acme_agg_caller) = (caller_at(Some(ACME), "proxy2"), caller_at(Some(ACME), "agg"));
    let nack = SettleOp {
        pick: 0,
        caller: None,
        also: Vec::new(),
        foreign: false,
        wrong_tenant: false,
        settlement: Settlement::Nack(NackReason::Rejected),
    };
    run(&[
        // At 10, one attempt allowed; expires at 1200.
        publish_step(proxy2, Some(1190), 1),
        // Attempt 1, visibility timeout at 1010.
        poll_step(0, proxy2_caller, 1000),
        // Out of attempts: parked; then re-driven with fresh attempts.
        Step {
            advance: Advance::By(0),
            op: Op::Settle(nack),
        },
        Step {
            advance: Advance::By(0),
            op: Op::Redrive {
                tenant: ACME,
                scope: RedriveScope::All,
            },
        },
        // At 500: attempt 1 again, visibility timeout at 1500.
        poll_step(490, acme_agg_caller, 1000),
        // At 1500: the expiry (1200) comes first and expires it while it
        // is delivered; its own timeout (1500) then has nothing to do.
        // Only "expired" is reported, not "parked" first.
        Step {
            advance: Advance::By(1000),
            op: Op::Tick,
        },
    ]);
}
