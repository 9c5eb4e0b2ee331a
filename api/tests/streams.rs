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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_batch_gives_each_append_its_own_outcome() {
    let single = Single::start().await;
    let mut landlord = StreamsClient::new(single.as_principal(LANDLORD_ADMIN, None).await);
    let batch = |appends: Vec<pb::AppendRequest>| pb::AppendBatchRequest { appends };
    let answer = landlord
        .append_batch(batch(vec![
            append("audit", Some(Expected::NoStream(true)), "a"),
            append("audit", Some(Expected::Exact(0)), "b"),
            // A conflict in the middle fails alone, naming the version.
            append("audit", Some(Expected::Exact(0)), "x"),
            append("other", None, "c"),
            append("audit", None, "d"),
        ]))
        .await
        .unwrap()
        .into_inner();
    use pb::append_outcome::Outcome;
    let outcomes: Vec<Outcome> = answer
        .outcomes
        .into_iter()
        .map(|outcome| outcome.outcome.unwrap())
        .collect();
    assert_eq!(outcomes.len(), 5);
    let version = |outcome: &Outcome| match outcome {
        Outcome::Appended(appended) => Some(appended.version),
        Outcome::Failed(_) => None,
    };
    assert_eq!(
        outcomes.iter().map(version).collect::<Vec<_>>(),
        [Some(0), Some(1), None, Some(0), Some(2)]
    );
    let Outcome::Failed(failed) = &outcomes[2] else {
        unreachable!()
    };
    assert_eq!(failed.code, Code::FailedPrecondition as i32);
    assert_eq!(failed.current_version, Some(1));
    // They went into the log in request order.
    let read = landlord
        .read(pb::ReadStreamRequest {
            stream: "audit".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bodies: Vec<&[u8]> = read.events.iter().map(|event| event.body.as_ref()).collect();
    assert_eq!(bodies, [b"a".as_slice(), b"b", b"d"]);

    // Empty and oversized batches are refused whole, naming the field.
    let empty = landlord.append_batch(batch(Vec::new())).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("appends"), "{}", empty.message());
    let too_many = vec![append("audit", None, "n"); farmlog_api::services::streams::APPEND_BATCH_MAX + 1];
    let oversized = landlord.append_batch(batch(too_many)).await.unwrap_err();
    assert_eq!(oversized.code(), Code::InvalidArgument);
    // Authorized like Append: a proxy may not append at all.
    let mut proxy = StreamsClient::new(single.as_principal(&tenant("acme", "proxy"), None).await);
    let denied = proxy
        .append_batch(batch(vec![append("audit", None, "p")]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    single.stop().await;
}
