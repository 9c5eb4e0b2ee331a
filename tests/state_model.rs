//! Model-based tests of the state machine (`farmlog_engine::state`).
//!
//! Random command sequences go through the real path (encode → batch →
//! `State::apply`, by `testing::Harness`), a few commands per record. Every
//! outcome is compared with what a small reference model predicts, and
//! after every record the state's queries are compared with the model:
//!
//! - streams: versions, expected-version checks, idempotency keys and their
//!   windows of log time, forward and backward reads, `read_all`, and tenant
//!   isolation (a `BTreeMap` of position lists);
//! - topology: accepted and rejected registrations and deregistrations, and
//!   `reachable_through` / `is_below` against a naive walk of a parent map;
//! - alarms: raise and clear against a map of open alarms;
//! - messages: dedupe by (id, source) inside the window, and every index
//!   (by id, customer, source, class) paged both ways;
//! - sessions: a retry returns the first verdict and applies nothing, for
//!   every family; numbers older than the kept window are refused.
//!
//! Each property runs a modest number of cases by default; set
//! `PROPTEST_CASES` for longer runs.

use std::collections::{BTreeMap, BTreeSet};

use farmlog_engine::state::command::{
    AlarmState, BulkRequest, BulkResponse, Command, CommandBody, ComponentKind, ComponentRef, Content, Deregister,
    Event, ExpectedVersion, GroupKind, Heartbeat, Idempotency, MessageResponse, ResponseStatus, Severity, StreamAppend,
    Switch, HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS, LANDLORD,
};
use farmlog_engine::state::messages::MESSAGE_DEDUPE_WINDOW_MS;
use farmlog_engine::state::outcome::{AlarmChange, Effect, Fired, Object, Rejection, Verdict};
use farmlog_engine::state::sessions::{SESSION_IDLE_MS, SESSION_OUTCOMES_MAX};
use farmlog_engine::state::streams::{StreamEvent, Streams};
use farmlog_engine::state::table::Slot;
use farmlog_engine::state::testing::{self, command, in_session, own, Harness};
use farmlog_engine::state::timers::TIMERS_FIRED_PER_COMMAND_MAX;
use farmlog_engine::state::{Direction, State};
use proptest::prelude::*;

use ComponentKind::*;

// ------------------------------------------------------------------ shared

/// How a command's proposer timestamp relates to the current log time.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// Proposed this many milliseconds after the current log time.
    Advance(u64),
    /// Proposed this many milliseconds before it (a slow proposer clock):
    /// log time does not go back.
    Stale(u64),
}

impl Clock {
    fn proposed_at(self, now_ms: u64) -> u64 {
        match self {
            Clock::Advance(ms) => now_ms + ms,
            Clock::Stale(ms) => now_ms.saturating_sub(ms),
        }
    }
}

/// Applies one record and compares every outcome's verdict with the
/// model's prediction.
fn apply_predicted(harness: &mut Harness, commands: &[Command], predicted: &[Verdict]) {
    let outcomes = harness.apply_batch(commands);
    assert_eq!(outcomes.len(), commands.len(), "one outcome per command");
    for (slot, ((outcome, expected), command)) in outcomes.iter().zip(predicted).zip(commands).enumerate() {
        assert_eq!(
            &outcome.verdict,
            expected,
            "slot {slot} of record {}: {command:?}",
            harness.state.last_applied()
        );
        assert!(!outcome.retried, "slot {slot}: retried outside a session");
    }
}

/// Applies a setup command that must succeed.
fn setup(harness: &mut Harness, command: Command) {
    let outcome = harness.apply(command.clone());
    assert!(outcome.is_applied(), "setup {command:?}: {outcome:?}");
}

/// The landlord's hosted tree: server ← apps ← agg.
fn hosted_tree(harness: &mut Harness) {
    setup(
        harness,
        command(LANDLORD, 0, testing::component("server", ApplicationServer, vec![])),
    );
    let apps = testing::component("apps", ApplicationsMlm, vec![own("server")]);
    setup(harness, command(LANDLORD, 0, apps));
    let agg = testing::component("agg", AggregationMlm, vec![own("apps")]);
    setup(harness, command(LANDLORD, 0, agg));
}

/// The reference page of an ascending list: positions from `from` on, or
/// at or below `from` newest first; at most `limit`.
fn model_page(list: &[u64], from: u64, direction: Direction, limit: usize) -> Vec<u64> {
    match direction {
        Direction::Forward => list.iter().copied().filter(|&at| at >= from).take(limit).collect(),
        Direction::Backward => list
            .iter()
            .rev()
            .copied()
            .filter(|&at| at <= from)
            .take(limit)
            .collect(),
    }
}

/// Checks a paged index against the ascending list it must hold: pages
/// from the ends and around the first, middle and last entries with
/// several limits, both ways, and complete walks page by page.
fn check_pages(what: &str, expected: &[u64], read: impl Fn(u64, Direction, usize) -> Vec<u64>) {
    let mut froms = vec![0, 1, u64::MAX - 1, u64::MAX];
    let probes = [expected.first(), expected.get(expected.len() / 2), expected.last()];
    for &at in probes.into_iter().flatten() {
        froms.extend([at - 1, at, at + 1]);
    }
    for from in froms {
        for limit in [0, 1, 2, usize::MAX] {
            for direction in [Direction::Forward, Direction::Backward] {
                assert_eq!(
                    read(from, direction, limit),
                    model_page(expected, from, direction, limit),
                    "{what}: page from {from}, {direction:?}, limit {limit}"
                );
            }
        }
    }
    for limit in [1, 3] {
        let mut walked = Vec::new();
        let mut from = Some(0);
        while let Some(start) = from {
            let page = read(start, Direction::Forward, limit);
            assert!(page.len() <= limit, "{what}: page longer than its limit");
            from = page.last().map(|&last| last + 1);
            walked.extend(page);
        }
        assert_eq!(walked, expected, "{what}: forward walk, pages of {limit}");
        let mut walked = Vec::new();
        let mut from = Some(u64::MAX);
        while let Some(start) = from {
            let page = read(start, Direction::Backward, limit);
            assert!(page.len() <= limit, "{what}: page longer than its limit");
            from = page.last().and_then(|&last| last.checked_sub(1));
            walked.extend(page);
        }
        walked.reverse();
        assert_eq!(walked, expected, "{what}: backward walk, pages of {limit}");
    }
}

// ----------------------------------------------------------------- streams

const STREAM_TENANTS: [&str; 4] = [LANDLORD, "acme", "globex", "ghost"];
/// The tenant that is never registered.
const GHOST: usize = 3;
const STREAM_NAMES: [&str; 3] = ["orders", "invoices", "audit"];
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// Small idempotency windows, so that log time often passes them.
const WINDOWS_MS: [u64; 4] = [1, 5, 20, 100];

/// The expected version, chosen against the model when the op runs.
#[derive(Clone, Copy, Debug)]
enum Expectation {
    Any,
    NoStream,
    /// Exact(the stream's current version), or Exact(0) with no stream.
    Current,
    /// Exact(current + delta): wrong unless clamped onto the right one.
    Off(i64),
    Exact(u64),
}

#[derive(Clone, Debug)]
struct AppendOp {
    tenant: usize,
    stream: usize,
    expected: Expectation,
    /// (key, window in ms)
    key: Option<(usize, u64)>,
    clock: Clock,
}

fn expectation() -> impl Strategy<Value = Expectation> {
    prop_oneof![
        3 => Just(Expectation::Any),
        2 => Just(Expectation::NoStream),
        3 => Just(Expectation::Current),
        1 => prop_oneof![Just(-2i64), Just(-1), Just(1), Just(2)].prop_map(Expectation::Off),
        1 => (0u64..6).prop_map(Expectation::Exact),
    ]
}

fn stream_clock() -> impl Strategy<Value = Clock> {
    prop_oneof![
        4 => Just(Clock::Advance(0)),
        4 => (1u64..10).prop_map(Clock::Advance),
        2 => (10u64..150).prop_map(Clock::Advance),
        1 => (1u64..50).prop_map(Clock::Stale),
    ]
}

fn append_op() -> impl Strategy<Value = AppendOp> {
    let tenant = prop_oneof![2 => Just(0usize), 4 => Just(1), 4 => Just(2), 1 => Just(GHOST)];
    let key = proptest::option::weighted(0.6, (0..KEYS.len(), proptest::sample::select(WINDOWS_MS.to_vec())));
    (tenant, 0..STREAM_NAMES.len(), expectation(), key, stream_clock()).prop_map(
        |(tenant, stream, expected, key, clock)| AppendOp {
            tenant,
            stream,
            expected,
            key,
            clock,
        },
    )
}

#[derive(Clone, Copy, Debug)]
struct KeptAppend {
    position: u64,
    version: u64,
    expires_at_ms: u64,
}

/// Streams as lists of positions per (tenant, name), and idempotency keys
/// per (tenant, key) with the log time their window closes.
#[derive(Default)]
struct StreamModel {
    now_ms: u64,
    last_position: u64,
    streams: BTreeMap<(usize, &'static str), Vec<u64>>,
    /// Per tenant, stream names in order of creation.
    created: BTreeMap<usize, Vec<&'static str>>,
    /// Per tenant, every stream event's position.
    all: BTreeMap<usize, Vec<u64>>,
    keys: BTreeMap<(usize, &'static str), KeptAppend>,
}

impl StreamModel {
    fn version(&self, tenant: usize, stream: &'static str) -> Option<u64> {
        let positions = self.streams.get(&(tenant, stream))?;
        Some(positions.len() as u64 - 1)
    }

    /// The command for `op` and the verdict the model predicts for it.
    fn step(&mut self, op: &AppendOp) -> (Command, Verdict) {
        let at = op.clock.proposed_at(self.now_ms);
        self.now_ms = self.now_ms.max(at);
        let stream = STREAM_NAMES[op.stream];
        let current = self.version(op.tenant, stream);
        let expected = match op.expected {
            Expectation::Any => ExpectedVersion::Any,
            Expectation::NoStream => ExpectedVersion::NoStream,
            Expectation::Current => ExpectedVersion::Exact(current.unwrap_or(0)),
            Expectation::Off(delta) => ExpectedVersion::Exact(current.unwrap_or(0).saturating_add_signed(delta)),
            Expectation::Exact(version) => ExpectedVersion::Exact(version),
        };
        let body = CommandBody::StreamAppend(StreamAppend {
            stream: stream.to_string(),
            expected,
            idempotency: op.key.map(|(key, window_ms)| Idempotency {
                key: KEYS[key].to_string(),
                window_ms,
            }),
            event_type: "test".to_string(),
            body: at.to_le_bytes().to_vec(),
        });
        let command = command(STREAM_TENANTS[op.tenant], at, body);
        let verdict = self.predict(op.tenant, stream, expected, op.key);
        (command, verdict)
    }

    fn predict(
        &mut self,
        tenant: usize,
        stream: &'static str,
        expected: ExpectedVersion,
        key: Option<(usize, u64)>,
    ) -> Verdict {
        if tenant == GHOST {
            return Verdict::Rejected(Rejection::TenantUnknown);
        }
        if let Some((key, _)) = key {
            let kept = self.keys.get(&(tenant, KEYS[key]));
            if let Some(kept) = kept.filter(|kept| kept.expires_at_ms > self.now_ms) {
                return Verdict::Applied(Effect::StreamDuplicate {
                    position: kept.position,
                    version: kept.version,
                });
            }
        }
        let current = self.version(tenant, stream);
        let expected_ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exact(version) => current == Some(version),
        };
        if !expected_ok {
            return Verdict::Rejected(Rejection::WrongExpectedVersion { current });
        }
        self.last_position += 1;
        let position = self.last_position;
        if current.is_none() {
            self.created.entry(tenant).or_default().push(stream);
        }
        let positions = self.streams.entry((tenant, stream)).or_default();
        positions.push(position);
        let version = positions.len() as u64 - 1;
        self.all.entry(tenant).or_default().push(position);
        if let Some((key, window_ms)) = key {
            let kept = KeptAppend {
                position,
                version,
                expires_at_ms: self.now_ms + window_ms,
            };
            self.keys.insert((tenant, KEYS[key]), kept);
        }
        Verdict::Applied(Effect::StreamAppended { position, version })
    }
}

/// The reference read of one stream.
fn model_read(positions: &[u64], from: u64, direction: Direction, limit: usize) -> Vec<StreamEvent> {
    let events = positions.iter().enumerate().map(|(version, &position)| StreamEvent {
        version: version as u64,
        position,
    });
    match direction {
        Direction::Forward => events.filter(|event| event.version >= from).take(limit).collect(),
        Direction::Backward => events.rev().filter(|event| event.version <= from).take(limit).collect(),
    }
}

fn check_stream_reads(streams: &Streams, tenant: Slot, name: &str, positions: Option<&Vec<u64>>) {
    let Some(positions) = positions else {
        for direction in [Direction::Forward, Direction::Backward] {
            assert_eq!(
                streams.read(tenant, name, 0, direction, 10),
                None,
                "{name} does not exist"
            );
            assert_eq!(streams.read(tenant, name, u64::MAX, direction, 10), None);
        }
        return;
    };
    let len = positions.len() as u64;
    for from in [0, 1, len / 2, len - 1, len, len + 1, u64::MAX] {
        for limit in [0, 1, 2, usize::MAX] {
            for direction in [Direction::Forward, Direction::Backward] {
                assert_eq!(
                    streams.read(tenant, name, from, direction, limit),
                    Some(model_read(positions, from, direction, limit)),
                    "read {name} from {from}, {direction:?}, limit {limit}"
                );
            }
        }
    }
}

fn check_streams(state: &State, model: &StreamModel) {
    assert_eq!(state.log_time_ms(), model.now_ms, "log time");
    assert_eq!(state.last_position(), model.last_position, "last position");
    let streams = state.streams();
    let events: usize = model.streams.values().map(Vec::len).sum();
    assert_eq!(streams.event_count(), events as u64, "event count");
    assert_eq!(streams.stream_count(), model.streams.len(), "stream count");
    let live_keys = model.keys.values().filter(|kept| kept.expires_at_ms > model.now_ms);
    assert_eq!(
        streams.kept_keys(),
        live_keys.count(),
        "idempotency keys kept: a closed window's key must be forgotten, an open one's kept"
    );
    assert!(state.tenant_slot(STREAM_TENANTS[GHOST]).is_none());
    assert!(state.view(STREAM_TENANTS[GHOST]).is_none());
    let mut owners = BTreeMap::new();
    for (tenant, tenant_name) in STREAM_TENANTS.iter().enumerate().take(GHOST) {
        let slot = state.tenant_slot(tenant_name).expect("a registered tenant");
        let view = state.view(tenant_name).expect("a registered tenant");
        let created = model.created.get(&tenant).cloned().unwrap_or_default();
        assert_eq!(
            streams.names(slot),
            created,
            "{tenant_name}: stream names in creation order"
        );
        assert_eq!(view.streams(), created);
        for stream in STREAM_NAMES {
            let positions = model.streams.get(&(tenant, stream));
            let version = model.version(tenant, stream);
            assert_eq!(
                streams.version(slot, stream),
                version,
                "{tenant_name}/{stream}: version"
            );
            assert_eq!(
                view.stream_version(stream),
                version,
                "{tenant_name}/{stream}: view version"
            );
            check_stream_reads(streams, slot, stream, positions);
            assert_eq!(
                view.read_stream(stream, 0, Direction::Forward, usize::MAX),
                positions.map(|positions| model_read(positions, 0, Direction::Forward, usize::MAX))
            );
        }
        let all = model.all.get(&tenant).map_or(&[][..], Vec::as_slice);
        check_pages(&format!("read_all({tenant_name})"), all, |from, direction, limit| {
            streams.read_all(slot, from, direction, limit)
        });
        // Isolation: no position shows up in two tenants' streams.
        for position in streams.read_all(slot, 0, Direction::Forward, usize::MAX) {
            let other = owners.insert(position, tenant_name);
            assert_eq!(other, None, "position {position} is in two tenants' streams");
        }
    }
}

fn run_streams(records: &[Vec<AppendOp>]) {
    let mut harness = Harness::new();
    setup(&mut harness, command(LANDLORD, 0, testing::customer("acme")));
    setup(&mut harness, command(LANDLORD, 0, testing::customer("globex")));
    let mut model = StreamModel {
        last_position: harness.state.last_position(),
        ..StreamModel::default()
    };
    check_streams(&harness.state, &model);
    for ops in records {
        let (commands, verdicts): (Vec<_>, Vec<_>) = ops.iter().map(|op| model.step(op)).unzip();
        apply_predicted(&mut harness, &commands, &verdicts);
        check_streams(&harness.state, &model);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(128))]

    #[test]
    fn streams_match_the_model(records in prop::collection::vec(prop::collection::vec(append_op(), 1..4), 1..40)) {
        run_streams(&records);
    }
}

/// The same stream name and idempotency key in two tenants are two
/// streams and two keys; and a key is forgotten exactly when its window
/// closes.
#[test]
fn streams_and_keys_of_two_tenants_are_independent() {
    let op = |tenant, expected, key: Option<(usize, u64)>, clock| AppendOp {
        tenant,
        stream: 0,
        expected,
        key,
        clock,
    };
    let records = vec![
        vec![op(1, Expectation::NoStream, Some((0, 10)), Clock::Advance(1))],
        // globex's "orders" does not exist yet, and acme's key is not its.
        vec![op(2, Expectation::NoStream, Some((0, 10)), Clock::Advance(0))],
        vec![op(1, Expectation::NoStream, None, Clock::Advance(0))],
        // Inside the window: a duplicate, whatever the expected version.
        vec![op(1, Expectation::Exact(5), Some((0, 10)), Clock::Advance(9))],
        // The window closes at exactly 1 + 10 ms.
        vec![op(1, Expectation::Current, Some((0, 10)), Clock::Advance(1))],
        vec![op(2, Expectation::Any, Some((0, 10)), Clock::Stale(3))],
    ];
    run_streams(&records);
}

/// More keys fall due at once than timers fire per command
/// (`TIMERS_FIRED_PER_COMMAND_MAX`): a key whose window closed is not a
/// duplicate even while its timer has not fired yet, and a late timer of a
/// key's earlier window does not forget the key's new window.
#[test]
fn idempotency_windows_hold_while_timers_lag() {
    const KEYS_DUE: u64 = TIMERS_FIRED_PER_COMMAND_MAX as u64 + 40;
    let keyed = |key: u64, expected| {
        CommandBody::StreamAppend(StreamAppend {
            stream: "orders".to_string(),
            expected,
            idempotency: Some(Idempotency {
                key: format!("k{key}"),
                window_ms: 10,
            }),
            event_type: "test".to_string(),
            body: Vec::new(),
        })
    };
    let mut harness = Harness::new();
    setup(&mut harness, command(LANDLORD, 0, testing::customer("acme")));
    let appends: Vec<_> = (0..KEYS_DUE)
        .map(|key| command("acme", 0, keyed(key, ExpectedVersion::Any)))
        .collect();
    assert!(harness.apply_batch(&appends).iter().all(|outcome| outcome.is_applied()));
    let last = KEYS_DUE - 1;
    let acme = harness.state.tenant_slot("acme").expect("registered");
    assert_eq!(harness.state.streams().kept_keys(), KEYS_DUE as usize);
    // At 10 ms every window has closed; this command fires the first
    // timers only, so the last key is still kept, but expired.
    let reused = harness.apply(command("acme", 10, keyed(last, ExpectedVersion::Exact(last))));
    let position = harness.state.last_position();
    assert_eq!(
        reused.verdict,
        Verdict::Applied(Effect::StreamAppended {
            position,
            version: KEYS_DUE,
        }),
        "a key whose window closed is not a duplicate"
    );
    // The rest of the old timers fire now, the old window's of the reused
    // key among them: its new window (to 20 ms) must survive.
    harness.apply(command("acme", 10, CommandBody::Tick));
    assert_eq!(harness.state.streams().kept_keys(), 1);
    let again = harness.apply(command("acme", 19, keyed(last, ExpectedVersion::NoStream)));
    assert_eq!(
        again.verdict,
        Verdict::Applied(Effect::StreamDuplicate {
            position,
            version: KEYS_DUE,
        })
    );
    let after = harness.apply(command("acme", 20, keyed(last, ExpectedVersion::Any)));
    assert!(
        matches!(after.verdict, Verdict::Applied(Effect::StreamAppended { .. })),
        "{after:?}"
    );
    assert_eq!(harness.state.streams().version(acme, "orders"), Some(KEYS_DUE + 1));
}

// ---------------------------------------------------------------- topology

const TOPOLOGY_TENANTS: [&str; 3] = [LANDLORD, "acme", "globex"];
const COMPONENT_IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const LANDLORD_KINDS: [ComponentKind; 3] = [ApplicationServer, ApplicationsMlm, AggregationMlm];
const CUSTOMER_KINDS: [ComponentKind; 4] = [CustomerMlm, Proxy, IntegrationModule, SupportInstance];

/// How a registration picks a parent.
#[derive(Clone, Copy, Debug)]
enum ParentPick {
    /// One of the registered components the tenant may hang below (its
    /// own or hosted, of an allowed kind), by index; a named pick when
    /// there is none.
    Valid(usize),
    /// Any name, own or hosted: often missing or of the wrong kind.
    Named { hosted: bool, id: usize },
}

#[derive(Clone, Debug)]
enum TopologyOp {
    /// Registers a component that fits: below one of the registered
    /// components the tenant may hang below (by index), of a kind that may
    /// hang there, under a name the tenant has free; a support instance
    /// gets a second integration module when `second` and there is one.
    Grow {
        tenant: usize,
        parent: usize,
        id: usize,
        second: Option<usize>,
    },
    /// Registers anything: any kind the tenant may register, any name,
    /// parents valid or not.
    Register {
        tenant: usize,
        /// Index into the kinds the tenant may register.
        kind: usize,
        id: usize,
        parents: (ParentPick, ParentPick),
        /// A support instance gets both parents.
        two_parents: bool,
    },
    /// Deregisters one of the tenant's registered leaves, by index (a
    /// named deregistration when there is none).
    DeregisterLeaf { tenant: usize, pick: usize },
    /// Deregisters one of the tenant's registered components, by index:
    /// often one with children.
    DeregisterRegistered { tenant: usize, pick: usize },
    /// Deregisters a name from the pool, own or hosted: often missing; a
    /// customer's hosted reference is not found.
    Deregister { tenant: usize, id: usize, hosted: bool },
}

fn parent_pick() -> impl Strategy<Value = ParentPick> {
    prop_oneof![
        5 => any::<usize>().prop_map(ParentPick::Valid),
        1 => (any::<bool>(), 0..COMPONENT_IDS.len()).prop_map(|(hosted, id)| ParentPick::Named { hosted, id }),
    ]
}

fn topology_op() -> impl Strategy<Value = TopologyOp> {
    let tenant = || prop_oneof![2 => Just(0usize), 3 => Just(1), 2 => Just(2)];
    let register = (
        tenant(),
        0..4usize,
        0..COMPONENT_IDS.len(),
        (parent_pick(), parent_pick()),
        any::<bool>(),
    );
    prop_oneof![
        8 => (tenant(), any::<usize>(), any::<usize>(), proptest::option::weighted(0.8, any::<usize>()))
            .prop_map(|(tenant, parent, id, second)| TopologyOp::Grow { tenant, parent, id, second }),
        3 => register.prop_map(|(tenant, kind, id, parents, two_parents)| TopologyOp::Register {
            tenant,
            kind,
            id,
            parents,
            two_parents,
        }),
        2 => (tenant(), any::<usize>()).prop_map(|(tenant, pick)| TopologyOp::DeregisterLeaf { tenant, pick }),
        1 => (tenant(), any::<usize>()).prop_map(|(tenant, pick)| TopologyOp::DeregisterRegistered { tenant, pick }),
        1 => (tenant(), 0..COMPONENT_IDS.len(), any::<bool>())
            .prop_map(|(tenant, id, hosted)| TopologyOp::Deregister { tenant, id, hosted }),
    ]
}

/// (tenant index, component id)
type Key = (usize, &'static str);

#[derive(Clone, Debug)]
struct ModelComponent {
    kind: ComponentKind,
    registered: bool,
    parents: Vec<Key>,
}

/// The topology as a plain parent map; everything else is derived by naive
/// walks over it.
#[derive(Default)]
struct TopologyModel {
    last_position: u64,
    components: BTreeMap<Key, ModelComponent>,
}

impl TopologyModel {
    fn registered(&self) -> impl Iterator<Item = (Key, &ModelComponent)> {
        self.components
            .iter()
            .filter(|(_, component)| component.registered)
            .map(|(&key, component)| (key, component))
    }

    fn children(&self, key: Key) -> BTreeSet<Key> {
        let children = self
            .registered()
            .filter(|(_, component)| component.parents.contains(&key));
        children.map(|(child, _)| child).collect()
    }

    /// Everything registered below `key`: grows the set until no
    /// registered component has a parent in it.
    fn below(&self, key: Key) -> BTreeSet<Key> {
        let mut found = BTreeSet::new();
        loop {
            let before = found.len();
            for (child, component) in self.registered() {
                if component
                    .parents
                    .iter()
                    .any(|parent| *parent == key || found.contains(parent))
                {
                    found.insert(child);
                }
            }
            if found.len() == before {
                return found;
            }
        }
    }

    fn resolve(&self, tenant: usize, kind: ComponentKind, pick: ParentPick) -> (bool, &'static str) {
        let named = |hosted, id: usize| (hosted, COMPONENT_IDS[id % COMPONENT_IDS.len()]);
        match pick {
            ParentPick::Named { hosted, id } => named(hosted, id),
            ParentPick::Valid(at) => {
                let candidates: Vec<Key> = self
                    .registered()
                    .filter(|((owner, _), component)| {
                        (*owner == tenant || *owner == 0) && kind.allowed_parents().contains(&component.kind)
                    })
                    .map(|(key, _)| key)
                    .collect();
                match candidates.get(at % candidates.len().max(1)) {
                    Some(&key) => Self::reference(tenant, key),
                    None => named(false, at),
                }
            }
        }
    }

    /// The command for `op` and the verdict the model predicts for it.
    fn step(&mut self, op: &TopologyOp) -> (Command, Verdict) {
        match *op {
            TopologyOp::Register {
                tenant,
                kind,
                id,
                parents,
                two_parents,
            } => {
                let kinds: &[ComponentKind] = if tenant == 0 { &LANDLORD_KINDS } else { &CUSTOMER_KINDS };
                let kind = kinds[kind % kinds.len()];
                let count = match kind {
                    ApplicationServer => 0,
                    SupportInstance if two_parents => 2,
                    _ => 1,
                };
                let mut refs = Vec::new();
                for pick in [parents.0, parents.1].into_iter().take(count) {
                    let parent = self.resolve(tenant, kind, pick);
                    // Two equal parents fail the stateless checks (see
                    // state_validation.rs); keep one.
                    if !refs.contains(&parent) {
                        refs.push(parent);
                    }
                }
                self.registration(tenant, COMPONENT_IDS[id], kind, &refs)
            }
            TopologyOp::Grow {
                tenant,
                parent,
                id,
                second,
            } => self.grow(tenant, parent, id, second),
            TopologyOp::DeregisterLeaf { tenant, pick } => {
                let leaves: Vec<Key> = self
                    .registered()
                    .filter(|&((owner, _), _)| owner == tenant)
                    .map(|(key, _)| key)
                    .filter(|&key| self.children(key).is_empty())
                    .collect();
                let id = match leaves.get(pick % leaves.len().max(1)) {
                    Some(&(_, id)) => id,
                    None => COMPONENT_IDS[pick % COMPONENT_IDS.len()],
                };
                self.deregister(tenant, id, false)
            }
            TopologyOp::DeregisterRegistered { tenant, pick } => {
                let own: Vec<Key> = self
                    .registered()
                    .filter(|&((owner, _), _)| owner == tenant)
                    .map(|(key, _)| key)
                    .collect();
                let id = match own.get(pick % own.len().max(1)) {
                    Some(&(_, id)) => id,
                    None => COMPONENT_IDS[pick % COMPONENT_IDS.len()],
                };
                self.deregister(tenant, id, false)
            }
            TopologyOp::Deregister { tenant, id, hosted } => self.deregister(tenant, COMPONENT_IDS[id], hosted),
        }
    }

    /// The reference `tenant` makes to the component at `key`.
    fn reference(tenant: usize, (owner, id): Key) -> (bool, &'static str) {
        (owner == 0 && tenant != 0, id)
    }

    fn grow(&mut self, tenant: usize, parent: usize, id: usize, second: Option<usize>) -> (Command, Verdict) {
        let kinds: &[ComponentKind] = if tenant == 0 { &LANDLORD_KINDS } else { &CUSTOMER_KINDS };
        let mut options: Vec<(Option<Key>, ComponentKind)> = Vec::new();
        if tenant == 0 {
            options.push((None, ApplicationServer));
        }
        for (key, component) in self
            .registered()
            .filter(|((owner, _), _)| *owner == tenant || *owner == 0)
        {
            for &kind in kinds {
                if kind.allowed_parents().contains(&component.kind) {
                    options.push((Some(key), kind));
                }
            }
        }
        let free: Vec<&'static str> = COMPONENT_IDS
            .into_iter()
            .filter(|&name| !self.components.get(&(tenant, name)).is_some_and(|c| c.registered))
            .collect();
        let id = free
            .get(id % free.len().max(1))
            .copied()
            .unwrap_or(COMPONENT_IDS[id % COMPONENT_IDS.len()]);
        let Some(&(first, kind)) = options.get(parent % options.len().max(1)) else {
            // Nothing to grow from yet: a proxy below nothing.
            return self.registration(
                tenant,
                id,
                Proxy,
                &[(true, COMPONENT_IDS[parent % COMPONENT_IDS.len()])],
            );
        };
        let mut refs: Vec<_> = first.into_iter().map(|key| Self::reference(tenant, key)).collect();
        if let (SupportInstance, Some(second)) = (kind, second) {
            let others: Vec<Key> = self
                .registered()
                .filter(|&(key, component)| {
                    key.0 == tenant && component.kind == IntegrationModule && Some(key) != first
                })
                .map(|(key, _)| key)
                .collect();
            if let Some(&other) = others.get(second % others.len().max(1)) {
                refs.push(Self::reference(tenant, other));
            }
        }
        self.registration(tenant, id, kind, &refs)
    }

    fn registration(
        &mut self,
        tenant: usize,
        id: &'static str,
        kind: ComponentKind,
        refs: &[(bool, &'static str)],
    ) -> (Command, Verdict) {
        let parents = refs
            .iter()
            .map(|&(hosted, id)| ComponentRef {
                hosted,
                id: id.to_string(),
            })
            .collect();
        let body = testing::component(id, kind, parents);
        let command = command(TOPOLOGY_TENANTS[tenant], 1, body);
        (command, self.register(tenant, id, kind, refs))
    }

    fn register(
        &mut self,
        tenant: usize,
        id: &'static str,
        kind: ComponentKind,
        refs: &[(bool, &'static str)],
    ) -> Verdict {
        if let Some(existing) = self.components.get(&(tenant, id)) {
            if existing.registered {
                return Verdict::Rejected(Rejection::AlreadyExists {
                    object: Object::Component,
                });
            }
            if existing.kind != kind {
                return Verdict::Rejected(Rejection::WrongKind {
                    object: Object::Component,
                    kind: existing.kind,
                });
            }
        }
        let mut parents = Vec::new();
        for &(hosted, parent) in refs {
            let key = (if hosted { 0 } else { tenant }, parent);
            match self.components.get(&key).filter(|component| component.registered) {
                None => return Verdict::Rejected(Rejection::NotFound { object: Object::Parent }),
                Some(found) if !kind.allowed_parents().contains(&found.kind) => {
                    return Verdict::Rejected(Rejection::ParentNotAllowed {
                        parent_kind: found.kind,
                    })
                }
                Some(_) => parents.push(key),
            }
        }
        self.last_position += 1;
        let component = ModelComponent {
            kind,
            registered: true,
            parents,
        };
        self.components.insert((tenant, id), component);
        Verdict::Applied(Effect::Recorded {
            position: self.last_position,
        })
    }

    fn deregister(&mut self, tenant: usize, id: &'static str, hosted: bool) -> (Command, Verdict) {
        let body = CommandBody::Deregister(Deregister {
            component: ComponentRef {
                hosted,
                id: id.to_string(),
            },
        });
        let command = command(TOPOLOGY_TENANTS[tenant], 1, body);
        let not_found = Verdict::Rejected(Rejection::NotFound {
            object: Object::Component,
        });
        // A customer cannot reach into the landlord's namespace; the
        // landlord's own references are in its namespace either way.
        if hosted && tenant != 0 {
            return (command, not_found);
        }
        let registered = self
            .components
            .get(&(tenant, id))
            .is_some_and(|component| component.registered);
        if !registered {
            return (command, not_found);
        }
        if !self.children((tenant, id)).is_empty() {
            return (command, Verdict::Rejected(Rejection::HasChildren));
        }
        let component = self.components.get_mut(&(tenant, id)).expect("registered");
        component.registered = false;
        component.parents.clear();
        self.last_position += 1;
        let verdict = Verdict::Applied(Effect::Recorded {
            position: self.last_position,
        });
        (command, verdict)
    }
}

fn owned((tenant, id): Key) -> (usize, String) {
    (tenant, id.to_string())
}

fn check_topology(state: &State, model: &TopologyModel) {
    let topology = state.topology();
    let slots = TOPOLOGY_TENANTS.map(|tenant| state.tenant_slot(tenant).expect("registered"));
    let key_of = |slot: Slot| {
        let component = topology.component(slot);
        let tenant = slots.iter().position(|&tenant| tenant == component.tenant);
        (tenant.expect("one of the test's tenants"), component.id.to_string())
    };
    assert_eq!(state.last_position(), model.last_position, "last position");
    assert_eq!(
        topology.registered_count(),
        model.registered().count(),
        "registered count"
    );
    assert_eq!(topology.component_count(), model.components.len(), "component slots");
    // Every name in every namespace: registered exactly when the model says.
    for (tenant, tenant_name) in TOPOLOGY_TENANTS.iter().enumerate() {
        let view = state.view(tenant_name).expect("registered");
        for id in COMPONENT_IDS {
            let registered = model.components.get(&(tenant, id)).is_some_and(|c| c.registered);
            assert_eq!(
                view.component(id).is_some(),
                registered,
                "{tenant_name}/{id} in its view"
            );
            assert_eq!(topology.registered(slots[tenant], id).is_some(), registered);
        }
    }
    let mut registered_slots = Vec::new();
    for (&(tenant, id), expected) in &model.components {
        let slot = topology.slot(slots[tenant], id);
        let slot = slot.unwrap_or_else(|| panic!("{tenant}/{id} has no slot"));
        let component = topology.component(slot);
        assert_eq!(component.kind, expected.kind, "{tenant}/{id}: kind");
        assert_eq!(component.registered, expected.registered, "{tenant}/{id}: registered");
        if !expected.registered {
            continue;
        }
        registered_slots.push(((tenant, id), slot));
        let parents: Vec<_> = component.parents.iter().map(|&parent| key_of(parent)).collect();
        let want: Vec<_> = expected.parents.iter().map(|&parent| owned(parent)).collect();
        assert_eq!(parents, want, "{tenant}/{id}: parents");
        let children: Vec<_> = component.children.iter().map(|&child| key_of(child)).collect();
        let want: BTreeSet<_> = model.children((tenant, id)).into_iter().map(owned).collect();
        assert_eq!(children.len(), want.len(), "{tenant}/{id}: children {children:?}");
        assert_eq!(
            children.into_iter().collect::<BTreeSet<_>>(),
            want,
            "{tenant}/{id}: children"
        );
    }
    for &(key, slot) in &registered_slots {
        let reachable: Vec<_> = topology.reachable_through(slot).into_iter().map(key_of).collect();
        let unique: BTreeSet<_> = reachable.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            reachable.len(),
            "reachable through {key:?} twice: {reachable:?}"
        );
        let below = model.below(key);
        let want: BTreeSet<_> = below.iter().map(|&key| owned(key)).collect();
        assert_eq!(unique, want, "reachable through {key:?}");
        for &(other, other_slot) in &registered_slots {
            assert_eq!(
                topology.is_below(other_slot, slot),
                below.contains(&other),
                "is {other:?} below {key:?}"
            );
        }
    }
}

fn run_topology(records: &[Vec<TopologyOp>]) {
    let mut harness = Harness::new();
    setup(&mut harness, command(LANDLORD, 0, testing::customer("acme")));
    setup(&mut harness, command(LANDLORD, 0, testing::customer("globex")));
    let mut model = TopologyModel {
        last_position: harness.state.last_position(),
        ..TopologyModel::default()
    };
    for ops in records {
        let (commands, verdicts): (Vec<_>, Vec<_>) = ops.iter().map(|op| model.step(op)).unzip();
        apply_predicted(&mut harness, &commands, &verdicts);
        check_topology(&harness.state, &model);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(128))]

    #[test]
    fn reachability_matches_a_naive_walk(
        records in prop::collection::vec(prop::collection::vec(topology_op(), 1..4), 1..60),
    ) {
        run_topology(&records);
    }
}

/// A support instance behind two integration modules is reachable once
/// through their common ancestors; a landlord component with customer
/// components below it cannot be deregistered.
#[test]
fn a_diamond_is_reachable_once() {
    use TopologyOp::*;
    let register = |tenant, kind, id, first, second, two_parents| Register {
        tenant,
        kind,
        id,
        parents: (first, second),
        two_parents,
    };
    let valid = ParentPick::Valid;
    let records = vec![
        vec![register(0, 0, 0, valid(0), valid(0), false)], // landlord a: server
        vec![register(0, 1, 1, valid(0), valid(0), false)], // landlord b: apps ← a
        vec![register(0, 2, 2, valid(0), valid(0), false)], // landlord c: agg ← b
        vec![register(1, 1, 0, valid(1), valid(0), false)], // acme a: proxy ← c
        vec![register(1, 2, 1, valid(0), valid(0), false)], // acme b: im ← a
        vec![register(1, 2, 2, valid(0), valid(0), false)], // acme c: im ← a
        vec![register(1, 3, 3, valid(0), valid(1), true)],  // acme d: si ← b, c
        vec![Deregister {
            tenant: 0,
            id: 2,
            hosted: false,
        }],
        vec![Deregister {
            tenant: 1,
            id: 2,
            hosted: false,
        }],
        vec![DeregisterLeaf { tenant: 1, pick: 0 }],
        vec![Deregister {
            tenant: 1,
            id: 2,
            hosted: false,
        }],
    ];
    run_topology(&records);
}

// ------------------------------------------------------------------ alarms

const ALARM_TENANTS: [&str; 2] = ["acme", "globex"];
/// The support instances, then an integration module (wrong kind) and a
/// name nobody registered.
const ALARM_TARGETS: [&str; 5] = ["si0", "si1", "si2", "im", "nobody"];
const ALARM_IDS: [&str; 4] = ["disk", "fan", "power", "temp"];
const ALARM_CLASS: (&str, &str) = ("alarm", "hardware");

#[derive(Clone, Debug)]
struct AlarmOp {
    tenant: usize,
    target: usize,
    alarm: usize,
    raise: bool,
    advance_ms: u64,
}

fn alarm_op() -> impl Strategy<Value = AlarmOp> {
    let target = prop_oneof![10 => 0..3usize, 1 => 3..5usize];
    (
        0..ALARM_TENANTS.len(),
        target,
        0..ALARM_IDS.len(),
        any::<bool>(),
        0u64..2000,
    )
        .prop_map(|(tenant, target, alarm, raise, advance_ms)| AlarmOp {
            tenant,
            target,
            alarm,
            raise,
            advance_ms,
        })
}

/// Open alarms by (tenant, support instance, alarm id) → position of the
/// message that raised or last updated it.
#[derive(Default)]
struct AlarmModel {
    now_ms: u64,
    last_position: u64,
    sent: u64,
    open: BTreeMap<(usize, usize, &'static str), u64>,
    /// Per tenant, the positions of its stored alarm messages.
    stored: BTreeMap<usize, Vec<u64>>,
}

impl AlarmModel {
    fn step(&mut self, op: &AlarmOp) -> (Command, Verdict) {
        self.now_ms += op.advance_ms;
        self.sent += 1;
        let tenant = ALARM_TENANTS[op.tenant];
        let alarm_id = ALARM_IDS[op.alarm];
        let state = if op.raise {
            AlarmState::Raised
        } else {
            AlarmState::Cleared
        };
        let content = testing::alarm(ALARM_TARGETS[op.target], alarm_id, state);
        let message_id = format!("m{}", self.sent);
        let body = testing::message(tenant, &message_id, "im", IntegrationModule, ALARM_CLASS, content);
        let command = command(tenant, self.now_ms, body);
        let verdict = match op.target {
            3 => Verdict::Rejected(Rejection::WrongKind {
                object: Object::SupportInstance,
                kind: IntegrationModule,
            }),
            4 => Verdict::Rejected(Rejection::NotFound {
                object: Object::SupportInstance,
            }),
            target => {
                self.last_position += 1;
                let position = self.last_position;
                self.stored.entry(op.tenant).or_default().push(position);
                let key = (op.tenant, target, alarm_id);
                let change = match (op.raise, self.open.contains_key(&key)) {
                    (true, true) => AlarmChange::Updated,
                    (true, false) => AlarmChange::Raised,
                    (false, true) => AlarmChange::Cleared,
                    (false, false) => AlarmChange::ClearedUnknown,
                };
                match op.raise {
                    true => self.open.insert(key, position),
                    false => self.open.remove(&key),
                };
                Verdict::Applied(Effect::MessageStored {
                    position,
                    alarm: Some(change),
                })
            }
        };
        (command, verdict)
    }
}

fn check_alarms(state: &State, model: &AlarmModel) {
    let topology = state.topology();
    let messages = state.messages();
    assert_eq!(state.last_position(), model.last_position, "last position");
    assert_eq!(messages.open_alarm_count(), model.open.len(), "open alarm count");
    for (tenant, tenant_name) in ALARM_TENANTS.iter().enumerate() {
        let slot = state.tenant_slot(tenant_name).expect("registered");
        // The model's order, (support instance, alarm id), is the state's
        // (support instance slot, alarm id): the instances registered in
        // the order of their names.
        let want: Vec<(String, String, u64)> = model
            .open
            .range((tenant, 0, "")..(tenant + 1, 0, ""))
            .map(|(&(_, target, alarm_id), &position)| {
                (ALARM_TARGETS[target].to_string(), alarm_id.to_string(), position)
            })
            .collect();
        let open: Vec<_> = messages
            .open_alarms(slot)
            .into_iter()
            .map(|alarm| {
                let instance = topology.component(alarm.support_instance);
                assert_eq!(
                    instance.tenant, slot,
                    "{tenant_name}: an alarm on another tenant's instance"
                );
                (instance.id.to_string(), alarm.alarm_id.to_string(), alarm.position)
            })
            .collect();
        assert_eq!(open, want, "{tenant_name}: open alarms");
        let view: Vec<_> = state
            .view(tenant_name)
            .expect("registered")
            .open_alarms()
            .into_iter()
            .map(|alarm| {
                (
                    alarm.support_instance.to_string(),
                    alarm.alarm_id.to_string(),
                    alarm.position,
                )
            })
            .collect();
        assert_eq!(view, want, "{tenant_name}: open alarms in its view");
        let stored = model.stored.get(&tenant).map_or(&[][..], Vec::as_slice);
        let (class, subclass) = ALARM_CLASS;
        let by_class = messages.by_class(slot, class, subclass, 0, Direction::Forward, usize::MAX);
        assert_eq!(by_class, stored, "{tenant_name}: alarm messages");
    }
}

/// Two customers with the same names: proxy ← im, im2; si0 ← im,
/// si1 ← im2, si2 ← im + im2.
fn alarm_farm(harness: &mut Harness) {
    hosted_tree(harness);
    for tenant in ALARM_TENANTS {
        setup(harness, command(LANDLORD, 0, testing::customer(tenant)));
        let components = [
            testing::component("proxy", Proxy, vec![testing::hosted("agg")]),
            testing::component("im", IntegrationModule, vec![own("proxy")]),
            testing::component("im2", IntegrationModule, vec![own("proxy")]),
            testing::component("si0", SupportInstance, vec![own("im")]),
            testing::component("si1", SupportInstance, vec![own("im2")]),
            testing::component("si2", SupportInstance, vec![own("im"), own("im2")]),
        ];
        for body in components {
            setup(harness, command(tenant, 0, body));
        }
    }
}

fn run_alarms(records: &[Vec<AlarmOp>]) {
    let mut harness = Harness::new();
    alarm_farm(&mut harness);
    let mut model = AlarmModel {
        last_position: harness.state.last_position(),
        ..AlarmModel::default()
    };
    for ops in records {
        let (commands, verdicts): (Vec<_>, Vec<_>) = ops.iter().map(|op| model.step(op)).unzip();
        apply_predicted(&mut harness, &commands, &verdicts);
        check_alarms(&harness.state, &model);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(128))]

    #[test]
    fn alarms_match_a_map(records in prop::collection::vec(prop::collection::vec(alarm_op(), 1..4), 1..50)) {
        run_alarms(&records);
    }
}

// -------------------------------------------------------- message dedupe

const MESSAGE_TENANTS: [&str; 2] = ["acme", "globex"];
const MESSAGE_IDS: [&str; 4] = ["m0", "m1", "m2", "m3"];
/// (source id, kind as the header says): the two registered sources, a
/// name nobody registered, and `im` sent with the wrong kind.
const SENDERS: [(&str, ComponentKind); 4] = [
    ("proxy", Proxy),
    ("im", IntegrationModule),
    ("ghost", Proxy),
    ("im", Proxy),
];
/// The registered senders: `SENDERS[..REAL_SENDERS]`.
const REAL_SENDERS: usize = 2;
const CLASSES: [(&str, &str); 4] = [
    ("data", "a"),
    ("data", "b"),
    ("event", "x"),
    (HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS),
];

#[derive(Clone, Debug)]
struct MessageOp {
    tenant: usize,
    id: usize,
    sender: usize,
    class: usize,
    clock: Clock,
}

fn message_clock() -> impl Strategy<Value = Clock> {
    const WINDOW: u64 = MESSAGE_DEDUPE_WINDOW_MS;
    prop_oneof![
        4 => Just(Clock::Advance(0)),
        3 => (1u64..1000).prop_map(Clock::Advance),
        1 => Just(Clock::Advance(WINDOW - 1)),
        1 => Just(Clock::Advance(WINDOW)),
        1 => Just(Clock::Advance(WINDOW + 1)),
        1 => (WINDOW..3 * WINDOW).prop_map(Clock::Advance),
        1 => (1u64..WINDOW).prop_map(Clock::Stale),
    ]
}

fn message_op() -> impl Strategy<Value = MessageOp> {
    let sender = prop_oneof![10 => 0..REAL_SENDERS, 1 => REAL_SENDERS..SENDERS.len()];
    (
        0..MESSAGE_TENANTS.len(),
        0..MESSAGE_IDS.len(),
        sender,
        0..CLASSES.len(),
        message_clock(),
    )
        .prop_map(|(tenant, id, sender, class, clock)| MessageOp {
            tenant,
            id,
            sender,
            class,
            clock,
        })
}

#[derive(Clone, Copy, Debug)]
struct ModelMessage {
    position: u64,
    sender: usize,
    stored_at_ms: u64,
}

#[derive(Default)]
struct MessageModel {
    now_ms: u64,
    last_position: u64,
    /// Latest stored copy by (tenant, message id).
    by_id: BTreeMap<(usize, &'static str), ModelMessage>,
    by_customer: BTreeMap<usize, Vec<u64>>,
    by_source: BTreeMap<(usize, usize), Vec<u64>>,
    by_class: BTreeMap<(usize, usize), Vec<u64>>,
}

fn message_content(class: usize, at_ms: u64) -> Content {
    match class {
        0 | 1 => testing::data(&at_ms.to_le_bytes()),
        2 => Content::Event(Event {
            support_instance: None,
            severity: Severity::Info,
            text: "restarted".to_string(),
            data: Vec::new(),
        }),
        _ => Content::Heartbeat(Heartbeat { components: Vec::new() }),
    }
}

impl MessageModel {
    fn step(&mut self, op: &MessageOp) -> (Command, Verdict) {
        let at = op.clock.proposed_at(self.now_ms);
        self.now_ms = self.now_ms.max(at);
        let tenant = MESSAGE_TENANTS[op.tenant];
        let (source, kind) = SENDERS[op.sender];
        let id = MESSAGE_IDS[op.id];
        let content = message_content(op.class, at);
        let command = command(
            tenant,
            at,
            testing::message(tenant, id, source, kind, CLASSES[op.class], content),
        );
        (command, self.predict(op, id))
    }

    fn predict(&mut self, op: &MessageOp, id: &'static str) -> Verdict {
        match op.sender {
            2 => return Verdict::Rejected(Rejection::NotFound { object: Object::Source }),
            3 => {
                return Verdict::Rejected(Rejection::SourceKindMismatch {
                    registered: IntegrationModule,
                })
            }
            _ => {}
        }
        if let Some(previous) = self.by_id.get(&(op.tenant, id)) {
            if self.now_ms < previous.stored_at_ms + MESSAGE_DEDUPE_WINDOW_MS {
                return match previous.sender == op.sender {
                    true => Verdict::Applied(Effect::MessageDuplicate {
                        position: previous.position,
                    }),
                    false => Verdict::Rejected(Rejection::MessageIdInUse),
                };
            }
        }
        self.last_position += 1;
        let position = self.last_position;
        let stored = ModelMessage {
            position,
            sender: op.sender,
            stored_at_ms: self.now_ms,
        };
        self.by_id.insert((op.tenant, id), stored);
        self.by_customer.entry(op.tenant).or_default().push(position);
        self.by_source.entry((op.tenant, op.sender)).or_default().push(position);
        self.by_class.entry((op.tenant, op.class)).or_default().push(position);
        Verdict::Applied(Effect::MessageStored { position, alarm: None })
    }
}

fn list<K: Ord>(map: &BTreeMap<K, Vec<u64>>, key: &K) -> Vec<u64> {
    map.get(key).cloned().unwrap_or_default()
}

fn check_messages(state: &State, model: &MessageModel) {
    let topology = state.topology();
    let messages = state.messages();
    assert_eq!(state.log_time_ms(), model.now_ms, "log time");
    assert_eq!(state.last_position(), model.last_position, "last position");
    assert_eq!(
        messages.stored_count(),
        model.by_customer.values().map(Vec::len).sum::<usize>() as u64
    );
    for (tenant, tenant_name) in MESSAGE_TENANTS.iter().enumerate() {
        let slot = state.tenant_slot(tenant_name).expect("registered");
        let view = state.view(tenant_name).expect("registered");
        for id in MESSAGE_IDS {
            let stored = messages.by_id(slot, id).map(|stored| {
                let source = topology.component(stored.source);
                assert_eq!(source.tenant, slot, "{tenant_name}/{id}: a source of another tenant");
                (stored.position, source.id.to_string(), stored.stored_at_ms)
            });
            let want = model.by_id.get(&(tenant, id)).map(|stored| {
                let (source, _) = SENDERS[stored.sender];
                (stored.position, source.to_string(), stored.stored_at_ms)
            });
            assert_eq!(stored, want, "{tenant_name}/{id}: by id");
            assert_eq!(view.message(id), want.map(|(position, _, _)| position));
        }
        let what = format!("{tenant_name}: by customer");
        check_pages(&what, &list(&model.by_customer, &tenant), |from, direction, limit| {
            messages.by_customer(slot, from, direction, limit)
        });
        for (sender, &(source, _)) in SENDERS.iter().enumerate().take(REAL_SENDERS) {
            let source_slot = topology.registered(slot, source).expect("a registered source");
            let want = list(&model.by_source, &(tenant, sender));
            check_pages(
                &format!("{tenant_name}: by source {source}"),
                &want,
                |from, direction, limit| messages.by_source(source_slot, from, direction, limit),
            );
            let all = view.messages_by_source(source, 0, Direction::Forward, usize::MAX);
            assert_eq!(all, Some(want));
        }
        for (class, &(name, subclass)) in CLASSES.iter().enumerate() {
            let want = list(&model.by_class, &(tenant, class));
            check_pages(
                &format!("{tenant_name}: by class {name}/{subclass}"),
                &want,
                |from, direction, limit| messages.by_class(slot, name, subclass, from, direction, limit),
            );
        }
        assert!(messages
            .by_class(slot, "data", "nope", 0, Direction::Forward, 10)
            .is_empty());
        assert!(messages
            .by_class(slot, "nope", "a", 0, Direction::Forward, 10)
            .is_empty());
    }
}

fn run_messages(records: &[Vec<MessageOp>]) {
    let mut harness = Harness::new();
    hosted_tree(&mut harness);
    for tenant in MESSAGE_TENANTS {
        setup(&mut harness, command(LANDLORD, 0, testing::customer(tenant)));
        setup(
            &mut harness,
            command(
                tenant,
                0,
                testing::component("proxy", Proxy, vec![testing::hosted("agg")]),
            ),
        );
        setup(
            &mut harness,
            command(
                tenant,
                0,
                testing::component("im", IntegrationModule, vec![own("proxy")]),
            ),
        );
    }
    let mut model = MessageModel {
        last_position: harness.state.last_position(),
        ..MessageModel::default()
    };
    for ops in records {
        let (commands, verdicts): (Vec<_>, Vec<_>) = ops.iter().map(|op| model.step(op)).unzip();
        apply_predicted(&mut harness, &commands, &verdicts);
        check_messages(&harness.state, &model);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(128))]

    #[test]
    fn message_dedupe_and_indexes_match_the_model(
        records in prop::collection::vec(prop::collection::vec(message_op(), 1..4), 1..50),
    ) {
        run_messages(&records);
    }
}

// ---------------------------------------------------------------- sessions

/// acme with proxy ← im ← si, a leaf `si9`, and a proxy group.
fn session_farm() -> Harness {
    let mut harness = Harness::new();
    hosted_tree(&mut harness);
    setup(&mut harness, command(LANDLORD, 0, testing::customer("acme")));
    let components = [
        testing::component("proxy", Proxy, vec![testing::hosted("agg")]),
        testing::component("im", IntegrationModule, vec![own("proxy")]),
        testing::component("si", SupportInstance, vec![own("im")]),
        testing::define_group("proxies", GroupKind::Proxy),
    ];
    for body in components {
        setup(&mut harness, command("acme", 0, body));
    }
    harness
}

fn open_session(harness: &mut Harness, tenant: &str, at_ms: u64) -> u64 {
    let opened = harness.apply(command(tenant, at_ms, CommandBody::OpenSession));
    match opened.verdict {
        Verdict::Applied(Effect::SessionOpened { client_id }) => client_id,
        _ => panic!("opening a session: {opened:?}"),
    }
}

/// One command of every family (and every upstream content), in the
/// tenant it runs in; the last ones are rejected the first time.
fn every_family() -> Vec<(&'static str, CommandBody)> {
    let upstream = |id: &str, class, content| testing::message("acme", id, "im", IntegrationModule, class, content);
    vec![
        ("acme", CommandBody::Tick),
        (LANDLORD, testing::customer("globex")),
        ("acme", testing::component("si2", SupportInstance, vec![own("im")])),
        ("acme", testing::set_enabled("si", Switch::SupportInstance, false)),
        ("acme", testing::set_enabled("proxy", Switch::ProxyForwarding, false)),
        ("acme", testing::deregister("si")),
        ("acme", testing::map_management_id("proxy", "10.0.0.1", Some("si"))),
        ("acme", testing::define_group("mlms", GroupKind::Mlm)),
        ("acme", testing::group_member("proxies", own("proxy"), true)),
        ("acme", upstream("m1", ("data", "a"), testing::data(b"payload"))),
        (
            "acme",
            upstream("m2", ("alarm", "disk"), testing::alarm("si", "a1", AlarmState::Raised)),
        ),
        (
            "acme",
            testing::heartbeat("acme", "m3", "im", IntegrationModule, &["si"]),
        ),
        (
            "acme",
            upstream(
                "m4",
                ("event", "x"),
                Content::Event(Event {
                    support_instance: Some("si".to_string()),
                    severity: Severity::Minor,
                    text: "restarted".to_string(),
                    data: vec![1, 2, 3],
                }),
            ),
        ),
        (
            "acme",
            upstream(
                "m5",
                ("response", "x"),
                Content::Response(MessageResponse {
                    in_reply_to: "d1".to_string(),
                    status: ResponseStatus::Ok,
                    error: None,
                }),
            ),
        ),
        (
            "acme",
            upstream(
                "m6",
                ("bulk", "request"),
                Content::BulkRequest(BulkRequest {
                    size: 1 << 30,
                    description: "core dump".to_string(),
                }),
            ),
        ),
        (
            "acme",
            upstream(
                "m7",
                ("bulk", "response"),
                Content::BulkResponse(BulkResponse {
                    request_message_id: "d2".to_string(),
                    granted: true,
                    url: Some("https://bulk.example/d2".to_string()),
                    reason: None,
                }),
            ),
        ),
        ("acme", testing::append("orders", ExpectedVersion::NoStream, None, b"a")),
        (
            "acme",
            testing::append("orders", ExpectedVersion::Any, Some("k1"), b"a"),
        ),
        // Rejected the first time; the retry must not re-run them either.
        ("acme", testing::append("orders", ExpectedVersion::Exact(7), None, b"a")),
        ("acme", testing::component("x", Proxy, vec![own("nowhere")])),
        (LANDLORD, testing::customer("acme")),
    ]
}

/// A retried command (same client id and sequence number) returns the first
/// verdict, marked retried, and changes nothing: the state after it equals
/// the state of a twin that got a plain Tick at the same log time instead.
#[test]
fn a_retry_returns_the_first_verdict_and_applies_nothing() {
    for (tenant, body) in every_family() {
        let mut retried = session_farm();
        let mut twin = session_farm();
        let client = open_session(&mut retried, tenant, 10);
        assert_eq!(open_session(&mut twin, tenant, 10), client);
        let first = retried.apply(in_session(command(tenant, 20, body.clone()), client, 1));
        assert_eq!(
            twin.apply(in_session(command(tenant, 20, body.clone()), client, 1)),
            first
        );
        assert!(!first.retried, "{body:?}: the first attempt is not a retry");
        let again = retried.apply(in_session(command(tenant, 30, body.clone()), client, 1));
        twin.apply(command(tenant, 30, CommandBody::Tick));
        assert!(again.retried, "{body:?}: {again:?}");
        assert_eq!(again.verdict, first.verdict, "{body:?}: the retry's verdict");
        assert_eq!(
            retried.state.hash(),
            twin.state.hash(),
            "{body:?}: the retry changed the state"
        );
        // A retry of a retry, even with another body, still answers the
        // first verdict.
        let third = retried.apply(in_session(command(tenant, 40, CommandBody::Tick), client, 1));
        assert!(third.retried);
        assert_eq!(third.verdict, first.verdict, "{body:?}: the second retry's verdict");
    }
}

/// A session keeps the verdicts of its last `SESSION_OUTCOMES_MAX` numbers;
/// older numbers are refused, never applied again, and change nothing.
#[test]
fn sequence_numbers_older_than_the_kept_window_are_refused() {
    let mut harness = session_farm();
    let client = open_session(&mut harness, "acme", 10);
    let total = SESSION_OUTCOMES_MAX as u64 + 10;
    let append = || testing::append("orders", ExpectedVersion::Any, None, b"x");
    let mut verdicts = BTreeMap::new();
    for sequence in 1..=total {
        let outcome = harness.apply(in_session(command("acme", 20, append()), client, sequence));
        assert!(outcome.is_applied() && !outcome.retried, "{outcome:?}");
        verdicts.insert(sequence, outcome.verdict);
    }
    let oldest_kept = total - SESSION_OUTCOMES_MAX as u64 + 1;
    let events = harness.state.streams().event_count();
    let last_position = harness.state.last_position();
    for sequence in (1..oldest_kept).rev() {
        let outcome = harness.apply(in_session(command("acme", 30, append()), client, sequence));
        let refused = Verdict::Rejected(Rejection::SequenceTooOld { oldest_kept });
        assert_eq!(outcome.verdict, refused, "sequence {sequence}");
        assert!(!outcome.retried);
    }
    for sequence in oldest_kept..=total {
        let outcome = harness.apply(in_session(command("acme", 30, append()), client, sequence));
        assert!(outcome.retried, "sequence {sequence}: {outcome:?}");
        assert_eq!(outcome.verdict, verdicts[&sequence], "sequence {sequence}");
    }
    assert_eq!(harness.state.streams().event_count(), events, "nothing applied twice");
    assert_eq!(harness.state.last_position(), last_position);
    let next = harness.apply(in_session(command("acme", 30, append()), client, total + 1));
    assert_eq!(
        next.verdict,
        Verdict::Applied(Effect::StreamAppended {
            position: last_position + 1,
            version: total,
        })
    );
}

/// A session idle for `SESSION_IDLE_MS` of log time expires; a retry in it
/// is then refused, not applied again.
#[test]
fn an_expired_session_refuses_retries() {
    let mut harness = session_farm();
    let client = open_session(&mut harness, "acme", 10);
    let append = || testing::append("orders", ExpectedVersion::Any, None, b"x");
    let first = harness.apply(in_session(command("acme", 20, append()), client, 1));
    assert!(first.is_applied());
    let tick = harness.apply(command("acme", 20 + SESSION_IDLE_MS - 1, CommandBody::Tick));
    assert!(!tick.fired.contains(&Fired::SessionExpired { client_id: client }));
    let again = harness.apply(in_session(
        command("acme", 20 + SESSION_IDLE_MS - 1, append()),
        client,
        1,
    ));
    assert!(again.retried && again.verdict == first.verdict, "{again:?}");
    let tick = harness.apply(command("acme", 20 + SESSION_IDLE_MS, CommandBody::Tick));
    assert!(
        tick.fired.contains(&Fired::SessionExpired { client_id: client }),
        "{tick:?}"
    );
    let late = harness.apply(in_session(command("acme", 20 + SESSION_IDLE_MS, append()), client, 1));
    assert_eq!(late.verdict, Verdict::Rejected(Rejection::SessionUnknown));
    assert_eq!(harness.state.streams().event_count(), 1);
}

/// Client ids are dense (1, 2, 3, ...), so a session must answer only the
/// tenant that opened it: another tenant must neither read its cached
/// verdicts as "retries" nor put its own numbers into it.
#[test]
fn a_session_answers_only_its_own_tenant() {
    let mut harness = session_farm();
    setup(&mut harness, command(LANDLORD, 0, testing::customer("globex")));
    let client = open_session(&mut harness, "acme", 10);
    let append = |expected| testing::append("orders", expected, None, b"x");
    let first = harness.apply(in_session(
        command("acme", 20, append(ExpectedVersion::NoStream)),
        client,
        1,
    ));
    assert!(first.is_applied(), "{first:?}");
    // globex sends acme's (client id, sequence number).
    let probe = harness.apply(in_session(command("globex", 21, CommandBody::Tick), client, 1));
    assert!(
        !probe.retried && matches!(probe.verdict, Verdict::Rejected(_)),
        "another tenant got acme's cached verdict: {probe:?}"
    );
    // globex uses acme's session with a new number; acme then does too.
    let foreign = harness.apply(in_session(
        command("globex", 22, append(ExpectedVersion::Any)),
        client,
        2,
    ));
    assert!(
        matches!(foreign.verdict, Verdict::Rejected(_)),
        "another tenant's command ran in acme's session: {foreign:?}"
    );
    let own = harness.apply(in_session(
        command("acme", 23, append(ExpectedVersion::Exact(0))),
        client,
        2,
    ));
    assert!(
        !own.retried,
        "acme's new command was answered from another tenant's: {own:?}"
    );
    assert!(own.is_applied(), "{own:?}");
}

#[derive(Clone, Debug)]
struct SessionOp {
    sequence: u64,
    /// None: ExpectedVersion::Any.
    expected: Option<u64>,
}

fn session_op() -> impl Strategy<Value = SessionOp> {
    let sequence = prop_oneof![3 => 1u64..100, 1 => 1u64..8];
    let expected = proptest::option::weighted(0.4, 0u64..40);
    (sequence, expected).prop_map(|(sequence, expected)| SessionOp { sequence, expected })
}

/// Random sequence numbers (many repeated) in one session, against a model
/// written from the rule: the verdicts of the `SESSION_OUTCOMES_MAX`
/// highest numbers applied are kept and returned; any other number at or
/// below one whose verdict was dropped is refused; the rest apply.
fn run_session(ops: &[SessionOp]) {
    let mut harness = session_farm();
    let client = open_session(&mut harness, "acme", 10);
    let acme = harness.state.tenant_slot("acme").expect("registered");
    let mut applied: BTreeMap<u64, Verdict> = BTreeMap::new();
    let mut version: Option<u64> = None;
    let mut last_position = harness.state.last_position();
    for op in ops {
        let expected = op.expected.map_or(ExpectedVersion::Any, ExpectedVersion::Exact);
        let body = testing::append("orders", expected, None, b"x");
        let outcome = harness.apply(in_session(command("acme", 20, body), client, op.sequence));
        let kept: BTreeMap<u64, &Verdict> = applied
            .iter()
            .rev()
            .take(SESSION_OUTCOMES_MAX)
            .map(|(&s, v)| (s, v))
            .collect();
        let dropped_through = applied.keys().rev().nth(SESSION_OUTCOMES_MAX).copied();
        let sequence = op.sequence;
        if let Some(&verdict) = kept.get(&sequence) {
            assert!(outcome.retried, "sequence {sequence}: {outcome:?}");
            assert_eq!(&outcome.verdict, verdict, "sequence {sequence}: the kept verdict");
        } else if dropped_through.is_some_and(|dropped| sequence <= dropped) {
            let oldest_kept = *kept.keys().next().expect("something is kept");
            let refused = Verdict::Rejected(Rejection::SequenceTooOld { oldest_kept });
            assert!(!outcome.retried, "sequence {sequence}: {outcome:?}");
            assert_eq!(outcome.verdict, refused, "sequence {sequence}");
        } else {
            let verdict = match (op.expected, version) {
                (Some(want), current) if current != Some(want) => {
                    Verdict::Rejected(Rejection::WrongExpectedVersion { current })
                }
                _ => {
                    last_position += 1;
                    let next = version.map_or(0, |version| version + 1);
                    version = Some(next);
                    Verdict::Applied(Effect::StreamAppended {
                        position: last_position,
                        version: next,
                    })
                }
            };
            assert!(!outcome.retried, "sequence {sequence}: {outcome:?}");
            assert_eq!(outcome.verdict, verdict, "sequence {sequence}");
            applied.insert(sequence, verdict);
        }
        assert_eq!(harness.state.streams().version(acme, "orders"), version);
        assert_eq!(harness.state.last_position(), last_position);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(64))]

    #[test]
    fn sessions_match_the_model(ops in prop::collection::vec(session_op(), 1..200)) {
        run_session(&ops);
    }
}
