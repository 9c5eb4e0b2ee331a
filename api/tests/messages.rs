//! The Messages service through gRPC: upstream messages sent as a source
//! the caller may act as, read back whole, listed by source and class,
//! alarms raised and cleared, subscriptions by class that catch up and
//! follow live; tenants see only their own messages.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{tenant, As, Single, LANDLORD_ADMIN, WAIT};
use farmlog_api::pb::messages_client::MessagesClient;
use farmlog_api::pb::topology_client::TopologyClient;
use farmlog_api::pb::upstream_message::Content;
use farmlog_api::pb::{self, ComponentKind as Kind};
use tokio_stream::StreamExt;
use tonic::Code;

/// The longest a whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The proxy principal scoped to p1.
const PROXY_P1: &str = "farmlog://tenant/acme/proxy/component/p1";

/// Runs a test body, bounded by [`TEST_TIMEOUT`].
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test timed out")
}

fn reference(id: &str, hosted: bool) -> pb::ComponentRef {
    pb::ComponentRef { id: id.into(), hosted }
}

fn component(id: &str, kind: Kind, parent: Option<pb::ComponentRef>) -> pb::RegisterComponentRequest {
    pb::RegisterComponentRequest {
        id: id.into(),
        kind: kind.into(),
        version: "1.0".into(),
        mode: pb::CommunicationMode::Session.into(),
        parents: parent.into_iter().collect(),
        session: None,
    }
}

/// Customers `acme` and `beta`; the landlord's `server` → `apps`; acme's
/// `mlm-1` → proxies `p1` and `p2`, and `p1` → `i1` → `s1`.
async fn farm(single: &Single) {
    let mut landlord = TopologyClient::new(single.as_principal(LANDLORD_ADMIN, None).await);
    for name in ["acme", "beta"] {
        let customer = pb::RegisterCustomerRequest {
            tenant: name.into(),
            display_name: name.into(),
            session: None,
        };
        landlord.register_customer(customer).await.unwrap();
    }
    landlord
        .register_component(component("server", Kind::ApplicationServer, None))
        .await
        .unwrap();
    landlord
        .register_component(component(
            "apps",
            Kind::ApplicationsMlm,
            Some(reference("server", false)),
        ))
        .await
        .unwrap();
    let mut acme = TopologyClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
    for request in [
        component("mlm-1", Kind::CustomerMlm, Some(reference("apps", true))),
        component("p1", Kind::Proxy, Some(reference("mlm-1", false))),
        component("p2", Kind::Proxy, Some(reference("mlm-1", false))),
        component("i1", Kind::IntegrationModule, Some(reference("p1", false))),
        component("s1", Kind::SupportInstance, Some(reference("i1", false))),
    ] {
        acme.register_component(request).await.unwrap();
    }
}

fn message(id: &str, source: (&str, Kind), (class, subclass): (&str, &str), content: Content) -> pb::UpstreamMessage {
    pb::UpstreamMessage {
        header: Some(pb::MessageHeader {
            message_id: id.into(),
            source: source.0.into(),
            source_version: "2.1".into(),
            source_kind: source.1.into(),
            customer: "acme".into(),
            class: class.into(),
            subclass: subclass.into(),
            created_at_ms: 1_700_000_000_000,
        }),
        qos: Some(pb::Qos {
            precedence: 7,
            expiry_ms: Some(1_800_000_000_000),
            persistence: true,
        }),
        routing: vec![pb::RouteHop {
            component: Some(reference("p1", false)),
            at_ms: 1_700_000_000_001,
        }],
        content: Some(content),
    }
}

fn data(id: &str, source: (&str, Kind), class: (&str, &str), body: &str) -> pb::UpstreamMessage {
    let content = Content::Data(pb::DataContent {
        mime_type: "text/plain".into(),
        size: body.len() as u64,
        encoding: None,
        body: body.as_bytes().to_vec().into(),
    });
    message(id, source, class, content)
}

fn alarm(id: &str, alarm_id: &str, state: pb::AlarmState) -> pb::UpstreamMessage {
    let content = Content::Alarm(pb::AlarmContent {
        alarm_id: alarm_id.into(),
        support_instance: "s1".into(),
        severity: pb::Severity::Major.into(),
        state: state.into(),
        text: "disk /var at 99%".into(),
        data: vec![0, 1, 0xff].into(),
    });
    message(id, ("i1", Kind::IntegrationModule), ("alarm", "storage"), content)
}

fn send(message: pb::UpstreamMessage) -> pb::SendUpstreamRequest {
    pb::SendUpstreamRequest {
        message: Some(message),
        session: None,
    }
}

async fn client(single: &Single, principal: &str) -> MessagesClient<As> {
    MessagesClient::new(single.as_principal(principal, None).await)
}

/// The next message of a subscription, waiting at most [`WAIT`].
async fn next(stream: &mut tonic::Streaming<pb::StoredUpstream>) -> pb::StoredUpstream {
    let item = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no message in time");
    item.expect("the subscription ended").expect("the subscription failed")
}

fn message_id(stored: &pb::StoredUpstream) -> &str {
    let header = stored.message.as_ref().and_then(|message| message.header.as_ref());
    header.map_or("", |header| header.message_id.as_str())
}

fn message_ids(messages: &[pb::StoredUpstream]) -> Vec<&str> {
    messages.iter().map(message_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_a_source_in_scope_and_read_it_back_whole() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        let mut proxy = client(&single, PROXY_P1).await;
        // p1's certificate cannot speak for p2: not found, like a missing
        // source.
        let as_p2 = data("m0", ("p2", Kind::Proxy), ("inventory", "patch"), "x");
        let refused = proxy.send_upstream(send(as_p2)).await.unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{}", refused.message());
        // As itself, and for the integration module below it.
        let sent = data("m1", ("p1", Kind::Proxy), ("inventory", "patch"), "patch 42");
        let stored = proxy.send_upstream(send(sent.clone())).await.unwrap().into_inner();
        assert!(!stored.duplicate);
        assert_eq!(stored.alarm(), pb::AlarmChange::Unspecified);
        let below = data("m2", ("i1", Kind::IntegrationModule), ("inventory", "package"), "pkg");
        proxy.send_upstream(send(below)).await.unwrap();
        // A resend is recognized.
        let again = proxy.send_upstream(send(sent.clone())).await.unwrap().into_inner();
        assert!(again.duplicate);
        assert_eq!(again.position, stored.position);

        // Read back whole, with who wrote it and where.
        let mut module = client(&single, &tenant("acme", "service-module")).await;
        let read = module
            .get_message(pb::GetMessageRequest {
                message_id: "m1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.message.as_ref(), Some(&sent));
        assert_eq!((read.position, read.principal.as_str()), (stored.position, PROXY_P1));
        assert!(read.proposed_at_ms > 0);

        // Every content type survives the trip.
        let contents = [
            Content::Event(pb::EventContent {
                support_instance: Some("s1".into()),
                severity: pb::Severity::Warning.into(),
                text: "restarted".into(),
                data: vec![9].into(),
            }),
            Content::Response(pb::ResponseContent {
                in_reply_to: "b1".into(),
                status: pb::ResponseStatus::Rejected.into(),
                error: Some("busy".into()),
            }),
            Content::BulkRequest(pb::BulkRequestContent {
                size: 1 << 20,
                description: "logs".into(),
            }),
            Content::BulkResponse(pb::BulkResponseContent {
                request_message_id: "b0".into(),
                granted: false,
                url: None,
                reason: Some("full".into()),
            }),
        ];
        for (at, content) in contents.into_iter().enumerate() {
            let id = format!("c{at}");
            let sent = message(&id, ("p1", Kind::Proxy), ("misc", "kinds"), content);
            proxy.send_upstream(send(sent.clone())).await.unwrap();
            let read = module
                .get_message(pb::GetMessageRequest { message_id: id })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(read.message, Some(sent));
        }
        let heartbeat = message(
            "hb1",
            ("p1", Kind::Proxy),
            ("infrastructure", "heartbeat"),
            Content::Heartbeat(pb::HeartbeatContent {
                components: vec!["i1".into(), "s1".into()],
            }),
        );
        proxy.send_upstream(send(heartbeat)).await.unwrap();

        // Lists: all, by source, by class and subclass, by class alone,
        // backwards.
        let list = |filter, direction: pb::Direction, from_position| pb::ListMessagesRequest {
            from_position,
            direction: direction.into(),
            limit: 0,
            filter,
        };
        use pb::list_messages_request::Filter;
        let forward = pb::Direction::Forward;
        let all = module.list_messages(list(None, forward, 0)).await.unwrap().into_inner();
        assert_eq!(message_ids(&all.messages), ["m1", "m2", "c0", "c1", "c2", "c3", "hb1"]);
        let by_source = Some(Filter::Source("i1".into()));
        let from_i1 = module
            .list_messages(list(by_source, forward, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(message_ids(&from_i1.messages), ["m2"]);
        let class = |subclass: &str| {
            Some(Filter::Class(pb::ClassFilter {
                class: "inventory".into(),
                subclass: subclass.into(),
            }))
        };
        let patches = module
            .list_messages(list(class("patch"), forward, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(message_ids(&patches.messages), ["m1"]);
        let inventory = module
            .list_messages(list(class(""), forward, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(message_ids(&inventory.messages), ["m1", "m2"]);
        let newest = module
            .list_messages(pb::ListMessagesRequest {
                limit: 2,
                ..list(None, pb::Direction::Backward, u64::MAX)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(message_ids(&newest.messages), ["hb1", "c3"]);
        let older = module
            .list_messages(pb::ListMessagesRequest {
                limit: 2,
                ..list(None, pb::Direction::Backward, newest.next_position)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(message_ids(&older.messages), ["c2", "c1"]);
        let unknown = module
            .list_messages(list(Some(Filter::Source("nobody".into())), forward, 0))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        single.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_raised_listed_and_cleared() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        let mut proxy = client(&single, PROXY_P1).await;
        let raised = proxy
            .send_upstream(send(alarm("a-1", "disk", pb::AlarmState::Raised)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(raised.alarm(), pb::AlarmChange::Raised);
        proxy
            .send_upstream(send(alarm("a-2", "fan", pb::AlarmState::Raised)))
            .await
            .unwrap();
        let mut module = client(&single, &tenant("acme", "service-module")).await;
        let all = pb::ListAlarmsRequest::default();
        let open = module.list_alarms(all.clone()).await.unwrap().into_inner();
        let names: Vec<(&str, &str)> = open
            .alarms
            .iter()
            .map(|alarm| (alarm.support_instance.as_str(), alarm.alarm_id.as_str()))
            .collect();
        assert_eq!(names, [("s1", "disk"), ("s1", "fan")]);
        assert!(!open.more);
        let raised_by = open.alarms[0].raised_by.as_ref().unwrap();
        assert_eq!(raised_by.position, raised.position);
        assert_eq!(
            raised_by.message.as_ref(),
            Some(&alarm("a-1", "disk", pb::AlarmState::Raised))
        );
        let one = module
            .list_alarms(pb::ListAlarmsRequest {
                support_instance: None,
                limit: 1,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((one.alarms.len(), one.more), (1, true));

        let cleared = proxy
            .send_upstream(send(alarm("a-3", "disk", pb::AlarmState::Cleared)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cleared.alarm(), pb::AlarmChange::Cleared);
        let open = module.list_alarms(all).await.unwrap().into_inner();
        assert_eq!(open.alarms.len(), 1);
        assert_eq!(open.alarms[0].alarm_id, "fan");
        let elsewhere = module
            .list_alarms(pb::ListAlarmsRequest {
                support_instance: Some("s9".into()),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(elsewhere.alarms.is_empty());
        single.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_by_class_catch_up_then_follow_live() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        let mut proxy = client(&single, PROXY_P1).await;
        let source = ("p1", Kind::Proxy);
        proxy
            .send_upstream(send(data("m1", source, ("inventory", "patch"), "1")))
            .await
            .unwrap();
        proxy
            .send_upstream(send(alarm("a-1", "disk", pb::AlarmState::Raised)))
            .await
            .unwrap();
        proxy
            .send_upstream(send(data("m2", source, ("inventory", "package"), "2")))
            .await
            .unwrap();

        let mut module = client(&single, &tenant("acme", "service-module")).await;
        let subscribe = |subclass: &str| pb::SubscribeMessagesRequest {
            class: "inventory".into(),
            subclass: subclass.into(),
            from_position: 0,
        };
        let mut inventory = module.subscribe(subscribe("")).await.unwrap().into_inner();
        let mut patches = module.subscribe(subscribe("patch")).await.unwrap().into_inner();
        // Catching up: only the class asked for.
        assert_eq!(message_ids(&[next(&mut inventory).await]), ["m1"]);
        assert_eq!(message_ids(&[next(&mut inventory).await]), ["m2"]);
        assert_eq!(message_ids(&[next(&mut patches).await]), ["m1"]);
        // Live: an alarm, then more inventory.
        proxy
            .send_upstream(send(alarm("a-2", "fan", pb::AlarmState::Raised)))
            .await
            .unwrap();
        let live = data("m3", source, ("inventory", "patch"), "3");
        let stored = proxy.send_upstream(send(live.clone())).await.unwrap().into_inner();
        let followed = next(&mut inventory).await;
        assert_eq!((followed.position, followed.message), (stored.position, Some(live)));
        assert_eq!(message_ids(&[next(&mut patches).await]), ["m3"]);

        // A subclass without its class is refused, naming the field.
        let bad = module
            .subscribe(pb::SubscribeMessagesRequest {
                class: String::new(),
                subclass: "patch".into(),
                from_position: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("`subclass`"), "{}", bad.message());
        single.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_roles_and_bad_fields() {
    bounded(async {
        let single = Single::start().await;
        farm(&single).await;
        let mut proxy = client(&single, PROXY_P1).await;
        proxy
            .send_upstream(send(data("m1", ("p1", Kind::Proxy), ("inventory", "patch"), "1")))
            .await
            .unwrap();

        // beta sees none of acme's messages: not found, like a missing one.
        let mut beta = client(&single, &tenant("beta", "service-module")).await;
        let hidden = beta
            .get_message(pb::GetMessageRequest {
                message_id: "m1".into(),
            })
            .await
            .unwrap_err();
        let mut module = client(&single, &tenant("acme", "service-module")).await;
        let missing = module
            .get_message(pb::GetMessageRequest {
                message_id: "m9".into(),
            })
            .await
            .unwrap_err();
        assert_eq!((hidden.code(), missing.code()), (Code::NotFound, Code::NotFound));
        let listed = beta
            .list_messages(pb::ListMessagesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.messages.is_empty());
        let alarms = beta
            .list_alarms(pb::ListAlarmsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(alarms.alarms.is_empty());
        // beta's proxy cannot send as acme's component, nor into acme.
        let mut beta_proxy = client(&single, &tenant("beta", "proxy")).await;
        let mut as_acme = data("b1", ("p1", Kind::Proxy), ("inventory", "patch"), "1");
        if let Some(header) = as_acme.header.as_mut() {
            header.customer = "beta".into();
        }
        let refused = beta_proxy.send_upstream(send(as_acme)).await.unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{}", refused.message());

        // A service module reads and subscribes, but does not send.
        let denied = module
            .send_upstream(send(data("m2", ("p1", Kind::Proxy), ("inventory", "patch"), "2")))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);

        // Bad fields are named.
        let with = |change: fn(&mut pb::UpstreamMessage)| {
            let mut message = alarm("bad", "disk", pb::AlarmState::Raised);
            change(&mut message);
            send(message)
        };
        let cases: [(pb::SendUpstreamRequest, &str); 7] = [
            (
                with(|message| {
                    if let Some(Content::Alarm(alarm)) = message.content.as_mut() {
                        alarm.severity = 0;
                    }
                }),
                "`message.content.alarm.severity`",
            ),
            (
                with(|message| {
                    if let Some(Content::Alarm(alarm)) = message.content.as_mut() {
                        alarm.state = 42;
                    }
                }),
                "`message.content.alarm.state`",
            ),
            (
                with(|message| {
                    if let Some(header) = message.header.as_mut() {
                        header.source_kind = 0;
                    }
                }),
                "`message.header.source_kind`",
            ),
            (
                with(|message| {
                    if let Some(qos) = message.qos.as_mut() {
                        qos.precedence = 256;
                    }
                }),
                "`message.qos.precedence`",
            ),
            (with(|message| message.content = None), "`message.content`"),
            (
                with(|message| message.routing[0].component = None),
                "`message.routing[0].component`",
            ),
            // The engine's stateless checks name theirs.
            (
                with(|message| {
                    if let Some(header) = message.header.as_mut() {
                        header.class = String::new();
                    }
                }),
                "class",
            ),
        ];
        for (request, field) in cases {
            let bad = proxy.send_upstream(request).await.unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());
            assert!(bad.message().contains(field), "{field}: {}", bad.message());
        }
        let bad_limit = module
            .list_messages(pb::ListMessagesRequest {
                limit: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(bad_limit.message().contains("`limit`"), "{}", bad_limit.message());
        // A source kind that differs from the registered one.
        let mismatch = data("m3", ("p1", Kind::IntegrationModule), ("inventory", "patch"), "3");
        let mismatch = proxy.send_upstream(send(mismatch)).await.unwrap_err();
        assert_eq!(mismatch.code(), Code::FailedPrecondition, "{}", mismatch.message());
        single.stop().await;
    })
    .await;
}
