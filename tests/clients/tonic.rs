//! A generated tonic client (`HealthClient`, shipped by tonic-health) whose
//! transport is the balanced stack of one `Channel` per instance.

use fluxor_registry::endpoint::TonicEndpoint;
use fluxor_registry::{
    LoadBalanceLayer, Protocol, Query, ServiceDefinition, ServiceRegistry, Strategy,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower::buffer::BufferLayer;

use crate::servers::{GrpcServer, within};

#[tokio::test]
async fn generated_client_spreads_over_every_instance_and_leaves_a_deregistered_one() {
    let servers = [
        GrpcServer::start().await,
        GrpcServer::start().await,
        GrpcServer::start().await,
    ];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let mut ids = Vec::new();
    for s in &servers {
        let instance = registry
            .register(
                ServiceDefinition::new("health-grpc", "127.0.0.1", s.port())
                    .protocol(Protocol::Grpc),
            )
            .await
            .unwrap();
        ids.push(instance.id().clone());
    }

    let balanced = ServiceBuilder::new()
        .layer(BufferLayer::new(64))
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .service(
            registry
                .discover(Query::name("health-grpc"))
                .endpoints(TonicEndpoint::new()),
        );
    let client = HealthClient::new(balanced);

    let check = |mut client: HealthClient<_>| async move {
        let reply = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("check through the balanced stack");
        assert_eq!(reply.into_inner().status(), ServingStatus::Serving);
    };
    for _ in 0..30 {
        within(check(client.clone())).await;
    }
    let first: Vec<usize> = servers.iter().map(GrpcServer::hits).collect();
    assert_eq!(first, [10, 10, 10], "round-robin over three channels");

    registry.deregister(&ids[1]).await.unwrap();
    for _ in 0..30 {
        within(check(client.clone())).await;
    }
    let second: Vec<usize> = servers.iter().map(GrpcServer::hits).collect();
    assert_eq!(
        second[1], first[1],
        "the deregistered instance got calls: {second:?}"
    );
    assert_eq!(second[0] - first[0], 15, "{second:?}");
    assert_eq!(second[2] - first[2], 15, "{second:?}");

    // Concurrent calls from clones of the client work the same.
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(check(client.clone())))
        .collect();
    for call in calls {
        within(call).await.unwrap();
    }
    let third: Vec<usize> = servers.iter().map(GrpcServer::hits).collect();
    assert_eq!(third[1], first[1]);
    assert_eq!(third[0] + third[2], second[0] + second[2] + 20);
}

#[tokio::test]
async fn a_dead_instance_gives_a_grpc_error_not_a_panic() {
    let server = GrpcServer::start().await;
    let port = server.port();
    drop(server);
    let registry = ServiceRegistry::builder().build().await.unwrap();
    registry
        .register(ServiceDefinition::new("gone", "127.0.0.1", port).protocol(Protocol::Grpc))
        .await
        .unwrap();
    let balanced = ServiceBuilder::new()
        .layer(BufferLayer::new(8))
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .service(
            registry
                .discover(Query::name("gone"))
                .endpoints(TonicEndpoint::new()),
        );
    let mut client = HealthClient::new(balanced);
    let status = within(client.check(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
