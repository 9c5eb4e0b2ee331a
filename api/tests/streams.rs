//! The Streams service through gRPC: append with expected versions, read,
//! list, subscribe; tenants see only their own streams.

mod common;

use common::{tenant, Single, LANDLORD_ADMIN, WAIT};
use farmlog_api::pb::streams_client::StreamsClient;
use farmlog_api::pb::{self, expected_version::Expected};
use tokio_stream::StreamExt;
use tonic::Code;

fn append(stream: &str, expected: Option<Expected>, body: &str) -> pb::AppendRequest {
    pb::AppendRequest {
        stream: stream.into(),
        expected: expected.map(|expected| pb::ExpectedVersion {
            expected: Some(expected),
        }),
        event_type: "note".into(),
        body: body.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_read_subscribe_and_isolation() {
    let single = Single::start().await;
    let mut landlord = StreamsClient::new(single.as_principal(LANDLORD_ADMIN, None).await);
    let first = landlord
        .append(append("orders", Some(Expected::NoStream(true)), "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.version, 0);
    let conflict = landlord
        .append(append("orders", Some(Expected::Exact(5)), "x"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert_eq!(
        conflict
            .metadata()
            .get("farmlog-current-version")
            .unwrap()
            .to_str()
            .unwrap(),
        "0"
    );
    landlord
        .append(append("orders", Some(Expected::Exact(0)), "b"))
        .await
        .unwrap();

    let read = landlord
        .read(pb::ReadStreamRequest {
            stream: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bodies: Vec<&[u8]> = read.events.iter().map(|event| event.body.as_ref()).collect();
    assert_eq!(bodies, [b"a".as_slice(), b"b"]);
    assert_eq!(read.events[1].version, 1);
    assert_eq!(read.events[1].principal, LANDLORD_ADMIN);

    // Subscribe: catches up, then follows live.
    let mut events = landlord
        .subscribe(pb::SubscribeStreamRequest {
            stream: "orders".into(),
            from_version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let caught_up = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(caught_up.version, 1);
    landlord.append(append("orders", None, "c")).await.unwrap();
    let live = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((live.version, live.body.as_ref()), (2, b"c".as_slice()));

    // A bad limit names the field.
    let bad = landlord
        .read(pb::ReadStreamRequest {
            stream: "orders".into(),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("limit"), "{}", bad.message());

    // A customer that is not registered is not found; the landlord's
    // stream is invisible to it either way.
    let mut customer = StreamsClient::new(single.as_principal(&tenant("acme", "admin"), None).await);
    let hidden = customer
        .read(pb::ReadStreamRequest {
            stream: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    // A proxy may not append to streams at all.
    let mut proxy = StreamsClient::new(single.as_principal(&tenant("acme", "proxy"), None).await);
    let denied = proxy.append(append("orders", None, "p")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    single.stop().await;
}
