//! Determinism of the state machine (`farmlog_engine::state`).
//!
//! Random command sequences that mix every family (several commands per
//! record, some in client sessions, log time jumping past the liveness,
//! dedupe, idempotency and session thresholds so timers fire) are applied:
//!
//! - twice, independently: once by `testing::Harness`, once by
//!   `State::apply` on payloads built here the same way (encode →
//!   `BatchBuilder` → aligned payload). Both runs must give the same
//!   outcomes, the same `State::hash` after every record, and
//!   byte-identical `State::snapshot`s;
//! - from a snapshot: the state after a random record k is snapshotted,
//!   restored, and given the remaining records; outcomes, hash and
//!   snapshot bytes must equal the full replay's.
//!
//! Each property runs a modest number of cases by default; set
//! `PROPTEST_CASES` for longer runs.

use farmlog_engine::kinds::COMMAND_BATCH;
use farmlog_engine::state::command::{
    Alarm, AlarmState, BulkRequest, BulkResponse, ChangeGroupMember, Command, CommandBody, CommunicationMode,
    ComponentKind, ComponentRef, Content, Data, DefineGroup, Deregister, Event, ExpectedVersion, GroupKind, Heartbeat,
    Idempotency, MapManagementId, MessageHeader, MessageResponse, Qos, RegisterComponent, ResponseStatus, RouteHop,
    SessionRef, SetEnabled, Severity, StreamAppend, Switch, UpstreamMessage, HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS,
    IDEMPOTENCY_WINDOW_MS_DEFAULT, LANDLORD,
};
use farmlog_engine::state::messages::MESSAGE_DEDUPE_WINDOW_MS;
use farmlog_engine::state::sessions::SESSION_IDLE_MS;
use farmlog_engine::state::testing::{self, aligned, command, hosted, own, Harness};
use farmlog_engine::state::topology::{LIVENESS_FAILED_AFTER_MS, LIVENESS_LATE_AFTER_MS};
use farmlog_engine::state::{encode, BatchBuilder, Outcome, State};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use ComponentKind::*;

// -------------------------------------------------------------- generator

/// "ghost" is never registered; "initech" only when a command registers it.
const CUSTOMERS: [&str; 4] = ["acme", "globex", "initech", "ghost"];
const COMPONENT_IDS: [&str; 8] = ["server", "apps", "agg", "proxy", "im", "si", "x", "y"];
const KINDS: [ComponentKind; 7] = ComponentKind::ALL;
const GROUPS: [&str; 2] = ["proxies", "mlms"];
const MESSAGE_IDS: [&str; 4] = ["m0", "m1", "m2", "m3"];
const ALARM_IDS: [&str; 2] = ["disk", "fan"];
const STREAMS: [&str; 2] = ["orders", "audit"];
const KEYS: [&str; 3] = ["k0", "k1", "k2"];

fn name(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    select(pool).prop_map(str::to_string)
}

/// A name from `common` three times in four, else any component id.
fn biased(common: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop_oneof![3 => name(common), 1 => name(&COMPONENT_IDS)]
}

/// References that often resolve: the hosted MLMs, the farm's customer
/// components and the names registrations use; else anything.
fn reference() -> impl Strategy<Value = ComponentRef> + Clone {
    let plausible = select(&[
        (true, "agg"),
        (true, "apps"),
        (false, "proxy"),
        (false, "im"),
        (false, "x"),
        (false, "y"),
    ])
    .prop_map(|(hosted, id)| ComponentRef {
        hosted,
        id: id.to_string(),
    });
    let any = (prop::bool::weighted(0.3), name(&COMPONENT_IDS)).prop_map(|(hosted, id)| ComponentRef { hosted, id });
    prop_oneof![3 => plausible, 1 => any]
}

/// A message source and the kind its header claims: mostly the farm's.
fn source() -> impl Strategy<Value = (String, ComponentKind)> {
    let farm = select(&[("proxy", Proxy), ("im", IntegrationModule), ("x", IntegrationModule)])
        .prop_map(|(id, kind)| (id.to_string(), kind));
    prop_oneof![4 => farm, 1 => (name(&COMPONENT_IDS), select(&KINDS))]
}

fn severity() -> impl Strategy<Value = Severity> {
    select(&[
        Severity::Critical,
        Severity::Major,
        Severity::Minor,
        Severity::Warning,
        Severity::Info,
    ])
}

fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..16)
}

fn content() -> impl Strategy<Value = Content> {
    let alarm = (
        name(&ALARM_IDS),
        biased(&["si", "y"]),
        severity(),
        any::<bool>(),
        small_bytes(),
    )
        .prop_map(|(alarm_id, support_instance, severity, raised, data)| {
            Content::Alarm(Alarm {
                alarm_id,
                support_instance,
                severity,
                state: if raised {
                    AlarmState::Raised
                } else {
                    AlarmState::Cleared
                },
                text: "alarm".to_string(),
                data,
            })
        });
    let event = (proptest::option::of(biased(&["si"])), severity(), small_bytes()).prop_map(
        |(support_instance, severity, data)| {
            Content::Event(Event {
                support_instance,
                severity,
                text: "event".to_string(),
                data,
            })
        },
    );
    let data = small_bytes().prop_map(|body| {
        Content::Data(Data {
            mime_type: "application/octet-stream".to_string(),
            size: body.len() as u64,
            encoding: None,
            body,
        })
    });
    let response = (name(&MESSAGE_IDS), any::<bool>()).prop_map(|(in_reply_to, ok)| {
        Content::Response(MessageResponse {
            in_reply_to,
            status: if ok {
                ResponseStatus::Ok
            } else {
                ResponseStatus::Rejected
            },
            error: (!ok).then(|| "refused".to_string()),
        })
    });
    let bulk_request = (1u64..1 << 40).prop_map(|size| {
        Content::BulkRequest(BulkRequest {
            size,
            description: "dump".to_string(),
        })
    });
    let bulk_response = (name(&MESSAGE_IDS), any::<bool>()).prop_map(|(request_message_id, granted)| {
        Content::BulkResponse(BulkResponse {
            request_message_id,
            granted,
            url: granted.then(|| "https://bulk.example/upload".to_string()),
            reason: (!granted).then(|| "busy".to_string()),
        })
    });
    let heartbeat = prop::collection::vec(biased(&["proxy", "im", "si"]), 0..3)
        .prop_map(|components| Content::Heartbeat(Heartbeat { components }));
    prop_oneof![
        3 => alarm,
        1 => event,
        2 => data,
        1 => response,
        1 => bulk_request,
        1 => bulk_response,
        3 => heartbeat,
    ]
}

/// An upstream message; its tenant and header customer are set by
/// [`valid`].
fn upstream() -> impl Strategy<Value = CommandBody> {
    let header = (name(&MESSAGE_IDS), source(), 0..3usize);
    (header, content(), any::<u8>()).prop_map(|((message_id, (source, source_kind), class), content, precedence)| {
        let (class, subclass) = match (&content, class) {
            (Content::Heartbeat(_), _) => (HEARTBEAT_CLASS, HEARTBEAT_SUBCLASS),
            (_, 0) => ("data", "a"),
            (_, 1) => ("data", "b"),
            _ => ("alarm", "x"),
        };
        CommandBody::Upstream(UpstreamMessage {
            header: MessageHeader {
                message_id,
                source: source.clone(),
                source_version: "1.0".to_string(),
                source_kind,
                customer: String::new(),
                class: class.to_string(),
                subclass: subclass.to_string(),
                created_at_ms: 0,
            },
            qos: Qos {
                precedence,
                expiry_ms: None,
                persistence: precedence % 2 == 0,
            },
            routing: vec![RouteHop {
                component: own(&source),
                at_ms: 0,
            }],
            content,
        })
    })
}

fn stream_append() -> impl Strategy<Value = CommandBody> {
    let expected = prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        (0u64..4).prop_map(ExpectedVersion::Exact),
    ];
    let window = select(&[1u64, 1000, 60_000, IDEMPOTENCY_WINDOW_MS_DEFAULT]);
    let key = proptest::option::of((name(&KEYS), window));
    (name(&STREAMS), expected, key, small_bytes()).prop_map(|(stream, expected, key, body)| {
        CommandBody::StreamAppend(StreamAppend {
            stream,
            expected,
            idempotency: key.map(|(key, window_ms)| Idempotency { key, window_ms }),
            event_type: "test".to_string(),
            body,
        })
    })
}

fn body() -> impl Strategy<Value = CommandBody> {
    let kind = prop_oneof![
        3 => select(&[IntegrationModule, SupportInstance]),
        1 => select(&KINDS),
    ];
    let register =
        (biased(&["x", "y"]), kind, prop::collection::vec(reference(), 0..3)).prop_map(|(id, kind, parents)| {
            CommandBody::RegisterComponent(RegisterComponent {
                id,
                kind,
                version: "1.0".to_string(),
                mode: CommunicationMode::Session,
                parents,
            })
        });
    let switch = select(&[Switch::SupportInstance, Switch::ProxyForwarding]);
    let set_enabled =
        (biased(&["si", "proxy", "y"]), switch, any::<bool>()).prop_map(|(component, switch, enabled)| {
            CommandBody::SetEnabled(SetEnabled {
                component,
                switch,
                enabled,
            })
        });
    let map = (
        biased(&["proxy"]),
        select(&["10.0.0.1", "10.0.0.2"]),
        proptest::option::of(biased(&["im", "si", "x", "y"])),
    )
        .prop_map(|(proxy, management_id, component)| {
            CommandBody::MapManagementId(MapManagementId {
                proxy,
                management_id: management_id.to_string(),
                component,
            })
        });
    let kind = select(&[GroupKind::Mlm, GroupKind::Proxy, GroupKind::Security]);
    let define = (name(&GROUPS), kind).prop_map(|(name, kind)| CommandBody::DefineGroup(DefineGroup { name, kind }));
    let member_ref = select(&[(false, "proxy"), (true, "agg"), (true, "apps")]).prop_map(|(hosted, id)| ComponentRef {
        hosted,
        id: id.to_string(),
    });
    let member_ref = prop_oneof![2 => member_ref, 1 => reference()];
    let member = (name(&GROUPS), member_ref, any::<bool>())
        .prop_map(|(group, member, add)| CommandBody::ChangeGroupMember(ChangeGroupMember { group, member, add }));
    prop_oneof![
        2 => Just(CommandBody::Tick),
        1 => Just(CommandBody::OpenSession),
        1 => name(&CUSTOMERS).prop_map(|name| testing::customer(&name)),
        4 => register,
        1 => set_enabled,
        1 => reference().prop_map(|component| CommandBody::Deregister(Deregister { component })),
        1 => biased(&["si", "x", "y"]).prop_map(|id| testing::deregister(&id)),
        1 => map,
        1 => define,
        2 => member,
        6 => upstream(),
        4 => stream_append(),
        8 => back_channel(),
    ]
}

/// Publishes, polls, settles, redrives, spool settings, transfer steps and
/// throttles, aimed at the farm's names so that many apply.
fn back_channel() -> impl Strategy<Value = CommandBody> {
    use farmlog_engine::state::command::{
        BackHeader, ConfigureSpool, NackReason, Payload, Poll, Publish, Redrive, ReportUsage, SetThrottle, Settle,
        Settlement, ThrottleRule, TransferAction, TransferStep, Usage,
    };
    let destination = select(&[
        (false, "proxy"),
        (false, "im"),
        (false, "si"),
        (true, "agg"),
        (false, "x"),
    ])
    .prop_map(|(hosted, id)| ComponentRef {
        hosted,
        id: id.to_string(),
    });
    let qos = (0u8..4, proptest::option::of(1_000_000u64..1_100_000), any::<bool>()).prop_map(
        |(precedence, expiry_ms, persistence)| Qos {
            precedence,
            expiry_ms,
            persistence,
        },
    );
    let publish = (
        name(&MESSAGE_IDS),
        qos,
        prop::collection::vec(destination.clone(), 0..3),
        any::<bool>(),
        0u16..4,
        any::<bool>(),
    )
        .prop_map(|(message_id, qos, destinations, group, max_attempts, bulk)| {
            let payload = match bulk {
                true => Payload::Bulk {
                    url: format!("https://apps.example/{message_id}"),
                    size: 1 << 20,
                },
                false => Payload::Inline {
                    mime_type: "text/plain".to_string(),
                    body: message_id.clone().into_bytes(),
                },
            };
            let groups = match group || destinations.is_empty() {
                true => vec!["proxies".to_string()],
                false => Vec::new(),
            };
            CommandBody::Publish(Publish {
                header: BackHeader {
                    message_id,
                    source: hosted("apps"),
                    class: "configuration".to_string(),
                    subclass: "change".to_string(),
                    created_at_ms: 0,
                },
                qos,
                routing: Vec::new(),
                payload,
                destinations,
                groups,
                max_attempts,
            })
        });
    let caller = select(&[(false, "proxy"), (false, "im"), (true, "agg"), (false, "agg")]).prop_map(|(hosted, id)| {
        ComponentRef {
            hosted,
            id: id.to_string(),
        }
    });
    let poll = (caller.clone(), 1u32..4, prop_oneof![Just(0u64), 1000u64..5000]).prop_map(
        |(caller, max_deliveries, visibility_ms)| {
            CommandBody::Poll(Poll {
                caller,
                max_deliveries,
                max_bytes: 1 << 20,
                visibility_ms,
                message: None,
            })
        },
    );
    let settlement = prop_oneof![
        2 => Just(Settlement::Ack),
        1 => select(&[NackReason::Rejected, NackReason::Throttled, NackReason::ReceptionFailed]).prop_map(Settlement::Nack),
    ];
    // Mostly the farm's own publishes, whose positions are known.
    let seeded = seeded_publishes();
    let message = prop_oneof![3 => select(seeded), 1 => 1u64..200];
    let settle = (
        caller,
        message.clone(),
        prop::collection::vec(destination.clone(), 1..3),
        settlement,
    )
        .prop_map(|(caller, message, destinations, settlement)| {
            CommandBody::Settle(Settle {
                caller,
                message,
                destinations,
                settlement,
            })
        });
    let redrive = (proptest::option::of(message), proptest::option::of(destination))
        .prop_map(|(message, destination)| CommandBody::Redrive(Redrive { message, destination }));
    let configure = (1u32..4).prop_map(|capacity| CommandBody::ConfigureSpool(ConfigureSpool { capacity }));
    let action = prop_oneof![
        Just(TransferAction::Grant {
            url: "https://apps.example/up".to_string()
        }),
        (0u64..3000).prop_map(|retry_after_ms| TransferAction::Deny {
            reason: "busy".to_string(),
            retry_after_ms,
        }),
        Just(TransferAction::Transferred),
    ];
    let hop = select(&[(true, "apps"), (true, "agg"), (false, "proxy")]).prop_map(|(hosted, id)| ComponentRef {
        hosted,
        id: id.to_string(),
    });
    let request = prop_oneof![3 => Just("b0".to_string()), 1 => name(&MESSAGE_IDS)];
    let transfer = (request, hop, action)
        .prop_map(|(request, hop, action)| CommandBody::Transfer(TransferStep { request, hop, action }));
    let rule = prop_oneof![
        (0u16..1440, 0u16..1440)
            .prop_filter("a quiet window is not empty", |(from, to)| from != to)
            .prop_map(|(from_minute, to_minute)| ThrottleRule::Quiet { from_minute, to_minute }),
        (1000u64..10_000, 1u64..5000).prop_map(|(window_ms, max_bytes)| ThrottleRule::Limit {
            window_ms,
            max_bytes: Some(max_bytes),
            max_messages: Some(10),
        }),
    ];
    let throttle = prop::collection::vec(rule, 0..3).prop_map(|rules| {
        CommandBody::SetThrottle(SetThrottle {
            farm: "mlms".to_string(),
            rules,
        })
    });
    let usage = (0u64..2000, 0u64..5).prop_map(|(bytes, messages)| {
        CommandBody::ReportUsage(ReportUsage {
            farm: "mlms".to_string(),
            member: hosted("agg"),
            increments: vec![Usage { bytes, messages }],
        })
    });
    prop_oneof![
        4 => publish,
        4 => poll,
        3 => settle,
        1 => redrive,
        1 => configure,
        2 => transfer,
        1 => throttle,
        1 => usage,
    ]
}

/// How far log time moves before a command: mostly little, sometimes past
/// one of the thresholds that timers and windows use; sometimes the
/// proposer's clock is behind.
fn advance() -> impl Strategy<Value = i64> {
    let over = |threshold: u64| (threshold..threshold + 1000).prop_map(|ms| ms as i64);
    prop_oneof![
        6 => Just(0i64),
        6 => 1i64..2000,
        1 => over(LIVENESS_LATE_AFTER_MS),
        1 => over(LIVENESS_FAILED_AFTER_MS),
        1 => over(MESSAGE_DEDUPE_WINDOW_MS),
        1 => over(SESSION_IDLE_MS),
        1 => -5000i64..0,
    ]
}

/// A command before it is made valid: (tenant index, session, advance,
/// body). Tenant 0 is the landlord, 1.. the customers.
type Draft = (usize, Option<(u64, u64)>, i64, CommandBody);

fn draft() -> impl Strategy<Value = Draft> {
    let session = proptest::option::weighted(0.25, (1u64..4, 1u64..12));
    let tenant = prop_oneof![2 => Just(0usize), 4 => Just(1), 3 => Just(2), 1 => Just(3), 1 => Just(4)];
    (tenant, session, advance(), body())
}

/// Makes a draft pass the stateless checks (the state's rejections are
/// what the test wants to reach, not the validator's).
fn valid(draft: &Draft, at_ms: u64) -> Command {
    let (tenant, session, _, body) = draft;
    let mut tenant = match tenant {
        0 => LANDLORD,
        customer => CUSTOMERS[customer - 1],
    };
    let mut body = body.clone();
    match &mut body {
        CommandBody::RegisterCustomer(_) => tenant = LANDLORD,
        CommandBody::RegisterComponent(register) => {
            if register.kind.is_hosted() {
                tenant = LANDLORD;
            } else if tenant == LANDLORD {
                tenant = CUSTOMERS[0];
            }
            let parents = match register.kind {
                ApplicationServer => 0,
                SupportInstance => register.parents.len().clamp(1, 2),
                _ => 1,
            };
            register.parents.resize(parents, hosted("agg"));
            if parents == 2 && register.parents[0] == register.parents[1] {
                register.parents.pop();
            }
        }
        CommandBody::DefineGroup(group) if tenant == LANDLORD && group.kind == GroupKind::Security => {
            group.kind = GroupKind::Mlm;
        }
        CommandBody::Upstream(message) => {
            if tenant == LANDLORD {
                tenant = CUSTOMERS[0];
            }
            message.header.customer = tenant.to_string();
        }
        CommandBody::Transfer(_) if tenant == LANDLORD => tenant = CUSTOMERS[0],
        _ => {}
    }
    let mut command = command(tenant, at_ms, body);
    if !matches!(command.body, CommandBody::OpenSession | CommandBody::Poll(_)) {
        command.session = session.map(|(client_id, sequence)| SessionRef { client_id, sequence });
    }
    command
}

/// Turns drafts into commands, with log time moving as they say.
fn commands(records: &[Vec<Draft>]) -> Vec<Vec<Command>> {
    let mut now_ms: u64 = 1_000_000;
    let mut built = vec![farm()];
    for record in records {
        let mut commands = Vec::new();
        for draft in record {
            now_ms = now_ms.saturating_add_signed(draft.2);
            commands.push(valid(draft, now_ms));
        }
        built.push(commands);
    }
    built
}

/// The positions of the publishes in [`farm`].
fn seeded_publishes() -> Vec<u64> {
    let mut harness = Harness::new();
    let outcomes = harness.apply_batch(&farm());
    let published = outcomes.iter().filter_map(|outcome| match &outcome.verdict {
        farmlog_engine::state::Verdict::Applied(farmlog_engine::state::Effect::Published { position, .. }) => {
            Some(*position)
        }
        _ => None,
    });
    let published: Vec<u64> = published.collect();
    assert_eq!(published.len(), 2, "the farm publishes once per customer");
    published
}

/// The first record: a small farm, so that later commands find things.
fn farm() -> Vec<Command> {
    let at = 1_000_000;
    let mut farm = vec![
        command(LANDLORD, at, testing::component("server", ApplicationServer, vec![])),
        command(
            LANDLORD,
            at,
            testing::component("apps", ApplicationsMlm, vec![own("server")]),
        ),
        command(
            LANDLORD,
            at,
            testing::component("agg", AggregationMlm, vec![own("apps")]),
        ),
        command(LANDLORD, at, testing::define_group("mlms", GroupKind::Mlm)),
        command(LANDLORD, at, testing::group_member("mlms", own("agg"), true)),
    ];
    for customer in &CUSTOMERS[..2] {
        farm.push(command(LANDLORD, at, testing::customer(customer)));
        let components = [
            testing::component("proxy", Proxy, vec![hosted("agg")]),
            testing::component("im", IntegrationModule, vec![own("proxy")]),
            testing::component("si", SupportInstance, vec![own("im")]),
            testing::define_group("proxies", GroupKind::Proxy),
            testing::group_member("proxies", own("proxy"), true),
            testing::define_group("mlms", GroupKind::Mlm),
            testing::group_member("mlms", hosted("agg"), true),
        ];
        for body in components {
            farm.push(command(customer, at, body));
        }
        // A bulk request to authorize, and a back-channel message to poll
        // and settle.
        let request = CommandBody::Upstream(UpstreamMessage {
            header: MessageHeader {
                message_id: "b0".to_string(),
                source: "proxy".to_string(),
                source_version: "1.0".to_string(),
                source_kind: Proxy,
                customer: customer.to_string(),
                class: "bulk".to_string(),
                subclass: "core".to_string(),
                created_at_ms: 0,
            },
            qos: Qos {
                precedence: 0,
                expiry_ms: None,
                persistence: false,
            },
            routing: Vec::new(),
            content: Content::BulkRequest(BulkRequest {
                size: 1 << 20,
                description: "core".to_string(),
            }),
        });
        farm.push(command(customer, at, request));
        farm.push(command(
            customer,
            at,
            testing::publish("p0", vec![own("si"), own("im")], &["proxies"]),
        ));
        farm.push(command(customer, at, CommandBody::OpenSession));
    }
    farm
}

// ------------------------------------------------------------------ runs

/// The payload of one command-batch record, built the way a proposer
/// does: encode each command, frame them, align the bytes.
fn payload(commands: &[Command]) -> impl std::ops::Deref<Target = [u8]> {
    let mut batch = BatchBuilder::new();
    for command in commands {
        let encoded = encode(command).unwrap_or_else(|error| panic!("{command:?}: {error}"));
        batch.push(encoded).expect("the batch fits");
    }
    aligned(&batch.finish())
}

/// What one run gives after each record.
struct Run {
    outcomes: Vec<Vec<Outcome>>,
    hashes: Vec<[u8; 32]>,
    snapshots: Vec<Vec<u8>>,
}

fn run_harness(records: &[Vec<Command>]) -> Run {
    let mut harness = Harness::new();
    let mut run = Run {
        outcomes: Vec::new(),
        hashes: Vec::new(),
        snapshots: Vec::new(),
    };
    for commands in records {
        let outcomes = harness.apply_batch(commands);
        assert_eq!(outcomes.len(), commands.len(), "one outcome per command");
        run.outcomes.push(outcomes);
        run.hashes.push(harness.state.hash());
        run.snapshots.push(harness.state.snapshot());
    }
    run
}

/// Applies records `first..` (1-based indexes) of `payloads` to `state`
/// and checks each against the reference run.
fn replay_and_compare(
    state: &mut State,
    payloads: &[impl std::ops::Deref<Target = [u8]>],
    first: usize,
    reference: &Run,
) {
    for (at, payload) in payloads.iter().enumerate().skip(first - 1) {
        let index = at as u64 + 1;
        let outcomes = state
            .apply(index, COMMAND_BATCH, payload)
            .unwrap_or_else(|error| panic!("record {index}: {error}"));
        assert_eq!(outcomes, reference.outcomes[at], "record {index}: outcomes differ");
        assert_eq!(state.hash(), reference.hashes[at], "record {index}: state hash differs");
        assert_eq!(state.last_applied(), index);
    }
    let last = payloads.len() - 1;
    assert!(state.snapshot() == reference.snapshots[last], "final snapshots differ");
}

fn check_determinism(records: &[Vec<Command>], restore_after: Index) {
    let reference = run_harness(records);
    let payloads: Vec<_> = records.iter().map(|commands| payload(commands)).collect();
    // The same records through State::apply directly: an independent state.
    let mut state = State::new();
    replay_and_compare(&mut state, &payloads, 1, &reference);
    // And once more, from a snapshot after record k (0: the empty state).
    let k = restore_after.index(records.len());
    let snapshot = match k {
        0 => State::new().snapshot(),
        k => reference.snapshots[k - 1].clone(),
    };
    let mut restored = State::restore(&snapshot).unwrap_or_else(|error| panic!("restore after {k}: {error}"));
    assert_eq!(restored.last_applied(), k as u64);
    assert!(
        restored.snapshot() == snapshot,
        "restore → snapshot is not byte-identical"
    );
    if k > 0 {
        assert_eq!(restored.hash(), reference.hashes[k - 1]);
    }
    if k < records.len() {
        replay_and_compare(&mut restored, &payloads, k + 1, &reference);
    }
}

proptest! {
    #![proptest_config(farmlog_tests::proptest_config(128))]

    #[test]
    fn replays_and_restores_are_deterministic(
        records in prop::collection::vec(prop::collection::vec(draft(), 1..6), 1..30),
        restore_after in any::<Index>(),
    ) {
        check_determinism(&commands(&records), restore_after);
    }
}

/// The generator reaches every family and applies a fair share: a guard
/// against a test that passes because everything is rejected.
#[test]
fn the_generator_reaches_every_family() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = prop::collection::vec(prop::collection::vec(draft(), 1..6), 30..31);
    let mut applied = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut fired = 0;
    for _ in 0..64 {
        let records = commands(&strategy.new_tree(&mut runner).expect("a value").current());
        let run = run_harness(&records);
        for (commands, outcomes) in records.iter().zip(&run.outcomes).skip(1) {
            for (command, outcome) in commands.iter().zip(outcomes) {
                let family = format!("{:?}", command.body);
                let family = family.split(['(', ' ']).next().unwrap_or_default().to_string();
                let counts = applied.entry(family).or_default();
                counts.0 += 1;
                counts.1 += usize::from(outcome.is_applied() && !outcome.retried);
                fired += outcome.fired.len();
            }
        }
    }
    for family in CommandBody::FAMILIES {
        let (seen, done) = applied.get(family).copied().unwrap_or_default();
        assert!(done > 0, "{family}: applied {done} of {seen}: {applied:?}");
    }
    assert!(fired > 0, "no timer fired");
}
