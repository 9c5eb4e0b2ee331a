//! The Transfers and Throttle services through gRPC: a proxy's bulk
//! request is denied by its MLM, retried, granted by the applications MLM
//! and marked transferred, each step by the component the caller acts as;
//! a farm's throttle rules are set, usage reported and shown, and the
//! send decision answered.

mod common;

use common::{propose, tenant, Single, APPS_MLM, MLM, P1, P2};
use farmlog_api::context::now_ms;
use farmlog_api::pb::messages_client::MessagesClient;
use farmlog_api::pb::throttle_client::ThrottleClient;
use farmlog_api::pb::transfers_client::TransfersClient;
use farmlog_api::pb::{self, throttle_rule, upstream_message};
use farmlog_engine::state::command::{CommandBody, ComponentKind::*, GroupKind, LANDLORD};
use farmlog_engine::state::testing::{component, customer, define_group, group_member, hosted, own};
use tonic::Code;

const URL: &str = "https://apps.example/bulk/b1";

/// The landlord's `server` and applications MLM `apps`; customers `acme`
/// and `beta`; in acme a customer MLM `cmlm` below `apps` with proxies
/// `p1` and `p2`, and the MLM group (farm) `mlms` holding `cmlm`.
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
    propose(single, "acme", component("p1", Proxy, vec![own("cmlm")])).await;
    propose(single, "acme", component("p2", Proxy, vec![own("cmlm")])).await;
    propose(single, "acme", define_group("mlms", GroupKind::Mlm)).await;
    propose(single, "acme", group_member("mlms", own("cmlm"), true)).await;
}

/// p1 asks, through the Messages service, to send `size` bytes upstream:
/// a bulk-request message.
async fn bulk_request(single: &Single, id: &str, size: u64) {
    let mut p1 = MessagesClient::new(single.as_principal(P1, None).await);
    let message = pb::UpstreamMessage {
        header: Some(pb::MessageHeader {
            message_id: id.into(),
            source: "p1".into(),
            source_version: "1.0".into(),
            source_kind: pb::ComponentKind::Proxy.into(),
            customer: "acme".into(),
            class: "bulk".into(),
            subclass: "dump".into(),
            created_at_ms: 0,
        }),
        content: Some(upstream_message::Content::BulkRequest(pb::BulkRequestContent {
            size,
            description: "core dump".into(),
        })),
        ..Default::default()
    };
    let sent = p1
        .send_upstream(pb::SendUpstreamRequest {
            message: Some(message),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!sent.duplicate);
}

fn reference(id: &str, hosted: bool) -> Option<pb::ComponentRef> {
    Some(pb::ComponentRef { id: id.into(), hosted })
}

async fn status(client: &mut TransfersClient<common::As>, request: &str) -> pb::TransferInfo {
    client
        .status(pb::TransferStatusRequest {
            request: request.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_is_denied_retried_granted_and_transferred() {
    let single = Single::start().await;
    farm(&single).await;
    bulk_request(&single, "b1", 1 << 30).await;
    let mut apps = TransfersClient::new(single.as_principal(APPS_MLM, Some("acme")).await);
    let mut mlm = TransfersClient::new(single.as_principal(MLM, None).await);
    let mut p1 = TransfersClient::new(single.as_principal(P1, None).await);
    let mut p2 = TransfersClient::new(single.as_principal(P2, None).await);

    let requested = status(&mut apps, "b1").await;
    assert_eq!(requested.phase(), pb::TransferPhase::Requested);
    assert_eq!(requested.requester, reference("p1", false));
    assert_eq!((requested.size, requested.class.as_str()), (1 << 30, "bulk"));

    // Marking it sent before a grant is out of phase.
    let early = p1
        .transferred(pb::TransferredRequest {
            request: "b1".into(),
            hop: reference("p1", false),
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition);

    // The customer MLM on the path denies it for now; it comes back after
    // the retry delay, once a command moves log time.
    mlm.deny(pb::DenyTransferRequest {
        request: "b1".into(),
        hop: reference("cmlm", false),
        reason: "link busy".into(),
        retry_after_ms: 1,
        session: None,
    })
    .await
    .unwrap();
    let denied = status(&mut p1, "b1").await;
    assert_eq!(denied.phase(), pb::TransferPhase::Denied);
    assert_eq!(denied.denials.len(), 1);
    assert_eq!(denied.denials[0].hop, reference("cmlm", false));
    assert_eq!(denied.denials[0].reason, "link busy");
    let outstanding = mlm
        .outstanding(pb::OutstandingTransfersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outstanding.transfers.len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    propose(&single, "acme", CommandBody::Tick).await;
    let retried = status(&mut apps, "b1").await;
    assert_eq!((retried.phase(), retried.requests), (pb::TransferPhase::Requested, 2));

    // Only the landlord's applications MLM (or an admin) grants; a tenant
    // admin may not.
    let mut admin = TransfersClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
    let refused = admin
        .grant(pb::GrantTransferRequest {
            request: "b1".into(),
            hop: reference("apps", true),
            url: URL.into(),
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    apps.grant(pb::GrantTransferRequest {
        request: "b1".into(),
        hop: reference("apps", true),
        url: URL.into(),
        session: None,
    })
    .await
    .unwrap();
    let granted = status(&mut p1, "b1").await;
    assert_eq!(granted.phase(), pb::TransferPhase::Granted);
    assert_eq!(granted.url.as_deref(), Some(URL));

    // p2 may not act as p1, and as itself it is not on p1's path.
    let posing = p2
        .transferred(pb::TransferredRequest {
            request: "b1".into(),
            hop: reference("p1", false),
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(posing.code(), Code::NotFound);
    let aside = p2
        .transferred(pb::TransferredRequest {
            request: "b1".into(),
            hop: reference("p2", false),
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(aside.code(), Code::FailedPrecondition);
    // And p2's principal does not see p1's transfer.
    let hidden = p2
        .status(pb::TransferStatusRequest { request: "b1".into() })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    let done = p1
        .transferred(pb::TransferredRequest {
            request: "b1".into(),
            hop: reference("p1", false),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.position > 0 && done.written.is_some());
    let transferred = status(&mut apps, "b1").await;
    assert_eq!(transferred.phase(), pb::TransferPhase::Transferred);
    let outstanding = apps
        .outstanding(pb::OutstandingTransfersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(outstanding.transfers.is_empty());

    // Another tenant does not see it.
    let mut beta = TransfersClient::new(single.as_principal(&tenant("beta", "admin"), None).await);
    let foreign = beta
        .status(pb::TransferStatusRequest { request: "b1".into() })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    single.stop().await;
}

fn limit(window_ms: u64, max_bytes: u64) -> pb::ThrottleRule {
    pb::ThrottleRule {
        rule: Some(throttle_rule::Rule::Limit(pb::UsageLimit {
            window_ms,
            max_bytes: Some(max_bytes),
            max_messages: None,
        })),
    }
}

fn quiet(from_minute: u32, to_minute: u32) -> pb::ThrottleRule {
    pb::ThrottleRule {
        rule: Some(throttle_rule::Rule::Quiet(pb::QuietWindow { from_minute, to_minute })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farm_throttle_is_set_reported_shown_and_decides() {
    const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
    const MINUTE_MS: u64 = 60 * 1000;
    let single = Single::start().await;
    farm(&single).await;
    let mut admin = ThrottleClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
    let mut mlm = ThrottleClient::new(single.as_principal(MLM, None).await);

    // A quiet hour half a day away, so that it is not in force now.
    let now_minute = (now_ms() / MINUTE_MS % 1440) as u32;
    let from = (now_minute + 720) % 1440;
    let to = (from + 60) % 1440;
    let rules = vec![limit(WEEK_MS, 1000), quiet(from, to)];
    let set = admin
        .set(pb::SetThrottleRequest {
            farm: "mlms".into(),
            rules: rules.clone(),
            session: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(set.written.is_some());

    // A member reports; every reader sees the farm's usage.
    mlm.report_usage(pb::ReportUsageRequest {
        farm: "mlms".into(),
        member: reference("cmlm", false),
        increments: vec![
            pb::UsageIncrement {
                bytes: 300,
                messages: 1,
            },
            pb::UsageIncrement {
                bytes: 200,
                messages: 1,
            },
        ],
        session: None,
    })
    .await
    .unwrap();
    let shown = admin
        .show(pb::ShowThrottleRequest { farm: "mlms".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.set_at, set.position);
    let shown_rules: Vec<_> = shown.rules.iter().map(|state| state.rule.unwrap()).collect();
    assert_eq!(shown_rules, rules);
    let usage = shown.rules[0].usage.unwrap();
    assert_eq!((usage.bytes, usage.messages), (500, 2));
    assert!(shown.rules[1].usage.is_none());
    assert_eq!(
        shown.reported,
        Some(pb::UsageIncrement {
            bytes: 500,
            messages: 2
        })
    );

    // The decision: over the limit, under it, and inside the quiet hour.
    let may = |bytes: u64, at_ms: Option<u64>| pb::MaySendRequest {
        component: reference("cmlm", false),
        bytes,
        at_ms,
    };
    let over = admin.may_send(may(600, None)).await.unwrap().into_inner();
    assert!(!over.allowed);
    assert_eq!((over.farm.as_deref(), over.rule_index), (Some("mlms"), Some(0)));
    let under = admin.may_send(may(100, None)).await.unwrap().into_inner();
    assert!(under.allowed && under.rule.is_none());
    let quiet_at = (now_ms() / MINUTE_MS + 720) * MINUTE_MS + MINUTE_MS;
    let night = admin.may_send(may(100, Some(quiet_at))).await.unwrap().into_inner();
    assert!(!night.allowed);
    assert_eq!(night.rule_index, Some(1));

    // Bad rules name the field; proxies may not report; beta sees nothing.
    let bad = admin
        .set(pb::SetThrottleRequest {
            farm: "mlms".into(),
            rules: vec![limit(WEEK_MS, 1), quiet(70_000, 1)],
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("rules[1].quiet.from_minute"),
        "{}",
        bad.message()
    );
    let empty = admin
        .set(pb::SetThrottleRequest {
            farm: "mlms".into(),
            rules: vec![pb::ThrottleRule { rule: None }],
            session: None,
        })
        .await
        .unwrap_err();
    assert!(empty.message().contains("rules[0].rule"), "{}", empty.message());
    let mut p1 = ThrottleClient::new(single.as_principal(P1, None).await);
    let denied = p1
        .report_usage(pb::ReportUsageRequest {
            farm: "mlms".into(),
            member: reference("p1", false),
            increments: vec![pb::UsageIncrement { bytes: 1, messages: 1 }],
            session: None,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut beta = ThrottleClient::new(single.as_principal(&tenant("beta", "admin"), None).await);
    let foreign = beta
        .show(pb::ShowThrottleRequest { farm: "mlms".into() })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    single.stop().await;
}
