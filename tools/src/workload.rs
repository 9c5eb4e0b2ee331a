//! The command mix of `farmlog bench state`: a seeded, reproducible stream
//! of commands shaped like a farm's traffic.
//!
//! First the setup: the landlord's hosted chain (application server →
//! applications MLM → [`AGGREGATION_MLMS`] aggregation MLMs), then per
//! customer its registration, groups, proxies below one of the hosted
//! aggregation MLMs, integration modules below the proxies and support
//! instances below those (one in [`REDUNDANT_EVERY`] behind two modules on
//! different proxies), management-id mappings, group memberships and (for
//! the first customers) a client session. Each customer also has a fleet:
//! the proxy group [`FLEET_GROUP`] of all its proxies, the traffic proxies
//! plus back-channel-only ones, 2–20 proxies for most customers, 100–300
//! for one in [`MEDIUM_FLEET_EVERY`] and [`FLEET_PROXIES_LARGE`] for one in
//! [`LARGE_FLEET_EVERY`]; and one customer in [`SMALL_SPOOL_EVERY`]
//! configures a small spool capacity, so that its spools prune.
//!
//! Then the steady state, drawn by weight ([`Mix`]): mostly heartbeats,
//! data messages, alarms raised and cleared, and stream appends with and
//! without expected versions and idempotency keys (some in client sessions,
//! some retried); the back-channel (publishes to one destination, to the
//! fleet group or to lists of up to 64, expiring and bulk ones; polls by
//! proxies, some carrying a heartbeat or a bulk request, and by the
//! aggregation MLMs for every customer below them; acks and nacks of what
//! the polls handed out; redrives of parked deliveries; spool capacity
//! changes; the grant, denial and completion of upstream bulk transfers);
//! and a little of every other family.
//!
//! The generator keeps a model of what it registered, which alarms are
//! open and each stream's version, and it applies every command it makes
//! to its own [`State`] (one command per record, as a client sees each
//! reply before it sends the next command), so that it settles exactly
//! what the polls handed out and steps each transfer from the phase it is
//! in. So nearly every command applies; the rejections it makes are
//! deliberate (a wrong expected version, one in [`WRONG_VERSION_EVERY`]
//! expected-version appends), and [`MixReport`] counts every verdict by
//! family. Some handouts are never settled and some polls ask for short
//! visibility timeouts, some publishes allow few attempts or expire soon,
//! and a few integration modules are silent (never heard from), so
//! deliveries time out, park and expire and liveness transitions fire as
//! log time passes. Log time advances by 0–2 ms per command.
//!
//! Invariants: the same shape and seed give the same commands, in the same
//! order, with the same timestamps (within one build of `rand`); the
//! model's verdicts are the ones a fold of the log gives (apply does not
//! depend on how commands are packed into records).

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use farmlog_engine::kinds::COMMAND_BATCH;
use farmlog_engine::state::command::*;
use farmlog_engine::state::outcome::{Handout, StoredUpstream, TransferPhase};
use farmlog_engine::state::testing;
use farmlog_engine::state::{
    encode, BatchBuilder, Command, CommandBody, CommandError, Effect, EncodedCommand, Outcome, State, Verdict,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::replay::variant_name;
use crate::state_view::aligned_copy;

/// Log time of the first command: 2023-11-14, in ms since the epoch.
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// Most customers one run may register.
pub const CUSTOMERS_MAX: usize = 100_000;
/// One support instance in this many has a second parent.
const REDUNDANT_EVERY: usize = 8;
/// One integration module in this many never sends anything.
const SILENT_EVERY: usize = 50;
/// One expected-version append in this many expects a wrong version.
const WRONG_VERSION_EVERY: u32 = 20;
/// Largest body of a data message, and of a stream event.
const DATA_BODY_BYTES_MAX: usize = 512;
const STREAM_BODY_PAD_BYTES_MAX: usize = 96;
/// The alarm ids each support instance may raise (at most 8: a bit each).
const ALARM_IDS: [&str; 4] = ["disk-full", "cpu-high", "link-down", "fan-failed"];
const DATA_CLASSES: [(&str, &str); 4] = [
    ("performance", "cpu"),
    ("performance", "disk"),
    ("inventory", "software"),
    ("configuration", "patch"),
];
/// Stream families: the stream's name prefix and its events' type.
const STREAM_FAMILIES: [(&str, &str); 3] = [
    ("orders", "order-placed"),
    ("invoices", "invoice-issued"),
    ("tickets", "ticket-updated"),
];
const SEVERITIES: [Severity; 5] = [
    Severity::Critical,
    Severity::Major,
    Severity::Minor,
    Severity::Warning,
    Severity::Info,
];
/// The landlord's hosted components. Customer n's proxies hang below
/// aggregation MLM `agg-mlm-{n % AGGREGATION_MLMS}`.
const APPLICATION_SERVER: &str = "appserver";
const APPLICATIONS_MLM: &str = "apps-mlm";
const AGGREGATION_MLMS: usize = 4;
const PROXY_GROUP: &str = "proxies";
const SECURITY_GROUP: &str = "everything";
/// Every proxy of a customer: the back-channel's multicast group.
const FLEET_GROUP: &str = "fleet";
/// Customer n has a fleet of [`FLEET_PROXIES_LARGE`] proxies when
/// `n % LARGE_FLEET_EVERY == LARGE_FLEET_EVERY / 2`, of
/// [`FLEET_PROXIES_MEDIUM`] when `n % MEDIUM_FLEET_EVERY == 2`, and of
/// [`FLEET_PROXIES_SMALL`] otherwise (never fewer than its traffic proxies).
const LARGE_FLEET_EVERY: usize = 25;
const MEDIUM_FLEET_EVERY: usize = 5;
const FLEET_PROXIES_LARGE: usize = 1000;
const FLEET_PROXIES_MEDIUM: RangeInclusive<usize> = 100..=300;
const FLEET_PROXIES_SMALL: RangeInclusive<usize> = 2..=20;
/// Customer n configures a spool capacity in [`SMALL_SPOOL_CAPACITY`] when
/// `n % SMALL_SPOOL_EVERY == 1`: its busy destinations prune.
const SMALL_SPOOL_EVERY: usize = 10;
const SMALL_SPOOL_CAPACITY: RangeInclusive<u32> = 4..=16;
/// Publishes of one burst to one destination of a small-spool customer,
/// sent back to back: more than its capacity, so that its spool prunes.
const BURST_PUBLISHES: RangeInclusive<usize> = 4..=20;
/// Most destinations of a multicast that names them one by one.
const LISTED_DESTINATIONS_MAX: usize = 64;
/// Largest inline back-channel body: a small JSON document, padded.
const BACK_BODY_PAD_BYTES_MAX: usize = 192;
const BACK_CLASSES: [(&str, &str); 3] = [
    ("configuration", "change"),
    ("software", "update"),
    ("command", "restart"),
];
/// How soon an expiring back-channel message expires, in log time.
const EXPIRY_SOON_MS: RangeInclusive<u64> = 1000..=20_000;
/// The visibility timeout a poll asks for when it names one.
const PROXY_VISIBILITY_MS: RangeInclusive<u64> = 1000..=10_000;
const AGGREGATION_VISIBILITY_MS: RangeInclusive<u64> = 5000..=30_000;
/// Of the handouts a settle step takes, per thousand: acked, nacked; the
/// rest are dropped, never settled, and time out.
const ACK_PER_MILLE: u32 = 850;
const NACK_PER_MILLE: u32 = 100;
/// Handouts waiting for a settle past which a poll step settles instead:
/// a caller acks what it got before it polls again.
const HANDOUTS_BACKLOG_MAX: usize = 64;
/// Most handouts waiting for a settle, and most upstream bulk transfers
/// the generator drives at once; past these, the oldest are forgotten
/// (their deliveries time out, their transfers stay where they are).
const HANDOUTS_QUEUED_MAX: usize = 1 << 16;
const TRANSFERS_QUEUED_MAX: usize = 1 << 14;
const _: () = assert!(HANDOUTS_BACKLOG_MAX < HANDOUTS_QUEUED_MAX);
/// Queued transfers one transfer step looks at for one it can take.
const TRANSFERS_LOOKED_AT_MAX: usize = 4;
/// A denied transfer is requested again after this much log time.
const TRANSFER_RETRY_MS: RangeInclusive<u64> = 1000..=10_000;
/// Candidates a proxy poll tries for one with something ready.
const POLL_CANDIDATES_MAX: usize = 4;

/// How big the farm is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub customers: usize,
    pub proxies_per_customer: usize,
    pub modules_per_proxy: usize,
    pub instances_per_module: usize,
    pub streams_per_customer: usize,
    /// Customers (the first ones) that open a client session in the setup
    /// and use it for some appends.
    pub sessions: usize,
    /// Fleets, spool settings and the back-channel part of the mix; without
    /// it, the mix is the upstream part alone, renormalized.
    pub back_channel: bool,
}

impl Shape {
    pub fn with_customers(customers: usize) -> Self {
        Self {
            customers,
            proxies_per_customer: 2,
            modules_per_proxy: 4,
            instances_per_module: 8,
            streams_per_customer: 16,
            sessions: 16,
            back_channel: true,
        }
    }
}

/// The steady-state mix, in parts per thousand: the upstream steps, then
/// from [`Mix::BACK_CHANNEL_FROM`] on the back-channel ones.
struct Mix;

impl Mix {
    const TABLE: [(Step, u32); 26] = [
        (Step::Heartbeat, 270),
        (Step::Data, 160),
        (Step::Alarm, 100),
        (Step::Event, 25),
        (Step::Response, 10),
        (Step::BulkRequest, 5),
        (Step::BulkResponse, 5),
        (Step::Resend, 10),
        (Step::Append, 200),
        (Step::RetryAppend, 12),
        (Step::Tick, 5),
        (Step::SetEnabled, 4),
        (Step::Churn, 4),
        (Step::GroupChange, 4),
        (Step::MapManagementId, 4),
        (Step::PublishSingle, 30),
        (Step::PublishMulticast, 12),
        (Step::PublishExpiring, 6),
        (Step::PublishBulk, 4),
        (Step::PollProxy, 40),
        (Step::PollAggregation, 10),
        (Step::Settle, 64),
        (Step::PublishBurst, 1),
        (Step::Redrive, 2),
        (Step::ConfigureSpool, 1),
        (Step::Transfer, 12),
    ];
    const BACK_CHANNEL_FROM: usize = 15;
    const TOTAL: u32 = Self::weight_before(Self::TABLE.len());
    /// The weight of the upstream steps: a draw below it is one of them.
    const UPSTREAM_TOTAL: u32 = Self::weight_before(Self::BACK_CHANNEL_FROM);

    const fn weight_before(end: usize) -> u32 {
        let mut total = 0;
        let mut at = 0;
        while at < end {
            total += Self::TABLE[at].1;
            at += 1;
        }
        total
    }
}

const _: () = assert!(Mix::TOTAL == 1000);
const _: () = assert!(matches!(Mix::TABLE[Mix::BACK_CHANNEL_FROM].0, Step::PublishSingle));
const _: () = assert!(ALARM_IDS.len() <= 8);
const _: () = assert!(FLEET_PROXIES_LARGE <= PUBLISH_DESTINATIONS_MAX);
const _: () = assert!(LISTED_DESTINATIONS_MAX <= PUBLISH_DESTINATIONS_MAX);
const _: () = assert!(ACK_PER_MILLE + NACK_PER_MILLE <= 1000);
const _: () = assert!(*SMALL_SPOOL_CAPACITY.end() <= SPOOL_CAPACITY_MAX && *SMALL_SPOOL_CAPACITY.start() >= 1);
const _: () =
    assert!(*PROXY_VISIBILITY_MS.start() >= VISIBILITY_MS_MIN && *PROXY_VISIBILITY_MS.end() <= VISIBILITY_MS_MAX);
const _: () = assert!(
    *AGGREGATION_VISIBILITY_MS.start() >= VISIBILITY_MS_MIN && *AGGREGATION_VISIBILITY_MS.end() <= VISIBILITY_MS_MAX
);
const _: () = assert!(*TRANSFER_RETRY_MS.end() <= TRANSFER_RETRY_MS_MAX);

#[derive(Debug, Clone, Copy)]
enum Step {
    Heartbeat,
    Data,
    Alarm,
    Event,
    Response,
    BulkRequest,
    BulkResponse,
    Resend,
    Append,
    RetryAppend,
    Tick,
    SetEnabled,
    Churn,
    GroupChange,
    MapManagementId,
    PublishSingle,
    PublishMulticast,
    PublishExpiring,
    PublishBulk,
    PublishBurst,
    PollProxy,
    PollAggregation,
    Settle,
    Redrive,
    ConfigureSpool,
    Transfer,
}

struct Customer {
    name: String,
    principal: String,
    proxies: Vec<Proxy>,
    modules: Vec<Module>,
    instances: Vec<Instance>,
    /// Modules that send traffic (not silent).
    active_modules: Vec<usize>,
    streams: Vec<Stream>,
    /// Every proxy's id, the traffic proxies first: the members of
    /// [`FLEET_GROUP`].
    fleet: Vec<String>,
    /// The hosted aggregation MLM its proxies hang below.
    aggregation: String,
    /// It configures a capacity in [`SMALL_SPOOL_CAPACITY`].
    small_spool: bool,
}

struct Proxy {
    id: String,
    in_group: bool,
    forwarding: bool,
}

struct Module {
    id: String,
    proxy: usize,
    /// Support instances whose first parent this is.
    instances: Vec<usize>,
}

struct Instance {
    id: String,
    parents: Vec<usize>,
    registered: bool,
    enabled: bool,
    /// Bit i: alarm `ALARM_IDS[i]` is open.
    open_alarms: u8,
}

struct Stream {
    name: String,
    /// The last event's version; None before the first.
    version: Option<u64>,
}

/// A poll's handout of one message, waiting for the caller to settle it.
struct Handed {
    customer: usize,
    /// The caller, as the customer's namespace names it.
    caller: ComponentRef,
    message: u64,
    destinations: Vec<ComponentRef>,
}

/// An upstream bulk transfer the generator drives through its phases.
struct Transfer {
    customer: usize,
    request: String,
    /// The source of the bulk request, in the customer's namespace: it
    /// marks the data transferred.
    requester: ComponentRef,
    /// The hops the request passed (a proxy, the aggregation MLM): any may
    /// deny it.
    hops: Vec<ComponentRef>,
}

/// The seeded command generator: [`Workload::next_encoded`] gives the next
/// command, endlessly.
pub struct Workload {
    rng: SmallRng,
    clock_ms: u64,
    customers: Vec<Customer>,
    /// Commands to send before drawing from the mix again: the setup,
    /// then what is left of a burst.
    queued: VecDeque<Command>,
    /// Next sequence number of the session of each of the first
    /// `shape.sessions` customers. A session belongs to the tenant and
    /// principal that opened it; customer n opens the (n+1)-th session, so
    /// its client id is n + 1, as a fresh state hands them out.
    sequences: Vec<u64>,
    next_message: u64,
    next_key: u64,
    last_message: Option<Command>,
    last_keyed_append: Option<Command>,
    /// Customers with a deregistered support instance, for churn.
    deregistered: Vec<(usize, usize)>,
    next_back_message: u64,
    /// Handouts not settled yet, oldest first.
    handed: VecDeque<Handed>,
    /// Upstream bulk transfers not transferred yet, in turn.
    transfers: VecDeque<Transfer>,
    /// Every command so far, applied one to a record.
    model: State,
    model_index: u64,
    report: MixReport,
    back_channel: bool,
}

impl Workload {
    /// Builds the farm's model and queues its setup commands. The state
    /// the commands go to must be fresh (session ids are assumed from 1).
    pub fn new(shape: Shape, seed: u64) -> Self {
        assert!((1..=CUSTOMERS_MAX).contains(&shape.customers), "checked by the caller");
        assert!(shape.proxies_per_customer >= 1 && shape.modules_per_proxy >= 1);
        assert!(shape.instances_per_module >= 1 && shape.streams_per_customer >= 1);
        let mut workload = Self {
            rng: SmallRng::seed_from_u64(seed),
            clock_ms: EPOCH_MS,
            customers: Vec::with_capacity(shape.customers),
            queued: VecDeque::new(),
            sequences: vec![1; shape.sessions.min(shape.customers)],
            next_message: 0,
            next_key: 0,
            last_message: None,
            last_keyed_append: None,
            deregistered: Vec::new(),
            next_back_message: 0,
            handed: VecDeque::new(),
            transfers: VecDeque::new(),
            model: State::new(),
            model_index: 0,
            report: MixReport::default(),
            back_channel: shape.back_channel,
        };
        workload.queue_landlord();
        for number in 0..shape.customers {
            workload.queue_customer(&shape, number);
        }
        workload
    }

    /// Commands the setup takes before the steady state begins (asked
    /// before the first command is taken).
    pub fn setup_len(&self) -> usize {
        self.queued.len()
    }

    /// What the commands so far did, by family, as the model applied them.
    pub fn report(&self) -> &MixReport {
        &self.report
    }

    /// The next command, encoded, once the model has applied it; or the
    /// command and why it does not encode (the model is then unchanged).
    pub fn next_encoded(&mut self) -> Result<EncodedCommand, Box<(Command, CommandError)>> {
        self.clock_ms += self.rng.gen_range(0..=2);
        let command = match self.queued.pop_front() {
            Some(mut command) => {
                command.proposed_at_ms = self.clock_ms;
                command
            }
            None => self.step(),
        };
        let encoded = match encode(&command) {
            Ok(encoded) => encoded,
            Err(error) => return Err(Box::new((command, error))),
        };
        let began = Instant::now();
        let mut batch = BatchBuilder::new();
        batch
            .push(encoded.clone())
            .expect("one encoded command fits an empty batch");
        self.model_index += 1;
        let payload = aligned_copy(&batch.finish());
        let mut outcomes = self
            .model
            .apply(self.model_index, COMMAND_BATCH, &payload)
            .expect("a batch of one encoded command applies");
        self.report.model_apply += began.elapsed();
        let outcome = outcomes.pop().expect("one outcome per command");
        self.observe(&command, &outcome);
        Ok(encoded)
    }

    fn landlord(&self, body: CommandBody) -> Command {
        let mut command = testing::command(LANDLORD, self.clock_ms, body);
        command.principal = "operator".to_owned();
        command
    }

    fn queue_landlord(&mut self) {
        use ComponentKind::*;
        let bodies = [
            testing::component(APPLICATION_SERVER, ApplicationServer, vec![]),
            testing::component(
                APPLICATIONS_MLM,
                ApplicationsMlm,
                vec![testing::own(APPLICATION_SERVER)],
            ),
            testing::define_group("mlms", GroupKind::Mlm),
            testing::group_member("mlms", testing::own(APPLICATIONS_MLM), true),
        ];
        let aggregation = (0..AGGREGATION_MLMS).flat_map(|number| {
            let id = aggregation_mlm(number);
            [
                testing::component(&id, AggregationMlm, vec![testing::own(APPLICATIONS_MLM)]),
                testing::group_member("mlms", testing::own(&id), true),
            ]
        });
        let bodies: Vec<CommandBody> = bodies.into_iter().chain(aggregation).collect();
        for body in bodies {
            let command = self.landlord(body);
            self.queued.push_back(command);
        }
    }

    fn queue_customer(&mut self, shape: &Shape, number: usize) {
        let fleet = if number % LARGE_FLEET_EVERY == LARGE_FLEET_EVERY / 2 {
            FLEET_PROXIES_LARGE
        } else if number % MEDIUM_FLEET_EVERY == 2 {
            self.rng.gen_range(FLEET_PROXIES_MEDIUM)
        } else {
            self.rng.gen_range(FLEET_PROXIES_SMALL)
        };
        let customer = build_customer(shape, number, fleet);
        let register = self.landlord(testing::customer(&customer.name));
        self.queued.push_back(register);
        let mut bodies = vec![
            testing::define_group(PROXY_GROUP, GroupKind::Proxy),
            testing::define_group(SECURITY_GROUP, GroupKind::Security),
        ];
        for proxy in &customer.proxies {
            let parent = testing::hosted(&customer.aggregation);
            bodies.push(testing::component(&proxy.id, ComponentKind::Proxy, vec![parent]));
            bodies.push(testing::group_member(PROXY_GROUP, testing::own(&proxy.id), true));
            bodies.push(testing::group_member(SECURITY_GROUP, testing::own(&proxy.id), true));
        }
        for module in &customer.modules {
            let parent = testing::own(&customer.proxies[module.proxy].id);
            bodies.push(testing::component(
                &module.id,
                ComponentKind::IntegrationModule,
                vec![parent],
            ));
        }
        for instance in &customer.instances {
            bodies.push(register_instance(&customer, instance));
        }
        for module in &customer.modules {
            let first = &customer.instances[module.instances[0]];
            let proxy = &customer.proxies[module.proxy].id;
            let management_id = format!("mgmt-{}", first.id);
            bodies.push(testing::map_management_id(proxy, &management_id, Some(&first.id)));
        }
        if shape.back_channel {
            bodies.push(testing::define_group(FLEET_GROUP, GroupKind::Proxy));
        }
        for (at, proxy) in customer.fleet.iter().enumerate().filter(|_| shape.back_channel) {
            if at >= customer.proxies.len() {
                let parent = testing::hosted(&customer.aggregation);
                bodies.push(testing::component(proxy, ComponentKind::Proxy, vec![parent]));
            }
            bodies.push(testing::group_member(FLEET_GROUP, testing::own(proxy), true));
        }
        if customer.small_spool && shape.back_channel {
            let capacity = self.rng.gen_range(SMALL_SPOOL_CAPACITY);
            bodies.push(CommandBody::ConfigureSpool(ConfigureSpool { capacity }));
        }
        if number < shape.sessions {
            bodies.push(CommandBody::OpenSession);
        }
        for body in bodies {
            let command = self.customer_command(&customer, body);
            self.queued.push_back(command);
        }
        self.customers.push(customer);
    }

    fn customer_command(&self, customer: &Customer, body: CommandBody) -> Command {
        Command {
            schema_version: SCHEMA_VERSION,
            tenant: customer.name.clone(),
            principal: customer.principal.clone(),
            proposed_at_ms: self.clock_ms,
            session: None,
            encryption: None,
            body,
        }
    }

    fn step(&mut self) -> Command {
        let total = match self.back_channel {
            true => Mix::TOTAL,
            false => Mix::UPSTREAM_TOTAL,
        };
        let mut draw = self.rng.gen_range(0..total);
        let step = Mix::TABLE
            .iter()
            .find(|(_, weight)| {
                let hit = draw < *weight;
                draw = draw.saturating_sub(*weight);
                hit
            })
            .map_or(Step::Heartbeat, |(step, _)| *step);
        let at = self.rng.gen_range(0..self.customers.len());
        match step {
            Step::Heartbeat => self.heartbeat(at),
            Step::Data => self.data(at),
            Step::Alarm => self.alarm(at),
            Step::Event => self.event(at),
            Step::Response => self.response(at),
            Step::BulkRequest => self.bulk_request(at),
            Step::BulkResponse => self.bulk_response(at),
            Step::Resend => self.resend(at),
            Step::Append => self.append(at),
            Step::RetryAppend => self.retry_append(at),
            Step::Tick => self.landlord(CommandBody::Tick),
            Step::SetEnabled => self.set_enabled(at),
            Step::Churn => self.churn(at),
            Step::GroupChange => self.group_change(at),
            Step::MapManagementId => self.map_management_id(at),
            Step::PublishSingle => self.publish_single(at),
            Step::PublishMulticast => self.publish_multicast(at),
            Step::PublishExpiring => self.publish_expiring(at),
            Step::PublishBulk => self.publish_bulk(at),
            Step::PublishBurst => self.publish_burst(),
            Step::PollProxy => self.poll_proxy(at),
            Step::PollAggregation => self.poll_aggregation(),
            Step::Settle => self.settle(at),
            Step::Redrive => self.redrive(at),
            Step::ConfigureSpool => self.configure_spool(at),
            Step::Transfer => self.transfer_step(at),
        }
    }

    // ------------------------------------------------------ messages

    /// A module that sends traffic, or None when the customer has none.
    fn active_module(&mut self, at: usize) -> Option<usize> {
        let active = &self.customers[at].active_modules;
        (!active.is_empty()).then(|| active[self.rng.gen_range(0..active.len())])
    }

    fn next_message_id(&mut self) -> String {
        self.next_message += 1;
        format!("m{:x}", self.next_message)
    }

    /// An upstream message from a module (or its proxy), routed through
    /// the proxy and the hosted aggregation MLM.
    fn message(
        &mut self,
        at: usize,
        module: usize,
        from_proxy: bool,
        class: (&str, &str),
        content: Content,
    ) -> Command {
        let message_id = self.next_message_id();
        let now_ms = self.clock_ms;
        let precedence = self.rng.gen_range(0..4);
        let persistence = self.rng.gen_bool(0.25);
        let expires = self.rng.gen_bool(0.5);
        let customer = &self.customers[at];
        let module = &customer.modules[module];
        let proxy = &customer.proxies[module.proxy].id;
        let (source, kind) = match from_proxy {
            true => (proxy, ComponentKind::Proxy),
            false => (&module.id, ComponentKind::IntegrationModule),
        };
        let CommandBody::Upstream(mut message) =
            testing::message(&customer.name, &message_id, source, kind, class, content)
        else {
            unreachable!("testing::message builds an upstream message")
        };
        message.header.created_at_ms = now_ms;
        message.qos = Qos {
            precedence,
            expiry_ms: expires.then_some(now_ms + 24 * 3600 * 1000),
            persistence,
        };
        message.routing = route(source, proxy, from_proxy, &customer.aggregation, now_ms);
        let command = self.customer_command(customer, CommandBody::Upstream(message));
        self.last_message = Some(command.clone());
        command
    }

    fn heartbeat(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let from_proxy = self.rng.gen_bool(0.3);
        let customer = &self.customers[at];
        let seen: Vec<String> = match from_proxy {
            true => {
                let proxy = customer.modules[module].proxy;
                let modules = customer.active_modules.iter().map(|&at| &customer.modules[at]);
                let below = modules.filter(|candidate| candidate.proxy == proxy);
                below.map(|module| module.id.clone()).collect()
            }
            false => {
                let instances = customer.modules[module]
                    .instances
                    .iter()
                    .map(|&at| &customer.instances[at]);
                let registered = instances.filter(|instance| instance.registered);
                registered.map(|instance| instance.id.clone()).collect()
            }
        };
        let content = Content::Heartbeat(Heartbeat { components: seen });
        self.message(at, module, from_proxy, (HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS), content)
    }

    fn data(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let class = DATA_CLASSES[self.rng.gen_range(0..DATA_CLASSES.len())];
        let mut body = vec![0u8; self.rng.gen_range(16..=DATA_BODY_BYTES_MAX)];
        self.rng.fill(&mut body[..]);
        let content = Content::Data(Data {
            mime_type: "application/octet-stream".to_owned(),
            size: body.len() as u64,
            encoding: None,
            body,
        });
        let from_proxy = self.rng.gen_bool(0.3);
        self.message(at, module, from_proxy, class, content)
    }

    /// A registered support instance below `module`, if any.
    fn instance_below(&mut self, at: usize, module: usize) -> Option<usize> {
        let customer = &self.customers[at];
        let instances = &customer.modules[module].instances;
        let start = self.rng.gen_range(0..instances.len());
        (0..instances.len())
            .map(|offset| instances[(start + offset) % instances.len()])
            .find(|&instance| customer.instances[instance].registered)
    }

    fn alarm(&mut self, at: usize) -> Command {
        let target = self
            .active_module(at)
            .and_then(|module| Some((module, self.instance_below(at, module)?)));
        let Some((module, instance)) = target else {
            return self.data(at);
        };
        let which = self.rng.gen_range(0..ALARM_IDS.len());
        let bit = 1u8 << which;
        let open = self.customers[at].instances[instance].open_alarms & bit != 0;
        // An open alarm is cleared more often than raised again; a closed
        // one is raised, and now and then cleared though it is not open.
        let raise = match open {
            true => self.rng.gen_bool(0.4),
            false => self.rng.gen_bool(0.9),
        };
        let severity = SEVERITIES[self.rng.gen_range(0..SEVERITIES.len())];
        let entry = &mut self.customers[at].instances[instance];
        entry.open_alarms = if raise {
            entry.open_alarms | bit
        } else {
            entry.open_alarms & !bit
        };
        let state = if raise { AlarmState::Raised } else { AlarmState::Cleared };
        let mut content = testing::alarm(&entry.id, ALARM_IDS[which], state);
        if let Content::Alarm(alarm) = &mut content {
            alarm.severity = severity;
            alarm.data = format!("threshold exceeded on {}", entry.id).into_bytes();
        }
        self.message(at, module, false, ("alarm", ALARM_IDS[which]), content)
    }

    fn event(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let instance = self
            .instance_below(at, module)
            .map(|instance| self.customers[at].instances[instance].id.clone());
        let content = Content::Event(Event {
            support_instance: instance,
            severity: Severity::Info,
            text: "configuration changed".to_owned(),
            data: Vec::new(),
        });
        self.message(at, module, false, ("event", "configuration"), content)
    }

    /// A recent message id, for replies to refer to.
    fn earlier_message_id(&mut self) -> String {
        let back = self.rng.gen_range(0..64.min(self.next_message.max(1)));
        format!("m{:x}", self.next_message.saturating_sub(back).max(1))
    }

    fn response(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let throttled = self.rng.gen_bool(0.1);
        let content = Content::Response(MessageResponse {
            in_reply_to: self.earlier_message_id(),
            status: if throttled {
                ResponseStatus::Throttled
            } else {
                ResponseStatus::Ok
            },
            error: throttled.then(|| "queue full, retry later".to_owned()),
        });
        self.message(at, module, false, ("response", "command"), content)
    }

    fn bulk_request(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let content = Content::BulkRequest(BulkRequest {
            size: self.rng.gen_range(1 << 20..1 << 30),
            description: "diagnostic bundle".to_owned(),
        });
        self.message(at, module, false, ("bulk", "request"), content)
    }

    fn bulk_response(&mut self, at: usize) -> Command {
        let Some(module) = self.active_module(at) else {
            return self.landlord(CommandBody::Tick);
        };
        let granted = self.rng.gen_bool(0.8);
        let request = self.earlier_message_id();
        let content = Content::BulkResponse(BulkResponse {
            url: granted.then(|| format!("https://bulk.example/{request}")),
            reason: (!granted).then(|| "bulk transfers are paused".to_owned()),
            request_message_id: request,
            granted,
        });
        self.message(at, module, true, ("bulk", "response"), content)
    }

    /// The last message again, as a component resends one it got no
    /// acknowledgement for: a duplicate, not stored twice.
    fn resend(&mut self, at: usize) -> Command {
        match self.last_message.clone() {
            Some(mut command) => {
                command.proposed_at_ms = self.clock_ms;
                command
            }
            None => self.heartbeat(at),
        }
    }

    // ------------------------------------------------------- streams

    fn append(&mut self, at: usize) -> Command {
        let stream = self.rng.gen_range(0..self.customers[at].streams.len());
        let current = self.customers[at].streams[stream].version;
        let expected = match (current, self.rng.gen_range(0..100)) {
            (None, 0..50) => ExpectedVersion::NoStream,
            (Some(version), 0..45) => match self.rng.gen_ratio(1, WRONG_VERSION_EVERY) {
                true => ExpectedVersion::Exact(version + 7),
                false => ExpectedVersion::Exact(version),
            },
            _ => ExpectedVersion::Any,
        };
        let keyed = self.rng.gen_bool(0.3);
        let key = keyed.then(|| {
            self.next_key += 1;
            format!("k{:x}", self.next_key)
        });
        let session = (at < self.sequences.len() && self.rng.gen_bool(0.1)).then(|| {
            let sequence = self.sequences[at];
            self.sequences[at] += 1;
            SessionRef {
                client_id: at as u64 + 1,
                sequence,
            }
        });
        let amount = self.rng.gen_range(1..100_000);
        let event_type = STREAM_FAMILIES[stream % STREAM_FAMILIES.len()].1;
        let pad = "x".repeat(self.rng.gen_range(0..=STREAM_BODY_PAD_BYTES_MAX));
        let customer = &mut self.customers[at];
        let entry = &mut customer.streams[stream];
        let body = format!(r#"{{"type":"{event_type}","amount":{amount},"note":"{pad}"}}"#);
        let CommandBody::StreamAppend(mut append) =
            testing::append(&entry.name, expected, key.as_deref(), body.as_bytes())
        else {
            unreachable!("testing::append builds an append")
        };
        append.event_type = event_type.to_owned();
        let applies = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exact(version) => current == Some(version),
        };
        if applies {
            entry.version = Some(current.map_or(0, |version| version + 1));
        }
        let mut command = self.customer_command(&self.customers[at], CommandBody::StreamAppend(append));
        command.session = session;
        if keyed && applies {
            self.last_keyed_append = Some(command.clone());
        }
        command
    }

    /// The last keyed append again, as a client retries after a timeout:
    /// the session (or the idempotency key) makes it a duplicate.
    fn retry_append(&mut self, at: usize) -> Command {
        match self.last_keyed_append.clone() {
            Some(mut command) => {
                command.proposed_at_ms = self.clock_ms;
                command
            }
            None => self.append(at),
        }
    }

    // ------------------------------------------------------ topology

    fn set_enabled(&mut self, at: usize) -> Command {
        let customer = &mut self.customers[at];
        let body = match self.rng.gen_bool(0.5) {
            true => {
                let which = self.rng.gen_range(0..customer.proxies.len());
                let proxy = &mut customer.proxies[which];
                proxy.forwarding = !proxy.forwarding;
                testing::set_enabled(&proxy.id, Switch::ProxyForwarding, proxy.forwarding)
            }
            false => {
                let registered: Vec<usize> = (0..customer.instances.len())
                    .filter(|&at| customer.instances[at].registered)
                    .collect();
                if registered.is_empty() {
                    return self.landlord(CommandBody::Tick);
                }
                let which = registered[self.rng.gen_range(0..registered.len())];
                let instance = &mut customer.instances[which];
                instance.enabled = !instance.enabled;
                testing::set_enabled(&instance.id, Switch::SupportInstance, instance.enabled)
            }
        };
        self.customer_command(&self.customers[at], body)
    }

    /// Deregisters a support instance (it moved), or registers one that
    /// was deregistered again.
    fn churn(&mut self, at: usize) -> Command {
        if let Some(position) = self.deregistered.iter().position(|&(customer, _)| customer == at) {
            let (_, instance) = self.deregistered.swap_remove(position);
            let customer = &mut self.customers[at];
            customer.instances[instance].registered = true;
            let body = register_instance(customer, &customer.instances[instance]);
            return self.customer_command(&self.customers[at], body);
        }
        let customer = &mut self.customers[at];
        let instance = self.rng.gen_range(0..customer.instances.len());
        if !customer.instances[instance].registered {
            return self.landlord(CommandBody::Tick);
        }
        customer.instances[instance].registered = false;
        self.deregistered.push((at, instance));
        let body = testing::deregister(&customer.instances[instance].id);
        self.customer_command(&self.customers[at], body)
    }

    fn group_change(&mut self, at: usize) -> Command {
        let customer = &mut self.customers[at];
        let which = self.rng.gen_range(0..customer.proxies.len());
        let proxy = &mut customer.proxies[which];
        proxy.in_group = !proxy.in_group;
        let body = testing::group_member(PROXY_GROUP, testing::own(&proxy.id), proxy.in_group);
        self.customer_command(&self.customers[at], body)
    }

    fn map_management_id(&mut self, at: usize) -> Command {
        let module = self.rng.gen_range(0..self.customers[at].modules.len());
        let Some(instance) = self.instance_below(at, module) else {
            return self.landlord(CommandBody::Tick);
        };
        let customer = &self.customers[at];
        let proxy = &customer.proxies[customer.modules[module].proxy].id;
        let id = &customer.instances[instance].id;
        let management_id = format!("10.{}.{}.{}", at % 256, module % 256, instance % 256);
        let body = testing::map_management_id(proxy, &management_id, Some(id));
        self.customer_command(customer, body)
    }
}

// ------------------------------------------------------ back-channel

impl Workload {
    fn next_back_message_id(&mut self) -> String {
        self.next_back_message += 1;
        format!("b{:x}", self.next_back_message)
    }

    /// A random proxy of the customer's fleet.
    fn fleet_proxy(&mut self, at: usize) -> ComponentRef {
        let fleet = &self.customers[at].fleet;
        testing::own(&fleet[self.rng.gen_range(0..fleet.len())])
    }

    /// A registered support instance (half the time) or a fleet proxy.
    fn back_destination(&mut self, at: usize) -> ComponentRef {
        if self.rng.gen_bool(0.5) {
            let module = self.rng.gen_range(0..self.customers[at].modules.len());
            if let Some(instance) = self.instance_below(at, module) {
                return testing::own(&self.customers[at].instances[instance].id);
            }
        }
        self.fleet_proxy(at)
    }

    /// A back-channel message from the applications MLM (or, one in five,
    /// the application server) with a small JSON body; one in five allows
    /// only 2–3 delivery attempts.
    fn back_message(&mut self, destinations: Vec<ComponentRef>, groups: Vec<String>) -> Publish {
        let message_id = self.next_back_message_id();
        let now_ms = self.clock_ms;
        let source = match self.rng.gen_ratio(1, 5) {
            true => testing::hosted(APPLICATION_SERVER),
            false => testing::hosted(APPLICATIONS_MLM),
        };
        let (class, subclass) = BACK_CLASSES[self.rng.gen_range(0..BACK_CLASSES.len())];
        let pad = "x".repeat(self.rng.gen_range(0..=BACK_BODY_PAD_BYTES_MAX));
        let value = self.rng.gen_range(0..1_000_000);
        let body = format!(r#"{{"message":"{message_id}","setting":"{subclass}","value":{value},"note":"{pad}"}}"#);
        let max_attempts = match self.rng.gen_ratio(1, 5) {
            true => self.rng.gen_range(2..=3),
            false => 0,
        };
        Publish {
            header: BackHeader {
                message_id,
                source: source.clone(),
                class: class.to_owned(),
                subclass: subclass.to_owned(),
                created_at_ms: now_ms,
            },
            qos: Qos {
                precedence: self.rng.gen_range(0..4),
                expiry_ms: None,
                persistence: self.rng.gen_bool(0.25),
            },
            routing: vec![RouteHop {
                component: source,
                at_ms: now_ms,
            }],
            payload: Payload::Inline {
                mime_type: "application/json".to_owned(),
                body: body.into_bytes(),
            },
            destinations,
            groups,
            max_attempts,
        }
    }

    fn publish_command(&self, at: usize, publish: Publish) -> Command {
        self.customer_command(&self.customers[at], CommandBody::Publish(publish))
    }

    fn publish_single(&mut self, at: usize) -> Command {
        let destination = self.back_destination(at);
        let publish = self.back_message(vec![destination], Vec::new());
        self.publish_command(at, publish)
    }

    /// To the fleet group (half the time), or to a list of 2–64 fleet
    /// proxies, mostly short.
    fn publish_multicast(&mut self, at: usize) -> Command {
        if self.rng.gen_bool(0.5) {
            let publish = self.back_message(Vec::new(), vec![FLEET_GROUP.to_owned()]);
            return self.publish_command(at, publish);
        }
        let fleet = self.customers[at].fleet.len();
        let wanted = match self.rng.gen_range(0..10) {
            0..6 => self.rng.gen_range(2..=4),
            6..9 => self.rng.gen_range(5..=16),
            _ => self.rng.gen_range(17..=LISTED_DESTINATIONS_MAX),
        };
        let chosen = rand::seq::index::sample(&mut self.rng, fleet, wanted.min(fleet));
        let fleet = &self.customers[at].fleet;
        let destinations = chosen.iter().map(|proxy| testing::own(&fleet[proxy])).collect();
        let publish = self.back_message(destinations, Vec::new());
        self.publish_command(at, publish)
    }

    /// To 1–3 destinations, expiring 1–20 s of log time from now.
    fn publish_expiring(&mut self, at: usize) -> Command {
        let count = self.rng.gen_range(1..=3);
        let destinations = (0..count).map(|_| self.back_destination(at)).collect();
        let mut publish = self.back_message(destinations, Vec::new());
        publish.qos.expiry_ms = Some(self.clock_ms + self.rng.gen_range(EXPIRY_SOON_MS));
        self.publish_command(at, publish)
    }

    /// Bulk data for 1–8 fleet proxies to fetch; half of them expire soon.
    fn publish_bulk(&mut self, at: usize) -> Command {
        let count = self.rng.gen_range(1..=8);
        let destinations = (0..count).map(|_| self.fleet_proxy(at)).collect();
        let mut publish = self.back_message(destinations, Vec::new());
        publish.payload = Payload::Bulk {
            url: format!("https://apps.example/bulk/{}", publish.header.message_id),
            size: self.rng.gen_range(1 << 20..1 << 30),
        };
        if self.rng.gen_bool(0.5) {
            publish.qos.expiry_ms = Some(self.clock_ms + self.rng.gen_range(EXPIRY_SOON_MS));
        }
        self.publish_command(at, publish)
    }

    /// A burst of publishes to one fleet proxy of a small-spool customer:
    /// the first now, the rest queued to follow back to back.
    fn publish_burst(&mut self) -> Command {
        let small = self.customers.len().div_ceil(SMALL_SPOOL_EVERY);
        let at = (self.rng.gen_range(0..small) * SMALL_SPOOL_EVERY + 1).min(self.customers.len() - 1);
        let destination = self.fleet_proxy(at);
        let count = self.rng.gen_range(BURST_PUBLISHES);
        let mut burst = (0..count).map(|_| {
            let publish = self.back_message(vec![destination.clone()], Vec::new());
            self.publish_command(at, publish)
        });
        let first = burst.next().expect("a burst has publishes");
        let rest: Vec<Command> = burst.collect();
        self.queued.extend(rest);
        first
    }

    /// A poll by one of the customer's proxies, one with something ready
    /// if one of the few tried has; a quarter carry a heartbeat of the
    /// proxy, a few a bulk request of its own, and a poll that would find
    /// nothing always carries a heartbeat (a service never proposes an
    /// empty poll that carries nothing).
    fn poll_proxy(&mut self, at: usize) -> Command {
        if self.handed.len() >= HANDOUTS_BACKLOG_MAX {
            return self.settle(at);
        }
        let mut caller = self.fleet_proxy(at);
        let mut ready = false;
        for tried in 1..=POLL_CANDIDATES_MAX {
            let view = self.model.view(&self.customers[at].name);
            ready = view.and_then(|view| view.has_ready(&caller)) == Some(true);
            if ready || tried == POLL_CANDIDATES_MAX {
                break;
            }
            caller = self.fleet_proxy(at);
        }
        let visibility_ms = match self.rng.gen_bool(0.5) {
            true => self.rng.gen_range(PROXY_VISIBILITY_MS),
            false => 0,
        };
        let draw = self.rng.gen_range(0..100);
        let message = if (25..28).contains(&draw) {
            let content = Content::BulkRequest(BulkRequest {
                size: self.rng.gen_range(1 << 20..1 << 30),
                description: "proxy log bundle".to_owned(),
            });
            Some(self.proxy_message(at, &caller.id, ("bulk", "request"), content))
        } else if draw < 25 || !ready {
            let content = Content::Heartbeat(Heartbeat {
                components: vec![caller.id.clone()],
            });
            Some(self.proxy_message(at, &caller.id, (HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS), content))
        } else {
            None
        };
        let poll = Poll {
            caller,
            max_deliveries: self.rng.gen_range(1..=32),
            max_bytes: self.rng.gen_range(1 << 16..=1 << 20),
            visibility_ms,
            message,
        };
        self.customer_command(&self.customers[at], CommandBody::Poll(poll))
    }

    /// An upstream message from a proxy, routed through its aggregation MLM.
    fn proxy_message(&mut self, at: usize, proxy: &str, class: (&str, &str), content: Content) -> UpstreamMessage {
        let message_id = self.next_message_id();
        let now_ms = self.clock_ms;
        let customer = &self.customers[at];
        let body = testing::message(&customer.name, &message_id, proxy, ComponentKind::Proxy, class, content);
        let CommandBody::Upstream(mut message) = body else {
            unreachable!("testing::message builds an upstream message")
        };
        message.header.created_at_ms = now_ms;
        message.routing = route(proxy, proxy, true, &customer.aggregation, now_ms);
        message
    }

    /// A poll by a hosted aggregation MLM with something ready, in the
    /// landlord's namespace: it collects for every customer below it, in
    /// turn. A proxy's poll when none of them has anything.
    fn poll_aggregation(&mut self) -> Command {
        if self.handed.len() >= HANDOUTS_BACKLOG_MAX {
            let at = self.rng.gen_range(0..self.customers.len());
            return self.settle(at);
        }
        let first = self.rng.gen_range(0..AGGREGATION_MLMS);
        let ready = (0..AGGREGATION_MLMS)
            .map(|offset| testing::own(&aggregation_mlm((first + offset) % AGGREGATION_MLMS)))
            .find(|caller| {
                let view = self.model.view(LANDLORD);
                view.and_then(|view| view.has_ready(caller)) == Some(true)
            });
        let Some(caller) = ready else {
            let at = self.rng.gen_range(0..self.customers.len());
            return self.poll_proxy(at);
        };
        let visibility_ms = match self.rng.gen_bool(0.5) {
            true => self.rng.gen_range(AGGREGATION_VISIBILITY_MS),
            false => 0,
        };
        let poll = Poll {
            caller,
            max_deliveries: self.rng.gen_range(64..=256),
            max_bytes: self.rng.gen_range(1 << 20..=4 << 20),
            visibility_ms,
            message: None,
        };
        self.landlord(CommandBody::Poll(poll))
    }

    /// Acks or nacks the oldest handout (dropping some, which then time
    /// out); a proxy poll when nothing waits.
    fn settle(&mut self, at: usize) -> Command {
        while let Some(handed) = self.handed.pop_front() {
            let draw = self.rng.gen_range(0..1000);
            let settlement = if draw < ACK_PER_MILLE {
                Settlement::Ack
            } else if draw < ACK_PER_MILLE + NACK_PER_MILLE {
                let reasons = [NackReason::Rejected, NackReason::Throttled, NackReason::ReceptionFailed];
                Settlement::Nack(reasons[self.rng.gen_range(0..reasons.len())])
            } else {
                self.report.handouts_dropped += 1;
                continue;
            };
            let settle = Settle {
                caller: handed.caller,
                message: handed.message,
                destinations: handed.destinations,
                settlement,
            };
            return self.customer_command(&self.customers[handed.customer], CommandBody::Settle(settle));
        }
        self.poll_proxy(at)
    }

    /// Re-drives a customer's parked deliveries (one message's, or all);
    /// an aggregation MLM's poll when the customers tried have none.
    fn redrive(&mut self, at: usize) -> Command {
        for attempt in 0..POLL_CANDIDATES_MAX {
            let customer = match attempt {
                0 => at,
                _ => self.rng.gen_range(0..self.customers.len()),
            };
            let parked = self
                .model
                .view(&self.customers[customer].name)
                .and_then(|view| view.parked(1).pop());
            let Some((message, _)) = parked else {
                continue;
            };
            let redrive = Redrive {
                message: self.rng.gen_bool(0.5).then_some(message),
                destination: None,
            };
            return self.customer_command(&self.customers[customer], CommandBody::Redrive(redrive));
        }
        self.poll_aggregation()
    }

    fn configure_spool(&mut self, at: usize) -> Command {
        let capacity = match self.customers[at].small_spool {
            true => self.rng.gen_range(SMALL_SPOOL_CAPACITY),
            false => SPOOL_CAPACITY_DEFAULT,
        };
        let body = CommandBody::ConfigureSpool(ConfigureSpool { capacity });
        self.customer_command(&self.customers[at], body)
    }

    /// The next step of a queued upstream bulk transfer, from the phase
    /// the model has it in: a requested one is granted (or, one in four,
    /// denied by a hop on its path), a granted one transferred. A single
    /// publish when none of the transfers looked at can move.
    fn transfer_step(&mut self, at: usize) -> Command {
        for _ in 0..TRANSFERS_LOOKED_AT_MAX.min(self.transfers.len()) {
            let transfer = self.transfers.pop_front().expect("counted");
            let customer = &self.customers[transfer.customer];
            let phase = self
                .model
                .view(&customer.name)
                .and_then(|view| view.transfer(&transfer.request))
                .map(|info| info.phase);
            let (hop, action) = match phase {
                Some(TransferPhase::Requested) if self.rng.gen_ratio(1, 4) => {
                    let hop = transfer.hops[self.rng.gen_range(0..transfer.hops.len())].clone();
                    let deny = TransferAction::Deny {
                        reason: "bulk transfers are paused".to_owned(),
                        retry_after_ms: self.rng.gen_range(TRANSFER_RETRY_MS),
                    };
                    (hop, deny)
                }
                Some(TransferPhase::Requested) => {
                    let url = format!("https://apps.example/upload/{}", transfer.request);
                    (testing::hosted(APPLICATIONS_MLM), TransferAction::Grant { url })
                }
                Some(TransferPhase::Granted) => (transfer.requester.clone(), TransferAction::Transferred),
                // Waiting for its retry time.
                Some(TransferPhase::Denied) => {
                    self.transfers.push_back(transfer);
                    continue;
                }
                Some(TransferPhase::Transferred) | None => continue,
            };
            // Once transferred, the generator is done with it.
            let last = matches!(action, TransferAction::Transferred);
            let step = TransferStep {
                request: transfer.request.clone(),
                hop,
                action,
            };
            let command = self.customer_command(customer, CommandBody::Transfer(step));
            if !last {
                self.transfers.push_back(transfer);
            }
            return command;
        }
        self.publish_single(at)
    }

    // ------------------------------------------------------ outcomes

    /// Counts the command's verdict and learns what the back-channel steps
    /// need from it: handouts to settle, transfers to drive.
    fn observe(&mut self, command: &Command, outcome: &Outcome) {
        let family = family_index(&command.body);
        let count = &mut self.report.families[family];
        count.commands += 1;
        self.report.fired += outcome.fired.len() as u64;
        let effect = match &outcome.verdict {
            Verdict::Applied(effect) => effect,
            Verdict::Rejected(rejection) => {
                count.rejected += 1;
                let kind = (CommandBody::FAMILIES[family], variant_name(rejection));
                *self.report.rejections.entry(kind).or_default() += 1;
                return;
            }
        };
        count.applied += 1;
        let back = &mut self.report.back_channel;
        match (&command.body, effect) {
            (
                CommandBody::Publish(_),
                Effect::Published {
                    destinations, pruned, ..
                },
            ) => {
                back.deliveries_published += u64::from(*destinations);
                back.pruned += u64::from(*pruned);
            }
            (CommandBody::Poll(poll), Effect::Polled { handed, message, .. }) => {
                self.observe_poll(&command.tenant, poll, handed, message.as_ref());
            }
            (CommandBody::Upstream(message), Effect::MessageStored { .. }) => {
                self.observe_bulk_request(&command.tenant, message);
            }
            (
                CommandBody::Settle(_),
                Effect::Settled {
                    acked,
                    respooled,
                    parked,
                    unchanged,
                    ..
                },
            ) => {
                back.acked += u64::from(*acked);
                back.respooled += u64::from(*respooled);
                back.parked += u64::from(*parked);
                back.unchanged += u64::from(*unchanged);
            }
            (CommandBody::Redrive(_), Effect::Redriven { count, .. }) => back.redriven += u64::from(*count),
            (CommandBody::Transfer(step), _) => match step.action {
                TransferAction::Grant { .. } => back.transfers_granted += 1,
                TransferAction::Deny { .. } => back.transfers_denied += 1,
                TransferAction::Transferred => back.transfers_transferred += 1,
            },
            _ => {}
        }
    }

    /// Queues what a poll handed out, to be settled by the caller: a
    /// hosted MLM's poll in the landlord's namespace settles in each
    /// customer's, naming itself as hosted there.
    fn observe_poll(&mut self, tenant: &str, poll: &Poll, handed: &[Handout], message: Option<&StoredUpstream>) {
        let back = &mut self.report.back_channel;
        back.polls_empty += u64::from(handed.is_empty());
        back.handouts += handed.len() as u64;
        let deliveries = handed.iter().map(|handout| handout.destinations.len() as u64);
        back.deliveries_handed_out += deliveries.sum::<u64>();
        let caller = ComponentRef {
            hosted: tenant == LANDLORD || poll.caller.hosted,
            id: poll.caller.id.clone(),
        };
        for handout in handed {
            let Some(customer) = customer_number(&handout.tenant) else {
                continue;
            };
            if self.handed.len() == HANDOUTS_QUEUED_MAX {
                self.handed.pop_front();
                self.report.handouts_dropped += 1;
            }
            self.handed.push_back(Handed {
                customer,
                caller: caller.clone(),
                message: handout.message,
                destinations: handout.destinations.clone(),
            });
        }
        let stored = matches!(message, Some(StoredUpstream { duplicate: false, .. }));
        if let (Some(message), true) = (&poll.message, stored) {
            self.observe_bulk_request(tenant, message);
        }
    }

    /// A stored bulk request starts a transfer the generator drives.
    fn observe_bulk_request(&mut self, tenant: &str, message: &UpstreamMessage) {
        if !matches!(message.content, Content::BulkRequest(_)) {
            return;
        }
        let Some(customer) = customer_number(tenant) else {
            return;
        };
        self.report.back_channel.transfers_requested += 1;
        if self.transfers.len() == TRANSFERS_QUEUED_MAX {
            self.transfers.pop_front();
        }
        let requester = testing::own(&message.header.source);
        let hops = message.routing.iter().map(|hop| hop.component.clone());
        let hops: Vec<ComponentRef> = hops.filter(|hop| *hop != requester).collect();
        debug_assert!(!hops.is_empty(), "a message is routed through its aggregation MLM");
        self.transfers.push_back(Transfer {
            customer,
            request: message.header.message_id.clone(),
            requester,
            hops,
        });
    }
}

/// The number of customer `customer-NNNNN`.
fn customer_number(tenant: &str) -> Option<usize> {
    tenant.strip_prefix("customer-")?.parse().ok()
}

/// Commands, and how many applied, of one family.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FamilyCount {
    pub commands: u64,
    pub applied: u64,
    pub rejected: u64,
}

/// What the back-channel commands did, summed from their effects.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackChannelCount {
    /// Deliveries the publishes spooled (one per final destination).
    pub deliveries_published: u64,
    /// Deliveries pruned over a spool's capacity.
    pub pruned: u64,
    /// Polls that handed out nothing.
    pub polls_empty: u64,
    /// Message bodies handed out, and the deliveries they were for.
    pub handouts: u64,
    pub deliveries_handed_out: u64,
    pub acked: u64,
    pub respooled: u64,
    pub parked: u64,
    /// Named deliveries a settle found done already, or nacks of ones not
    /// handed out.
    pub unchanged: u64,
    pub redriven: u64,
    pub transfers_requested: u64,
    pub transfers_granted: u64,
    pub transfers_denied: u64,
    pub transfers_transferred: u64,
}

/// Every verdict the model saw, by family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixReport {
    /// Indexed like [`CommandBody::FAMILIES`].
    pub families: [FamilyCount; CommandBody::FAMILIES.len()],
    /// (family, rejection) → count.
    pub rejections: BTreeMap<(&'static str, String), u64>,
    /// Time-driven transitions the model's commands set off.
    pub fired: u64,
    pub back_channel: BackChannelCount,
    /// Handouts never settled: left to time out.
    pub handouts_dropped: u64,
    /// The time the model took to apply the commands (part of generating).
    pub model_apply: Duration,
}

impl Default for MixReport {
    fn default() -> Self {
        Self {
            families: [FamilyCount::default(); CommandBody::FAMILIES.len()],
            rejections: BTreeMap::new(),
            fired: 0,
            back_channel: BackChannelCount::default(),
            handouts_dropped: 0,
            model_apply: Duration::ZERO,
        }
    }
}

impl MixReport {
    pub fn total(&self) -> FamilyCount {
        self.families
            .iter()
            .fold(FamilyCount::default(), |sum, count| FamilyCount {
                commands: sum.commands + count.commands,
                applied: sum.applied + count.applied,
                rejected: sum.rejected + count.rejected,
            })
    }

    /// The families that occurred, in catalog order, with their counts.
    pub fn present(&self) -> impl Iterator<Item = (&'static str, &FamilyCount)> {
        let families = CommandBody::FAMILIES.iter().copied().zip(&self.families);
        families.filter(|(_, count)| count.commands > 0)
    }

    pub fn to_json(&self) -> Value {
        let families: serde_json::Map<String, Value> = self
            .present()
            .map(|(family, count)| {
                let value = json!({ "commands": count.commands, "applied": count.applied, "rejected": count.rejected });
                (family.to_owned(), value)
            })
            .collect();
        let rejections: Vec<Value> = self
            .rejections
            .iter()
            .map(|((family, kind), count)| json!({ "family": family, "rejection": kind, "count": count }))
            .collect();
        let total = self.total();
        let back = &self.back_channel;
        json!({
            "families": families,
            "rejections": rejections,
            "rejection_rate": total.rejected as f64 / total.commands.max(1) as f64,
            "fired_transitions": self.fired,
            "back_channel": {
                "deliveries_published": back.deliveries_published,
                "pruned": back.pruned,
                "polls_empty": back.polls_empty,
                "handouts": back.handouts,
                "deliveries_handed_out": back.deliveries_handed_out,
                "handouts_dropped": self.handouts_dropped,
                "acked": back.acked,
                "respooled": back.respooled,
                "parked": back.parked,
                "unchanged": back.unchanged,
                "redriven": back.redriven,
                "transfers_requested": back.transfers_requested,
                "transfers_granted": back.transfers_granted,
                "transfers_denied": back.transfers_denied,
                "transfers_transferred": back.transfers_transferred,
            },
            "model_apply_seconds": self.model_apply.as_secs_f64(),
        })
    }
}

/// The index in [`CommandBody::FAMILIES`] of a body's family.
/// Exhaustive, so that a new family must be placed.
fn family_index(body: &CommandBody) -> usize {
    match body {
        CommandBody::Tick => 0,
        CommandBody::OpenSession => 1,
        CommandBody::RegisterCustomer(_) => 2,
        CommandBody::RegisterComponent(_) => 3,
        CommandBody::SetEnabled(_) => 4,
        CommandBody::Deregister(_) => 5,
        CommandBody::MapManagementId(_) => 6,
        CommandBody::DefineGroup(_) => 7,
        CommandBody::ChangeGroupMember(_) => 8,
        CommandBody::Upstream(_) => 9,
        CommandBody::StreamAppend(_) => 10,
        CommandBody::Publish(_) => 11,
        CommandBody::Poll(_) => 12,
        CommandBody::Settle(_) => 13,
        CommandBody::Redrive(_) => 14,
        CommandBody::ConfigureSpool(_) => 15,
        CommandBody::Transfer(_) => 16,
        CommandBody::SetThrottle(_) => 17,
        CommandBody::ReportUsage(_) => 18,
    }
}

/// A customer's model: names, the tree, which modules are silent, its
/// fleet of `fleet` proxies (at least its traffic proxies).
fn build_customer(shape: &Shape, number: usize, fleet: usize) -> Customer {
    let name = format!("customer-{number:05}");
    let principal = format!("agent@{name}");
    let proxies: Vec<Proxy> = (0..shape.proxies_per_customer)
        .map(|proxy| Proxy {
            id: format!("proxy-{proxy}"),
            in_group: true,
            forwarding: true,
        })
        .collect();
    let mut modules = Vec::new();
    let mut instances = Vec::new();
    for proxy in 0..shape.proxies_per_customer {
        for module in 0..shape.modules_per_proxy {
            let module_at = modules.len();
            let mut below = Vec::new();
            for instance in 0..shape.instances_per_module {
                let instance_at = instances.len();
                let mut parents = vec![module_at];
                // Behind redundant proxies: the same module number on the
                // next proxy is the second parent.
                if shape.proxies_per_customer > 1 && instance_at % REDUNDANT_EVERY == REDUNDANT_EVERY - 1 {
                    let other = (proxy + 1) % shape.proxies_per_customer;
                    parents.push(other * shape.modules_per_proxy + module);
                }
                instances.push(Instance {
                    id: format!("si-{proxy}-{module}-{instance}"),
                    parents,
                    registered: true,
                    enabled: true,
                    open_alarms: 0,
                });
                below.push(instance_at);
            }
            modules.push(Module {
                id: format!("im-{proxy}-{module}"),
                proxy,
                instances: below,
            });
        }
    }
    let active_modules = (0..modules.len())
        .filter(|module| (number * modules.len() + module) % SILENT_EVERY != SILENT_EVERY - 1)
        .collect();
    let streams = (0..shape.streams_per_customer)
        .map(|stream| Stream {
            name: format!("{}-{stream}", STREAM_FAMILIES[stream % STREAM_FAMILIES.len()].0),
            version: None,
        })
        .collect();
    let fleet = (0..fleet.max(proxies.len()))
        .map(|at| match proxies.get(at) {
            Some(proxy) => proxy.id.clone(),
            None => format!("fleet-{at}"),
        })
        .collect();
    Customer {
        name,
        principal,
        proxies,
        modules,
        instances,
        active_modules,
        streams,
        fleet,
        aggregation: aggregation_mlm(number % AGGREGATION_MLMS),
        small_spool: number % SMALL_SPOOL_EVERY == 1,
    }
}

/// The id of hosted aggregation MLM `number`.
fn aggregation_mlm(number: usize) -> String {
    format!("agg-mlm-{number}")
}

fn register_instance(customer: &Customer, instance: &Instance) -> CommandBody {
    let parents = instance
        .parents
        .iter()
        .map(|&module| testing::own(&customer.modules[module].id))
        .collect();
    testing::component(&instance.id, ComponentKind::SupportInstance, parents)
}

/// The hops a message took: its source, the proxy (when the source is a
/// module), then the hosted aggregation MLM.
fn route(source: &str, proxy: &str, from_proxy: bool, aggregation: &str, now_ms: u64) -> Vec<RouteHop> {
    let mut hops = vec![RouteHop {
        component: testing::own(source),
        at_ms: now_ms,
    }];
    if !from_proxy {
        hops.push(RouteHop {
            component: testing::own(proxy),
            at_ms: now_ms,
        });
    }
    hops.push(RouteHop {
        component: testing::hosted(aggregation),
        at_ms: now_ms,
    });
    hops
}
