//! The standard gRPC health service and server reflection answer, so that
//! grpcurl and generated clients in any language work.

mod common;

use common::Single;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let single = Single::start().await;
    let mut health = HealthClient::new(single.channel().await);
    for service in ["", "farmlog.v1.Streams", "farmlog.v1.Spools", "farmlog.v1.Admin"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(single.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("reflection answered {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for service in [
        "farmlog.v1.Topology",
        "farmlog.v1.Messages",
        "farmlog.v1.Streams",
        "farmlog.v1.Spools",
        "farmlog.v1.Transfers",
        "farmlog.v1.Throttle",
        "farmlog.v1.Admin",
        "farmlog.v1.Raft",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|name| name == service),
            "{service} is not listed: {names:?}"
        );
    }
    single.stop().await;
}
