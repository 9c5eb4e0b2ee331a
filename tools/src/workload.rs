//! The command mix of `farmlog bench state`: a seeded, reproducible stream
//! of commands shaped like a farm's traffic.
//!
//! First the setup: the landlord's hosted chain (application server →
//! applications MLM → aggregation MLM), then per customer
//! its registration, groups, proxies below the hosted aggregation MLM,
//! integration modules below the proxies and support instances below those
//! (one in [`REDUNDANT_EVERY`] behind two modules on different proxies),
//! management-id mappings, group memberships and (for the first
//! customers) a client session. Then the steady state,
//! drawn by weight ([`Mix`]): mostly heartbeats, data messages, alarms
//! raised and cleared, and stream appends with and without expected
//! versions and idempotency keys (some in client sessions, some retried),
//! with a little of every other family.
//!
//! The generator keeps a model of what it registered, which alarms are
//! open and each stream's version, so that nearly every command applies;
//! the rejections it makes are deliberate (a wrong expected version, one in
//! [`WRONG_VERSION_EVERY`] expected-version appends). A few integration
//! modules are silent (never heard from), so liveness transitions fire as
//! log time passes. Log time advances by 0–2 ms per command.
//!
//! Invariant: the same shape and seed give the same commands, in the same
//! order, with the same timestamps (within one build of `rand`).

use std::collections::VecDeque;

use farmlog_engine::state::command::*;
use farmlog_engine::state::testing;
use farmlog_engine::state::{Command, CommandBody};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

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
/// The landlord's hosted components.
const APPLICATION_SERVER: &str = "appserver";
const APPLICATIONS_MLM: &str = "apps-mlm";
const AGGREGATION_MLM: &str = "agg-mlm";
const PROXY_GROUP: &str = "proxies";
const SECURITY_GROUP: &str = "everything";

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
        }
    }
}

/// The steady-state mix, in parts per thousand.
struct Mix;

impl Mix {
    const TABLE: [(Step, u32); 15] = [
        (Step::Heartbeat, 330),
        (Step::Data, 200),
        (Step::Alarm, 120),
        (Step::Event, 30),
        (Step::Response, 10),
        (Step::BulkRequest, 5),
        (Step::BulkResponse, 5),
        (Step::Resend, 10),
        (Step::Append, 250),
        (Step::RetryAppend, 15),
        (Step::Tick, 5),
        (Step::SetEnabled, 5),
        (Step::Churn, 5),
        (Step::GroupChange, 5),
        (Step::MapManagementId, 5),
    ];
    const TOTAL: u32 = {
        let mut total = 0;
        let mut at = 0;
        while at < Self::TABLE.len() {
            total += Self::TABLE[at].1;
            at += 1;
        }
        total
    };
}

const _: () = assert!(Mix::TOTAL == 1000);
const _: () = assert!(ALARM_IDS.len() <= 8);

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

/// The seeded command generator; an endless iterator.
pub struct Workload {
    rng: SmallRng,
    clock_ms: u64,
    customers: Vec<Customer>,
    setup: VecDeque<Command>,
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
            setup: VecDeque::new(),
            sequences: vec![1; shape.sessions.min(shape.customers)],
            next_message: 0,
            next_key: 0,
            last_message: None,
            last_keyed_append: None,
            deregistered: Vec::new(),
        };
        workload.queue_landlord();
        for number in 0..shape.customers {
            workload.queue_customer(&shape, number);
        }
        workload
    }

    /// Commands the setup takes before the steady state begins.
    pub fn setup_len(&self) -> usize {
        self.setup.len()
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
            testing::component(AGGREGATION_MLM, AggregationMlm, vec![testing::own(APPLICATIONS_MLM)]),
            testing::define_group("mlms", GroupKind::Mlm),
            testing::group_member("mlms", testing::own(APPLICATIONS_MLM), true),
            testing::group_member("mlms", testing::own(AGGREGATION_MLM), true),
        ];
        for body in bodies {
            let command = self.landlord(body);
            self.setup.push_back(command);
        }
    }

    fn queue_customer(&mut self, shape: &Shape, number: usize) {
        let customer = build_customer(shape, number);
        let register = self.landlord(testing::customer(&customer.name));
        self.setup.push_back(register);
        let mut bodies = vec![
            testing::define_group(PROXY_GROUP, GroupKind::Proxy),
            testing::define_group(SECURITY_GROUP, GroupKind::Security),
        ];
        for proxy in &customer.proxies {
            let parent = testing::hosted(AGGREGATION_MLM);
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
        if number < shape.sessions {
            bodies.push(CommandBody::OpenSession);
        }
        for body in bodies {
            let command = self.customer_command(&customer, body);
            self.setup.push_back(command);
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
        let mut draw = self.rng.gen_range(0..Mix::TOTAL);
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
        message.routing = route(source, proxy, from_proxy, now_ms);
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

impl Iterator for Workload {
    type Item = Command;

    fn next(&mut self) -> Option<Command> {
        self.clock_ms += self.rng.gen_range(0..=2);
        let command = match self.setup.pop_front() {
            Some(mut command) => {
                command.proposed_at_ms = self.clock_ms;
                command
            }
            None => self.step(),
        };
        Some(command)
    }
}

/// A customer's model: names, the tree, which modules are silent.
fn build_customer(shape: &Shape, number: usize) -> Customer {
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
    Customer {
        name,
        principal,
        proxies,
        modules,
        instances,
        active_modules,
        streams,
    }
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
fn route(source: &str, proxy: &str, from_proxy: bool, now_ms: u64) -> Vec<RouteHop> {
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
        component: testing::hosted(AGGREGATION_MLM),
        at_ms: now_ms,
    });
    hops
}
