//! `HealthFilterLayer` between the registry and tower's own p2c balancer:
//! no request reaches a backend while its health checks fail, and it gets
//! traffic again once they pass. Plus Envoy's panic threshold.

use std::collections::HashMap;
use std::time::Duration;

use fluxor_registry::{
    CheckSpec, DiscoverExt, HealthChecker, HealthCheckerConfig, HealthConfig, HealthFilterLayer,
    Query, ServiceDefinition, ServiceInstance, ServiceRegistry,
};
use futures_util::StreamExt;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

use crate::servers::{FlipServer, describe, next_health_event};
use crate::support::{get_text, http_client};

async fn send<S>(balance: &mut S, n: usize) -> HashMap<String, usize>
where
    S: Service<&'static str, Response = String, Error = BoxError>,
{
    let mut seen = HashMap::new();
    for _ in 0..n {
        let reply = balance.ready().await.unwrap().call("/work").await.unwrap();
        *seen.entry(reply).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn p2c_skips_an_unhealthy_backend_and_returns_to_it_after_recovery() {
    let servers = [FlipServer::start("a").await, FlipServer::start("b").await];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(
        registry.clone(),
        HealthCheckerConfig {
            interval: Duration::from_millis(30),
            jitter: 0.0,
            ..Default::default()
        },
    );
    let mut events = registry.subscribe();
    let mut ids = Vec::new();
    for server in &servers {
        let instance = registry
            .register(ServiceDefinition::new("web", "127.0.0.1", server.port()))
            .await
            .unwrap();
        checker
            .start_health_checks(
                &instance,
                HealthConfig {
                    checks: vec![CheckSpec::http("/health")],
                    ..Default::default()
                },
            )
            .unwrap();
        ids.push(instance.id().clone());
    }
    // Both pass their first check.
    crate::servers::within(async {
        let mut healthy = 0;
        while healthy < 2 {
            if describe(&events.recv().await.unwrap()).0 == "service-healthy" {
                healthy += 1;
            }
        }
    })
    .await;

    let client = http_client();
    let filtered =
        HealthFilterLayer::new(checker.clone()).layer(registry.discover(Query::name("web")));
    let endpoints = filtered.endpoints(move |instance: &ServiceInstance| {
        let (client, base) = (client.clone(), instance.base_url());
        let http = service_fn(move |path: &'static str| {
            let (client, url) = (client.clone(), format!("{base}{path}"));
            async move { get_text(&client, url).await }
        });
        PendingRequests::new(http, CompleteOnResponse::default())
    });
    let mut balance = Balance::new(endpoints);

    let seen = send(&mut balance, 60).await;
    assert!(seen["a"] > 0 && seen["b"] > 0, "{seen:?}");

    // b's health fails: once it is reported, b gets nothing.
    servers[1].set_health(500);
    let e = next_health_event(&mut events, &ids[1]).await;
    assert_eq!(describe(&e).0, "service-unhealthy");
    let b_before = servers[1].requests();
    let seen = send(&mut balance, 100).await;
    assert_eq!(seen.get("a"), Some(&100), "{seen:?}");
    assert_eq!(
        servers[1].requests(),
        b_before,
        "requests reached b while unhealthy"
    );

    // b recovers: it is inserted again and gets traffic.
    servers[1].set_health(200);
    let e = next_health_event(&mut events, &ids[1]).await;
    assert_eq!(describe(&e).0, "service-healthy");
    let seen = send(&mut balance, 100).await;
    assert!(seen.get("b").copied().unwrap_or(0) > 0, "{seen:?}");
    assert!(servers[1].requests() > b_before);
}

/// The ids currently routed by a filtered stream, after applying what it
/// has yielded so far.
fn apply(routed: &mut Vec<String>, change: Change<fluxor_registry::InstanceId, ServiceInstance>) {
    match change {
        Change::Insert(id, _) => {
            if !routed.contains(&id.to_string()) {
                routed.push(id.to_string());
            }
        }
        Change::Remove(id) => routed.retain(|r| *r != id.as_str()),
    }
    routed.sort();
}

async fn drain<S>(stream: &mut S, routed: &mut Vec<String>)
where
    S: futures_util::Stream<
            Item = Result<
                Change<fluxor_registry::InstanceId, ServiceInstance>,
                std::convert::Infallible,
            >,
        > + Unpin,
{
    while let Some(Some(Ok(change))) = futures_util::FutureExt::now_or_never(stream.next()) {
        apply(routed, change);
    }
}

#[tokio::test(start_paused = true)]
async fn panic_threshold_routes_to_all_when_too_few_are_healthy() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let ttl = HealthConfig {
        checks: vec![CheckSpec::ttl(Duration::from_secs(60)).name("alive")],
        ..Default::default()
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let instance = registry
            .register(
                ServiceDefinition::new("api", "127.0.0.1", 9000 + i)
                    .id(format!("api-{i}").parse().unwrap()),
            )
            .await
            .unwrap();
        checker.start_health_checks(&instance, ttl.clone()).unwrap();
        checker.pass_ttl(instance.id(), "alive", "").unwrap();
        ids.push(instance.id().clone());
    }
    let mut stream = HealthFilterLayer::new(checker.clone())
        .panic_threshold(0.5)
        .layer(registry.discover(Query::name("api")));
    let mut routed = Vec::new();
    drain(&mut stream, &mut routed).await;
    assert_eq!(routed, ["api-0", "api-1", "api-2", "api-3"]);

    checker.fail_ttl(&ids[0], "alive", "").unwrap();
    drain(&mut stream, &mut routed).await;
    assert_eq!(routed, ["api-1", "api-2", "api-3"]);
    checker.fail_ttl(&ids[1], "alive", "").unwrap();
    drain(&mut stream, &mut routed).await;
    assert_eq!(
        routed,
        ["api-2", "api-3"],
        "2 of 4 healthy is not below 0.5"
    );
    assert!(!stream.is_panicking());

    // 1 of 4 healthy: below the threshold, so every endpoint is routed.
    checker.fail_ttl(&ids[2], "alive", "").unwrap();
    drain(&mut stream, &mut routed).await;
    assert!(stream.is_panicking());
    assert_eq!(routed, ["api-0", "api-1", "api-2", "api-3"]);
    assert_eq!(stream.counts(), (4, 1));

    // Two recover: out of panic, the still unhealthy ones leave again.
    checker.pass_ttl(&ids[0], "alive", "").unwrap();
    checker.pass_ttl(&ids[1], "alive", "").unwrap();
    drain(&mut stream, &mut routed).await;
    assert!(!stream.is_panicking());
    assert_eq!(routed, ["api-0", "api-1", "api-3"]);

    // A deregistered endpoint leaves whatever its health.
    registry.deregister(&ids[3]).await.unwrap();
    drain(&mut stream, &mut routed).await;
    assert_eq!(routed, ["api-0", "api-1"]);
}

#[tokio::test(start_paused = true)]
async fn without_a_threshold_all_unhealthy_means_none_routed() {
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let instance = registry
        .register(ServiceDefinition::new("api", "127.0.0.1", 9000))
        .await
        .unwrap();
    // Not checked by the checker, healthy in the registry: routed.
    let mut stream =
        HealthFilterLayer::new(checker.clone()).layer(registry.discover(Query::name("api")));
    let mut routed = Vec::new();
    drain(&mut stream, &mut routed).await;
    assert_eq!(routed.len(), 1);
    // Checks start: unknown, so not routed until the first pass.
    checker
        .start_health_checks(
            &instance,
            HealthConfig {
                checks: vec![CheckSpec::ttl(Duration::from_secs(60)).name("alive")],
                ..Default::default()
            },
        )
        .unwrap();
    drain(&mut stream, &mut routed).await;
    assert!(routed.is_empty());
    checker.pass_ttl(instance.id(), "alive", "").unwrap();
    drain(&mut stream, &mut routed).await;
    assert_eq!(routed.len(), 1);
}
