//! Integration tests for the `ServiceDiscovery` facade, against real HTTP
//! servers on 127.0.0.1.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../support/mod.rs"]
mod support;

mod execute;
mod stack;
mod watch;

use fluxor_registry::{
    CircuitBreaker, CircuitBreakerConfig, HealthChecker, HealthCheckerConfig, LoadBalancer,
    ServiceDiscovery, ServiceRegistry, Strategy,
};

pub(crate) async fn discovery(strategy: Strategy) -> (ServiceRegistry, ServiceDiscovery) {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let discovery = ServiceDiscovery::new(
        registry.clone(),
        checker,
        LoadBalancer::new(strategy),
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 1_000,
            ..Default::default()
        }),
    );
    (registry, discovery)
}

/// A port nothing listens on: bound, then released.
pub(crate) async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
