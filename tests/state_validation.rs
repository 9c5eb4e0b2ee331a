//! Validation of the state machine's input (`farmlog_engine::state`).
//!
//! - **Stateless checks** (`state::validate`): for the envelope and every
//!   command family, a bad command per rule, refused by `state::encode`
//!   with a `CommandError` that names the exact field, the state unchanged
//!   (`testing::check` with `Expect::Invalid`, on a populated state). For
//!   every bounded field the longest good value is accepted, and applied
//!   where the state allows it; `encode`'s whole-command limit too.
//! - **Apply validates again**: a command that passed `encode`, patched
//!   inside its archive into an invalid one (the archive still structurally
//!   valid) and framed by hand, makes `State::apply` refuse the whole
//!   record, a valid command before it included, changing nothing.
//! - **Damaged batches**: every byte of a valid payload flipped three ways,
//!   every truncation, a misaligned payload, trailing bytes, the wrong
//!   record kind and an out-of-order index. Never a panic; a refused record
//!   leaves the hash and `last_applied` as they were; damage to the header
//!   or the offset table is always refused. Two properties write random
//!   garbage, or random command-shaped bytes, into payloads.
//! - **Regressions** of engine bugs, now fixed: a session opened at the end
//!   of time, sequence number 0, nonzero batch flags and reserved bytes,
//!   sessions used by another tenant or principal.
//!
//! Each property runs 256 cases by default; set `PROPTEST_CASES` for longer
//! runs.

use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};

use farmlog_engine::kinds::{BENCH, COMMAND_BATCH, RAW};
use farmlog_engine::state::batch::{BATCH_HEADER_BYTES, BATCH_MAGIC, COMMAND_BYTES_MAX};
use farmlog_engine::state::command::{
    Alarm, AlarmState, BulkRequest, BulkResponse, ChangeGroupMember, CommunicationMode, ComponentKind, ComponentRef,
    Content, Data, DefineGroup, Deregister, EncryptionSlot, Event, ExpectedVersion, GroupKind, Heartbeat, Idempotency,
    MapManagementId, MessageResponse, RegisterComponent, RegisterCustomer, ResponseStatus, RouteHop, SetEnabled,
    Severity, StreamAppend, Switch, UpstreamMessage, BODY_BYTES_MAX, HEARTBEAT_CLASS, HEARTBEAT_COMPONENTS_MAX,
    HEARTBEAT_SUBCLASS, IDEMPOTENCY_WINDOW_MS_DEFAULT, IDEMPOTENCY_WINDOW_MS_MAX, LANDLORD, NAME_BYTES_MAX,
    PARENTS_MAX, ROUTE_HOPS_MAX, TEXT_BYTES_MAX, URL_BYTES_MAX,
};
use farmlog_engine::state::outcome::{Effect, Fired, Object, Rejection, Verdict};
use farmlog_engine::state::testing::{self, aligned, check, command, hosted, in_session, own, Expect, Harness};
use farmlog_engine::state::{
    encode, ApplyError, BatchBuilder, BatchError, Command, CommandBody, State, SCHEMA_VERSION,
};
use proptest::prelude::*;
use proptest::sample::Index;

use ComponentKind::*;

// ------------------------------------------------------------------ shared

/// The log time of the commands under test, after the farm's.
const AT_MS: u64 = 10;

const KINDS: [ComponentKind; 7] = ComponentKind::ALL;

/// The commands that populate a state: the standard farm (the landlord's
/// hosted chain server ← apps ← agg; customer acme with proxy ← im ← si)
/// and a proxy group of acme's.
fn farm() -> Vec<Command> {
    let mut farm = testing::farm();
    farm.push(command("acme", 2, testing::define_group("proxies", GroupKind::Proxy)));
    farm
}

/// A harness that applied [`farm`], one record per command.
fn populated() -> Harness {
    let mut harness = Harness::new();
    for command in farm() {
        let outcome = harness.apply(command.clone());
        assert!(outcome.is_applied(), "setup {command:?}: {outcome:?}");
    }
    harness
}

/// [`check`] on a populated state: the farm's commands, then `steps`.
fn check_populated(steps: Vec<(Command, Expect)>) -> State {
    let mut all: Vec<_> = farm().into_iter().map(|command| (command, Expect::Applied)).collect();
    all.extend(steps);
    check(&all)
}

/// The same command from another principal.
fn as_principal(command: Command, principal: &str) -> Command {
    Command {
        principal: principal.to_string(),
        ..command
    }
}

fn align8(len: usize) -> usize {
    (len + 7) & !7
}

// ------------------------------------------------------------------- names

/// Control characters (Unicode category Cc) from every range: C0, DEL, C1.
const CONTROLS: [char; 8] = ['\u{0}', '\t', '\n', '\u{1f}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}'];

/// A name of exactly `NAME_BYTES_MAX` bytes: `prefix`, then `x`s.
fn long(prefix: &str) -> String {
    assert!(prefix.len() <= NAME_BYTES_MAX);
    format!("{prefix}{}", "x".repeat(NAME_BYTES_MAX - prefix.len()))
}

/// The longest name, in two-byte characters: bytes count, not characters.
fn longest_name() -> String {
    "é".repeat(NAME_BYTES_MAX / 2)
}

/// Names every name field accepts: the longest ones, a one-byte one, and
/// characters that are not controls though their UTF-8 comes close: space,
/// `~` (0x7E), U+00A0 (0xC2 0xA0), U+00C2 (0xC3 0x82), U+00C3, U+0100
/// (0xC4 0x80) and U+2028 (a separator, not a control).
fn good_names() -> Vec<String> {
    vec![
        long(""),
        longest_name(),
        "n".to_string(),
        "a b~\u{a0}\u{c2}\u{c3}\u{100}\u{2028}".to_string(),
    ]
}

/// Names every name field refuses: empty, one byte too long (in ASCII and
/// in two-byte characters), and a control character at the start, inside
/// and at the end.
fn bad_names() -> Vec<String> {
    let mut bad = vec![String::new(), format!("{}x", long("")), format!("{}x", longest_name())];
    for control in CONTROLS {
        bad.extend([
            format!("{control}name"),
            format!("na{control}me"),
            format!("name{control}"),
        ]);
    }
    bad
}

/// Tenant names: the portable alphabet (lowercase ASCII, digits, `-`, `_`,
/// `.`) of certificates.
fn good_tenants() -> Vec<String> {
    vec![long("t"), "0".to_string(), "a-b_c.d0123456789".to_string()]
}

fn bad_tenants() -> Vec<String> {
    let mut bad = bad_names();
    let unportable = [
        "Acme",
        "ACME",
        "ac me",
        "acmé",
        "a/b",
        "a:b",
        "a+b",
        "\u{a0}acme",
        "acme\u{2028}",
    ];
    bad.extend(unportable.map(str::to_string));
    bad
}

/// Asserts that `command` passes the stateless checks.
fn assert_encodes(field: &str, command: &Command) {
    if let Err(error) = encode(command) {
        panic!("`{field}`: a good value was refused: {error}");
    }
}

/// The steps of one name rule: every bad name in `field` of the command
/// `build` makes is refused naming `field`; every good name encodes.
fn name_rule(field: &'static str, build: impl Fn(String) -> Command) -> Vec<(Command, Expect)> {
    rule(field, good_names(), bad_names(), build)
}

/// [`name_rule`] for tenant names.
fn tenant_rule(field: &'static str, build: impl Fn(String) -> Command) -> Vec<(Command, Expect)> {
    rule(field, good_tenants(), bad_tenants(), build)
}

fn rule(
    field: &'static str,
    good: Vec<String>,
    bad: Vec<String>,
    build: impl Fn(String) -> Command,
) -> Vec<(Command, Expect)> {
    for value in good {
        assert_encodes(field, &build(value));
    }
    bad.into_iter()
        .map(|value| (build(value), Expect::Invalid(field)))
        .collect()
}

/// Free text of `len` bytes.
fn text(len: usize) -> String {
    "t".repeat(len)
}

// ------------------------------------------------- stateless: the envelope

#[test]
fn the_envelope_is_checked() {
    let tick = |tenant: &str| command(tenant, AT_MS, CommandBody::Tick);
    let mut steps = tenant_rule("tenant", |tenant| tick(&tenant));
    steps.extend(name_rule("principal", |principal| {
        as_principal(tick("acme"), &principal)
    }));
    let version = |schema_version| Command {
        schema_version,
        ..tick("acme")
    };
    let encrypted = Command {
        encryption: Some(EncryptionSlot {
            key_id: 1,
            nonce: [7; 24],
        }),
        ..tick("acme")
    };
    steps.extend([
        (version(0), Expect::Invalid("schema_version")),
        (version(SCHEMA_VERSION + 1), Expect::Invalid("schema_version")),
        (version(u16::MAX), Expect::Invalid("schema_version")),
        // The schema version is checked first: nothing else of a command
        // of another version can be read.
        (
            Command {
                schema_version: 2,
                ..tick("")
            },
            Expect::Invalid("schema_version"),
        ),
        (encrypted, Expect::Invalid("encryption")),
        (in_session(tick("acme"), 0, 1), Expect::Invalid("session.client_id")),
        (in_session(tick("acme"), 0, 0), Expect::Invalid("session.client_id")),
        (in_session(tick("acme"), 1, 0), Expect::Invalid("session.sequence")),
        (
            in_session(command("acme", AT_MS, CommandBody::OpenSession), 1, 1),
            Expect::Invalid("session"),
        ),
        // Good envelopes: a Tick runs in any well-formed tenant, registered
        // or not; any client id and sequence number from 1 pass the
        // stateless checks (this session does not exist).
        (tick(&long("t")), Expect::Effect(Effect::Ticked)),
        (as_principal(tick("acme"), &longest_name()), Expect::Applied),
        (
            in_session(tick("acme"), u64::MAX, u64::MAX),
            Expect::Rejected(Rejection::SessionUnknown),
        ),
        (command("acme", AT_MS, CommandBody::OpenSession), Expect::Applied),
    ]);
    check_populated(steps);
}

// ------------------------------------------------- stateless: the topology

#[test]
fn register_customer_is_checked() {
    let register = |name: String, display_name: String| {
        command(
            LANDLORD,
            AT_MS,
            CommandBody::RegisterCustomer(RegisterCustomer { name, display_name }),
        )
    };
    let mut steps = tenant_rule("body.name", |name| register(name, "Globex".into()));
    steps.extend([
        (
            command("acme", AT_MS, testing::customer("globex")),
            Expect::Invalid("tenant"),
        ),
        (register(LANDLORD.into(), "x".into()), Expect::Invalid("body.name")),
        (
            register("globex".into(), text(TEXT_BYTES_MAX + 1)),
            Expect::Invalid("body.display_name"),
        ),
        (
            register("globex".into(), format!("{}x", "é".repeat(TEXT_BYTES_MAX / 2))),
            Expect::Invalid("body.display_name"),
        ),
        // Free text is bounded only in length.
        (register("globex".into(), text(TEXT_BYTES_MAX)), Expect::Applied),
        (register("initech".into(), String::new()), Expect::Applied),
        (register("umbrella".into(), "line\none\u{85}".into()), Expect::Applied),
        (register(long("t"), "Longest".into()), Expect::Applied),
    ]);
    check_populated(steps);
}

/// The parents that make `kind`'s count valid.
fn valid_parents(kind: ComponentKind) -> Vec<ComponentRef> {
    match kind {
        ApplicationServer => vec![],
        SupportInstance => vec![own("im"), own("im2")],
        _ => vec![own("parent")],
    }
}

fn registration(id: &str, kind: ComponentKind, version: &str, parents: Vec<ComponentRef>) -> CommandBody {
    CommandBody::RegisterComponent(RegisterComponent {
        id: id.to_string(),
        kind,
        version: version.to_string(),
        mode: CommunicationMode::Message,
        parents,
    })
}

#[test]
fn register_component_is_checked() {
    let module = |id: &str, version: &str, parents| {
        command("acme", AT_MS, registration(id, IntegrationModule, version, parents))
    };
    let mut steps = name_rule("body.id", |id| module(&id, "1.0", vec![own("proxy")]));
    steps.extend(name_rule("body.version", |version| {
        module("im2", &version, vec![own("proxy")])
    }));
    steps.extend(name_rule("body.parents[0].id", |id| {
        module("im2", "1.0", vec![ComponentRef { hosted: true, id }])
    }));
    steps.extend(name_rule("body.parents[1].id", |id| {
        let parents = vec![own("im"), ComponentRef { hosted: false, id }];
        command("acme", AT_MS, registration("si2", SupportInstance, "1.0", parents))
    }));
    for kind in KINDS {
        // Hosted kinds belong to the landlord, the others to a customer.
        let wrong_tenant = if kind.is_hosted() { "acme" } else { LANDLORD };
        let body = registration("x", kind, "1.0", valid_parents(kind));
        steps.push((command(wrong_tenant, AT_MS, body), Expect::Invalid("body.kind")));
        let tenant = if kind.is_hosted() { LANDLORD } else { "acme" };
        let allowed = match kind {
            ApplicationServer => 0..=0,
            SupportInstance => 1..=PARENTS_MAX,
            _ => 1..=1,
        };
        for count in 0..=PARENTS_MAX + 1 {
            let parents: Vec<_> = (0..count).map(|at| own(&format!("p{at}"))).collect();
            let counted = command(tenant, AT_MS, registration("x", kind, "1.0", parents));
            match allowed.contains(&count) {
                true => assert_encodes("body.parents", &counted),
                false => steps.push((counted, Expect::Invalid("body.parents"))),
            }
        }
    }
    let instance = |parents| command("acme", AT_MS, registration("si2", SupportInstance, "1.0", parents));
    steps.extend([
        // The count is checked before the ids; the ids before duplicates.
        (
            command(
                LANDLORD,
                AT_MS,
                registration("s", ApplicationServer, "1", vec![own("")]),
            ),
            Expect::Invalid("body.parents"),
        ),
        (instance(vec![own(""), own("")]), Expect::Invalid("body.parents[0].id")),
        (instance(vec![own("im"), own("im")]), Expect::Invalid("body.parents[1]")),
        (
            instance(vec![hosted("agg"), hosted("agg")]),
            Expect::Invalid("body.parents[1]"),
        ),
        // The same id in two namespaces is two parents; apply finds no
        // hosted `im`.
        (
            instance(vec![own("im"), hosted("im")]),
            Expect::Rejected(Rejection::NotFound { object: Object::Parent }),
        ),
        (
            command(
                "acme",
                AT_MS,
                registration(&long("i"), IntegrationModule, &longest_name(), vec![own("proxy")]),
            ),
            Expect::Applied,
        ),
        (instance(vec![own("im"), own(&long("i"))]), Expect::Applied),
    ]);
    check_populated(steps);
}

#[test]
fn set_enabled_deregister_and_management_ids_are_checked() {
    let acme = |body| command("acme", AT_MS, body);
    let mut steps = name_rule("body.component", |component| {
        acme(CommandBody::SetEnabled(SetEnabled {
            component,
            switch: Switch::SupportInstance,
            enabled: false,
        }))
    });
    for hosted in [false, true] {
        steps.extend(name_rule("body.component.id", |id| {
            acme(CommandBody::Deregister(Deregister {
                component: ComponentRef { hosted, id },
            }))
        }));
    }
    let map = |proxy: String, management_id: String, component: Option<String>| {
        acme(CommandBody::MapManagementId(MapManagementId {
            proxy,
            management_id,
            component,
        }))
    };
    steps.extend(name_rule("body.proxy", |proxy| map(proxy, "10.0.0.1".into(), None)));
    steps.extend(name_rule("body.management_id", |id| {
        map("proxy".into(), id, Some("si".into()))
    }));
    steps.extend(name_rule("body.component", |id| {
        map("proxy".into(), "10.0.0.1".into(), Some(id))
    }));
    steps.extend([
        (map("proxy".into(), long("10."), Some("si".into())), Expect::Applied),
        // No component: removes the mapping.
        (map("proxy".into(), long("10."), None), Expect::Applied),
        (
            acme(testing::set_enabled("si", Switch::SupportInstance, false)),
            Expect::Applied,
        ),
        (acme(testing::deregister("si")), Expect::Applied),
    ]);
    check_populated(steps);
}

#[test]
fn groups_are_checked() {
    let define =
        |tenant: &str, name: String, kind| command(tenant, AT_MS, CommandBody::DefineGroup(DefineGroup { name, kind }));
    let mut steps = name_rule("body.name", |name| define("acme", name, GroupKind::Mlm));
    for hosted in [false, true] {
        steps.extend(name_rule("body.member.id", |id| {
            let member = ComponentRef { hosted, id };
            let body = CommandBody::ChangeGroupMember(ChangeGroupMember {
                group: "proxies".into(),
                member,
                add: true,
            });
            command("acme", AT_MS, body)
        }));
    }
    steps.extend(name_rule("body.group", |group| {
        command("acme", AT_MS, testing::group_member(&group, own("proxy"), true))
    }));
    steps.extend([
        // A security group holds one customer's components.
        (
            define(LANDLORD, "admins".into(), GroupKind::Security),
            Expect::Invalid("body.kind"),
        ),
        (define(LANDLORD, "mlms".into(), GroupKind::Mlm), Expect::Applied),
        (define(LANDLORD, "proxies".into(), GroupKind::Proxy), Expect::Applied),
        (define("acme", "admins".into(), GroupKind::Security), Expect::Applied),
        (define("acme", long("g"), GroupKind::Proxy), Expect::Applied),
        (
            command("acme", AT_MS, testing::group_member(&long("g"), own("proxy"), true)),
            Expect::Applied,
        ),
    ]);
    check_populated(steps);
}

// ------------------------------------------------- stateless: upstream

/// A data message from acme's integration module, changed by `edit`.
fn upstream(edit: impl FnOnce(&mut UpstreamMessage)) -> Command {
    let mut body = testing::message(
        "acme",
        "m1",
        "im",
        IntegrationModule,
        ("data", "x"),
        testing::data(b"payload"),
    );
    let CommandBody::Upstream(message) = &mut body else {
        unreachable!("testing::message builds an upstream message")
    };
    edit(message);
    command("acme", AT_MS, body)
}

/// A message from acme's integration module with this content.
fn sent(content: Content) -> Command {
    upstream(|message| message.content = content)
}

/// The same upstream message under another message id.
fn with_message_id(mut command: Command, id: &str) -> Command {
    let CommandBody::Upstream(message) = &mut command.body else {
        panic!("not an upstream message: {command:?}")
    };
    message.header.message_id = id.to_string();
    command
}

/// A heartbeat from acme's integration module that lists `components`.
fn heartbeat(components: Vec<String>) -> Command {
    upstream(|message| {
        message.header.class = HEARTBEAT_CLASS.into();
        message.header.subclass = HEARTBEAT_SUBCLASS.into();
        message.content = Content::Heartbeat(Heartbeat { components });
    })
}

/// `count` routing hops, each through a hosted component called `id`.
fn hops(count: usize, id: &str) -> Vec<RouteHop> {
    let hop = |at| RouteHop {
        component: hosted(id),
        at_ms: at as u64,
    };
    (0..count).map(hop).collect()
}

#[test]
fn upstream_headers_and_routing_are_checked() {
    let mut steps = name_rule("body.header.message_id", |id| {
        upstream(|message| message.header.message_id = id)
    });
    steps.extend(name_rule("body.header.source", |source| {
        upstream(|message| message.header.source = source)
    }));
    steps.extend(name_rule("body.header.source_version", |version| {
        upstream(|message| message.header.source_version = version)
    }));
    steps.extend(name_rule("body.header.class", |class| {
        upstream(|message| message.header.class = class)
    }));
    steps.extend(name_rule("body.header.subclass", |subclass| {
        upstream(|message| message.header.subclass = subclass)
    }));
    steps.extend(name_rule("body.routing[3].component.id", |id| {
        upstream(|message| {
            message.routing = hops(5, "agg");
            message.routing[3].component.id = id;
        })
    }));
    for customer in ["globex", "", "ACME", "acme ", LANDLORD] {
        let command = upstream(|message| message.header.customer = customer.into());
        steps.push((command, Expect::Invalid("body.header.customer")));
    }
    let from_landlord = Command {
        tenant: LANDLORD.into(),
        ..upstream(|message| message.header.customer = LANDLORD.into())
    };
    steps.extend([
        (from_landlord, Expect::Invalid("tenant")),
        (
            upstream(|message| message.routing = hops(ROUTE_HOPS_MAX + 1, "agg")),
            Expect::Invalid("body.routing"),
        ),
        // The hop count is checked before the hops.
        (
            upstream(|message| message.routing = hops(ROUTE_HOPS_MAX + 1, "")),
            Expect::Invalid("body.routing"),
        ),
        (
            upstream(|message| message.routing = hops(ROUTE_HOPS_MAX, &longest_name())),
            Expect::Applied,
        ),
        (
            with_message_id(upstream(|message| message.routing = Vec::new()), "m2"),
            Expect::Applied,
        ),
    ]);
    check_populated(steps);
}

fn alarm() -> Alarm {
    Alarm {
        alarm_id: "disk".into(),
        support_instance: "si".into(),
        severity: Severity::Major,
        state: AlarmState::Raised,
        text: "disk full".into(),
        data: Vec::new(),
    }
}

fn event() -> Event {
    Event {
        support_instance: Some("si".into()),
        severity: Severity::Minor,
        text: "restarted".into(),
        data: vec![1, 2, 3],
    }
}

fn data_content(body: Vec<u8>) -> Data {
    Data {
        mime_type: "application/octet-stream".into(),
        size: body.len() as u64,
        encoding: Some("base64".into()),
        body,
    }
}

fn response() -> MessageResponse {
    MessageResponse {
        in_reply_to: "d1".into(),
        status: ResponseStatus::Rejected,
        error: Some("no such class".into()),
    }
}

#[test]
fn alarms_events_and_data_are_checked() {
    let mut steps = name_rule("body.content.alarm_id", |alarm_id| {
        sent(Content::Alarm(Alarm { alarm_id, ..alarm() }))
    });
    steps.extend(name_rule("body.content.support_instance", |support_instance| {
        sent(Content::Alarm(Alarm {
            support_instance,
            ..alarm()
        }))
    }));
    steps.extend(name_rule("body.content.support_instance", |id| {
        sent(Content::Event(Event {
            support_instance: Some(id),
            ..event()
        }))
    }));
    steps.extend(name_rule("body.content.mime_type", |mime_type| {
        sent(Content::Data(Data {
            mime_type,
            ..data_content(b"x".to_vec())
        }))
    }));
    steps.extend(name_rule("body.content.encoding", |encoding| {
        sent(Content::Data(Data {
            encoding: Some(encoding),
            ..data_content(b"x".to_vec())
        }))
    }));
    let sized = |size, body: &[u8]| {
        sent(Content::Data(Data {
            size,
            ..data_content(body.to_vec())
        }))
    };
    steps.extend([
        (
            sent(Content::Alarm(Alarm {
                text: text(TEXT_BYTES_MAX + 1),
                ..alarm()
            })),
            Expect::Invalid("body.content.text"),
        ),
        (
            sent(Content::Alarm(Alarm {
                data: vec![0; BODY_BYTES_MAX + 1],
                ..alarm()
            })),
            Expect::Invalid("body.content.data"),
        ),
        (
            sent(Content::Event(Event {
                text: text(TEXT_BYTES_MAX + 1),
                ..event()
            })),
            Expect::Invalid("body.content.text"),
        ),
        (
            sent(Content::Event(Event {
                data: vec![0; BODY_BYTES_MAX + 1],
                ..event()
            })),
            Expect::Invalid("body.content.data"),
        ),
        (
            sent(Content::Data(data_content(vec![0; BODY_BYTES_MAX + 1]))),
            Expect::Invalid("body.content.body"),
        ),
        (sized(8, b"payload"), Expect::Invalid("body.content.size")),
        (sized(6, b"payload"), Expect::Invalid("body.content.size")),
        (sized(0, b"payload"), Expect::Invalid("body.content.size")),
        (sized(u64::MAX, b"payload"), Expect::Invalid("body.content.size")),
        (sized(1, b""), Expect::Invalid("body.content.size")),
        // Good: an event about no support instance, a text-only data body,
        // an empty one.
        (
            sent(Content::Event(Event {
                support_instance: None,
                ..event()
            })),
            Expect::Applied,
        ),
        (
            with_message_id(
                sent(Content::Data(Data {
                    encoding: None,
                    ..data_content(Vec::new())
                })),
                "m2",
            ),
            Expect::Applied,
        ),
    ]);
    check_populated(steps);
}

#[test]
fn responses_and_bulk_transfers_are_checked() {
    let mut steps = name_rule("body.content.in_reply_to", |in_reply_to| {
        sent(Content::Response(MessageResponse {
            in_reply_to,
            ..response()
        }))
    });
    let bulk = |granted, url: Option<String>, reason: Option<String>| {
        sent(Content::BulkResponse(BulkResponse {
            request_message_id: "b1".into(),
            granted,
            url,
            reason,
        }))
    };
    steps.extend(name_rule("body.content.request_message_id", |id| {
        sent(Content::BulkResponse(BulkResponse {
            request_message_id: id,
            granted: true,
            url: Some("https://bulk.example/b1".into()),
            reason: None,
        }))
    }));
    let url = || Some("https://bulk.example/b1".to_string());
    let reason = || Some("too large".to_string());
    let longest_url = Some(format!("https://{}", "u".repeat(URL_BYTES_MAX - 8)));
    let too_long_url = Some(format!("https://{}", "u".repeat(URL_BYTES_MAX - 7)));
    let request = |size, description| sent(Content::BulkRequest(BulkRequest { size, description }));
    // The combinations of (granted, url, reason) the rules refuse; a grant
    // with a reason is `a_grants_reason_is_bounded_too`.
    steps.extend([
        (bulk(true, None, None), Expect::Invalid("body.content.url")),
        (bulk(true, None, reason()), Expect::Invalid("body.content.url")),
        (
            bulk(true, Some(String::new()), None),
            Expect::Invalid("body.content.url"),
        ),
        (
            bulk(true, too_long_url.clone(), None),
            Expect::Invalid("body.content.url"),
        ),
        (bulk(false, url(), None), Expect::Invalid("body.content.url")),
        (bulk(false, url(), reason()), Expect::Invalid("body.content.url")),
        (
            bulk(false, Some(String::new()), reason()),
            Expect::Invalid("body.content.url"),
        ),
        (bulk(false, too_long_url, reason()), Expect::Invalid("body.content.url")),
        (bulk(false, None, None), Expect::Invalid("body.content.reason")),
        (
            bulk(false, None, Some(text(TEXT_BYTES_MAX + 1))),
            Expect::Invalid("body.content.reason"),
        ),
        (
            sent(Content::Response(MessageResponse {
                error: Some(text(TEXT_BYTES_MAX + 1)),
                ..response()
            })),
            Expect::Invalid("body.content.error"),
        ),
        (request(0, "core dump".into()), Expect::Invalid("body.content.size")),
        (
            request(1, text(TEXT_BYTES_MAX + 1)),
            Expect::Invalid("body.content.description"),
        ),
    ]);
    // Good ones: each stored as its own message.
    let good = [
        bulk(true, url(), None),
        bulk(true, longest_url, None),
        bulk(false, None, reason()),
        bulk(false, None, Some(text(TEXT_BYTES_MAX))),
        sent(Content::Response(MessageResponse {
            error: None,
            ..response()
        })),
        sent(Content::Response(MessageResponse {
            error: Some(text(TEXT_BYTES_MAX)),
            ..response()
        })),
        request(1, String::new()),
        request(u64::MAX, text(TEXT_BYTES_MAX)),
    ];
    for (at, command) in good.into_iter().enumerate() {
        steps.push((with_message_id(command, &format!("good{at}")), Expect::Applied));
    }
    check_populated(steps);
}

/// Every free-text field is bounded by `TEXT_BYTES_MAX`, but a grant's
/// reason is never looked at (`bulk_response` matches
/// `(true, Some(url), _)`): it passes at any length up to the whole-command
/// limit. Whether a grant may carry a reason at all is for the fix to say;
/// either way, this one must be refused.
#[test]
fn a_grants_reason_is_bounded_too() {
    let grant = |reason: String| {
        sent(Content::BulkResponse(BulkResponse {
            request_message_id: "b1".into(),
            granted: true,
            url: Some("https://bulk.example/b1".into()),
            reason: Some(reason),
        }))
    };
    check_populated(vec![(
        grant(text(TEXT_BYTES_MAX + 1)),
        Expect::Invalid("body.content.reason"),
    )]);
}

#[test]
fn heartbeats_are_checked() {
    let mut steps = name_rule("body.content.components[2]", |id| {
        heartbeat(vec!["im".into(), "si".into(), id, "proxy".into()])
    });
    let named = |class: &str, subclass: &str| {
        upstream(|message| {
            message.header.class = class.into();
            message.header.subclass = subclass.into();
            message.content = Content::Heartbeat(Heartbeat {
                components: vec!["si".into()],
            });
        })
    };
    let many = |count| heartbeat(vec!["si".to_string(); count]);
    steps.extend([
        (named("data", HEARTBEAT_SUBCLASS), Expect::Invalid("body.header.class")),
        (named(HEARTBEAT_CLASS, "x"), Expect::Invalid("body.header.class")),
        (
            named(HEARTBEAT_SUBCLASS, HEARTBEAT_CLASS),
            Expect::Invalid("body.header.class"),
        ),
        (
            named("Infrastructure", HEARTBEAT_SUBCLASS),
            Expect::Invalid("body.header.class"),
        ),
        (
            many(HEARTBEAT_COMPONENTS_MAX + 1),
            Expect::Invalid("body.content.components"),
        ),
        // The count is checked before the components.
        (
            heartbeat(vec![String::new(); HEARTBEAT_COMPONENTS_MAX + 1]),
            Expect::Invalid("body.content.components"),
        ),
        (many(HEARTBEAT_COMPONENTS_MAX), Expect::Applied),
        (with_message_id(heartbeat(Vec::new()), "m2"), Expect::Applied),
    ]);
    check_populated(steps);
}

// ------------------------------------------------- stateless: streams

fn stream_append() -> StreamAppend {
    StreamAppend {
        stream: "orders".into(),
        expected: ExpectedVersion::Any,
        idempotency: Some(Idempotency {
            key: "k1".into(),
            window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
        }),
        event_type: "placed".into(),
        body: b"{}".to_vec(),
    }
}

fn appended(body: StreamAppend) -> Command {
    command("acme", AT_MS, CommandBody::StreamAppend(body))
}

#[test]
fn stream_appends_are_checked() {
    let mut steps = name_rule("body.stream", |stream| {
        appended(StreamAppend {
            stream,
            ..stream_append()
        })
    });
    steps.extend(name_rule("body.event_type", |event_type| {
        appended(StreamAppend {
            event_type,
            ..stream_append()
        })
    }));
    let keyed = |key: &str, window_ms| {
        appended(StreamAppend {
            idempotency: Some(Idempotency {
                key: key.to_string(),
                window_ms,
            }),
            ..stream_append()
        })
    };
    steps.extend(name_rule("body.idempotency.key", |key| {
        keyed(&key, IDEMPOTENCY_WINDOW_MS_DEFAULT)
    }));
    steps.extend([
        (
            appended(StreamAppend {
                body: vec![0; BODY_BYTES_MAX + 1],
                ..stream_append()
            }),
            Expect::Invalid("body.body"),
        ),
        (keyed("k1", 0), Expect::Invalid("body.idempotency.window_ms")),
        (
            keyed("k1", IDEMPOTENCY_WINDOW_MS_MAX + 1),
            Expect::Invalid("body.idempotency.window_ms"),
        ),
        (keyed("k1", u64::MAX), Expect::Invalid("body.idempotency.window_ms")),
        // The key is checked before the window.
        (keyed("", 0), Expect::Invalid("body.idempotency.key")),
        (keyed("k1", 1), Expect::Applied),
        (keyed("k2", IDEMPOTENCY_WINDOW_MS_MAX), Expect::Applied),
        (
            appended(StreamAppend {
                idempotency: None,
                body: Vec::new(),
                ..stream_append()
            }),
            Expect::Applied,
        ),
    ]);
    check_populated(steps);
}

// ------------------------------------------- stateless: the longest values

/// The longest good value of every bounded field, in commands of customer
/// `tenant` (a longest tenant name) sent by a principal with the longest
/// name; each must be applied. `proxy`, `modules` and `instance` are the
/// customer's components, registered by the first commands.
fn longest_everything() -> Vec<Command> {
    let tenant = long("t");
    let in_tenant = |body| as_principal(command(&tenant, AT_MS, body), &longest_name());
    let (proxy, instance) = (long("proxy"), long("si"));
    let modules = [long("im1"), long("im2")];
    let module_refs = || modules.iter().map(|id| own(id)).collect::<Vec<_>>();
    let version = longest_name();
    let mut commands = vec![
        command(
            LANDLORD,
            AT_MS,
            CommandBody::RegisterCustomer(RegisterCustomer {
                name: tenant.clone(),
                display_name: text(TEXT_BYTES_MAX),
            }),
        ),
        in_tenant(registration(&proxy, Proxy, &version, vec![hosted("agg")])),
        in_tenant(registration(
            &modules[0],
            IntegrationModule,
            &version,
            vec![own(&proxy)],
        )),
        in_tenant(registration(
            &modules[1],
            IntegrationModule,
            &version,
            vec![own(&proxy)],
        )),
        in_tenant(registration(&instance, SupportInstance, &version, module_refs())),
        in_tenant(testing::set_enabled(&instance, Switch::SupportInstance, false)),
        in_tenant(testing::set_enabled(&proxy, Switch::ProxyForwarding, false)),
        in_tenant(testing::map_management_id(&proxy, &long("10."), Some(&instance))),
        in_tenant(testing::define_group(&long("proxies"), GroupKind::Proxy)),
        in_tenant(testing::group_member(&long("proxies"), own(&proxy), true)),
        in_tenant(testing::define_group(&long("admins"), GroupKind::Security)),
    ];
    let message = |at: usize, (class, subclass): (String, String), content| {
        let mut body = testing::message(
            &tenant,
            &long(&format!("m{at}-")),
            &modules[0],
            IntegrationModule,
            (&class, &subclass),
            content,
        );
        let CommandBody::Upstream(message) = &mut body else {
            unreachable!("testing::message builds an upstream message")
        };
        message.header.source_version = longest_name();
        message.routing = hops(ROUTE_HOPS_MAX, &longest_name());
        in_tenant(body)
    };
    let longest_class = || (long("class"), long("subclass"));
    let contents = [
        Content::Alarm(Alarm {
            alarm_id: long("alarm"),
            support_instance: instance.clone(),
            text: text(TEXT_BYTES_MAX),
            data: vec![0xa5; BODY_BYTES_MAX],
            ..alarm()
        }),
        Content::Event(Event {
            support_instance: Some(instance.clone()),
            severity: Severity::Info,
            text: text(TEXT_BYTES_MAX),
            data: vec![0x5a; BODY_BYTES_MAX],
        }),
        Content::Data(Data {
            mime_type: long("application/"),
            encoding: Some(long("base64")),
            ..data_content(vec![0x3c; BODY_BYTES_MAX])
        }),
        Content::Response(MessageResponse {
            in_reply_to: long("d"),
            error: Some(text(TEXT_BYTES_MAX)),
            ..response()
        }),
        Content::BulkRequest(BulkRequest {
            size: u64::MAX,
            description: text(TEXT_BYTES_MAX),
        }),
        Content::BulkResponse(BulkResponse {
            request_message_id: long("b"),
            granted: true,
            url: Some("u".repeat(URL_BYTES_MAX)),
            reason: None,
        }),
        Content::BulkResponse(BulkResponse {
            request_message_id: long("b"),
            granted: false,
            url: None,
            reason: Some(text(TEXT_BYTES_MAX)),
        }),
    ];
    for (at, content) in contents.into_iter().enumerate() {
        commands.push(message(at, longest_class(), content));
    }
    let seen = Content::Heartbeat(Heartbeat {
        components: vec![instance.clone(); HEARTBEAT_COMPONENTS_MAX],
    });
    let heartbeat_class = (HEARTBEAT_CLASS.to_string(), HEARTBEAT_SUBCLASS.to_string());
    commands.push(message(99, heartbeat_class, seen));
    let append = |key: &str, window_ms| {
        CommandBody::StreamAppend(StreamAppend {
            stream: long("orders"),
            expected: ExpectedVersion::Any,
            idempotency: Some(Idempotency {
                key: long(key),
                window_ms,
            }),
            event_type: long("placed"),
            body: vec![0xc3; BODY_BYTES_MAX],
        })
    };
    commands.extend([
        in_tenant(append("k1", IDEMPOTENCY_WINDOW_MS_MAX)),
        in_tenant(append("k2", 1)),
        in_tenant(CommandBody::OpenSession),
        // The first session opened in the state: client id 1.
        in_session(in_tenant(CommandBody::Tick), 1, u64::MAX),
        in_tenant(testing::group_member(&long("proxies"), own(&proxy), false)),
        in_tenant(testing::map_management_id(&proxy, &long("10."), None)),
        in_tenant(CommandBody::Deregister(Deregister {
            component: own(&instance),
        })),
    ]);
    commands
}

#[test]
fn the_longest_good_values_are_applied() {
    let steps = longest_everything()
        .into_iter()
        .map(|command| (command, Expect::Applied))
        .collect();
    let state = check_populated(steps);
    let tenant = state
        .tenant_slot(&long("t"))
        .expect("the longest tenant name registered");
    assert_eq!(state.messages().stored_count(), 8);
    assert_eq!(state.streams().version(tenant, &long("orders")), Some(1));
}

/// `encode`'s limit on a whole command: a field far over its own bound is
/// refused as `command`, before any field is looked at. No command whose
/// every field is within bounds reaches the limit: the largest of each
/// kind encodes within it.
#[test]
fn the_whole_command_is_bounded() {
    let append_of = |len| {
        appended(StreamAppend {
            body: vec![0; len],
            ..stream_append()
        })
    };
    let data_of = |len| sent(Content::Data(data_content(vec![0; len])));
    let alarm_of = |len| {
        sent(Content::Alarm(Alarm {
            data: vec![0; len],
            ..alarm()
        }))
    };
    let event_of = |text_len, data_len| {
        sent(Content::Event(Event {
            text: text(text_len),
            data: vec![0; data_len],
            ..event()
        }))
    };
    check_populated(vec![
        // Over the field's bound, under the command's: the field is named.
        (append_of(BODY_BYTES_MAX + 1), Expect::Invalid("body.body")),
        (data_of(BODY_BYTES_MAX + 1), Expect::Invalid("body.content.body")),
        // Over the command's: the command is.
        (append_of(COMMAND_BYTES_MAX), Expect::Invalid("command")),
        (data_of(COMMAND_BYTES_MAX), Expect::Invalid("command")),
        (alarm_of(COMMAND_BYTES_MAX), Expect::Invalid("command")),
        (event_of(COMMAND_BYTES_MAX, BODY_BYTES_MAX), Expect::Invalid("command")),
        (event_of(TEXT_BYTES_MAX, COMMAND_BYTES_MAX), Expect::Invalid("command")),
        (append_of(BODY_BYTES_MAX), Expect::Applied),
        (
            event_of(TEXT_BYTES_MAX, BODY_BYTES_MAX),
            Expect::Effect(Effect::MessageStored {
                position: farm().len() as u64 + 2,
                alarm: None,
            }),
        ),
    ]);
    let mut largest = 0;
    for command in longest_everything() {
        let encoded = encode(&command).unwrap_or_else(|error| panic!("{error}"));
        largest = largest.max(encoded.bytes().len());
    }
    assert!(largest > BODY_BYTES_MAX, "the largest command carries a full body");
    assert!(largest <= COMMAND_BYTES_MAX, "{largest} bytes");
}

// ------------------------------------------------ apply validates again

/// Frames archived commands into a batch payload by hand, as laid out in
/// `state::batch`:
///
/// ```text
///  0  u32  magic "FLCB"
///  4  u16  schema version
///  6  u16  flags, zero
///  8  u32  count
/// 12  u32  reserved, zero
/// 16  count × { u32 offset, u32 length }
///  …  each command at the first 8-aligned offset after the one before,
///     zero padding; the last one's padding ends the payload
/// ```
///
/// What `BatchBuilder` writes, for bytes that need not be valid commands.
fn frame(commands: &[&[u8]]) -> impl Deref<Target = [u8]> {
    let count = commands.len();
    let table_end = BATCH_HEADER_BYTES + 8 * count;
    let mut payload = Vec::new();
    payload.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    payload.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    payload.extend_from_slice(&0u16.to_le_bytes());
    payload.extend_from_slice(&(count as u32).to_le_bytes());
    payload.extend_from_slice(&0u32.to_le_bytes());
    let mut offset = align8(table_end);
    for bytes in commands {
        payload.extend_from_slice(&(offset as u32).to_le_bytes());
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        offset += align8(bytes.len());
    }
    payload.resize(align8(table_end), 0);
    for bytes in commands {
        payload.extend_from_slice(bytes);
        payload.resize(align8(payload.len()), 0);
    }
    assert_eq!(payload.len(), offset);
    aligned(&payload)
}

/// The payload `BatchBuilder` makes of `commands`, 8-aligned.
fn built(commands: &[Command]) -> impl Deref<Target = [u8]> {
    let mut batch = BatchBuilder::new();
    for command in commands {
        let encoded = encode(command).unwrap_or_else(|error| panic!("{command:?}: {error}"));
        batch.push(encoded).expect("test batches fit");
    }
    aligned(&batch.finish())
}

/// The archive of a command that passes `encode`.
fn encoded(command: &Command) -> Vec<u8> {
    encode(command)
        .unwrap_or_else(|error| panic!("{command:?}: {error}"))
        .bytes()
        .to_vec()
}

/// `bytes` with the only occurrence of `marker` replaced by `replacement`
/// (of the same length).
fn patched(bytes: &[u8], marker: &[u8], replacement: &[u8]) -> Vec<u8> {
    assert_eq!(marker.len(), replacement.len());
    let found: Vec<usize> = (0..=bytes.len() - marker.len())
        .filter(|&at| &bytes[at..at + marker.len()] == marker)
        .collect();
    assert_eq!(found.len(), 1, "{marker:x?} must occur exactly once in the archive");
    let mut patched = bytes.to_vec();
    patched[found[0]..found[0] + marker.len()].copy_from_slice(replacement);
    patched
}

/// `marker` with its byte at `at` replaced by `byte`.
fn with_byte(marker: &str, at: usize, byte: u8) -> Vec<u8> {
    let mut bytes = marker.as_bytes().to_vec();
    bytes[at] = byte;
    bytes
}

/// A command patched, after `encode`, into one the stateless checks refuse:
/// the command, the bytes to find and what to write over them, and the
/// field the refusal names (None: bytecheck refuses the archive itself).
struct Patch {
    command: Command,
    marker: Vec<u8>,
    replacement: Vec<u8>,
    field: Option<&'static str>,
}

fn patch(command: Command, marker: &str, at: usize, byte: u8, field: Option<&'static str>) -> Patch {
    Patch {
        command,
        marker: marker.as_bytes().to_vec(),
        replacement: with_byte(marker, at, byte),
        field,
    }
}

fn patches() -> Vec<Patch> {
    let acme = |body| command("acme", AT_MS, body);
    let group = acme(testing::define_group("patched-group", GroupKind::Mlm));
    let window = 0x1234_5678u64;
    let keyed = appended(StreamAppend {
        idempotency: Some(Idempotency {
            key: "patched-key".into(),
            window_ms: window,
        }),
        ..stream_append()
    });
    let (client, sequence) = (0x0a0b_0c0d_0e0f_1011u64, 0x1122_3344_5566_7788u64);
    let session_tick = || acme(CommandBody::Tick);
    let body_len = 0x0001_2345u64;
    let mut routed = sent(testing::data(b"payload"));
    if let CommandBody::Upstream(message) = &mut routed.body {
        message.routing = hops(2, "patched-hop");
        message.routing[1].component.id = "other-hop".into();
    }
    vec![
        patch(group.clone(), "acme", 1, 0x01, Some("tenant")),
        patch(group.clone(), "acme", 1, b'C', Some("tenant")),
        patch(
            as_principal(group.clone(), "patched-principal"),
            "patched-principal",
            3,
            0x7f,
            Some("principal"),
        ),
        patch(group.clone(), "patched-group", 0, 0x1f, Some("body.name")),
        patch(group, "patched-group", 7, 0xff, None),
        patch(
            command(LANDLORD, AT_MS, testing::customer("globex-patched")),
            "globex-patched",
            6,
            b'/',
            Some("body.name"),
        ),
        patch(
            acme(testing::component("si-patched", SupportInstance, vec![own("im")])),
            "si-patched",
            2,
            0x00,
            Some("body.id"),
        ),
        patch(
            acme(testing::component(
                "im-new",
                IntegrationModule,
                vec![own("patched-proxy")],
            )),
            "patched-proxy",
            0,
            b'\n',
            Some("body.parents[0].id"),
        ),
        patch(
            acme(testing::set_enabled("patched-si", Switch::SupportInstance, true)),
            "patched-si",
            9,
            0x01,
            Some("body.component"),
        ),
        patch(
            acme(testing::map_management_id("proxy", "10.0.0.100", Some("si"))),
            "10.0.0.100",
            4,
            0x7f,
            Some("body.management_id"),
        ),
        patch(
            acme(testing::group_member("proxies", own("patched-member"), true)),
            "patched-member",
            1,
            0x01,
            Some("body.member.id"),
        ),
        patch(
            upstream(|message| message.header.source = "patched-source".into()),
            "patched-source",
            0,
            0x01,
            Some("body.header.source"),
        ),
        patch(routed, "patched-hop", 0, 0x01, Some("body.routing[0].component.id")),
        patch(
            heartbeat(vec!["si".into(), "patched-seen".into()]),
            "patched-seen",
            0,
            0x01,
            Some("body.content.components[1]"),
        ),
        // Still a good name, but not the heartbeat class.
        patch(
            heartbeat(vec!["si".into()]),
            HEARTBEAT_CLASS,
            0,
            b'I',
            Some("body.header.class"),
        ),
        patch(
            sent(Content::Alarm(Alarm {
                alarm_id: "patched-alarm".into(),
                ..alarm()
            })),
            "patched-alarm",
            0,
            0x01,
            Some("body.content.alarm_id"),
        ),
        patch(
            appended(StreamAppend {
                stream: "patched-stream".into(),
                ..stream_append()
            }),
            "patched-stream",
            0,
            0x01,
            Some("body.stream"),
        ),
        Patch {
            command: keyed.clone(),
            marker: window.to_le_bytes().to_vec(),
            replacement: 0u64.to_le_bytes().to_vec(),
            field: Some("body.idempotency.window_ms"),
        },
        Patch {
            command: keyed,
            marker: window.to_le_bytes().to_vec(),
            replacement: (IDEMPOTENCY_WINDOW_MS_MAX + 1).to_le_bytes().to_vec(),
            field: Some("body.idempotency.window_ms"),
        },
        // The body's own length is in the archive too: the size is the one
        // right after the MIME type, an 8-byte string held inline.
        Patch {
            command: sent(Content::Data(Data {
                mime_type: "text/csv".into(),
                ..data_content(vec![b'x'; body_len as usize])
            })),
            marker: [&b"text/csv"[..], &body_len.to_le_bytes()].concat(),
            replacement: [&b"text/csv"[..], &(body_len + 1).to_le_bytes()].concat(),
            field: Some("body.content.size"),
        },
        Patch {
            command: in_session(session_tick(), client, sequence),
            marker: sequence.to_le_bytes().to_vec(),
            replacement: 0u64.to_le_bytes().to_vec(),
            field: Some("session.sequence"),
        },
        Patch {
            command: in_session(session_tick(), client, sequence),
            marker: client.to_le_bytes().to_vec(),
            replacement: 0u64.to_le_bytes().to_vec(),
            field: Some("session.client_id"),
        },
    ]
}

/// Applies `payload` as the next record of a clone of `state`; asserts it
/// is refused, with the state unchanged, and returns the error.
fn refused(state: &State, kind: u16, payload: &[u8]) -> ApplyError {
    let mut state = state.clone();
    let (hash, last_applied) = (state.hash(), state.last_applied());
    let error = match state.apply(last_applied + 1, kind, payload) {
        Ok(outcomes) => panic!("a bad record was applied: {outcomes:?}"),
        Err(error) => error,
    };
    assert_eq!(state.hash(), hash, "a refused record changed the state: {error}");
    assert_eq!(state.last_applied(), last_applied, "{error}");
    error
}

/// Whether apply refused the record's framing, before reading a command.
fn malformed(error: &ApplyError) -> bool {
    matches!(
        error,
        ApplyError::Batch {
            source: BatchError::Malformed { .. },
            ..
        }
    )
}

#[test]
fn the_hand_framing_is_the_builders() {
    let commands = valid_record();
    let archives: Vec<Vec<u8>> = commands.iter().map(encoded).collect();
    let slices: Vec<&[u8]> = archives.iter().map(Vec::as_slice).collect();
    assert_eq!(frame(&slices)[..], built(&commands)[..]);
}

#[test]
fn apply_validates_each_command_again() {
    let base = populated();
    let first = encoded(&command(LANDLORD, AT_MS, testing::customer("globex")));
    for (at, patch) in patches().into_iter().enumerate() {
        let good = encoded(&patch.command);
        let bad = patched(&good, &patch.marker, &patch.replacement);
        // Unpatched, the same record applies.
        let mut state = base.state.clone();
        let outcomes = state.apply(state.last_applied() + 1, COMMAND_BATCH, &frame(&[&first, &good]));
        assert_eq!(outcomes.map(|outcomes| outcomes.len()).ok(), Some(2), "patch {at}");
        let error = refused(&base.state, COMMAND_BATCH, &frame(&[&first, &bad]));
        let ApplyError::Batch {
            source: BatchError::BadCommand { slot: 1, reason },
            ..
        } = &error
        else {
            panic!("patch {at}: {error}");
        };
        if let Some(field) = patch.field {
            let named = format!("invalid field `{field}`");
            assert!(reason.starts_with(&named), "patch {at}: {reason}, not {named}");
        }
        // Alone in its record, and first of two, it is refused too.
        refused(&base.state, COMMAND_BATCH, &frame(&[&bad]));
        refused(&base.state, COMMAND_BATCH, &frame(&[&bad, &first]));
    }
}

// -------------------------------------------------------- damaged batches

/// A valid record of several families, against [`farm`].
fn valid_record() -> Vec<Command> {
    let acme = |body| command("acme", AT_MS, body);
    vec![
        acme(CommandBody::Tick),
        command(LANDLORD, AT_MS, testing::customer("globex")),
        acme(testing::component("si2", SupportInstance, vec![own("im")])),
        acme(testing::group_member("proxies", own("proxy"), true)),
        sent(testing::alarm("si", "disk", AlarmState::Raised)),
        acme(testing::heartbeat("acme", "m2", "im", IntegrationModule, &["si"])),
        acme(testing::append(
            "orders",
            ExpectedVersion::NoStream,
            Some("k1"),
            b"first",
        )),
        acme(CommandBody::OpenSession),
    ]
}

/// Applies a damaged `payload` to a clone of `base`: no panic; refused with
/// the state unchanged, or applied whole, one outcome per command, and the
/// state survives a snapshot round trip. Returns whether it was applied.
fn apply_damaged(base: &State, base_hash: [u8; 32], payload: &[u8], what: &dyn Fn() -> String) -> bool {
    let mut state = base.clone();
    let index = base.last_applied() + 1;
    let result = catch_unwind(AssertUnwindSafe(|| state.apply(index, COMMAND_BATCH, payload)));
    let result = result.unwrap_or_else(|_| panic!("{}: apply panicked", what()));
    match result {
        Err(error) => {
            assert_eq!(state.hash(), base_hash, "{}: refused ({error}) but changed", what());
            assert_eq!(state.last_applied(), base.last_applied(), "{}", what());
            false
        }
        Ok(outcomes) => {
            let count = u32::from_le_bytes(payload[8..12].try_into().expect("four bytes"));
            assert_eq!(outcomes.len(), count as usize, "{}: one outcome per command", what());
            assert_eq!(state.last_applied(), index, "{}", what());
            let restored = State::restore(&state.snapshot()).expect("a fresh snapshot restores");
            assert_eq!(restored.hash(), state.hash(), "{}", what());
            true
        }
    }
}

#[test]
fn every_damaged_byte_is_refused_or_applied_whole() {
    let base = populated().state;
    let commands = valid_record();
    let payload = built(&commands);
    let table_end = BATCH_HEADER_BYTES + 8 * commands.len();
    let base_hash = base.hash();
    assert!(apply_damaged(&base, base_hash, &payload, &|| "undamaged".into()));
    let mut applied = 0;
    for at in 0..payload.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = aligned(&payload);
            damaged[at] ^= mask;
            let what = || format!("byte {at} ^ {mask:#04x}");
            let accepted = apply_damaged(&base, base_hash, &damaged, &what);
            // Magic, schema version, flags, count, reserved, offset table.
            assert!(!(accepted && at < table_end), "{}: header damage applied", what());
            applied += usize::from(accepted);
        }
    }
    // Inside the commands much damage makes other valid commands (a
    // timestamp, a flag, a letter of a name, rkyv's padding) and applies;
    // bytecheck or the stateless checks catch the rest.
    assert!(
        applied < 3 * (payload.len() - table_end),
        "{applied} damaged records applied"
    );
}

#[test]
fn truncated_misaligned_and_padded_payloads_are_refused() {
    let base = populated().state;
    let payload = built(&valid_record());
    for len in 0..payload.len() {
        refused(&base, COMMAND_BATCH, &aligned(&payload[..len]));
    }
    // One byte into an aligned buffer.
    let mut shifted = aligned(&vec![0; payload.len() + 1]);
    shifted[1..].copy_from_slice(&payload);
    let error = refused(&base, COMMAND_BATCH, &shifted[1..]);
    assert!(malformed(&error), "{error}");
    // The layout is canonical: nothing may follow the last command's
    // padding, zeros or not, nor a command the table does not list.
    let extra = encoded(&command("acme", AT_MS, CommandBody::Tick));
    for trailer in [&[0u8][..], &[0; 8], &[0xff; 8], &[0; 4096], &extra] {
        let mut longer = payload.to_vec();
        longer.extend_from_slice(trailer);
        let error = refused(&base, COMMAND_BATCH, &aligned(&longer));
        assert!(malformed(&error), "{error}");
    }
    // Padding is zero, between commands and after the last. A 3-byte slot
    // (no valid archive: refused only when read) is followed by 5 bytes of
    // it.
    let table_end = BATCH_HEADER_BYTES + 2 * 8;
    let short_first = frame(&[&[1; 3], &extra]);
    let short_last = frame(&[&extra, &[1; 3]]);
    let last_padding = short_last.len() - 5..short_last.len();
    for (clean, padding) in [(short_first, table_end + 3..table_end + 8), (short_last, last_padding)] {
        let error = refused(&base, COMMAND_BATCH, &clean);
        assert!(!malformed(&error), "zero padding is well-formed: {error}");
        for at in padding {
            let mut dirty = aligned(&clean);
            dirty[at] = 0x80;
            let error = refused(&base, COMMAND_BATCH, &dirty);
            assert!(malformed(&error), "padding byte {at}: {error}");
        }
    }
}

/// Every bound is checked before the log and again in apply (`command.rs`,
/// `validate.rs`), but `encode`'s `COMMAND_BYTES_MAX` is not: apply reads
/// a command's archive from its end, so a slot of any length whose last
/// bytes are a valid command passes, unreferenced bytes and all.
#[test]
fn apply_refuses_a_command_over_the_command_limit() {
    let base = populated().state;
    let tick = encoded(&command("acme", AT_MS, CommandBody::Tick));
    let mut oversized = vec![0xab; align8(COMMAND_BYTES_MAX + 1)];
    oversized.extend_from_slice(&tick);
    refused(&base, COMMAND_BATCH, &frame(&[&oversized]));
}

#[test]
fn records_of_another_kind_or_out_of_order_are_refused() {
    let mut harness = populated();
    let payload = built(&valid_record());
    for kind in [RAW, BENCH, COMMAND_BATCH + 1, u16::MAX] {
        let error = refused(&harness.state, kind, &payload);
        assert!(matches!(error, ApplyError::NotCommands { .. }), "{error}");
    }
    let outcome = harness.apply(command("acme", AT_MS, CommandBody::Tick));
    assert!(outcome.is_applied());
    let last = harness.state.last_applied();
    for index in [0, 1, last - 1, last] {
        let mut state = harness.state.clone();
        let result = state.apply(index, COMMAND_BATCH, &payload);
        assert!(
            matches!(result, Err(ApplyError::OutOfOrder { last_applied, .. }) if last_applied == last),
            "index {index}: {result:?}"
        );
        assert_eq!(state.hash(), harness.state.hash());
        assert_eq!(state.last_applied(), last);
    }
    // A gap is not out of order: Raft skips indexes of other records.
    let mut state = harness.state.clone();
    let outcomes = state
        .apply(last + 10, COMMAND_BATCH, &payload)
        .expect("a later index applies");
    assert_eq!(outcomes.len(), valid_record().len());
    assert_eq!(state.last_applied(), last + 10);
}

/// Garbage written into a payload: `bytes` over it at `at` (extending it
/// when they run past the end), then single bytes xored in.
#[derive(Debug, Clone)]
struct Garbage {
    at: Index,
    bytes: Vec<u8>,
    xors: Vec<(Index, u8)>,
    /// Keep the 16-byte header, so the damage reaches the table and the
    /// commands more often.
    keep_header: bool,
}

fn garbage() -> impl Strategy<Value = Garbage> {
    (
        any::<Index>(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec((any::<Index>(), 1u8..=u8::MAX), 0..8),
        any::<bool>(),
    )
        .prop_map(|(at, bytes, xors, keep_header)| Garbage {
            at,
            bytes,
            xors,
            keep_header,
        })
}

fn damage(payload: &[u8], garbage: &Garbage) -> impl Deref<Target = [u8]> {
    let mut damaged = payload.to_vec();
    let start = garbage.at.index(damaged.len());
    let end = start + garbage.bytes.len();
    if end > damaged.len() {
        damaged.resize(end, 0);
    }
    damaged[start..end].copy_from_slice(&garbage.bytes);
    for (at, mask) in &garbage.xors {
        let at = at.index(damaged.len());
        damaged[at] ^= mask;
    }
    if garbage.keep_header {
        damaged[..BATCH_HEADER_BYTES].copy_from_slice(&payload[..BATCH_HEADER_BYTES]);
    }
    aligned(&damaged)
}

/// One slot of a command-shaped payload: a valid command's archive with
/// bytes xored in, or random bytes.
#[derive(Debug, Clone)]
enum Shaped {
    Patched { command: Index, xors: Vec<(Index, u8)> },
    Random(Vec<u8>),
}

fn shaped() -> impl Strategy<Value = Shaped> {
    let patched = (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), 1u8..=u8::MAX), 1..4),
    )
        .prop_map(|(command, xors)| Shaped::Patched { command, xors });
    let random = prop::collection::vec(any::<u8>(), 1..512).prop_map(Shaped::Random);
    prop_oneof![3 => patched, 1 => random]
}

/// Applies `payload` to a populated state: no panic; a refusal leaves the
/// hash and `last_applied` unchanged; an accepted record gives one outcome
/// per command, and the state survives a snapshot round trip.
fn apply_garbage(payload: &[u8]) {
    let mut state = populated().state;
    let (hash, last_applied) = (state.hash(), state.last_applied());
    match state.apply(last_applied + 1, COMMAND_BATCH, payload) {
        Err(_) => {
            assert_eq!(state.hash(), hash, "a refused record changed the state");
            assert_eq!(state.last_applied(), last_applied);
        }
        Ok(outcomes) => {
            let count = u32::from_le_bytes(payload[8..12].try_into().expect("four bytes"));
            assert_eq!(outcomes.len(), count as usize);
            let restored = State::restore(&state.snapshot()).expect("a fresh snapshot restores");
            assert_eq!(restored.hash(), state.hash());
        }
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(256))]

    #[test]
    fn random_garbage_in_a_payload_never_panics(garbage in garbage()) {
        let payload = built(&valid_record());
        apply_garbage(&damage(&payload, &garbage));
    }

    #[test]
    fn random_command_shaped_bytes_never_panic(slots in prop::collection::vec(shaped(), 1..5)) {
        let archives: Vec<Vec<u8>> = valid_record().iter().map(encoded).collect();
        let commands: Vec<Vec<u8>> = slots
            .iter()
            .map(|slot| match slot {
                Shaped::Patched { command, xors } => {
                    let mut bytes = archives[command.index(archives.len())].clone();
                    for (at, mask) in xors {
                        let at = at.index(bytes.len());
                        bytes[at] ^= mask;
                    }
                    bytes
                }
                Shaped::Random(bytes) => bytes.clone(),
            })
            .collect();
        let slices: Vec<&[u8]> = commands.iter().map(Vec::as_slice).collect();
        apply_garbage(&frame(&slices));
    }
}

// ------------------------------------------------------------ regressions

/// Opening a session near `u64::MAX` of log time scheduled its idle timer
/// at `now + SESSION_IDLE_MS`, which overflowed.
#[test]
fn opening_a_session_at_the_end_of_time_does_not_panic() {
    let mut harness = populated();
    let end_ms = u64::MAX - 1000;
    let tick = harness.apply(command("acme", end_ms, CommandBody::Tick));
    assert_eq!(tick.verdict, Verdict::Applied(Effect::Ticked));
    let opened = harness.apply(command("acme", end_ms, CommandBody::OpenSession));
    let Verdict::Applied(Effect::SessionOpened { client_id }) = opened.verdict else {
        panic!("opening a session: {opened:?}");
    };
    let append = || testing::append("orders", ExpectedVersion::NoStream, None, b"x");
    let first = harness.apply(in_session(command("acme", end_ms, append()), client_id, 1));
    assert!(first.is_applied() && !first.retried, "{first:?}");
    let retry = harness.apply(in_session(command("acme", end_ms, append()), client_id, 1));
    assert!(retry.retried && retry.verdict == first.verdict, "{retry:?}");
    for outcome in [&tick, &opened, &first, &retry] {
        let expired = outcome
            .fired
            .iter()
            .any(|fired| matches!(fired, Fired::SessionExpired { .. }));
        assert!(!expired, "{outcome:?}");
    }
}

/// Sequence numbers start at 1; 0 used to pass validation.
#[test]
fn sequence_number_zero_is_refused_by_validation() {
    let append = |expected| command("acme", AT_MS, testing::append("orders", expected, None, b"x"));
    check_populated(vec![
        (
            command("acme", AT_MS, CommandBody::OpenSession),
            Expect::Effect(Effect::SessionOpened { client_id: 1 }),
        ),
        (
            in_session(append(ExpectedVersion::NoStream), 1, 0),
            Expect::Invalid("session.sequence"),
        ),
        (in_session(append(ExpectedVersion::NoStream), 1, 1), Expect::Applied),
    ]);
}

/// The flags (bytes 6, 7) and reserved bytes (12..16) of a batch header
/// used to be ignored, so two different payloads meant the same record.
#[test]
fn batch_flags_and_reserved_bytes_must_be_zero() {
    let base = populated().state;
    let payload = built(&valid_record());
    for at in [6, 7, 12, 13, 14, 15] {
        for value in [1u8, 0x80, 0xff] {
            let mut damaged = aligned(&payload);
            damaged[at] = value;
            let error = refused(&base, COMMAND_BATCH, &damaged);
            assert!(malformed(&error), "byte {at} = {value:#04x}: {error}");
        }
    }
}

/// What the twin of a harness gets instead of a command that must change
/// nothing: a Tick at the same log time, in its own record.
fn twin_tick(twin: &mut Harness, at_ms: u64) {
    let outcome = twin.apply(command("acme", at_ms, CommandBody::Tick));
    assert!(outcome.is_applied());
}

/// Client ids are dense, so a session used to answer anyone who named its
/// id: another tenant, or another principal of the same tenant.
#[test]
fn a_session_answers_only_its_own_tenant_and_principal() {
    let setup = || {
        let mut harness = populated();
        let globex = harness.apply(command(LANDLORD, AT_MS, testing::customer("globex")));
        assert!(globex.is_applied());
        let opened = harness.apply(command("acme", AT_MS, CommandBody::OpenSession));
        assert_eq!(opened.verdict, Verdict::Applied(Effect::SessionOpened { client_id: 1 }));
        harness
    };
    let append =
        |tenant: &str, at_ms, expected| command(tenant, at_ms, testing::append("orders", expected, None, b"x"));
    let mut harness = setup();
    let mut twin = setup();
    let first = in_session(append("acme", 20, ExpectedVersion::NoStream), 1, 1);
    let first_outcome = harness.apply(first.clone());
    assert!(first_outcome.is_applied(), "{first_outcome:?}");
    assert_eq!(twin.apply(first), first_outcome);
    let intruders = [
        // Another tenant, with the owner's numbers: no cached verdict.
        in_session(command("globex", 21, CommandBody::Tick), 1, 1),
        in_session(append("globex", 22, ExpectedVersion::Any), 1, 1),
        // Another tenant, with a fresh number: nothing runs in the session.
        in_session(append("globex", 23, ExpectedVersion::Any), 1, 2),
        // Another principal of the owner's tenant.
        as_principal(in_session(append("acme", 24, ExpectedVersion::Any), 1, 1), "mallory"),
        as_principal(in_session(append("acme", 25, ExpectedVersion::Any), 1, 2), "mallory"),
        // A tenant that is not registered.
        in_session(command("ghost", 26, CommandBody::Tick), 1, 2),
    ];
    for intruder in intruders {
        let at_ms = intruder.proposed_at_ms;
        let outcome = harness.apply(intruder.clone());
        assert_eq!(
            outcome.verdict,
            Verdict::Rejected(Rejection::SessionUnknown),
            "{intruder:?}"
        );
        assert!(!outcome.retried, "{intruder:?}");
        twin_tick(&mut twin, at_ms);
        assert_eq!(
            harness.state.hash(),
            twin.state.hash(),
            "{intruder:?} changed the state"
        );
    }
    // The owner's session is as it was: 1 is kept, 2 is still free.
    let retry = harness.apply(in_session(append("acme", 30, ExpectedVersion::Any), 1, 1));
    assert!(retry.retried && retry.verdict == first_outcome.verdict, "{retry:?}");
    let second = harness.apply(in_session(append("acme", 31, ExpectedVersion::Exact(0)), 1, 2));
    assert!(!second.retried && second.is_applied(), "{second:?}");
    // Another principal's own session is its own, and not the owner's.
    let opened = harness.apply(as_principal(command("acme", 32, CommandBody::OpenSession), "mallory"));
    assert_eq!(opened.verdict, Verdict::Applied(Effect::SessionOpened { client_id: 2 }));
    let borrowed = harness.apply(in_session(command("acme", 33, CommandBody::Tick), 2, 1));
    assert_eq!(borrowed.verdict, Verdict::Rejected(Rejection::SessionUnknown));
}

/// A session belongs to a tenant, so an unregistered one cannot open one.
#[test]
fn an_unregistered_tenant_cannot_open_a_session() {
    let mut harness = populated();
    let mut twin = populated();
    let sessions = harness.state.sessions().len();
    let outcome = harness.apply(command("ghost", AT_MS, CommandBody::OpenSession));
    assert_eq!(outcome.verdict, Verdict::Rejected(Rejection::TenantUnknown));
    twin_tick(&mut twin, AT_MS);
    assert_eq!(harness.state.hash(), twin.state.hash());
    assert_eq!(harness.state.sessions().len(), sessions);
}

// ------------------------------------------------ stateless: back-channel

/// A command in acme at [`AT_MS`] with `body` edited.
fn back<B: Clone>(body: &B, wrap: impl Fn(B) -> CommandBody, edit: impl FnOnce(&mut B)) -> Command {
    let mut body = body.clone();
    edit(&mut body);
    command("acme", AT_MS, wrap(body))
}

#[test]
fn back_channel_commands_are_checked() {
    use farmlog_engine::state::command::*;
    let CommandBody::Publish(publish) = testing::publish("b1", vec![own("si")], &[]) else {
        unreachable!()
    };
    let publish_with = |edit: &dyn Fn(&mut Publish)| back(&publish, CommandBody::Publish, |body| edit(body));
    let mut steps = name_rule("body.header.message_id", |id| {
        publish_with(&|body| body.header.message_id = id.clone())
    });
    steps.extend(name_rule("body.groups[0]", |group| {
        publish_with(&|body| body.groups = vec![group.clone()])
    }));
    steps.extend([
        (
            publish_with(&|body| body.groups = vec!["a".into(), "b".into()]),
            Expect::Invalid("body.groups"),
        ),
        (
            publish_with(&|body| {
                body.destinations.clear();
            }),
            Expect::Invalid("body.destinations"),
        ),
        (
            publish_with(&|body| body.destinations = vec![own("x"); PUBLISH_DESTINATIONS_MAX + 1]),
            Expect::Invalid("body.destinations"),
        ),
        (
            publish_with(&|body| body.max_attempts = DELIVERY_ATTEMPTS_MAX + 1),
            Expect::Invalid("body.max_attempts"),
        ),
        (
            publish_with(&|body| {
                body.payload = Payload::Bulk {
                    url: String::new(),
                    size: 1,
                }
            }),
            Expect::Invalid("body.payload.url"),
        ),
        (
            publish_with(&|body| {
                body.payload = Payload::Bulk {
                    url: "https://x".into(),
                    size: 0,
                }
            }),
            Expect::Invalid("body.payload.size"),
        ),
        (
            publish_with(&|body| {
                body.payload = Payload::Inline {
                    mime_type: "text/plain".into(),
                    body: vec![0; BODY_BYTES_MAX + 1],
                }
            }),
            Expect::Invalid("body.payload.body"),
        ),
    ]);
    let CommandBody::Poll(poll) = testing::poll(own("proxy"), 1) else {
        unreachable!()
    };
    let poll_with = |edit: &dyn Fn(&mut Poll)| back(&poll, CommandBody::Poll, |body| edit(body));
    steps.extend([
        (
            poll_with(&|body| body.max_deliveries = 0),
            Expect::Invalid("body.max_deliveries"),
        ),
        (
            poll_with(&|body| body.max_deliveries = POLL_DELIVERIES_MAX + 1),
            Expect::Invalid("body.max_deliveries"),
        ),
        (
            poll_with(&|body| body.max_bytes = POLL_BYTES_MAX + 1),
            Expect::Invalid("body.max_bytes"),
        ),
        (
            poll_with(&|body| body.visibility_ms = VISIBILITY_MS_MIN - 1),
            Expect::Invalid("body.visibility_ms"),
        ),
        (
            in_session(poll_with(&|body| body.max_deliveries = 1), 1, 1),
            Expect::Invalid("session"),
        ),
        (
            poll_with(&|body| {
                let CommandBody::Upstream(mut message) = upstream(|_| {}).body else {
                    unreachable!()
                };
                message.header.class = String::new();
                body.message = Some(message);
            }),
            Expect::Invalid("body.message.header.class"),
        ),
    ]);
    let settle = Settle {
        caller: own("proxy"),
        message: 1,
        destinations: vec![own("proxy")],
        settlement: Settlement::Ack,
    };
    let settle_with = |edit: &dyn Fn(&mut Settle)| back(&settle, CommandBody::Settle, |body| edit(body));
    steps.extend([
        (settle_with(&|body| body.message = 0), Expect::Invalid("body.message")),
        (
            settle_with(&|body| body.destinations.clear()),
            Expect::Invalid("body.destinations"),
        ),
        (
            settle_with(&|body| body.destinations = vec![own("x"); SETTLE_DESTINATIONS_MAX + 1]),
            Expect::Invalid("body.destinations"),
        ),
        (
            command(
                "acme",
                AT_MS,
                CommandBody::ConfigureSpool(ConfigureSpool { capacity: 0 }),
            ),
            Expect::Invalid("body.capacity"),
        ),
    ]);
    let step = |action: TransferAction| {
        CommandBody::Transfer(TransferStep {
            request: "b1".into(),
            hop: hosted("apps"),
            action,
        })
    };
    let deny = |reason: &str, retry_after_ms| TransferAction::Deny {
        reason: reason.into(),
        retry_after_ms,
    };
    steps.extend([
        (
            command("acme", AT_MS, step(deny("", 0))),
            Expect::Invalid("body.action.reason"),
        ),
        (
            command("acme", AT_MS, step(deny("full", TRANSFER_RETRY_MS_MAX + 1))),
            Expect::Invalid("body.action.retry_after_ms"),
        ),
        (
            command(
                "acme",
                AT_MS,
                step(TransferAction::Grant {
                    url: "x".repeat(URL_BYTES_MAX + 1),
                }),
            ),
            Expect::Invalid("body.action.url"),
        ),
        (
            command(LANDLORD, AT_MS, step(TransferAction::Transferred)),
            Expect::Invalid("tenant"),
        ),
    ]);
    let throttle = |rules: Vec<ThrottleRule>| {
        command(
            "acme",
            AT_MS,
            CommandBody::SetThrottle(SetThrottle {
                farm: "farm".into(),
                rules,
            }),
        )
    };
    let quiet = |from_minute, to_minute| ThrottleRule::Quiet { from_minute, to_minute };
    steps.extend([
        (
            throttle(vec![quiet(MINUTES_PER_DAY, 0)]),
            Expect::Invalid("body.rules[0].from_minute"),
        ),
        (throttle(vec![quiet(5, 5)]), Expect::Invalid("body.rules[0].to_minute")),
        (
            throttle(vec![ThrottleRule::Limit {
                window_ms: 0,
                max_bytes: Some(1),
                max_messages: None,
            }]),
            Expect::Invalid("body.rules[0].window_ms"),
        ),
        (
            throttle(vec![ThrottleRule::Limit {
                window_ms: 1000,
                max_bytes: None,
                max_messages: None,
            }]),
            Expect::Invalid("body.rules[0].max_bytes"),
        ),
        (
            throttle(vec![quiet(1, 2); THROTTLE_RULES_MAX + 1]),
            Expect::Invalid("body.rules"),
        ),
        (
            command(
                "acme",
                AT_MS,
                CommandBody::ReportUsage(ReportUsage {
                    farm: "farm".into(),
                    member: own("proxy"),
                    increments: vec![],
                }),
            ),
            Expect::Invalid("body.increments"),
        ),
    ]);
    // The longest good values encode.
    assert_encodes(
        "body.destinations",
        &publish_with(&|body| body.destinations = vec![own("x"); PUBLISH_DESTINATIONS_MAX]),
    );
    assert_encodes(
        "body.max_deliveries",
        &poll_with(&|body| body.max_deliveries = POLL_DELIVERIES_MAX),
    );
    check_populated(steps);
}
