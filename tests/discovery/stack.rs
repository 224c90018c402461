//! `ServiceDiscovery::service` is the same stack a user composes by hand.

use fluxor_registry::registry::Endpoints;
use fluxor_registry::{
    HealthFilterLayer, HealthStatus, LoadBalanceLayer, Query, ServiceDefinition, ServiceInstance,
    Strategy,
};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::discovery;
use crate::support::{HttpClient, HttpServer, get_text, http_client};

fn make(
    client: HttpClient,
) -> impl FnMut(&ServiceInstance) -> tower::util::BoxService<(), String, BoxError> + Clone {
    move |instance: &ServiceInstance| {
        let (client, url) = (client.clone(), format!("{}/", instance.base_url()));
        tower::util::BoxService::new(service_fn(move |()| {
            let (client, url) = (client.clone(), url.clone());
            async move { get_text(&client, url).await }
        }))
    }
}

async fn send<S>(svc: &mut S, n: usize) -> Vec<String>
where
    S: Service<(), Response = String, Error = BoxError>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(svc.ready().await.unwrap().call(()).await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_ready_made_stack_behaves_like_the_hand_composed_one() {
    let (registry, discovery) = discovery(Strategy::RoundRobin).await;
    let servers = [
        HttpServer::start("a").await,
        HttpServer::start("b").await,
        HttpServer::start("c").await,
    ];
    let mut ids = Vec::new();
    for s in &servers {
        let i = registry
            .register(
                ServiceDefinition::new("web", "127.0.0.1", s.port()).id(s.name.parse().unwrap()),
            )
            .await
            .unwrap();
        ids.push(i.id().clone());
    }
    let query = Query::name("web");
    let client = http_client();

    let mut by_hand = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(Strategy::RoundRobin).weights(registry.clone()))
        .layer(
            discovery
                .circuit_breaker()
                .endpoint_layer()
                .keyed_by_discovery(),
        )
        .service(Endpoints::new(
            HealthFilterLayer::new(discovery.health_checker().clone())
                .layer(registry.discover(query.clone())),
            make(client.clone()),
        ));
    let mut ready_made = discovery.service(query, make(client));

    let compare = |a: &Vec<String>, b: &Vec<String>, allowed: &[&str]| {
        assert_eq!(a, b, "the two stacks diverged");
        assert!(
            a.iter().all(|n| allowed.contains(&n.as_str())),
            "{a:?} outside {allowed:?}"
        );
        for name in allowed {
            assert!(a.iter().any(|n| n == name), "{name} got nothing: {a:?}");
        }
    };
    compare(
        &send(&mut by_hand, 30).await,
        &send(&mut ready_made, 30).await,
        &["a", "b", "c"],
    );

    registry
        .set_health_status(&ids[1], HealthStatus::Critical)
        .unwrap();
    compare(
        &send(&mut by_hand, 30).await,
        &send(&mut ready_made, 30).await,
        &["a", "c"],
    );

    discovery.circuit_breaker().trip(ids[2].as_str());
    compare(
        &send(&mut by_hand, 30).await,
        &send(&mut ready_made, 30).await,
        &["a"],
    );

    discovery.circuit_breaker().reset(ids[2].as_str());
    registry
        .set_health_status(&ids[1], HealthStatus::Passing)
        .unwrap();
    let (x, y) = (
        send(&mut by_hand, 30).await,
        send(&mut ready_made, 30).await,
    );
    let mut xs = x.clone();
    xs.sort();
    let mut ys = y.clone();
    ys.sort();
    assert_eq!(xs, ys, "same spread after recovery");
    assert!(
        ["a", "b", "c"].iter().all(|n| x.iter().any(|m| m == n)),
        "{x:?}"
    );
}
