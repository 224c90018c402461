//! reqwest through the balanced stack: `ReqwestEndpoint` per instance,
//! a circuit breaker per endpoint, health filtering and round-robin.

use std::time::Duration;

use bytes::Bytes;
use fluxor_registry::endpoint::{ReqwestEndpoint, ReqwestError};
use fluxor_registry::{
    CheckSpec, CircuitBreakerConfig, CircuitBreakerLayer, EndpointLayer, HealthChecker,
    HealthCheckerConfig, HealthConfig, HealthFilterLayer, LoadBalanceLayer, Query,
    ServiceDefinition, ServiceRegistry, Strategy,
};
use http_body_util::BodyExt;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::servers::within;
use crate::support::HttpServer;

/// GETs `/api?x=1` through `client` and returns the body: the name of the
/// backend that answered.
async fn get<S>(client: &mut S) -> String
where
    S: Service<http::Request<Bytes>, Response = http::Response<reqwest::Body>, Error = BoxError>,
{
    let req = http::Request::get("/api?x=1").body(Bytes::new()).unwrap();
    let response = client
        .ready()
        .await
        .unwrap()
        .call(req)
        .await
        .expect("request through the stack");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn reqwest_stack_spreads_and_follows_health() {
    let servers = [
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("c").await,
    ];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let checker = HealthChecker::new(registry.clone(), HealthCheckerConfig::default());
    let mut ids = Vec::new();
    for s in &servers {
        let i = registry
            .register(ServiceDefinition::new("web", "127.0.0.1", s.port()))
            .await
            .unwrap();
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
        ids.push(i.id().clone());
    }

    let mut client = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .layer(EndpointLayer::new(
            CircuitBreakerLayer::new(CircuitBreakerConfig::default()).http(),
        ))
        .layer(HealthFilterLayer::new(checker.clone()))
        .service(
            registry
                .discover(Query::name("web"))
                .endpoints(ReqwestEndpoint::new(reqwest::Client::new())),
        );

    let mut names = Vec::new();
    for _ in 0..30 {
        names.push(within(get(&mut client)).await);
    }
    for s in &servers {
        assert_eq!(s.hits(), 10, "{}: {names:?}", s.name);
        assert_eq!(names.iter().filter(|n| **n == s.name).count(), 10);
    }

    // "b" turns critical: the health filter takes it out of rotation.
    checker.fail_ttl(&ids[1], "alive", "down").unwrap();
    for _ in 0..20 {
        let name = within(get(&mut client)).await;
        assert_ne!(name, "b");
    }
    assert_eq!(servers[1].hits(), 10);
    assert_eq!(servers[0].hits() + servers[2].hits(), 40);
}

#[tokio::test]
async fn a_dead_instance_is_a_typed_connect_error() {
    let server = HttpServer::start("gone").await;
    let port = server.port();
    drop(server);
    let registry = ServiceRegistry::builder().build().await.unwrap();
    registry
        .register(ServiceDefinition::new("gone", "127.0.0.1", port))
        .await
        .unwrap();
    let mut client = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin))
        .service(
            registry
                .discover(Query::name("gone"))
                .endpoints(ReqwestEndpoint::new(reqwest::Client::new())),
        );
    let req = http::Request::get("/").body(Bytes::new()).unwrap();
    let err = within(async {
        ServiceExt::<http::Request<Bytes>>::ready(&mut client)
            .await?
            .call(req)
            .await
    })
    .await
    .unwrap_err();
    let typed = err
        .downcast_ref::<ReqwestError>()
        .unwrap_or_else(|| panic!("not a ReqwestError: {err:?}"));
    assert!(
        matches!(typed, ReqwestError::Send(e) if e.is_connect()),
        "{typed:?}"
    );
}
