//! gRPC checks against a real tonic-health server switching between
//! SERVING and NOT_SERVING.

use std::time::Duration;

use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthStatus, Protocol,
    ServiceDefinition, ServiceRegistry,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::servers::{describe, next_health_event};

#[tokio::test]
async fn grpc_check_follows_serving_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_millis(30),
            jitter: 0.0,
            ..Default::default()
        },
    );
    let instance = registry
        .register(
            ServiceDefinition::new("inventory", "127.0.0.1", addr.port()).protocol(Protocol::Grpc),
        )
        .await
        .unwrap();
    let id = instance.id().clone();
    let mut events = registry.subscribe();
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::grpc("inventory").name("grpc-health")],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        describe(&next_health_event(&mut events, &id).await).1,
        HealthStatus::Unknown
    );
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", HealthStatus::Passing));
    let report = checker.get_health_status(&id).unwrap();
    let output = &report
        .check("grpc-health")
        .unwrap()
        .last
        .as_ref()
        .unwrap()
        .output;
    assert!(output.contains("SERVING"), "{output}");

    reporter
        .set_service_status("inventory", ServingStatus::NotServing)
        .await;
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-unhealthy", HealthStatus::Critical));
    let report = checker.get_health_status(&id).unwrap();
    let output = &report.checks[0].last.as_ref().unwrap().output;
    assert!(output.contains("NOT_SERVING"), "{output}");

    reporter
        .set_service_status("inventory", ServingStatus::Serving)
        .await;
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", HealthStatus::Passing));

    // A service the server does not know is critical (NOT_FOUND).
    let once = checker
        .check_health(
            &instance,
            &HealthConfig {
                checks: vec![CheckSpec::grpc("billing")],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(once.status, HealthStatus::Critical);
    server.abort();
}
