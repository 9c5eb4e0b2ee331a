//! Scenario tests of the state machine, written as data through
//! [`super::testing::check`]. The model-based and determinism tests live in
//! the `tests` crate.

use super::command::{AlarmState, ComponentKind::*, ExpectedVersion, GroupKind, Switch, LANDLORD};
use super::outcome::{AlarmChange, Effect, Object, Rejection};
use super::testing::*;
use super::topology::{Liveness, LIVENESS_FAILED_AFTER_MS, LIVENESS_LATE_AFTER_MS};
use super::{Direction, Fired, State};

/// A landlord with an aggregation MLM, and customer `acme` with a proxy,
/// an integration module and a support instance below it.
fn farm() -> Vec<(super::Command, Expect)> {
    super::testing::farm()
        .into_iter()
        .map(|command| (command, Expect::Applied))
        .collect()
}

fn with(mut steps: Vec<(super::Command, Expect)>, more: Vec<(super::Command, Expect)>) -> State {
    steps.extend(more);
    check(&steps)
}

#[test]
fn topology_registers_a_tree_and_answers_reachability() {
    let state = with(farm(), vec![]);
    let topology = state.topology();
    let acme = state.tenant_slot("acme").unwrap();
    let agg = topology.registered(0, "agg").unwrap();
    let ids = |slots: Vec<u32>| {
        slots
            .into_iter()
            .map(|slot| topology.component(slot).id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(topology.reachable_through(agg)), ["proxy", "im", "si"]);
    let proxy = topology.registered(acme, "proxy").unwrap();
    assert_eq!(ids(topology.reachable_through(proxy)), ["im", "si"]);
    // Another tenant's names are not found in acme's namespace.
    assert_eq!(topology.registered(acme, "agg"), None);
}

#[test]
fn stateful_checks_reject_without_effect() {
    with(
        farm(),
        vec![
            (
                command("acme", 3, component("proxy", Proxy, vec![hosted("agg")])),
                Expect::Rejected(Rejection::AlreadyExists {
                    object: Object::Component,
                }),
            ),
            (
                command("acme", 3, component("x", Proxy, vec![own("agg")])),
                Expect::Rejected(Rejection::NotFound { object: Object::Parent }),
            ),
            (
                command("acme", 3, component("y", IntegrationModule, vec![hosted("agg")])),
                Expect::Rejected(Rejection::ParentNotAllowed {
                    parent_kind: AggregationMlm,
                }),
            ),
            (
                command("acme", 3, deregister("im")),
                Expect::Rejected(Rejection::HasChildren),
            ),
            (
                command("acme", 3, set_enabled("proxy", Switch::SupportInstance, false)),
                Expect::Rejected(Rejection::WrongKind {
                    object: Object::Component,
                    kind: Proxy,
                }),
            ),
            (
                command("acme", 3, set_enabled("si", Switch::SupportInstance, false)),
                Expect::Applied,
            ),
            (
                command("ghost", 3, append("s", ExpectedVersion::Any, None, b"x")),
                Expect::Rejected(Rejection::TenantUnknown),
            ),
        ],
    );
}

#[test]
fn streams_check_expected_versions_and_idempotency_keys() {
    let state = with(
        farm(),
        vec![
            (
                command("acme", 5, append("orders", ExpectedVersion::NoStream, None, b"a")),
                Expect::Applied,
            ),
            (
                command("acme", 5, append("orders", ExpectedVersion::NoStream, None, b"b")),
                Expect::Rejected(Rejection::WrongExpectedVersion { current: Some(0) }),
            ),
            (
                command("acme", 5, append("orders", ExpectedVersion::Exact(0), Some("k1"), b"b")),
                Expect::Applied,
            ),
            (
                command("acme", 6, append("orders", ExpectedVersion::Exact(0), Some("k1"), b"b")),
                Expect::Effect(Effect::StreamDuplicate {
                    position: 9,
                    version: 1,
                }),
            ),
            (
                command("acme", 6, append("other", ExpectedVersion::Exact(3), None, b"c")),
                Expect::Rejected(Rejection::WrongExpectedVersion { current: None }),
            ),
        ],
    );
    let acme = state.tenant_slot("acme").unwrap();
    assert_eq!(state.streams().version(acme, "orders"), Some(1));
    let back = state
        .streams()
        .read(acme, "orders", u64::MAX, Direction::Backward, 10)
        .unwrap();
    assert_eq!(back.iter().map(|event| event.version).collect::<Vec<_>>(), [1, 0]);
}

#[test]
fn alarms_open_and_clear_and_resends_are_recognized() {
    let raise = |id: &str, at| {
        command(
            "acme",
            at,
            message(
                "acme",
                id,
                "im",
                IntegrationModule,
                ("alarm", "disk"),
                alarm("si", "a1", AlarmState::Raised),
            ),
        )
    };
    let clear = |id: &str, at| {
        command(
            "acme",
            at,
            message(
                "acme",
                id,
                "im",
                IntegrationModule,
                ("alarm", "disk"),
                alarm("si", "a1", AlarmState::Cleared),
            ),
        )
    };
    let state = with(
        farm(),
        vec![
            (
                raise("m1", 10),
                Expect::Effect(Effect::MessageStored {
                    position: 8,
                    alarm: Some(AlarmChange::Raised),
                }),
            ),
            (
                raise("m1", 11),
                Expect::Effect(Effect::MessageDuplicate { position: 8 }),
            ),
            (
                command(
                    "acme",
                    12,
                    message("acme", "m1", "proxy", Proxy, ("alarm", "disk"), data(b"x")),
                ),
                Expect::Rejected(Rejection::MessageIdInUse),
            ),
        ],
    );
    let acme = state.tenant_slot("acme").unwrap();
    assert_eq!(state.messages().open_alarms(acme).len(), 1);
    let state = with(
        farm(),
        vec![
            (raise("m1", 10), Expect::Applied),
            (
                clear("m2", 11),
                Expect::Effect(Effect::MessageStored {
                    position: 9,
                    alarm: Some(AlarmChange::Cleared),
                }),
            ),
        ],
    );
    assert!(state.messages().open_alarms(acme).is_empty());
    assert_eq!(
        state
            .messages()
            .by_class(acme, "alarm", "disk", 0, Direction::Forward, 10),
        [8, 9]
    );
}

#[test]
fn liveness_follows_log_time_and_rolls_up() {
    let mut harness = Harness::new();
    for (command, _) in farm() {
        harness.apply(command);
    }
    let start = 2;
    harness.apply(command(
        "acme",
        start + 1000,
        heartbeat("acme", "h1", "proxy", Proxy, &["im"]),
    ));
    let late = harness.apply(command(
        "acme",
        start + LIVENESS_LATE_AFTER_MS + 10,
        super::CommandBody::Tick,
    ));
    // si was last seen at registration, so it is late first.
    assert!(
        late.fired.contains(&Fired::ComponentLate {
            tenant: "acme".into(),
            component: "si".into()
        }),
        "{late:?}"
    );
    let state = &harness.state;
    let acme = state.tenant_slot("acme").unwrap();
    let proxy = state.topology().registered(acme, "proxy").unwrap();
    assert_eq!(state.topology().status(proxy), (Liveness::Alive, Liveness::Late));
    let failed = harness.apply(command(
        "acme",
        start + LIVENESS_FAILED_AFTER_MS + 2000,
        super::CommandBody::Tick,
    ));
    assert!(
        failed.fired.contains(&Fired::ComponentFailed {
            tenant: "acme".into(),
            component: "si".into()
        }),
        "{failed:?}"
    );
    assert_eq!(harness.state.topology().not_alive(acme).len(), 3);
}

#[test]
fn groups_keep_history() {
    let state = with(
        farm(),
        vec![
            (
                command("acme", 3, define_group("proxies", GroupKind::Proxy)),
                Expect::Applied,
            ),
            (
                command("acme", 3, group_member("proxies", own("proxy"), true)),
                Expect::Applied,
            ),
            (
                command("acme", 3, group_member("proxies", own("im"), true)),
                Expect::Rejected(Rejection::WrongKind {
                    object: Object::Member,
                    kind: IntegrationModule,
                }),
            ),
            (
                command("acme", 3, group_member("proxies", own("proxy"), false)),
                Expect::Applied,
            ),
            (
                command("acme", 3, group_member("proxies", own("proxy"), false)),
                Expect::Rejected(Rejection::NotMember),
            ),
            (
                command("acme", 3, map_management_id("proxy", "10.0.0.7", Some("si"))),
                Expect::Applied,
            ),
        ],
    );
    let acme = state.tenant_slot("acme").unwrap();
    assert!(state.topology().group(acme, "proxies").unwrap().members.is_empty());
    assert_eq!(state.topology().group_members_at(acme, "proxies", 9).unwrap().len(), 1);
}

#[test]
fn sessions_return_the_first_outcome() {
    let mut harness = Harness::new();
    harness.apply(command(LANDLORD, 1, customer("acme")));
    let opened = harness.apply(command("acme", 1, super::CommandBody::OpenSession));
    let Some(client) = (match opened.verdict {
        super::Verdict::Applied(Effect::SessionOpened { client_id }) => Some(client_id),
        _ => None,
    }) else {
        panic!("{opened:?}")
    };
    let first = harness.apply(in_session(
        command("acme", 2, append("s", ExpectedVersion::NoStream, None, b"x")),
        client,
        1,
    ));
    let again = harness.apply(in_session(
        command("acme", 3, append("s", ExpectedVersion::NoStream, None, b"x")),
        client,
        1,
    ));
    assert!(first.is_applied() && again.retried);
    assert_eq!(first.verdict, again.verdict);
    assert_eq!(harness.state.streams().event_count(), 1);
    let unknown = harness.apply(in_session(command("acme", 3, super::CommandBody::Tick), 999, 1));
    assert_eq!(unknown.verdict, super::Verdict::Rejected(Rejection::SessionUnknown));
}

#[test]
fn snapshots_restore_to_the_same_state() {
    let state = with(
        farm(),
        vec![(
            command("acme", 5, append("orders", ExpectedVersion::Any, Some("k"), b"a")),
            Expect::Applied,
        )],
    );
    let snapshot = state.snapshot();
    let restored = State::restore(&snapshot).unwrap();
    assert_eq!(restored.hash(), state.hash());
    let acme = restored.tenant_slot("acme").unwrap();
    assert_eq!(restored.streams().version(acme, "orders"), Some(0));
    let mut damaged = snapshot.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(State::restore(&damaged).is_err());
}

#[test]
fn bad_commands_name_the_field() {
    check(&[
        (command("Acme", 1, customer("x")), Expect::Invalid("tenant")),
        (command("acme", 1, customer("x")), Expect::Invalid("tenant")),
        (command(LANDLORD, 1, customer("landlord")), Expect::Invalid("body.name")),
        (
            command("acme", 1, component("p", AggregationMlm, vec![])),
            Expect::Invalid("body.kind"),
        ),
        (
            command("acme", 1, component("p", Proxy, vec![])),
            Expect::Invalid("body.parents"),
        ),
        (
            command("acme", 1, append("", ExpectedVersion::Any, None, b"")),
            Expect::Invalid("body.stream"),
        ),
        (
            command("acme", 1, message("other", "m", "p", Proxy, ("a", "b"), data(b""))),
            Expect::Invalid("body.header.customer"),
        ),
        (
            command(
                "acme",
                1,
                message(
                    "acme",
                    "m",
                    "p",
                    Proxy,
                    ("a", "b"),
                    super::command::Content::Heartbeat(super::command::Heartbeat { components: vec![] }),
                ),
            ),
            Expect::Invalid("body.header.class"),
        ),
    ]);
}

#[test]
fn tenant_views_never_reveal_other_tenants() {
    let state = with(
        farm(),
        vec![
            (command(LANDLORD, 3, customer("globex")), Expect::Applied),
            (
                command("globex", 3, component("proxy", Proxy, vec![hosted("agg")])),
                Expect::Applied,
            ),
            (
                command("acme", 4, append("orders", ExpectedVersion::Any, None, b"a")),
                Expect::Applied,
            ),
        ],
    );
    let acme = state.view("acme").unwrap();
    let globex = state.view("globex").unwrap();
    assert_eq!(acme.component("proxy").unwrap().tenant, "acme");
    assert_eq!(globex.component("proxy").unwrap().tenant, "globex");
    assert_eq!(globex.component("im"), None);
    assert_eq!(globex.reachable_through("proxy").unwrap(), vec![]);
    assert_eq!(globex.stream_version("orders"), None);
    assert_eq!(acme.component("agg"), None, "hosted components are the landlord's");
    let landlord = state.view(LANDLORD).unwrap();
    let below: Vec<_> = landlord
        .reachable_through("agg")
        .unwrap()
        .into_iter()
        .map(|c| (c.tenant, c.id))
        .collect();
    assert_eq!(below.len(), 4, "{below:?}");
    assert!(state.view("nobody").is_none());
}

#[test]
fn a_deregistered_component_registers_again_with_its_kind() {
    with(
        farm(),
        vec![
            (command("acme", 3, deregister("si")), Expect::Applied),
            (command("acme", 3, deregister("im")), Expect::Applied),
            (
                command("acme", 3, component("im", Proxy, vec![hosted("agg")])),
                Expect::Rejected(Rejection::WrongKind {
                    object: Object::Component,
                    kind: IntegrationModule,
                }),
            ),
            (
                command("acme", 3, component("im", IntegrationModule, vec![own("proxy")])),
                Expect::Applied,
            ),
            (
                command("acme", 3, component("si", SupportInstance, vec![own("im")])),
                Expect::Applied,
            ),
        ],
    );
}
