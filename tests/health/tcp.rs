//! TCP checks against a listener that is opened, closed and opened again.

use std::time::Duration;

use fluxor_registry::{
    CheckSpec, HealthChecker, HealthCheckerConfig, HealthConfig, HealthStatus, ServiceDefinition,
    ServiceRegistry,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::servers::{describe, next_health_event};

/// Accepts and drops connections until aborted.
fn accept_all(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

#[tokio::test]
async fn tcp_check_follows_the_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = accept_all(listener);
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
            ServiceDefinition::new("db", "127.0.0.1", addr.port())
                .protocol(fluxor_registry::Protocol::Tcp),
        )
        .await
        .unwrap();
    let id = instance.id().clone();
    let mut events = registry.subscribe();
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::tcp().timeout(Duration::from_secs(2))],
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
    assert!(
        report
            .check("tcp")
            .unwrap()
            .last
            .as_ref()
            .unwrap()
            .output
            .contains("success")
    );

    // Closed: connection refused, critical.
    task.abort();
    let _ = task.await;
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-unhealthy", HealthStatus::Critical));
    let report = checker.get_health_status(&id).unwrap();
    let output = &report.checks[0].last.as_ref().unwrap().output;
    assert!(output.contains("TCP connect"), "{output}");

    // Open again on the same port: passing.
    let listener = TcpListener::bind(addr).await.unwrap();
    let _task = accept_all(listener);
    let e = next_health_event(&mut events, &id).await;
    assert_eq!(describe(&e), ("service-healthy", HealthStatus::Passing));
}
