//! Scenario tests of the back-channel spools, through the real encode →
//! batch → apply path. The reference-model test lives in the `tests` crate.

use super::command::*;
use super::outcome::{Effect, Fired, Handout, Object, Outcome, Rejection, Verdict};
use super::spools::{DeliveryState, AGING_STEP_MS, RETRY_DELAY_MS_BASE};
use super::testing::*;
use super::State;

/// A harness with [`spool_farm`] applied.
fn spooled() -> Harness {
    let mut harness = Harness::new();
    for command in spool_farm() {
        let outcome = harness.apply(command.clone());
        assert!(outcome.is_applied(), "{command:?}: {outcome:?}");
    }
    harness
}

fn applied(outcome: Outcome) -> Effect {
    match outcome.verdict {
        Verdict::Applied(effect) => effect,
        Verdict::Rejected(rejection) => panic!("rejected: {rejection}"),
    }
}

fn rejected(outcome: Outcome) -> Rejection {
    match outcome.verdict {
        Verdict::Rejected(rejection) => rejection,
        Verdict::Applied(effect) => panic!("applied: {effect:?}"),
    }
}

/// Publishes in acme at `at_ms`; returns the message's position.
fn publish_at(harness: &mut Harness, at_ms: u64, body: CommandBody) -> u64 {
    let effect = applied(harness.apply(command("acme", at_ms, body)));
    let Effect::Published { position, .. } = effect else {
        panic!("not a publish: {effect:?}")
    };
    position
}

/// What a poll handed out: (message position, destination ids).
fn poll_at(harness: &mut Harness, tenant: &str, at_ms: u64, caller: ComponentRef, max: u32) -> Vec<(u64, Vec<String>)> {
    let effect = applied(harness.apply(command(tenant, at_ms, poll(caller, max))));
    let Effect::Polled { handed, .. } = effect else {
        panic!("not a poll: {effect:?}")
    };
    handed.into_iter().map(summary).collect()
}

fn summary(handout: Handout) -> (u64, Vec<String>) {
    let ids = handout.destinations.into_iter().map(|destination| destination.id);
    (handout.message, ids.collect())
}

fn states(state: &State, position: u64) -> Vec<(String, DeliveryState, u16)> {
    let view = state.view("acme").unwrap();
    let deliveries = view.deliveries(position).expect("a message of acme");
    deliveries
        .into_iter()
        .map(|delivery| (delivery.destination.id, delivery.state, delivery.attempts))
        .collect()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn a_group_is_expanded_at_publish_into_one_body_and_a_state_per_destination() {
    let mut harness = spooled();
    let effect = applied(harness.apply(command("acme", 5, publish("m1", vec![own("si")], &["proxies"]))));
    let Effect::Published {
        position,
        destinations,
        pruned,
    } = effect
    else {
        panic!("{effect:?}")
    };
    assert_eq!((destinations, pruned), (3, 0));
    let pending = |id: &str| (id.to_string(), DeliveryState::Pending, 0);
    assert_eq!(
        states(&harness.state, position),
        [pending("proxy"), pending("si"), pending("proxy2")]
    );
    let spools = harness.state.spools();
    assert_eq!((spools.message_count(), spools.delivery_count()), (1, 3));
    let view = harness.state.view("acme").unwrap();
    assert_eq!(view.spool_depth(&own("si")), Some(1));
    assert_eq!(view.spool_depth_total(), 3);
    assert_eq!(view.back_message_by_id("m1").unwrap().position, position);
}

#[test]
fn publish_refuses_what_has_no_unique_back_channel_path() {
    let steps = spool_farm().into_iter().map(|command| (command, Expect::Applied));
    let mut steps: Vec<_> = steps.collect();
    steps.extend([
        (
            command("acme", 5, publish("m1", vec![], &["proxies", "ops"])),
            Expect::Invalid("body.groups"),
        ),
        (
            command("acme", 5, publish("m1", vec![], &[])),
            Expect::Invalid("body.destinations"),
        ),
        (
            command("acme", 5, publish("m1", vec![own("mailer")], &[])),
            Expect::Rejected(Rejection::NoBackChannel {
                component: "mailer".into(),
            }),
        ),
        (
            command("acme", 5, publish("m1", vec![], &["ops"])),
            Expect::Rejected(Rejection::GroupNotDestination),
        ),
        (
            command("acme", 5, publish("m1", vec![own("nobody")], &[])),
            Expect::Rejected(Rejection::NotFound {
                object: Object::Destination,
            }),
        ),
        // Another tenant's component is not found, like a missing one.
        (
            command("acme", 5, publish("m1", vec![own("gproxy")], &[])),
            Expect::Rejected(Rejection::NotFound {
                object: Object::Destination,
            }),
        ),
        (command("acme", 5, publish("m1", vec![own("si")], &[])), Expect::Applied),
        (
            command("acme", 5, publish("m1", vec![own("si")], &[])),
            Expect::Rejected(Rejection::AlreadyExists {
                object: Object::Message,
            }),
        ),
    ]);
    let mut from_proxy = publish("m2", vec![own("si")], &[]);
    if let CommandBody::Publish(publish) = &mut from_proxy {
        publish.header.source = own("proxy");
    }
    steps.push((
        command("acme", 5, from_proxy),
        Expect::Rejected(Rejection::WrongKind {
            object: Object::Source,
            kind: ComponentKind::Proxy,
        }),
    ));
    check(&steps);
}

#[test]
fn an_intermediate_mlm_gets_each_body_once_with_its_destinations() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("si"), own("im")], &["proxies"]));
    let m2 = publish_at(&mut harness, 5, publish("m2", vec![own("si2")], &[]));
    let caller = own("agg");
    let handed = poll_at(&mut harness, super::LANDLORD, 6, caller.clone(), 100);
    assert_eq!(
        handed,
        [(m1, ids(&["proxy", "im", "si", "proxy2"])), (m2, ids(&["si2"]))]
    );
    // Nothing left: the next poll is a read that finds nothing.
    let landlord = harness.state.view(super::LANDLORD).unwrap();
    assert_eq!(landlord.has_ready(&caller), Some(false));
    let effect = applied(harness.apply(command(super::LANDLORD, 6, poll(caller, 100))));
    assert_eq!(
        effect,
        Effect::Polled {
            position: None,
            handed: vec![],
            message: None
        }
    );
}

#[test]
fn a_proxy_collects_for_itself_and_what_is_below_it() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("si"), own("proxy2")], &[]));
    let view = harness.state.view("acme").unwrap();
    assert_eq!(view.has_ready(&own("proxy")), Some(true));
    assert_eq!(view.has_ready(&own("im2")), Some(false));
    assert_eq!(poll_at(&mut harness, "acme", 6, own("proxy"), 10), [(m1, ids(&["si"]))]);
    assert_eq!(
        poll_at(&mut harness, "acme", 6, own("proxy2"), 10),
        [(m1, ids(&["proxy2"]))]
    );
}

#[test]
fn redundant_paths_see_a_delivery_until_one_takes_it_and_the_first_ack_wins() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("si2")], &[]));
    let view = harness.state.view("acme").unwrap();
    assert_eq!(view.has_ready(&own("proxy")), Some(true));
    assert_eq!(view.has_ready(&own("proxy2")), Some(true));
    assert_eq!(
        poll_at(&mut harness, "acme", 6, own("proxy"), 10),
        [(m1, ids(&["si2"]))]
    );
    // Handed out through proxy: proxy2 stops seeing it.
    assert_eq!(poll_at(&mut harness, "acme", 7, own("proxy2"), 10), []);
    // Not settled within the visibility timeout: back, on either path.
    let late = 6 + VISIBILITY_MS_DEFAULT;
    let outcome = harness.apply(command("acme", late, CommandBody::Tick));
    assert_eq!(
        outcome.fired,
        [Fired::DeliveryTimedOut {
            tenant: "acme".into(),
            message: m1,
            destination: "si2".into()
        }]
    );
    assert_eq!(
        poll_at(&mut harness, "acme", late, own("proxy2"), 10),
        [(m1, ids(&["si2"]))]
    );
    let ack = |caller: &str| settle(own(caller), m1, vec![own("si2")], Settlement::Ack);
    let effect = applied(harness.apply(command("acme", late, ack("proxy2"))));
    assert!(
        matches!(
            effect,
            Effect::Settled {
                acked: 1,
                unchanged: 0,
                ..
            }
        ),
        "{effect:?}"
    );
    // The other path's late ack changes nothing.
    let effect = applied(harness.apply(command("acme", late, ack("proxy"))));
    assert!(
        matches!(
            effect,
            Effect::Settled {
                acked: 0,
                unchanged: 1,
                ..
            }
        ),
        "{effect:?}"
    );
    assert_eq!(states(&harness.state, m1), [("si2".into(), DeliveryState::Acked, 2)]);
    let deliveries = harness.state.view("acme").unwrap().deliveries(m1).unwrap();
    assert_eq!(deliveries[0].holder, Some(own("proxy2")));
}

#[test]
fn settle_is_allowed_on_the_path_only_and_in_the_message_tenant() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("si")], &[]));
    let ack = |caller: ComponentRef, destination: &str| settle(caller, m1, vec![own(destination)], Settlement::Ack);
    let refused = |harness: &mut Harness, tenant: &str, body| rejected(harness.apply(command(tenant, 6, body)));
    assert_eq!(
        refused(&mut harness, "acme", ack(own("proxy2"), "si")),
        Rejection::NotReachable
    );
    assert_eq!(
        refused(&mut harness, "acme", ack(own("proxy"), "si2")),
        Rejection::NotFound {
            object: Object::Destination
        }
    );
    assert_eq!(
        refused(
            &mut harness,
            "globex",
            settle(own("gproxy"), m1, vec![own("gproxy")], Settlement::Ack)
        ),
        Rejection::NotFound {
            object: Object::Message
        }
    );
    // The intermediate MLM acks on the destination's behalf.
    let effect = applied(harness.apply(command("acme", 6, ack(hosted("agg"), "si"))));
    assert!(matches!(effect, Effect::Settled { acked: 1, .. }), "{effect:?}");
    let deliveries = harness.state.view("acme").unwrap().deliveries(m1).unwrap();
    assert_eq!(deliveries[0].holder, Some(hosted("agg")));
}

#[test]
fn nacks_respool_with_backoff_and_park_after_the_last_attempt() {
    let mut harness = spooled();
    let mut body = publish("m1", vec![own("proxy")], &[]);
    if let CommandBody::Publish(publish) = &mut body {
        publish.max_attempts = 2;
    }
    let m1 = publish_at(&mut harness, 5, body);
    let nack = |reason| settle(own("proxy"), m1, vec![own("proxy")], Settlement::Nack(reason));
    assert_eq!(
        poll_at(&mut harness, "acme", 6, own("proxy"), 10),
        [(m1, ids(&["proxy"]))]
    );
    let effect = applied(harness.apply(command("acme", 6, nack(NackReason::Throttled))));
    assert!(matches!(effect, Effect::Settled { respooled: 1, .. }), "{effect:?}");
    // Waiting until the retry time.
    assert_eq!(
        poll_at(&mut harness, "acme", 6 + RETRY_DELAY_MS_BASE - 1, own("proxy"), 10),
        []
    );
    let retry = 6 + RETRY_DELAY_MS_BASE;
    assert_eq!(
        poll_at(&mut harness, "acme", retry, own("proxy"), 10),
        [(m1, ids(&["proxy"]))]
    );
    let effect = applied(harness.apply(command("acme", retry, nack(NackReason::ReceptionFailed))));
    assert!(matches!(effect, Effect::Settled { parked: 1, .. }), "{effect:?}");
    let view = harness.state.view("acme").unwrap();
    assert_eq!(view.parked(10), [(m1, own("proxy"))]);
    assert_eq!(view.spool_depth(&own("proxy")), Some(0));
    let delivery = &view.deliveries(m1).unwrap()[0];
    assert_eq!(delivery.nacked, Some(NackReason::ReceptionFailed));
    // A nack of a delivery not handed out changes nothing.
    let effect = applied(harness.apply(command("acme", retry, nack(NackReason::Rejected))));
    assert!(matches!(effect, Effect::Settled { unchanged: 1, .. }), "{effect:?}");
    // Re-driven: pending again, with fresh attempts.
    let redrive = CommandBody::Redrive(Redrive {
        message: Some(m1),
        destination: None,
    });
    let effect = applied(harness.apply(command("acme", retry, redrive)));
    assert!(
        matches!(
            effect,
            Effect::Redriven {
                count: 1,
                more: false,
                ..
            }
        ),
        "{effect:?}"
    );
    assert_eq!(
        states(&harness.state, m1),
        [("proxy".into(), DeliveryState::Pending, 0)]
    );
    assert_eq!(
        poll_at(&mut harness, "acme", retry, own("proxy"), 10),
        [(m1, ids(&["proxy"]))]
    );
}

#[test]
fn a_delivery_out_of_attempts_at_its_timeout_is_parked() {
    let mut harness = spooled();
    let mut body = publish("m1", vec![own("proxy")], &[]);
    if let CommandBody::Publish(publish) = &mut body {
        publish.max_attempts = 1;
    }
    let m1 = publish_at(&mut harness, 5, body);
    poll_at(&mut harness, "acme", 6, own("proxy"), 10);
    let outcome = harness.apply(command("acme", 6 + VISIBILITY_MS_DEFAULT, CommandBody::Tick));
    assert_eq!(
        outcome.fired,
        [Fired::DeliveryParked {
            tenant: "acme".into(),
            message: m1,
            destination: "proxy".into()
        }]
    );
}

#[test]
fn expiry_expires_every_open_delivery_in_log_time() {
    let mut harness = spooled();
    let qos = Qos {
        precedence: 0,
        expiry_ms: Some(1000),
        persistence: false,
    };
    let m1 = publish_at(
        &mut harness,
        5,
        publish_qos("m1", vec![own("si"), own("proxy"), own("si2")], qos),
    );
    poll_at(&mut harness, "acme", 6, own("im"), 10);
    let ack = settle(own("proxy"), m1, vec![own("proxy")], Settlement::Ack);
    applied(harness.apply(command("acme", 7, ack)));
    let outcome = harness.apply(command("acme", 1000, CommandBody::Tick));
    assert_eq!(
        outcome.fired,
        [Fired::DeliveriesExpired {
            tenant: "acme".into(),
            message: m1,
            count: 2
        }]
    );
    assert_eq!(
        states(&harness.state, m1),
        [
            ("proxy".into(), DeliveryState::Acked, 0),
            ("si".into(), DeliveryState::Expired, 1),
            ("si2".into(), DeliveryState::Expired, 1),
        ]
    );
    assert_eq!(harness.state.view("acme").unwrap().spool_depth_total(), 0);
}

#[test]
fn a_poll_never_hands_out_an_expired_delivery_before_its_timer_fires() {
    let mut harness = spooled();
    let qos = Qos {
        precedence: 0,
        expiry_ms: Some(1000),
        persistence: false,
    };
    publish_at(&mut harness, 5, publish_qos("m1", vec![own("proxy")], qos));
    let m2 = publish_at(&mut harness, 5, publish("m2", vec![own("proxy")], &[]));
    // The poll at 1000 fires the expiry timer first; either way, only m2.
    assert_eq!(
        poll_at(&mut harness, "acme", 1000, own("proxy"), 10),
        [(m2, ids(&["proxy"]))]
    );
}

#[test]
fn precedence_goes_first_then_age_and_aging_prevents_starvation() {
    let mut harness = spooled();
    let qos = |precedence| Qos {
        precedence,
        expiry_ms: None,
        persistence: false,
    };
    let low = publish_at(&mut harness, 5, publish_qos("low", vec![own("proxy")], qos(1)));
    let high = publish_at(&mut harness, 5, publish_qos("high", vec![own("proxy")], qos(9)));
    let high_later = publish_at(&mut harness, 6, publish_qos("high2", vec![own("proxy")], qos(9)));
    let order = poll_at(&mut harness, "acme", 7, own("proxy"), 10);
    let order: Vec<u64> = order.into_iter().map(|(message, _)| message).collect();
    assert_eq!(order, [high, high_later, low]);
    // A low message that waited more than (difference × step) goes before
    // a newer high one.
    let old_low = publish_at(&mut harness, 100, publish_qos("old-low", vec![own("proxy2")], qos(1)));
    let waited = 100 + 8 * AGING_STEP_MS + 1;
    let new_high = publish_at(
        &mut harness,
        waited,
        publish_qos("new-high", vec![own("proxy2")], qos(9)),
    );
    let order = poll_at(&mut harness, "acme", waited, own("proxy2"), 10);
    let order: Vec<u64> = order.into_iter().map(|(message, _)| message).collect();
    assert_eq!(order, [old_low, new_high]);
}

#[test]
fn a_hosted_mlm_serves_customers_in_turn_so_a_flood_cannot_starve_another() {
    let mut harness = spooled();
    for at in 0..5 {
        publish_at(&mut harness, 5, publish(&format!("flood{at}"), vec![own("proxy")], &[]));
    }
    let body = publish("g1", vec![own("gproxy")], &[]);
    let globex = match applied(harness.apply(command("globex", 6, body))) {
        Effect::Published { position, .. } => position,
        effect => panic!("{effect:?}"),
    };
    let handed = poll_at(&mut harness, super::LANDLORD, 7, own("agg"), 2);
    let tenants: Vec<u64> = handed.iter().map(|(message, _)| *message).collect();
    assert!(tenants.contains(&globex), "globex served in the first turn: {handed:?}");
    // A customer's own poll through the hosted MLM sees only its own.
    let handed = poll_at(&mut harness, "globex", 8, hosted("agg"), 10);
    assert_eq!(handed, []);
}

#[test]
fn over_capacity_the_lowest_delivery_is_pruned_and_the_publisher_told() {
    let mut harness = spooled();
    let configure = CommandBody::ConfigureSpool(ConfigureSpool { capacity: 3 });
    applied(harness.apply(command("acme", 5, configure)));
    let qos = |precedence, expiry_ms, persistence| Qos {
        precedence,
        expiry_ms,
        persistence,
    };
    let mut publish_one = |id: &str, qos: Qos| publish_at(&mut harness, 5, publish_qos(id, vec![own("proxy")], qos));
    // The prune order: lowest precedence; earliest expiry; non-persistent
    // before persistent; oldest.
    let persistent = publish_one("persistent", qos(1, Some(10_000), true));
    let transient = publish_one("transient", qos(1, Some(10_000), false));
    let later_expiry = publish_one("later", qos(1, Some(20_000), false));
    let higher = publish_one("higher", qos(2, Some(1_000), false));
    let outcomes: Vec<_> = [persistent, transient, later_expiry, higher]
        .into_iter()
        .map(|message| states(&harness.state, message)[0].1)
        .collect();
    use DeliveryState::*;
    assert_eq!(outcomes, [Pending, Pruned, Pending, Pending]);
    let again = publish_at(
        &mut harness,
        5,
        publish_qos("again", vec![own("proxy")], qos(1, Some(10_000), true)),
    );
    // Equal in all but age: the older goes.
    assert_eq!(states(&harness.state, persistent)[0].1, Pruned);
    assert_eq!(states(&harness.state, again)[0].1, Pending);
    let view = harness.state.view("acme").unwrap();
    let told: Vec<String> = view
        .pruned_responses(&hosted("apps"))
        .unwrap()
        .into_iter()
        .map(|response| response.message_id)
        .collect();
    assert_eq!(told, ["transient", "persistent"]);
    assert_eq!(view.spool_depth(&own("proxy")), Some(3));
}

#[test]
fn a_bulk_download_is_unpublished_when_every_destination_is_done() {
    let mut harness = spooled();
    let mut body = publish("sw1", vec![], &["proxies"]);
    if let CommandBody::Publish(publish) = &mut body {
        publish.payload = Payload::Bulk {
            url: "https://apps.example/sw1".into(),
            size: 1 << 30,
        };
    }
    let sw1 = publish_at(&mut harness, 5, body);
    assert_eq!(harness.state.view("acme").unwrap().open_bulk_messages().len(), 1);
    let handed = poll_at(&mut harness, super::LANDLORD, 6, own("agg"), 10);
    assert_eq!(handed, [(sw1, ids(&["proxy", "proxy2"]))]);
    // proxy2 is throttled: respooled; proxy fetched it: acked.
    let nack = settle(
        hosted("agg"),
        sw1,
        vec![own("proxy2")],
        Settlement::Nack(NackReason::Throttled),
    );
    applied(harness.apply(command("acme", 7, nack)));
    let ack = |destination| settle(hosted("agg"), sw1, vec![own(destination)], Settlement::Ack);
    let effect = applied(harness.apply(command("acme", 7, ack("proxy"))));
    assert!(
        matches!(effect, Effect::Settled { unpublished: false, .. }),
        "{effect:?}"
    );
    let effect = applied(harness.apply(command("acme", 8, ack("proxy2"))));
    assert!(
        matches!(effect, Effect::Settled { unpublished: true, .. }),
        "{effect:?}"
    );
    let view = harness.state.view("acme").unwrap();
    assert!(view.open_bulk_messages().is_empty());
    assert!(view.back_message(sw1).unwrap().finished);
}

#[test]
fn a_poll_can_carry_an_upstream_message_and_a_rejected_message_hands_out_nothing() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("proxy")], &[]));
    let upstream =
        |id: &str, source: &str| match message("acme", id, source, ComponentKind::Proxy, ("event", "x"), data(b"up")) {
            CommandBody::Upstream(message) => message,
            _ => unreachable!(),
        };
    let with_message = |message| {
        CommandBody::Poll(Poll {
            caller: own("proxy"),
            max_deliveries: 10,
            max_bytes: 1 << 20,
            visibility_ms: 0,
            message: Some(message),
        })
    };
    let outcome = harness.apply(command("acme", 6, with_message(upstream("u1", "nobody"))));
    assert_eq!(rejected(outcome), Rejection::NotFound { object: Object::Source });
    let effect = applied(harness.apply(command("acme", 6, with_message(upstream("u1", "proxy")))));
    let Effect::Polled {
        position,
        handed,
        message: Some(stored),
    } = effect
    else {
        panic!("{effect:?}")
    };
    assert_eq!(position, Some(stored.position));
    assert!(!stored.duplicate);
    assert_eq!(
        handed.into_iter().map(summary).collect::<Vec<_>>(),
        [(m1, ids(&["proxy"]))]
    );
    assert_eq!(harness.state.view("acme").unwrap().message("u1"), Some(stored.position));
}

#[test]
fn a_poll_is_bounded_in_deliveries_and_bytes_but_hands_out_one_body_whatever_its_size() {
    let mut harness = spooled();
    let m1 = publish_at(
        &mut harness,
        5,
        publish("m1", vec![own("si"), own("im"), own("proxy")], &[]),
    );
    let m2 = publish_at(&mut harness, 5, publish("m2", vec![own("proxy")], &[]));
    assert_eq!(
        poll_at(&mut harness, "acme", 6, own("proxy"), 2),
        [(m1, ids(&["proxy", "im"]))]
    );
    let tiny = CommandBody::Poll(Poll {
        caller: own("proxy"),
        max_deliveries: 10,
        max_bytes: 1,
        visibility_ms: 0,
        message: None,
    });
    let Effect::Polled { handed, .. } = applied(harness.apply(command("acme", 6, tiny))) else {
        panic!()
    };
    assert_eq!(
        handed.into_iter().map(summary).collect::<Vec<_>>(),
        [(m1, ids(&["si"]))]
    );
    assert_eq!(
        poll_at(&mut harness, "acme", 6, own("proxy"), 10),
        [(m2, ids(&["proxy"]))]
    );
}

#[test]
fn spools_survive_snapshot_and_restore() {
    let mut harness = spooled();
    let m1 = publish_at(&mut harness, 5, publish("m1", vec![own("si2")], &["proxies"]));
    poll_at(&mut harness, "acme", 6, own("proxy"), 1);
    let restored = State::restore(&harness.state.snapshot()).expect("restores");
    assert_eq!(restored.hash(), harness.state.hash());
    let mut copy = Harness::new();
    copy.state = restored;
    let next = command("acme", 7, poll(own("proxy2"), 10));
    let mut original = harness;
    // Both continue alike from the same index.
    let index = original.state.last_applied() + 1;
    let left = original
        .state
        .apply(index, crate::kinds::COMMAND_BATCH, &batch_of(&next))
        .unwrap();
    let right = copy
        .state
        .apply(index, crate::kinds::COMMAND_BATCH, &batch_of(&next))
        .unwrap();
    assert_eq!(left, right);
    assert_eq!(original.state.hash(), copy.state.hash());
    assert!(states(&original.state, m1)
        .iter()
        .all(|(_, state, _)| *state == DeliveryState::Delivered));
}

fn batch_of(command: &Command) -> rkyv::util::AlignedVec<8> {
    let mut batch = super::BatchBuilder::new();
    batch.push(super::encode(command).unwrap()).unwrap();
    aligned(&batch.finish())
}
