//! The Spools service through gRPC: an applications MLM publishes to a
//! customer's MLM group and proxies; the customer MLM and a proxy poll and
//! settle within their scope; nacks park, a redrive brings deliveries
//! back; an empty poll writes nothing, one carrying an upstream message
//! stores it; a subscriber hears of a publish; another tenant sees
//! nothing.

mod common;

use std::time::Duration;

use common::{propose, tenant, Single, APPS_MLM, MLM, P1, P2, WAIT};
use farmlog_api::pb::spools_client::SpoolsClient;
use farmlog_api::pb::{self, publish_request, settle_request};
use farmlog_engine::state::command::{CommandBody, ComponentKind::*, GroupKind, LANDLORD};
use farmlog_engine::state::testing::{component, customer, define_group, group_member, hosted, own};
use tokio_stream::StreamExt;
use tonic::Code;

/// The landlord's application server `server` and applications MLM
/// `apps`; customers `acme` and `beta`; in acme a customer MLM `cmlm`
/// below `apps`, proxies `p1`, `p2` below it, each with an integration
/// module and a support instance, and the MLM group `mlms` holding `cmlm`.
async fn farm(single: &Single) {
    propose(single, LANDLORD, component("server", ApplicationServer, vec![])).await;
    propose(
        single,
        LANDLORD,
        component("apps", ApplicationsMlm, vec![own("server")]),
    )
    .await;
    propose(single, LANDLORD, customer("acme")).await;
    propose(single, LANDLORD, customer("beta")).await;
    propose(single, "acme", component("cmlm", CustomerMlm, vec![hosted("apps")])).await;
    for (proxy, module, instance) in [("p1", "im1", "si1"), ("p2", "im2", "si2")] {
        propose(single, "acme", component(proxy, Proxy, vec![own("cmlm")])).await;
        propose(single, "acme", component(module, IntegrationModule, vec![own(proxy)])).await;
        propose(single, "acme", component(instance, SupportInstance, vec![own(module)])).await;
    }
    propose(single, "acme", define_group("mlms", GroupKind::Mlm)).await;
    propose(single, "acme", group_member("mlms", own("cmlm"), true)).await;
}

fn reference(id: &str) -> pb::ComponentRef {
    pb::ComponentRef {
        id: id.into(),
        hosted: false,
    }
}

fn apps() -> pb::ComponentRef {
    pb::ComponentRef {
        id: "apps".into(),
        hosted: true,
    }
}

fn body_of(id: &str) -> String {
    format!("body of {id}")
}

/// A message from `apps` with an inline text body.
fn publish(id: &str, destinations: &[&str], groups: &[&str], max_attempts: u32) -> pb::PublishRequest {
    pb::PublishRequest {
        header: Some(pb::BackHeader {
            message_id: id.into(),
            source: Some(apps()),
            class: "configuration".into(),
            subclass: "change".into(),
            created_at_ms: 7,
        }),
        payload: Some(publish_request::Payload::Inline(pb::InlinePayload {
            mime_type: "text/plain".into(),
            body: body_of(id).into_bytes().into(),
        })),
        destinations: destinations.iter().map(|id| reference(id)).collect(),
        groups: groups.iter().map(|group| group.to_string()).collect(),
        max_attempts,
        ..Default::default()
    }
}

fn poll(caller: &str) -> pb::PollRequest {
    pb::PollRequest {
        caller: Some(reference(caller)),
        ..Default::default()
    }
}

fn settle(
    caller: &str,
    position: u64,
    destinations: &[&str],
    settlement: settle_request::Settlement,
) -> pb::SettleRequest {
    pb::SettleRequest {
        caller: Some(reference(caller)),
        position,
        destinations: destinations.iter().map(|id| reference(id)).collect(),
        settlement: Some(settlement),
        session: None,
    }
}

fn ack() -> settle_request::Settlement {
    settle_request::Settlement::Ack(pb::SettleAck {})
}

fn nack() -> settle_request::Settlement {
    settle_request::Settlement::Nack(pb::NackReason::Rejected.into())
}

fn ids(references: &[pb::ComponentRef]) -> Vec<&str> {
    references.iter().map(|reference| reference.id.as_str()).collect()
}

fn inline_body(handout: &pb::Handout) -> &[u8] {
    match &handout.payload {
        Some(pb::handout::Payload::Inline(inline)) => inline.body.as_ref(),
        other => panic!("not an inline payload: {other:?}"),
    }
}

/// A heartbeat from `source`, a proxy of acme.
fn heartbeat(id: &str, source: &str) -> pb::UpstreamMessage {
    pb::UpstreamMessage {
        header: Some(pb::MessageHeader {
            message_id: id.into(),
            source: source.into(),
            source_version: "1.0".into(),
            source_kind: pb::ComponentKind::Proxy.into(),
            customer: "acme".into(),
            class: "infrastructure".into(),
            subclass: "heartbeat".into(),
            created_at_ms: 0,
        }),
        content: Some(pb::upstream_message::Content::Heartbeat(pb::HeartbeatContent {
            components: vec![source.into()],
        })),
        ..Default::default()
    }
}

fn last_log_index(single: &Single) -> Option<u64> {
    single.node.raft.metrics().borrow().last_log_index
}

async fn status(client: &mut SpoolsClient<common::As>, position: u64) -> pb::MessageStatusResponse {
    client
        .message_status(pb::MessageStatusRequest {
            message: Some(pb::message_status_request::Message::Position(position)),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_poll_settle_redrive_within_scope() {
    let single = Single::start().await;
    farm(&single).await;
    let mut publisher = SpoolsClient::new(single.as_principal(APPS_MLM, Some("acme")).await);
    let mut mlm = SpoolsClient::new(single.as_principal(MLM, None).await);
    let mut p1 = SpoolsClient::new(single.as_principal(P1, None).await);
    let mut admin = SpoolsClient::new(single.as_principal(&tenant("acme", "admin"), None).await);

    // A multicast: the MLM group and both proxies.
    let published = publisher
        .publish(publish("m1", &["p1", "p2"], &["mlms"], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((published.destinations, published.pruned), (3, 0));
    assert!(published.written.is_some());

    // The customer MLM collects the message once, for itself and both
    // proxies below it, with the body read from the log.
    let polled = mlm.poll(poll("cmlm")).await.unwrap().into_inner();
    assert_eq!(polled.handouts.len(), 1);
    let handout = &polled.handouts[0];
    assert_eq!(handout.position, published.position);
    assert_eq!(handout.tenant, "acme");
    assert_eq!(handout.header.as_ref().unwrap().message_id, "m1");
    assert_eq!(handout.header.as_ref().unwrap().source, Some(apps()));
    assert_eq!(inline_body(handout), body_of("m1").as_bytes());
    assert_eq!(ids(&handout.destinations), ["cmlm", "p1", "p2"]);
    let settled = mlm
        .settle(settle("cmlm", handout.position, &["cmlm", "p1", "p2"], ack()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((settled.acked, settled.unchanged), (3, 0));
    let m1 = status(&mut admin, published.position).await;
    assert!(m1.message.as_ref().unwrap().finished);
    assert!(m1
        .deliveries
        .iter()
        .all(|delivery| delivery.state() == pb::DeliveryState::Acked && delivery.holder == Some(reference("cmlm"))));
    // A proxy's principal reads only what concerns the components in its
    // scope.
    let scoped = status(&mut p1, published.position).await;
    assert_eq!(scoped.deliveries.len(), 1);
    assert_eq!(scoped.deliveries[0].destination, Some(reference("p1")));

    // Proxy p1 polls its own spool; it may not poll as p2.
    let m2 = publisher
        .publish(publish("m2", &["p1"], &[], 2))
        .await
        .unwrap()
        .into_inner();
    let as_p2 = p1.poll(poll("p2")).await.unwrap_err();
    assert_eq!(as_p2.code(), Code::NotFound);
    let polled = p1.poll(poll("p1")).await.unwrap().into_inner();
    assert_eq!(polled.handouts.len(), 1);
    assert_eq!(ids(&polled.handouts[0].destinations), ["p1"]);
    assert_eq!(inline_body(&polled.handouts[0]), body_of("m2").as_bytes());
    let unsaid = p1
        .settle(settle("p1", m2.position, &["p1"], settle_request::Settlement::Nack(0)))
        .await
        .unwrap_err();
    assert_eq!(unsaid.code(), Code::InvalidArgument);
    assert!(unsaid.message().contains("nack"), "{}", unsaid.message());

    // A nack respools it; once out of attempts it is parked.
    let first = p1
        .settle(settle("p1", m2.position, &["p1"], nack()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.respooled, 1);
    let depth = admin
        .depth(pb::DepthRequest {
            destination: Some(reference("p1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(depth.depth, 1);
    // The retry comes after a second of log time, which a command moves.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    propose(&single, "acme", CommandBody::Tick).await;
    let again = p1.poll(poll("p1")).await.unwrap().into_inner();
    assert_eq!(again.handouts.len(), 1);
    let second = p1
        .settle(settle("p1", m2.position, &["p1"], nack()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.parked, 1);
    let parked = admin.parked(pb::ParkedRequest::default()).await.unwrap().into_inner();
    assert_eq!(parked.parked.len(), 1);
    assert_eq!(parked.parked[0].position, m2.position);
    assert_eq!(parked.parked[0].destination, Some(reference("p1")));
    let delivery = &status(&mut admin, m2.position).await.deliveries[0];
    assert_eq!(delivery.state(), pb::DeliveryState::Parked);
    assert_eq!((delivery.attempts, delivery.nacked()), (2, pb::NackReason::Rejected));

    // A redrive brings it back, and p1 collects it again.
    let redriven = admin.redrive(pb::RedriveRequest::default()).await.unwrap().into_inner();
    assert_eq!((redriven.count, redriven.more), (1, false));
    let back = p1.poll(poll("p1")).await.unwrap().into_inner();
    assert_eq!(back.handouts[0].position, m2.position);
    p1.settle(settle("p1", m2.position, &["p1"], ack())).await.unwrap();

    // A poll that finds nothing is a read: the log does not grow.
    let before = last_log_index(&single);
    let empty = p1.poll(poll("p1")).await.unwrap().into_inner();
    assert!(empty.handouts.is_empty() && empty.written.is_none());
    let empty = mlm.poll(poll("cmlm")).await.unwrap().into_inner();
    assert!(empty.handouts.is_empty() && empty.written.is_none());
    assert_eq!(last_log_index(&single), before);
    let total = admin.depth(pb::DepthRequest::default()).await.unwrap().into_inner();
    assert_eq!(total.depth, 0);

    // A poll carrying an upstream message is written even with nothing
    // ready, and stores the message; p1 may not carry p2's messages.
    let mut carrying = poll("p1");
    carrying.message = Some(heartbeat("h1", "p1"));
    let carried = p1.poll(carrying).await.unwrap().into_inner();
    assert!(carried.handouts.is_empty() && carried.written.is_some());
    let stored = carried.message.unwrap();
    assert!(stored.position > 0 && !stored.duplicate);
    assert!(last_log_index(&single) > before);
    let mut posing = poll("p1");
    posing.message = Some(heartbeat("h2", "p2"));
    let posed = p1.poll(posing).await.unwrap_err();
    assert_eq!(posed.code(), Code::NotFound);

    // Over a lowered capacity, the oldest delivery is pruned and its
    // publisher gets a "rejected" response.
    admin
        .configure(pb::ConfigureSpoolRequest {
            capacity: 1,
            session: None,
        })
        .await
        .unwrap();
    publisher.publish(publish("m3", &["p2"], &[], 0)).await.unwrap();
    let m4 = publisher
        .publish(publish("m4", &["p2"], &[], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m4.pruned, 1);
    let pruned = publisher
        .pruned_responses(pb::PrunedResponsesRequest {
            publisher: Some(apps()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.responses.len(), 1);
    assert_eq!(pruned.responses[0].message_id, "m3");
    assert_eq!(pruned.responses[0].at, m4.position);
    single.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_and_tenants() {
    let single = Single::start().await;
    farm(&single).await;
    let mut publisher = SpoolsClient::new(single.as_principal(APPS_MLM, Some("acme")).await);
    let published = publisher
        .publish(publish("m1", &["p1"], &[], 0))
        .await
        .unwrap()
        .into_inner();

    // A tenant admin may not publish at all.
    let mut admin = SpoolsClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
    let denied = admin.publish(publish("m2", &["p1"], &[], 0)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // A request without a payload names the field.
    let mut bare = publish("m2", &["p1"], &[], 0);
    bare.payload = None;
    let invalid = publisher.publish(bare).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("payload"), "{}", invalid.message());
    // A proxy may not configure spools, and a scoped admin may not either.
    let mut p1 = SpoolsClient::new(single.as_principal(P1, None).await);
    let refused = p1
        .configure(pb::ConfigureSpoolRequest {
            capacity: 5,
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut scoped = SpoolsClient::new(
        single
            .as_principal("farmlog://tenant/acme/admin/component/p1", None)
            .await,
    );
    let narrow = scoped
        .configure(pb::ConfigureSpoolRequest {
            capacity: 5,
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(narrow.code(), Code::PermissionDenied);
    // p2's principal does not see p1's delivery.
    let mut p2 = SpoolsClient::new(single.as_principal(P2, None).await);
    let hidden = p2
        .message_status(pb::MessageStatusRequest {
            message: Some(pb::message_status_request::Message::MessageId("m1".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // Tenant beta sees nothing of acme.
    let mut beta = SpoolsClient::new(single.as_principal(&tenant("beta", "admin"), None).await);
    let other = beta
        .message_status(pb::MessageStatusRequest {
            message: Some(pb::message_status_request::Message::Position(published.position)),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    let mut beta_mlm = SpoolsClient::new(single.as_principal(&tenant("beta", "intermediate-mlm"), None).await);
    let foreign = beta_mlm.poll(poll("cmlm")).await.unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let named = beta_mlm
        .depth(pb::DepthRequest {
            destination: Some(reference("p1")),
        })
        .await
        .unwrap_err();
    assert_eq!(named.code(), Code::NotFound);
    // Nor may beta's principal name acme as its tenant.
    let mut posing = SpoolsClient::new(single.as_principal(&tenant("beta", "admin"), Some("acme")).await);
    let posed = posing.parked(pb::ParkedRequest::default()).await.unwrap_err();
    assert_eq!(posed.code(), Code::NotFound);
    single.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_when_deliveries_are_ready() {
    let single = Single::start().await;
    farm(&single).await;
    let mut publisher = SpoolsClient::new(single.as_principal(APPS_MLM, Some("acme")).await);
    let mut p2 = SpoolsClient::new(single.as_principal(P2, None).await);
    let subscribed = p2
        .subscribe_deliveries(pb::SubscribeDeliveriesRequest {
            caller: Some(reference("p2")),
        })
        .await;
    let mut ready = subscribed.unwrap().into_inner();
    // Nothing is ready: nothing is said.
    let quiet = tokio::time::timeout(Duration::from_millis(300), ready.next()).await;
    assert!(quiet.is_err(), "{quiet:?}");

    let published = publisher
        .publish(publish("m1", &["p2"], &[], 0))
        .await
        .unwrap()
        .into_inner();
    let heard = tokio::time::timeout(WAIT, ready.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!heard.reminder);
    assert!(heard.applied_index >= published.written.unwrap().log_index);
    // The notification changed nothing: the poll collects the message.
    let polled = p2.poll(poll("p2")).await.unwrap().into_inner();
    assert_eq!(polled.handouts.len(), 1);
    assert_eq!(polled.handouts[0].position, published.position);

    // Subscribing as another proxy is not found.
    let stranger = p2
        .subscribe_deliveries(pb::SubscribeDeliveriesRequest {
            caller: Some(reference("p1")),
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound);
    single.stop().await;
}
