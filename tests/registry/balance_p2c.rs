//! Requests flow through tower's own p2c balancer, fed by the registry's
//! discover stream, to real HTTP servers on 127.0.0.1 while instances
//! register and deregister.

use std::collections::HashMap;

use fluxor_registry::{Query, ServiceDefinition, ServiceInstance, ServiceRegistry};
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Service, ServiceExt, service_fn};

use crate::support::{HttpServer, get_text, http_client};

/// Sends `n` requests through the balancer; counts replies per server name.
async fn send<S>(balance: &mut S, n: usize) -> HashMap<String, usize>
where
    S: Service<&'static str, Response = String, Error = BoxError>,
{
    let mut seen = HashMap::new();
    for _ in 0..n {
        let reply = balance.ready().await.unwrap().call("/").await.unwrap();
        *seen.entry(reply).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn p2c_follows_registrations_and_deregistrations() {
    let servers = [
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("c").await,
    ];
    let registry = ServiceRegistry::builder().build().await.unwrap();
    let def =
        |s: &HttpServer| ServiceDefinition::new("web", "127.0.0.1", s.port()).tag(s.name.clone());
    let a = registry.register(def(&servers[0])).await.unwrap();
    registry.register(def(&servers[1])).await.unwrap();
    // Another service on the same registry must never be routed to.
    registry
        .register(ServiceDefinition::new(
            "other",
            "127.0.0.1",
            servers[2].port(),
        ))
        .await
        .unwrap();

    let client = http_client();
    let endpoints =
        registry
            .discover(Query::name("web"))
            .endpoints(move |instance: &ServiceInstance| {
                let (client, base) = (client.clone(), instance.base_url());
                let http = service_fn(move |path: &'static str| {
                    let (client, url) = (client.clone(), format!("{base}{path}"));
                    async move { get_text(&client, url).await }
                });
                PendingRequests::new(http, CompleteOnResponse::default())
            });
    let mut balance = Balance::new(endpoints);

    let seen = send(&mut balance, 60).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen["a"] > 0 && seen["b"] > 0, "{seen:?}");
    assert_eq!(servers[2].hits(), 0);

    registry.register(def(&servers[2])).await.unwrap();
    let seen = send(&mut balance, 90).await;
    assert!(
        seen.get("c").copied().unwrap_or(0) > 0,
        "new instance gets traffic: {seen:?}"
    );

    registry.deregister(a.id()).await.unwrap();
    let a_hits = servers[0].hits();
    let seen = send(&mut balance, 60).await;
    assert!(
        !seen.contains_key("a"),
        "deregistered instance got traffic: {seen:?}"
    );
    assert_eq!(servers[0].hits(), a_hits);
    assert_eq!(seen.values().sum::<usize>(), 60);
}
