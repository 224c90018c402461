//! hyper through the whole stack: `HttpEndpoint` per instance, a circuit
//! breaker per endpoint (HTTP classifier), health filtering, round-robin.

use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::endpoint::HttpEndpoint;
use fluxor_registry::{
    CheckSpec, CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, HealthChecker,
    HealthCheckerConfig, HealthConfig, HealthFilterLayer, LoadBalanceLayer, Query,
    ServiceDefinition, ServiceRegistry, Strategy,
};
use http_body_util::Empty;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::servers::within;
use crate::support::HttpServer;

/// Sends `n` GETs through `client`, recording each response's status.
async fn send<S>(client: &mut S, n: usize, statuses: &mut Vec<u16>)
where
    S: Service<
            http::Request<Empty<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        >,
{
    for _ in 0..n {
        let req = http::Request::get("/api").body(Empty::new()).unwrap();
        let response = within(async { client.ready().await?.call(req).await })
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
}

#[tokio::test]
async fn a_backend_answering_503_is_cut_off_by_its_circuit() {
    let servers = [
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("c").await,
    ];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    for s in &servers {
        let i = registry
            .register(ServiceDefinition::new("web", "127.0.0.1", s.port()))
            .await
            .unwrap();
        // TTL checks, passed by hand: health stays put while the circuit
        // does the work.
        checker
            .start_health_checks(
                &i,
                HealthConfig {
                    checks: vec![CheckSpec::ttl(Duration::from_secs(60)).name("alive")],
                    ..Default::default()
                },
            )
            .unwrap();
        checker.pass_ttl(i.id(), "alive", "up").unwrap();
    }
    let breaker = CircuitBreakerConfig {
        failure_threshold: 3,
        ..Default::default()
    };
    let mut client = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .layer(EndpointLayer::new(CircuitBreakerLayer::new(breaker).http()))
        .layer(HealthFilterLayer::new(checker.clone()))
        .service(
            registry
                .discover(Query::name("web"))
                .endpoints(HttpEndpoint::<Empty<Bytes>>::http()),
        );
    let mut statuses = Vec::new();
    send(&mut client, 30, &mut statuses).await;
    assert!(
        servers.iter().all(|s| s.hits() == 10),
        "round-robin 10/10/10"
    );

    servers[2].set_status(503);
    send(&mut client, 60, &mut statuses).await;
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(failed, 3, "exactly the threshold reached the caller");
    assert_eq!(servers[2].hits(), 13, "no calls after the circuit opened");
    assert_eq!(servers[0].hits() + servers[1].hits(), 20 + 57);
}
